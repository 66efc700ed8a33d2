"""Readers beside DEAM (4Q, PMEmo, user CSV), the shared MusicDataset interface, scales and the registry."""
from __future__ import annotations

import csv
import math
from collections import Counter
from itertools import chain

import numpy as np
import pytest
from _deam_tree import write_deam_tree
from _reader_trees import (
    FOURQ_PROBLEMS,
    PMEMO_ARTIST,
    PMEMO_GOOD,
    PMEMO_PROBLEMS,
    PMEMO_STD,
    write_4q_tree,
    write_pmemo_tree,
    write_user_csv,
    write_user_files,
)

from deam_mamba.core.errors import (
    ConfigError,
    DatasetLayoutError,
    DatasetNotFoundError,
    LabelError,
    OutputExistsError,
    UnknownSongError,
)
from deam_mamba.core.scales import (
    SCALE_0_1,
    SCALE_1_9,
    SCALE_PM1,
    LabelKind,
    Scale,
    from_unit,
    parse_quadrant,
    parse_scale,
    quadrant_of,
    spread_to_unit,
    to_unit,
)
from deam_mamba.data.base import MusicDataset, format_summary
from deam_mamba.data.deam import DEAMHandler
from deam_mamba.data.fourq import FourQDataset, song_id
from deam_mamba.data.pmemo import PMEmoDataset
from deam_mamba.data.registry import DATASET_KINDS, detect_kind, open_dataset
from deam_mamba.data.usercsv import CSVDataset


def kinds(ds: MusicDataset) -> dict[str, set]:
    out: dict[str, set] = {}
    for p in ds.problems:
        out.setdefault(p.kind, set()).add(p.song_id)
    return out


# --- scales and quadrants ------------------------------------------------------------------------------------------
def test_scales_convert_explicitly_both_ways():
    assert [to_unit(x, "1-9") for x in (1, 5, 9, 7)] == [-1.0, 0.0, 1.0, 0.5]
    assert to_unit(0.75, SCALE_0_1) == 0.5 and to_unit(-0.3, "[-1, 1]") == pytest.approx(-0.3)
    assert from_unit(0.0, "1-9") == 5.0 and from_unit(-1.0, "0-1") == 0.0
    x = np.array([1.0, 2.5, 9.0])
    np.testing.assert_allclose(from_unit(to_unit(x, "1-9"), "1-9"), x)
    assert spread_to_unit(2.0, "1-9") == 0.5 and spread_to_unit(0.1, "0-1") == pytest.approx(0.2)
    assert SCALE_1_9.midpoint == 5.0 and SCALE_0_1.midpoint == 0.5 and SCALE_PM1.midpoint == 0.0


@pytest.mark.parametrize("spec, lo, hi, name", [
    ("1-9", 1, 9, "1-9"), ("0-1", 0, 1, "0-1"), ("[-1, 1]", -1, 1, "[-1, 1]"), ("-1,1", -1, 1, "[-1, 1]"),
    ("1..7", 1, 7, "1-7"), ("1, 9", 1, 9, "1-9"), ("[-2, 2]", -2, 2, "[-2, 2]"), ((0, 10), 0, 10, "0-10")])
def test_parse_scale(spec, lo, hi, name):
    s = parse_scale(spec)
    assert (s.lo, s.hi, s.name) == (lo, hi, name)


@pytest.mark.parametrize("spec", ["big", "9-1", "1-1", ""])
def test_parse_scale_refuses_nonsense(spec):
    with pytest.raises(ConfigError, match="scale"):
        parse_scale(spec)


def test_quadrant_boundaries_on_the_midpoint_count_as_positive_high():
    assert quadrant_of(5.0, 5.0, "1-9") == 1
    assert quadrant_of(4.999, 5.0, "1-9") == 2
    assert quadrant_of(4.999, 4.999, "1-9") == 3
    assert quadrant_of(5.0, 4.999, "1-9") == 4
    assert quadrant_of(0.5, 0.5, "0-1") == 1 and quadrant_of(0.0, 0.0, "[-1, 1]") == 1
    assert quadrant_of(-0.01, 0.0, "[-1, 1]") == 2
    assert [parse_quadrant(t) for t in ("Q1", "q2", " 3 ", 4, "Q5", "0", "Q", "x1")] == [1, 2, 3, 4, None, None,
                                                                                       None, None]


