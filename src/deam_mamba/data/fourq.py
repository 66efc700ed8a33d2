"""``FourQDataset``: the 4Q / TAFFC set (Panda, Malheiro & Paiva 2018): one Russell quadrant per ~30 s clip.

Layout, found anywhere under the root::

    MER_audio_taffc_dataset/
        Q1/ .. Q4/<Song>.mp3                   e.g. Q3/MT0000004637.mp3
        panda_dataset_taffc_annotations.csv    Song,Quadrant           (MT0000004637,Q3)
        panda_dataset_taffc_metadata.csv       "Song","Artist","Title","Quadrant","PQuad",...,"GenresStr",...

* Ids: the digits of the song name (``MT0000004637`` -> 4637); two names giving one id is a DatasetLayoutError.
* Labels: quadrants only (``label_kind`` "quadrant", ``scale`` None): :meth:`quadrant` gives 1..4 and
  :meth:`static_labels` raises a LabelError.
* The dataset is the ``Q1..Q4`` folders beside the annotation CSV. Audio elsewhere under the root (e.g. a folder
  of original copies) is not used; each such file is an ``audio_outside_dataset`` note (its song stays).
* Problems, never silent: audio without annotation, annotation without audio, folder quadrant disagreeing with
  the annotation (or the metadata) quadrant, bad quadrant values, duplicate rows or files, and missing
  metadata (no artist: the song is its own group in splits; no metadata file: splits are stratified only).
"""
from __future__ import annotations

import logging
import math
import os
import re
from pathlib import Path

from deam_mamba.core.errors import DatasetLayoutError
from deam_mamba.core.scales import LabelKind, parse_quadrant, quadrant_name
from deam_mamba.data.annotations import Problem, _walk_dirs
from deam_mamba.data.audio import AUDIO_EXTENSIONS
from deam_mamba.data.base import MusicDataset, read_table

log = logging.getLogger(__name__)

__all__ = ["ANNOTATIONS_FILE", "METADATA_FILE", "TREE_NAME", "FourQDataset", "song_id"]

ANNOTATIONS_FILE = "panda_dataset_taffc_annotations.csv"
METADATA_FILE = "panda_dataset_taffc_metadata.csv"
TREE_NAME = "MER_audio_taffc_dataset"
_SONG_ID = re.compile(r"^[^\d]*(\d+)$")
_QUADRANT_DIR = re.compile(r"^q([1-4])$", re.IGNORECASE)
_LAYOUT = (f"expected {TREE_NAME}/ with Q1/..Q4/<Song>.mp3, {ANNOTATIONS_FILE} and {METADATA_FILE}; "
           "pass the folder that holds the unpacked 4Q dataset")


def song_id(name: str) -> int | None:
    """The int id of a 4Q song name: its digits (``"MT0000004637"`` -> 4637); None without trailing digits."""
    m = _SONG_ID.match(name.strip())
    return int(m.group(1)) if m else None


