"""Write tiny 4Q-, PMEmo- and user-CSV-shaped trees into a temp folder for tests/test_readers.py.

Each writer returns what it wrote plus the expectations (good ids, labels, and which id carries which
deliberate problem). Audio: short generated tones (WAV/MP3 via soundfile), or 1-byte placeholders where a
test never decodes (construction only lists files).
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

from _deam_tree import write_audio


def _write_csv(path: Path, rows: list[list[object]], quote_all: bool = False, comments: tuple[str, ...] = ()) -> Path:
    """CRLF CSV, as the datasets ship; ``quote_all``: quote strings like the 4Q metadata file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    for c in comments:
        buf.write(f"# {c}\r\n")
    writer = csv.writer(buf, quoting=csv.QUOTE_NONNUMERIC if quote_all else csv.QUOTE_MINIMAL, lineterminator="\r\n")
    writer.writerows(rows)
    path.write_text(buf.getvalue(), encoding="utf-8")
    return path


def _audio(path: Path, placeholder: bool, index: int) -> None:
    if placeholder:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    else:
        write_audio(path, 22050 if path.suffix == ".mp3" else 8000, 1, 0.5, freq=220.0 + 30 * index)


# --- 4Q ----------------------------------------------------------------------------------------------------------
FOURQ_PROBLEMS = {
    "quadrant_mismatch": 101,     # in Q1/, annotations say Q2
    "audio_without_label": 102,   # in Q3/, no annotation row
    "label_without_audio": 103,   # annotation row, no file
    "bad_quadrant": 104,          # annotation "Q5"
    "no_artist": 105,             # metadata Artist empty: kept, own group
    "no_metadata_row": 106,       # no metadata row: kept, own group
    "metadata_mismatch": 107,     # metadata Quadrant Q4, annotations Q3
    "duplicate_row": 108,         # two annotation rows
}


def fourq_name(sid: int) -> str:
    return f"MT{sid:010d}"


@dataclass
class FourQTree:
    root: Path
    tree: Path
    quadrant: dict[int, int] = field(default_factory=dict)   # good id -> quadrant
    artist: dict[int, str | None] = field(default_factory=dict)
    good_ids: list[int] = field(default_factory=list)


