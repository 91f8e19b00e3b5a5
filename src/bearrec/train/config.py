"""Training configuration: dataclasses read from YAML with dotted command-line overrides."""
from __future__ import annotations

import dataclasses
import re
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from ..config_checks import check_fields, check_range, check_value, field_types, shown
from ..errors import ConfigError
from ..methods import ObjectiveConfig
from ..metrics import cutoffs
from ..models import LoraSettings, torch_dtype
from ..prompts import PromptTemplate, check_item_kinds, get_template

@dataclass
class TinyModel:
    """Sizes of the random small Llama built when model == 'tiny' (see bearrec.models.build_tiny_model)."""

    vocab_size: int = 2048
    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    intermediate_size: int = 256

    def __post_init__(self) -> None:
        check_fields(self, "tiny.")
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            check_range(f"tiny.{f.name}", value, value >= 1, "an integer >= 1", f.default)
        if self.hidden_size % self.num_heads:
            raise ConfigError(f"tiny.hidden_size={self.hidden_size} is not a multiple of tiny.num_heads="
                              f"{self.num_heads}. Fix: e.g. tiny.hidden_size=128 tiny.num_heads=4.")


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
    # the name the run is reported under (an experiment's label, e.g. "sid-sft"); default its method, e.g. "bear-sft"
    name: str | None = None
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
    # what the model writes for an item: "title", or "semantic_id" (its codes from DATASET_DIR/semantic_ids.json,
    # `bearrec index`); `history`: what each past item shows, "titles", "codes" or "both" (default: like `item_kind`)
    item_kind: str = "title"
    history: str | None = None
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    seed: int = 42
    # The validation metric that picks the checkpoint (never test): eval_loss, or a ranking metric of the
    # constrained beam search with objective.num_beams beams on the validation rows (eval_ndcg@10, eval_hr@5, ...).
    # Default: eval_ndcg@B with B = objective.num_beams.
    selection_metric: str | None = None
    training: dict[str, Any] = field(default_factory=dict)  # transformers.TrainingArguments fields
    max_train_rows: int | None = None
    max_valid_rows: int | None = None
    # torch's deterministic algorithms and one thread (bearrec.machine.use_determinism), in training and in every
    # decoding of the run: a rerun on the same machine gives byte-identical models and predictions, at one thread's speed
    deterministic: bool = False

    def __post_init__(self) -> None:
        check_fields(self, "")
        if not self.dataset:
            raise ConfigError("dataset is not set. Fix: dataset: path/to/prepared_dataset (from `bearrec prepare`).")
        check_range("max_history", self.max_history, self.max_history >= 1, "at least 1", 10)
        check_range("seed", self.seed, 0 <= self.seed < 2 ** 32, "in [0, 2**32)", 42)
        for key in ("max_train_rows", "max_valid_rows"):  # the validation rows select the checkpoint: never 0
            value = getattr(self, key)
            check_range(key, value, value is None or value >= 1, "a positive integer or null", 1000)
        if self.lora is not None:
            _check_lora(self.lora)
        if self.load_in_8bit and self.load_in_4bit:
            raise ConfigError("load_in_8bit and load_in_4bit are both true. Fix: choose one of them.")
        _check_dtype(self.dtype)
        _check_template(self.template, self.domain, self.max_history)
        check_item_kinds(self.item_kind, self.history)
        if self.name is not None and not re.fullmatch(r"[\w.+@-]+", self.name):
            raise ConfigError(f"name={self.name!r} is not a plain name. Fix: use letters, digits and . _ + - @.")
        _check_training(self.training)
        if self.selection_metric is None:
            self.selection_metric = f"eval_ndcg@{self.objective.num_beams}"
        match = re.fullmatch(r"eval_(hr|ndcg|mrr)@(\d+)", self.selection_metric)
        if self.selection_metric != "eval_loss" and (
                match is None or int(match[2]) not in cutoffs(self.objective.num_beams)):
            ks = ", ".join(map(str, cutoffs(self.objective.num_beams)))
            raise ConfigError(f"selection_metric={self.selection_metric!r} is not available. Fix: use eval_loss or "
                              f"eval_hr@K / eval_ndcg@K / eval_mrr@K with K in {ks} "
                              "(objective.num_beams beams decode the validation rows).")

    def training_arguments(self) -> dict[str, Any]:
        """The TrainingArguments keyword arguments: our defaults, then the user's, then the reserved ones."""
        args = {**DEFAULT_TRAINING, **self.training}
        higher_better = not self.selection_metric.endswith("loss")
        return {**args, "seed": self.seed, "remove_unused_columns": False,
                "metric_for_best_model": self.selection_metric, "greater_is_better": higher_better,
                # ranking metrics come from our own decoding, so evaluation never needs to keep logits
                "prediction_loss_only": args.get("prediction_loss_only", True),
                **({"full_determinism": True} if self.deterministic else {})}

    def to_json(self) -> dict[str, Any]:
        """The resolved config as plain JSON (what RUN_DIR/config.json holds, plus run facts added by train)."""
        return asdict(self)


