"""Training configuration: dataclasses read from YAML with dotted command-line overrides."""
from __future__ import annotations

import dataclasses
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError
from ..models import LoraSettings

OBJECTIVES = ("sft", "msl", "bear", "direct")
BASES = ("msl", "sft")  # the base loss that bear and direct add their term to


@dataclass
class ObjectiveConfig:
    """Which loss to train with and its hyperparameters (method.md; the paper's Toy run: B=10, lam=.25, xi=2.75)."""

    name: str = "sft"
    beam_size: int = 10
    lam: float = 0.25
    xi: float = 2.75
    tau: float = 1.0
    weighted: bool = False  # bear only: the reference implementation's detached-weight form
    detach_threshold: bool = True
    # bear and direct only: "msl" (the reference implementation) or "sft" (the paper's L_SFT + lam L_reg:
    # full-vocabulary cross-entropy, decoded with full scores; the pruning margin is the same, see losses.py)
    base: str = "msl"
    # masked objectives: add the full-vocabulary CE of every token whose trie prefix has one child. MSL gives those
    # tokens no gradient (p = 1), so a model trained from scratch learns only from the branching tokens and, at a
    # high learning rate, stops reading its prompt (docs/results.md). Masked decoding scores are unchanged by it
    # (p = 1). The full-softmax objectives (sft, an sft base) already give every token that CE: no change there.
    single_child_ce: bool = False

    def __post_init__(self) -> None:
        if self.name not in OBJECTIVES:
            raise ConfigError(f"objective.name={self.name!r} is unknown. Fix: use one of {', '.join(OBJECTIVES)}.")
        for key in ("weighted", "detach_threshold", "single_child_ce"):
            if not isinstance(getattr(self, key), bool):
                raise ConfigError(f"objective.{key} must be true or false, got {getattr(self, key)!r}.")
        if int(self.beam_size) != self.beam_size or self.beam_size < 1:
            raise ConfigError(f"objective.beam_size must be an integer >= 1, got {self.beam_size!r}.")
        for key in ("xi", "tau"):
            if not float(getattr(self, key)) > 0:
                raise ConfigError(f"objective.{key} must be > 0, got {getattr(self, key)!r}.")
        if not float(self.lam) >= 0:
            raise ConfigError(f"objective.lam must be >= 0, got {self.lam!r}.")
        if self.weighted and self.name != "bear":
            raise ConfigError("objective.weighted applies to the bear objective only. Fix: set objective.name=bear.")
        if self.base not in BASES:
            raise ConfigError(f"objective.base={self.base!r} is unknown. Fix: use one of {', '.join(BASES)}.")
        if self.base != "msl" and self.name not in ("bear", "direct"):
            raise ConfigError(f"objective.base applies to bear and direct only (the {self.name} objective is its own "
                              "base). Fix: leave objective.base unset.")
        if self.base == "sft" and (self.weighted or float(self.tau) != 1.0):
            raise ConfigError("objective.base=sft takes neither objective.weighted (the reference's re-weighting of "
                              "MSL) nor objective.tau (the masked softmax's temperature). Fix: leave both unset, or "
                              "use objective.base=msl.")

    @classmethod
    def for_method(cls, method: str, **fields: Any) -> "ObjectiveConfig":
        """The objective of a method name (`method`'s inverse: "bear", "bear-sft", "msl+ce"), with other fields."""
        match = re.fullmatch(r"([a-z]+)(?:-([a-z]+))?(\+ce)?", method)
        if match is None or {"name", "base", "single_child_ce"} & set(fields):
            raise ConfigError(f"method {method!r} is not of the form NAME[-BASE][+ce] (e.g. bear, bear-sft, msl+ce), "
                              "or repeats one of its parts as a field. Fix: name the objective, its base and +ce once.")
        name, base, plus = match.groups()
        return cls(name=name, **({"base": base} if base else {}), **({"single_child_ce": True} if plus else {}),
                   **fields)

    @property
    def method(self) -> str:
        """The name a run is reported under: the objective, its base where that is not MSL ("bear-sft"), and
        "+ce" with single_child_ce ("msl+ce")."""
        stem = self.name if self.base == "msl" else f"{self.name}-{self.base}"
        return stem + ("+ce" if self.single_child_ce and self.score_mode == "masked" else "")

    @property
    def score_mode(self) -> str:
        """How decoding must score tokens to match training: full softmax for SFT (and an SFT base), else masked."""
        return "full" if self.name == "sft" or self.base == "sft" else "masked"


