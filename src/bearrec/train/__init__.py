"""Training: the objectives on transformers.Trainer (`BearTrainer`), its config, and `train(config) -> run dir`.

The run directory `train` writes (config.json, trie.pt, model/, checkpoints/, log_history.json,
train_summary.json, timing.json) is described, and read back, by `bearrec.run_dir.RunDir`.
The config is imported at once; the trainer and the collator (transformers.Trainer, seconds to import) only when
first used, so that reading a run's config does not pay for them.
"""
import importlib

from .config import ObjectiveConfig, TrainConfig, config_from_dict, load_config

_LAZY = {"TrainCollator": ".batches", "encode_rows": ".batches", "BearTrainer": ".trainer", "check_run_config": ".trainer",
         "objective_loss": ".trainer", "train": ".trainer"}

__all__ = ["BearTrainer", "ObjectiveConfig", "TrainCollator", "TrainConfig", "check_run_config", "config_from_dict",
           "encode_rows", "load_config", "objective_loss", "train"]


def __getattr__(name: str) -> object:
    if name not in _LAZY:
        raise AttributeError(f"module 'bearrec.train' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name], __name__), name)
    globals()[name] = value
    return value
