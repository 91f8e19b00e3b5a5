"""The error matrix, round two (issue 27): raw files, histories, devices, list lengths and unchecked predictions.
Each case exits 2 naming the file, key or option with its fix and no traceback, and changes nothing on disk (the
helpers are test_error_matrix's)."""
from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pytest

from bearrec.errors import ConfigError
from test_error_matrix import assert_refused, assert_unchanged, bearrec, run_copy, snapshot  # noqa: F401 (fixture)


@pytest.mark.parametrize("kind", ["latin-1 .item", "truncated .inter.gz"])
def test_prepare_names_a_raw_file_that_is_not_utf8_or_is_cut_short(tmp_path, capsys, kind):
    raw = tmp_path / "raw"
    raw.mkdir()
    inter = "user_id:token\titem_id:token\ttimestamp:float\n" + "".join(f"u{u}\ti{u % 5}\t{u}\n" for u in range(40))
    item = "item_id:token\ttitle:token_seq\n" + "".join(f"i{i}\tcaf\u00e9 {i}\n" for i in range(5))
    if kind == "latin-1 .item":
        (raw / "x.inter").write_text(inter)
        (raw / "x.item").write_bytes(item.encode("latin-1"))
        names = ("x.item", "line 2", "not UTF-8", "0xe9")
    else:
        (raw / "x.inter").write_bytes(gzip.compress(inter.encode())[:-10])
        (raw / "x.item").write_text(item)
        names = ("x.inter", "truncated gzip")
    before = snapshot(tmp_path)
    assert_refused(*bearrec(capsys, "prepare", "recbole", raw, tmp_path / "out"), *names)
    assert_unchanged(before, snapshot(tmp_path))


def test_an_empty_histories_file_is_named(run_copy, tmp_path, capsys):
    histories = tmp_path / "empty.jsonl"
    histories.write_text("")
    before = snapshot(run_copy, tmp_path / "out.jsonl")
    assert_refused(*bearrec(capsys, "recommend", run_copy, "--histories", histories, "--output", tmp_path / "out.jsonl"),
                   "empty.jsonl", "holds no histories")
    assert_unchanged(before, snapshot(run_copy, tmp_path / "out.jsonl"))


@pytest.mark.parametrize("device, names", [("cuda", ("--device 'cuda'", "no usable CUDA GPU")),
                                           ("cdua", ("--device 'cdua'", "not a device name"))])
def test_an_unusable_device_is_named(run_copy, tmp_path, capsys, device, names):
    before = snapshot(run_copy)
    assert_refused(*bearrec(capsys, "recommend", run_copy, "--device", device, "--output", tmp_path / "p.jsonl"), *names)
    assert_unchanged(before, snapshot(run_copy))


def test_a_sasrec_device_that_this_machine_lacks_is_refused_before_anything_is_written():
    from bearrec.baselines import resolve_settings
    from bearrec.errors import ConfigError

    with pytest.raises(ConfigError, match="SASRec setting 'device' 'cuda:3'.*Fix"):
        resolve_settings("sasrec", {"device": "cuda:3"})


def test_more_beams_than_the_catalog_has_items_is_refused(run_copy, tmp_path, capsys):
    before = snapshot(run_copy)
    assert_refused(*bearrec(capsys, "recommend", run_copy, "--num-beams", "5000", "--output", tmp_path / "p.jsonl"),
                   "--num-beams 5000", "24 distinct items of the catalog")
    assert_refused(*bearrec(capsys, "recommend", run_copy, "--search", "exact", "--k", "999", "--output",
                            tmp_path / "p.jsonl"), "--k", "999")
    assert_unchanged(before, snapshot(run_copy))


def test_a_predictions_file_outside_a_run_says_it_was_not_checked(run_copy, tmp_path, capsys):
    assert bearrec(capsys, "recommend", run_copy, "--num-beams", "3")[0] == 0
    loose = tmp_path / "elsewhere" / "predictions.jsonl"
    loose.parent.mkdir()
    rows = [json.loads(line) for line in (run_copy / "predictions.jsonl").read_text().splitlines()]
    rows[0]["target"] = rows[0]["recommendations"][0]["item_ids"][0]  # a forged hit
    loose.write_text("".join(json.dumps(r) + "\n" for r in rows))
    code, _, err = bearrec(capsys, "evaluate", loose)
    assert code == 0 and "not in a run directory, so its rows were not checked" in err


