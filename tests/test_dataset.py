"""WaveDataset / pad_collate, and the README quick-start run exactly as written."""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest
import torch
from _deam_tree import GOOD_AUDIO, GOOD_LABELS, PROBLEM_IDS, write_deam_tree
from torch.utils.data import DataLoader

from deam_mamba.core.errors import AudioDecodeError, ConfigError, UnknownSongError
from deam_mamba.data.audio import load_audio
from deam_mamba.data.dataset import WaveDataset, fit_length, pad_collate
from deam_mamba.data.deam import ENV_VAR, DEAMHandler

REPO = Path(__file__).resolve().parents[1]

# The quick-start of issue 3 / README, verbatim (DataLoader is imported by the reader's own code).
QUICK_START = """
from data_utils import DEAMHandler, WaveDataset
handler = DEAMHandler()
ds = WaveDataset(handler, [23, 24, 25, 26, 27], target_sr=16_000, mono=True)
dl = DataLoader(ds, batch_size=4, shuffle=True)
for wav, y in dl:   # wav: [B, 1, T], y: [B, 2] = (valence, arousal)
    break
"""


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return write_deam_tree(tmp_path_factory.mktemp("deam"))


@pytest.fixture(scope="module")
def handler(tree):
    return DEAMHandler(tree.root)


def test_quick_start_verbatim(tree, monkeypatch):
    """Against a tree that has 24 and 25 but (like DEAM) not 23, 26, 27."""
    monkeypatch.setenv(ENV_VAR, str(tree.root))
    monkeypatch.syspath_prepend(str(REPO))
    ns: dict = {"DataLoader": DataLoader}
    with pytest.warns(UserWarning, match=r"\[23, 26, 27\]"):
        exec(QUICK_START, ns)
    wav, y = ns["wav"], ns["y"]
    assert wav.shape == (2, 1, 45 * 16_000) and wav.dtype == torch.float32
    assert y.shape == (2, 2) and y.dtype == torch.float32
    expected = {(GOOD_LABELS[i][0], GOOD_LABELS[i][2]) for i in (24, 25)}
    assert {tuple(round(v, 4) for v in row) for row in y.tolist()} == expected


def test_readme_quick_start_verbatim(tree, monkeypatch):
    """The quick-start as README.md prints it (the integrator owns README; skip until it is there)."""
    import re

    blocks = re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(), flags=re.DOTALL)
    snippet = next((b for b in blocks if "WaveDataset(handler, [23" in b), None)
    if snippet is None:
        pytest.skip("README.md has no quick-start block yet")
    monkeypatch.setenv(ENV_VAR, str(tree.root))
    monkeypatch.syspath_prepend(str(REPO))
    ns: dict = {"DataLoader": DataLoader}
    with pytest.warns(UserWarning, match=r"\[23, 26, 27\]"):
        exec(snippet, ns)
    assert ns["wav"].shape[:2] == (2, 1) and ns["y"].shape == (2, 2)


def test_items_shapes_and_labels(handler):
    ds = WaveDataset(handler, [2, 3, 2001])
    assert len(ds) == 3 and ds.ids == [2, 3, 2001] and ds.num_samples == 720_000
    wave, y = ds[1]
    assert wave.shape == (1, 720_000) and wave.dtype == torch.float32
    torch.testing.assert_close(y, torch.tensor([GOOD_LABELS[3][0], GOOD_LABELS[3][2]], dtype=torch.float32))
    full = handler.load_wave(3)
    np.testing.assert_array_equal(wave[:, : full.shape[1]].numpy(), full)  # 1 s song, zero-padded to 45 s
    assert not wave[:, full.shape[1]:].any()
    stereo, _ = WaveDataset(handler, [3], mono=False, max_seconds=0.5)[0]
    assert stereo.shape == (GOOD_AUDIO[3][1], 8000)


def test_crop_offsets(handler):
    full = torch.from_numpy(handler.load_wave(2))  # 1 s = 16000 samples
    n = 4000
    start = WaveDataset(handler, [2], max_seconds=0.25, offset="start")[0][0]
    center = WaveDataset(handler, [2], max_seconds=0.25, offset="center")[0][0]
    torch.testing.assert_close(start, full[:, :n])
    torch.testing.assert_close(center, full[:, 6000:6000 + n])
    rnd = WaveDataset(handler, [2], max_seconds=0.25, offset="random")
    torch.manual_seed(0)
    a = rnd[0][0]
    torch.manual_seed(0)
    assert torch.equal(a, rnd[0][0])
    starts = {int(torch.nonzero((full[0].unfold(0, n, 1) == rnd[0][0][0]).all(dim=1))[0]) for _ in range(5)}
    assert len(starts) > 1


def test_fit_length():
    x = np.arange(10, dtype=np.float32)[None]
    assert fit_length(x, 4, "center").tolist() == [[3, 4, 5, 6]]
    assert fit_length(x, 12).tolist() == [list(range(10)) + [0, 0]]


def test_full_length_with_pad_collate(handler):
    ds = WaveDataset(handler, [2, 1001, 25], max_seconds=None)
    lengths = [ds[i][0].shape[-1] for i in range(3)]
    assert lengths == [load_audio(handler.audio_path(i)).shape[1] for i in (2, 1001, 25)]
    dl = DataLoader(ds, batch_size=3, collate_fn=functools.partial(pad_collate, return_lengths=True))
    wav, y, lens = next(iter(dl))
    assert wav.shape == (3, 1, max(lengths)) and lens.tolist() == lengths and y.shape == (3, 2)
    for i, n in enumerate(lengths):
        assert not wav[i, :, n:].any()
    wav2, y2 = pad_collate([ds[0], ds[1]])
    assert wav2.shape == (2, 1, max(lengths[:2]))


def test_dataloader_workers(handler):
    dl = DataLoader(WaveDataset(handler, [2, 3, 4, 24], max_seconds=1.0), batch_size=2, num_workers=2)
    batches = list(dl)
    assert [b[0].shape for b in batches] == [(2, 1, 16000)] * 2


def test_unknown_ids(handler):
    with pytest.raises(UnknownSongError, match="23"):
        WaveDataset(handler, [2, 23], strict=True)
    with pytest.warns(UserWarning, match=r"\[8\]"):  # excluded for a NaN label: also named
        assert WaveDataset(handler, [2, PROBLEM_IDS["nan_label"]]).ids == [2]
    with pytest.raises(UnknownSongError, match="none of the 2"), pytest.warns(UserWarning):
        WaveDataset(handler, [23, 26])


def test_corrupt_song_fails_clearly(handler):
    ds = WaveDataset(handler, [PROBLEM_IDS["corrupt_audio"]])
    with pytest.raises(AudioDecodeError, match=f"{PROBLEM_IDS['corrupt_audio']}.mp3"):
        ds[0]


def test_bad_arguments(handler):
    with pytest.raises(ConfigError):
        WaveDataset(handler, [2], offset="end")
    with pytest.raises(ConfigError):
        WaveDataset(handler, [2], max_seconds=0)


def test_whole_handler_by_default(handler):
    assert WaveDataset(handler).ids == handler.ids
