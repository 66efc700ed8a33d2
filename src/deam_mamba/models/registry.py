"""Model registry: one table of variants, one constructor per family. ``create_model(name, **overrides)``.

Every model takes ``[B, in_chans, H, W]`` (default ``in_chans=1``: a log-mel ``[B, 1, n_mels, frames]``) and
exposes ``forward_features(x) -> [B, D]`` (pooled) and ``forward_head(f) -> [B, num_classes]`` (default 2).
"""
from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from deam_mamba.core.errors import ConfigError
from deam_mamba.models.mambavision import MambaVision

# Official configurations: NVlabs/MambaVision mamba_vision.py (mamba_vision_T ... mamba_vision_L2).
_OFFICIAL_BASE = dict(mlp_ratio=4, window_size=[8, 8, 14, 7])
MAMBAVISION_VARIANTS: dict[str, dict[str, Any]] = {
    "mambavision_T": dict(_OFFICIAL_BASE, dim=80, in_dim=32, depths=[1, 3, 8, 4], num_heads=[2, 4, 8, 16],
                          drop_path_rate=0.2),
    "mambavision_T2": dict(_OFFICIAL_BASE, dim=80, in_dim=32, depths=[1, 3, 11, 4], num_heads=[2, 4, 8, 16],
                           drop_path_rate=0.2),
    "mambavision_S": dict(_OFFICIAL_BASE, dim=96, in_dim=64, depths=[3, 3, 7, 5], num_heads=[2, 4, 8, 16],
                          drop_path_rate=0.2),
    "mambavision_B": dict(_OFFICIAL_BASE, dim=128, in_dim=64, depths=[3, 3, 10, 5], num_heads=[2, 4, 8, 16],
                          drop_path_rate=0.3, layer_scale=1e-5),
    "mambavision_L": dict(_OFFICIAL_BASE, dim=196, in_dim=64, depths=[3, 3, 10, 5], num_heads=[4, 8, 16, 32],
                          drop_path_rate=0.3, layer_scale=1e-5),
    "mambavision_L2": dict(_OFFICIAL_BASE, dim=196, in_dim=64, depths=[3, 3, 12, 5], num_heads=[4, 8, 16, 32],
                           drop_path_rate=0.3, layer_scale=1e-5),
    # Ours. For [B, 1, 128, 500] log-mels: a stride-8 stem (16 x 63 map; one more stride-2 conv than official),
    # conv stages on 16 x 63 and 8 x 32, Mamba/attention stages on 4 x 16 (4 windows of 4 x 4, no padding)
    # and 2 x 8 (padded to 4 x 8: 2 windows). ~5 M parameters; CPU-trainable.
    "mambavision_audio": dict(dim=48, in_dim=24, depths=[1, 2, 4, 2], num_heads=[2, 4, 4, 8],
                              window_size=[8, 8, 4, 4], mlp_ratio=3, drop_path_rate=0.1, stem_stride=8),
    "mambavision_tiny": dict(dim=8, in_dim=4, depths=[1, 1, 2, 2], num_heads=[1, 1, 2, 2],
                             window_size=[4, 4, 4, 2], mlp_ratio=2, drop_path_rate=0.0),
}

# timm baselines: timm name and fixed keyword arguments.
TIMM_VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "resnet18": ("resnet18", {}),
    "efficientnet_b0": ("efficientnet_b0", {}),
    "vit_audio": ("vit_tiny_patch16_224", dict(img_size=(128, 496), dynamic_img_size=True, dynamic_img_pad=True)),
}

_DEFAULTS = dict(in_chans=1, num_classes=2)


class TimmModel(nn.Module):
    """A timm model behind the package's contract: ``forward_features -> [B, D]`` pooled, ``forward_head``."""

    def __init__(self, timm_name: str, **kwargs: Any):
        super().__init__()
        import timm  # imported lazily: only the baselines need it at construction time

        kwargs.setdefault("pretrained", False)
        self.timm_name = timm_name
        self.model = timm.create_model(timm_name, **kwargs)
        self.num_features = self.model.num_features
        self.num_classes = self.model.num_classes
        self.config = dict(kwargs, timm_name=timm_name)

    def forward_features(self, x: Tensor) -> Tensor:
        """``[B, C, H, W] -> [B, num_features]`` (timm's pooled pre-logits)."""
        return self.model.forward_head(self.model.forward_features(x), pre_logits=True)

    def forward_head(self, f: Tensor) -> Tensor:
        """``[B, num_features] -> [B, num_classes]``."""
        return self.model.get_classifier()(f)

    def reset_classifier(self, num_classes: int) -> None:
        self.model.reset_classifier(num_classes)
        self.num_classes = self.config["num_classes"] = num_classes

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


def list_models() -> list[str]:
    """Names accepted by :func:`create_model`."""
    return list(MAMBAVISION_VARIANTS) + list(TIMM_VARIANTS)


def model_config(name: str, **overrides: Any) -> dict[str, Any]:
    """The full constructor arguments ``create_model(name, **overrides)`` would use."""
    if name in MAMBAVISION_VARIANTS:
        return {**_DEFAULTS, **MAMBAVISION_VARIANTS[name], **overrides}
    if name in TIMM_VARIANTS:
        return {**_DEFAULTS, **TIMM_VARIANTS[name][1], **overrides}
    raise ConfigError(f"unknown model {name!r}; choose one of: {', '.join(list_models())}")


def create_model(name: str, **overrides: Any) -> nn.Module:
    """Build a registered model; ``overrides`` replace table entries (e.g. ``num_classes=4``,
    ``scan_backend="ref"``, ``drop_path_rate=0``). Defaults: ``in_chans=1, num_classes=2``, random init."""
    cfg = model_config(name, **overrides)
    try:
        if name in MAMBAVISION_VARIANTS:
            model: nn.Module = MambaVision(**cfg)
        else:
            model = TimmModel(TIMM_VARIANTS[name][0], **cfg)
    except (TypeError, ValueError) as err:  # bad overrides (unknown argument, heads not dividing dims, ...)
        raise ConfigError(f"cannot build model {name!r} with {overrides}: {err}") from err
    model.model_name = name
    return model
