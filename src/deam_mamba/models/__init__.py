"""Models: MambaVision (pure PyTorch, optional CUDA scan) and timm baselines."""
