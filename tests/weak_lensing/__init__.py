"""Tests of the weak_lensing family; tiny.py holds its test sizes."""
