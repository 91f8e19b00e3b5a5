"""What a run's numbers depend on is recorded, and deterministic mode makes a rerun byte-identical."""
from __future__ import annotations

import json

import pytest
import torch

from bearrec.recommend import Recommender
from run_fixtures import train_small_run, write_small_dataset


@pytest.fixture
def restore_torch():
    """Deterministic mode sets torch's global threads and flags: give them back to the tests after this one."""
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic)


def test_every_run_records_its_environment(small_run):
    env = json.loads((small_run / "config.json").read_text())["environment"]
    assert {"threads", "torch", "transformers", "device", "deterministic"} <= set(env)
    assert env["torch"] == torch.__version__ and env["device"] == "cpu" and env["threads"] >= 1


def test_a_deterministic_rerun_gives_byte_identical_models_and_predictions(tmp_path, restore_torch):
    write_small_dataset(tmp_path / "data")
    outputs = []
    for name in ("a", "b"):
        torch.set_num_threads(2)  # whatever the caller had: deterministic mode fixes it
        run = train_small_run(tmp_path / "data", tmp_path / name, "deterministic=true")
        assert json.loads((run / "config.json").read_text())["environment"]["threads"] == 1
        Recommender.from_run(run, device="cpu").recommend_split("test", run / "predictions.jsonl", k=5, progress=False)
        outputs.append(((run / "model" / "model.safetensors").read_bytes(), (run / "predictions.jsonl").read_bytes()))
    assert outputs[0] == outputs[1]


def test_the_thread_policy_lets_waiting_threads_sleep_unless_told_otherwise(monkeypatch):
    from bearrec import machine

    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    machine.set_thread_policy()
    assert machine.environment()["omp_wait_policy"] == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    machine.set_thread_policy()
    assert machine.environment()["omp_wait_policy"] == "ACTIVE"  # the user's choice stands


def test_a_job_started_on_a_busy_machine_says_so(monkeypatch, small_run, tmp_path, capsys):
    import os

    from bearrec import cli, machine
    from bearrec.cli import main

    monkeypatch.setattr(cli, "busy_note", machine.busy_note)  # conftest silences it for the other tests
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.setattr(os, "getloadavg", lambda: (float(os.cpu_count() or 1) + 1, 0.0, 0.0))
    assert main(["recommend", str(small_run), "--num-beams", "3", "--output", str(tmp_path / "p.jsonl")]) == 0
    assert "this machine is busy" in capsys.readouterr().err and os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.delenv("OMP_WAIT_POLICY")
    monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    assert main(["recommend", str(small_run), "--num-beams", "3", "--output", str(tmp_path / "p.jsonl")]) == 0
    assert "busy" not in capsys.readouterr().err and "OMP_WAIT_POLICY" not in os.environ  # alone: spinning is faster
