"""The puzzle-cell classifier (seed 002): its callbacks code."""
