"""Metrics: cross-checked against scikit-learn / numpy, edge cases, bootstrap, losses."""
from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

from deam_mamba.core.errors import ConfigError, LabelError
from deam_mamba.evaluation import metrics as M
from deam_mamba.train.losses import ccc_loss, masked_mse


def _lin_ccc(y: np.ndarray, p: np.ndarray) -> float:
    """Textbook Lin's CCC, written independently of the module (population moments)."""
    sxy = np.mean((y - y.mean()) * (p - p.mean()))
    return 2 * sxy / (y.var() + p.var() + (y.mean() - p.mean()) ** 2)


@pytest.fixture
def yp() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    y = rng.uniform(1, 9, size=(60, 2))
    p = np.clip(y + rng.normal(0, 1.0, size=y.shape) + [0.3, -0.2], 1, 9)
    return y, p


def test_point_metrics_match_sklearn_and_numpy(yp):
    y, p = yp
    np.testing.assert_allclose(M.mse(y, p), mean_squared_error(y, p, multioutput="raw_values"), rtol=1e-12)
    np.testing.assert_allclose(M.rmse(y, p), np.sqrt(mean_squared_error(y, p, multioutput="raw_values")))
    np.testing.assert_allclose(M.mae(y, p), mean_absolute_error(y, p, multioutput="raw_values"), rtol=1e-12)
    np.testing.assert_allclose(M.r2(y, p), r2_score(y, p, multioutput="raw_values"), rtol=1e-12)
    r_np = [np.corrcoef(y[:, d], p[:, d])[0, 1] for d in range(2)]
    np.testing.assert_allclose(M.pearson_r(y, p), r_np, rtol=1e-12)
    np.testing.assert_allclose(M.ccc(y, p), [_lin_ccc(y[:, d], p[:, d]) for d in range(2)], rtol=1e-12)
    # 1-D input gives a plain float
    assert isinstance(M.ccc(y[:, 0], p[:, 0]), float)
    assert M.ccc(y[:, 0], p[:, 0]) == pytest.approx(_lin_ccc(y[:, 0], p[:, 0]))


def test_torch_tensors_accepted(yp):
    y, p = yp
    got = M.ccc(torch.tensor(y, dtype=torch.float32, requires_grad=True), torch.tensor(p))
    np.testing.assert_allclose(got, M.ccc(y, p), rtol=1e-5)


def test_perfect_and_shifted_predictions(yp):
    y, _ = yp
    assert M.ccc(y, y) == pytest.approx([1.0, 1.0])
    assert M.r2(y, y) == pytest.approx([1.0, 1.0])
    # a constant offset keeps r = 1 but lowers CCC below 1
    r, c = M.pearson_r(y, y + 1.0), M.ccc(y, y + 1.0)
    assert r == pytest.approx([1.0, 1.0])
    np.testing.assert_allclose(c, 2 * y.var(0) / (2 * y.var(0) + 1.0))
    assert (c < 0.95).all()


def test_constant_predictions_documented_behaviour():
    y = np.array([1.0, 2.0, 4.0, 8.0])
    p = np.full(4, 0.1)  # 0.1 is not exact in binary: round-off must not fake a variance
    assert np.isnan(M.pearson_r(y, p))
    assert M.ccc(y, p) == 0.0
    assert np.isfinite(M.r2(y, p))
    # constant truth: r2 undefined, ccc still 0 when predictions vary
    assert np.isnan(M.r2(p, y))
    assert M.ccc(p, y) == 0.0
    # both constant and equal: 0/0
    assert np.isnan(M.ccc(p, p))
    # one sample: r undefined
    assert np.isnan(M.pearson_r([1.0], [2.0]))


def test_bad_inputs_raise_label_error():
    with pytest.raises(LabelError, match=r"\(5, 2\).*\(4, 2\)"):
        M.mse(np.zeros((5, 2)), np.zeros((4, 2)))
    y = np.ones((5, 2))
    y[3, 1] = np.nan
    with pytest.raises(LabelError, match=r"y_true has 1 NaN.*\(3, 1\)"):
        M.ccc(y, np.ones((5, 2)))
    with pytest.raises(LabelError, match="y_pred"):
        M.rmse(np.ones(3), [1.0, np.inf, 2.0])
    with pytest.raises(LabelError, match="zero samples"):
        M.mae(np.zeros((0, 2)), np.zeros((0, 2)))


