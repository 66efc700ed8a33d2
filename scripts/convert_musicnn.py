#!/usr/bin/env python3
"""Convert the MusiCNN weights shipped in the ``musicnn`` 0.1.0 wheel (TensorFlow 1 checkpoints, ISC licence) into
safetensors files with the parameter names of ``deam_mamba.models.musicnn.MusiCNN``, plus a TensorFlow reference
output to check the PyTorch port against. Runs once, in the separate teacher venv (``make musicnn``):

    .teacher-venv/bin/python scripts/convert_musicnn.py [OUT_DIR] [--models msd mtt]

Writes ``OUT_DIR/musicnn_{msd,mtt}.safetensors`` and ``OUT_DIR/musicnn_{msd,mtt}_reference.npz`` (the fixed input
patches ``[B, 96, 187]`` and TensorFlow's taggram ``[B, 50]`` and penultimate layer ``[B, 200]``); OUT_DIR defaults
to ``$XDG_CACHE_HOME/deam_mamba/teachers`` (``~/.cache/...``). The reference graph is musicnn's own
``musicnn.models.define_model`` in ``tf.compat.v1`` graph mode (with the legacy ``tf-keras`` layers).

The name mapping (:func:`tf_to_torch`) needs only numpy, so the tests import it without TensorFlow.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

FORMAT = "deam_mamba.musicnn/1"  # = deam_mamba.models.musicnn.FORMAT
CHECKPOINTS = {"msd": "MSD_musicnn", "mtt": "MTT_musicnn"}
ARCHITECTURE = {"n_mels": 96, "n_tags": 50, "frontend_mult": 1.6, "midend_filters": 64, "backend_units": 200}
FEATURES = {"sample_rate": 16000, "n_fft": 512, "hop_length": 256, "n_mels": 96,
            "mel": "slaney (librosa defaults, fmin 0, fmax sr/2)", "window": "hann", "center": True,
            "pad_mode": "reflect", "power": 2.0, "float16_rounding": True, "log": "log10(10000 x + 1)",
            "patch_frames": 187}

# TF layer (creation order in musicnn.models.build_musicnn) -> our module path and its kind
_CONVS = {
    "conv2d": ("timbral.0.conv", "conv2d"), "conv2d_1": ("timbral.1.conv", "conv2d"),
    "conv2d_2": ("temporal.0.conv", "conv2d"), "conv2d_3": ("temporal.1.conv", "conv2d"),
    "conv2d_4": ("temporal.2.conv", "conv2d"),
    "conv2d_5": ("midend.0.conv", "conv1d"), "conv2d_6": ("midend.1.conv", "conv1d"),
    "conv2d_7": ("midend.2.conv", "conv1d"),
    "dense": ("backend.dense", "dense"), "dense_1": ("head", "dense"),
}
_BNS = ["input_bn", "timbral.0.bn", "timbral.1.bn", "temporal.0.bn", "temporal.1.bn", "temporal.2.bn",
        "midend.0.bn", "midend.1.bn", "midend.2.bn", "backend.pool_bn", "backend.dense_bn"]
_BN_PARTS = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean", "moving_variance": "running_var"}


def tf_name_map() -> dict[str, str]:
    """``{TF variable name: our parameter name}`` for every weight of a musicnn checkpoint."""
    out = {}
    for tf_layer, (ours, _) in _CONVS.items():
        out[f"{tf_layer}/kernel"] = f"{ours}.weight"
        out[f"{tf_layer}/bias"] = f"{ours}.bias"
    for i, ours in enumerate(_BNS):
        layer = "batch_normalization" + (f"_{i}" if i else "")
        for tf_part, part in _BN_PARTS.items():
            out[f"{layer}/{tf_part}"] = f"{ours}.{part}"
    return out


def tf_to_torch(tf_vars: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """TF-named arrays -> our names and layouts (float32, contiguous). Conv2d kernels ``[kt, kf, in, out]`` ->
    ``[out, in, kt, kf]``; the mid-end's full-width convs ``[7, C, 1, out]`` -> Conv1d ``[out, C, 7]``; dense
    ``[in, out]`` -> ``[out, in]``. Optimiser slots (``*/Adam*``, ``beta*_power``) are ignored; a missing
    weight is a ``KeyError`` naming it."""
    kinds = {f"{tf_layer}/kernel": kind for tf_layer, (_, kind) in _CONVS.items()}
    out = {}
    for tf_name, ours in tf_name_map().items():
        if tf_name not in tf_vars:
            raise KeyError(f"the checkpoint lacks {tf_name}")
        a = np.asarray(tf_vars[tf_name], dtype=np.float32)
        kind = kinds.get(tf_name)
        if kind == "conv2d":
            a = a.transpose(3, 2, 0, 1)
        elif kind == "conv1d":
            a = a[:, :, 0, :].transpose(2, 1, 0)
        elif kind == "dense":
            a = a.T
        out[ours] = np.ascontiguousarray(a)
    return out


def reference_input(batch: int = 4, frames: int = 187, n_mels: int = 96) -> np.ndarray:
    """Fixed log-mel-like patches ``[batch, n_mels, frames]`` (values ~0..4: a spectral tilt, moving partials,
    onsets and noise from a seeded legacy ``RandomState``, whose stream numpy keeps stable)."""
    rng = np.random.RandomState(20190801)
    t = np.arange(frames)[None, None, :]
    f = np.arange(n_mels)[None, :, None]
    b = np.arange(batch)[:, None, None]
    tilt = 2.5 - 1.5 * f / n_mels
    partials = 1.2 * np.exp(-((f - 20 - 8 * b - 6 * np.sin(0.05 * t * (b + 1))) ** 2) / 8.0)
    onsets = 0.8 * ((t % (12 + 4 * b)) < 2)
    x = tilt + partials + onsets + 0.3 * rng.standard_normal((batch, n_mels, frames))
    return np.clip(x, 0.0, None).astype(np.float32)


def _checkpoint_prefix(name: str) -> str:
    import musicnn  # installed --no-deps in the teacher venv; its __init__ imports nothing

    prefix = Path(musicnn.__file__).parent / name
    if not (prefix / ".index").is_file():
        raise SystemExit(f"error: the musicnn package has no {name} checkpoint at {prefix}")
    return str(prefix) + "/"  # the checkpoint files are named '.index', '.data-...': the prefix is the folder + '/'


def read_checkpoint(prefix: str) -> dict[str, np.ndarray]:
    """All variables of a TF1 checkpoint (``tf.train.load_checkpoint``'s reader; the wheel's ``checkpoint`` file
    names the author's machine, so the reader is given the prefix itself)."""
    import tensorflow as tf

    reader = tf.compat.v1.train.NewCheckpointReader(prefix)
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}


