"""Tests of the lens family; tiny.py holds its test sizes."""
