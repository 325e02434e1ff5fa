"""The lens finder (seed 004): its tasks code."""
