"""A checkpoint left half-written by a kill during its save never blocks a resume: it is named and set aside, and
training resumes from the checkpoint before it."""
from __future__ import annotations

import json
import shutil

import pytest

from bearrec.train.checkpoints import CHECKPOINT, checkpoint_problem, last_complete_checkpoint
from run_fixtures import copy_run, train_small_run


def _checkpoints(run):
    return sorted((p for p in (run / "checkpoints").iterdir() if CHECKPOINT.match(p.name)),
                  key=lambda p: int(p.name.split("-")[1]))


@pytest.mark.parametrize("damage", ["no trainer_state.json", "truncated optimizer.pt", "truncated weights"])
def test_a_half_written_last_checkpoint_is_set_aside_and_the_run_resumes(small_run, tmp_path, capsys, damage):
    run = copy_run(small_run, tmp_path)
    first, last = _checkpoints(run)[0], _checkpoints(run)[-1]
    assert first != last and checkpoint_problem(last) is None
    if damage == "no trainer_state.json":
        (last / "trainer_state.json").unlink()
    else:
        victim = last / ("optimizer.pt" if damage == "truncated optimizer.pt" else "model.safetensors")
        victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    assert checkpoint_problem(last) is not None
    shutil.rmtree(run / "model")  # as if the job died before the end
    config = json.loads((run / "config.json").read_text())
    resumed = train_small_run(config["dataset"], run, resume=True)
    err = capsys.readouterr().err
    assert f"{last.name} was not completely saved" in err and "Fix: delete that folder" in err
    assert (run / "incomplete-checkpoints" / last.name).is_dir()
    summary = json.loads((resumed / "train_summary.json").read_text())
    assert summary["resumed_from"] == str(first)  # the checkpoint before the damaged one
    assert (resumed / "model").is_dir() and checkpoint_problem(_checkpoints(run)[-1]) is None


def test_only_incomplete_checkpoints_resume_from_the_start(tmp_path, capsys):
    folder = tmp_path / "checkpoints" / "checkpoint-3"
    folder.mkdir(parents=True)
    (folder / "optimizer.pt").write_bytes(b"PK\x03\x04 cut")
    assert last_complete_checkpoint(tmp_path / "checkpoints") is None
    assert "checkpoint-3 was not completely saved (trainer_state.json is missing" in capsys.readouterr().err
    assert not folder.exists() and (tmp_path / "incomplete-checkpoints" / "checkpoint-3").is_dir()


def test_loading_the_best_checkpoint_of_a_tied_model_warns_of_no_missing_keys(tmp_path, capfd):
    """The tiny model ties its output layer to its input embeddings, so lm_head.weight is saved once: loading the best
    checkpoint at the end is complete, and the Trainer's "missing keys" warning (printed before) is not shown."""
    from run_fixtures import write_small_dataset

    write_small_dataset(tmp_path / "data")
    capfd.readouterr()
    run = train_small_run(tmp_path / "data", tmp_path / "run")
    err = capfd.readouterr().err
    assert (run / "model").is_dir() and "missing keys" not in err


def test_the_missing_keys_filter_keeps_a_warning_about_weights_that_are_not_tied():
    import logging

    import torch

    from bearrec.train.trainer import TiedWeightsNote

    model = torch.nn.Module()
    model.embed = torch.nn.Embedding(4, 2)
    model.head = torch.nn.Linear(2, 4, bias=False)
    model.head.weight = model.embed.weight
    model.other = torch.nn.Linear(2, 2)
    note = TiedWeightsNote(model)
    record = lambda keys: logging.LogRecord("t", 30, "", 0, f"missing keys in the checkpoint: {keys}.", (), None)  # noqa: E731
    assert not note.filter(record(["head.weight"]))
    assert note.filter(record(["head.weight", "other.weight"]))


def test_a_checkpoint_that_vanishes_while_it_is_read_counts_as_incomplete(tmp_path, monkeypatch):
    """Under torchrun every rank reads the checkpoints while rank 0 moves an incomplete one aside: a folder gone
    mid-read is skipped like an incomplete one (the same choice on every rank), not a crash; only rank 0 says so."""
    import bearrec.train.checkpoints as ck

    folder = tmp_path / "checkpoint-2"
    folder.mkdir()
    monkeypatch.setattr(ck, "_problem", lambda f: (_ for _ in ()).throw(FileNotFoundError(f)))
    assert "could not be read (FileNotFoundError)" in checkpoint_problem(folder)
