"""Self-supervised pretraining (``deam-mamba pretrain``) and fine-tuning from it (``model.init``)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file, save_file

from deam_mamba.cli import main
from deam_mamba.config import Config, ModelConfig, load_config
from deam_mamba.core.errors import CheckpointError, ConfigError
from deam_mamba.models.build import build_model
from deam_mamba.models.finetune import freeze_stages, keep_frozen_eval
from deam_mamba.models.pretrain import MaskedSpecModel, masked_mse, patchify, unpatchify
from deam_mamba.models.registry import create_model
from deam_mamba.runs import checkpoint as ck
from deam_mamba.train.finetune import init_model
from deam_mamba.train.optim import lr_at, make_optimizer, set_lr

REPO = Path(__file__).resolve().parents[1]
TINY = ["features.n_mels=64", "chunks.chunk_seconds=1.0", "chunks.hop_seconds=1.0", "model.name=mambavision_tiny",
        "pretrain.decoder_dim=16", "pretrain.decoder_depth=1", "train.batch_size=4", "train.device=cpu",
        "train.threads=1", "train.progress=false", "train.log_every_steps=1", "train.epochs=50",
        "optim.warmup_steps=1", "data.prepare_workers=0"]


def _write_wavs(folder: Path, n: int = 4, seconds: float = 3.0, sr: int = 16_000) -> Path:
    """``n`` synthetic songs: chords of sines with a beat and noise, seeded."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * sr)) / sr
    for i in range(n):
        f0 = 110.0 * 2 ** (i / 4)
        y = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in (1, 2, 3))
        y = y * (0.6 + 0.4 * (np.sin(2 * np.pi * (1.5 + i) * t) > 0)) + 0.05 * rng.standard_normal(t.size)
        sf.write(folder / f"song{i}.wav", (0.2 * y).astype(np.float32), sr)
    return folder


def _tiny_model(seed: int = 0, fill: str = "token") -> MaskedSpecModel:
    torch.manual_seed(seed)
    bb = create_model("mambavision_tiny", num_classes=0, drop_path_rate=0.0)
    return MaskedSpecModel(bb, (16, 16), decoder_dim=16, decoder_depth=1, mask_fill=fill)


