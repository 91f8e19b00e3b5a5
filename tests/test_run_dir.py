"""RunDir: the run directory's file names, what a run records about its dataset, trie and model, and the checks
that a run notices when any of them changed, moved or was damaged."""
from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from bearrec.errors import DataError
from bearrec.files import file_digest
from bearrec.run_dir import RunDir
from run_fixtures import copy_run


def test_artefact_names_never_let_a_partial_run_stand_in_for_the_full_one(tmp_path):
    run = RunDir(tmp_path)
    assert run.artefact("predictions") == tmp_path / "predictions.jsonl"
    assert run.artefact("metrics", "test") == tmp_path / "metrics.json"
    assert run.artefact("metrics", "valid") == tmp_path / "metrics-valid.json"
    assert run.artefact("predictions", "test", 50) == tmp_path / "predictions-first50.jsonl"
    assert run.artefact("diagnosis", "valid", 5) == tmp_path / "diagnosis-valid-first5.json"
    with pytest.raises(ValueError):
        run.artefact("weights")


def test_best_variant_prefers_the_whole_split_then_the_most_rows(tmp_path):
    run = RunDir(tmp_path)
    assert run.best("diagnosis") is None
    for name in ("diagnosis-first5.json", "diagnosis-first50.json", "diagnosis-valid.json", "diagnosis-first7.json"):
        (tmp_path / name).write_text("{}")
    assert run.best("diagnosis") == (50, tmp_path / "diagnosis-first50.json")
    assert [n for n, _ in run.variants("diagnosis")] == [50, 7, 5]
    assert run.best("diagnosis", "valid") == (None, tmp_path / "diagnosis-valid.json")
    (tmp_path / "diagnosis.json").write_text("{}")
    assert run.best("diagnosis") == (None, tmp_path / "diagnosis.json")


def test_a_run_records_its_dataset_trie_and_model_files(small_run):
    run = RunDir(small_run)
    config = run.config()
    data = small_run.parent / "data"
    assert Path(config["dataset_path"]) == data.resolve()
    assert (small_run / config["dataset_run_path"]).resolve() == data.resolve()
    assert config["dataset_fingerprint"] == json.loads((data / "stats.json").read_text())["fingerprint"]
    assert config["files"]["trie.pt"] == file_digest(run.trie_path)
    manifest = json.loads((run.model_dir / "bearrec_model.json").read_text())
    weights = [n for n in manifest["files"] if n.endswith(".safetensors")]
    assert weights and all(manifest["files"][n] == file_digest(run.model_dir / n) for n in manifest["files"])


def test_a_run_resolves_its_dataset_from_any_working_folder_and_after_moving(small_run, tmp_path, monkeypatch):
    moved = copy_run(small_run, tmp_path / "project")
    config = json.loads((moved / "config.json").read_text())
    config["dataset_path"] = str(tmp_path / "gone")  # as if the original project folder no longer existed
    config["dataset"] = "data"  # relative to the folder training ran from
    (moved / "config.json").write_text(json.dumps(config))
    monkeypatch.chdir(tmp_path)  # neither the run's folder nor the one training ran from
    assert RunDir(moved).dataset_location().resolve() == (tmp_path / "project" / "data").resolve()
    (tmp_path / "project" / "data").rename(tmp_path / "elsewhere")
    with pytest.raises(DataError, match=r"config\.json: the dataset this run was trained on is not found.*Fix:"):
        RunDir(moved).dataset_location()


def test_a_changed_dataset_is_refused(small_run, tmp_path):
    moved = copy_run(small_run, tmp_path)
    items = tmp_path / "data" / "items.jsonl"
    items.write_text(items.read_text().replace("red", "green", 1))
    with pytest.raises(DataError, match="changed after this run was trained on it"):
        RunDir(moved).load_dataset()
    RunDir(moved).load_dataset(on_change="warn")  # for --histories: a warning, not an error