def test_bootstrap_ci_contains_value_and_is_deterministic(yp):
    y, p = yp
    lo, hi = M.bootstrap_ci("ccc", y, p, n=500, seed=1)
    v = M.ccc(y, p)
    assert (lo < v).all() and (v < hi).all()
    lo2, hi2 = M.bootstrap_ci("ccc", y, p, n=500, seed=1)
    np.testing.assert_array_equal(lo, lo2)
    # a callable metric on the same resamples gives the same interval as the vectorised path
    lo3, hi3 = M.bootstrap_ci(lambda a, b: M.ccc(a, b), y, p, n=200, seed=3)
    lo4, hi4 = M.bootstrap_ci("ccc", y, p, n=200, seed=3)
    np.testing.assert_allclose(lo3, lo4, rtol=1e-12)
    np.testing.assert_allclose(hi3, hi4, rtol=1e-12)
    # the interval narrows with more songs
    big_y = np.tile(y, (10, 1))
    big_p = np.tile(p, (10, 1))
    blo, bhi = M.bootstrap_ci("ccc", big_y, big_p, n=500, seed=1)
    assert ((bhi - blo) < (hi - lo)).all()
    with pytest.raises(ConfigError):
        M.bootstrap_ci("nope", y, p)
    with pytest.raises(ConfigError):
        M.bootstrap_ci("ccc", y, p, n=0)


def test_bootstrap_ci_coverage_on_known_mean():
    """Percentile CI of RMSE-like stats covers the population value most of the time."""
    rng = np.random.default_rng(5)
    hits = 0
    for _ in range(40):
        y = rng.normal(size=80)
        p = y + rng.normal(0, 1.0, size=80)  # true MAE = sqrt(2/pi)
        lo, hi = M.bootstrap_ci("mae", y, p, n=300, seed=int(rng.integers(1 << 30)))
        hits += lo <= np.sqrt(2 / np.pi) <= hi
    assert hits >= 32  # nominal 95% -> expect ~38 of 40


def test_regression_metrics_structure_and_speed(yp):
    y, p = yp
    M.regression_metrics(y, p, bootstrap=10)  # warm-up
    t0 = time.perf_counter()
    m = M.regression_metrics(y, p, bootstrap=1000, seed=0)
    elapsed = time.perf_counter() - t0
    assert elapsed < 1.0, f"1000 bootstrap resamples took {elapsed:.2f} s"
    assert m["scale"] == "1-9" and m["n"] == 60 and m["names"] == ["valence", "arousal"]
    for d, name in enumerate(["valence", "arousal"]):
        for k in M.METRIC_NAMES:
            e = m[name][k]
            assert e["ci_low"] <= e["value"] <= e["ci_high"], (name, k, e)
        assert m[name]["r2"]["value"] == pytest.approx(r2_score(y[:, d], p[:, d]))
    assert m["mean_ccc"] == pytest.approx(np.mean(M.ccc(y, p)))
    flat = M.flat_metrics(m, prefix="val_")
    assert flat["val_arousal_ccc"] == m["arousal"]["ccc"]["value"]
    # bootstrap=0 skips intervals; same seed -> same intervals
    assert M.regression_metrics(y, p, bootstrap=0)["valence"]["ccc"]["ci_low"] is None
    assert M.regression_metrics(y, p, bootstrap=100, seed=4) == M.regression_metrics(y, p, bootstrap=100, seed=4)


def test_regression_metrics_guards_scale_and_shape(yp):
    y, p = yp
    with pytest.raises(LabelError, match="normalised"):
        M.regression_metrics((y - 5) / 4, (p - 5) / 4)  # scale says 1-9
    m = M.regression_metrics((y - 5) / 4, (p - 5) / 4, scale="[-1, 1]", bootstrap=0)
    assert m["scale"] == "[-1, 1]"
    with pytest.raises(LabelError, match=r"\[N, 3\]"):
        M.regression_metrics(y, p, names=("a", "b", "c"))


