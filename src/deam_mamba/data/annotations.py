"""Find the DEAM folders under a root and parse its annotation CSVs (no audio decoding here).

Two label scales live side by side and must never be mixed:

* static, song level: :data:`deam_mamba.core.scales.STATIC` (1-9) — means and stds over raters;
* dynamic, 2 Hz from 15 s: :data:`deam_mamba.core.scales.DYNAMIC` ([-1, 1]).

Parsing never drops data silently: every row that cannot be used becomes a :class:`Problem`.
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from deam_mamba.core.errors import DatasetLayoutError
from deam_mamba.core.scales import DYNAMIC, STATIC
from deam_mamba.data.audio import AUDIO_EXTENSIONS

STATIC_COLUMNS = ("valence_mean", "valence_std", "arousal_mean", "arousal_std")
STD_RANGE: tuple[float, float] = (0.0, STATIC.hi - STATIC.lo)
AUDIO_DIR_NAME = "memd_audio"
ANNOTATIONS_DIR_NAME = "annotations averaged per song"
STATIC_GLOB = "static_annotations_averaged_songs_*.csv"
_SAMPLE_COL = re.compile(r"^sample_(\d+)ms$")
_ID_FILE = re.compile(r"^(\d+)$")


@dataclass(frozen=True)
class Problem:
    """One inconsistency found in the data; ``song_id`` is None for file-level problems."""

    kind: str
    song_id: int | None
    file: str
    message: str

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Layout:
    """Where the pieces of DEAM were found under the root."""

    audio_dir: Path
    annotations_dir: Path | None
    static_files: list[Path]
    dynamic_valence: Path | None
    dynamic_arousal: Path | None


def _walk_dirs(root: Path) -> list[tuple[Path, list[str]]]:
    """All (dir, file names) under root, shallowest first, names sorted (deterministic)."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames.sort()
        out.append((Path(dirpath), sorted(filenames)))
    out.sort(key=lambda t: (len(t[0].relative_to(root).parts), str(t[0])))
    return out


def _n_id_audio(files: list[str]) -> int:
    return sum(1 for f in files if Path(f).suffix.lower() in AUDIO_EXTENSIONS and _ID_FILE.match(Path(f).stem))


def locate(root: Path) -> Layout:
    """Find ``MEMD_audio`` (or the folder with most ``<id>.mp3``) and the annotation CSVs anywhere under root."""
    dirs = _walk_dirs(root)
    audio_dir = next((d for d, files in dirs if d.name.lower() == AUDIO_DIR_NAME and _n_id_audio(files)), None)
    if audio_dir is None:
        counts = [(_n_id_audio(files), d) for d, files in dirs]
        best = max(counts, key=lambda t: t[0], default=(0, None))
        if best[0] == 0:
            raise DatasetLayoutError(
                f"no audio folder under {root}: expected DEAM_audio/MEMD_audio/ with files named "
                f"<song_id>.mp3 (e.g. 2.mp3). Pass the folder that holds the unpacked Kaggle download."
            )
        audio_dir = best[1]
    ann = next((d for d, _ in dirs if d.name.lower() == ANNOTATIONS_DIR_NAME), None)
    search = [(d, f) for d, f in dirs if ann is None or d == ann or ann in d.parents]
    static = [d / f for d, files in search for f in files if Path(f).match(STATIC_GLOB)]
    if not static:
        raise DatasetLayoutError(
            f"no static annotation CSVs under {root}: expected 'DEAM_Annotations/annotations/annotations "
            f"averaged per song/song_level/{STATIC_GLOB}'"
        )
    if ann is None:  # keep only the static files of the shallowest copy
        ann = static[0].parent
        static = [p for p in static if p.parent == ann]

    def dyn(name: str) -> Path | None:
        hits = [d / f for d, files in search for f in files if f.lower() == name]
        hits.sort(key=lambda p: ("dynamic" not in p.parent.name.lower(), len(p.parts)))
        return hits[0] if hits else None

    return Layout(audio_dir, ann, sorted(static), dyn("valence.csv"), dyn("arousal.csv"))


def scan_audio(audio_dir: Path) -> tuple[dict[int, Path], list[Problem]]:
    """Map song id -> audio file for ``<id>.<ext>`` files in ``audio_dir``; duplicates are problems."""
    found: dict[int, list[Path]] = {}
    for p in sorted(audio_dir.iterdir()):
        if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS and _ID_FILE.match(p.stem):
            found.setdefault(int(p.stem), []).append(p)
    paths, problems = {}, []
    for sid, ps in found.items():
        if len(ps) > 1:
            names = ", ".join(p.name for p in ps)
            problems.append(Problem("duplicate_id", sid, str(ps[0]), f"several audio files for song {sid}: {names}"))
        else:
            paths[sid] = ps[0]
    return paths, problems