# --- 4Q ----------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fq_tree(tmp_path_factory):
    return write_4q_tree(tmp_path_factory.mktemp("fourq"))


@pytest.fixture(scope="module")
def fq(fq_tree):
    return FourQDataset(fq_tree.root)


def test_4q_ids_names_quadrants_and_metadata(fq, fq_tree):
    assert song_id("MT0000004637") == 4637 and song_id("nodigits") is None
    assert fq.ids == fq_tree.good_ids == list(range(1, 17)) + [105, 106]
    assert fq.label_kind == LabelKind.QUADRANT == "quadrant" and fq.scale is None and fq.kind == "4q"
    assert [fq.quadrant(i) for i in (1, 2, 3, 4, 5, 105, 106)] == [1, 2, 3, 4, 1, 2, 1]
    assert fq.name(7) == "MT0000000007" and fq.audio_path(7).parent.name == "Q3"
    assert fq.group(7) == "Artist 2" and fq.group(105) is None and fq.group(106) is None
    meta = fq.metadata(7)
    assert meta == {"song": "MT0000000007", "quadrant": "Q3", "artist": "Artist 2", "title": "Title 7, live",
                    "pquad": 0.75, "genres": ["Jazz", "Pop/Rock"], "moods": ["Calm", "Warm"]}
    assert fq.metadata(106)["artist"] is None and fq.metadata(106)["genres"] == []
    assert fq.tree == fq_tree.tree.resolve()


def test_4q_static_labels_refused_and_dynamic_empty(fq):
    with pytest.raises(LabelError, match="quadrant labels only"):
        fq.static_labels(1)
    t, v, a = fq.dynamic_labels(1)
    assert t.shape == v.shape == a.shape == (0,) and v.dtype == np.float32


def test_4q_problems_each_listed_with_its_song(fq):
    p = FOURQ_PROBLEMS
    k = kinds(fq)
    assert k["quadrant_mismatch"] == {p["quadrant_mismatch"], p["metadata_mismatch"]}
    assert k["audio_without_label"] == {p["audio_without_label"]}
    assert k["label_without_audio"] == {p["label_without_audio"]}
    assert k["bad_quadrant"] == {p["bad_quadrant"]}
    assert k["duplicate_id"] == {p["duplicate_row"]}
    assert k["missing_metadata"] == {p["no_artist"], p["no_metadata_row"]}
    assert k["audio_outside_dataset"] == {1}  # originals/MT0000000001.mp3: a note, song 1 stays
    assert 1 in fq and p["quadrant_mismatch"] not in fq and p["no_artist"] in fq
    with pytest.raises(UnknownSongError, match="says Q2 but the file is in Q1/"):
        fq.quadrant(p["quadrant_mismatch"])
    with pytest.raises(UnknownSongError, match="unknown song id 9999"):
        fq.quadrant(9999)
    outside = next(x for x in fq.problems if x.kind == "audio_outside_dataset")
    assert "originals" in outside.file and "Q1/MT0000000001" in outside.message


def test_4q_duplicate_ids_from_different_names_are_a_layout_error(tmp_path):
    t = write_4q_tree(tmp_path, n=4, problems=False, placeholder=True)
    (t.tree / "Q1" / "XY0000000003.mp3").write_bytes(b"x")  # digits 3, like MT0000000003
    with pytest.raises(DatasetLayoutError, match="'MT0000000003' and 'XY0000000003' both give id 3|"
                                                 "'XY0000000003' and 'MT0000000003' both give id 3"):
        FourQDataset(t.root)


def test_4q_without_metadata_splits_stratified_only_and_says_so(tmp_path, caplog):
    t = write_4q_tree(tmp_path, n=40, problems=False, placeholder=True, metadata=False, originals=False)
    ds = FourQDataset(t.root)
    assert len(ds) == 40 and kinds(ds) == {"missing_file": {None}}
    assert all(ds.group(i) is None for i in ds.ids)
    with caplog.at_level("WARNING"):
        sp = ds.split(seed=1)
    assert "stratified by quadrant only" in caplog.text
    assert {k: sorted(Counter(ds.quadrant(i) for i in v).values()) for k, v in sp.items()} == \
        {"train": [8, 8, 8, 8], "val": [1, 1, 1, 1], "test": [1, 1, 1, 1]}


