"""Load an official MambaVision checkpoint (e.g. ``mambavision_tiny_1k.pth.tar``) from a local file.

The RGB stem is summed into ``in_chans=1`` (a log-mel image), the classifier head is re-initialised for
``num_classes`` outputs, and everything else must match the variant exactly (``strict``).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import Tensor

from deam_mamba.core.errors import CheckpointError
from deam_mamba.models.mambavision import MambaVision
from deam_mamba.models.registry import MAMBAVISION_VARIANTS, create_model

log = logging.getLogger(__name__)

STEM_KEY = "patch_embed.conv_down.0.weight"
HEAD_KEYS = ("head.weight", "head.bias")
OFFICIAL = ("mambavision_T", "mambavision_T2", "mambavision_S", "mambavision_B", "mambavision_L", "mambavision_L2")


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Tensors of a checkpoint file (torch pickle read with ``weights_only=True``, or safetensors), unwrapped
    from ``{"state_dict": ...}`` / ``{"model": ...}`` and stripped of ``module.`` prefixes."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist (download it first, e.g. "
                              "mambavision_tiny_1k.pth.tar from huggingface.co/nvidia/MambaVision-T-1K)")
    try:
        if path.suffix == ".safetensors":
            obj: Any = load_file(str(path), device="cpu")
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # the unpicklers raise many types on junk; all mean "not a checkpoint"
        first = str(err).splitlines()[0] if str(err) else ""
        hint = ("; if it is a trusted file that also pickles Python objects, re-save only its tensors: "
                "torch.save(torch.load(path, weights_only=False)['state_dict'], new_path)"
                if "weights_only" in str(err) else "")
        raise CheckpointError(f"{path} is not a readable checkpoint ({type(err).__name__}: {first}){hint}") from err
    if isinstance(obj, dict):
        for key in ("state_dict", "model", "state_dict_ema"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} holds no state dict of tensors (found {type(obj).__name__})")
    return {(k.removeprefix("module.")): v for k, v in obj.items()}


def _shapes(sd: dict[str, Tensor]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in sd.items() if k not in HEAD_KEYS and k != STEM_KEY}


def guess_variant(state_dict: dict[str, Tensor]) -> str | None:
    """The official variant whose parameter names and shapes match ``state_dict`` (head and stem aside)."""
    want = _shapes(state_dict)
    for name in OFFICIAL:
        with torch.device("meta"):
            model = create_model(name, in_chans=3, num_classes=1000)
        if _shapes(model.state_dict()) == want:
            return name
    return None


def _brief(keys: list[str], n: int = 5) -> str:
    return ", ".join(keys[:n]) + (f" (+{len(keys) - n} more)" if len(keys) > n else "")


def load_pretrained(path: str | Path, in_chans: int = 1, num_classes: int = 2, model_name: str | None = None,
                    **overrides: Any) -> MambaVision:
    """A MambaVision variant with the weights of the checkpoint at ``path``.

    Args:
        path: local ``.pth``/``.pth.tar``/``.safetensors`` file.
        in_chans: 1 sums the checkpoint's RGB stem filters into one channel; 3 keeps them.
        num_classes: outputs of the fresh (re-initialised) head.
        model_name: ``mambavision_T`` ... ``mambavision_L2``; ``None`` picks the one matching the file.
        overrides: passed to :func:`create_model` (e.g. ``drop_path_rate``, ``scan_backend``).
    Raises:
        CheckpointError: unreadable file, or names/shapes that do not fit the variant.
    """
    sd = read_state_dict(path)
    if model_name is None:
        model_name = guess_variant(sd)
        if model_name is None:
            raise CheckpointError(f"{path} matches none of the official MambaVision variants {OFFICIAL}; "
                                  "pass model_name= to see which keys differ")
        log.info("checkpoint %s looks like %s", path, model_name)
    if model_name not in MAMBAVISION_VARIANTS:
        raise CheckpointError(f"load_pretrained needs a MambaVision variant, got {model_name!r}")
    model = create_model(model_name, in_chans=in_chans, num_classes=num_classes, **overrides)
    sd = {k: v for k, v in sd.items() if k not in HEAD_KEYS}
    stem = sd.get(STEM_KEY)
    if stem is not None and stem.ndim == 4 and stem.shape[1] != in_chans:
        if in_chans != 1:
            raise CheckpointError(f"{path}: stem has {stem.shape[1]} input channels; only 1 (summed) or "
                                  f"{stem.shape[1]} are supported, not {in_chans}")
        sd[STEM_KEY] = stem.sum(dim=1, keepdim=True)
    own = model.state_dict()
    missing = sorted(k for k in own if k not in sd and k not in HEAD_KEYS)
    unexpected = sorted(k for k in sd if k not in own)
    wrong = sorted(f"{k} {tuple(sd[k].shape)} vs {tuple(own[k].shape)}"
                   for k in sd if k in own and sd[k].shape != own[k].shape)
    if missing or unexpected or wrong:
        parts = [f"{label}: {_brief(keys)}" for label, keys in
                 (("missing", missing), ("unexpected", unexpected), ("shape mismatch", wrong)) if keys]
        raise CheckpointError(f"{path} does not fit {model_name}: " + "; ".join(parts))
    sd.update({k: own[k] for k in HEAD_KEYS if k in own})  # keep the freshly initialised head
    model.load_state_dict(sd, strict=True)
    return model
