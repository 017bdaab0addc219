"""Data sets for training, calibration and evaluation (synthetic, generated on the fly, deterministic)."""
