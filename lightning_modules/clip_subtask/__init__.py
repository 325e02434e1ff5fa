"""The CLIP subtask meta-learner (seed 000): its lightning_modules code."""
