"""Pruning to minimal activating examples, local search into variants, N2G-style predictors."""
