"""Typed training configuration: every field checked against its type hint and range before anything is written."""
import json
from dataclasses import asdict

import pytest
import yaml

from bearrec.cli import main
from bearrec.errors import ConfigError
from bearrec.models import LoraSettings
from bearrec.train import ObjectiveConfig, TrainConfig, config_from_dict, load_config

BASE = ["dataset=data/d"]


@pytest.mark.parametrize("override, message", [
    ("training.learning_rate=abc", "training.learning_rate must be a number, got 'abc'. Fix: write a value of that "
                                   "type, e.g. training.learning_rate=0.0001."),
    ("training.per_device_train_batch_size=x", "training.per_device_train_batch_size must be an integer, got 'x'."),
    ("training.per_device_train_batch_size=8.0", "training.per_device_train_batch_size must be an integer, got 8.0."),
    ("training.bf16=yes", "training.bf16 must be true or false, got 'yes'."),
    ("training.load_best_model_at_end=1", "training.load_best_model_at_end must be true or false, got 1."),
    ("training.report_to=5", "training.report_to must be a string, a list of strings or null, got 5."),
    ("training.report_to=[wandb, 3]", "training.report_to must be a string, a list of strings or null, got"),
    ("training.eval_strategy=epochs", "training.eval_strategy must be one of no, steps, epoch, got 'epochs'."),
    ("training.lr_scheduler_type=bogus", "training.lr_scheduler_type must be one of linear, cosine, "),
    ("training.deepspeed=[a]", "training.deepspeed must be a mapping, a string or null, got ['a']."),
    ("training.data_seed=abc", "training.data_seed must be an integer or null, got 'abc'. Fix: set "
                               "training.data_seed to an integer or null."),
    ("max_train_rows=abc", "max_train_rows must be an integer or null, got 'abc'."),
    ("max_valid_rows=1.5", "max_valid_rows must be an integer or null, got 1.5."),
    ("seed=abc", "seed must be an integer, got 'abc'. Fix: write a value of that type, e.g. seed=42."),
    ("max_history=[1]", "max_history must be an integer, got [1]."),
    ("load_in_8bit=yes", "load_in_8bit must be true or false, got 'yes'."),
    ("dataset=[a, b]", "dataset must be a string, got ['a', 'b']."),
    ("model=3", "model must be a string, got 3."),
    ("selection_metric=5", "selection_metric must be a string or null, got 5."),
    ("training=[1]", "training must be a mapping, got [1]."),
    ("objective.lam=abc", "objective.lam must be a number, got 'abc'. Fix: write a value of that type, e.g. "
                          "objective.lam=0.25."),
    ("objective.num_beams=2.5", "objective.num_beams must be an integer, got 2.5."),
    ("objective.num_beams=[1, 2]", "objective.num_beams must be an integer, got [1, 2]."),
    ("objective.xi=true", "objective.xi must be a number, got True."),
    ("objective.name=3", "objective.name must be a string, got 3."),
    ("objective.weighted=1", "objective.weighted must be true or false, got 1."),
    ("tiny.hidden_size=abc", "tiny.hidden_size must be an integer, got 'abc'. Fix: write a value of that type, e.g. "
                             "tiny.hidden_size=128."),
    ("lora.r=x", "lora.r must be an integer, got 'x'. Fix: write a value of that type, e.g. lora.r=8."),
    ("lora.dropout=abc", "lora.dropout must be a number, got 'abc'."),
    ("lora.target_modules=q_proj", "lora.target_modules must be a list of strings, got 'q_proj'. Fix: write a value "
                                   "of that type, e.g. lora.target_modules=[q_proj, v_proj]."),
    ("template.text=5", "template.text must be a string, got 5."),
])
def test_a_value_of_the_wrong_type_names_key_type_and_value(override, message):
    with pytest.raises(ConfigError) as info:
        load_config(None, [*BASE, override])
    text = str(info.value)
    assert text.startswith(message)
    assert "Fix: " in text and text.endswith(".")


def test_a_long_list_of_choices_is_cut_short():
    with pytest.raises(ConfigError, match=r"training.optim must be one of adamw_torch, .*, \.\.\. \(\d+ in all: "
                                          r"transformers\.training_args\.OptimizerNames\), got 'sgdx'"):
        load_config(None, [*BASE, "training.optim=sgdx"])


