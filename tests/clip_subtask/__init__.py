"""Tests of the clip_subtask family; tiny.py holds its test sizes."""
