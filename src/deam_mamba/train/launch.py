"""What ``deam-mamba train`` does: resolve the config and the run folder, then call :func:`train`."""
from __future__ import annotations

import logging
import time
from pathlib import Path

from deam_mamba.config import apply_overrides, config_from_dict, load_config
from deam_mamba.core.errors import ConfigError
from deam_mamba.runs.paths import read_run_config_dict, write_run_config
from deam_mamba.train.loop import TrainResult, train

log = logging.getLogger(__name__)


def start_training(config: str | Path | None, overrides: list[str], resume: str | Path | None = None,
                   out: str | Path = "runs", run_dir: str | Path | None = None,
                   argv: list[str] | None = None) -> TrainResult:
    """What ``deam-mamba train`` does: resolve the config and the run folder, then train.

    * ``resume=RUN_DIR``: the config is the run's own ``config.yaml`` (``overrides`` still apply,
      e.g. ``train.epochs=30`` to extend a run); training continues from its ``last`` checkpoint.
    * otherwise ``config`` (YAML) + ``overrides``; the run goes to ``run_dir`` or to a new folder
      ``out/<config name>-<UTC time>``. An existing run folder is never overwritten.
    """
    if resume is not None:
        rd = Path(resume)
        if not (rd / "config.yaml").is_file():
            raise ConfigError(f"--resume {rd}: no config.yaml there (not a run folder written by `deam-mamba train`)")
        data = read_run_config_dict(rd)  # data paths resolved against the run folder
        cfg = config_from_dict(apply_overrides(data, overrides))
        if overrides:
            log.warning("resuming with overrides %s: results may differ from an uninterrupted run", overrides)
            write_run_config(rd, cfg)
        return train(cfg, rd, resume=True, argv=argv)
    if config is None:
        raise ConfigError("give --config configs/NAME.yaml (or --resume RUN_DIR to continue a run)")
    cfg = load_config(config, overrides)
    if run_dir is None:
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        run_dir = Path(out) / f"{Path(config).stem}-{stamp}"
    return train(cfg, Path(run_dir), resume=False, argv=argv)
