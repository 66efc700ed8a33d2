"""``PMEmoDataset``: PMEmo (Zhang et al., ICMR 2018): 794 pop chorus excerpts with valence/arousal on **0-1**.

Layout, found anywhere under the root (PMEmo2019 as unpacked)::

    chorus/<musicId>.mp3                                   the excerpts (else: the folder with most <id>.mp3)
    annotations/static_annotations.csv                     musicId, Arousal(mean), Valence(mean)   on 0-1
    annotations/static_annotations_std.csv   (optional)    musicId, Arousal(std), Valence(std)     on 0-1
    annotations/dynamic_annotations.csv      (optional)    musicId, frameTime, Arousal(mean), Valence(mean):
                                                           long form, 2 Hz from 15.5 s, on 0-1
    metadata.csv                             (optional)    musicId, ..., artist, ...  -> groups for splits

Scales: :meth:`static_labels` returns the file's **0-1** values (``scale`` = "0-1", midpoint 0.5) unchanged;
:meth:`dynamic_labels` returns **[-1, 1]** like every reader, converted explicitly with
``to_unit(x, "0-1") = 2 x - 1`` (the interface's ``dynamic_scale``). NaN or off-scale labels are problems
and their songs are excluded (dynamic ones void only the song's dynamic labels).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from deam_mamba.core.errors import DatasetLayoutError
from deam_mamba.core.scales import SCALE_0_1, LabelKind, to_unit
from deam_mamba.data.annotations import Problem, _float, _walk_dirs, scan_audio
from deam_mamba.data.base import MusicDataset, Table, check_labels, find_id_audio_dir, read_table

log = logging.getLogger(__name__)

__all__ = ["AUDIO_DIR_NAME", "DYNAMIC_FILE", "METADATA_FILE", "STATIC_FILE", "STD_FILE", "PMEmoDataset"]

STATIC_FILE = "static_annotations.csv"
STD_FILE = "static_annotations_std.csv"
DYNAMIC_FILE = "dynamic_annotations.csv"
METADATA_FILE = "metadata.csv"
AUDIO_DIR_NAME = "chorus"
_LAYOUT = (f"expected PMEmo's chorus/<musicId>.mp3 and annotations/{STATIC_FILE} (musicId, Arousal(mean), "
           "Valence(mean)); pass the folder that holds the unpacked PMEmo2019")


def has_music_id(path: Path) -> bool:
    """Whether a CSV's header has a ``musicId`` column (how PMEmo's files are told apart from others)."""
    try:
        with open(path, encoding="utf-8-sig", errors="replace") as fh:
            header = fh.readline()
    except OSError:
        return False
    return "musicid" in header.lower().replace('"', "").replace(" ", "").split(",")


class PMEmoDataset(MusicDataset):
    """PMEmo on disk. ``ids``: sorted musicIds with a chorus file AND valid static labels (0-1)."""

    kind = "pmemo"
    label_kind = LabelKind.STATIC
    scale = SCALE_0_1

    def __init__(self, root: str | os.PathLike):
        self.audio_dir: Path | None = None
        self.files: dict[str, Path | None] = {}
        super().__init__(root)

    # --- parsing -----------------------------------------------------------------------------------------------
    def _load(self) -> None:
        if not self.root.is_dir():
            raise DatasetLayoutError(f"PMEmo root {self.root} is not a folder; {_LAYOUT}")
        dirs = _walk_dirs(self.root)

        def find(name: str, near: Path | None) -> list[Path]:
            hits = [d / f for d, files in dirs for f in files if f.lower() == name and has_music_id(d / f)]
            return sorted(hits, key=lambda p: (p.parent != near, len(p.parts)))

        static = find(STATIC_FILE, None)
        if not static:
            raise DatasetLayoutError(f"no {STATIC_FILE} with a musicId column under {self.root}: {_LAYOUT}")
        if len(static) > 1:
            raise DatasetLayoutError(f"{len(static)} copies of {STATIC_FILE} under {self.root} "
                                     f"({', '.join(str(p) for p in static[:3])}): pass the folder of the one you mean")
        near = static[0].parent
        optional = (("std", STD_FILE), ("dynamic", DYNAMIC_FILE), ("metadata", METADATA_FILE))
        self.files = {"static": static[0], **{k: (find(n, near) or [None])[0] for k, n in optional}}
        self.audio_dir = find_id_audio_dir(dirs, AUDIO_DIR_NAME)
        if self.audio_dir is None:
            raise DatasetLayoutError(f"no audio folder under {self.root}: {_LAYOUT}")
        self._audio, problems = scan_audio(self.audio_dir)
        self.problems += problems
        self._audio_dups = {p.song_id for p in problems if p.kind == "duplicate_id"}
        self._read_static()
        if self.files["dynamic"] is not None:
            self._read_dynamic(self.files["dynamic"])
        if self.files["metadata"] is not None:
            self._read_metadata(self.files["metadata"])

    def _rows(self, table: Table, columns: dict[str, str], kind: str = "") -> tuple[dict, set[int]]:
        """``({id: [(values, "file:line")]}, ids of unreadable rows)``: values by our name from ``columns``
        (our name -> the file's column); unparseable rows become ``{kind}unreadable_row`` problems."""
        idx = table.require("musicId", *columns.values())
        rows: dict[int, list[tuple[dict[str, float], str]]] = {}
        unreadable: set[int] = set()
        for line, cells in table.rows:
            where = f"{table.path}:{line}"
            sid = None
            try:
                sid = int(cells[idx["musicId"]].strip())
                if len(cells) != len(table.header):
                    raise ValueError(f"{len(cells)} fields, header has {len(table.header)}")
                vals = {ours: _float(cells[idx[theirs]]) for ours, theirs in columns.items()}
            except (ValueError, IndexError) as exc:
                self.problems.append(Problem(f"{kind}unreadable_row", sid, where, f"cannot parse row {line}: {exc}"))
                if sid is not None:
                    unreadable.add(sid)
                continue
            rows.setdefault(sid, []).append((vals, where))
        return rows, unreadable

    def _read_static(self) -> None:
        path = self.files["static"]
        rows, unreadable = self._rows(read_table(path), {"valence_mean": "Valence(mean)",
                                                         "arousal_mean": "Arousal(mean)"})
        single = self._single_rows(rows, path.name)
        stds: dict[int, tuple[dict[str, float], str]] = {}
        if self.files["std"] is not None:
            std_rows, _ = self._rows(read_table(self.files["std"]), {"valence_std": "Valence(std)",
                                                                     "arousal_std": "Arousal(std)"})
            stds = self._single_rows(std_rows, self.files["std"].name)
        for sid, (means, where) in single.items():
            vals = dict(means)
            if self.files["std"] is not None:
                if sid not in stds:
                    self.problems.append(Problem("missing_label", sid, where, f"song {sid} has no single row in "
                                                 f"{self.files['std'].name}; song unused"))
                    continue
                vals.update(stds[sid][0])
            vals = {k: vals[k] for k in ("valence_mean", "valence_std", "arousal_mean", "arousal_std") if k in vals}
            bad = check_labels(sid, vals, where, self.scale)
            if bad:
                self.problems.append(bad)
                continue
            self._static[sid] = vals
        self._pair_with_audio(rows, path.name, unreadable)

    def _read_dynamic(self, path: Path) -> None:
        """Long-form rows -> ``_dynamic[id] = (times_s, valence, arousal)``, values mapped 0-1 -> [-1, 1]."""
        rows, _ = self._rows(read_table(path), {"time": "frameTime", "valence": "Valence(mean)",
                                                "arousal": "Arousal(mean)"}, kind="dynamic_")
        voided = {p.song_id for p in self.problems if p.kind == "dynamic_unreadable_row"}
        for sid, entries in sorted(rows.items()):
            if sid in voided:
                continue
            arr = np.array([[e["time"], e["valence"], e["arousal"]] for e, _ in entries], dtype=np.float64)
            arr = arr[np.argsort(arr[:, 0], kind="stable")]
            where = entries[0][1]
            if not np.isfinite(arr).all():
                self.problems.append(Problem("dynamic_nan_label", sid, where, f"song {sid}: NaN/empty values in "
                                             f"{path.name}; dynamic labels unused"))
            elif np.any(np.diff(arr[:, 0]) <= 0):
                self.problems.append(Problem("dynamic_duplicate_id", sid, where, f"song {sid}: a frameTime appears "
                                             f"twice in {path.name}; dynamic labels unused"))
            elif not self.scale.contains(arr[:, 1:]):
                self.problems.append(Problem("dynamic_out_of_range", sid, where, f"song {sid}: dynamic values "
                                             f"outside {self.scale.name} in {path.name} (min {arr[:, 1:].min():g}, "
                                             f"max {arr[:, 1:].max():g}); dynamic labels unused"))
            else:
                unit = to_unit(arr[:, 1:], self.scale).astype(np.float32)
                self._dynamic[sid] = (arr[:, 0].copy(), unit[:, 0].copy(), unit[:, 1].copy())

    def _read_metadata(self, path: Path) -> None:
        """Artists from ``metadata.csv`` (groups for artist-disjoint splits); no artist column: no groups."""
        table = read_table(path, what="metadata file")
        i_id, i_artist = table.col("musicId"), table.col("artist", "artists")
        if i_id is None or i_artist is None:
            self.problems.append(Problem("missing_metadata", None, str(path), f"{path.name} has no musicId/artist "
                                         "columns: no artists, splits are not artist-disjoint"))
            return
        for line, cells in table.rows:
            try:
                sid = int(cells[i_id].strip())
                artist = cells[i_artist].strip() or None
            except (ValueError, IndexError):
                self.problems.append(Problem("missing_metadata", None, f"{path}:{line}",
                                             f"cannot parse metadata row {line}; its song has no artist"))
                continue
            self._groups[sid] = artist
        for sid in sorted(set(self._audio) - set(self._groups)):
            self.problems.append(Problem("missing_metadata", sid, str(path), f"song {sid} has no row in {path.name}: "
                                         "no artist, it is its own group in splits"))
        for sid in sorted(s for s, a in self._groups.items() if a is None and s in self._audio):
            self.problems.append(Problem("missing_metadata", sid, str(path), f"song {sid}: no artist in "
                                         f"{path.name}; it is its own group in splits"))

    def _summary_extra(self) -> dict:
        return {"audio_dir": str(self.audio_dir), **{f"{k}_file": str(p) if p else None for k, p in self.files.items()}}
