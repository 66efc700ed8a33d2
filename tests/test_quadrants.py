"""Russell quadrants: mapping, parsing and classification metrics against hand-computed values."""
from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import f1_score, roc_auc_score

from deam_mamba.core.errors import ConfigError, LabelError
from deam_mamba.core.scales import parse_quadrant, parse_quadrants, quadrant_of
from deam_mamba.core.scales import quadrant_axes as axes_of_quadrant
from deam_mamba.evaluation.quadrants import (
    _auc,
    _confusion,
    _f1_per_class,
    axis_scores,
    format_quadrant_metrics,
    quadrant_metrics,
)

# 10 songs; confusion (rows true Q1..Q4, cols pred): [[2,1,0,0],[0,1,1,0],[0,0,2,0],[1,0,0,2]]
TRUE = [1, 1, 1, 2, 2, 3, 3, 4, 4, 4]
PRED = [1, 1, 2, 2, 3, 3, 3, 4, 1, 4]


def test_quadrant_of_boundaries_count_as_positive_and_high():
    v = [5.0, 4.9, 4.9, 5.0, 9.0, 1.0]
    a = [5.0, 5.0, 4.9, 4.9, 1.0, 9.0]
    assert quadrant_of(v, a, 5.0).tolist() == [1, 2, 3, 4, 4, 2]
    assert quadrant_of([0.0, -0.1], [0.0, 0.3], 0.0).tolist() == [1, 2]
    # separate midpoints per axis: (valence_mid, arousal_mid)
    assert quadrant_of([3.0, 3.0], [7.0, 2.0], (2.0, 5.0)).tolist() == [1, 4]
    assert quadrant_of([3.0], [7.0], (2.0, 5.0)).dtype == np.int64


def test_quadrant_of_rejects_nan_and_mismatched_lengths():
    with pytest.raises(LabelError, match="must be finite"):
        quadrant_of([np.nan, 1.0], [1.0, 1.0], 5.0)
    with pytest.raises(LabelError, match="shape"):
        quadrant_of([1.0, 2.0], [1.0], 5.0)


def test_axes_of_quadrant():
    pos, high = axes_of_quadrant([1, 2, 3, 4])
    assert pos.tolist() == [True, False, False, True]
    assert high.tolist() == [True, True, False, False]
    pos, high = axes_of_quadrant(["Q3"])
    assert pos.tolist() == [False] and high.tolist() == [False]


def test_parse_quadrant_accepts_the_usual_spellings():
    assert [parse_quadrant(x) for x in ("Q3", "q2", " Q4 ", "3", 1, np.int64(4))] == [3, 2, 4, 3, 1, 4]
    assert parse_quadrants(np.array(["Q1", "Q4"])).tolist() == [1, 4]
    assert parse_quadrants(np.array([2, 3], dtype=np.int32)).dtype == np.int64


@pytest.mark.parametrize("bad", ["Q5", "Q", "x", "", 0, 5, True, 3.0, None])
def test_parse_quadrant_rejects_bad_values(bad):
    assert parse_quadrant(bad) is None
    with pytest.raises(LabelError, match="not a quadrant"):
        parse_quadrants(np.array([1, bad], dtype=object))


def test_parse_quadrants_names_the_bad_entry():
    with pytest.raises(LabelError, match="first 7 at index 2"):
        parse_quadrants([1, 2, 7])
    with pytest.raises(LabelError, match="index 1"):
        parse_quadrants(["Q1", "Q9"])
    with pytest.raises(LabelError, match="float"):
        parse_quadrants([1.0, 2.0])


def test_metrics_match_hand_computed_values():
    m = quadrant_metrics(TRUE, PRED, bootstrap=0)
    assert m["n"] == 10
    assert m["confusion"] == [[2, 1, 0, 0], [0, 1, 1, 0], [0, 0, 2, 0], [1, 0, 0, 2]]
    assert m["accuracy"]["value"] == pytest.approx(0.7)
    # F1 = 2TP / (2TP + FP + FN): Q1 4/6, Q2 2/4, Q3 4/5, Q4 4/5
    assert m["per_class_f1"] == pytest.approx({"Q1": 2 / 3, "Q2": 0.5, "Q3": 0.8, "Q4": 0.8})
    assert m["macro_f1"]["value"] == pytest.approx((2 / 3 + 0.5 + 0.8 + 0.8) / 4)  # 0.691667
    assert m["valence_accuracy"]["value"] == pytest.approx(0.9)  # only song 2 (Q1 -> Q2) crosses valence
    assert m["arousal_accuracy"]["value"] == pytest.approx(0.8)  # songs 4 (Q2 -> Q3) and 8 (Q4 -> Q1)
    assert m["support"] == {"Q1": 3, "Q2": 2, "Q3": 2, "Q4": 3}
    assert m["valence_auc"] == {"value": None, "ci_low": None, "ci_high": None}  # no scores given
    assert m["accuracy"]["ci_low"] is None and m["scores_given"] == {"valence": False, "arousal": False}


def test_strings_and_ints_give_the_same_metrics():
    a = quadrant_metrics(TRUE, PRED, bootstrap=0)
    b = quadrant_metrics([f"Q{q}" for q in TRUE], [f"Q{q}" for q in PRED], bootstrap=0)
    assert a == b


