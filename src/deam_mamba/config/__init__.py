"""Run configuration: the dataclasses (:mod:`~deam_mamba.config.schema`) and their YAML/override I/O
(:mod:`~deam_mamba.config.load`).

``load_config("configs/demo.yaml", ["optim.lr=3e-4", "train.epochs=5"])`` returns a validated
:class:`Config`. Every value has a type (from the dataclass annotations); overrides are parsed as
YAML scalars and checked against it. An unknown key raises :class:`ConfigError` naming the key and
the closest valid keys.
"""
from deam_mamba.config.load import (
                                    apply_overrides,
                                    config_from_dict,
                                    config_to_dict,
                                    dump_config,
                                    load_config,
                                    save_config,
)
from deam_mamba.config.schema import (
                                    FEATURE_VERSION,
                                    MODES,
                                    POOLINGS,
                                    SPLITS,
                                    AttentionConfig,
                                    ChunkConfig,
                                    Config,
                                    DataConfig,
                                    FeatureConfig,
                                    LinearHeadConfig,
                                    LossConfig,
                                    ModelConfig,
                                    OptimConfig,
                                    PretrainConfig,
                                    TrainConfig,
)

__all__ = [
    "FEATURE_VERSION", "MODES", "POOLINGS", "SPLITS", "AttentionConfig", "ChunkConfig", "Config", "DataConfig",
    "FeatureConfig", "LinearHeadConfig",
    "LossConfig", "ModelConfig", "OptimConfig", "PretrainConfig", "TrainConfig", "apply_overrides",
    "config_from_dict", "config_to_dict", "dump_config", "load_config", "save_config",
]
