"""The lens finder (seed 004): its analysis code."""