def test_4q_split_is_stratified_artist_disjoint_and_seeded(tmp_path):
    def artist(i: int) -> str:
        return f"A{i % 37}" if i % 5 == 0 else f"S{i}"

    t = write_4q_tree(tmp_path, n=200, artist_of=artist, problems=False, placeholder=True, originals=False)
    ds = FourQDataset(t.root)
    sp = ds.split(seed=3)
    assert sorted(chain(*sp.values())) == ds.ids == list(range(1, 201))
    groups = {k: {ds.group(i) for i in v} for k, v in sp.items()}
    assert not (groups["train"] & groups["val"] or groups["train"] & groups["test"] or groups["val"] & groups["test"])
    for part, want in (("train", 40), ("val", 5), ("test", 5)):
        per_q = Counter(ds.quadrant(i) for i in sp[part])
        assert all(abs(per_q[q] - want) <= 2 for q in (1, 2, 3, 4)), (part, per_q)
    assert ds.split(seed=3) == sp and ds.split(seed=4) != sp
    folds = ds.kfold(5, seed=0)
    assert sorted(i for f in folds for i in f["val"]) == ds.ids
    for f in folds:
        assert not {ds.group(i) for i in f["val"]} & {ds.group(i) for i in f["train"]}
        assert all(abs(c - 10) <= 2 for c in Counter(ds.quadrant(i) for i in f["val"]).values())
    assert ds.kfold(5, seed=0) == folds


def test_4q_load_wave_check_audio_and_problem_file(tmp_path):
    t = write_4q_tree(tmp_path, n=4, problems=False, originals=False)
    ds = FourQDataset(t.root)
    wave = ds.load_wave(1, target_sr=8000)  # MT0000000001.mp3: 0.5 s at 22.05 kHz
    assert wave.shape[0] == 1 and abs(wave.shape[1] - 4000) < 200
    (t.tree / "Q4" / "MT0000000004.wav").write_bytes(b"RIFF" + bytes(40))  # damage song 4
    assert sorted(ds.check_audio(progress=False)) == [1, 2, 3]
    assert ds.ids == [1, 2, 3] and kinds(ds)["unreadable_audio"] == {4}
    out = ds.write_problems(tmp_path / "p.csv")
    rows = list(csv.DictReader(out.open()))
    assert [(r["kind"], r["song_id"]) for r in rows] == [("unreadable_audio", "4")]
    with pytest.raises(OutputExistsError):
        ds.write_problems(tmp_path / "p.csv")


def test_4q_summary(fq):
    s = fq.summary()
    assert (s["kind"], s["n_songs"], s["label_kind"], s["scale"]) == ("4q", 18, "quadrant", None)
    assert s["n_by_quadrant"] == {"Q1": 5, "Q2": 5, "Q3": 4, "Q4": 4}
    assert s["n_artists"] == 6 and s["n_without_artist"] == 2 and s["n_audio_outside_dataset"] == 1
    assert s["problems_by_kind"]["quadrant_mismatch"] == 2
    text = format_summary(s, fq.problems)
    assert "Q1: 5, Q2: 5, Q3: 4, Q4: 4" in text and "[bad_quadrant]" in text


# --- PMEmo -------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pm(tmp_path_factory):
    return PMEmoDataset(write_pmemo_tree(tmp_path_factory.mktemp("pmemo")).root)


def test_pmemo_ids_and_static_labels_on_0_1(pm):
    assert pm.ids == sorted(PMEMO_GOOD) == [1, 4, 5, 7, 10, 16, 17]
    assert pm.scale is SCALE_0_1 and pm.label_kind == "static" and pm.kind == "pmemo"
    assert pm.static_labels(4) == {"valence_mean": 0.2, "valence_std": PMEMO_STD, "arousal_mean": 0.8,
                                   "arousal_std": PMEMO_STD}
    assert [pm.quadrant(i) for i in pm.ids] == [1, 2, 3, 4, 1, 2, 4]  # song 1 sits on (0.5, 0.5) -> Q1
    assert pm.name(10) == "10" and pm.group(10) == "Bob" == PMEMO_ARTIST[10]
    assert pm.audio_path(7).parent.name == "chorus"


