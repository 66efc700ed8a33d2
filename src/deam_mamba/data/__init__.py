"""Data layer: find DEAM, decode audio, datasets, synthetic corpus."""
