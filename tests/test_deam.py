"""DEAMHandler: root resolution, layout search, CSV parsing, problems, splits, summary, `info`."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _deam_tree import GOOD_LABELS, PROBLEM_IDS, expected_dynamic, write_deam_tree

from deam_mamba.cli import main as cli_main
from deam_mamba.core.errors import (
    AudioDecodeError,
    ConfigError,
    DatasetLayoutError,
    DatasetNotFoundError,
    OutputExistsError,
    UnknownSongError,
)
from deam_mamba.core.scales import DYNAMIC, STATIC
from deam_mamba.data.audio import load_audio
from deam_mamba.data.deam import ENV_VAR, KAGGLE_HANDLE, DEAMHandler, resolve_root


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return write_deam_tree(tmp_path_factory.mktemp("deam"))


@pytest.fixture(scope="module")
def handler(tree):
    return DEAMHandler(tree.root)


@pytest.fixture(autouse=True)
def _no_env(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)


def write_big_tree(base: Path, ids: list[int]) -> Path:
    """Many songs, cheaply: placeholder audio files (construction never decodes) + valid static CSVs."""
    audio = base / "DEAM_audio" / "MEMD_audio"
    audio.mkdir(parents=True)
    for i in ids:
        (audio / f"{i}.mp3").write_bytes(b"x")
    song = base / "annotations averaged per song" / "song_level"
    song.mkdir(parents=True)
    rows = [f"{i},{1 + (i % 80) / 10:g},1,{1 + (i % 70) / 10:g},1" for i in ids]
    (song / "static_annotations_averaged_songs_1_2000.csv").write_text(
        "\r\n".join(["song_id, valence_mean, valence_std, arousal_mean, arousal_std", *rows]) + "\r\n")
    return base


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    ids = [i for i in range(2, 2059) if i % 7 not in (2, 5)]  # gaps, like DEAM
    return DEAMHandler(write_big_tree(tmp_path_factory.mktemp("big"), ids)), ids


# --- root resolution ---------------------------------------------------------------------------
def test_explicit_root_wins_over_env(tree, monkeypatch, tmp_path):
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "nowhere"))
    assert DEAMHandler(tree.root).root == tree.root.resolve()


def test_env_root(tree, monkeypatch):
    monkeypatch.setenv(ENV_VAR, str(tree.root))
    assert DEAMHandler().ids == tree.good_ids


def test_kagglehub_path_is_used_when_nothing_given(tree, monkeypatch):
    import kagglehub

    calls = []
    monkeypatch.setattr(kagglehub, "dataset_download", lambda handle, *a, **k: calls.append(handle) or str(tree.root))
    assert DEAMHandler().ids == tree.good_ids
    assert calls == [KAGGLE_HANDLE]


def test_kagglehub_failure_says_what_to_do(monkeypatch):
    import kagglehub

    def fail(handle, *a, **k):
        raise ConnectionError("no network")

    monkeypatch.setattr(kagglehub, "dataset_download", fail)
    with pytest.raises(DatasetNotFoundError) as ei:
        DEAMHandler()
    msg = str(ei.value)
    for needle in ("kagglehub", "no network", ENV_VAR, "deam-mamba synth --out DIR", "root="):
        assert needle in msg


@pytest.mark.parametrize("how", ["arg", "env"])
def test_missing_root_is_a_clear_error(how, tmp_path, monkeypatch):
    missing = tmp_path / "does-not-exist"
    if how == "env":
        monkeypatch.setenv(ENV_VAR, str(missing))
    with pytest.raises(DatasetNotFoundError, match="does not exist") as ei:
        DEAMHandler(missing if how == "arg" else None)
    assert str(missing) in str(ei.value) and (how == "arg" or f"${ENV_VAR}" in str(ei.value))


def test_root_that_is_a_file(tmp_path):
    f = tmp_path / "file.txt"
    f.write_text("x")
    with pytest.raises(DatasetNotFoundError, match="not a folder"):
        resolve_root(f)


def test_root_without_deam_inside(tmp_path):
    with pytest.raises(DatasetLayoutError, match="MEMD_audio"):
        DEAMHandler(tmp_path)
    (tmp_path / "MEMD_audio").mkdir()
    (tmp_path / "MEMD_audio" / "2.mp3").write_bytes(b"x")
    with pytest.raises(DatasetLayoutError, match="static annotation"):
        DEAMHandler(tmp_path)


# --- layout and parsing ------------------------------------------------------------------------
@pytest.mark.parametrize("layout", ["flat", "nested"])
def test_layout_variants(layout, tmp_path, tree):
    t = write_deam_tree(tmp_path, layout=layout)
    h = DEAMHandler(t.root)
    assert h.ids == tree.good_ids
    assert h.layout.audio_dir == t.audio_dir.resolve()


def test_tree_has_the_real_quirks(tree):
    raw1, raw2 = tree.static_1.read_bytes(), tree.static_2.read_bytes()
    assert b"\r\n" in raw1 and b"song_id, valence_mean, valence_std" in raw1
    assert b"valence_ max_mean" in raw2 and raw2.split(b"\r\n")[0].count(b",") == 12
    assert b",,\r\n" in tree.dyn_valence.read_bytes()  # ragged NaN tails


def test_static_labels_both_files(handler):
    for sid in (2, 3, 1001, 2001, 2002):  # 2001/2002 come from the 13-column file
        vm, vs, am, as_ = GOOD_LABELS[sid]
        assert handler.static_labels(sid) == pytest.approx(
            {"valence_mean": vm, "valence_std": vs, "arousal_mean": am, "arousal_std": as_})
    lab = handler.static_labels(2)
    lab["valence_mean"] = -1  # a copy: the handler is not mutated
    assert handler.static_labels(2)["valence_mean"] == 3


def test_missing_static_column_is_named(tmp_path):
    t = write_deam_tree(tmp_path, problems=False)
    t.static_1.write_bytes(b"song_id, valence_mean, arousal_mean\r\n2,3,4\r\n")
    with pytest.raises(DatasetLayoutError, match="valence_std"):
        DEAMHandler(t.root)


def test_dynamic_labels(handler, tree):
    assert STATIC.bounds == (1.0, 9.0) and DYNAMIC.bounds == (-1.0, 1.0)
    for sid in (2, 3, 2001):
        times, val, aro = handler.dynamic_labels(sid)
        n = tree.dyn_len[sid]
        assert len(times) == len(val) == len(aro) == n  # NaN tail removed
        et, ev, ea = expected_dynamic(sid, n)
        np.testing.assert_allclose(times, et)
        np.testing.assert_allclose(val, ev, atol=1e-6)
        np.testing.assert_allclose(aro, ea, atol=1e-6)
        assert np.isfinite(val).all() and np.abs(val).max() <= 1 and np.abs(aro).max() <= 1
    assert handler.dynamic_labels(2)[0][0] == 15.0 and np.diff(handler.dynamic_labels(2)[0]).tolist() == [0.5] * 7


def test_dynamic_problems_and_missing_files(tmp_path):
    t = write_deam_tree(tmp_path, problems=False)
    text = t.dyn_arousal.read_bytes().decode().replace("\r\n3,-0.1,", "\r\n3,1.5,")  # off the [-1, 1] scale
    t.dyn_arousal.write_bytes(text.replace("\r\n4,", "\r\nx4,").encode())
    h = DEAMHandler(t.root)
    kinds = {(p.kind, p.song_id) for p in h.problems}
    assert ("dynamic_out_of_range", 3) in kinds and ("dynamic_unreadable_row", None) in kinds
    assert len(h.dynamic_labels(3)[0]) == 0 and len(h.dynamic_labels(4)[0]) == 0
    assert 3 in h.ids  # static labels are fine: the song stays, its dynamic labels are unused
    hdr = t.dyn_valence.read_bytes()
    t.dyn_valence.write_bytes(hdr.replace(b"sample_15000ms,", b"sample_14500ms,", 1))
    with pytest.raises(DatasetLayoutError, match="time columns"):
        DEAMHandler(t.root)
    t.dyn_valence.unlink()
    h = DEAMHandler(t.root)
    assert any(p.kind == "missing_file" and "valence" in p.message for p in h.problems)
    assert len(h.dynamic_labels(2)[0]) == 0


# --- problems ----------------------------------------------------------------------------------
def test_problems_are_listed_and_excluded(handler):
    by_id = {p.song_id: p.kind for p in handler.problems}
    for kind, sid in PROBLEM_IDS.items():
        if kind == "corrupt_audio":
            continue  # detected lazily
        assert by_id.get(sid) == kind, (kind, sid, handler.problems)
        assert sid not in handler.ids
        with pytest.raises(UnknownSongError, match=f"song {sid}"):
            handler.static_labels(sid)
    assert all(p.file for p in handler.problems)


def test_unknown_id_names_it(handler):
    with pytest.raises(UnknownSongError, match="23") as ei:
        handler.load_wave(23)
    assert isinstance(ei.value, KeyError) and "gaps" in str(ei.value)
    assert 23 not in handler and 2 in handler


def test_corrupt_audio_is_lazy_then_checked(tree):
    h = DEAMHandler(tree.root)
    sid = PROBLEM_IDS["corrupt_audio"]
    assert sid in h.ids
    with pytest.raises(AudioDecodeError, match=f"{sid}.mp3"):
        h.load_wave(sid)
    durations = h.check_audio(progress=False)
    assert sid not in h.ids and sid not in durations
    assert [p.song_id for p in h.problems if p.kind == "unreadable_audio"] == [sid]
    assert durations[2] == pytest.approx(1.0, abs=0.01)
    assert h.summary()["durations_s"]["n"] == len(durations)


def test_write_problems(handler, tmp_path):
    handler.write_problems(tmp_path / "p.json")
    rows = json.loads((tmp_path / "p.json").read_text())
    assert len(rows) == len(handler.problems) and set(rows[0]) == {"kind", "song_id", "file", "message"}
    handler.write_problems(tmp_path / "p.csv")
    assert (tmp_path / "p.csv").read_text().count("\n") == len(handler.problems) + 1
    with pytest.raises(OutputExistsError):
        handler.write_problems(tmp_path / "p.csv")
    handler.write_problems(tmp_path / "p.csv", overwrite=True)


def test_summary(handler, tree):
    s = handler.summary()
    assert s["n_songs"] == len(tree.good_ids) and s["id_min"] == 2 and s["id_max"] == 2002
    assert s["static_scale"] == [1.0, 9.0] and s["dynamic_scale"] == [-1.0, 1.0]
    assert s["n_by_year"] == {"2013 (2-1000)": 6, "2014 (1001-2000)": 1, "2015 (2001-2058)": 2}
    assert s["problems_by_kind"] == {k: 1 for k in PROBLEM_IDS if k != "corrupt_audio"}
    assert 1.0 <= s["static_labels"]["valence_mean"]["min"] <= s["static_labels"]["valence_mean"]["max"] <= 9.0
    assert -1.0 <= s["dynamic_labels"]["arousal"]["min"] <= s["dynamic_labels"]["arousal"]["max"] <= 1.0
    json.dumps(s)


# --- splits ------------------------------------------------------------------------------------
def test_official2015_split(big):
    h, ids = big
    s = h.split("official2015", seed=0)
    assert s["test"] == [i for i in ids if i > 2000]
    assert set(s["train"]) | set(s["val"]) == {i for i in ids if i <= 2000}
    assert not set(s["train"]) & set(s["val"])
    assert len(s["val"]) == round(0.1 * len([i for i in ids if i <= 2000]))
    assert h.split("official2015", seed=0) == s and h.split("official2015", seed=1)["val"] != s["val"]


def test_random_split(big):
    h, ids = big
    s = h.split("random", seed=3)
    assert sorted(s["train"] + s["val"] + s["test"]) == ids
    assert len(s["train"]) == round(0.8 * len(ids)) and len(s["val"]) == round(0.1 * len(ids))
    assert h.split("random", seed=3) == s and h.split("random", seed=4) != s
    s2 = h.split("random", seed=3, fractions=(0.5, 0.25, 0.25))
    assert abs(len(s2["test"]) - len(ids) / 4) <= 1
    with pytest.raises(ConfigError):
        h.split("random", fractions=(0.8, 0.3, 0.1))
    with pytest.raises(ConfigError, match="official2015"):
        h.split("nope")


def test_kfold(big):
    h, ids = big
    folds = h.kfold(5, seed=0)
    assert sorted(i for f in folds for i in f["val"]) == ids
    for f in folds:
        assert sorted(f["train"] + f["val"]) == ids
    assert h.kfold(5, seed=0) == folds and h.kfold(5, seed=1) != folds
    with pytest.raises(ConfigError):
        h.kfold(1)


def test_split_is_stable_across_processes(big, tmp_path):
    h, _ = big
    code = ("import json, sys; from deam_mamba.data.deam import DEAMHandler; h = DEAMHandler(sys.argv[1]); "
            "print(json.dumps([h.split('official2015', seed=7), h.split('random', seed=7), h.kfold(3, seed=7)]))")
    out = subprocess.run([sys.executable, "-c", code, str(h.root)], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == [h.split("official2015", seed=7), h.split("random", seed=7), h.kfold(3, seed=7)]


# --- CLI ---------------------------------------------------------------------------------------
def test_cli_info(tree, capsys, tmp_path):
    assert cli_main(["info", str(tree.root), "--check-audio", "--problems-out", str(tmp_path / "p.csv")]) == 0
    out = capsys.readouterr().out
    assert "1-9 scale" in out and "[-1, 1] scale" in out and "durations:" in out
    for kind in (*PROBLEM_IDS, "unreadable_audio"):
        if kind != "corrupt_audio":
            assert f"[{kind}]" in out
    assert (tmp_path / "p.csv").exists()
    assert cli_main(["info", str(tree.root), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["summary"]["n_songs"] == len(tree.good_ids) and len(data["problems"]) == 6


def test_cli_info_missing_root(tmp_path, capsys):
    assert cli_main(["info", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_more_static_and_audio_quirks(tmp_path):
    t = write_deam_tree(tmp_path, problems=False)
    raw = t.static_1.read_bytes().decode()
    raw = raw.replace("\r\n2,3,0.9,3.1,1.2\r\n", "\r\n2,3,0.9,3.1,1.2,\r\n")  # stray trailing comma: fine
    raw = raw.replace("\r\n3,", "\r\n3,4.82,\r\n#3,")  # a short row for song 3 (and a junk row)
    t.static_1.write_bytes(raw.encode())
    (t.audio_dir / "4.wav").write_bytes((t.audio_dir / "4.mp3").read_bytes())  # two audio files for song 4
    h = DEAMHandler(t.root)
    kinds = {(p.kind, p.song_id) for p in h.problems}
    assert 2 in h.ids and h.static_labels(2)["arousal_std"] == 1.2
    assert ("unreadable_row", 3) in kinds and ("unreadable_row", None) in kinds and 3 not in h.ids
    assert ("duplicate_id", 4) in kinds and 4 not in h.ids
    assert ("label_without_audio", 4) not in kinds and ("audio_without_label", 3) not in kinds


def test_audio_check_finds_truncated_and_xingless_mp3(tmp_path):
    t = write_deam_tree(tmp_path, problems=False, seconds=3.0)
    data = (t.audio_dir / "2.mp3").read_bytes()
    (t.audio_dir / "2.mp3").write_bytes(data[: len(data) // 2])  # its Xing header promises 3 s
    data = (t.audio_dir / "24.mp3").read_bytes()
    assert data[:2] == b"\xff\xfb" and b"Xing" in data[:417]  # 1st frame (417 B at 128 kb/s) is the VBR header
    (t.audio_dir / "24.mp3").write_bytes(data[417:])
    h = DEAMHandler(t.root)
    full = h.load_wave(24)
    assert 0 < full.shape[1] < 0.9 * 3 * 16000  # what libsndfile (and librosa) silently do
    assert load_audio(t.audio_dir / "24.mp3").shape == full.shape
    durations = h.check_audio(progress=False)
    msgs = {p.song_id: p.message for p in h.problems if p.kind == "unreadable_audio"}
    assert set(msgs) == {2, 24} and 2 not in h.ids and 24 not in h.ids and 3 in durations
    assert msgs[2].startswith("truncated") and "Xing" in msgs[24]
    h.check_audio(deep=True, progress=False)
    assert len([p for p in h.problems if p.kind == "unreadable_audio"]) == 2