# transformers.TrainingArguments values bearrec checks beyond their types: (rule, test) per key.
_TRAINING_RANGES: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "learning_rate": ("> 0", lambda v: v > 0),
    "num_train_epochs": ("> 0 (or set training.max_steps)", lambda v: v > 0),
    "per_device_train_batch_size": (">= 1", lambda v: v >= 1),
    "per_device_eval_batch_size": (">= 1", lambda v: v >= 1),
    "gradient_accumulation_steps": (">= 1", lambda v: v >= 1),
    "eval_accumulation_steps": (">= 1", lambda v: v >= 1),
    "warmup_steps": (">= 0", lambda v: v >= 0),
    "weight_decay": (">= 0", lambda v: v >= 0),
    "max_grad_norm": (">= 0", lambda v: v >= 0),
    "adam_beta1": ("in [0, 1)", lambda v: 0 <= v < 1),
    "adam_beta2": ("in [0, 1)", lambda v: 0 <= v < 1),
    "adam_epsilon": (">= 0", lambda v: v >= 0),
    "label_smoothing_factor": ("in [0, 1)", lambda v: 0 <= v < 1),
    "logging_steps": ("> 0", lambda v: v > 0),
    "eval_steps": ("> 0", lambda v: v > 0),
    "save_steps": ("> 0", lambda v: v > 0),
    "dataloader_num_workers": (">= 0", lambda v: v >= 0),
}


# Where TrainingArguments takes more than its type hint says: fsdp is also true/false or the legacy list of options.
_TRAINING_TYPES: dict[str, Any] = {"fsdp": bool | str | list[str] | None}


def _check_training(training: dict[str, Any]) -> None:
    """ConfigError for a `training:` key that TrainingArguments lacks or that bearrec sets itself, a value not of
    the field's type, or a value out of its range."""
    from transformers import TrainingArguments

    valid = field_types(TrainingArguments)
    for key in training:
        if key in RESERVED_TRAINING:
            raise ConfigError(f"training.{key} is set by bearrec ({RESERVED_TRAINING[key]}). Fix: remove "
                              f"training.{key}.")
        if key not in valid:
            close = sorted(k for k in valid if str(key).split("_")[0] in k)[:12]
            raise ConfigError(f"training.{key} is not a transformers.TrainingArguments field. "
                              f"Fix: check the spelling{'; similar: ' + ', '.join(close) if close else ''}.")
        tp, default = valid[key]
        check_value(f"training.{key}", training[key], _TRAINING_TYPES.get(key, tp), DEFAULT_TRAINING.get(key, default))
    merged = {**DEFAULT_TRAINING, **training}
    for key, (rule, test) in _TRAINING_RANGES.items():
        value = merged.get(key)
        if value is None or key == "num_train_epochs" and (merged.get("max_steps") or -1) > 0:
            continue
        example = DEFAULT_TRAINING.get(key, valid.get(key, (Any, None))[1])
        check_range(f"training.{key}", value, test(value), rule, example)


