"""Tests of the audio family; tiny.py holds its test sizes."""