def test_pmemo_dynamic_labels_are_converted_to_unit_scale(pm):
    t, v, a = pm.dynamic_labels(1)  # rows written out of order: (16.0, .5, 0), (15.5, .25, 1), (16.5, .75, .5)
    np.testing.assert_allclose(t, [15.5, 16.0, 16.5])
    np.testing.assert_allclose(v, [-0.5, 0.0, 0.5])
    np.testing.assert_allclose(a, [1.0, -1.0, 0.0])
    assert v.dtype == a.dtype == np.float32 and pm.dynamic_scale is SCALE_PM1
    assert len(pm.dynamic_labels(4)[0]) == 4 and len(pm.dynamic_labels(5)[0]) == 0


def test_pmemo_problems(pm):
    p = PMEMO_PROBLEMS
    k = kinds(pm)
    for kind in ("nan_label", "out_of_range_label", "audio_without_label", "label_without_audio", "duplicate_id",
                 "dynamic_nan_label", "dynamic_out_of_range"):
        assert k[kind] == {p[kind]}, kind
    assert p["dynamic_nan_label"] in pm and len(pm.dynamic_labels(p["dynamic_nan_label"])[0]) == 0
    assert p["nan_label"] not in pm and p["out_of_range_label"] not in pm
    s = pm.summary()
    assert s["n_songs"] == 7 and s["scale"] == "0-1" and s["static_labels"]["valence_mean"]["max"] == 0.9
    assert list(s["static_labels"]) == ["valence_mean", "valence_std", "arousal_mean", "arousal_std"]
    assert s["n_dynamic_labels"] == 2 and s["dynamic_labels"]["valence"]["min"] == -0.6


def test_pmemo_without_std_or_metadata(tmp_path):
    ds = PMEmoDataset(write_pmemo_tree(tmp_path, metadata=False, std=False).root)
    assert ds.static_labels(5) == {"valence_mean": 0.3, "arousal_mean": 0.1}
    assert ds.group(5) is None and "missing_metadata" not in kinds(ds)


def test_pmemo_split_with_artists_is_artist_disjoint(pm):
    sp = pm.split(seed=0, fractions=(0.6, 0.2, 0.2))
    assert sorted(chain(*sp.values())) == pm.ids
    g = {k: {pm.group(i) for i in v} for k, v in sp.items()}
    assert not (g["train"] & g["val"] or g["train"] & g["test"] or g["val"] & g["test"])


def test_static_split_without_groups_is_deams_random_permutation(tmp_path):
    ds = PMEmoDataset(write_pmemo_tree(tmp_path, metadata=False).root)
    ids = np.asarray(ds.ids)
    perm = ids[np.random.default_rng(5).permutation(len(ids))]  # DEAMHandler.split("random") rule
    n_tr, n_va = int(round(0.6 * len(ids))), int(round(0.2 * len(ids)))
    assert ds.split("random", seed=5, fractions=(0.6, 0.2, 0.2)) == {
        "train": sorted(perm[:n_tr].tolist()), "val": sorted(perm[n_tr:n_tr + n_va].tolist()),
        "test": sorted(perm[n_tr + n_va:].tolist())}
    with pytest.raises(ConfigError, match="unknown split 'official2015'"):
        ds.split("official2015")
    with pytest.raises(ConfigError, match="fractions"):
        ds.split(fractions=(0.5, 0.5, 0.5))


# --- user CSV ----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def user_dir(tmp_path_factory):
    base = tmp_path_factory.mktemp("user")
    write_user_files(base, ["a.wav", "sub/b.wav", "c.wav", "d, e.wav"])
    return base


