"""The ``predict`` command's inputs and outputs: collect audio files, predict them, write CSV/JSON."""
from __future__ import annotations

import csv
import io
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from deam_mamba.core.errors import AudioDecodeError, DeamError, OutputExistsError
from deam_mamba.core.io import atomic_write_text, check_writable_location, to_json
from deam_mamba.data.audio import AUDIO_EXTENSIONS
from deam_mamba.inference.checks import describe
from deam_mamba.inference.export import onnx_predictor
from deam_mamba.inference.predictor import CURVE_HZ, Predictor, SongPrediction

log = logging.getLogger(__name__)


@dataclass
class PredictionRun:
    """All files of one ``predict`` call: the predictions and the files that could not be read."""

    predictions: list[SongPrediction] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    run_dir: str | None = None
    mode: str = "static"
    pooling: str = "mean"


def predict_files(predictor: Predictor, paths: Sequence[str | Path], progress: bool = True) -> PredictionRun:
    """Predict every file; unreadable ones go to ``skipped`` (path, reason) and are logged."""
    result = PredictionRun(run_dir=predictor.run_dir, mode=predictor.mode, pooling=predictor.pooling)
    for path in tqdm(list(paths), desc="predict", unit="file", disable=not progress):
        try:
            pred = predictor.predict_file(path)
        except AudioDecodeError as exc:
            log.warning("skipping %s: %s", path, exc.reason)
            result.skipped.append({"path": str(path), "reason": exc.reason})
            continue
        if pred.flags:
            log.warning("%s: %s (flags: %s)", path, describe(pred.flags), ",".join(pred.flags))
        result.predictions.append(pred)
    return result


def collect_audio_files(inputs: Iterable[str | Path]) -> tuple[list[Path], list[dict[str, str]]]:
    """Expand files and folders (recursively, over :data:`AUDIO_EXTENSIONS`) into a sorted list.

    Returns ``(files, missing)``: inputs that do not exist are reported, not raised, so the rest still
    run. A folder with no audio in it is reported too.
    """
    files: list[Path] = []
    missing: list[dict[str, str]] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(q for q in p.rglob("*") if q.is_file() and q.suffix.lower() in AUDIO_EXTENSIONS)
            if not found:
                missing.append({"path": str(p), "reason": f"folder has no audio files ({', '.join(AUDIO_EXTENSIONS)})"})
            files.extend(found)
        elif p.is_file():
            files.append(p)
        else:
            missing.append({"path": str(p), "reason": "no such file or folder"})
    unique: dict[Path, Path] = {}
    for f in files:  # a file named twice (or via a folder and directly) is predicted once
        unique.setdefault(f.resolve(), f)
    return list(unique.values()), missing


def predictions_to_json(result: PredictionRun) -> str:
    """The whole run as JSON: scales, one record per song (with its curve), and the skipped files."""
    doc = {
        "run_dir": result.run_dir,
        "mode": result.mode,
        "pooling": result.pooling,
        "song_scale": result.predictions[0].song_scale if result.predictions else None,
        "curve_scale": result.predictions[0].curve_scale if result.predictions else None,
        "curve_hz": CURVE_HZ,
        "predictions": [p.to_dict() for p in result.predictions],
        "skipped": result.skipped,
    }
    return to_json(doc) + "\n"


def predictions_to_csv(result: PredictionRun) -> str:
    """One row per song: file, duration, song valence/arousal, scales, ``flags`` (``;``-separated names from
    :data:`deam_mamba.inference.checks.FLAGS`, empty when none), and the 2 Hz curves as ``;``-separated lists
    (times in s). Skipped files are rows with an empty prediction and a reason."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["file", "duration_s", "valence", "arousal", "song_scale", "quadrant", "p_valence_positive",
                "p_arousal_high", "n_chunks", "flags", "feature_shift_z", "curve_scale", "curve_times_s",
                "curve_valence", "curve_arousal", "skipped_reason"])
    for p in result.predictions:
        d = p.to_dict()
        w.writerow([d["source"], d["duration_s"], d["valence"], d["arousal"], d["song_scale"], d["quadrant"] or "",
                    _blank(d["p_valence_positive"]), _blank(d["p_arousal_high"]), d["n_chunks"],
                    ";".join(d["flags"]), _blank(d["feature_shift_z"]), d["curve_scale"],
                    ";".join(map(str, d["curve_times_s"])),
                    ";".join(map(str, d["curve_valence"])), ";".join(map(str, d["curve_arousal"])), ""])
    for s in result.skipped:
        w.writerow([s["path"]] + [""] * 14 + [s["reason"]])
    return buf.getvalue()


def _blank(x: float | None) -> str | float:
    return "" if x is None else x


def check_output_path(out: str | Path, force: bool = False, formats: tuple[str, ...] = (".csv", ".json")) -> Path:
    """Validate an ``--out`` file name before any work: one of ``formats`` (suffixes), not a folder, not existing
    unless ``force``, in a place we may write (``predict``: .csv/.json; ``embed``: .npz)."""
    out = Path(out)
    names = " or ".join(formats)
    if out.suffix.lower() not in formats:
        raise DeamError(f"--out {out}: unknown output format {out.suffix!r}; use a {names} file name")
    if out.is_dir():
        raise DeamError(f"--out {out} is a folder; give a {names} file name")
    if out.exists() and not force:
        raise OutputExistsError(f"{out} already exists; pass --force to overwrite it or choose another --out")
    check_writable_location(out, "--out")
    return out


def write_predictions(result: PredictionRun, out: str | Path, force: bool = False) -> Path:
    """Write ``.json`` or ``.csv`` (by suffix) atomically; refuse an existing file unless ``force``."""
    out = check_output_path(out, force)
    fmt = out.suffix.lower()
    text = predictions_to_json(result) if fmt == ".json" else predictions_to_csv(result)
    atomic_write_text(out, text)
    return out


def predict_paths(run_dir: str | Path, inputs: Sequence[str | Path], which: str = "best", device: str = "cpu",
                  batch_size: int = 16, hop_seconds: float | None = None, progress: bool = True,
                  backend: str = "torch", onnx: str | Path | None = None) -> PredictionRun:
    """The ``predict`` command's library call: load the run, expand the inputs, predict every file.

    ``backend="onnx"``: the network runs in ONNX Runtime from ``onnx`` (default ``RUN_DIR/model.onnx``, written
    by ``deam-mamba export``); features, chunking and pooling are the same code."""
    files, missing = collect_audio_files(inputs)
    for m in missing:
        log.warning("skipping %s: %s", m["path"], m["reason"])
    if backend == "onnx":
        if device != "cpu":
            raise DeamError("--backend onnx runs on the CPU; leave out --device")
        predictor = onnx_predictor(run_dir, onnx, batch_size=batch_size, hop_seconds=hop_seconds)
    elif backend == "torch":
        predictor = Predictor.from_run(run_dir, which=which, device=device, batch_size=batch_size,
                                       hop_seconds=hop_seconds)
    else:
        raise DeamError(f"unknown backend {backend!r}: expected 'torch' or 'onnx'")
    result = predict_files(predictor, files, progress=progress)
    result.skipped = missing + result.skipped
    return result
