"""Evaluation protocols for quadrant (Russell) music emotion recognition: metrics, folds, baselines."""