def write_4q_tree(base: Path, n: int = 16, artist_of=None, placeholder: bool = False, problems: bool = True,
                  metadata: bool = True, originals: bool = True) -> FourQTree:
    """Songs 1..n (quadrant (i-1) % 4 + 1, artist ``artist_of(i)``, default groups of 3) as the dataset ships."""
    artist_of = artist_of or (lambda i: f"Artist {(i - 1) // 3}")
    root = base / "4q-copy"
    tree = root / "MER_audio_taffc_dataset"
    out = FourQTree(root, tree)
    songs: list[tuple[int, int, int | None, str | None, str | None]] = []  # id, folder q, csv q, meta q, artist
    for i in range(1, n + 1):
        q = (i - 1) % 4 + 1
        songs.append((i, q, q, f"Q{q}", artist_of(i)))
        out.quadrant[i], out.artist[i] = q, artist_of(i)
    if problems:
        p = FOURQ_PROBLEMS
        songs += [(p["quadrant_mismatch"], 1, 2, "Q2", "Solo X"), (p["audio_without_label"], 3, None, "Q3", "Solo Y"),
                  (p["label_without_audio"], None, 2, "Q2", "Solo Z"), (p["bad_quadrant"], 4, None, "Q5", "Solo W"),
                  (p["no_artist"], 2, 2, "Q2", ""), (p["no_metadata_row"], 1, 1, None, None),
                  (p["metadata_mismatch"], 3, 3, "Q4", "Solo V"), (p["duplicate_row"], 4, 4, "Q4", "Solo U")]
        out.quadrant.update({p["no_artist"]: 2, p["no_metadata_row"]: 1})
        out.artist.update({p["no_artist"]: None, p["no_metadata_row"]: None})
    ann = [["Song", "Quadrant"]]
    meta = [["Song", "Artist", "Title", "Quadrant", "PQuad", "MoodsTotal", "Moods", "MoodsFoundStr", "MoodsStr",
             "MoodsStrSplit", "Genres", "GenresStr", "Sample", "SampleURL"]]
    for k, (sid, fq, cq, mq, artist) in enumerate(songs):
        name = fourq_name(sid)
        if fq is not None:
            ext = ".mp3" if k < 2 and not placeholder else ".wav" if not placeholder else ".mp3"
            _audio(tree / f"Q{fq}" / f"{name}{ext}", placeholder, k)
        if sid == FOURQ_PROBLEMS["bad_quadrant"] and problems:
            ann.append([name, "Q5"])
        elif cq is not None:
            ann.append([name, f"Q{cq}"])
            if sid == FOURQ_PROBLEMS["duplicate_row"] and problems:
                ann.append([name, f"Q{cq}"])
        if mq is not None:
            meta.append([name, artist, f"Title {sid}, live", mq, 0.75, 4, 3, "calm; warm", "Calm; Warm",
                         "Calm; Warm", 2, "Jazz; Pop/Rock", 1, f"http://example.invalid/{sid}.mp3?c=a,b"])
    _write_csv(tree / "panda_dataset_taffc_annotations.csv", ann)
    if metadata:
        _write_csv(tree / "panda_dataset_taffc_metadata.csv", meta, quote_all=True)
    (tree / "readme.txt").write_bytes(b"Panda et al. \x93TAFFC\x94\r\n")  # Windows-1252, as shipped
    if originals:
        _audio(root / "originals" / f"{fourq_name(1)}.mp3", placeholder, 99)
    out.good_ids = sorted(out.quadrant)
    return out


# --- PMEmo -------------------------------------------------------------------------------------------------------
# musicId -> (valence, arousal) on 0-1; 1 sits exactly on the midpoint (-> Q1)
PMEMO_GOOD = {1: (0.5, 0.5), 4: (0.2, 0.8), 5: (0.3, 0.1), 7: (0.9, 0.45), 10: (0.6, 0.7), 16: (0.4, 0.6),
              17: (0.55, 0.35)}
PMEMO_STD = 0.1
PMEMO_PROBLEMS = {"nan_label": 12, "out_of_range_label": 13, "audio_without_label": 14, "label_without_audio": 15,
                  "duplicate_id": 18, "dynamic_nan_label": 16, "dynamic_out_of_range": 17}
PMEMO_ARTIST = {1: "Ann", 4: "Ann", 5: "Bob", 7: "Cy", 10: "Bob", 16: "Dee", 17: "Eve"}
# dynamic rows of song 1: (frameTime, valence, arousal) on 0-1, written out of order
PMEMO_DYN_1 = [(16.0, 0.5, 0.0), (15.5, 0.25, 1.0), (16.5, 0.75, 0.5)]


@dataclass
class PMEmoTree:
    root: Path
    audio_dir: Path
    good_ids: list[int]


