"""Models: MambaVision (pure PyTorch, optional CUDA scan) and timm baselines.

``create_model(name, **overrides)`` builds any of ``list_models()``; ``load_pretrained(path, ...)`` builds a
MambaVision variant from an official checkpoint file (single-channel stem, fresh head).
"""
from deam_mamba.models.mambavision import MambaVision
from deam_mamba.models.pretrained import load_pretrained
from deam_mamba.models.registry import create_model, list_models, model_config
from deam_mamba.models.scan import selective_scan_fn

__all__ = ["MambaVision", "create_model", "list_models", "load_pretrained", "model_config", "selective_scan_fn"]