class FourQDataset(MusicDataset):
    """The 4Q dataset on disk. ``ids``: sorted ids with audio in a ``Q*/`` folder AND a consistent quadrant."""

    kind = "4q"
    label_kind = LabelKind.QUADRANT
    scale = None

    def __init__(self, root: str | os.PathLike):
        self._meta: dict[int, dict] = {}
        self.tree: Path | None = None
        self.annotations_file: Path | None = None
        self.metadata_file: Path | None = None
        self._folder_q: dict[int, int] = {}
        self._n_outside = 0
        super().__init__(root)

    # --- parsing -----------------------------------------------------------------------------------------------
    def _load(self) -> None:
        if not self.root.is_dir():
            raise DatasetLayoutError(f"4Q root {self.root} is not a folder; {_LAYOUT}")
        dirs = _walk_dirs(self.root)
        found = [d / f for d, files in dirs for f in files if f.lower() == ANNOTATIONS_FILE]
        if not found:
            raise DatasetLayoutError(f"no {ANNOTATIONS_FILE} under {self.root}: {_LAYOUT}")
        if len(found) > 1:
            raise DatasetLayoutError(f"{len(found)} copies of {ANNOTATIONS_FILE} under {self.root} "
                                     f"({', '.join(str(p) for p in found[:3])}): pass the folder of the one you mean")
        self.annotations_file = found[0]
        self.tree = self._find_tree(dirs, found[0].parent)
        meta = [d / f for d, files in dirs for f in files if f.lower() == METADATA_FILE]
        meta.sort(key=lambda p: (p.parent != self.tree, len(p.parts)))
        self.metadata_file = meta[0] if meta else None
        self._scan_audio(dirs)
        self._read_annotations()
        self._read_metadata()

    def _find_tree(self, dirs: list[tuple[Path, list[str]]], ann_dir: Path) -> Path:
        """The folder holding the ``Q1..Q4`` folders: beside the annotations, else named like the dataset."""
        with_quadrants = {d.parent for d, _ in dirs if _QUADRANT_DIR.match(d.name) and d != self.root}
        for cand in (ann_dir, *(d for d, _ in dirs if d.name == TREE_NAME), *(d for d, _ in dirs)):
            if cand in with_quadrants:
                return cand
        raise DatasetLayoutError(f"no Q1..Q4 audio folders under {self.root}: {_LAYOUT}")

    def _register(self, sid: int, name: str, where: str) -> None:
        """Remember the name of an id; a different name with the same digits is a layout error."""
        known = self._names.setdefault(sid, name)
        if known != name:
            raise DatasetLayoutError(f"{where}: song names {known!r} and {name!r} both give id {sid} (the digits of "
                                     "the name); rename or remove one so that ids are unique")

    def _scan_audio(self, dirs: list[tuple[Path, list[str]]]) -> None:
        found: dict[int, list[tuple[Path, int]]] = {}
        outside: list[Path] = []
        for d, files in dirs:
            m = _QUADRANT_DIR.match(d.name) if d.parent == self.tree else None
            for f in files:
                path = d / f
                if path.suffix.lower() not in AUDIO_EXTENSIONS:
                    continue
                if m is None:
                    outside.append(path)
                    continue
                sid = song_id(path.stem)
                if sid is None:
                    self.problems.append(Problem("bad_name", None, str(path), f"cannot derive a song id from "
                                                 f"{path.name!r} (expected a name ending in digits, e.g. "
                                                 "MT0000004637.mp3); file unused"))
                    continue
                self._register(sid, path.stem, str(path))
                found.setdefault(sid, []).append((path, int(m.group(1))))
        for sid, entries in sorted(found.items()):
            if len(entries) > 1:
                self._audio_dups.add(sid)
                names = ", ".join(f"{p.parent.name}/{p.name}" for p, _ in entries)
                self.problems.append(Problem("duplicate_id", sid, str(entries[0][0]),
                                             f"several audio files for song {self._names[sid]}: {names}; song unused"))
            else:
                self._audio[sid], self._folder_q[sid] = entries[0]
        for path in outside:
            sid = song_id(path.stem)
            twin = f" (the dataset's copy is {self._audio[sid]})" if sid in self._audio and \
                self._names.get(sid) == path.stem else ""
            self.problems.append(Problem("audio_outside_dataset", sid, str(path),
                                         f"{path.name} is outside {self.tree}/Q1..Q4 and is not used{twin}"))
        self._n_outside = len(outside)

    def _read_annotations(self) -> None:
        path = self.annotations_file
        table = read_table(path)
        idx = table.require("Song", "Quadrant")
        rows: dict[int, list[tuple[int | None, str]]] = {}
        for line, cells in table.rows:
            where = f"{path}:{line}"
            if len(cells) <= max(idx.values()):
                self.problems.append(Problem("unreadable_row", None, where, f"cannot parse row {line}: "
                                             f"{len(cells)} fields, header has {len(table.header)}"))
                continue
            name, raw = cells[idx["Song"]].strip(), cells[idx["Quadrant"]].strip()
            sid = song_id(name)
            if sid is None:
                self.problems.append(Problem("unreadable_row", None, where,
                                             f"row {line}: song name {name!r} has no id digits"))
                continue
            self._register(sid, name, where)
            q = parse_quadrant(raw)
            if q is None:
                self.problems.append(Problem("bad_quadrant", sid, where,
                                             f"song {name}: quadrant {raw!r} is not one of Q1..Q4"))
            rows.setdefault(sid, []).append((q, where))
        for sid, (q, where) in self._single_rows(rows, path.name).items():
            fq = self._folder_q.get(sid)
            if q is None:
                continue
            if fq is not None and fq != q:
                self.problems.append(Problem("quadrant_mismatch", sid, where,
                                             f"song {self._names[sid]}: {path.name} says {quadrant_name(q)} but the "
                                             f"file is in {quadrant_name(fq)}/ ({self._audio[sid]}); song unused"))
                continue
            self._quadrants[sid] = q
        self._pair_with_audio(rows, path.name)

    def _read_metadata(self) -> None:
        path = self.metadata_file
        if path is None:
            self.problems.append(Problem("missing_file", None, str(self.tree / METADATA_FILE),
                                         f"no {METADATA_FILE} under {self.root}: no artists, so splits are "
                                         "stratified by quadrant only (one artist's songs may sit on both sides)"))
            return
        table = read_table(path, what="metadata file")
        idx = table.require("Song", what="metadata file")
        col = {k: table.col(k) for k in ("Artist", "Title", "Quadrant", "PQuad", "GenresStr", "MoodsStrSplit")}
        rows: dict[int, list[tuple[dict, str]]] = {}
        for line, cells in table.rows:
            where = f"{path}:{line}"
            name = cells[idx["Song"]].strip() if len(cells) > idx["Song"] else ""
            sid = song_id(name)
            if sid is None or len(cells) != len(table.header):
                self.problems.append(Problem("unreadable_row", sid, where, f"cannot parse metadata row {line}: "
                                             f"{len(cells)} fields (header has {len(table.header)}), song {name!r}"))
                continue
            self._register(sid, name, where)
            rows.setdefault(sid, []).append(({k: cells[i].strip() if i is not None else "" for k, i in col.items()},
                                             where))
        single = self._single_rows({s: r for s, r in rows.items() if s in self._audio or s in self._quadrants},
                                   path.name)
        for sid in sorted(set(self._audio) | set(self._quadrants)):
            if sid not in single:
                if sid not in rows:
                    self.problems.append(Problem("missing_metadata", sid, str(path),
                                                 f"song {self._names[sid]} has no row in {path.name}: no artist, "
                                                 "it is its own group in splits"))
                continue
            cells, where = single[sid]
            q = parse_quadrant(cells["Quadrant"]) if cells["Quadrant"] else None
            if q is not None and sid in self._quadrants and q != self._quadrants[sid]:
                self.problems.append(Problem("quadrant_mismatch", sid, where,
                                             f"song {self._names[sid]}: {path.name} says {quadrant_name(q)}, "
                                             f"{ANNOTATIONS_FILE} says {quadrant_name(self._quadrants[sid])}; "
                                             "song unused"))
                del self._quadrants[sid]
            artist = cells["Artist"] or None
            if artist is None:
                self.problems.append(Problem("missing_metadata", sid, where, f"song {self._names[sid]}: no artist "
                                             f"in {path.name}; it is its own group in splits"))
            self._groups[sid] = artist
            self._meta[sid] = {"artist": artist, "title": cells["Title"] or None,
                               "pquad": _float_or_none(cells["PQuad"]), "genres": _tags(cells["GenresStr"]),
                               "moods": _tags(cells["MoodsStrSplit"])}

    # --- access ------------------------------------------------------------------------------------------------
    def metadata(self, song_id: int) -> dict:
        """``{song, quadrant, artist, title, pquad, genres, moods}`` of a song (None / [] where unknown).

        ``pquad``: share of the song's AllMusic mood tags that agree with its quadrant (0-1).
        """
        sid = self._check(song_id)
        meta = self._meta.get(sid, {"artist": None, "title": None, "pquad": None, "genres": [], "moods": []})
        return {"song": self._names[sid], "quadrant": quadrant_name(self._quadrants[sid]), **meta,
                "genres": list(meta["genres"]), "moods": list(meta["moods"])}

    def _summary_extra(self) -> dict:
        return {"tree": str(self.tree), "annotations_file": str(self.annotations_file),
                "metadata_file": str(self.metadata_file) if self.metadata_file else None,
                "n_audio_outside_dataset": self._n_outside}


def _float_or_none(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _tags(text: str) -> list[str]:
    """``"Country; International"`` -> ``["Country", "International"]``."""
    return [t.strip() for t in text.split(";") if t.strip()]
