"""Cross-validation folds: artist-disjoint, stratified, seeded; random folds leak artists; fold summaries."""
from __future__ import annotations

import numpy as np
import pytest

from deam_mamba.core.errors import ConfigError, LabelError
from deam_mamba.data.folds import artist_disjoint_folds, fold_summary, inner_validation_split, random_stratified_folds

# 40 artists x 3 songs; each artist sings one quadrant (artist a -> Q(a % 4 + 1)): 30 songs per quadrant
GROUPS = np.repeat([f"artist{a:02d}" for a in range(40)], 3)
LABELS = np.repeat([a % 4 + 1 for a in range(40)], 3)


def _test_sets(folds):
    return [te.tolist() for _, te in folds]


def test_artist_disjoint_folds_partition_and_keep_artists_apart():
    folds = artist_disjoint_folds(LABELS, GROUPS, k=5, seed=0)
    assert len(folds) == 5
    all_test = np.concatenate([te for _, te in folds])
    assert sorted(all_test.tolist()) == list(range(120))  # every song tested exactly once
    for tr, te in folds:
        assert not set(GROUPS[tr]) & set(GROUPS[te])
        assert sorted(np.concatenate([tr, te]).tolist()) == list(range(120))
        assert np.all(np.diff(te) > 0) and te.dtype == np.int64
        # stratified: 30 songs per quadrant = 10 artists, 2 artists (6 songs) per quadrant per fold
        assert np.bincount(LABELS[te], minlength=5)[1:].tolist() == [6, 6, 6, 6]


def test_artist_disjoint_folds_are_seeded():
    a = artist_disjoint_folds(LABELS, GROUPS, k=5, seed=0)
    assert _test_sets(a) == _test_sets(artist_disjoint_folds(LABELS, GROUPS, k=5, seed=0))
    assert _test_sets(a) != _test_sets(artist_disjoint_folds(LABELS, GROUPS, k=5, seed=1))


def test_artist_disjoint_folds_errors():
    with pytest.raises(ConfigError, match="at least 2 folds"):
        artist_disjoint_folds(LABELS, GROUPS, k=1)
    with pytest.raises(ConfigError, match="cannot make 41 folds from 40 artists"):
        artist_disjoint_folds(LABELS, GROUPS, k=41)
    with pytest.raises(LabelError, match="one group per song"):
        artist_disjoint_folds(LABELS, GROUPS[:-1])
    with pytest.raises(LabelError, match="NaN"):
        artist_disjoint_folds([1, 2, 3], [1.0, np.nan, 2.0], k=2)


def test_random_stratified_folds_are_stratified_seeded_and_leak_artists():
    folds = random_stratified_folds(LABELS, k=10, seed=0)
    assert len(folds) == 10
    assert sorted(np.concatenate([te for _, te in folds]).tolist()) == list(range(120))
    for _, te in folds:
        assert np.bincount(LABELS[te], minlength=5)[1:].tolist() == [3, 3, 3, 3]
    assert _test_sets(folds) == _test_sets(random_stratified_folds(LABELS, k=10, seed=0))
    assert _test_sets(folds) != _test_sets(random_stratified_folds(LABELS, k=10, seed=1))
    leaks = sum(bool(set(GROUPS[tr]) & set(GROUPS[te])) for tr, te in folds)
    assert leaks == 10  # with 3 songs per artist, every fold shares artists between train and test
    with pytest.raises(ConfigError, match="at least 2 folds"):
        random_stratified_folds(LABELS, k=1)
    with pytest.raises(ConfigError, match="cannot make 31 folds"):
        random_stratified_folds(LABELS, k=31)


def test_inner_validation_split():
    tr, _ = artist_disjoint_folds(LABELS, GROUPS, k=5, seed=0)[0]  # 96 songs, 32 artists
    fit, val = inner_validation_split(LABELS, GROUPS, tr, fraction=0.15, seed=0)
    assert sorted(np.concatenate([fit, val]).tolist()) == tr.tolist()
    assert not set(GROUPS[fit]) & set(GROUPS[val])
    assert len(set(GROUPS[val])) in (4, 5)  # 1/7 of 32 artists
    assert set(LABELS[val]) == {1, 2, 3, 4}  # stratified: every quadrant in validation
    same = inner_validation_split(LABELS, GROUPS, tr, fraction=0.15, seed=0)
    assert same[1].tolist() == val.tolist()
    other = inner_validation_split(LABELS, GROUPS, tr, fraction=0.15, seed=1)
    assert other[1].tolist() != val.tolist()
    with pytest.raises(ConfigError, match="fraction"):
        inner_validation_split(LABELS, GROUPS, tr, fraction=0.7)
    with pytest.raises(ConfigError, match="artists in the training rows"):
        inner_validation_split(LABELS, GROUPS, np.arange(6), fraction=0.15)  # 2 artists, 7 folds
    with pytest.raises(LabelError, match="row indices"):
        inner_validation_split(LABELS, GROUPS, [0, 500])


def test_fold_summary_mean_and_sample_std():
    s = fold_summary([{"a": 1, "b": None, "model": "svm"}, {"a": 3.0, "b": 2.0}, {"a": 5, "flag": True}])
    assert s["a"] == {"mean": 3.0, "std": 2.0, "n": 3}  # values 1, 3, 5: sample variance (4 + 0 + 4) / 2
    assert s["b"] == {"mean": 2.0, "std": None, "n": 1}  # None (undefined AUC) left out; one value: no std
    assert set(s) == {"a", "b"}  # names and flags are not summarised
