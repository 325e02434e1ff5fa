"""The weak-lensing uncertainty models (seed 001): its lightning_modules code."""
