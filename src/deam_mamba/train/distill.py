"""Knowledge distillation from a MusiCNN teacher (``pretrain.objective: distill | mask+distill``).

Teacher targets are computed once per corpus and cached beside the pretraining feature cache, in
``<data.cache>/teacher/<teacher file stem>-<settings hash>/``:

- ``songs/<song id>.npy``: ``[N, 2 + D]`` float32 per song, one row per MusiCNN patch (3 s = 187 frames of 256
  samples at 16 kHz, one every ``pretrain.teacher_hop_seconds`` rounded to whole teacher frames): the patch's start
  and end time in seconds (``start = first frame x 256 / 16000``, ``end = start + 187 x 256 / 16000``, clipped to the
  song's duration; a song shorter than 3 s has one repeat-padded patch ``[0, duration]``), then the teacher vector
  (``D = 250``: penultimate layer 200 + tag probabilities 50);
- ``index.json``: settings, the teacher file's path and sha1, per song its file, patch count and the audio's
  fingerprint; ``skipped.csv``: the songs the teacher could not read, with the reason (they are left out of
  distillation, and every run says so).

Arrays and index are written atomically; a later run recomputes only songs that are missing, whose audio changed
(fingerprint; the same bytes under new timestamps, as after a copy or restore, count as unchanged) or that were
skipped before. A cache built with another teacher file (sha1) is refused.

Crop targets (:meth:`TeacherTargets.crop_target`): the crop ``[t0, t1]`` seconds (its log-mel frames, padding not
counted) gets the mean of the vectors of the patches lying **inside** it (``start >= t0 - tol`` and
``end <= t1 + tol``, ``tol`` = half a teacher frame, 8 ms, for frame rounding). A crop that holds no whole patch
(crops shorter than 3 s + the hop can, near the edges) gets the one patch overlapping it most (the earliest on a
tie). Targets are standardised per dimension with the mean and std of all patch vectors of the run's songs
(a dimension with std < 1e-6 is only centred), so predicting the corpus mean scores an MSE of about 1.
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from deam_mamba.config import Config
from deam_mamba.core.errors import CacheError, CheckpointError, ConfigError, DeamError
from deam_mamba.core.io import atomic_path, atomic_write_json
from deam_mamba.data.audio import load_audio
from deam_mamba.features.cache import file_sha1
from deam_mamba.features.prepare import audio_fingerprint, same_audio, write_skipped_csv
from deam_mamba.models import musicnn as mn

log = logging.getLogger(__name__)

TEACHER_VERSION = 1  # bump when the stored vectors change (invalidates teacher caches via the settings hash)
TEACHER_DIR = "teacher"
INDEX = "index.json"
TEACHER_BATCH = 64  # patches per teacher forward pass
FRAME_S = mn.HOP_LENGTH / mn.SAMPLE_RATE  # 16 ms
PATCH_S = mn.PATCH_FRAMES * FRAME_S  # 2.992 s
EDGE_TOL_S = 0.5 * FRAME_S
SAVE_EVERY_S = 10.0


def teacher_files(cfg: Config) -> list[Path]:
    """``pretrain.teacher``: one converted MusiCNN file or a list of them (default: ``make musicnn``'s MSD file);
    a missing file, or two that would share a teacher cache folder, is a one-line error."""
    paths = [Path(str(n)).expanduser() for n in cfg.pretrain.teachers] or [mn.default_weights("msd")]
    for path in paths:
        if not path.is_file():
            raise CheckpointError(f"teacher weights {path} not found: run `make musicnn` once (converts the MusiCNN "
                                  "weights), or set pretrain.teacher=FILE (or [FILE, FILE]) to converted MusiCNN "
                                  ".safetensors")
    stems: dict[str, Path] = {}
    for path in paths:
        other = stems.setdefault(path.stem, path)
        if other is not path:
            raise ConfigError(f"pretrain.teacher lists {other} and {path}: each teacher's targets are cached under "
                              "its file name, so give each teacher once, under a name of its own")
    return paths


def hop_frames(hop_seconds: float) -> int:
    """The teacher patch hop in teacher frames (16 ms): ``hop_seconds`` rounded, at least 1."""
    return max(1, int(round(float(hop_seconds) / FRAME_S)))


def teacher_settings(hop_seconds: float) -> dict[str, Any]:
    """Everything that changes the stored vectors besides the teacher weights (hashed into the folder name)."""
    return {"version": TEACHER_VERSION, "teacher": "musicnn", "format": mn.FORMAT, "features": mn.FEATURE_SETTINGS,
            "hop_frames": hop_frames(hop_seconds), "vector": "penultimate (backend_units) + tag probabilities"}


def teacher_dir(cache_dir: str | Path, teacher: str | Path, hop_seconds: float) -> Path:
    """``<cache_dir>/teacher/<teacher file stem>-<settings hash>``."""
    blob = json.dumps(teacher_settings(hop_seconds), sort_keys=True).encode("utf-8")
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(teacher).stem) or "teacher"
    return Path(cache_dir).expanduser() / TEACHER_DIR / f"{name}-{hashlib.sha1(blob).hexdigest()[:10]}"


def patch_times(n_patches: int, hop: int, duration_s: float) -> np.ndarray:
    """``[n_patches, 2]`` start and end seconds of patches every ``hop`` teacher frames (ends clipped to the song)."""
    start = np.arange(n_patches, dtype=np.float64) * hop * FRAME_S
    return np.stack([start, np.minimum(start + PATCH_S, duration_s)], axis=1)


@torch.inference_mode()
def teacher_vectors(model: mn.MusiCNN, wave16k: np.ndarray, hop: int, device: torch.device | str = "cpu",
                    batch: int = TEACHER_BATCH) -> np.ndarray:
    """Mono 16 kHz wave ``[T]`` -> ``[N, backend_units + n_tags]`` float32: per patch, embedding then tag
    probabilities (patches of :func:`~deam_mamba.models.musicnn.musicnn_patches`, every ``hop`` frames)."""
    patches = mn.musicnn_patches(wave16k, hop_frames=hop)
    out = []
    for i in range(0, len(patches), batch):
        out.append(model.patch_vectors(patches[i:i + batch].to(device)).float().cpu())
    return torch.cat(out).numpy()


def _read_index(root: Path) -> dict[str, Any]:
    path = root / INDEX
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        log.warning("teacher index %s is unreadable (%s): recomputing every song", path, exc)
        return {}


def _write_index(root: Path, index: dict[str, Any]) -> None:
    atomic_write_json(root / INDEX, index)
    write_skipped_csv(root / "skipped.csv", index["skipped"])


def build_teacher_cache(corpus: Any, ids: list[int], cache_dir: str | Path, teacher: str | Path, hop_seconds: float,
                        device: torch.device | str = "cpu", progress: bool = False) -> Path:
    """Compute (or reuse) the teacher vectors of ``ids`` (songs of ``corpus``, an object with ``audio_path(id)``);
    returns the teacher cache folder. Raises :class:`CacheError` if that folder was built with another teacher file."""
    teacher = Path(teacher)
    root = teacher_dir(cache_dir, teacher, hop_seconds)
    sha1 = file_sha1(teacher)
    index = _read_index(root)
    if index and index.get("teacher_sha1") != sha1:
        raise CacheError(f"teacher cache {root} was built with another teacher file (sha1 "
                         f"{str(index.get('teacher_sha1'))[:12]}, from {index.get('teacher_file')}), not {teacher} "
                         f"(sha1 {sha1[:12]}): rename the new teacher file, or delete {root} to rebuild it")
    if index.get("settings") != teacher_settings(hop_seconds):
        index = {}
    songs: dict[str, Any] = dict(index.get("songs", {}))
    todo: list[tuple[int, Path]] = []
    refreshed = False
    for sid in ids:
        audio = Path(corpus.audio_path(sid))
        fp = audio_fingerprint(audio)
        entry = songs.get(str(sid))
        kept = same_audio(entry.get("fingerprint"), audio, fp) if entry and (root / entry["file"]).is_file() else None
        if kept is not None:
            refreshed |= kept != entry["fingerprint"]
            songs[str(sid)] = {**entry, "fingerprint": kept}
            continue
        todo.append((int(sid), audio))
    skipped_before = {int(s["song_id"]) for s in index.get("skipped", [])}
    index = {"settings": teacher_settings(hop_seconds), "teacher_file": str(teacher.resolve()), "teacher_sha1": sha1,
             "songs": songs, "skipped": [s for s in index.get("skipped", []) if int(s["song_id"]) not in
                                         {t[0] for t in todo}]}
    if not todo:
        if refreshed:  # same audio bytes under new timestamps: remember them, so the next run need not hash
            _write_index(root, index)
        return root
    log.info("computing MusiCNN teacher targets for %d of %d songs into %s (%d were skipped before)", len(todo),
             len(ids), root, len(skipped_before & {t[0] for t in todo}))
    model = mn.load_musicnn(teacher).to(device)
    index["dim"] = model.cfg.backend_units + model.cfg.n_tags
    index["tags"] = model.tags
    hop = hop_frames(hop_seconds)
    (root / "songs").mkdir(parents=True, exist_ok=True)
    last_save = time.monotonic()
    for sid, audio in tqdm(todo, desc="teacher targets", unit="song", disable=not progress, leave=False):
        try:
            wave = load_audio(audio, target_sr=mn.SAMPLE_RATE, mono=True)[0]
            vec = teacher_vectors(model, wave, hop, device)
        except (DeamError, ValueError) as exc:  # undecodable, or too short for one FFT window
            index["skipped"].append({"song_id": sid, "file": str(audio), "reason": str(exc)})
            songs.pop(str(sid), None)
            continue
        duration = len(wave) / mn.SAMPLE_RATE
        arr = np.concatenate([patch_times(len(vec), hop, duration), vec], axis=1).astype(np.float32)
        rel = f"songs/{sid}.npy"
        with atomic_path(root / rel) as tmp, open(tmp, "wb") as fh:
            np.save(fh, arr, allow_pickle=False)
        songs[str(sid)] = {"file": rel, "patches": len(arr), "duration_s": duration,
                           "fingerprint": audio_fingerprint(audio, content=True)}
        if time.monotonic() - last_save > SAVE_EVERY_S:
            _write_index(root, index)
            last_save = time.monotonic()
    _write_index(root, index)
    return root


class TeacherTargets:
    """The cached teacher vectors of ``ids`` (those with any), standardised crop targets and trivial floors.

    ``ids``: songs of the run with targets; ``skipped``: ``[{song_id, file, reason}]`` of the run's songs without;
    ``mean, std [D]``: over all patch vectors of ``ids``."""

    def __init__(self, root: str | Path, ids: list[int]):
        self.root = Path(root)
        index = _read_index(self.root)
        if not index:
            raise CacheError(f"no teacher cache at {self.root}; it is built by `deam-mamba pretrain` with "
                             "pretrain.objective=distill")
        songs = index.get("songs", {})
        self.teacher_sha1: str = index["teacher_sha1"]
        self.skipped = [s for s in index.get("skipped", []) if int(s["song_id"]) in set(ids)]
        self.ids = [int(s) for s in ids if str(s) in songs]
        self.times: dict[int, np.ndarray] = {}
        self.vectors: dict[int, np.ndarray] = {}
        for sid in self.ids:
            arr = np.load(self.root / songs[str(sid)]["file"], allow_pickle=False)
            self.times[sid], self.vectors[sid] = arr[:, :2].astype(np.float64), arr[:, 2:]
        if not self.ids:
            raise CacheError(f"the teacher could read none of the {len(ids)} songs (see {self.root / 'skipped.csv'})")
        allv = np.concatenate([self.vectors[s] for s in self.ids]).astype(np.float64)
        self.n_patches = len(allv)
        self.dim = allv.shape[1]
        self.mean = allv.mean(axis=0)
        std = allv.std(axis=0)
        self.std = np.where(std < 1e-6, 1.0, std)

    def __contains__(self, song_id: object) -> bool:
        return song_id in self.vectors

    def standardise(self, v: np.ndarray) -> np.ndarray:
        return ((np.asarray(v, dtype=np.float64) - self.mean) / self.std).astype(np.float32)

    def crop_target(self, song_id: int, t0: float, t1: float) -> np.ndarray:
        """``[D]`` float32: the standardised mean of the patches inside ``[t0, t1]`` seconds (module docstring)."""
        return self.standardise(self.vectors[song_id][crop_patches(self.times[song_id], t0, t1)].mean(axis=0))

    def song_target(self, song_id: int) -> np.ndarray:
        """``[D]``: the standardised mean of all the song's patches."""
        return self.standardise(self.vectors[song_id].mean(axis=0))

    def floors(self, crops: list[tuple[int, float, float]]) -> dict[str, float]:
        return target_floors(self, crops)

    def info(self) -> dict[str, Any]:
        """The teacher cache's identity for ``meta.json``."""
        return {"cache": str(self.root), "sha1": self.teacher_sha1, "dim": self.dim, "patches": self.n_patches,
                "songs_left_out": len(self.skipped)}


class ConcatTargets:
    """Several teachers side by side (``pretrain.teacher`` a list): a crop's target is the concatenation of each
    teacher's own standardised target (``dim`` = the sum), so with equal sizes each teacher weighs the same in the
    MSE. ``ids``: the songs every teacher read (in the first teacher's order); ``skipped``: the others."""

    def __init__(self, parts: list[TeacherTargets]):
        self.parts = parts
        common = set.intersection(*(set(p.ids) for p in parts))
        self.ids = [s for s in parts[0].ids if s in common]
        self._ids = set(self.ids)
        if not self.ids:
            raise CacheError(f"no song was read by all {len(parts)} teachers (see their skipped.csv in "
                             f"{', '.join(str(p.root) for p in parts)})")
        seen: dict[int, dict[str, Any]] = {}
        for p in parts:
            for row in p.skipped:
                seen.setdefault(int(row["song_id"]), row)
        self.skipped = list(seen.values())
        self.dim = sum(p.dim for p in parts)
        self.n_patches = sum(len(parts[0].times[s]) for s in self.ids)
        self.root = ", ".join(str(p.root) for p in parts)

    def __contains__(self, song_id: object) -> bool:
        return song_id in self._ids

    def crop_target(self, song_id: int, t0: float, t1: float) -> np.ndarray:
        """``[sum D]`` float32: each teacher's standardised crop target, concatenated."""
        return np.concatenate([p.crop_target(song_id, t0, t1) for p in self.parts])

    def song_target(self, song_id: int) -> np.ndarray:
        return np.concatenate([p.song_target(song_id) for p in self.parts])

    def floors(self, crops: list[tuple[int, float, float]]) -> dict[str, float]:
        return target_floors(self, crops)

    def info(self) -> dict[str, Any]:
        """Each teacher cache's identity for ``meta.json``, and the concatenated size."""
        return {"dim": self.dim, "patches": self.n_patches, "songs_left_out": len(self.skipped),
                "teachers": [p.info() for p in self.parts]}


def target_floors(targets: TeacherTargets | ConcatTargets, crops: list[tuple[int, float, float]]) -> dict[str, float]:
    """MSE floors on ``crops`` (``(song id, t0, t1)``): ``corpus_mean`` (predicting 0, the corpus mean; about 1,
    less as crop targets average patches) and ``song_mean`` (predicting each crop's song mean target)."""
    t = np.stack([targets.crop_target(s, a, b) for s, a, b in crops]).astype(np.float64)
    song = np.stack([targets.song_target(s) for s, _, _ in crops]).astype(np.float64)
    return {"corpus_mean": float(np.mean(t ** 2)), "song_mean": float(np.mean((t - song) ** 2))}


def crop_patches(times: np.ndarray, t0: float, t1: float, tol: float = EDGE_TOL_S) -> np.ndarray:
    """Indices of the patches (``times [N, 2]`` start, end seconds) lying inside ``[t0, t1]`` (``tol`` of slack);
    none inside: the one overlapping it most (the earliest on a tie)."""
    inside = (times[:, 0] >= t0 - tol) & (times[:, 1] <= t1 + tol)
    if inside.any():
        return np.flatnonzero(inside)
    overlap = np.minimum(times[:, 1], t1) - np.maximum(times[:, 0], t0)
    return np.array([int(np.argmax(overlap))])


def prepare_teacher(cfg: Config, corpus: Any, ids: list[int], device: torch.device | str = "cpu",
                    progress: bool = False) -> TeacherTargets | ConcatTargets:
    """Build or reuse the teacher cache of ``ids`` beside ``cfg.data.cache`` (one per teacher file) and load its
    targets; warns (every run) about songs a teacher could not read, which are left out of distillation."""
    parts = [TeacherTargets(build_teacher_cache(corpus, ids, cfg.data.cache, path, cfg.pretrain.teacher_hop_seconds,
                                                device, progress), ids)
             for path in teacher_files(cfg)]
    targets = parts[0] if len(parts) == 1 else ConcatTargets(parts)
    if targets.skipped:
        log.warning("%d of %d songs are left out of distillation: the teacher could not read them (listed with the "
                    "reasons in skipped.csv of %s)", len(targets.skipped), len(ids), targets.root)
    chunk = cfg.chunks.chunk_seconds
    if chunk < PATCH_S + hop_frames(cfg.pretrain.teacher_hop_seconds) * FRAME_S:
        log.info("chunks.chunk_seconds=%s is shorter than a teacher patch (%.2f s) + the hop: some crops hold no whole "
                 "patch and get the one overlapping them most", chunk, PATCH_S)
    return targets
