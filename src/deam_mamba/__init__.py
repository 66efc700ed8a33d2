"""deam-mamba: MambaVision models that predict music emotion (valence, arousal) on DEAM.

Flow: ``data/`` (find DEAM, decode audio, synthesize a corpus) -> ``features`` (log-mel)
-> ``cache`` (featurise once) -> ``models/`` (MambaVision, baselines) -> ``engine``
(train/evaluate) -> ``metrics`` / ``report`` -> ``cli``.
"""
__version__ = "0.1.0"
