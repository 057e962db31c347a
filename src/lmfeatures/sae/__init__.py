"""Sparse autoencoders (TopK, ReLU + L1) and seed 004's per-feature checks."""
