#!/usr/bin/env python3
"""Check the PyTorch MusiCNN against the TensorFlow reference that ``scripts/convert_musicnn.py`` saved.

    python scripts/check_musicnn.py [DIR] [--models msd mtt] [--tol 1e-4]

Loads ``DIR/musicnn_{key}.safetensors`` with ``load_musicnn``, runs it on the reference input and prints the
maximum absolute differences of the taggram and the penultimate embedding; exit status 1 if one exceeds ``--tol``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from deam_mamba.models.musicnn import default_teacher_dir, load_musicnn


def check(path: Path, ref_path: Path) -> tuple[float, float]:
    """``(max |taggram diff|, max |penultimate diff|)`` of the PyTorch port vs TensorFlow."""
    model = load_musicnn(path)
    ref = np.load(ref_path)
    with torch.no_grad():
        emb = model.forward_features(torch.from_numpy(ref["input"]))
        tags = model.forward_head(emb)
    return (float(np.abs(tags.numpy() - ref["taggram"]).max()), float(np.abs(emb.numpy() - ref["penultimate"]).max()))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dir", nargs="?", type=Path, default=None)
    ap.add_argument("--models", nargs="+", default=["msd", "mtt"])
    ap.add_argument("--tol", type=float, default=1e-4)
    args = ap.parse_args(argv)
    folder = args.dir or default_teacher_dir()
    ok = True
    for key in args.models:
        d_tag, d_emb = check(folder / f"musicnn_{key}.safetensors", folder / f"musicnn_{key}_reference.npz")
        good = max(d_tag, d_emb) <= args.tol
        ok &= good
        print(f"musicnn_{key}: PyTorch vs TensorFlow max |diff| taggram {d_tag:.2e}, penultimate {d_emb:.2e} "
              f"({'ok' if good else 'TOO LARGE'}, tol {args.tol:g})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
