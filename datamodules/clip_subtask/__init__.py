"""The CLIP subtask meta-learner (seed 000): its datamodules code."""
