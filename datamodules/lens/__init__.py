"""The lens finder (seed 004): its datamodules code."""
