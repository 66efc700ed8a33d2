"""Portable run folders: the paths a run stores (``data.root``, ``data.cache``) and how they are read back.

Rule (one home): a path given relative (to the working directory of ``train``) is stored in
``RUN_DIR/config.yaml`` relative to the run folder (``demo_out/corpus`` for the run ``demo_out/run`` is
stored as ``../corpus``); an absolute path stays absolute. ``meta.json["run_paths"]`` records, per path, what
was given and where it pointed at the time, and marks the stored relative paths as relative to the run
folder. :func:`read_run_config_dict` resolves them against the run folder, so ``evaluate RUN`` works from any
working directory and after the run and its data are moved together. Runs written before this rule (no
``run_paths`` in ``meta.json``) keep their paths as written (relative to the working directory).
A run moved away from data given by absolute paths is pointed at it with ``evaluate --data/--cache``.
"""
from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import yaml

from deam_mamba.config import Config, dump_config
from deam_mamba.core.errors import CheckpointError
from deam_mamba.core.io import atomic_write_json, atomic_write_text

PATH_KEYS = ("root", "cache")  # fields of config.data that name files or folders
RELATIVE_TO = "run folder"


def _stored(value: str, run_dir: Path) -> str:
    """``value`` as stored: relative to ``run_dir`` if it was relative (to the working directory), else as is."""
    if os.path.isabs(value):
        return value
    return os.path.relpath(os.path.abspath(value), os.path.abspath(run_dir))


def stored_config(cfg: Config, run_dir: str | Path) -> tuple[Config, dict[str, Any]]:
    """``(cfg with its paths as stored in RUN_DIR/config.yaml, the record for meta.json["run_paths"])``."""
    run_dir = Path(run_dir)
    stored_cfg = copy.deepcopy(cfg)
    record: dict[str, Any] = {"relative_to": RELATIVE_TO}
    for key in PATH_KEYS:
        value = getattr(cfg.data, key)
        if not value:
            continue
        stored = _stored(str(value), run_dir)
        setattr(stored_cfg.data, key, stored)
        record[f"data.{key}"] = {"stored": stored, "given": str(value), "absolute": os.path.abspath(str(value))}
    return stored_cfg, record


def write_run_config(run_dir: str | Path, cfg: Config) -> None:
    """Rewrite an existing run's ``config.yaml`` (e.g. resumed with overrides) by the rule above: the
    ``run_paths`` record goes into ``meta.json`` first, so the marker never lags behind the file."""
    run_dir = Path(run_dir)
    stored_cfg, record = stored_config(cfg, run_dir)
    meta_path = run_dir / "meta.json"
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        meta["run_paths"] = record
        atomic_write_json(meta_path, meta)
    else:
        stored_cfg = cfg  # no meta.json to mark the paths: keep them as given
    atomic_write_text(run_dir / "config.yaml", dump_config(stored_cfg))


def read_run_config_dict(run_dir: str | Path) -> dict[str, Any]:
    """``RUN_DIR/config.yaml`` as a dict with its stored paths resolved (see the module docstring)."""
    run_dir = Path(run_dir)
    path = run_dir / "config.yaml"
    if not path.is_file():
        raise CheckpointError(f"{path} not found: {run_dir} is not a training run folder")
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if _relative_to_run(run_dir) and isinstance(data, dict) and isinstance(data.get("data"), dict):
        for key in PATH_KEYS:
            value = data["data"].get(key)
            if value and not os.path.isabs(str(value)):
                data["data"][key] = os.path.normpath(os.path.join(str(run_dir), str(value)))
    return data


def _relative_to_run(run_dir: Path) -> bool:
    meta_path = run_dir / "meta.json"
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.is_file() else {}
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{meta_path} is unreadable ({exc}): restore it from a copy of the run") from exc
    return (meta.get("run_paths") or {}).get("relative_to") == RELATIVE_TO
