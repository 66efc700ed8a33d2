#!/usr/bin/env python3
"""Write ``tests/data/official_tiny.safetensors``: reference outputs of the OFFICIAL NVlabs MambaVision.

Run once where the official source is available (``$MAMBAVISION_OFFICIAL_SRC`` = its ``mamba_vision.py``, or
the mirror the ``fetch`` tool makes at /work/.mirror/NVlabs+MambaVision/repo):

    .venv/bin/python scripts/make_official_fixture.py

For a tiny config (dim 8; with and without layer scale) it builds ``mamba_vision.MambaVision`` from the
official source (CPU scan stand-in, see ``tests/_official_mambavision.py``), fills every tensor with seeded
non-trivial values (exact in float16, stored so), and stores its state dict, two inputs (one whose maps
the windows tile, one that needs padding) and the official ``forward_features`` and logits.
``tests/test_models.py`` loads our model with those weights (``strict=True``) and compares, on every
machine, without the official source.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from _official_mambavision import MIRROR, load_official  # noqa: E402

OUT = REPO / "tests" / "data" / "official_tiny.safetensors"
CONFIG = dict(dim=8, in_dim=4, depths=[1, 2, 3, 4], num_heads=[1, 2, 2, 4], window_size=[4, 4, 4, 3], mlp_ratio=2,
              drop_path_rate=0.0, in_chans=3, num_classes=5)
SHAPES = [(2, 3, 64, 64), (2, 3, 50, 90)]
LAYER_SCALES = {"ls_none": None, "ls_1e-5": 1e-5}


def main() -> int:
    official = load_official()
    if official is None:
        print(f"official MambaVision source not found (set MAMBAVISION_OFFICIAL_SRC or fetch it to {MIRROR})")
        return 1
    tensors: dict[str, torch.Tensor] = {}
    torch.manual_seed(0)
    for i, shape in enumerate(SHAPES):
        tensors[f"input{i}"] = torch.randn(*shape)
    for tag, ls in LAYER_SCALES.items():
        torch.manual_seed(1)
        model = official.MambaVision(**CONFIG, layer_scale=ls, layer_scale_conv=ls).eval()
        sd = model.state_dict()
        with torch.no_grad():  # non-trivial values everywhere, BatchNorm statistics included
            for k, v in sd.items():
                if v.is_floating_point():
                    v.copy_(torch.rand_like(v) + 0.5 if "running_var" in k else torch.randn_like(v) * 0.2)
                    v.copy_(v.half().float())  # exactly representable in float16: stored at half the size
        model.load_state_dict(sd)
        for k, v in model.state_dict().items():
            v = v.detach().clone().contiguous()
            tensors[f"{tag}/state/{k}"] = v.half() if v.is_floating_point() else v
        with torch.no_grad():
            for i in range(len(SHAPES)):
                x = tensors[f"input{i}"]
                tensors[f"{tag}/features{i}"] = model.forward_features(x).contiguous()
                tensors[f"{tag}/logits{i}"] = model(x).contiguous()
    meta = {"config": json.dumps(CONFIG), "layer_scales": json.dumps(LAYER_SCALES),
            "source": "NVlabs/MambaVision mambavision/models/mamba_vision.py (official), CPU scan stand-in"}
    save_file(tensors, str(OUT), metadata=meta)
    print(f"wrote {OUT} ({OUT.stat().st_size / 1e3:.0f} kB, {len(tensors)} tensors)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
