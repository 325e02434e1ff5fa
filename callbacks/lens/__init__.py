"""The lens finder (seed 004): its callbacks code."""