def test_user_csv_static_with_comment_scale(user_dir):
    path = write_user_csv(user_dir / "labels.csv", [
        ["file", "valence", "arousal", "artist"],
        ["a.wav", 6.5, 3.0, "Ann"], ["sub/b.wav", 2.0, 8.0, "Bob"], ["missing.wav", 5, 5, "Cy"],
        ["c.wav", "", 4.0, "Dee"], ["d, e.wav", 9.5, 1.0, "Eve"], [str(user_dir / "c.wav"), 5.0, 5.0, ""],
    ], comments=("scale: 1-9",))
    ds = CSVDataset(path)
    assert ds.scale is SCALE_1_9 and ds.scale_from == "comment" and ds.kind == "csv" and ds.root == path.resolve()
    assert ds.ids == [1, 2]
    assert ds.static_labels(1) == {"valence_mean": 6.5, "arousal_mean": 3.0}
    assert [ds.quadrant(1), ds.quadrant(2)] == [4, 2]
    assert ds.name(2) == "sub/b.wav" and ds.name(5) == "d, e.wav" and ds.group(2) == "Bob"
    k = kinds(ds)
    assert k["label_without_audio"] == {3} and k["nan_label"] == {4} and k["out_of_range_label"] == {5}
    assert k["duplicate_id"] == {4, 6} and k["missing_metadata"] == {6}  # c.wav listed twice (relative + absolute)
    assert ds.load_wave(2, target_sr=8000).shape == (1, 4000)


def test_user_csv_scale_argument_and_custom_scale(user_dir):
    path = write_user_csv(user_dir / "unit.csv", [["file", "valence", "arousal"], ["a.wav", -0.5, 1.0],
                                                  ["c.wav", 0.2, -1.2]])
    ds = CSVDataset(path, scale="[-1, 1]")
    assert ds.ids == [1] and ds.scale is SCALE_PM1 and ds.scale_from == "argument"
    assert kinds(ds) == {"out_of_range_label": {2}}
    seven = CSVDataset(write_user_csv(user_dir / "seven.csv", [["file", "valence", "arousal"], ["a.wav", 7, 1]]),
                       scale="1,7")
    assert seven.scale == Scale("1-7", 1.0, 7.0) and seven.quadrant(1) == 4  # midpoint 4


def test_user_csv_refuses_unnamed_or_conflicting_scale(user_dir):
    plain = write_user_csv(user_dir / "plain.csv", [["file", "valence", "arousal"], ["a.wav", 0.5, 0.5]])
    with pytest.raises(DatasetLayoutError, match=r"no scale: add a first line '# scale: 1-9' or pass scale="):
        CSVDataset(plain)
    marked = write_user_csv(user_dir / "marked.csv", [["file", "valence", "arousal"], ["a.wav", 5, 5]],
                            comments=("scale: 1-9",))
    with pytest.raises(ConfigError, match="make them agree"):
        CSVDataset(marked, scale="0-1")
    assert CSVDataset(marked, scale="1..9").scale is SCALE_1_9  # the same scale, spelled differently
    with pytest.raises(ConfigError, match="not understood"):
        CSVDataset(plain, scale="huge")


def test_user_csv_quadrants_and_column_errors(user_dir):
    path = write_user_csv(user_dir / "quads.csv", [["file", "quadrant", "artist"], ["a.wav", "Q1", "Ann"],
                                                   ["sub/b.wav", "3", "Ann"], ["c.wav", "q5", "Bob"]])
    ds = CSVDataset(path)
    assert ds.label_kind == "quadrant" and ds.scale is None and ds.ids == [1, 2]
    assert [ds.quadrant(1), ds.quadrant(2)] == [1, 3] and kinds(ds) == {"bad_quadrant": {3}}
    with pytest.raises(LabelError):
        ds.static_labels(1)
    with pytest.raises(ConfigError, match="does not apply"):
        CSVDataset(path, scale="1-9")
    both = write_user_csv(user_dir / "both.csv", [["file", "valence", "arousal", "quadrant"], ["a.wav", 1, 1, "Q3"]])
    with pytest.raises(DatasetLayoutError, match="both valence/arousal and quadrant"):
        CSVDataset(both, scale="1-9")
    nofile = write_user_csv(user_dir / "nofile.csv", [["path", "quadrant"], ["a.wav", "Q1"]])
    with pytest.raises(DatasetLayoutError, match="no 'file' column"):
        CSVDataset(nofile)


