"""BearTrainer (transformers.Trainer with the SFT / MSL / BEAR / direct objectives) and `train(config)`.

Everything but the loss -- logging, checkpoints, resume, gradient accumulation, mixed precision,
accelerate / DeepSpeed / FSDP, report_to -- is the stock Trainer, driven by `config.training`.

Reduction: every objective is a sum over label tokens (prompt tokens carry no label) divided by the
number of label tokens, as HF does for SFT. In training that count is the Trainer's
`num_items_in_batch` (all gradient-accumulation micro-batches of all ranks), so one optimizer step
equals one step on the whole global batch. MSL/BEAR tokens whose prefix has a single valid child
have loss 0 (p = 1; BEAR adds the constant lam*log(1/2), no gradient) and still count; with
`objective.single_child_ce` the full-vocabulary CE is added to them. The weighted
BEAR form is normalised as in the reference: sum_t w_t CE_t / sum_t w_t over the micro-batch's
tokens with more than one child; micro-batches are then combined in proportion to their label tokens.
"""
from __future__ import annotations

import json
import logging
import math
import os
import re
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import torch
from transformers import Trainer, TrainerCallback, TrainingArguments

from .. import losses, models
from ..data.dataset import load_dataset
from ..data.preprocess import sample_rows
from ..decoding import beam_thresholds
from ..errors import BearrecError, ConfigError, DataError
from ..files import read_json_file, verify_digest, write_json
from ..machine import environment, use_determinism
from ..models import logits_to_keep, save_trained
from ..run_dir import RunDir
from ..semantic_ids import INDEX_FILE
from ..methods import LabelTokens, get_objective
from ..methods.spec import Negatives
from ..prompts import get_template, item_texts
from ..trained_run import TrainedRun
from ..trie import ItemTrie
from .checkpoints import CHECKPOINT, last_complete_checkpoint
from .config import ObjectiveConfig, TrainConfig
from .batches import IGNORE, TrainCollator, encode_rows
from .negatives import batch_generator, score_negatives
from .ranking import RankingEvaluator

ThresholdFn = Callable[..., torch.Tensor]


def objective_loss(logits: torch.Tensor, labels: torch.Tensor, nodes: torch.Tensor | None, trie: ItemTrie | None,
                   objective: ObjectiveConfig, log_thresholds: torch.Tensor | None = None,
                   negatives: Negatives | None = None) -> tuple[torch.Tensor, int]:
    """(summed loss, number of label tokens) of a batch: logits (B, L, V), labels/nodes (B, L) unshifted; the loss is
    the registered objective's (bearrec.methods)."""
    logits, labels = logits[:, :-1], labels[:, 1:]  # position i predicts token i + 1
    is_label = labels != IGNORE
    h, y = logits[is_label], labels[is_label]
    count = int(y.numel())
    declared = get_objective(objective.name)
    tokens = LabelTokens(logits=h, targets=y, is_label=is_label, log_thresholds=log_thresholds, negatives=negatives)
    if not declared.reads_trie:
        return declared.loss(tokens, objective), count
    if nodes is None or trie is None:
        raise ConfigError(f"the {objective.name} objective needs trie nodes in the batch (use TrainCollator).")
    children, valid = trie.padded_children(nodes[:, 1:][is_label])
    tokens.child_logits, tokens.child_target = losses.gather_children(h, y, children, valid)
    tokens.child_valid = valid
    # single_child_ce: tokens with one valid child have p = 1 under the masked softmax and no gradient; add their
    # full-vocabulary CE, so that a model trained from scratch keeps learning to read its prompt
    one = valid.sum(1) == 1
    single = (losses.sft_loss(h[one], y[one]).sum() if objective.single_child_ce and objective.score_mode == "masked"
              else h.new_zeros(()))
    return declared.loss(tokens, objective) + single, count