@pytest.mark.parametrize("override, message", [
    ("training.learning_rate=0", "training.learning_rate must be > 0, got 0. Fix: e.g. training.learning_rate=0.0001."),
    ("training.learning_rate=-1e-4", "training.learning_rate must be > 0, got -0.0001."),
    ("training.learning_rate=.nan", "training.learning_rate must be > 0, got nan."),
    ("training.per_device_train_batch_size=0", "training.per_device_train_batch_size must be >= 1, got 0."),
    ("training.per_device_eval_batch_size=0", "training.per_device_eval_batch_size must be >= 1, got 0."),
    ("training.gradient_accumulation_steps=0", "training.gradient_accumulation_steps must be >= 1, got 0."),
    ("training.num_train_epochs=0", "training.num_train_epochs must be > 0 (or set training.max_steps), got 0."),
    ("training.warmup_steps=-1", "training.warmup_steps must be >= 0, got -1."),
    ("training.logging_steps=0", "training.logging_steps must be > 0, got 0."),
    ("training.adam_beta2=1", "training.adam_beta2 must be in [0, 1), got 1."),
    ("training.dataloader_num_workers=-1", "training.dataloader_num_workers must be >= 0, got -1."),
    ("objective.lam=-0.5", "objective.lam must be >= 0 and finite, got -0.5."),
    ("objective.xi=0", "objective.xi must be > 0 and finite, got 0. Fix: e.g. objective.xi=2.75."),
    ("objective.tau=-1", "objective.tau must be > 0 and finite, got -1."),
    ("objective.xi=.inf", "objective.xi must be > 0 and finite, got inf."),
    ("objective.num_beams=0", "objective.num_beams must be an integer >= 1, got 0."),
    ("max_history=0", "max_history must be at least 1, got 0."),
    ("seed=-1", "seed must be in [0, 2**32), got -1."),
    ("max_train_rows=0", "max_train_rows must be a positive integer or null, got 0."),
    ("max_valid_rows=0", "max_valid_rows must be a positive integer or null, got 0."),
    ("tiny.num_layers=0", "tiny.num_layers must be an integer >= 1, got 0. Fix: e.g. tiny.num_layers=2."),
    ("tiny.num_heads=3", "tiny.hidden_size=128 is not a multiple of tiny.num_heads=3."),
    ("lora.r=0", "lora.r must be >= 1, got 0."),
    ("lora.dropout=1", "lora.dropout must be in [0, 1), got 1."),
    ("lora.target_modules=[]", "lora.target_modules must be a non-empty list of module names, got []."),
    ("dtype=float33", "unknown dtype 'float33'."),
    ("template=foo", "unknown prompt template 'foo'."),
    ("template={txt: 'x {history}'}", "unknown key template.txt. Valid keys: text, response_header"),
])
def test_a_value_out_of_range_names_key_rule_and_value(override, message):
    with pytest.raises(ConfigError) as info:
        load_config(None, [*BASE, override])
    assert str(info.value).startswith(message)
    assert "Fix: " in str(info.value)


def test_both_quantisations_at_once_are_refused():
    with pytest.raises(ConfigError, match="load_in_8bit and load_in_4bit are both true. Fix: choose one"):
        load_config(None, [*BASE, "load_in_8bit=true", "load_in_4bit=true"])


def test_valid_values_of_every_kind_are_kept():
    cfg = load_config(None, [
        *BASE, "training.learning_rate=1", "training.num_train_epochs=2", "training.warmup_steps=0.1",
        "training.eval_strategy=no", "training.lr_scheduler_type=cosine", "training.optim=sgd",
        "training.report_to=[tensorboard]", "training.deepspeed={zero_optimization: {stage: 2}}",
        "training.fsdp=true", "training.eval_steps=null", "training.num_train_epochs=0", "training.max_steps=5",
        "training.trackio_static_space_id=false", "objective.lam=1", "objective.xi=3", "lora.r=4",
        "lora.target_modules=[q_proj]", "tiny.hidden_size=64", "dtype=bf16", "template=compact"])
    assert cfg.training["learning_rate"] == 1 and cfg.training["report_to"] == ["tensorboard"]
    assert cfg.objective.lam == 1 and cfg.lora == LoraSettings(r=4, target_modules=["q_proj"])
    assert cfg.tiny.hidden_size == 64


