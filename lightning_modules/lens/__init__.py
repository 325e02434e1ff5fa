"""The lens finder (seed 004): its lightning_modules code."""