def _read_rows(path: Path) -> tuple[list[str], list[tuple[int, str]]]:
    """(stripped header names, [(line number, raw line)]); handles CRLF, BOM, blank lines."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetLayoutError(f"cannot read annotation file {path}: {exc}") from None
    lines = text.splitlines()
    if not lines:
        raise DatasetLayoutError(f"annotation file {path} is empty; re-download the dataset")
    header = [c.strip() for c in lines[0].split(",")]
    rows = [(i + 1, line) for i, line in enumerate(lines) if i > 0 and line.strip()]
    return header, rows


def _floats(cells: list[str]) -> np.ndarray:
    """Cells -> float64 array; empty cells are NaN (fast path: numpy parses the strings itself)."""
    try:
        return np.array(cells, dtype=np.float64)
    except ValueError:
        return np.array([_float(c) for c in cells], dtype=np.float64)


def _float(cell: str) -> float:
    cell = cell.strip()
    return math.nan if cell == "" else float(cell)


def parse_static(path: Path) -> tuple[list[tuple[int, dict[str, float], int]], list[Problem]]:
    """Rows ``(song_id, {valence_mean, valence_std, arousal_mean, arousal_std}, line)`` on the 1–9 scale.

    Columns are selected by (stripped) name; extra columns are ignored. Unparseable rows are problems.
    """
    header, rows = _read_rows(path)
    missing = [c for c in ("song_id", *STATIC_COLUMNS) if c not in header]
    if missing:
        raise DatasetLayoutError(
            f"static annotation file {path} lacks column(s) {missing}; its header is {header}"
        )
    idx = {c: header.index(c) for c in ("song_id", *STATIC_COLUMNS)}
    out, problems = [], []
    for line, text in rows:
        where = f"{path}:{line}"
        cells = text.split(",")
        sid = None
        try:
            sid = int(cells[0].strip()) if idx["song_id"] == 0 else None
            if len(cells) > len(header) and not any(c.strip() for c in cells[len(header):]):
                cells = cells[: len(header)]  # trailing empty fields (a stray comma at the end)
            if len(cells) != len(header):
                raise ValueError(f"{len(cells)} fields, header has {len(header)}")
            sid = int(cells[idx["song_id"]].strip())
            vals = {c: _float(cells[idx[c]]) for c in STATIC_COLUMNS}
        except ValueError as exc:
            problems.append(Problem("unreadable_row", sid, where, f"cannot parse row {line}: {exc}"))
            continue
        out.append((sid, vals, line))
    return out, problems


def check_static(sid: int, vals: dict[str, float], where: str) -> Problem | None:
    """A problem if a static label is NaN or off the 1–9 scale (std outside [0, 8])."""
    bad_nan = [c for c, v in vals.items() if not math.isfinite(v)]
    if bad_nan:
        return Problem("nan_label", sid, where, f"song {sid}: {', '.join(bad_nan)} is NaN/empty")
    lo, hi = STATIC.bounds
    bad = [f"{c}={v:g}" for c, v in vals.items() if c.endswith("_mean") and not lo <= v <= hi]
    bad += [f"{c}={v:g}" for c, v in vals.items() if c.endswith("_std") and not STD_RANGE[0] <= v <= STD_RANGE[1]]
    if bad:
        return Problem("out_of_range_label", sid, where,
                       f"song {sid}: {', '.join(bad)} outside the static 1-9 scale (std 0-8)")
    return None


def parse_dynamic(path: Path) -> tuple[np.ndarray, dict[int, np.ndarray], list[Problem]]:
    """Parse a dynamic CSV: ``(times_s [N], {song_id: values [K_id]}, problems)``; NaN tails removed.

    Values are on the dynamic scale [-1, 1]; rows with values off that scale are problems. Problem kinds
    here start with ``dynamic_``: they void the song's dynamic labels, not the song (static labels stand).
    """
    header, rows = _read_rows(path)
    if not header or header[0] != "song_id":
        raise DatasetLayoutError(f"dynamic annotation file {path}: first column must be 'song_id', got {header[:1]}")
    times = []
    for name in header[1:]:
        m = _SAMPLE_COL.match(name)
        if not m:
            raise DatasetLayoutError(f"dynamic annotation file {path}: unexpected column {name!r} "
                                     "(expected sample_<ms>ms)")
        times.append(int(m.group(1)) / 1000.0)
    times_s = np.asarray(times, dtype=np.float64)
    values: dict[int, np.ndarray] = {}
    problems: list[Problem] = []
    seen: set[int] = set()
    for line, text in rows:
        where = f"{path}:{line}"
        sid = None
        try:
            if text.count(",") >= len(header):
                raise ValueError(f"{text.count(',') + 1} fields, header has {len(header)}")
            cells = text.rstrip(", \t").split(",")  # drop the ragged empty tail (most of a 45 s row)
            sid = int(cells[0].strip())
            v = _floats(cells[1:])
        except ValueError as exc:
            problems.append(Problem("dynamic_unreadable_row", sid, where, f"cannot parse row {line}: {exc}; "
                                    "dynamic labels of this song unused"))
            continue
        finite = np.flatnonzero(np.isfinite(v))
        v = v[: finite[-1] + 1] if finite.size else v[:0]  # drop the ragged NaN tail
        if sid in seen:
            problems.append(Problem("dynamic_duplicate_id", sid, where,
                                    f"song {sid} appears twice in {path.name}; dynamic labels unused"))
            values.pop(sid, None)
            continue
        seen.add(sid)
        lo, hi = DYNAMIC.bounds
        if np.any((v < lo) | (v > hi)):
            problems.append(Problem("dynamic_out_of_range", sid, where,
                                    f"song {sid}: dynamic values outside [-1, 1] in {path.name} "
                                    f"(min {np.nanmin(v):g}, max {np.nanmax(v):g}); dynamic labels unused"))
            continue
        values[sid] = v.astype(np.float32)
    return times_s, values, problems
