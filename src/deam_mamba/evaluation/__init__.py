"""Evaluation: metrics (continuous and quadrant), song-level scoring, evaluate, reports, baselines."""