def test_empty_sections_mean_their_defaults(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("dataset: d\nobjective:\ntiny:\ntraining:\n")
    cfg = load_config(path)
    assert cfg.objective == ObjectiveConfig() and cfg.training == {} and cfg.lora is None


def test_the_dataclasses_check_values_given_in_python():
    with pytest.raises(ConfigError, match="objective.lam must be a number, got 'abc'"):
        ObjectiveConfig(lam="abc")
    with pytest.raises(ConfigError, match="seed must be an integer, got '1'"):
        TrainConfig(dataset="d", seed="1")
    with pytest.raises(ConfigError, match="objective must be a ObjectiveConfig, got"):
        TrainConfig(dataset="d", objective={"name": "bear"})
    with pytest.raises(ConfigError, match="lora.alpha must be an integer, got 'x'"):
        TrainConfig(dataset="d", lora=LoraSettings(alpha="x"))
    with pytest.raises(ConfigError, match="training.learning_rate must be > 0"):
        TrainConfig(dataset="d", training={"learning_rate": 0.0})


def test_to_json_and_a_runs_config_json_round_trip():
    from bearrec.train.trainer import run_record

    cfg = load_config(None, [*BASE, "objective.name=bear", "objective.num_beams=5", "lora.r=4", "seed=3",
                             "training.learning_rate=2e-3", "training.report_to=[tensorboard]",
                             "template={text: 'Seen: {history}\nNext:\n', response_header: '\nNext:\n'}"])
    assert config_from_dict(cfg.to_json()) == cfg
    assert config_from_dict(json.loads(json.dumps(cfg.to_json()))) == cfg
    record = json.loads(json.dumps(run_record(cfg, "tiny")))
    # train adds run facts beside the config (the dataset's location and fingerprint, checksums)
    record.update(dataset_path="/abs/data/d", dataset_fingerprint="f" * 16, files={"trie.pt": {"size": 1}})
    again = config_from_dict(record)
    assert again.objective == cfg.objective and again.lora == cfg.lora and again.seed == 3
    assert again.training_arguments() == cfg.training_arguments()
    assert json.loads(json.dumps(run_record(again, "tiny"))) == json.loads(json.dumps(run_record(cfg, "tiny")))


def test_a_config_rejected_by_train_writes_nothing(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    out = tmp_path / "run"
    path.write_text(yaml.safe_dump({"dataset": str(tmp_path / "data"), "output_dir": str(out),
                                    "training": {"learning_rate": "abc"}}))
    assert main(["train", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bearrec: error: training.learning_rate must be a number, got 'abc'.")
    assert "Traceback" not in err and not out.exists()


def test_example_configs_are_typed_correctly():
    from pathlib import Path

    for name in ("tiny-cpu.yaml", "lora-1b-gpu.yaml", "multi-gpu-deepspeed.yaml"):
        cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / name)
        assert config_from_dict(asdict(cfg)) == cfg


def test_the_config_json_of_a_trained_run_reads_back(small_run):
    from bearrec.train.trainer import run_record

    stored = json.loads((small_run / "config.json").read_text())
    cfg = config_from_dict(stored)
    again = json.loads(json.dumps(run_record(cfg, stored["model_source"]), default=str))
    assert {key: stored[key] for key in again} == again


def test_the_selection_metric_takes_the_cutoffs_of_the_beam_width(tmp_path):
    from bearrec.train import load_config

    with pytest.raises(ConfigError, match="with K in 1, 5, 10 "):
        load_config(None, [f"dataset={tmp_path}", "selection_metric=eval_ndcg@20"])
    assert load_config(None, [f"dataset={tmp_path}", "objective.num_beams=50",
                              "selection_metric=eval_ndcg@20"]).selection_metric == "eval_ndcg@20"


def test_the_item_kinds_old_key_still_works_with_a_note(capsys):
    from bearrec.run_dir import with_later_defaults

    assert config_from_dict({"dataset": "d", "items": "semantic_id"}).item_kind == "semantic_id"
    assert "items is now called item_kind" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="items and item_kind are both set"):
        config_from_dict({"dataset": "d", "items": "title", "item_kind": "semantic_id"})
    # a run recorded before the rename reads as the item kind it was trained with
    assert with_later_defaults({"template": "compact", "items": "semantic_id"})["item_kind"] == "semantic_id"
    assert "items" not in with_later_defaults({"template": "compact", "items": "semantic_id"})


def test_an_old_run_record_keeps_its_item_kind():
    """A config.json written when the item kind was called `items` reads back as that kind, not the default."""
    from bearrec.train.trainer import run_record

    record = run_record(config_from_dict({"dataset": "d", "item_kind": "semantic_id"}), "tiny")
    record["items"] = record.pop("item_kind")
    assert config_from_dict(record).item_kind == "semantic_id"
