"""Experiments that run several stages: compare models side by side, cross-validation protocols."""
