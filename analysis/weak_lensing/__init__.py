"""The weak-lensing uncertainty models (seed 001): its analysis code."""
