"""Training: the objectives on transformers.Trainer (`BearTrainer`), its config, and `train(config) -> run dir`.

RUN_DIR (= config.output_dir) after `train`:
  config.json          the resolved config + objective (name), method ("bear-sft", "msl+ce": ObjectiveConfig.method),
                       objective_config, score_mode ("full" for sft and an sft base, "masked" otherwise), seed,
                       model, model_source, dataset, template, domain, max_history
  model/               the selected model + tokenizer (models.save_trained: LoRA merged)
  trie.pt              the item trie (ItemTrie.save) built with that tokenizer and template
  log_history.json     trainer.state.log_history (loss per logging step, eval_loss per evaluation)
  checkpoints/         the Trainer's output_dir (checkpoint-N folders; `resume=True` continues the last)
  train_summary.json   train time, time per epoch, steps, best checkpoint and its selection metric
  base_model/          only for model "tiny": the random small Llama the run started from
"""
from .config import ObjectiveConfig, TrainConfig, config_from_dict, load_config
from .data import TrainCollator, encode_rows
from .trainer import BearTrainer, check_run_config, objective_loss, train

__all__ = ["BearTrainer", "ObjectiveConfig", "TrainCollator", "TrainConfig", "check_run_config", "config_from_dict",
           "encode_rows", "load_config", "objective_loss", "train"]
