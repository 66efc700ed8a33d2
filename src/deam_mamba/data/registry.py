"""``open_dataset``: open DEAM, 4Q, PMEmo or a user's CSV behind one interface, detecting which from the files.

Detection (``kind=None``) looks for each kind's marker file anywhere under ``root``:

====== =================================================================================
deam   ``static_annotations_averaged_songs_*.csv`` (and ``MEMD_audio/<id>.mp3``)
4q     ``panda_dataset_taffc_annotations.csv`` (and ``Q1..Q4/<Song>.mp3``)
pmemo  ``static_annotations.csv`` with a ``musicId`` column (and ``chorus/<musicId>.mp3``)
csv    ``root`` is a ``.csv`` file with a ``file`` column (see :mod:`deam_mamba.data.usercsv`)
====== =================================================================================

Several kinds under one root, or none, is a one-line DatasetLayoutError saying what to pass.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from deam_mamba.core.errors import ConfigError, DatasetLayoutError, DatasetNotFoundError
from deam_mamba.data.annotations import STATIC_GLOB, _walk_dirs
from deam_mamba.data.base import MusicDataset
from deam_mamba.data.deam import DEAMHandler
from deam_mamba.data.folds import song_kfold_split
from deam_mamba.data.fourq import ANNOTATIONS_FILE as FOURQ_MARKER
from deam_mamba.data.fourq import FourQDataset
from deam_mamba.data.pmemo import STATIC_FILE as PMEMO_MARKER
from deam_mamba.data.pmemo import PMEmoDataset, has_music_id
from deam_mamba.data.usercsv import CSVDataset

__all__ = ["DATASET_KINDS", "dataset_split", "detect_kind", "open_dataset"]

DATASET_KINDS = ("deam", "4q", "pmemo", "csv")
ALIASES = {"taffc": "4q", "panda": "4q", "user": "csv"}
NEEDS = {"deam": STATIC_GLOB, "4q": FOURQ_MARKER, "pmemo": f"{PMEMO_MARKER} with a musicId column",
         "csv": "a .csv file path with a 'file' column"}
_OPENERS: dict[str, Any] = {"deam": DEAMHandler, "4q": FourQDataset, "pmemo": PMEmoDataset, "csv": CSVDataset}


def _needs() -> str:
    return "; ".join(f"{k} needs {v}" for k, v in NEEDS.items())


def detect_kind(root: str | os.PathLike) -> str:
    """The kind of dataset at ``root`` (one of :data:`DATASET_KINDS`), from the marker files under it."""
    path = Path(root).expanduser()
    if not path.exists():
        raise DatasetNotFoundError(f"dataset root {path} does not exist; pass the dataset folder or a .csv file")
    if path.is_file():
        if path.suffix.lower() == ".csv":
            return "csv"
        raise DatasetLayoutError(f"{path} is a file but not a .csv; pass a dataset folder or a CSV ({_needs()})")
    found: dict[str, Path] = {}
    for d, files in _walk_dirs(path):
        for f in files:
            low = f.lower()
            if Path(f).match(STATIC_GLOB):
                found.setdefault("deam", d / f)
            elif low == FOURQ_MARKER:
                found.setdefault("4q", d / f)
            elif low == PMEMO_MARKER and has_music_id(d / f):
                found.setdefault("pmemo", d / f)
    if not found:
        raise DatasetLayoutError(f"no dataset recognised under {path} ({_needs()}); pass kind= one of "
                                 f"{DATASET_KINDS} or the right folder")
    if len(found) > 1:
        what = ", ".join(f"{k} ({p})" for k, p in found.items())
        raise DatasetLayoutError(f"several datasets under {path}: {what}; pass kind= one of {tuple(found)} "
                                 "or a narrower folder")
    return next(iter(found))


def open_dataset(root: str | os.PathLike | None = None, kind: str | None = None,
                 **kw: Any) -> MusicDataset | DEAMHandler:
    """Open the dataset at ``root`` as ``kind`` (detected when None); ``kw`` goes to the reader
    (e.g. ``scale="1-9"`` for a CSV). ``root=None`` means DEAM from ``$DEAM_ROOT`` / kagglehub.

    DEAM comes back as :class:`~deam_mamba.data.deam.DEAMHandler` (same method names and semantics as
    :class:`~deam_mamba.data.base.MusicDataset`); every other kind is a ``MusicDataset``.
    """
    if kind is not None:
        key = ALIASES.get(kind.strip().lower(), kind.strip().lower())
        if key not in DATASET_KINDS:
            raise ConfigError(f"unknown dataset kind {kind!r}; choose one of {DATASET_KINDS} ({_needs()})")
    elif root is None:
        key = "deam"
    else:
        key = detect_kind(root)
    if root is None and key != "deam":
        raise ConfigError(f"dataset kind {key!r} needs a root: pass the folder (or .csv file) that holds it")
    if key == "deam" and kw:
        raise ConfigError(f"DEAM takes no reader options, got {sorted(kw)}")
    return _OPENERS[key](root, **kw)


def dataset_split(ds: MusicDataset | DEAMHandler, name: str, seed: int = 0, folds: int = 5, fold: int = 0,
                  protocol: str = "artist", val_fraction: float = 0.1) -> dict[str, list[int]]:
    """``{"train", "val", "test"}`` song ids of ``ds``: the dataset's own named splits (``official2015`` for
    DEAM, ``random``), or ``kfold``: fold ``fold`` of ``folds``, stratified by quadrant and, with
    ``protocol="artist"``, artist-disjoint (:func:`deam_mamba.data.folds.song_kfold_split`)."""
    if name != "kfold":
        return ds.split(name, seed=seed)
    ids = list(ds.ids)
    return song_kfold_split(ids, [ds.quadrant(i) for i in ids], [ds.group(i) for i in ids], k=folds, fold=fold,
                            seed=seed, protocol=protocol, val_fraction=val_fraction)