def test_overrides_after_an_option_are_read_as_overrides(tmp_path, capsys):
    """`--resume` or `--output` may come before the overrides: the ones after it are still applied (the misspelt key
    after --resume is named), and a stray token that is no key=value is still a usage error."""
    config = tmp_path / "c.yaml"
    config.write_text("model: tiny\n")
    assert_refused(*bearrec(capsys, "train", config, f"dataset={tmp_path}", "--resume", "objective.lamda=0.1"),
                   "objective.lamda")
    with pytest.raises(SystemExit):
        bearrec(capsys, "train", config, "--resume", "--bogus")
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------- experiments
@pytest.fixture
def tiny_yaml(tmp_path):
    """A tiny experiment's YAML (test_experiment's), on a small prepared dataset."""
    import yaml

    from run_fixtures import write_small_dataset
    from test_experiment import tiny_experiment

    write_small_dataset(tmp_path / "data")
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_experiment(tmp_path / "data")))
    return path


def test_an_experiments_misspelt_objective_key_is_named(tiny_yaml, tmp_path, capsys):
    before = snapshot(tmp_path)
    assert_refused(*bearrec(capsys, "experiment", tiny_yaml, "train.objective.lamda=0.1", "--output", tmp_path / "o"),
                   "objective.lamda", "Valid keys")
    assert_unchanged(before, snapshot(tmp_path))


def test_an_experiments_output_that_is_a_file_is_named(tiny_yaml, tmp_path, capsys):
    (tmp_path / "taken").write_text("x")
    before = snapshot(tmp_path)
    assert_refused(*bearrec(capsys, "experiment", tiny_yaml, "--output", tmp_path / "taken"), "taken", "is a file")
    assert_unchanged(before, snapshot(tmp_path))


def test_an_output_folder_of_another_experiment_is_refused_before_anything_is_written(tiny_yaml, tmp_path, capsys):
    out = tmp_path / "o"
    out.mkdir()
    (out / "experiment.json").write_text(json.dumps({"name": "office-tiny"}))
    (out / "results.md").write_text("their results")
    before = snapshot(tmp_path)
    assert_refused(*bearrec(capsys, "experiment", tiny_yaml, "--output", out), "another experiment", "office-tiny",
                   "--output")
    assert_unchanged(before, snapshot(tmp_path))


def test_repeated_keys_are_refused_not_resolved_by_keeping_the_last(tiny_yaml, tmp_path, capsys):
    assert_refused(*bearrec(capsys, "experiment", tiny_yaml, "seeds=[5]", "seeds=[0]", "--output", tmp_path / "o"),
                   "seeds=... is given 2 times")
    twice = tmp_path / "twice.yaml"
    twice.write_text(tiny_yaml.read_text().replace("methods:\n", "methods:\n  sft: {}\n", 1))
    assert_refused(*bearrec(capsys, "experiment", twice, "--output", tmp_path / "o"), "twice.yaml", "'sft' is given twice")
    assert not (tmp_path / "o").exists()


def test_a_lock_naming_a_live_process_says_how_to_clear_it_and_a_reused_id_is_taken_over(tiny_yaml, tmp_path, capsys):
    from bearrec.experiment.runner import _exclusive

    out = tmp_path / "o"
    out.mkdir()
    parent = os.getppid()  # alive, and not an experiment
    (out / "experiment.lock").write_text(str(parent))  # a lock as written before start times were recorded
    with pytest.raises(ConfigError, match=rf"process {parent}.*Fix: .*delete .*experiment\.lock"):
        with _exclusive(out):
            pass
    (out / "experiment.lock").write_text(f"{parent} 1")  # the id, with another process's start time
    with _exclusive(out):
        assert (out / "experiment.lock").read_text().split()[0] == str(os.getpid())
    assert "now another program" in capsys.readouterr().err and not (out / "experiment.lock").exists()