@dataclass
class TinyModel:
    """Sizes of the random small Llama built when model == 'tiny' (see bearrec.models.build_tiny_model)."""

    vocab_size: int = 2048
    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    intermediate_size: int = 256


# Our defaults for transformers.TrainingArguments; anything in `training:` overrides them.
DEFAULT_TRAINING: dict[str, Any] = {
    "num_train_epochs": 1, "learning_rate": 1e-4, "per_device_train_batch_size": 8,
    "per_device_eval_batch_size": 8, "eval_strategy": "epoch", "save_strategy": "epoch",
    "logging_strategy": "steps", "logging_steps": 10, "save_total_limit": 2, "report_to": "none",
    "load_best_model_at_end": True, "lr_scheduler_type": "linear", "warmup_steps": 0,
}
# Set by bearrec, not by the user: where checkpoints go, extra batch keys, no logits kept in evaluation.
RESERVED_TRAINING = {"output_dir": "set output_dir at the top level", "seed": "set seed at the top level",
                     "remove_unused_columns": "the trie node ids need it False",
                     "metric_for_best_model": "set selection_metric at the top level",
                     "greater_is_better": "implied by selection_metric"}


@dataclass
class TrainConfig:
    """Everything a training run needs; `load_config` builds it from YAML, config.json records it."""

    dataset: str = ""
    output_dir: str = "runs/run"
    model: str = "tiny"  # a folder, a hub name, "smollm2-135m" or "tiny" (built on the dataset)
    tiny: TinyModel = field(default_factory=TinyModel)
    lora: LoraSettings | None = None
    dtype: str = "auto"
    load_in_8bit: bool = False
    load_in_4bit: bool = False
    gradient_checkpointing: bool = False
    template: Any = "alpaca"  # "alpaca", "compact" or a dict of PromptTemplate fields
    domain: str = "item"
    max_history: int = 10
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    seed: int = 42
    # The validation metric that picks the checkpoint (never test): eval_loss, or a ranking metric of the
    # constrained beam search with objective.beam_size beams on the validation rows (eval_ndcg@10, eval_hr@5, ...).
    # Default: eval_ndcg@B with B = objective.beam_size.
    selection_metric: str | None = None
    training: dict[str, Any] = field(default_factory=dict)  # transformers.TrainingArguments fields
    max_train_rows: int | None = None
    max_valid_rows: int | None = None

    def __post_init__(self) -> None:
        if not self.dataset:
            raise ConfigError("dataset is not set. Fix: dataset: path/to/prepared_dataset (from `bearrec prepare`).")
        if self.max_history < 1:
            raise ConfigError(f"max_history must be at least 1, got {self.max_history}.")
        for key in ("max_train_rows", "max_valid_rows"):
            value = getattr(self, key)
            if value is not None and (int(value) != value or value < 1):
                raise ConfigError(f"{key} must be a positive integer or null, got {value!r}.")
        if self.max_valid_rows is not None and self.max_valid_rows < 1:
            raise ConfigError("max_valid_rows must be >= 1: checkpoints are selected on validation.")
        _check_training_keys(self.training)
        if self.selection_metric is None:
            self.selection_metric = f"eval_ndcg@{self.objective.beam_size}"
        match = re.fullmatch(r"eval_(hr|ndcg|mrr)@(\d+)", self.selection_metric)
        if self.selection_metric != "eval_loss" and (
                match is None or int(match[2]) not in {1, 5, self.objective.beam_size} or int(match[2]) > self.objective.beam_size):
            raise ConfigError(f"selection_metric={self.selection_metric!r} is not available. Fix: use eval_loss or "
                              f"eval_hr@K / eval_ndcg@K / eval_mrr@K with K in 1, 5 or {self.objective.beam_size} "
                              "(objective.beam_size beams decode the validation rows).")

    def training_arguments(self) -> dict[str, Any]:
        """The TrainingArguments keyword arguments: our defaults, then the user's, then the reserved ones."""
        args = {**DEFAULT_TRAINING, **self.training}
        higher_better = not self.selection_metric.endswith("loss")
        return {**args, "seed": self.seed, "remove_unused_columns": False,
                "metric_for_best_model": self.selection_metric, "greater_is_better": higher_better,
                # ranking metrics come from our own decoding, so evaluation never needs to keep logits
                "prediction_loss_only": args.get("prediction_loss_only", True)}

    def to_json(self) -> dict[str, Any]:
        """The resolved config as plain JSON (what RUN_DIR/config.json holds, plus run facts added by train)."""
        return asdict(self)


