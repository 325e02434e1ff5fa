"""The puzzle-cell classifier (seed 002): its lightning_modules code."""
