"""The puzzle-cell classifier (seed 002): its datamodules code."""
