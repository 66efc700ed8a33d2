"""Write tiny DEAM-shaped trees (per /work/shared/deam/LAYOUT.md) into a temp folder for tests.

Real quirks: CRLF CSVs, header spaces, the 13-column 2015 file with the ``valence_ max_mean``
typo, dynamic rows with ragged NaN tails, MP3s at several rates (44.1 kHz stereo, 48 kHz stereo,
22.05 kHz mono, 16 kHz), and deliberate problems (see ``PROBLEM_IDS``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

# song id -> (sample rate, channels); all MP3 (as DEAM) unless noted in AUDIO_FORMAT
GOOD_AUDIO = {2: (44100, 2), 3: (48000, 2), 4: (22050, 1), 24: (44100, 2), 25: (16000, 1),
              1001: (44100, 2), 2001: (44100, 2), 2002: (48000, 1)}
# labels (valence_mean, valence_std, arousal_mean, arousal_std) on 1-9
GOOD_LABELS = {2: (3, 0.9, 3.1, 1.2), 3: (4.82, 1.1, 5.5, 0.8), 4: (6.2, 1.47, 2.1, 0.5),
               24: (5.4, 2.2, 6.6, 1.3), 25: (1.6, 0.3, 8.4, 2.9), 1001: (7.1, 1, 4, 1.5),
               2001: (5, 1.2, 5.9, 1.1), 2002: (2.5, 0.7, 7.25, 0.9)}
PROBLEM_IDS = {
    "corrupt_audio": 5,        # labels fine, MP3 is random bytes (detected lazily at decode)
    "label_without_audio": 6,
    "audio_without_label": 7,
    "nan_label": 8,            # empty arousal_mean cell
    "out_of_range_label": 9,   # valence_mean 9.5
    "duplicate_id": 10,        # two static rows
    "unreadable_row": 11,      # 'abc' in a number column
}
DYN_COLS = 12  # sample_15000ms .. sample_20500ms


@dataclass
class Tree:
    """What was written: ``root`` to pass to DEAMHandler, and the expectations."""

    root: Path
    audio_dir: Path
    static_1: Path
    static_2: Path
    dyn_valence: Path
    dyn_arousal: Path
    good_ids: list[int] = field(default_factory=list)  # ids the handler must list (incl. corrupt 5)
    dyn_len: dict[int, int] = field(default_factory=dict)


def tone(sr: int, channels: int, seconds: float, freq: float = 440.0, amp: float = 0.5) -> np.ndarray:
    """``[T, C]`` float32 sine (channel c at freq * (1 + c/4)) plus a little seeded noise."""
    t = np.arange(int(round(sr * seconds))) / sr
    rng = np.random.default_rng(int(freq) + sr)
    cols = [amp * np.sin(2 * np.pi * freq * (1 + c / 4) * t) + 0.01 * rng.standard_normal(t.size)
            for c in range(channels)]
    return np.stack(cols, axis=1).astype(np.float32)


def write_audio(path: Path, sr: int, channels: int, seconds: float = 1.0, freq: float = 440.0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = {".mp3": "MP3", ".wav": "WAV", ".flac": "FLAC", ".ogg": "OGG"}[path.suffix.lower()]
    sf.write(str(path), tone(sr, channels, seconds, freq), sr, format=fmt)
    return path


def _write_crlf(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode("ascii"))
    return path


def _num(x: float) -> str:
    return f"{x:g}"  # minimal, as DEAM writes them: 3, 3.1, 4.82


def write_deam_tree(base: Path, layout: str = "kaggle", problems: bool = True, seconds: float = 1.0,
                    audio: dict[int, tuple[int, int]] | None = None) -> Tree:
    """Write a DEAM tree under ``base``. ``layout``: "kaggle" (as unpacked), "flat" (the
    ``DEAM_Annotations``/``DEAM_audio`` levels dropped) or "nested" (kaggle tree one level deeper)."""
    audio = dict(GOOD_AUDIO if audio is None else audio)
    top = base / "deam-copy" if layout == "nested" else base
    if layout == "flat":
        ann_root, audio_dir = top / "annotations", top / "MEMD_audio"
    else:
        ann_root, audio_dir = top / "DEAM_Annotations" / "annotations", top / "DEAM_audio" / "MEMD_audio"
    avg = ann_root / "annotations averaged per song"
    (ann_root / "annotations per each rater").mkdir(parents=True, exist_ok=True)
    (top / "features" / "features").mkdir(parents=True, exist_ok=True)
    _write_crlf(top / "features" / "features" / "2.csv", ["frameTime;F0final_sma_amean", "0.0;1.5"])

    for i, (sid, (sr, ch)) in enumerate(sorted(audio.items())):
        write_audio(audio_dir / f"{sid}.mp3", sr, ch, seconds, freq=220.0 + 40 * i)
    labels = {k: v for k, v in GOOD_LABELS.items() if k in audio}
    rows1 = [f"{sid},{','.join(_num(x) for x in v)}" for sid, v in sorted(labels.items()) if sid <= 2000]
    rows2 = []
    for sid, (vm, vs, am, as_) in sorted(labels.items()):
        if sid > 2000:  # 13 columns; extras are plausible numbers that must be ignored
            rows2.append(",".join(_num(x) for x in (sid, vm, vs, vm + 1, 0.5, vm - 1, 0.4, am, as_, am + 1, 0.6,
                                                    am - 1, 0.3)))
    if problems:
        p = PROBLEM_IDS
        (audio_dir / f"{p['corrupt_audio']}.mp3").write_bytes(np.random.default_rng(0).bytes(3000))
        for key in ("audio_without_label", "nan_label", "out_of_range_label", "duplicate_id", "unreadable_row"):
            write_audio(audio_dir / f"{p[key]}.mp3", 44100, 2, 0.5)
        rows1 += [f"{p['corrupt_audio']},5,1,5,1", f"{p['label_without_audio']},4,1,4,1",
                  f"{p['nan_label']},4.5,1,,1", f"{p['out_of_range_label']},9.5,1,5,1",
                  f"{p['duplicate_id']},3,1,3,1", f"{p['duplicate_id']},3.2,1,3.4,1",
                  f"{p['unreadable_row']},abc,1,5,1"]
        rows1.sort(key=lambda r: int(r.split(",")[0]))
    s1 = _write_crlf(avg / "song_level" / "static_annotations_averaged_songs_1_2000.csv",
                     ["song_id, valence_mean, valence_std, arousal_mean, arousal_std", *rows1])
    s2 = _write_crlf(avg / "song_level" / "static_annotations_averaged_songs_2000_2058.csv",
                     ["song_id, valence_mean, valence_std, valence_ max_mean, valence_max_std, valence_min_mean, "
                      "valence_min_std, arousal_mean, arousal_std, arousal_max_mean, arousal_max_std, "
                      "arousal_min_mean, arousal_min_std", *rows2])

    header = "song_id," + ",".join(f"sample_{15000 + 500 * k}ms" for k in range(DYN_COLS))
    dyn_ids = sorted(set(labels) | ({PROBLEM_IDS["corrupt_audio"]} if problems else set()))
    dyn_len = {sid: DYN_COLS if sid > 2000 else 6 + (sid % 5) for sid in dyn_ids}
    rows = {"valence": [], "arousal": []}
    for sid in dyn_ids:
        for dim, sign in (("valence", 1.0), ("arousal", -1.0)):
            vals = [_num(round(sign * 0.05 * k - 0.1, 4)) for k in range(dyn_len[sid])]
            rows[dim].append(f"{sid}," + ",".join(vals + [""] * (DYN_COLS - dyn_len[sid])))
    dv = _write_crlf(avg / "dynamic (per second annotations)" / "valence.csv", [header, *rows["valence"]])
    da = _write_crlf(avg / "dynamic (per second annotations)" / "arousal.csv", [header, *rows["arousal"]])
    good = sorted(set(labels) | ({PROBLEM_IDS["corrupt_audio"]} if problems else set()))
    return Tree(base, audio_dir, s1, s2, dv, da, good, dyn_len)


def expected_dynamic(sid: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(times_s, valence, arousal) that ``write_deam_tree`` wrote for song ``sid`` with ``n`` values."""
    k = np.arange(n)
    return 15.0 + 0.5 * k, np.round(0.05 * k - 0.1, 4), np.round(-0.05 * k - 0.1, 4)
