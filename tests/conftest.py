"""Fixtures shared across test modules (the helpers behind them are in run_fixtures.py)."""
from __future__ import annotations

from pathlib import Path

import pytest

from run_fixtures import train_small_run, write_small_dataset


@pytest.fixture(scope="session")
def small_run(tmp_path_factory) -> Path:
    """A trained run (its dataset beside it in ../data) that no test may change: copy it first (copy_run)."""
    root = tmp_path_factory.mktemp("small_run")
    write_small_dataset(root / "data")
    return train_small_run(root / "data", root / "run")


@pytest.fixture(autouse=True)
def _no_busy_machine_note(monkeypatch):
    """The note a command prints when the machine is busy depends on what else runs (other tests, in parallel):
    tests read the commands' own output. tests/test_reproducible.py tests the note itself."""
    monkeypatch.setattr("bearrec.cli.busy_note", lambda: None)