def _check_lora(lora: LoraSettings) -> None:
    """LoraSettings (defined in bearrec.models, which does not check them): types and ranges."""
    check_fields(lora, "lora.")
    check_range("lora.r", lora.r, lora.r >= 1, ">= 1", 8)
    check_range("lora.alpha", lora.alpha, lora.alpha >= 1, ">= 1", 16)
    check_range("lora.dropout", lora.dropout, 0 <= lora.dropout < 1, "in [0, 1)", 0.05)
    check_range("lora.target_modules", lora.target_modules, len(lora.target_modules) >= 1,
                 "a non-empty list of module names", ["q_proj", "v_proj"])


def _check_dtype(dtype: str) -> None:
    """`dtype` names a torch dtype (or auto), as the model loader will read it."""
    torch_dtype(dtype)


def _check_template(template: Any, domain: str, max_history: int) -> None:
    """The prompt template resolves: a known name, or a dict of PromptTemplate fields of the right types."""
    if isinstance(template, dict):
        names = field_types(PromptTemplate)
        for key, value in template.items():
            if key not in names:
                raise ConfigError(f"unknown key template.{key}. Valid keys: {', '.join(names)}. Fix: check the "
                                  "spelling, or remove the key.")
            check_value(f"template.{key}", value, names[key][0])
    elif not isinstance(template, (str, PromptTemplate)):
        raise ConfigError(f"template must be alpaca, compact or a mapping with text and response_header, got "
                          f"{shown(template)}. Fix: e.g. template=compact.")
    get_template(template, domain=domain, max_history=max_history)


class _Loader(yaml.SafeLoader):
    """YAML 1.2-style scalars: 1e-4 is a float (YAML 1.1 says string) and no/yes/on/off stay strings
    (YAML 1.1 says bool, which would turn `eval_strategy: no` into False)."""


def _mapping_without_repeats(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    """A YAML mapping, refusing a key given twice (YAML keeps the last one silently)."""
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in seen:
            raise ConfigError(f"{getattr(node.start_mark, 'name', 'the config')}, line {key_node.start_mark.line + 1}: "
                              f"the key {key!r} is given twice (also on line {seen[key]}); YAML would keep the last "
                              "one. Fix: keep one of them.")
        seen[key] = key_node.start_mark.line + 1
    return loader.construct_mapping(node, deep=True)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_repeats)
_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                              list("tTfF"))

_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789"))


def parse_yaml(text: str, name: str = "the config") -> Any:
    """YAML with YAML 1.2-style scalars, refusing a key repeated in one mapping (errors say `name` and the line)."""
    loader = _Loader(text)
    loader.name = name
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


_SECTIONS: dict[str, type] = {"objective": ObjectiveConfig, "tiny": TinyModel, "lora": LoraSettings}


def apply_override(raw: dict[str, Any], override: str) -> None:
    """Apply one `a.b=value` override (value parsed as YAML: 1e-3, true, null, [q_proj, v_proj])."""
    if "=" not in override:
        raise ConfigError(f"override {override!r} is not key=value. Fix: e.g. objective.name=bear")
    key, text = override.split("=", 1)
    set_dotted(raw, key.strip(), parse_yaml(text) if text.strip() else "")


def set_dotted(raw: dict[str, Any], key: str, value: Any) -> None:
    """raw["a"]["b"] = value for key "a.b", creating the sections on the way."""
    parts = key.split(".")
    node = raw
    for part in parts[:-1]:
        if node.get(part) is None:
            node[part] = {}
        if not isinstance(node[part], dict):
            raise ConfigError(f"override {key}: {part} is not a section. Fix: set {part} itself, e.g. {part}=VALUE.")
        node = node[part]
    node[parts[-1]] = value


# Keys an earlier release used, with their names now (run directories written then are read through
# run_dir.with_later_defaults).
RENAMED_KEYS = {"objective.beam_size": "objective.num_beams"}
# Keys read under their new name with a note on stderr (old name: new name).
DEPRECATED_KEYS = {"items": "item_kind"}