def write_pmemo_tree(base: Path, metadata: bool = True, placeholder: bool = True, std: bool = True) -> PMEmoTree:
    """PMEmo2019-shaped tree: chorus/<id>.mp3, annotations/{static,static_std,dynamic}_annotations.csv, metadata.csv."""
    top = base / "PMEmo2019"
    chorus = top / "chorus"
    p = PMEMO_PROBLEMS
    audio_ids = sorted(set(PMEMO_GOOD) | {p["nan_label"], p["out_of_range_label"], p["audio_without_label"],
                                         p["duplicate_id"]})
    for k, sid in enumerate(audio_ids):
        _audio(chorus / f"{sid}.mp3", placeholder, k)
    static = [["musicId", "Arousal(mean)", "Valence(mean)"]]
    static += [[sid, a, v] for sid, (v, a) in sorted(PMEMO_GOOD.items())]
    static += [[p["nan_label"], "", 0.5], [p["out_of_range_label"], 0.5, 1.2], [p["label_without_audio"], 0.4, 0.4],
               [p["duplicate_id"], 0.3, 0.3], [p["duplicate_id"], 0.35, 0.3]]
    _write_csv(top / "annotations" / "static_annotations.csv", static)
    if std:
        ids = sorted(set(PMEMO_GOOD) | {p["nan_label"], p["out_of_range_label"], p["label_without_audio"],
                                        p["duplicate_id"]})
        _write_csv(top / "annotations" / "static_annotations_std.csv",
                   [["musicId", "Arousal(std)", "Valence(std)"]] + [[i, PMEMO_STD, PMEMO_STD] for i in ids])
    dyn = [["musicId", "frameTime", "Arousal(mean)", "Valence(mean)"]]
    dyn += [[1, t, a, v] for t, v, a in PMEMO_DYN_1]
    dyn += [[4, 15.5 + 0.5 * k, 0.8, 0.2] for k in range(4)]
    dyn += [[p["dynamic_nan_label"], 15.5, "", 0.4], [p["dynamic_nan_label"], 16.0, 0.6, 0.4]]
    dyn += [[p["dynamic_out_of_range"], 15.5, 1.5, 0.55]]
    _write_csv(top / "annotations" / "dynamic_annotations.csv", dyn)
    if metadata:
        _write_csv(top / "metadata.csv", [["musicId", "fileName", "title", "artist", "album", "duration"]]
                   + [[i, f"{i}.mp3", f"Song {i}", PMEMO_ARTIST.get(i, ""), "LP", 200.0] for i in audio_ids])
    (top / "features").mkdir(parents=True, exist_ok=True)
    _write_csv(top / "features" / "static_features.csv", [["musicId", "f1"], [1, 0.5]])
    return PMEmoTree(base, chorus, sorted(PMEMO_GOOD))


# --- user CSV ----------------------------------------------------------------------------------------------------
def write_user_files(base: Path, names: list[str]) -> dict[str, Path]:
    """Short WAV tones at ``base/<name>`` for each relative name."""
    return {n: (_audio(base / n, False, k) or base / n) for k, n in enumerate(names)}


def write_user_csv(path: Path, rows: list[list[object]], comments: tuple[str, ...] = ()) -> Path:
    return _write_csv(path, rows, comments=comments)


# --- a 4Q-shaped tree from the synthetic corpus (learnable audio, for training tests) ----------------------------
def write_4q_from_corpus(corpus: Path, base: Path, n_artists: int = 6) -> FourQTree:
    """A 4Q layout whose clips are the synthetic corpus' songs (symlinked), each in the quadrant of its static
    labels (around 5 on 1-9); artist ``A<id % n_artists>``. The audio carries what the labels say."""
    from deam_mamba.data.deam import DEAMHandler

    handler = DEAMHandler(corpus)
    root = base / "4q-synth"
    tree = root / "MER_audio_taffc_dataset"
    out = FourQTree(root, tree)
    ann = [["Song", "Quadrant"]]
    meta = [["Song", "Artist", "Title", "Quadrant", "PQuad", "Genres"]]
    for sid in handler.ids:
        q = handler.quadrant(sid)
        name = fourq_name(sid)
        dst = tree / f"Q{q}" / f"{name}.mp3"
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.symlink_to(handler.audio_path(sid))
        ann.append([name, f"Q{q}"])
        meta.append([name, f"A{sid % n_artists}", f"Song {sid}", f"Q{q}", 1.0, "Synthetic"])
        out.quadrant[sid], out.artist[sid] = q, f"A{sid % n_artists}"
    _write_csv(tree / "panda_dataset_taffc_annotations.csv", ann)
    _write_csv(tree / "panda_dataset_taffc_metadata.csv", meta, quote_all=True)
    out.good_ids = sorted(out.quadrant)
    return out