def test_mediaeval2015_metrics():
    rng = np.random.default_rng(2)
    true, pred, rm, rr = {}, {}, [], []
    for sid in range(10, 16):
        t = np.tanh(rng.normal(size=(60, 2)))
        q = np.clip(t + rng.normal(0, 0.2, size=t.shape), -1, 1)
        true[sid], pred[sid] = t, q
        rm.append(np.sqrt(((t - q) ** 2).mean(0)))
        rr.append([np.corrcoef(t[:, d], q[:, d])[0, 1] for d in range(2)])
    true[99], pred[99] = np.zeros((0, 2)), np.zeros((0, 2))  # no annotations
    true[98] = np.tanh(rng.normal(size=(20, 2)))
    pred[98] = np.column_stack([np.full(20, 0.1), true[98][:, 1]])  # constant valence -> r undefined
    m = M.mediaeval2015_metrics(true, pred)
    assert m["n_songs"] == 7 and m["n_empty"] == 1 and m["scale"] == "[-1, 1]"
    assert m["valence"]["pearson_r"]["n_undefined"] == 1
    assert m["valence"]["pearson_r"]["mean"] == pytest.approx(np.mean([r[0] for r in rr]))
    assert m["arousal"]["pearson_r"]["n_defined"] == 7
    rm.append(np.sqrt(((true[98] - pred[98]) ** 2).mean(0)))
    assert m["arousal"]["rmse"]["mean"] == pytest.approx(np.mean([r[1] for r in rm]))
    with pytest.raises(LabelError, match="without predictions"):
        M.mediaeval2015_metrics(true, {k: v for k, v in pred.items() if k != 10})
    with pytest.raises(LabelError, match="song 12"):
        M.mediaeval2015_metrics(true, {**pred, 12: pred[12][:-1]})


def test_ccc_loss_matches_numpy_and_has_gradient(yp):
    y, p = yp
    pt = torch.tensor(p, requires_grad=True)
    loss = ccc_loss(pt, torch.tensor(y))
    assert loss.item() == pytest.approx(1 - np.mean(M.ccc(y, p)), rel=1e-6)
    loss.backward()
    assert torch.isfinite(pt.grad).all() and pt.grad.abs().sum() > 0
    # minimising it by plain gradient descent moves a linear map towards concordance
    w = torch.zeros(2, requires_grad=True)
    b = torch.zeros(2, requires_grad=True)
    x, t = torch.tensor(y), torch.tensor(y) * 0.5 + 1
    for _ in range(100):
        loss = ccc_loss(x * w + b, t)
        gw, gb = torch.autograd.grad(loss, [w, b])
        with torch.no_grad():
            w -= 0.05 * gw
            b -= 0.5 * gb
    assert loss.item() < 0.01
    # single-row batch stays finite
    assert torch.isfinite(ccc_loss(torch.ones(1, 2), torch.zeros(1, 2)))


def test_masked_losses_ignore_nan_padding():
    pred = torch.zeros(2, 4, 2, requires_grad=True)
    target = torch.ones(2, 4, 2)
    mask = torch.tensor([[True, True, False, False], [True, True, True, True]])
    target[~mask] = float("nan")
    loss = masked_mse(pred, target, mask)
    assert loss.item() == pytest.approx(1.0)
    loss.backward()
    assert torch.isfinite(pred.grad).all()
    assert (pred.grad[0, 2:] == 0).all() and (pred.grad[0, :2] != 0).all()
    tgt = torch.randn(2, 4, 2)
    tgt[~mask] = float("nan")
    p2 = torch.randn(2, 4, 2, requires_grad=True)
    lc = ccc_loss(p2, tgt, mask)
    lc.backward()
    assert torch.isfinite(lc) and torch.isfinite(p2.grad).all()
    assert masked_mse(pred, target, torch.zeros(2, 4, dtype=torch.bool)).item() == 0.0
    with pytest.raises(LabelError, match="mask shape"):
        masked_mse(pred, target, torch.ones(3, dtype=torch.bool))
