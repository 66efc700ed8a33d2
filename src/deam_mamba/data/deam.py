"""``DEAMHandler``: find DEAM on disk (path, ``DEAM_ROOT`` or kagglehub), read its labels, split it.

Labels come on two scales that must never be mixed in one loss:

* :meth:`DEAMHandler.static_labels` — song-level means/stds on the **1–9** scale
  (:data:`deam_mamba.core.scales.STATIC`);
* :meth:`DEAMHandler.dynamic_labels` — 2 Hz values from 15 s on the **[-1, 1]** scale
  (:data:`deam_mamba.core.scales.DYNAMIC`).

Inconsistencies (labels without audio, audio without labels, NaN or out-of-range labels,
duplicate ids, unreadable CSV rows) are listed in :attr:`DEAMHandler.problems`; the songs they
affect are excluded from :attr:`DEAMHandler.ids` — never dropped silently.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from deam_mamba.core.errors import (
    ConfigError,
    DatasetLayoutError,
    DatasetNotFoundError,
    UnknownSongError,
)
from deam_mamba.core.scales import DYNAMIC, STATIC, LabelKind, quadrant_of
from deam_mamba.data.annotations import (
    STATIC_COLUMNS,
    Problem,
    check_static,
    locate,
    parse_dynamic,
    parse_static,
    scan_audio,
)
from deam_mamba.data.base import SongCollection, label_stats

log = logging.getLogger(__name__)

KAGGLE_HANDLE = "imsparsh/deam-mediaeval-dataset-emotional-analysis-in-music"
ENV_VAR = "DEAM_ROOT"
OFFICIAL_TEST_IDS = (2001, 2058)  # MediaEval 2015 test songs; ids <= 2000 are the development set
SPLITS = ("official2015", "random")
__all__ = ["ENV_VAR", "KAGGLE_HANDLE", "DEAMHandler", "Problem", "resolve_root"]

_WHAT_TO_DO = (f"Pass the folder explicitly (DEAMHandler(root=...) / deam-mamba info DATA_ROOT) or set "
               f"{ENV_VAR}=/path/to/deam. Without the real DEAM, make a synthetic one: "
               f"`deam-mamba synth --out DIR` then `export {ENV_VAR}=DIR`.")


def resolve_root(root: str | os.PathLike | None = None) -> Path:
    """The DEAM root: explicit ``root``, else ``$DEAM_ROOT``, else a kagglehub download (lazy import)."""
    if root is not None:
        source = "the root you passed"
    elif os.environ.get(ENV_VAR, "").strip():
        root, source = os.environ[ENV_VAR].strip(), f"${ENV_VAR}"
    else:
        root, source = _kagglehub_download(), f"kagglehub ({KAGGLE_HANDLE})"
    path = Path(root).expanduser()
    if not path.exists():
        raise DatasetNotFoundError(f"DEAM root {path} (from {source}) does not exist. {_WHAT_TO_DO}")
    if not path.is_dir():
        raise DatasetNotFoundError(f"DEAM root {path} (from {source}) is not a folder. {_WHAT_TO_DO}")
    return path.resolve()


def _kagglehub_download() -> str:
    try:
        import kagglehub  # lazy: only a download needs it

        return str(kagglehub.dataset_download(KAGGLE_HANDLE))
    except Exception as exc:  # noqa: BLE001 - any failure (no network, no credentials) is reported
        raise DatasetNotFoundError(
            f"no DEAM root given and ${ENV_VAR} is not set, so kagglehub.dataset_download({KAGGLE_HANDLE!r}) "
            f"was tried and failed: {type(exc).__name__}: {exc}. {_WHAT_TO_DO}"
        ) from exc


class DEAMHandler(SongCollection):
    """The DEAM dataset on disk. ``ids``: sorted song ids that have audio AND valid static labels.

    Same method names and semantics as :class:`deam_mamba.data.base.MusicDataset` (``kind``,
    ``label_kind``, ``scale``, ``static_labels``, ``quadrant``, ``group``, ``split``...).

    ``root``: the folder holding the Kaggle download (any nesting); ``None`` -> ``$DEAM_ROOT`` ->
    kagglehub. Construction reads only the CSVs and lists the audio folder (no decoding).
    """

    kind = "deam"
    label_kind = LabelKind.STATIC
    scale = STATIC
    dynamic_scale = DYNAMIC

    def __init__(self, root: str | os.PathLike | None = None):
        self.root: Path = resolve_root(root)
        self.layout = locate(self.root)
        self.problems: list[Problem] = []
        self._audio, problems = scan_audio(self.layout.audio_dir)
        self.problems += problems
        self._static: dict[int, dict[str, float]] = {}
        self._read_static()
        self._times_s = np.zeros(0)
        self._dyn: dict[str, dict[int, np.ndarray]] = {"valence": {}, "arousal": {}}
        self._read_dynamic()
        self._durations: dict[int, float] | None = None
        excluded = {p.song_id for p in self.problems if p.song_id is not None and not p.kind.startswith("dynamic_")}
        self.ids: list[int] = sorted(set(self._audio) & set(self._static) - excluded)
        if self.problems:
            log.warning("DEAM at %s: %d problem(s) (%s); see handler.problems / `deam-mamba info`",
                        self.root, len(self.problems), self._problem_counts())
        log.info("DEAM at %s: %d songs with audio and static labels", self.root, len(self.ids))

    # --- parsing ---------------------------------------------------------------------------
    def _read_static(self) -> None:
        rows: dict[int, list[tuple[dict[str, float], str]]] = {}
        dup_audio = {p.song_id for p in self.problems if p.kind == "duplicate_id"}
        for path in self.layout.static_files:
            parsed, problems = parse_static(path)
            self.problems += problems
            for sid, vals, line in parsed:
                rows.setdefault(sid, []).append((vals, f"{path}:{line}"))
        for sid, entries in sorted(rows.items()):
            if len(entries) > 1:
                where = "; ".join(Path(w).name for _, w in entries)
                self.problems.append(Problem("duplicate_id", sid, entries[0][1],
                                             f"song {sid} has {len(entries)} static label rows ({where})"))
                continue
            vals, where = entries[0]
            bad = check_static(sid, vals, where)
            if bad:
                self.problems.append(bad)
                continue
            self._static[sid] = vals
            if sid not in self._audio and sid not in dup_audio:
                self.problems.append(Problem("label_without_audio", sid, where,
                                             f"song {sid} has static labels but no audio file in "
                                             f"{self.layout.audio_dir}"))
        unreadable = {p.song_id for p in self.problems if p.kind == "unreadable_row"}
        for sid, path in sorted(self._audio.items()):
            if sid not in rows and sid not in unreadable:
                self.problems.append(Problem("audio_without_label", sid, str(path),
                                             f"song {sid} has audio but no static label row"))

    def _read_dynamic(self) -> None:
        for dim, path in (("valence", self.layout.dynamic_valence), ("arousal", self.layout.dynamic_arousal)):
            if path is None:
                self.problems.append(Problem("missing_file", None, f"{dim}.csv",
                                             f"no dynamic {dim}.csv under {self.layout.annotations_dir}; "
                                             "dynamic_labels() will return empty arrays"))
                continue
            times, values, problems = parse_dynamic(path)
            k = min(len(times), len(self._times_s))
            if not np.array_equal(times[:k], self._times_s[:k]):
                raise DatasetLayoutError(f"dynamic files disagree on their time columns: {path} starts "
                                         f"{times[:3].tolist()} s, the other {self._times_s[:3].tolist()} s")
            self.problems += problems
            self._dyn[dim] = values
            if len(times) > len(self._times_s):
                self._times_s = times

    # --- per-song access -------------------------------------------------------------------
    def _check(self, song_id: int) -> int:
        sid = int(song_id)
        if sid in self._id_set:
            return sid
        why = [p.message for p in self.problems if p.song_id == sid and not p.kind.startswith("dynamic_")]
        if why:
            raise UnknownSongError(f"song {sid} is excluded from this DEAM copy: {'; '.join(why)}")
        raise UnknownSongError(f"unknown song id {sid}: DEAM at {self.root} has no such song "
                               f"(DEAM ids have gaps, e.g. 23, 26, 27, 28; see handler.ids)")

    def __repr__(self) -> str:
        return f"DEAMHandler(root={str(self.root)!r}, songs={len(self.ids)}, problems={len(self.problems)})"

    def static_labels(self, song_id: int) -> dict[str, float]:
        """``{valence_mean, valence_std, arousal_mean, arousal_std}`` on the static **1–9** scale."""
        return dict(self._static[self._check(song_id)])

    def quadrant(self, song_id: int) -> int:
        """Russell quadrant 1..4 of the song's static means (around the 1-9 midpoint 5; on it counts as
        positive / high)."""
        lab = self.static_labels(song_id)
        return int(quadrant_of(lab["valence_mean"], lab["arousal_mean"], STATIC))

    def group(self, song_id: int) -> None:
        """DEAM has no artist metadata: every song is its own group in splits."""
        self._check(song_id)
        return None

    def name(self, song_id: int) -> str:
        """The song's file name stem (its DEAM id)."""
        return self.audio_path(song_id).stem

    def dynamic_labels(self, song_id: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(times_s [K] float64, valence [K] float32, arousal [K] float32)`` on the dynamic **[-1, 1]** scale.

        2 Hz from 15 s; the NaN tail is removed (K = shorter of the two rows; K may be 0).
        NOT on the 1–9 scale of :meth:`static_labels`.
        """
        sid = self._check(song_id)
        v = self._dyn["valence"].get(sid, np.zeros(0, np.float32))
        a = self._dyn["arousal"].get(sid, np.zeros(0, np.float32))
        k = min(len(v), len(a), len(self._times_s))
        return self._times_s[:k].copy(), v[:k].copy(), a[:k].copy()

    def audio_path(self, song_id: int) -> Path:
        """The audio file of a song (also for songs excluded because of label problems)."""
        sid = int(song_id)
        if sid in self._audio:
            return self._audio[sid]
        return self._audio[self._check(sid)]  # raises UnknownSongError with the reason

    # --- splits ----------------------------------------------------------------------------
    def split(self, name: str = "official2015", seed: int = 0, val_fraction: float = 0.1,
              fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)) -> dict[str, list[int]]:
        """Disjoint, seeded ``{"train", "val", "test"}`` lists of song ids (each sorted).

        ``"official2015"``: test = ids 2001..2058, val = a seeded ``val_fraction`` of ids <= 2000.
        ``"random"``: a seeded permutation cut by ``fractions`` (train, val, test).
        Same ids + same seed -> same split, in any process (``np.random.default_rng`` on sorted ids).
        """
        ids = np.asarray(self.ids, dtype=np.int64)
        rng = np.random.default_rng(seed)
        if name == "official2015":
            if not 0.0 <= val_fraction < 1.0:
                raise ConfigError(f"val_fraction must be in [0, 1), got {val_fraction}")
            dev, test = ids[ids <= 2000], ids[ids >= OFFICIAL_TEST_IDS[0]]
            perm = rng.permutation(len(dev))
            n_val = int(round(val_fraction * len(dev)))
            parts = {"train": dev[perm[n_val:]], "val": dev[perm[:n_val]], "test": test}
        elif name == "random":
            if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1.0) > 1e-6:
                raise ConfigError(f"fractions must be 3 non-negative numbers summing to 1, got {fractions}")
            perm = ids[rng.permutation(len(ids))]
            n_train = int(round(fractions[0] * len(ids)))
            n_val = int(round(fractions[1] * len(ids)))
            parts = {"train": perm[:n_train], "val": perm[n_train:n_train + n_val], "test": perm[n_train + n_val:]}
        else:
            raise ConfigError(f"unknown split {name!r}; choose one of {SPLITS} (or use kfold(k, seed))")
        return {k: sorted(int(i) for i in v) for k, v in parts.items()}

    def kfold(self, k: int = 5, seed: int = 0, ids: Iterable[int] | None = None) -> list[dict[str, list[int]]]:
        """``k`` seeded folds ``[{"train": [...], "val": [...]}, ...]``; the val sets partition ``ids``."""
        ids_arr = np.asarray(sorted(self.ids if ids is None else {self._check(i) for i in ids}), dtype=np.int64)
        if not 2 <= k <= len(ids_arr):
            raise ConfigError(f"k must be between 2 and the number of songs ({len(ids_arr)}), got {k}")
        folds = np.array_split(ids_arr[np.random.default_rng(seed).permutation(len(ids_arr))], k)
        return [{"train": sorted(int(i) for j, f in enumerate(folds) if j != n for i in f),
                 "val": sorted(int(i) for i in fold)} for n, fold in enumerate(folds)]

    # --- reporting -------------------------------------------------------------------------
    def summary(self, durations: bool = False) -> dict:
        """Counts, id range, label statistics per scale, problems by kind.

        Durations (``durations_s``) are included after :meth:`check_audio` ran, or if ``durations=True``
        (reads every audio header: seconds for the full DEAM).
        """
        ids = self.ids
        stat = {c: np.array([self._static[i][c] for i in ids]) for c in STATIC_COLUMNS}
        out: dict = {
            "root": str(self.root),
            "audio_dir": str(self.layout.audio_dir),
            "annotations_dir": str(self.layout.annotations_dir),
            "n_songs": len(ids),
            "n_audio_files": len(self._audio),
            "n_static_labels": len(self._static),
            "n_dynamic_labels": len(set(self._dyn["valence"]) & set(self._dyn["arousal"])),
            "id_min": ids[0] if ids else None,
            "id_max": ids[-1] if ids else None,
            "n_by_year": {"2013 (2-1000)": sum(i <= 1000 for i in ids),
                          "2014 (1001-2000)": sum(1000 < i <= 2000 for i in ids),
                          "2015 (2001-2058)": sum(i > 2000 for i in ids)},
            "static_scale": list(STATIC.bounds),
            "static_labels": {c: label_stats(v) for c, v in stat.items()},
            "dynamic_scale": list(DYNAMIC.bounds),
            "dynamic_labels": self._dynamiclabel_stats(),
            "n_problems": len(self.problems),
            "problems_by_kind": self._problem_counts(),
        }
        if durations and self._durations is None:
            self.check_audio(progress=False)
        if self._durations is not None:
            out["durations_s"] = label_stats(np.array(list(self._durations.values())))
        return out

    def _dynamiclabel_stats(self) -> dict:
        per_song = [self.dynamic_labels(i) for i in self.ids]
        lens = np.array([len(t) for t, _, _ in per_song])
        return {"values_per_song": label_stats(lens),
                "valence": label_stats(np.concatenate([v for _, v, _ in per_song]) if per_song else np.zeros(0)),
                "arousal": label_stats(np.concatenate([a for _, _, a in per_song]) if per_song else np.zeros(0))}


def format_summary(summary: dict, problems: list[Problem], max_problems: int | None = 50) -> str:
    """Human-readable text of :meth:`DEAMHandler.summary` and the problem list (``None``: all)."""
    s = summary
    lines = [f"DEAM root:    {s['root']}", f"audio:        {s['audio_dir']}", f"annotations:  {s['annotations_dir']}",
             f"songs:        {s['n_songs']} with audio + static labels (ids {s['id_min']}..{s['id_max']}); "
             f"{s['n_audio_files']} audio files, {s['n_static_labels']} valid static rows, "
             f"{s['n_dynamic_labels']} dynamic rows",
             "by year:      " + ", ".join(f"{k}: {v}" for k, v in s["n_by_year"].items())]
    if "durations_s" in s and s["durations_s"].get("n"):
        d = s["durations_s"]
        lines.append(f"durations:    {d['min']:.1f}..{d['max']:.1f} s (mean {d['mean']:.1f} s, n={d['n']})")
    lines.append("static labels (song means/stds, 1-9 scale):")
    lines += [_stat_line(c, st) for c, st in s["static_labels"].items() if st.get("n")]
    dyn = s["dynamic_labels"]
    lines.append(f"dynamic labels (2 Hz from 15 s, [-1, 1] scale): {dyn['values_per_song'].get('mean', 0):.1f} "
                 f"values/song on average")
    lines += [_stat_line(c, dyn[c]) for c in ("valence", "arousal") if dyn[c].get("n")]
    if not problems:
        lines.append("problems:     none")
        return "\n".join(lines)
    kinds = ", ".join(f"{k}: {v}" for k, v in s["problems_by_kind"].items())
    lines.append(f"problems:     {len(problems)} ({kinds}); songs with label/audio problems are excluded "
                 "from ids, dynamic_* problems void only that song's dynamic labels")
    shown = problems if max_problems is None else problems[:max_problems]
    lines += [f"  [{p.kind}] {p.message} ({p.file})" for p in shown]
    if len(shown) < len(problems):
        lines.append(f"  ... {len(problems) - len(shown)} more (use --all, or --problems-out FILE.csv)")
    return "\n".join(lines)


def _stat_line(name: str, st: dict) -> str:
    return f"  {name:<13} mean {st['mean']:.3f}  std {st['std']:.3f}  range {st['min']:.2f}..{st['max']:.2f}"