def test_files_are_written_with_the_users_umask(small_run, tmp_path):
    from bearrec.files import write_json

    old = os.umask(0o027)
    try:
        write_json(tmp_path / "a.json", {"x": 1})
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o640
    # the run fixture was written under the default umask of this process
    expected = 0o666 & ~old
    for name in ("config.json", "trie.pt", "train_summary.json"):
        assert stat.S_IMODE((small_run / name).stat().st_mode) == expected, name


def test_strict_json_has_no_nan(tmp_path):
    from bearrec.files import write_json

    write_json(tmp_path / "x.json", {"a": float("nan"), "b": [float("inf"), 1.5]})
    assert json.loads((tmp_path / "x.json").read_text(), parse_constant=lambda c: pytest.fail(c)) == \
        {"a": None, "b": [None, 1.5]}


def test_resuming_a_finished_run_keeps_the_whole_runs_summary(small_run, tmp_path):
    from run_fixtures import train_small_run

    moved = copy_run(small_run, tmp_path)
    before = json.loads((moved / "train_summary.json").read_text())
    assert before["train_loss"] > 0 and len(before["epoch_seconds"]) == 1 and before["global_step"] == 2
    train_small_run(tmp_path / "data", moved, resume=True)  # nothing left to train
    after = json.loads((moved / "train_summary.json").read_text())
    assert after["train_loss"] == pytest.approx(before["train_loss"])
    assert after["epoch_seconds"] == before["epoch_seconds"] and after["global_step"] == 2
    assert after["train_seconds"] >= before["train_seconds"]


def test_an_edited_setting_in_config_json_is_refused_but_paths_may_be_fixed(small_run, tmp_path):
    moved = copy_run(small_run, tmp_path)  # copy_run rewrites the dataset paths: allowed
    assert RunDir(moved).config()["max_history"] == 3
    config = json.loads((moved / "config.json").read_text())
    config["score_mode"] = "full" if config["score_mode"] == "masked" else "masked"
    (moved / "config.json").write_text(json.dumps(config))
    with pytest.raises(DataError, match=r"config\.json: was changed after training.*Fix: restore the file"):
        RunDir(moved).config()


def test_exact_search_files_have_their_own_names(tmp_path):
    run = RunDir(tmp_path)
    assert run.artefact("predictions", search="exact") == tmp_path / "predictions-exact.jsonl"
    assert run.artefact("metrics", "valid", 20, search="exact") == tmp_path / "metrics-exact-valid-first20.json"
    (tmp_path / "metrics-exact-first20.json").write_text("{}")
    (tmp_path / "metrics.json").write_text("{}")
    assert run.best("metrics", search="exact") == (20, tmp_path / "metrics-exact-first20.json")
    assert run.best("metrics") == (None, tmp_path / "metrics.json")


def test_a_run_written_when_num_beams_was_called_beam_size_still_reads(small_run, tmp_path):
    from bearrec.run_dir import config_checksum
    from bearrec.train.config import load_config

    moved = copy_run(small_run, tmp_path)
    record = json.loads((moved / "config.json").read_text())
    objective = record["objective_config"]
    objective["beam_size"] = objective.pop("num_beams")
    record["beam_size"] = record.pop("num_beams")
    record["config_sha256"] = config_checksum(record)  # as that release wrote it
    (moved / "config.json").write_text(json.dumps(record))
    assert RunDir(moved).config()["objective_config"]["num_beams"] == 5
    assert "beam_size" not in RunDir(moved).config()["objective_config"] and RunDir(moved).config()["num_beams"] == 5
    from run_fixtures import train_small_run

    train_small_run(tmp_path / "data", moved, resume=True)  # resumes: the settings are the same ones
    with pytest.raises(Exception, match=r"objective\.beam_size is now called objective\.num_beams\. Fix: rename"):
        load_config(None, [f"dataset={tmp_path}", "objective.beam_size=5"])
