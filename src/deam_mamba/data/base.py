"""``MusicDataset``: one interface for every emotion-labelled music collection (DEAM, 4Q, PMEmo, a user's CSV).

Every reader keys songs by **int** ids, lists what it could not use in :attr:`MusicDataset.problems`
(the same :class:`~deam_mamba.data.annotations.Problem` as DEAM) and returns labels **on its own scale,
saying which** (:attr:`MusicDataset.scale`; the scales side by side and the quadrant rule are in
:mod:`deam_mamba.core.scales`). Dynamic labels are always returned on [-1, 1]
(:attr:`MusicDataset.dynamic_scale`), whatever the files hold.
"""
from __future__ import annotations

import csv
import io
import logging
import math
import os
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np
from tqdm.auto import tqdm

from deam_mamba.core.errors import (
    AudioDecodeError,
    ConfigError,
    DatasetLayoutError,
    DatasetNotFoundError,
    LabelError,
    OutputExistsError,
    UnknownSongError,
)
from deam_mamba.core.io import atomic_write_json, atomic_write_text
from deam_mamba.core.scales import QUADRANTS, SCALE_PM1, LabelKind, Scale, quadrant_name, quadrant_of
from deam_mamba.data.annotations import STATIC_COLUMNS, Problem, _n_id_audio
from deam_mamba.data.audio import audio_info, load_audio, mp3_length_problem

log = logging.getLogger(__name__)
V = TypeVar("V")

__all__ = ["MusicDataset", "Problem", "Table", "check_labels", "excludes_song", "format_summary",
           "read_table"]


# --- label kinds and scales ------------------------------------------------------------------------------------
# --- problems and label checks ---------------------------------------------------------------------------------
NOTE_KINDS = frozenset({"missing_metadata", "audio_outside_dataset"})  # reported, but the song stays


def excludes_song(p: Problem) -> bool:
    """Whether a problem removes its song from ``ids``: song-level, not ``dynamic_*`` (those void only the
    dynamic labels), not a note (:data:`NOTE_KINDS`)."""
    return p.song_id is not None and not p.kind.startswith("dynamic_") and p.kind not in NOTE_KINDS


def check_labels(sid: int, vals: Mapping[str, float], where: str, scale: Scale) -> Problem | None:
    """A problem if a label is NaN or off ``scale`` (``*_mean`` in [lo, hi], ``*_std`` in [0, span])."""
    bad_nan = [c for c, v in vals.items() if not math.isfinite(v)]
    if bad_nan:
        return Problem("nan_label", sid, where, f"song {sid}: {', '.join(bad_nan)} is NaN/empty")
    bad = [f"{c}={v:g}" for c, v in vals.items() if not c.endswith("_std") and not scale.lo <= v <= scale.hi]
    bad += [f"{c}={v:g}" for c, v in vals.items() if c.endswith("_std") and not 0.0 <= v <= scale.span]
    if bad:
        return Problem("out_of_range_label", sid, where, f"song {sid}: {', '.join(bad)} outside the {scale.name} "
                                                          f"scale (std 0-{scale.span:g})")
    return None


# --- quoted CSV tables -----------------------------------------------------------------------------------------
@dataclass
class Table:
    """A CSV file read with the ``csv`` module (quotes, commas in fields): header names stripped."""

    path: Path
    header: list[str]
    rows: list[tuple[int, list[str]]]                     # (line number in the file, cells)
    comments: list[str] = field(default_factory=list)     # leading '#' lines, '#' and spaces stripped

    def col(self, *names: str) -> int | None:
        """Index of the first of ``names`` present (case- and space-insensitive), else None."""
        norm = [h.lower().replace(" ", "") for h in self.header]
        for name in names:
            key = name.lower().replace(" ", "")
            if key in norm:
                return norm.index(key)
        return None

    def require(self, *names: str, what: str = "annotation file") -> dict[str, int]:
        """``{name: index}`` for each name; a one-line DatasetLayoutError naming the file if one is missing."""
        idx = {n: self.col(n) for n in names}
        missing = [n for n, i in idx.items() if i is None]
        if missing:
            raise DatasetLayoutError(f"{what} {self.path} lacks column(s) {missing}; its header is {self.header}")
        return {n: int(i) for n, i in idx.items()}