def tf_reference(name: str, prefix: str, patches: np.ndarray) -> dict[str, np.ndarray]:
    """musicnn's own graph restored from ``prefix``, run on ``patches [B, 96, T]``: taggram and penultimate."""
    import tensorflow as tf
    from musicnn import models

    tf.compat.v1.disable_eager_execution()
    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, patches.shape[2], patches.shape[1]])
        outs = models.define_model(x, False, name, ARCHITECTURE["n_tags"])
        logits, penultimate = outs[0], outs[-1]
        taggram = tf.nn.sigmoid(logits)
        with tf.compat.v1.Session(graph=graph) as sess:
            tf.compat.v1.train.Saver().restore(sess, prefix)
            tg, pen = sess.run([taggram, penultimate], feed_dict={x: patches.transpose(0, 2, 1)})
    return {"input": patches, "taggram": tg.astype(np.float32), "penultimate": pen.astype(np.float32)}


def build_metadata(key: str, tags: list[str]) -> dict[str, str]:
    """The safetensors header of a converted file (``load_musicnn`` reads ``format``, ``architecture``, ``tags``)."""
    return {
        "format": FORMAT,
        "source": f"musicnn 0.1.0 (PyPI wheel), checkpoint {CHECKPOINTS[key]}; Pons & Serra 2019, "
                  "https://github.com/jordipons/musicnn",
        "licence": "ISC (Copyright (c) Music Technology Group, Universitat Pompeu Fabra 2019)",
        "trained_on": "Million Song Dataset" if key == "msd" else "MagnaTagATune",
        "tags": json.dumps(list(tags)),
        "architecture": json.dumps(ARCHITECTURE),
        "features": json.dumps(FEATURES),
    }


def convert(key: str, out_dir: Path) -> Path:
    """Convert one checkpoint (``msd`` or ``mtt``); returns the safetensors path."""
    from musicnn import configuration
    from safetensors.numpy import save_file

    name = CHECKPOINTS[key]
    prefix = _checkpoint_prefix(name)
    tensors = tf_to_torch(read_checkpoint(prefix))
    meta = build_metadata(key, configuration.MSD_LABELS if key == "msd" else configuration.MTT_LABELS)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"musicnn_{key}.safetensors"
    tmp = path.with_suffix(".safetensors.tmp")
    save_file(tensors, str(tmp), metadata=meta)
    os.replace(tmp, path)
    ref = tf_reference(name, prefix, reference_input())
    ref_path = out_dir / f"musicnn_{key}_reference.npz"
    tmp = out_dir / f".musicnn_{key}_reference.tmp.npz"
    np.savez(tmp, **ref)
    os.replace(tmp, ref_path)
    print(f"{name}: {len(tensors)} tensors -> {path}; TF reference -> {ref_path}")
    return path


def default_out_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "deam_mamba" / "teachers"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out_dir", nargs="?", type=Path, default=None, help="default: $XDG_CACHE_HOME/deam_mamba/teachers")
    ap.add_argument("--models", nargs="+", choices=sorted(CHECKPOINTS), default=["msd", "mtt"])
    args = ap.parse_args(argv)
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # musicnn's tf.compat.v1.layers need tf-keras, not Keras 3
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    out_dir = args.out_dir or default_out_dir()
    for key in args.models:
        convert(key, out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
