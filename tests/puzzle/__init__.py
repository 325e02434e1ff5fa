"""Tests of the puzzle family; tiny.py holds its test sizes."""