def _build(cls: type, values: Any, where: str) -> Any:
    """cls(**values) with an error naming an unknown key and listing the valid ones."""
    if not isinstance(values, dict):
        raise ConfigError(f"{where} must be a mapping of {cls.__name__} fields, got {shown(values)}. Fix: e.g. "
                          f"{where}: {{{dataclasses.fields(cls)[0].name}: ...}} in YAML, or {where}."
                          f"{dataclasses.fields(cls)[0].name}=... on the command line.")
    names = [f.name for f in dataclasses.fields(cls)]
    values = _deprecated_keys_renamed(values, where)
    for key in values:
        full = f"{where + '.' if where else ''}{key}"
        if full in RENAMED_KEYS:
            raise ConfigError(f"{full} is now called {RENAMED_KEYS[full]}. Fix: rename the key.")
        if key not in names:
            raise ConfigError(f"unknown key {where + '.' if where else ''}{key}. Valid keys: {', '.join(names)}. "
                              "Fix: check the spelling, or remove the key.")
    try:
        return cls(**values)
    except TypeError as e:
        raise ConfigError(f"{where or 'config'}: {e}") from None


def _deprecated_keys_renamed(values: dict[str, Any], where: str) -> dict[str, Any]:
    """`values` with each DEPRECATED_KEYS key under its new name, saying so on stderr (both at once is an error)."""
    out = dict(values)
    for old, new in DEPRECATED_KEYS.items():
        full_old, full_new = (f"{where}.{old}", f"{where}.{new}") if where else (old, new)
        if old in out and not where:
            if new in out:
                raise ConfigError(f"{full_old} and {full_new} are both set. Fix: keep {full_new} only ({full_old} is "
                                  "its old name).")
            print(f"bearrec: note: the config key {full_old} is now called {full_new}; {full_old} still works for "
                  "now. Fix: rename it.", file=sys.stderr)
            out = {(new if k == old else k): v for k, v in out.items()}
    return out


def _from_run_record(record: dict[str, Any]) -> dict[str, Any]:
    """The TrainConfig fields of a RUN_DIR/config.json (`run_record`: the objective's name under `objective`, its
    fields under `objective_config`, the full TrainingArguments under `training`, run facts beside them)."""
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    record = {DEPRECATED_KEYS.get(key, key): value for key, value in record.items()}  # a run recorded before a rename
    raw = {key: value for key, value in record.items() if key in names}
    raw["objective"] = record["objective_config"]
    if isinstance(raw.get("training"), dict):  # the keys bearrec sets are set again from the top-level fields
        raw["training"] = {k: v for k, v in raw["training"].items() if k not in RESERVED_TRAINING}
    return raw


def config_from_dict(raw: dict[str, Any]) -> TrainConfig:
    """A TrainConfig from a plain dict (as in YAML, `TrainConfig.to_json()` or a run's config.json), validating
    every key and value."""
    if not isinstance(raw, dict):
        raise ConfigError(f"a config must be a mapping of settings, got {shown(raw)}. Fix: pass a dict of "
                          "TrainConfig fields.")
    if isinstance(raw.get("objective"), str) and isinstance(raw.get("objective_config"), dict):
        raw = _from_run_record(raw)
    raw = dict(raw)
    for name, cls in _SECTIONS.items():
        if name != "lora" and name in raw and raw[name] is None:  # an empty section: its defaults
            del raw[name]
        if name in raw and raw[name] is not None and not isinstance(raw[name], cls):
            raw[name] = _build(cls, raw[name], name)
    if "training" in raw and raw["training"] is None:
        del raw["training"]
    return _build(TrainConfig, raw, "")


def read_settings(path: str | Path | None, overrides: list[str] | tuple[str, ...] = (), *,
                  examples: str = "configs/") -> dict[str, Any]:
    """The mapping a YAML file holds (empty when path is None) with `key=value` overrides applied; errors name the
    file and point at `examples`."""
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            raw = parse_yaml(Path(path).read_text(encoding="utf-8"), str(path)) or {}
        except OSError as e:
            raise ConfigError(f"cannot read the config {path}: {e.strerror}. Fix: give the path of a YAML config "
                              f"({examples} has examples).") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"{path} is not valid YAML: {e} Fix: correct the YAML at the line named.") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{path} must hold a mapping of settings at the top level. Fix: write one `key: value` "
                              f"a line ({examples} has examples).")
    for override in overrides:
        apply_override(raw, override)
    return raw


def load_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """Read a YAML training config (or start from defaults when path is None) and apply `key=value` overrides."""
    return config_from_dict(read_settings(path, overrides))