def _check_training_keys(training: dict[str, Any]) -> None:
    """ConfigError for a `training:` key that TrainingArguments lacks or that bearrec sets itself."""
    from transformers import TrainingArguments

    valid = {f.name for f in dataclasses.fields(TrainingArguments) if f.init}
    for key in training:
        if key in RESERVED_TRAINING:
            raise ConfigError(f"training.{key} is set by bearrec ({RESERVED_TRAINING[key]}).")
        if key not in valid:
            close = sorted(k for k in valid if key.split("_")[0] in k)[:12]
            raise ConfigError(f"training.{key} is not a transformers.TrainingArguments field. "
                              f"Fix: check the spelling{'; similar: ' + ', '.join(close) if close else ''}.")


class _Loader(yaml.SafeLoader):
    """YAML 1.2-style scalars: 1e-4 is a float (YAML 1.1 says string) and no/yes/on/off stay strings
    (YAML 1.1 says bool, which would turn `eval_strategy: no` into False)."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                              list("tTfF"))

_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789"))


def _yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)


_SECTIONS: dict[str, type] = {"objective": ObjectiveConfig, "tiny": TinyModel, "lora": LoraSettings}


def _set_dotted(raw: dict[str, Any], override: str) -> None:
    """Apply one `a.b=value` override (value parsed as YAML: 1e-3, true, null, [q_proj, v_proj])."""
    if "=" not in override:
        raise ConfigError(f"override {override!r} is not key=value. Fix: e.g. objective.name=bear")
    key, text = override.split("=", 1)
    value = _yaml(text) if text.strip() else ""
    parts = key.strip().split(".")
    node = raw
    for part in parts[:-1]:
        if node.get(part) is None:
            node[part] = {}
        if not isinstance(node[part], dict):
            raise ConfigError(f"override {key}: {part} is not a section.")
        node = node[part]
    node[parts[-1]] = value


def _build(cls: type, values: Any, where: str) -> Any:
    """cls(**values) with an error naming an unknown key and listing the valid ones."""
    if not isinstance(values, dict):
        raise ConfigError(f"{where} must be a mapping of {cls.__name__} fields, got {values!r}.")
    names = [f.name for f in dataclasses.fields(cls)]
    for key in values:
        if key not in names:
            raise ConfigError(f"unknown key {where + '.' if where else ''}{key}. Valid keys: {', '.join(names)}.")
    try:
        return cls(**values)
    except TypeError as e:
        raise ConfigError(f"{where or 'config'}: {e}") from None


def config_from_dict(raw: dict[str, Any]) -> TrainConfig:
    """A TrainConfig from a plain dict (as in YAML or config.json), validating every key and value."""
    raw = dict(raw)
    for name, cls in _SECTIONS.items():
        if name in raw and raw[name] is not None and not isinstance(raw[name], cls):
            raw[name] = _build(cls, raw[name], name)
    if "training" in raw and not isinstance(raw["training"], dict):
        raise ConfigError("training must be a mapping of TrainingArguments fields.")
    return _build(TrainConfig, raw, "")


def load_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """Read a YAML training config (or start from defaults when path is None) and apply `key=value` overrides."""
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            raw = _yaml(Path(path).read_text(encoding="utf-8")) or {}
        except OSError as e:
            raise ConfigError(f"cannot read the config {path}: {e.strerror}.") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"{path} is not valid YAML: {e}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{path} must hold a mapping of settings at the top level.")
    for override in overrides:
        _set_dotted(raw, override)
    return config_from_dict(raw)