def test_user_csv_split_artist_disjoint(tmp_path):
    names = [f"s{i}.wav" for i in range(24)]
    for n in names:
        (tmp_path / n).write_bytes(b"x")
    rows = [["file", "quadrant", "artist"]] + [[n, f"Q{i % 4 + 1}", f"art{i // 2}"] for i, n in enumerate(names)]
    ds = CSVDataset(write_user_csv(tmp_path / "q.csv", rows))
    sp = ds.split(seed=0, fractions=(0.5, 0.25, 0.25))
    g = {k: {ds.group(i) for i in v} for k, v in sp.items()}
    assert sorted(chain(*sp.values())) == list(range(1, 25))
    assert not (g["train"] & g["val"] or g["train"] & g["test"] or g["val"] & g["test"])
    assert [len(v) for v in sp.values()] == [12, 6, 6]


# --- registry ----------------------------------------------------------------------------------------------------
def test_registry_detects_each_kind(tmp_path, fq_tree, user_dir):
    deam = write_deam_tree(tmp_path / "deam", problems=False, audio={2: (22050, 1)})
    pm_root = write_pmemo_tree(tmp_path / "pm").root
    csv_path = write_user_csv(user_dir / "reg.csv", [["file", "quadrant"], ["a.wav", "Q2"]])
    assert [detect_kind(r) for r in (deam.root, fq_tree.root, pm_root, csv_path)] == ["deam", "4q", "pmemo", "csv"]
    assert isinstance(open_dataset(deam.root), DEAMHandler)
    assert isinstance(open_dataset(fq_tree.root), FourQDataset)
    assert isinstance(open_dataset(pm_root), PMEmoDataset)
    assert open_dataset(csv_path).quadrant(1) == 2
    assert isinstance(open_dataset(fq_tree.root, kind="TAFFC"), FourQDataset)
    assert open_dataset(user_dir / "unit.csv", kind="csv", scale="[-1, 1]").ids == [1]
    assert DATASET_KINDS == ("deam", "4q", "pmemo", "csv")


def test_registry_errors(tmp_path, fq_tree):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetLayoutError, match=r"no dataset recognised .*deam needs .*4q needs .*pmemo needs "
                                                 r".*csv needs"):
        open_dataset(tmp_path / "empty")
    with pytest.raises(DatasetNotFoundError):
        open_dataset(tmp_path / "nowhere")
    with pytest.raises(ConfigError, match="unknown dataset kind 'gtzan'"):
        open_dataset(fq_tree.root, kind="gtzan")
    with pytest.raises(ConfigError, match="needs a root"):
        open_dataset(None, kind="pmemo")
    both = tmp_path / "both"
    write_4q_tree(both, n=4, problems=False, placeholder=True)
    write_pmemo_tree(both)
    with pytest.raises(DatasetLayoutError, match="several datasets"):
        open_dataset(both)
    assert isinstance(open_dataset(both, kind="pmemo"), PMEmoDataset)
    (tmp_path / "empty" / "panda_dataset_taffc_annotations.csv").write_text("Song,Quadrant\nMT1,Q1\n")
    with pytest.raises(DatasetLayoutError, match="no Q1..Q4 audio folders"):
        FourQDataset(tmp_path / "empty")


def test_interface_mirrors_deam_handler():
    """The names DEAMHandler already has keep its signatures in MusicDataset (so it can subclass it)."""
    import inspect

    for meth in ("static_labels", "dynamic_labels", "audio_path", "load_wave", "kfold", "summary", "check_audio",
                 "write_problems", "__len__", "__contains__"):
        assert list(inspect.signature(getattr(MusicDataset, meth)).parameters) == \
            list(inspect.signature(getattr(DEAMHandler, meth)).parameters), meth
    base_split = inspect.signature(MusicDataset.split).parameters
    assert list(base_split) == ["self", "name", "seed", "fractions"]
    assert set(base_split) <= set(inspect.signature(DEAMHandler.split).parameters)
    assert math.isclose(SCALE_1_9.midpoint, 5.0)
