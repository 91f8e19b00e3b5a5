"""Training: the objectives on transformers.Trainer (`BearTrainer`), its config, and `train(config) -> run dir`.

The run directory `train` writes (config.json, trie.pt, model/, checkpoints/, log_history.json,
train_summary.json, timing.json) is described, and read back, by `bearrec.run_dir.RunDir`.
"""
from .config import ObjectiveConfig, TrainConfig, config_from_dict, load_config
from .data import TrainCollator, encode_rows
from .trainer import BearTrainer, check_run_config, objective_loss, train

__all__ = ["BearTrainer", "ObjectiveConfig", "TrainCollator", "TrainConfig", "check_run_config", "config_from_dict",
           "encode_rows", "load_config", "objective_loss", "train"]
