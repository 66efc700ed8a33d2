"""A run's data: the dataset's split restricted to the songs of an up-to-date feature cache.

Training, evaluation and the pool fit all open their data here, so they see the same songs.
"""
from __future__ import annotations

import logging
from pathlib import Path

from deam_mamba.config import Config, DataConfig
from deam_mamba.core.distributed import DistInfo, barrier
from deam_mamba.core.errors import CacheError
from deam_mamba.data.base import MusicDataset
from deam_mamba.data.deam import DEAMHandler
from deam_mamba.data.registry import dataset_split, open_dataset
from deam_mamba.features.cache import FeatureCache
from deam_mamba.features.prepare import audio_drift, build_cache, drift_reason

log = logging.getLogger(__name__)


def open_run_dataset(data: DataConfig) -> MusicDataset | DEAMHandler:
    """The dataset a run's ``data`` config names (``root``, ``kind``, ``scale``)."""
    kw = {"scale": data.scale} if data.kind == "csv" or (data.root and str(data.root).lower().endswith(".csv")) \
        else {}
    return open_dataset(data.root, kind=None if data.kind == "auto" else data.kind, **kw)


def run_splits(data: DataConfig, ds: MusicDataset | DEAMHandler) -> dict[str, list[int]]:
    """The train/val/test song ids of ``ds`` that ``data`` (split, seed, fold...) names."""
    return dataset_split(ds, data.split, seed=data.split_seed, folds=data.folds, fold=data.fold,
                         protocol=data.fold_protocol, val_fraction=data.val_fraction)


def open_data(cfg: Config, info: DistInfo | None = None, build: bool = True
              ) -> tuple[MusicDataset | DEAMHandler, FeatureCache, dict[str, list[int]]]:
    """``(dataset, cache, splits)``: the dataset, an up-to-date feature cache, train/val/test ids.

    The cache is (re)built by rank 0 when missing, built with other feature settings (the cache
    keys its folders by :meth:`FeatureConfig.key`), lacking songs of the dataset (songs that
    could not be decoded at prepare time are not retried) or when audio files changed since it was
    built (:func:`~deam_mamba.features.prepare.audio_drift`; only those are recomputed); other ranks
    wait. Split ids absent from the cache are dropped with a warning.
    """
    info = info or DistInfo()
    handler = open_run_dataset(cfg.data)
    splits = run_splits(cfg.data, handler)
    needed = set(int(i) for ids in splits.values() for i in ids)
    cache_dir = Path(cfg.data.cache)
    if info.is_main and build:
        reason = None
        try:
            cache = FeatureCache(cache_dir, cfg.features)
            skipped = set(int(x["song_id"]) for x in cache.skipped)  # undecodable at prepare time
            missing = needed - set(int(i) for i in cache.ids) - skipped
            changed = drift_reason(audio_drift(cache, handler.audio_path, needed))
            reason = "; ".join(filter(None, [f"{len(missing)} songs missing" if missing else None, changed])) or None
        except CacheError as exc:
            reason = str(exc)
        if reason:
            log.info("preparing feature cache %s (%s)", cache_dir, reason)
            build_cache(handler, cache_dir, cfg.features, workers=cfg.data.prepare_workers,
                        progress=cfg.train.progress)
    barrier(info)
    cache = FeatureCache(cache_dir, cfg.features)
    return handler, cache, _filter_splits(splits, cache)


def _filter_splits(splits: dict[str, list[int]], cache: FeatureCache) -> dict[str, list[int]]:
    have = set(int(i) for i in cache.ids)
    out = {}
    for name, ids in splits.items():
        lost = [int(i) for i in ids if int(i) not in have]
        if lost:
            log.warning("split %s: %d song(s) not in the feature cache, left out: %s", name, len(lost), lost[:10])
        out[name] = [int(i) for i in ids if int(i) in have]
    return out


def split_ids(config: Config, cache: FeatureCache) -> dict[str, list[int]]:
    """The train/val/test song ids a run of ``config`` used (restricted to songs in ``cache``)."""
    return _filter_splits(run_splits(config.data, open_run_dataset(config.data)), cache)
