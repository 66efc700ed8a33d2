"""Seed-compatible shim: ``from data_utils import DEAMHandler, WaveDataset`` (the quick-start's import).

The implementation lives in the package (``deam_mamba.data``); this file only re-exports it.
"""
from deam_mamba.data.dataset import WaveDataset, pad_collate
from deam_mamba.data.deam import DEAMHandler

__all__ = ["DEAMHandler", "WaveDataset", "pad_collate"]