def read_table(path: Path, what: str = "annotation file") -> Table:
    """Read a (possibly quoted) CSV: BOM, CRLF, blank lines and leading ``#`` comment lines handled."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        text = Path(path).read_text(encoding="latin-1")  # old exports (e.g. the 4Q readme is Windows-1252)
    except OSError as exc:
        raise DatasetLayoutError(f"cannot read {what} {path}: {exc}") from None
    reader = csv.reader(io.StringIO(text))
    header: list[str] | None = None
    comments: list[str] = []
    rows: list[tuple[int, list[str]]] = []
    for cells in reader:
        if header is None:
            if cells and cells[0].lstrip().startswith("#"):
                comments.append(",".join(cells).lstrip().lstrip("#").strip())
                continue
            if not any(c.strip() for c in cells):
                continue
            header = [c.strip() for c in cells]
            continue
        if any(c.strip() for c in cells):
            rows.append((reader.line_num, cells))
    if header is None:
        raise DatasetLayoutError(f"{what} {path} is empty (no header line); re-download or rewrite it")
    return Table(Path(path), header, rows, comments)


def find_id_audio_dir(dirs: list[tuple[Path, list[str]]], preferred: str) -> Path | None:
    """The folder named ``preferred`` holding ``<id>.<ext>`` audio, else the one holding most such files."""
    hit = next((d for d, files in dirs if d.name.lower() == preferred.lower() and _n_id_audio(files)), None)
    if hit is not None:
        return hit
    n, best = max(((_n_id_audio(files), d) for d, files in dirs), key=lambda t: t[0], default=(0, None))
    return best if n else None


# --- the interface ---------------------------------------------------------------------------------------------
class SongCollection:
    """What every dataset reader shares once its songs are known: ``ids`` (sorted ints), ``problems``,
    ``_audio`` (id -> file) and ``_durations``. :class:`MusicDataset` and
    :class:`~deam_mamba.data.deam.DEAMHandler` build on it."""

    ids: list[int]
    problems: list[Problem]
    _audio: dict[int, Path]
    _durations: dict[int, float] | None

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, song_id: object) -> bool:
        return isinstance(song_id, (int, np.integer)) and int(song_id) in self._id_set

    @property
    def _id_set(self) -> set[int]:
        """``set(self.ids)``, cached while ``ids`` is the same unchanged list."""
        cached = getattr(self, "_id_cache", None)
        if cached is None or cached[0] is not self.ids or cached[1] != len(self.ids):
            cached = self._id_cache = (self.ids, len(self.ids), set(self.ids))
        return cached[2]

    def check_audio(self, deep: bool = False, progress: bool = True) -> dict[int, float]:
        """Read the header of every audio file (``deep``: also decode it); ``{id: duration_s}`` of good ones.

        MP3s also get their frames walked (finds truncated files). Unreadable files are added to
        :attr:`problems` (kind ``unreadable_audio``) and leave :attr:`ids`.
        """
        durations: dict[int, float] = {}
        known = {(p.kind, p.song_id) for p in self.problems}
        for sid, path in tqdm(sorted(self._audio.items()), desc="checking audio", disable=not progress):
            try:
                seconds, sr, _ = audio_info(path)
                if path.suffix.lower() == ".mp3":
                    why = mp3_length_problem(path, int(round(seconds * sr)))
                    if why:
                        raise AudioDecodeError(path, why)
                durations[sid] = load_audio(path, target_sr=None).shape[1] / sr if deep else seconds
            except AudioDecodeError as exc:
                if ("unreadable_audio", sid) not in known:
                    self.problems.append(Problem("unreadable_audio", sid, str(path), exc.reason))
        self._durations = durations
        bad = {p.song_id for p in self.problems if p.kind == "unreadable_audio"}
        self.ids = [i for i in self.ids if i not in bad]
        return durations

    def write_problems(self, path: str | os.PathLike, overwrite: bool = False) -> Path:
        """Write :attr:`problems` as CSV (``.csv``) or JSON (anything else), atomically."""
        path = Path(path)
        if path.exists() and not overwrite:
            raise OutputExistsError(f"{path} exists; pass overwrite=True (--force) to replace it")
        rows = [p.to_dict() for p in self.problems]
        if path.suffix.lower() == ".csv":
            buf = io.StringIO()
            writer = csv.DictWriter(buf, fieldnames=["kind", "song_id", "file", "message"], lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
            atomic_write_text(path, buf.getvalue())
        else:
            atomic_write_json(path, rows)
        return path
    def _problem_counts(self) -> dict[str, int]:
        return dict(sorted(Counter(p.kind for p in self.problems).items()))

    def load_wave(self, song_id: int, target_sr: int = 16_000, mono: bool = True,
                  duration: float | None = None) -> np.ndarray:
        """Decode a song: ``[C, T]`` float32 at ``target_sr`` Hz (C = 1 if mono; the first ``duration`` s if given)."""
        return load_audio(self.audio_path(self._check(song_id)), target_sr=target_sr, mono=mono, duration=duration)

    # --- splits ------------------------------------------------------------------------------------------------


class MusicDataset(SongCollection):
    """Songs with audio and emotion labels. ``ids``: sorted int ids that have audio AND valid labels.

    Subclasses set the class attributes ``kind``, ``label_kind``, ``scale`` and implement :meth:`_load`,
    which fills ``_audio`` (id -> file), ``_static`` (id -> label dict on ``scale``) or ``_quadrants``
    (id -> 1..4), and optionally ``_names``, ``_groups``, ``_dynamic`` and ``problems``. Construction reads
    only CSVs and lists folders (no decoding).
    """

    kind: str = "?"
    label_kind: LabelKind = LabelKind.STATIC
    scale: Scale | None = None                # the scale of static_labels(); None for quadrant-only datasets
    dynamic_scale: Scale = SCALE_PM1         # dynamic_labels() values are always on [-1, 1]
    SPLITS: tuple[str, ...] = ("random",)

    def __init__(self, root: str | os.PathLike):
        self.root: Path = Path(root).expanduser().resolve()
        if not self.root.exists():
            raise DatasetNotFoundError(f"{self.kind} root {self.root} does not exist; pass the folder (or file) "
                                       "that holds the dataset")
        self.problems: list[Problem] = []
        self._audio: dict[int, Path] = {}
        self._audio_dups: set[int] = set()  # ids with several audio files (a duplicate_id problem each)
        self._static: dict[int, dict[str, float]] = {}
        self._quadrants: dict[int, int] = {}
        self._names: dict[int, str] = {}
        self._groups: dict[int, str | None] = {}
        self._dynamic: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._durations: dict[int, float] | None = None
        self._load()
        labelled = self._quadrants if self.label_kind == LabelKind.QUADRANT else self._static
        excluded = {p.song_id for p in self.problems if excludes_song(p)}
        self.ids: list[int] = sorted(set(self._audio) & set(labelled) - excluded)
        if self.problems:
            log.warning("%s at %s: %d problem(s) (%s); see .problems / `deam-mamba info`", self.kind, self.root,
                        len(self.problems), self._problem_counts())
        log.info("%s at %s: %d songs with audio and labels", self.kind, self.root, len(self.ids))

    def _load(self) -> None:
        raise NotImplementedError

    # --- shared parsing steps ----------------------------------------------------------------------------------
    def _single_rows(self, rows: Mapping[int, Sequence[tuple[V, str]]], file_name: str) -> dict[int, tuple[V, str]]:
        """``{id: (value, "file:line")}`` for ids with exactly one row; ids with several become ``duplicate_id``."""
        out: dict[int, tuple[V, str]] = {}
        for sid, entries in sorted(rows.items()):
            if len(entries) > 1:
                lines = ", ".join(w.rsplit(":", 1)[-1] for _, w in entries)
                self.problems.append(Problem("duplicate_id", sid, entries[0][1],
                                             f"song {self._names.get(sid, sid)} has {len(entries)} rows in "
                                             f"{file_name} (lines {lines}); song unused"))
            else:
                out[sid] = entries[0]
        return out

    def _pair_with_audio(self, rows: Mapping[int, Sequence[tuple[object, str]]], label_file: str,
                         unreadable: set[int] | None = None) -> None:
        """``label_without_audio`` for ids with one label row but no audio file; ``audio_without_label`` for
        audio files without any row (``unreadable``: ids whose row could not be parsed, already reported)."""
        for sid, entries in sorted(rows.items()):
            if len(entries) == 1 and sid not in self._audio and sid not in self._audio_dups:
                self.problems.append(Problem("label_without_audio", sid, entries[0][1],
                                             f"song {self._names.get(sid, sid)} has a label row but no audio file"))
        for sid, path in sorted(self._audio.items()):
            if sid not in rows and sid not in (unreadable or set()):
                self.problems.append(Problem("audio_without_label", sid, str(path),
                                             f"song {self._names.get(sid, sid)} has audio but no row in {label_file}"))

    # --- per-song access ---------------------------------------------------------------------------------------
    def _check(self, song_id: int) -> int:
        sid = int(song_id)
        if sid in self._id_set:
            return sid
        why = [p.message for p in self.problems if p.song_id == sid and excludes_song(p)]
        if why:
            raise UnknownSongError(f"song {sid} is excluded from {self.kind} at {self.root}: {'; '.join(why)}")
        raise UnknownSongError(f"unknown song id {sid}: {self.kind} at {self.root} has no such song "
                               f"(see .ids, e.g. {self.ids[:5]})")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(root={str(self.root)!r}, songs={len(self.ids)}, problems={len(self.problems)})"

    def name(self, song_id: int) -> str:
        """The dataset's own name of a song (file stem, song code, or path as written); also for excluded songs."""
        sid = int(song_id)
        if sid in self._names:
            return self._names[sid]
        if sid in self._audio or sid in self._static or sid in self._quadrants:
            return str(sid)
        return str(self._check(sid))

    def group(self, song_id: int) -> str | None:
        """The artist as written (for artist-disjoint splits); None when the dataset does not say."""
        return self._groups.get(self._check(song_id))

    def static_labels(self, song_id: int) -> dict[str, float]:
        """``{valence_mean, arousal_mean[, valence_std, arousal_std]}`` on :attr:`scale` (NOT rescaled)."""
        sid = self._check(song_id)
        if self.label_kind == LabelKind.QUADRANT:
            raise LabelError(f"{self.kind} at {self.root} has quadrant labels only (Q1..Q4), no valence/arousal "
                             "values: use quadrant(id), or a dataset with continuous labels")
        return dict(self._static[sid])

    def quadrant(self, song_id: int) -> int:
        """Russell quadrant 1..4: the label itself, or derived from the static means around the scale midpoint."""
        sid = self._check(song_id)
        if self.label_kind == LabelKind.QUADRANT:
            return self._quadrants[sid]
        lab = self._static[sid]
        return quadrant_of(lab["valence_mean"], lab["arousal_mean"], self.scale)

    def dynamic_labels(self, song_id: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(times_s [K] float64, valence [K] float32, arousal [K] float32)`` on **[-1, 1]**; K = 0 when none."""
        sid = self._check(song_id)
        if sid not in self._dynamic:
            return np.zeros(0), np.zeros(0, np.float32), np.zeros(0, np.float32)
        t, v, a = self._dynamic[sid]
        return t.copy(), v.copy(), a.copy()

    def audio_path(self, song_id: int) -> Path:
        """The audio file of a song (also for songs excluded because of label problems)."""
        sid = int(song_id)
        if sid in self._audio:
            return self._audio[sid]
        return self._audio[self._check(sid)]  # raises UnknownSongError with the reason

    def _strata(self, ids: list[int]) -> list[int]:
        """Stratum per id: the quadrant for quadrant datasets, 0 (one stratum) for continuous ones."""
        return [self._quadrants[i] for i in ids] if self.label_kind == LabelKind.QUADRANT else [0] * len(ids)

    def _group_keys(self, ids: list[int]) -> list[str] | None:
        """Split group per id (normalised artist; a song without one is its own group); None if no song has one."""
        if not any(self._groups.get(i) for i in ids):
            return None
        return [f"artist:{' '.join(g.split()).casefold()}" if (g := self._groups.get(i)) else f"song:{i}"
                for i in ids]

    def _partition(self, ids: list[int], fractions: tuple[float, ...], seed: int) -> list[list[int]]:
        """Cut ``ids`` into ``len(fractions)`` seeded parts, stratified (quadrants) and group-disjoint (artists).

        Without strata or groups: a seeded permutation cut by ``fractions`` (DEAMHandler's "random" split).
        Otherwise groups, biggest first (ties in seeded order), each go to the part where they least grow the
        misfit ``sum((count - target)^2 / target)`` over (part, stratum) counts and part sizes.
        """
        rng = np.random.default_rng(seed)
        strata, keys = self._strata(ids), self._group_keys(ids)
        if keys is None and self.label_kind == LabelKind.QUADRANT:
            log.warning("%s at %s: no artist metadata, so the split is stratified by quadrant only (songs of "
                        "one artist may sit on both sides)", self.kind, self.root)
        elif keys is not None and any(k.startswith("song:") for k in keys):
            log.info("%s: %d song(s) without an artist are each their own split group", self.kind,
                     sum(k.startswith("song:") for k in keys))
        if keys is None and len(set(strata)) <= 1:
            perm = [ids[i] for i in rng.permutation(len(ids))]
            cuts = np.cumsum([int(round(f * len(ids))) for f in fractions[:-1]])
            return [list(p) for p in np.split(np.asarray(perm, dtype=np.int64), cuts)]
        keys = keys or [f"song:{i}" for i in ids]
        members: dict[str, list[int]] = {}
        for k, i in zip(keys, range(len(ids))):
            members.setdefault(k, []).append(i)
        levels = sorted(set(strata))
        n_per = np.array([strata.count(s) for s in levels], dtype=np.float64)
        # targets: songs per (part, stratum) in column 0.., and songs per part in the last column    [P, S + 1]
        target = np.outer(np.asarray(fractions, dtype=np.float64), np.append(n_per, n_per.sum()))
        count = np.zeros_like(target)
        usable = [q for q, f in enumerate(fractions) if f > 0]
        order = sorted(members)
        order = [order[i] for i in rng.permutation(len(order))]
        order.sort(key=lambda k: -len(members[k]))                                  # stable: ties stay seeded
        parts: list[list[int]] = [[] for _ in fractions]
        for k in order:
            comp = np.array([sum(strata[i] == s for i in members[k]) for s in levels], dtype=np.float64)
            comp = np.append(comp, comp.sum())
            # chi-square-like misfit sum((count - target)^2 / target): pick the part it grows least (ties: first)
            t = np.maximum(target[usable], 1e-12)
            grow = (((count[usable] + comp - t) ** 2 - (count[usable] - t) ** 2) / t).sum(axis=1)
            p = usable[int(np.argmin(np.round(grow, 9)))]
            count[p] += comp
            parts[p] += [ids[i] for i in members[k]]
        return parts

    def split(self, name: str = "random", seed: int = 0,
              fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)) -> dict[str, list[int]]:
        """Disjoint, seeded ``{"train", "val", "test"}`` lists of song ids (each sorted), cut by ``fractions``.

        ``"random"``: stratified by quadrant for quadrant datasets, and artist-disjoint when artists are known;
        a plain seeded permutation otherwise (as DEAMHandler's ``"random"``). Same ids + seed -> same split.
        """
        if name not in self.SPLITS:
            raise ConfigError(f"unknown split {name!r} for {self.kind}; choose one of {self.SPLITS} "
                              "(or use kfold(k, seed))")
        if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1.0) > 1e-6:
            raise ConfigError(f"fractions must be 3 non-negative numbers summing to 1, got {fractions}")
        parts = self._partition(list(self.ids), tuple(fractions), seed)
        return {k: sorted(int(i) for i in part) for k, part in zip(("train", "val", "test"), parts)}

    def kfold(self, k: int = 5, seed: int = 0, ids: Iterable[int] | None = None) -> list[dict[str, list[int]]]:
        """``k`` seeded folds ``[{"train": [...], "val": [...]}, ...]``; the val sets partition ``ids``
        (stratified and artist-disjoint as :meth:`split`)."""
        chosen = sorted(self.ids if ids is None else {self._check(i) for i in ids})
        if not 2 <= k <= len(chosen):
            raise ConfigError(f"k must be between 2 and the number of songs ({len(chosen)}), got {k}")
        if self._group_keys(chosen) is None and self.label_kind != LabelKind.QUADRANT:  # DEAMHandler's folds
            arr = np.asarray(chosen, dtype=np.int64)
            folds = [list(f) for f in np.array_split(arr[np.random.default_rng(seed).permutation(len(arr))], k)]
        else:
            folds = self._partition(chosen, tuple([1.0 / k] * k), seed)
        return [{"train": sorted(int(i) for j, f in enumerate(folds) if j != n for i in f),
                 "val": sorted(int(i) for i in fold)} for n, fold in enumerate(folds)]

    # --- reporting ---------------------------------------------------------------------------------------------
    def _summary_extra(self) -> dict:
        """Dataset-specific entries for :meth:`summary` (folders found, files read)."""
        return {}

    def summary(self, durations: bool = False) -> dict:
        """Counts, labels per scale, quadrants, artists, problems by kind (durations after :meth:`check_audio`)."""
        ids = self.ids
        quads = Counter(self.quadrant(i) for i in ids)
        groups = [self._groups.get(i) for i in ids]
        out: dict = {"kind": self.kind, "root": str(self.root), **self._summary_extra(),
                     "n_songs": len(ids), "n_audio_files": len(self._audio),
                     "n_labelled": len(self._quadrants if self.label_kind == LabelKind.QUADRANT else self._static),
                     "id_min": ids[0] if ids else None, "id_max": ids[-1] if ids else None,
                     "label_kind": str(self.label_kind), "scale": self.scale.name if self.scale else None,
                     "n_by_quadrant": {quadrant_name(q): quads.get(q, 0) for q in QUADRANTS},
                     "quadrants_from": "labels" if self.label_kind == LabelKind.QUADRANT else
                     f"valence/arousal means around the midpoint {self.scale.midpoint:g} of {self.scale.name}",
                     "n_artists": len({' '.join(g.split()).casefold() for g in groups if g}),
                     "n_without_artist": sum(not g for g in groups)}
        if self.label_kind == LabelKind.STATIC:
            cols = [c for c in STATIC_COLUMNS if any(c in self._static[i] for i in ids)]
            out["static_labels"] = {c: label_stats(np.array([self._static[i][c] for i in ids if c in self._static[i]]))
                                    for c in cols}
        dyn = [self.dynamic_labels(i) for i in ids if i in self._dynamic]
        out["dynamic_scale"] = self.dynamic_scale.name
        out["n_dynamic_labels"] = len(dyn)
        if dyn:
            out["dynamic_labels"] = {"values_per_song": label_stats(np.array([len(t) for t, _, _ in dyn])),
                                     "valence": label_stats(np.concatenate([v for _, v, _ in dyn])),
                                     "arousal": label_stats(np.concatenate([a for _, _, a in dyn]))}
        out["n_problems"] = len(self.problems)
        out["problems_by_kind"] = self._problem_counts()
        if durations and self._durations is None:
            self.check_audio(progress=False)
        if self._durations is not None:
            out["durations_s"] = label_stats(np.array(list(self._durations.values())))
        return out



def label_stats(x: np.ndarray) -> dict[str, float | int]:
    """``{n, mean, std, min, max}`` of ``x`` (rounded to 4 places), ``{n: 0}`` when empty."""
    x = np.asarray(x, dtype=np.float64)
    if x.size == 0:
        return {"n": 0}
    return {"n": int(x.size), "mean": round(float(x.mean()), 4), "std": round(float(x.std()), 4),
            "min": round(float(x.min()), 4), "max": round(float(x.max()), 4)}


def format_summary(summary: dict, problems: list[Problem], max_problems: int | None = 50) -> str:
    """Human-readable text of :meth:`MusicDataset.summary` and the problem list (``None``: all)."""
    s = summary
    quads = ", ".join(f"{q}: {n}" for q, n in s["n_by_quadrant"].items())
    lines = [f"{s['kind']} root: {s['root']}",
             f"songs:        {s['n_songs']} with audio + labels (ids {s['id_min']}..{s['id_max']}); "
             f"{s['n_audio_files']} audio files, {s['n_labelled']} valid label rows",
             f"labels:       {s['label_kind']}" + (f" on the {s['scale']} scale" if s["scale"] else ""),
             f"quadrants:    {quads} (from {s['quadrants_from']})",
             f"artists:      {s['n_artists']} (+ {s['n_without_artist']} songs without one)"]
    if "durations_s" in s and s["durations_s"].get("n"):
        d = s["durations_s"]
        lines.append(f"durations:    {d['min']:.1f}..{d['max']:.1f} s (mean {d['mean']:.1f} s, n={d['n']})")
    for c, st in s.get("static_labels", {}).items():
        if st.get("n"):
            lines.append(f"  {c:<13} mean {st['mean']:.3f}  std {st['std']:.3f}  "
                         f"range {st['min']:.3f}..{st['max']:.3f}")
    if s.get("n_dynamic_labels"):
        lines.append(f"dynamic:      {s['n_dynamic_labels']} songs, returned on the {s['dynamic_scale']} scale")
    if not problems:
        lines.append("problems:     none")
        return "\n".join(lines)
    kinds = ", ".join(f"{k}: {v}" for k, v in s["problems_by_kind"].items())
    lines.append(f"problems:     {len(problems)} ({kinds}); songs with label/audio problems are excluded from ids, "
                 f"notes ({', '.join(sorted(NOTE_KINDS))}) and dynamic_* problems are not")
    shown = problems if max_problems is None else problems[:max_problems]
    lines += [f"  [{p.kind}] {p.message} ({p.file})" for p in shown]
    if len(shown) < len(problems):
        lines.append(f"  ... {len(problems) - len(shown)} more (use --all, or --problems-out FILE.csv)")
    return "\n".join(lines)
