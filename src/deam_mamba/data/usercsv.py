"""``CSVDataset``: a user's own audio files listed in one CSV, with continuous or quadrant labels.

The CSV (quoted fields allowed; blank lines skipped; ``#`` lines before the header are comments)::

    # scale: 1-9
    file,valence,arousal,artist
    songs/a.mp3,6.5,3.0,Some Artist
    /abs/path/b.wav,2.0,8.0,

* ``file``: a path relative to the CSV's folder, or absolute. ``name(id)`` is the path as written.
* Labels, one of two sets: ``valence`` and ``arousal`` (optionally ``valence_std``, ``arousal_std``) on a scale
  the user NAMES, or ``quadrant`` (``Q1..Q4`` or ``1..4``). Both sets in one file is refused.
* The scale: the constructor's ``scale=`` ("1-9", "0-1", "[-1, 1]", "lo,hi") or a ``# scale: 1-9`` comment
  line before the header; values without a named scale are refused (no guessing), and two different names
  (argument and comment) are refused too. Labels are returned on that scale, never rescaled.
* ``artist`` (optional): the split group; an empty cell leaves the song its own group (a note).
* Ids: 1..N in row order (blank lines not counted), stable however many rows are unusable. Missing files,
  NaN or out-of-scale values, bad quadrants and files listed twice are problems; those songs are excluded.
"""
from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from deam_mamba.core.errors import ConfigError, DatasetLayoutError
from deam_mamba.core.scales import SCALE_HELP, LabelKind, Scale, parse_quadrant, parse_scale
from deam_mamba.data.annotations import Problem, _float
from deam_mamba.data.base import MusicDataset, check_labels, read_table

log = logging.getLogger(__name__)

__all__ = ["CSVDataset"]

_SCALE_COMMENT = re.compile(r"^scale\s*[:=]\s*(.+)$", re.IGNORECASE)