def test_auc_perfect_reversed_and_tied_rankings():
    pos, high = axes_of_quadrant(TRUE)
    m = quadrant_metrics(TRUE, PRED, valence_score=pos * 2.0 - 1.0, arousal_score=-(high * 1.0), bootstrap=200)
    assert m["valence_auc"]["value"] == 1.0
    assert m["arousal_auc"]["value"] == 0.0
    assert (m["valence_auc"]["ci_low"], m["valence_auc"]["ci_high"]) == (1.0, 1.0)
    assert (m["arousal_auc"]["ci_low"], m["arousal_auc"]["ci_high"]) == (0.0, 0.0)
    tied = quadrant_metrics(TRUE, PRED, valence_score=np.zeros(10), bootstrap=0)
    assert tied["valence_auc"]["value"] == 0.5


def test_auc_is_none_not_nan_when_one_side_is_absent():
    m = quadrant_metrics([1, 1, 2, 2], [1, 2, 2, 1], valence_score=[0.1, 0.2, 0.3, 0.4],
                         arousal_score=[0.1, 0.2, 0.3, 0.4], bootstrap=100)
    assert m["arousal_auc"] == {"value": None, "ci_low": None, "ci_high": None}  # all true songs are high arousal
    assert m["valence_auc"]["value"] == 0.0  # Q1 songs scored lowest
    json.dumps(m, allow_nan=False)  # strict JSON: no NaN anywhere


def test_bootstrap_skips_resamples_where_auc_is_undefined():
    # 1 positive-valence song in 4: about a third of the resamples have no positive song at all
    m = quadrant_metrics([1, 2, 2, 3], [1, 2, 2, 3], valence_score=[3.0, 0.0, 1.0, 2.0], bootstrap=300, seed=1)
    assert m["valence_auc"]["value"] == 1.0
    assert (m["valence_auc"]["ci_low"], m["valence_auc"]["ci_high"]) == (1.0, 1.0)


def test_bootstrap_intervals_are_seeded_and_bracket_the_value():
    rng = np.random.default_rng(0)
    t = rng.integers(1, 5, 200)
    p = np.where(rng.random(200) < 0.6, t, rng.integers(1, 5, 200))
    pos, high = axes_of_quadrant(t)
    vs, as_ = pos + rng.normal(0, 1, 200), high + rng.normal(0, 1, 200)
    a = quadrant_metrics(t, p, vs, as_, bootstrap=300, seed=3)
    assert a == quadrant_metrics(t, p, vs, as_, bootstrap=300, seed=3)
    b = quadrant_metrics(t, p, vs, as_, bootstrap=300, seed=4)
    assert a["macro_f1"]["ci_low"] != b["macro_f1"]["ci_low"]
    for name in ("accuracy", "macro_f1", "valence_accuracy", "arousal_accuracy", "valence_auc", "arousal_auc"):
        v = a[name]
        assert v["ci_low"] < v["value"] < v["ci_high"], name
        assert v["ci_high"] - v["ci_low"] < 0.25, name
    json.dumps(a, allow_nan=False)


def test_fast_cores_equal_scikit_learn():
    rng = np.random.default_rng(0)
    for _ in range(20):
        n = int(rng.integers(3, 30))
        t = rng.integers(1, 5, n)
        p = rng.integers(1, 4, n)  # Q4 never predicted; sometimes never true either
        f1 = _f1_per_class(_confusion(t, p))
        assert f1 == pytest.approx(f1_score(t, p, labels=[1, 2, 3, 4], average=None, zero_division=0.0))
        y = rng.random(n) < 0.5
        s = np.round(rng.normal(size=n), 1)  # ties
        if 0 < y.sum() < n:
            assert _auc(y, s) == pytest.approx(roc_auc_score(y, s))
        else:
            assert np.isnan(_auc(y, s))


def test_metrics_validate_inputs():
    with pytest.raises(LabelError, match="10 entries but predicted quadrants have 9"):
        quadrant_metrics(TRUE, PRED[:-1])
    with pytest.raises(LabelError, match="zero songs"):
        quadrant_metrics([], [])
    with pytest.raises(LabelError, match="valence_score has 1 NaN"):
        quadrant_metrics(TRUE, PRED, valence_score=[np.nan] + [0.0] * 9)
    with pytest.raises(LabelError, match="arousal_score has 3 entries, expected 10"):
        quadrant_metrics(TRUE, PRED, arousal_score=[0.0, 1.0, 2.0])
    with pytest.raises(LabelError, match="not in 1..4"):
        quadrant_metrics([0, 1], [1, 1])
    with pytest.raises(ConfigError, match="alpha"):
        quadrant_metrics(TRUE, PRED, bootstrap=10, alpha=1.5)


def test_axis_scores_from_class_scores():
    v, a = axis_scores([[1.0, 0, 0, 0], [0, 0, 2.0, 0], [0, 1.0, 0, 0]], classes=[1, 2, 3, 4])
    assert v.tolist() == [1.0, -2.0, -1.0] and a.tolist() == [1.0, -2.0, 1.0]
    v, a = axis_scores([2.0, -1.0], classes=["Q2", "Q4"])  # binary decision: positive favours Q4
    assert v.tolist() == [4.0, -2.0] and a.tolist() == [-4.0, 2.0]
    with pytest.raises(LabelError, match="do not match"):
        axis_scores(np.zeros((2, 3)), classes=[1, 2, 3, 4])


def test_format_lines():
    pos, _ = axes_of_quadrant(TRUE)
    lines = format_quadrant_metrics(quadrant_metrics(TRUE, PRED, valence_score=pos * 1.0, bootstrap=0))
    assert lines[0] == "quadrants: n = 10 songs (no intervals)"
    assert lines[2] == "  macro-F1          0.692"
    assert lines[3] == "  per-class F1      Q1 0.667  Q2 0.500  Q3 0.800  Q4 0.800"
    assert lines[4].endswith("accuracy 0.900   AUC 1.000") and lines[5].endswith("AUC n/a")
    assert lines[-1] == "    Q4       1     0     0     2"
