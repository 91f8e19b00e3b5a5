"""Reading an experiment: its YAML parsed and checked (bearrec.experiment.config), then every run's settings built once
(without running anything), so that a wrong key or value is reported with its place in the file before the first
stage, not hours into the experiment."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..baselines import resolve_settings
from ..errors import ConfigError
from ..train.config import read_settings
from .config import ExperimentConfig, cell_name, parse_experiment
from .work import Experiment


def experiment_from_dict(raw: dict[str, Any], source: str = "<dict>") -> ExperimentConfig:
    """The ExperimentConfig of a plain dict (as read from YAML), every key and every run's settings checked."""
    config = parse_experiment(raw, source)
    check_settings(config)
    return config


def check_settings(config: ExperimentConfig) -> None:
    """Build every run's settings once (without running anything), so that a wrong key or value is reported with
    its place in the file before the first stage, not hours into the experiment."""
    experiment = Experiment(config, "/nonexistent")
    for method in config.methods:
        for cell in method.cells():
            where = f"{config.source}: methods.{method.name}" + (f" (grid cell {cell_name(cell)})" if cell else "")
            try:
                if method.is_baseline:
                    if method.method == "popularity" and (method.settings or cell):
                        raise ConfigError("popularity takes no settings.")
                    resolve_settings(method.method, experiment.baseline_settings(config.datasets[0], method, cell))
                else:
                    for ds in config.datasets:
                        experiment.train_config(ds, method, cell, config.seeds[0])
            except ConfigError as e:
                raise ConfigError(f"{where}: {e}" + ("" if "Fix:" in str(e) else " Fix: correct that setting.")) from None


def load_experiment(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> ExperimentConfig:
    """Read an experiment YAML file and apply `key=value` overrides (dotted, as `bearrec train` takes them)."""
    return experiment_from_dict(read_settings(path, overrides, examples="configs/experiments/"), str(path))
