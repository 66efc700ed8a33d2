"""Model registry, MambaVision backbone (official names/math), timm baselines, load_pretrained."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch
from _official_mambavision import load_official
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from deam_mamba.core.errors import CheckpointError, ConfigError
from deam_mamba.models.blocks import attention_block_ids, window_partition, window_reverse
from deam_mamba.models.pretrained import guess_variant, load_pretrained
from deam_mamba.models.registry import create_model, list_models

DATA = Path(__file__).parent / "data"


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These tensors are tiny: one thread is faster, and immune to a machine shared with other jobs."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
OFFICIAL = ["mambavision_T", "mambavision_T2", "mambavision_S", "mambavision_B", "mambavision_L", "mambavision_L2"]
# Parameter counts of the official factories mamba_vision_T() ... mamba_vision_L2() (RGB, 1000 classes), counted
# on the official class (NVlabs/MambaVision@7860a50); the paper rounds them to 31.8, 35.1, 50.1, 97.7, 227.9, 241.5 M.
OFFICIAL_PARAMS = {"mambavision_T": 31_794_248, "mambavision_T2": 35_104_008, "mambavision_S": 50_140_584,
                   "mambavision_B": 97_685_288, "mambavision_L": 227_961_048, "mambavision_L2": 241_554_824}


def _small(name: str) -> dict:
    """Overrides that shrink a registry entry for tests (official depth/heads/window layout kept)."""
    if name in OFFICIAL:
        return dict(dim=8, in_dim=4, mlp_ratio=1, drop_path_rate=0.0)
    if name.startswith("mambavision"):
        return dict(drop_path_rate=0.0, **({"dim": 8, "in_dim": 4} if name == "mambavision_audio" else {}))
    return {}


def test_registry_lists_everything():
    names = set(list_models())
    assert set(OFFICIAL) | {"mambavision_audio", "mambavision_tiny", "resnet18", "efficientnet_b0",
                            "vit_audio"} <= names
    with pytest.raises(ConfigError, match="unknown model"):
        create_model("mambavision_XXL")
    with pytest.raises(ConfigError, match="unexpected MambaVision arguments"):
        create_model("mambavision_tiny", depth=3)
    with pytest.raises(ConfigError, match="unknown scan backend"):
        create_model("mambavision_tiny", scan_backend="triton")


@pytest.mark.parametrize("name", list_models())
def test_shapes_grads_no_nan(name):
    torch.manual_seed(0)
    model = create_model(name, **_small(name))
    x = torch.randn(2, 1, 40, 56)  # not a multiple of any window (after the stem)
    model.train()
    f = model.forward_features(x)
    assert f.ndim == 2 and f.shape[0] == 2 and f.shape[1] == model.num_features
    out = model.forward_head(f)
    assert out.shape == (2, 2) and torch.isfinite(out).all()
    (out - torch.tensor([[1.0, -2.0]])).square().sum().backward()
    no_grad = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or
                                                                            not torch.isfinite(p.grad).all())]
    assert not no_grad, f"parameters without a finite gradient: {no_grad[:5]}"
    if name.startswith("mambavision"):  # (timm ResNets zero-init the last BN of each block: zero grads there)
        assert [n for n, p in model.named_parameters() if p.grad.abs().sum() == 0] == []
    model.eval()
    with torch.no_grad():
        for shape in [(1, 1, 32, 32), (2, 1, 37, 61)]:  # square and odd non-square
            y = model(torch.randn(*shape))
            assert y.shape == (shape[0], 2) and torch.isfinite(y).all()
        torch.testing.assert_close(model(x), model.forward_head(model.forward_features(x)))


@pytest.mark.parametrize("name", ["mambavision_tiny", "resnet18", "vit_audio"])
def test_safetensors_round_trip(name, tmp_path):
    torch.manual_seed(1)
    model = create_model(name, **_small(name)).eval()
    path = tmp_path / "w.safetensors"
    save_file(model.state_dict(), str(path))
    torch.manual_seed(2)
    other = create_model(name, **_small(name)).eval()
    other.load_state_dict(load_file(str(path)), strict=True)
    x = torch.randn(2, 1, 32, 48)
    with torch.no_grad():
        torch.testing.assert_close(other(x), model(x), rtol=0, atol=0)


def test_audio_variant_size_and_input():
    model = create_model("mambavision_audio").eval()
    n = sum(p.numel() for p in model.parameters())
    assert 1e6 < n < 10e6, n
    with torch.no_grad():
        assert model(torch.randn(1, 1, 128, 500)).shape == (1, 2)


@pytest.mark.parametrize("name", OFFICIAL)
def test_official_parameter_counts(name):
    with torch.device("meta"):
        model = create_model(name, in_chans=3, num_classes=1000)
    n = sum(p.numel() for p in model.parameters())
    assert n == OFFICIAL_PARAMS[name]


def test_mambavision_T_names_and_shapes_match_official_fixture():
    fixture = json.loads((DATA / "mambavision_T_params.json").read_text())
    with torch.device("meta"):
        model = create_model("mambavision_T", in_chans=3, num_classes=1000)
    params = {n for n, _ in model.named_parameters()}
    ours = [[k, list(v.shape), "param" if k in params else "buffer"] for k, v in model.state_dict().items()]
    assert ours == fixture["entries"]
    assert sum(p.numel() for p in model.parameters()) == fixture["num_parameters"]


def test_stage_layout():
    model = create_model("mambavision_T")
    assert [lv.conv for lv in model.levels] == [True, True, False, False]
    assert [lv.downsample is not None for lv in model.levels] == [True, True, True, False]
    assert attention_block_ids(8) == [4, 5, 6, 7] and attention_block_ids(5) == [3, 4]
    kinds = [type(b.mixer).__name__ for b in model.levels[2].blocks]
    assert kinds == ["MambaVisionMixer"] * 4 + ["Attention"] * 4
    assert "scan_backend=auto->fast" in repr(model)
    model.set_scan_backend("ref")
    assert "scan_backend=ref->ref" in repr(model) and model.config["scan_backend"] == "ref"


@pytest.mark.slow
def test_mambavision_T_imagenet_path():
    """The official 224 x 224 RGB path: T end to end, no padding needed in the windowed stages."""
    torch.manual_seed(0)
    model = create_model("mambavision_T", in_chans=3, num_classes=1000).eval()
    with torch.no_grad():
        y = model(torch.randn(1, 3, 224, 224))
    assert y.shape == (1, 1000) and torch.isfinite(y).all()


def test_window_partition_reverse_invert():
    x = torch.randn(2, 5, 12, 8)
    w = window_partition(x, 4)
    assert w.shape == (2 * 3 * 2, 16, 5)
    torch.testing.assert_close(w[1].T.reshape(5, 4, 4), x[0, :, 0:4, 4:8])  # token order: row-major window
    torch.testing.assert_close(window_reverse(w, 4, 12, 8), x)


def test_fast_and_ref_scan_give_same_model_output():
    torch.manual_seed(0)
    model = create_model("mambavision_tiny").eval()
    x = torch.randn(2, 1, 40, 56)
    with torch.no_grad():
        fast = model(x)
        model.set_scan_backend("ref")
        ref = model(x)
    torch.testing.assert_close(fast, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("tag", ["ls_none", "ls_1e-5"])
def test_equals_official_reference_outputs(tag):
    """Our MambaVision, given the official model's weights, reproduces the official outputs stored in
    ``tests/data/official_tiny.safetensors`` (made once from the official source by
    ``scripts/make_official_fixture.py``), so this runs on every machine."""
    with safe_open(str(DATA / "official_tiny.safetensors"), framework="pt") as fh:
        meta = fh.metadata()
    ref = load_file(str(DATA / "official_tiny.safetensors"))
    cfg = json.loads(meta["config"])
    ls = json.loads(meta["layer_scales"])[tag]
    ours = create_model("mambavision_tiny", **cfg, layer_scale=ls, layer_scale_conv=ls).eval()
    prefix = f"{tag}/state/"
    state = {k[len(prefix):]: v.float() if v.is_floating_point() else v for k, v in ref.items() if k.startswith(prefix)}
    ours.load_state_dict(state, strict=True)
    for i in range(2):
        x = ref[f"input{i}"]
        with torch.no_grad():
            torch.testing.assert_close(ours.forward_features(x), ref[f"{tag}/features{i}"], rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(ours(x), ref[f"{tag}/logits{i}"], rtol=1e-4, atol=1e-5)
    assert ref[f"{tag}/logits0"].abs().max() > 0.1  # the reference is not a trivial all-zero output


@pytest.mark.parametrize("layer_scale", [None, 1e-5])
def test_equals_official_model_given_same_weights(layer_scale):
    """Our MambaVision vs the official source (executed with a CPU scan stand-in) on a small config."""
    official = load_official()
    if official is None:
        pytest.skip("official MambaVision source not available (set MAMBAVISION_OFFICIAL_SRC)")
    cfg = dict(dim=8, in_dim=4, depths=[1, 2, 3, 4], num_heads=[1, 2, 2, 4], window_size=[4, 4, 4, 3],
               mlp_ratio=2, drop_path_rate=0.0, in_chans=3, num_classes=5, layer_scale=layer_scale,
               layer_scale_conv=layer_scale)
    torch.manual_seed(0)
    theirs = official.MambaVision(**cfg).eval()
    ours = create_model("mambavision_tiny", **cfg).eval()
    sd = theirs.state_dict()
    with torch.no_grad():  # non-trivial values everywhere, BN statistics included
        for k, v in sd.items():
            if v.is_floating_point():
                v.copy_(torch.rand_like(v) + 0.5 if "running_var" in k else torch.randn_like(v) * 0.2)
    theirs.load_state_dict(sd)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    for shape in [(2, 3, 64, 64), (2, 3, 50, 90)]:  # windows tile the maps / need padding
        x = torch.randn(*shape)
        with torch.no_grad():
            torch.testing.assert_close(ours.forward_features(x), theirs.forward_features(x), rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(ours(x), theirs(x), rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------ load_pretrained
def _rgb_tiny_checkpoint(path: Path, wrap: bool = True) -> torch.nn.Module:
    torch.manual_seed(5)
    rgb = create_model("mambavision_tiny", in_chans=3, num_classes=1000).eval()
    sd = {f"module.{k}": v for k, v in rgb.state_dict().items()}
    torch.save({"state_dict": sd, "epoch": 3} if wrap else sd, path)
    return rgb


def test_load_pretrained_sums_rgb_stem_and_reinits_head(tmp_path):
    path = tmp_path / "tiny.pth.tar"
    rgb = _rgb_tiny_checkpoint(path)
    model = load_pretrained(path, in_chans=1, num_classes=2, model_name="mambavision_tiny").eval()
    stem = rgb.state_dict()["patch_embed.conv_down.0.weight"]
    torch.testing.assert_close(model.patch_embed.conv_down[0].weight, stem.sum(1, keepdim=True))
    assert model.head.weight.shape == (2, model.num_features)
    assert model.head.bias.abs().sum() == 0  # fresh head (zero bias, as the model's init)
    x = torch.randn(2, 1, 40, 48)
    with torch.no_grad():  # a grey image through the RGB model == the mono image through the summed stem
        torch.testing.assert_close(model.forward_features(x), rgb.forward_features(x.expand(-1, 3, -1, -1)),
                                   rtol=1e-4, atol=1e-5)


def test_load_pretrained_safetensors_and_rgb(tmp_path):
    rgb = _rgb_tiny_checkpoint(tmp_path / "unused.pth")
    path = tmp_path / "tiny.safetensors"
    save_file(rgb.state_dict(), str(path))
    model = load_pretrained(path, in_chans=3, num_classes=4, model_name="mambavision_tiny")
    torch.testing.assert_close(model.levels[2].blocks[0].mixer.A_log, rgb.levels[2].blocks[0].mixer.A_log)
    assert model.head.out_features == 4


def test_load_pretrained_errors(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_pretrained(tmp_path / "nope.pth", model_name="mambavision_tiny")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"this is not a checkpoint" * 10)
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_pretrained(junk, model_name="mambavision_tiny")
    pickled = tmp_path / "with_args.pth"  # e.g. a training script's argparse.Namespace next to the weights
    torch.save({"state_dict": {"x": torch.zeros(1)}, "args": argparse.Namespace(lr=1)}, pickled)
    with pytest.raises(CheckpointError, match="re-save only its tensors"):
        load_pretrained(pickled, model_name="mambavision_tiny")
    other = tmp_path / "other.pth"
    torch.save({"model": {"fc.weight": torch.zeros(2, 2)}}, other)
    with pytest.raises(CheckpointError, match="missing: levels.* unexpected: fc.weight"):
        load_pretrained(other, model_name="mambavision_tiny")
    with pytest.raises(CheckpointError, match="none of the official"):
        load_pretrained(other)
    tiny = tmp_path / "tiny.pth"
    _rgb_tiny_checkpoint(tiny)
    with pytest.raises(CheckpointError, match="does not fit mambavision_audio"):
        load_pretrained(tiny, model_name="mambavision_audio")


def test_guess_variant_on_official_shapes():
    with torch.device("meta"):
        sd = create_model("mambavision_T2", in_chans=3, num_classes=1000).state_dict()
    assert guess_variant(sd) == "mambavision_T2"
