"""Evolutionary prompt optimization (EPO) and its comparison with the dataset's examples."""
