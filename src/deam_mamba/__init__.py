"""deam-mamba: MambaVision models that listen to music and predict its valence and arousal.

Stage folders, in the order data flows through them; a module imports only from its own stage or
an earlier one (``python scripts/import_graph.py`` checks it, and ``tests/test_layout.py`` runs it):

``core/``         errors, atomic I/O and strict JSON, label scales, seeding, malloc tuning, torchrun
``config/``       the run's dataclasses (``schema``) and their YAML / ``key=value`` I/O (``load``)
``data/``         finding DEAM, its annotations, audio decoding, problems, ``WaveDataset``
``synth/``        the synthetic DEAM-shaped corpus
``features/``     log-mel, the feature cache, chunking, a run's splits over the cache
``models/``       selective scan (ref | fast | cuda), MambaVision, heads, registry, pretrained, build
``runs/``         the run folder: checkpoints and pools, ``load_run``, the run log
``inference/``    the predictor (audio -> song values + 2 Hz curve), files in, CSV/JSON out, the Python API,
                  embeddings (.npz), ONNX export and its ONNX Runtime chunk model
``evaluation/``   metrics, song-level scoring (one path), ``evaluate``, reports, baselines
``train/``        the loop, losses, optimiser / EMA / schedule, attention-pool fit, launch
``experiments/``  several stages at once: ``compare`` models side by side
``cli``           the ``deam-mamba`` command

The Python API (``deam_mamba.load(RUN_DIR)`` -> a model with ``predict`` and ``embed``) lives in
:mod:`deam_mamba.inference.api`; it is imported on first use, so ``import deam_mamba`` stays free of torch.
"""
__version__ = "0.1.0"

_API = ("load", "EmotionModel", "Embedding", "SongPrediction")


def __getattr__(name: str):
    """``deam_mamba.load`` and the API's types, imported on first use (they import torch)."""
    if name in _API:
        from deam_mamba.inference import api

        return getattr(api, name)
    raise AttributeError(f"module 'deam_mamba' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_API))