@pytest.fixture(scope="module")
def pretrain_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-step tiny pretraining run made through the CLI (4 WAVs of 3 s)."""
    tmp = tmp_path_factory.mktemp("pretrain")
    audio = _write_wavs(tmp / "audio")
    run = tmp / "run"
    rc = main(["pretrain", "--data", str(audio), "--out", str(run), "--config", str(REPO / "configs/pretrain.yaml"),
               f"data.cache={tmp / 'cache'}", "train.max_steps=2", *TINY])
    assert rc == 0
    return run


def test_patchify_roundtrip() -> None:
    x = torch.randn(2, 1, 64, 100)
    p = patchify(x, 16, 16)
    assert p.shape == (2, 4 * 6, 256)
    assert torch.equal(unpatchify(p, 4, 6, 16, 16), x[..., :64, :96])
    assert torch.equal(p[0, 1], x[0, 0, :16, 16:32].reshape(-1))  # row-major over the (mels, frames) grid


def test_pretrain_run_folder_and_resume(pretrain_run: Path) -> None:
    for name in ("config.yaml", "meta.json", "log.csv", "train_summary.json"):
        assert (pretrain_run / name).is_file(), name
    assert any((pretrain_run / "tb").iterdir())
    last = json.loads((pretrain_run / "checkpoints/last.json").read_text())
    assert last["step"] == 2
    summary = json.loads((pretrain_run / "train_summary.json").read_text())
    assert np.isfinite(summary["last"]["train_loss"]) and summary["last"]["train_loss"] > 0
    meta = json.loads((pretrain_run / "meta.json").read_text())
    assert meta["kind"] == "pretrain" and meta["files"] == 4
    # resume: continues from the saved step (2) up to the new max_steps
    run2 = pretrain_run.parent / "run_resumed"

    shutil.copytree(pretrain_run, run2)
    assert main(["pretrain", "--resume", str(run2), "train.max_steps=4"]) == 0
    assert json.loads((run2 / "checkpoints/last.json").read_text())["step"] == 4
    meta2 = json.loads((run2 / "meta.json").read_text())
    assert meta2["resumed"][0]["from_step"] == 2
    w2 = load_file(str(ck.checkpoint_paths(run2, "last")[0]))
    w1 = load_file(str(ck.checkpoint_paths(pretrain_run, "last")[0]))
    assert set(w1) == set(w2) and any(not torch.equal(w1[k], w2[k]) for k in w1)  # it trained further


def test_pretrain_needs_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["pretrain", "--out", str(tmp_path / "r"), "--config", str(REPO / "configs/pretrain.yaml")]) != 0
    assert "--data" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_loss_only_on_masked_patches() -> None:
    model = _tiny_model().eval()
    x = torch.randn(2, 1, 64, 96)
    g = torch.Generator().manual_seed(1)
    out = model(x, ratio=0.5, generator=g)
    mask = out["mask"]
    assert mask.sum(1).tolist() == [12, 12]  # half of the 4 x 6 patches of each chunk
    # the loss ignores the unmasked patches' targets ...
    target2 = out["target"].clone()
    target2[~mask] += 5.0
    assert torch.equal(masked_mse(out["pred"], target2, mask), model.loss(out))
    # ... and their predictions get no gradient
    pred = out["pred"].detach().requires_grad_(True)
    masked_mse(pred, out["target"], mask).backward()
    assert torch.all(pred.grad[~mask] == 0) and torch.all(pred.grad[mask].abs().sum(-1) > 0)
    # the encoder never sees the masked content: changing it leaves the prediction, not the loss, unchanged
    xp = patchify(x, 16, 16).clone()
    xp[mask] = torch.randn_like(xp[mask])
    x2 = unpatchify(xp, 4, 6, 16, 16)
    out2 = model(x2, mask=mask)
    assert torch.allclose(out2["pred"], out["pred"], atol=1e-6)
    assert not torch.isclose(model.loss(out2), model.loss(out))


def test_overfits_a_fixed_batch() -> None:
    model = _tiny_model(fill="zero")
    x = torch.randn(4, 1, 64, 96) * 0.5 + torch.linspace(-1, 1, 64)[None, None, :, None]
    mask = torch.zeros(4, 24, dtype=torch.bool)
    mask[:, ::2] = True
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(20):
        loss = model.loss(model(x, mask=mask))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert all(np.isfinite(losses))
    assert losses[-1] < 0.6 * losses[0], losses


def _train_cfg(*extra: str) -> Config:
    return load_config(REPO / "configs/test_tiny.yaml", [*extra])


def test_init_loads_backbone_exactly_and_keeps_fresh_head(pretrain_run: Path) -> None:
    cfg = _train_cfg("features.n_mels=64", f"model.init={pretrain_run}")
    torch.manual_seed(0)
    fresh = build_model(cfg)
    torch.manual_seed(0)
    model = build_model(cfg)
    rep = init_model(model, cfg)
    weights, _, _ = ck.checkpoint_paths(pretrain_run, "best")
    saved = load_file(str(weights))
    sd = model.state_dict()
    backbone = {k[len("backbone."):]: v for k, v in saved.items() if k.startswith("backbone.")}
    assert set(rep.loaded) == set(backbone) and rep.loaded
    for k, v in backbone.items():
        assert torch.equal(sd[k], v), k
    assert {"head.weight", "head.bias"} <= set(rep.kept_new)
    for k in ("head.weight", "head.bias"):
        assert torch.equal(sd[k], fresh.state_dict()[k])
    assert any(k.startswith("dec_") or k == "mask_token" for k in rep.unused)


def test_init_checks_architecture_and_matches(pretrain_run: Path, tmp_path: Path) -> None:
    cfg = _train_cfg("model.name=mambavision_audio", f"model.init={pretrain_run}")
    with pytest.raises(ConfigError, match="mambavision_tiny"):
        init_model(build_model(cfg), cfg)
    junk = tmp_path / "junk.safetensors"
    save_file({"something.else": torch.zeros(3)}, str(junk))
    cfg = _train_cfg(f"model.init={junk}")
    with pytest.raises(CheckpointError, match="no tensor"):
        init_model(build_model(cfg), cfg)
    with pytest.raises(ConfigError, match="no such"):
        init_model(build_model(cfg), _train_cfg(f"model.init={tmp_path / 'missing'}"))


def test_frozen_stages_do_not_change() -> None:
    cfg = _train_cfg("model.freeze_stages=2")
    torch.manual_seed(0)
    model = build_model(cfg)
    freeze_stages(model, 2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = make_optimizer(model, cfg)
    model.train()
    keep_frozen_eval(model, 2)
    loss = model(torch.randn(4, 1, 64, 96)).pow(2).mean()
    loss.backward()
    opt.step()
    after = model.state_dict()
    frozen = [k for k in after if k.startswith(("patch_embed.", "levels.0.", "levels.1."))]
    assert frozen and all(torch.equal(after[k], before[k]) for k in frozen)  # running BN statistics included
    assert not torch.equal(after["levels.2.blocks.0.norm1.weight"], before["levels.2.blocks.0.norm1.weight"])
    assert not torch.equal(after["head.weight"], before["head.weight"])


def test_backbone_lr_group_and_warmup_epochs() -> None:
    cfg = _train_cfg("optim.backbone_lr_scale=0.1", "optim.lr=1e-3")
    model = build_model(cfg)
    opt = make_optimizer(model, cfg)
    set_lr(opt, 1e-3)
    head_ids = {id(p) for p in model.head.parameters()}
    for g in opt.param_groups:
        is_head = all(id(p) in head_ids for p in g["params"])
        assert is_head == g["name"].startswith("head")
        assert g["lr"] == pytest.approx(1e-3 if is_head else 1e-4)
    n_params = sum(len(g["params"]) for g in opt.param_groups)
    assert n_params == len(list(model.parameters()))
    o = _train_cfg("optim.warmup_epochs=2", "optim.warmup_steps=1").optim
    assert lr_at(0, o, 100, steps_per_epoch=10) == pytest.approx(o.lr / 20)
    assert lr_at(19, o, 100, steps_per_epoch=10) == pytest.approx(o.lr)
    assert ModelConfig(freeze_stages=4).freeze_stages == 4
    with pytest.raises(ConfigError):
        ModelConfig(freeze_stages=5)


def test_train_from_pretrained_run_end_to_end(pretrain_run: Path, synth_corpus: Path, tmp_path: Path,
                                              caplog: pytest.LogCaptureFixture) -> None:
    """``train ... model.init=RUN model.freeze_stages=1``: the frozen stem and stage 0 of the trained run are
    exactly the pretrained tensors; the run trains (2 steps) with the backbone on its own learning rate."""
    from deam_mamba.train.loop import train

    cfg = _train_cfg(f"data.root={synth_corpus}", f"data.cache={tmp_path / 'cache'}", "data.split=official2015",
                     f"model.init={pretrain_run}", "model.freeze_stages=1", "optim.backbone_lr_scale=0.1",
                     "optim.warmup_epochs=0.5", "train.max_steps=2")
    with caplog.at_level("INFO", logger="deam_mamba.train.finetune"):
        res = train(cfg, tmp_path / "run", argv=["test"])
    assert res.step == 2
    assert any("tensors loaded" in r.getMessage() for r in caplog.records)
    pre = load_file(str(ck.checkpoint_paths(pretrain_run, "best")[0]))
    got = load_file(str(ck.checkpoint_paths(tmp_path / "run", "last")[0]))
    frozen = [k for k in got if k.startswith(("patch_embed.", "levels.0."))]
    assert frozen and all(torch.equal(got[k], pre["backbone." + k]) for k in frozen)
    assert not torch.equal(got["levels.1.blocks.0.conv1.weight"], pre["backbone.levels.1.blocks.0.conv1.weight"])


def test_info_nce_pairs_and_same_song_negatives() -> None:
    from deam_mamba.models.pretrain import info_nce

    e = torch.eye(4)[:3] * 10
    assert float(info_nce(e, e, temperature=0.1)) < 1e-3  # each crop finds its partner
    assert float(info_nce(e, e[[1, 2, 0]], temperature=0.1)) > 5  # partners swapped: high
    a = torch.stack([e[0], e[0], e[1]])  # two crops of song 7 look alike: not negatives of each other
    assert float(info_nce(a, a, torch.tensor([7, 7, 8]), 0.1)) < 1e-3
    assert float(info_nce(a, a, torch.tensor([7, 6, 8]), 0.1)) > 0.4  # as negatives they confuse (~log 2)


def test_band_mean_baseline_is_the_masked_error_of_band_levels() -> None:
    from deam_mamba.models.pretrain import band_mean_baseline

    x = torch.arange(64.0)[None, None, :, None].expand(2, 1, 64, 96).contiguous()  # each band constant
    mask = torch.zeros(2, 24, dtype=torch.bool)
    mask[:, ::2] = True  # every row of patches keeps visible ones (a band with none is predicted by 0)
    assert float(band_mean_baseline(x, mask, 16, 16)) == pytest.approx(0.0, abs=1e-6)
    assert float(band_mean_baseline(torch.randn(2, 1, 64, 96), mask, 16, 16)) > 0.5


@pytest.mark.parametrize("objective", ["contrast", "both"])
def test_contrastive_objectives_run(objective: str, tmp_path: Path) -> None:
    from deam_mamba.train.pretrain import pretrain

    audio = _write_wavs(tmp_path / "audio")
    cfg = load_config(REPO / "configs/pretrain.yaml", [*TINY, f"data.cache={tmp_path / 'cache'}",
                                                        "train.max_steps=2", f"pretrain.objective={objective}"])
    cfg.pretrain.data = [str(audio)]
    res = pretrain(cfg, tmp_path / "run", argv=["test"])
    assert res.step == 2 and np.isfinite(res.history[-1]["train_loss"])
    keys = set(load_file(str(ck.checkpoint_paths(tmp_path / "run", "last")[0])))
    assert any(k.startswith("proj.") for k in keys)
    meta = json.loads((tmp_path / "run/meta.json").read_text())
    assert (meta["baseline_band_mean_mse"] is None) == (objective == "contrast")


def test_audio_folder_ids_are_stable(tmp_path: Path) -> None:
    from deam_mamba.core.errors import DatasetNotFoundError
    from deam_mamba.data.folders import AudioFolders, path_id
    from deam_mamba.inference.files import collect_audio_files

    audio = _write_wavs(tmp_path / "a", n=2, seconds=0.5)
    first = AudioFolders(collect_audio_files([audio])[0])
    (audio / "song1.wav").rename(audio / "zz.wav")  # one file renamed: the other keeps its id
    second = AudioFolders(collect_audio_files([audio])[0])
    assert path_id(audio / "song0.wav") in first.ids and path_id(audio / "song0.wav") in second.ids
    assert len(set(first.ids) & set(second.ids)) == 1
    assert first.label_kind == "none" and first.audio_path(path_id(audio / "song0.wav")) == audio / "song0.wav"
    with pytest.raises(DatasetNotFoundError):
        AudioFolders([])


def test_reused_cache_names_the_files_it_leaves_out(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A file that could not be decoded when the corpus cache was built stays out of later runs on that cache;
    each run says so (count, cache and skipped.csv) instead of dropping it silently."""
    from deam_mamba.data.folders import path_id
    from deam_mamba.train.pretrain import open_corpus

    audio = _write_wavs(tmp_path / "audio", n=2, seconds=1.0)
    (audio / "broken.wav").write_bytes(b"RIFF\0\0\0\0WAVEjunk")
    cfg = load_config(REPO / "configs/pretrain.yaml", [*TINY, f"data.cache={tmp_path / 'cache'}"])
    cfg.pretrain.data = [str(audio)]
    _, cache = open_corpus(cfg, progress=False)
    assert len(cache.ids) == 2 and len(cache.skipped) == 1
    caplog.clear()
    with caplog.at_level("WARNING", logger="deam_mamba.train.pretrain"):
        open_corpus(cfg, progress=False)  # reused, not rebuilt
    assert any("1 of 3 audio files are left out" in r.getMessage() and "skipped.csv" in r.getMessage()
               for r in caplog.records)
    shutil.copy(audio / "song0.wav", audio / "broken.wav")  # repaired: retried without deleting the cache
    _, cache = open_corpus(cfg, progress=False)
    assert len(cache.ids) == 3 and not cache.skipped
    song0 = path_id(audio / "song0.wav")  # ids hash the path, so cache.ids' order varies with tmp_path
    before = cache.features(song0).copy()
    _write_wavs(tmp_path / "other", n=2, seconds=2.0)  # songs edited in place after the cache was built
    for name in ("song0.wav", "song1.wav"):
        shutil.copy(tmp_path / "other" / name, audio / name)
    _, cache = open_corpus(cfg, progress=False)
    assert cache.features(song0).shape[1] > before.shape[1]