class CSVDataset(MusicDataset):
    """Audio files + labels from a user's CSV (see the module doc). ``root``: the CSV file."""

    kind = "csv"

    def __init__(self, csv_path: str | os.PathLike, scale: str | Scale | tuple[float, float] | None = None):
        self._scale_arg = scale
        self.scale_from: str | None = None  # "argument" or "comment"
        super().__init__(csv_path)

    def _load(self) -> None:
        path = self.root
        if not path.is_file():
            raise DatasetLayoutError(f"{path} is not a file: pass the CSV that lists the audio files "
                                     "(columns file, valence, arousal or file, quadrant)")
        table = read_table(path, what="dataset CSV")
        i_file = table.col("file")
        i_val, i_aro, i_quad = table.col("valence"), table.col("arousal"), table.col("quadrant")
        if i_file is None:
            raise DatasetLayoutError(f"dataset CSV {path} has no 'file' column (header {table.header}); the first "
                                     "line must name the columns: file,valence,arousal or file,quadrant")
        if (i_val is None) != (i_aro is None):
            raise DatasetLayoutError(f"dataset CSV {path} has only one of 'valence'/'arousal'; give both, or a "
                                     "'quadrant' column instead")
        if i_val is not None and i_quad is not None:
            raise DatasetLayoutError(f"dataset CSV {path} has both valence/arousal and quadrant columns; keep one "
                                     "label set (quadrants follow from valence/arousal anyway)")
        if i_val is None and i_quad is None:
            raise DatasetLayoutError(f"dataset CSV {path} has no labels: add 'valence','arousal' columns (and name "
                                     "their scale) or a 'quadrant' column (Q1..Q4)")
        named = self._named_scale(table.comments)
        if i_quad is not None:
            self.label_kind, self.scale = LabelKind.QUADRANT, None
            if named is not None:
                raise ConfigError(f"dataset CSV {path} has quadrant labels (no values), so a scale "
                                  f"({self.scale_from}) does not apply; drop it")
        else:
            if named is None:
                raise DatasetLayoutError(f"dataset CSV {path} has valence/arousal values but no scale: add a first "
                                         "line '# scale: 1-9' or pass scale='1-9' (" + SCALE_HELP + ")")
            self.label_kind, self.scale = LabelKind.STATIC, named
        cols = {"valence_mean": i_val, "valence_std": table.col("valence_std"), "arousal_mean": i_aro,
                "arousal_std": table.col("arousal_std")}
        i_artist = table.col("artist")
        seen: dict[Path, list[int]] = {}
        for sid, (line, cells) in enumerate(table.rows, start=1):
            where = f"{path}:{line}"
            if len(cells) > len(table.header) and not any(c.strip() for c in cells[len(table.header):]):
                cells = cells[: len(table.header)]  # trailing empty fields (a stray comma at the end)
            if len(cells) != len(table.header):
                self.problems.append(Problem("unreadable_row", sid, where, f"cannot parse row {line}: "
                                             f"{len(cells)} fields, header has {len(table.header)}"))
                continue
            written = cells[i_file].strip()
            self._names[sid] = written
            if not written:
                self.problems.append(Problem("unreadable_row", sid, where, f"row {line} names no file"))
                continue
            audio = Path(written).expanduser()
            audio = audio if audio.is_absolute() else path.parent / audio
            if i_artist is not None:
                self._groups[sid] = cells[i_artist].strip() or None
                if self._groups[sid] is None:
                    self.problems.append(Problem("missing_metadata", sid, where, f"row {line} ({written}): no "
                                                 "artist; it is its own group in splits"))
            if audio.is_file():
                self._audio[sid] = audio
                seen.setdefault(audio.resolve(), []).append(sid)
            else:
                self.problems.append(Problem("label_without_audio", sid, where, f"row {line}: file {written!r} "
                                             f"not found (looked at {audio})"))
            self._read_labels(sid, cells, cols, i_quad, where)
        for audio, sids in seen.items():
            if len(sids) > 1:
                for sid in sids:
                    self.problems.append(Problem("duplicate_id", sid, str(audio), f"{audio} is listed on "
                                                 f"{len(sids)} rows (ids {sids}); those rows are unused"))

    def _named_scale(self, comments: list[str]) -> Scale | None:
        """The scale from the argument or a ``# scale:`` comment; both naming different scales is refused."""
        hits = [m.group(1).strip() for c in comments if (m := _SCALE_COMMENT.match(c))]
        from_comment = parse_scale(hits[0]) if hits else None
        from_arg = parse_scale(self._scale_arg) if self._scale_arg is not None else None
        if from_comment and from_arg and (from_comment.lo, from_comment.hi) != (from_arg.lo, from_arg.hi):
            raise ConfigError(f"dataset CSV {self.root} says '# scale: {hits[0]}' but scale={self._scale_arg!r} was "
                              "passed; make them agree or drop one")
        self.scale_from = "argument" if from_arg else "comment" if from_comment else None
        return from_arg or from_comment

    def _read_labels(self, sid: int, cells: list[str], cols: dict[str, int | None], i_quad: int | None,
                     where: str) -> None:
        if i_quad is not None:
            q = parse_quadrant(cells[i_quad])
            if q is None:
                self.problems.append(Problem("bad_quadrant", sid, where, f"song {sid} ({self._names[sid]}): quadrant "
                                             f"{cells[i_quad].strip()!r} is not one of Q1..Q4 / 1..4"))
            else:
                self._quadrants[sid] = q
            return
        try:
            vals = {k: _float(cells[i]) for k, i in cols.items() if i is not None}
        except ValueError as exc:
            self.problems.append(Problem("unreadable_row", sid, where, f"song {sid} ({self._names[sid]}): {exc}"))
            return
        bad = check_labels(sid, vals, where, self.scale)
        if bad:
            self.problems.append(bad)
        else:
            self._static[sid] = vals

    def _summary_extra(self) -> dict:
        return {"csv": str(self.root), "scale_from": self.scale_from}
