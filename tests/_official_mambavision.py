"""Test-only: import the OFFICIAL NVlabs MambaVision source (not shipped here) on a CPU machine, if present.

The official ``mamba_vision.py`` imports ``mamba_ssm`` (CUDA-only) and ``einops`` at top level. This helper
executes that file with two stand-ins placed in ``sys.modules`` for the duration of the import:
``mamba_ssm...selective_scan_fn`` -> our sequential :func:`selective_scan_ref` (same semantics as mamba_ssm's
``selective_scan_ref``), and a minimal ``einops`` that knows only the patterns that file uses.

Source location: ``$MAMBAVISION_OFFICIAL_SRC`` (a ``mamba_vision.py`` file), else the git mirror fetched by
the ``fetch`` tool (``/work/.mirror/NVlabs+MambaVision/repo``). ``load_official()`` returns None if neither exists.
"""
from __future__ import annotations

import functools
import os
import subprocess
import sys
import types
import warnings
from pathlib import Path

import torch

from deam_mamba.models.scan import selective_scan_ref

MIRROR = Path("/work/.mirror/NVlabs+MambaVision/repo")


def _source() -> str | None:
    env = os.environ.get("MAMBAVISION_OFFICIAL_SRC")
    if env and Path(env).is_file():
        return Path(env).read_text()
    if MIRROR.exists():
        res = subprocess.run(["git", f"--git-dir={MIRROR}", "show", "HEAD:mambavision/models/mamba_vision.py"],
                             capture_output=True, text=True)
        if res.returncode == 0:
            return res.stdout
    return None


def _rearrange(x: torch.Tensor, pattern: str, **sizes) -> torch.Tensor:
    p = " ".join(pattern.split())
    if p in ("b l d -> b d l", "b d l -> b l d"):
        return x.transpose(1, 2)
    if p == "b d l -> (b l) d":
        return x.transpose(1, 2).reshape(-1, x.shape[1])
    if p in ("(b l) d -> b d l", "(b l) dstate -> b dstate l"):
        return x.reshape(-1, sizes["l"], x.shape[-1]).transpose(1, 2)
    raise NotImplementedError(f"einops stand-in does not know {pattern!r}")


def _repeat(x: torch.Tensor, pattern: str, **sizes) -> torch.Tensor:
    if " ".join(pattern.split()) == "n -> d n":
        return x[None].expand(sizes["d"], -1)
    raise NotImplementedError(f"einops stand-in does not know {pattern!r}")


@functools.lru_cache(maxsize=1)
def load_official() -> types.ModuleType | None:
    """The official ``mamba_vision`` module (cached), or None when its source is not available."""
    src = _source()
    if src is None:
        return None
    fakes = {
        "einops": types.ModuleType("einops"),
        "mamba_ssm": types.ModuleType("mamba_ssm"),
        "mamba_ssm.ops": types.ModuleType("mamba_ssm.ops"),
        "mamba_ssm.ops.selective_scan_interface": types.ModuleType("mamba_ssm.ops.selective_scan_interface"),
        "_mv_official": types.ModuleType("_mv_official"),
        "_mv_official.registry": types.ModuleType("_mv_official.registry"),
        "_mv_official.mamba_vision": types.ModuleType("_mv_official.mamba_vision"),
        # keep timm's global model registry untouched: its register_model becomes the identity here
        "timm.models.registry": types.ModuleType("timm.models.registry"),
    }
    fakes["einops"].rearrange, fakes["einops"].repeat = _rearrange, _repeat
    fakes["mamba_ssm.ops.selective_scan_interface"].selective_scan_fn = selective_scan_ref
    fakes["_mv_official"].__path__ = []
    fakes["_mv_official.registry"].register_pip_model = lambda fn: fn
    fakes["timm.models.registry"].register_model = lambda fn: fn
    module = fakes["_mv_official.mamba_vision"]
    module.__package__ = "_mv_official"
    saved = {k: sys.modules.get(k) for k in fakes}
    sys.modules.update(fakes)
    try:
        with warnings.catch_warnings():  # it imports timm's deprecated timm.models.layers
            warnings.simplefilter("ignore", FutureWarning)
            exec(compile(src, "mamba_vision.py (official)", "exec"), module.__dict__)
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
    return module