class BearTrainer(Trainer):
    """transformers.Trainer whose loss is the configured objective (sft, msl, bear, direct) over the item trie."""

    def __init__(self, *args: Any, objective: ObjectiveConfig, trie: ItemTrie | None = None,
                 thresholds_fn: ThresholdFn | None = None, ranking: RankingEvaluator | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.ranking = ranking
        if get_objective(objective.name).reads_trie and trie is None:
            raise ConfigError(f"the {objective.name} objective needs the item trie.")
        self.objective = objective
        self.trie = trie.to(self.args.device) if trie is not None else None
        self.thresholds_fn = thresholds_fn

    def evaluate(self, eval_dataset: Any = None, ignore_keys: list[str] | None = None,
                 metric_key_prefix: str = "eval") -> dict[str, float]:
        """The validation loss plus, with a RankingEvaluator, the validation ranking metrics (eval_ndcg@10, ...)."""
        metrics = super().evaluate(eval_dataset, ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix)
        if self.ranking is not None and eval_dataset is None:
            model = self.accelerator.unwrap_model(self.model)
            ranking = self.ranking(model, rank=self.args.process_index, world=self.args.world_size)
            extra = {f"{metric_key_prefix}_{k}": v for k, v in ranking.items()}
            self.log(extra)
            metrics.update(extra)
        return metrics

    def compute_loss(self, model: torch.nn.Module, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: torch.Tensor | int | None = None) -> Any:
        """The objective's loss; the extra batch keys (trie nodes, prompts) are popped before the forward."""
        inputs = dict(inputs)
        labels = inputs.pop("labels")
        nodes = inputs.pop("trie_nodes", None)
        prompt_ids, prompt_mask = inputs.pop("prompt_ids", None), inputs.pop("prompt_mask", None)
        thresholds = None
        if get_objective(self.objective.name).needs_beam_thresholds:
            steps = int((labels[:, 1:] != IGNORE).sum(1).max())
            thresholds = self.beam_thresholds(model, prompt_ids, prompt_mask, steps)
        # Batches are left-padded, so every label sits in the last `longest response + 1` columns: only those go
        # through the output layer (a 128k-entry vocabulary times every prompt position is gigabytes otherwise).
        keep = int((labels != IGNORE).sum(1).max()) + 1
        scored = get_objective(self.objective.name).needs_negatives  # apao-pairwise: on this forward's KV cache
        outputs = model(**inputs, **logits_to_keep(model, keep), **({"use_cache": True} if scored else {}))
        negatives = None
        if scored:
            negatives = score_negatives(
                self.accelerator.unwrap_model(model), outputs, inputs["attention_mask"], labels, nodes, self.trie,
                self.objective.settings().num_negatives,
                batch_generator(self.args.seed, self.args.process_index, self.state.global_step, inputs["input_ids"]))
        width = outputs.logits.shape[1]
        total, count = objective_loss(outputs.logits, labels[:, -width:],
                                      nodes[:, -width:] if nodes is not None else None, self.trie, self.objective,
                                      thresholds, negatives)
        if num_items_in_batch is not None and model.training:
            # normalised over the whole accumulated (and, with average_tokens_across_devices, global) batch;
            # DDP averages gradients over ranks, so undo that average as Trainer.compute_loss does
            loss = total / num_items_in_batch
            if self.args.average_tokens_across_devices and self.args.world_size > 1:
                loss = loss * self.args.world_size
            self.loss_is_scaled_for_ga = True
        else:
            loss = total / max(count, 1)
            self.loss_is_scaled_for_ga = False
        if not torch.isfinite(loss.detach()).all():
            raise BearrecError(
                f"the {self.objective.name} loss is {loss.item()} at step {self.state.global_step + 1}. Fix: lower "
                "training.learning_rate, use bf16 instead of fp16, or raise objective.tau; then --resume from the "
                "last checkpoint (saved before the fault).")
        return (loss, outputs) if return_outputs else loss

    @torch.no_grad()
    def beam_thresholds(self, model: torch.nn.Module, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor,
                        steps: int) -> torch.Tensor:
        """Per step, the cumulative log-prob of the B-th best prefix the beam search keeps (no gradient)."""
        if prompt_ids is None:
            raise ConfigError("the direct objective needs prompt_ids in the batch (TrainCollator(with_prompts=True)).")
        fn = self.thresholds_fn
        if fn is None:
            fn = beam_thresholds  # the shared constrained beam search
        was_training = model.training
        model.eval()  # the search runs without dropout, like decoding at test time
        try:
            net = self.accelerator.unwrap_model(model)
            return fn(net, prompt_ids, prompt_mask, self.trie, self.objective.num_beams, score_mode=self.objective.score_mode,
                      max_steps=steps).float()
        finally:
            model.train(was_training)


class TiedWeightsNote(logging.Filter):
    """Drops the Trainer's "missing keys" warning when it loads the best checkpoint of a model whose missing keys are
    tied weights (an output layer sharing the input embeddings is saved once and restored by the tie): the warning
    is harmless there, and it was printed by every training of the tied tiny model."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        first: dict[int, str] = {}
        self.tied: set[str] = set()
        for name, param in model.named_parameters(remove_duplicate=False):
            if param.data_ptr() in first:
                self.tied |= {name, first[param.data_ptr()]}
            first.setdefault(param.data_ptr(), name)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "missing keys" not in message:
            return True
        keys = re.findall(r"'([^']+)'", message)
        return not keys or not all(any(k.endswith(t) or t.endswith(k) for t in self.tied) for k in keys)


class EpochTimer(TrainerCallback):
    """Wall-clock seconds of each finished epoch, kept in RUN_DIR/timing.json so that a resumed run's summary
    still covers the epochs of the sessions before it."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self.seconds: dict[int, float] = {}
        self._start = 0.0

    def load(self, completed_epochs: int) -> None:
        """Keep the recorded times of the epochs a resumed checkpoint completed (the later ones are redone)."""
        if self.path is not None and self.path.is_file():
            stored = json.loads(self.path.read_text(encoding="utf-8")).get("epoch_seconds", {})
            self.seconds = {int(k): float(v) for k, v in stored.items() if int(k) < completed_epochs}

    def on_epoch_begin(self, args: TrainingArguments, state: Any, control: Any, **kwargs: Any) -> None:
        self._start = time.perf_counter()

    def on_epoch_end(self, args: TrainingArguments, state: Any, control: Any, **kwargs: Any) -> None:
        self.seconds[math.ceil(state.epoch - 1e-9) - 1 if state.epoch else 0] = time.perf_counter() - self._start
        if self.path is not None and state.is_world_process_zero:
            write_json(self.path, {"epoch_seconds": {str(k): v for k, v in sorted(self.seconds.items())}})

    def epoch_seconds(self) -> list[float]:
        return [v for _, v in sorted(self.seconds.items())]


def whole_run_loss(log_history: list[dict[str, Any]]) -> float | None:
    """The mean training loss over every logged step of the run (each logged mean weighted by its steps), so
    that a resumed run reports the whole run, not the steps of its last session."""
    total, steps, last = 0.0, 0, 0
    for entry in log_history:
        if "loss" in entry and "step" in entry:
            n = int(entry["step"]) - last
            total, steps, last = total + float(entry["loss"]) * n, steps + n, int(entry["step"])
    return total / steps if steps else None


def _model_and_tokenizer(config: TrainConfig, dataset: Any, texts: Any, run_dir: Path,
                         args: TrainingArguments) -> tuple[Any, Any, str]:
    """Load (or for 'tiny', build once into RUN_DIR/base_model) the model to train and its tokenizer, which holds
    the item texts' added tokens (semantic IDs' codes) whole."""
    from transformers import set_seed

    source = config.model
    if config.model == "tiny":
        source = str(run_dir / "base_model")
        with args.main_process_first(local=False, desc="building the tiny model"):
            if not (Path(source) / "config.json").exists():
                models.build_tiny_model(models.tiny_model_texts(dataset, texts), source, **asdict(config.tiny),
                                        seed=config.seed, added_tokens=texts.added_tokens)
    tokenizer = models.load_tokenizer(source)
    new_tokens = models.add_tokens(tokenizer, texts.added_tokens)
    set_seed(config.seed)  # LoRA adapters and the embeddings of new tokens are initialised at load time
    model = models.load_model(source, dtype=config.dtype, lora=config.lora, load_in_8bit=config.load_in_8bit,
                              load_in_4bit=config.load_in_4bit, gradient_checkpointing=config.gradient_checkpointing,
                              new_tokens=new_tokens)
    return model, tokenizer, source


def subsample(rows: list, n: int | None) -> list:
    """At most n rows drawn at random over the whole split (seed 0, the same for every run), in their order.

    Taking the first n would keep the oldest rows of a chronological split, the furthest from test.
    """
    from collections import Counter

    return rows if n is None or n >= len(rows) else sample_rows(rows, n, seed=0, dropped=Counter())


def run_record(config: TrainConfig, model_source: str) -> dict[str, Any]:
    """RUN_DIR/config.json: the resolved config plus the facts other stages read (objective, method, score mode).
    `train` adds where the dataset is and its fingerprint (RunDir.record_dataset) and trie.pt's checksum."""
    record = config.to_json()
    record.update(objective=config.objective.name, method=config.name or config.objective.method,
                  objective_config=asdict(config.objective),
                  score_mode=config.objective.score_mode, num_beams=config.objective.num_beams,
                  model_source=model_source, training=config.training_arguments())
    return record


def changed_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
    """"key: old → new" for every dotted key whose value differs between two JSON records (the first 8)."""
    if isinstance(old, dict) and isinstance(new, dict):
        found: list[str] = []
        for key in sorted(set(old) | set(new), key=str):
            found += changed_keys(old.get(key, "(unset)"), new.get(key, "(unset)"), f"{prefix}{key}.")
        return found[:8]
    return [] if old == new else [f"{prefix[:-1]}: {json.dumps(old, default=str)} → {json.dumps(new, default=str)}"]


def check_run_config(run_dir: str | Path, config: TrainConfig, fingerprint: str | None = None) -> None:
    """ConfigError when RUN_DIR already holds a run made with another config, or (given the dataset's current
    `fingerprint`) on another version of the dataset: resuming it would mix the two."""
    run = RunDir(run_dir)
    if not run.config_path.exists():
        return
    stored = run.config()
    wanted = json.loads(json.dumps(run_record(config, stored.get("model_source", "")), default=str))
    # paths may differ (a run resumed after moving it, or from another folder); the dataset's identity is its fingerprint
    differ = changed_keys({k: v for k, v in stored.items() if k in wanted and k not in ("dataset", "output_dir")},
                          {k: v for k, v in wanted.items() if k not in ("dataset", "output_dir")})
    if differ:
        raise ConfigError(f"{run.config_path} was written by a run with a different config: {'; '.join(differ)}. "
                          "Fix: train into another output_dir (in an experiment: another --output), or delete "
                          f"{run.path} to start over.")
    recorded = stored.get("dataset_fingerprint")
    if fingerprint is not None and recorded is not None and recorded != fingerprint:
        raise ConfigError(f"{run.config_path}: the run was trained on another version of the dataset {config.dataset} "
                          "(its fingerprint changed). Fix: restore that dataset, or train into another output_dir.")
    codes = stored.get("files", {}).get(INDEX_FILE)
    if codes is not None:  # its checkpoints learnt these codes: resuming on others would mix the two
        verify_digest(Path(config.dataset) / INDEX_FILE, codes,
                      f"restore the semantic IDs {run.path} was trained on (from a backup), or train into another "
                      "output_dir")


def train(config: TrainConfig, *, resume: bool = False, callbacks: list[TrainerCallback] | None = None,
          thresholds_fn: ThresholdFn | None = None) -> Path:
    """Train per `config` into RUN_DIR = config.output_dir and return it (see the module docstring for the files).

    Under torchrun, a script calling this should end with a barrier and `torch.distributed.destroy_process_group()`
    (the `bearrec` CLI does): a gloo group left to interpreter teardown can abort a rank.
    """

    if config.deterministic:
        use_determinism()
    run = RunDir(config.output_dir)
    run_dir = run.path
    checkpoints = run.checkpoints_dir
    if not resume and checkpoints.is_dir() and any(CHECKPOINT.match(p.name) for p in checkpoints.iterdir()):
        last = checkpoints  # any checkpoint, complete or not: this run has started already
    else:
        last = last_complete_checkpoint(checkpoints, set_aside=int(os.environ.get("RANK", "0")) == 0)
        last = str(last) if last is not None else None
    if last is not None and not resume:
        raise ConfigError(f"{run_dir} already holds checkpoints. Fix: pass --resume to continue that run, "
                          "or choose another output_dir.")
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"output_dir {run_dir} is a file. Fix: choose a folder for output_dir.")
    dataset = load_dataset(config.dataset)
    check_run_config(run_dir, config, dataset.fingerprint)
    try:
        args = TrainingArguments(output_dir=str(checkpoints), **config.training_arguments())
    except (ValueError, TypeError) as e:  # settings that are valid one by one but not together
        raise ConfigError(f"the training settings do not fit together: {str(e).strip()} Fix: change the "
                          "training.* keys named above.") from None
    texts = item_texts(dataset, get_template(config.template, domain=config.domain, max_history=config.max_history),
                       config.item_kind, config.history)
    model, tokenizer, source = _model_and_tokenizer(config, dataset, texts, run_dir, args)
    trie = ItemTrie.from_catalog(texts.response, tokenizer, texts.template)
    max_length = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    train_split, valid_split = subsample(dataset.train, config.max_train_rows), subsample(dataset.valid, config.max_valid_rows)
    train_rows = encode_rows(train_split, texts, tokenizer, max_length)
    valid_rows = encode_rows(valid_split, texts, tokenizer, max_length)
    if not train_rows or not valid_rows:
        raise DataError("the train or valid split is empty; checkpoints are selected on valid.",
                        path=config.dataset, fix="prepare the dataset with non-empty train and valid splits")
    timer = EpochTimer(run.timing_path)
    if last is not None and resume:
        timer.load(int(json.loads((Path(last) / "trainer_state.json").read_text()).get("epoch") or 0))
    ranking = None
    if config.selection_metric != "eval_loss":
        run_parts = TrainedRun(None, tokenizer, trie, texts, dataset.items, config.objective.score_mode, dataset)
        ranking = RankingEvaluator(valid_split, run_parts, num_beams=config.objective.num_beams)
    trainer = BearTrainer(
        model=model, args=args, train_dataset=train_rows, eval_dataset=valid_rows, processing_class=tokenizer,
        data_collator=TrainCollator(tokenizer.pad_token_id, trie,
                                    with_prompts=get_objective(config.objective.name).needs_beam_thresholds),
        callbacks=[timer, *(callbacks or [])], objective=config.objective, trie=trie, thresholds_fn=thresholds_fn,
        ranking=ranking)
    if trainer.is_world_process_zero():
        trie.save(run.trie_path)
        run.write_config({**run_record(config, source), **run.record_dataset(config.dataset, dataset),
                          "files": run.record_files(dataset, texts), "environment": environment(args.device)})
    start = time.perf_counter()
    note = TiedWeightsNote(model)
    logging.getLogger("transformers.trainer").addFilter(note)
    try:
        result = trainer.train(resume_from_checkpoint=last if resume else None)
    finally:
        logging.getLogger("transformers.trainer").removeFilter(note)
    elapsed = time.perf_counter() - start
    if trainer.is_world_process_zero():
        save_trained(trainer.model, tokenizer, run.model_dir)
        write_json(run.log_history_path, trainer.state.log_history)
        best = trainer.state.best_metric
        previous = read_summary(run_dir) if run.summary_path.is_file() else {}
        write_json(run.summary_path, {
            # every session's seconds (a resumed run adds its own to the earlier ones)
            "train_seconds": previous.get("train_seconds", 0.0) + elapsed if resume else elapsed,
            "train_runtime": result.metrics.get("train_runtime"),
            "epoch_seconds": timer.epoch_seconds(), "global_step": trainer.state.global_step,
            "epochs": trainer.state.epoch, "resumed_from": last if resume else None,
            "best_checkpoint": trainer.state.best_model_checkpoint,
            "selection_metric": config.selection_metric,
            "best_metric": best if best is None or math.isfinite(best) else None,
            "train_loss": whole_run_loss(trainer.state.log_history)})
    trainer.accelerator.wait_for_everyone()
    return run_dir


def read_summary(run_dir: str | Path) -> dict[str, Any]:
    """RUN_DIR/train_summary.json as a dict."""
    return read_json_file(RunDir(run_dir).summary_path)
