"""Fixtures shared across test modules (the helpers behind them are in run_fixtures.py), and how the suite shares two
workers under pytest-xdist (`pytest -n 2`, as CI runs it; without -n it runs in one process as before)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from run_fixtures import train_small_run, write_small_dataset

if os.environ.get("PYTEST_XDIST_WORKER"):
    # One thread per worker, and in the processes its tests start: two workers with two threads each on two cores
    # spend their time waiting for each other. Set before torch is imported (torch reads it once).
    os.environ.setdefault("OMP_NUM_THREADS", "1")

# Modules whose tests run on one worker (per group): they share a costly module fixture (a second trained run, the
# reference outputs, a built model), or, for "smollm2", the copy of SmolLM2 that bearrec converts from its GGUF
# once per process (~30 s). Every other test goes to whichever worker is free.
TOGETHER = {"test_run_corruption.py": "run_corruption", "test_error_matrix.py": "error_matrix",
            "test_recommend.py": "recommend", "test_models.py": "smollm2", "test_prompts.py": "smollm2",
            "test_pretrained.py": "smollm2"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The tests marked slow or multiproc first (else in their order), so that the longest ones start while there
    is still other work for the second worker, instead of leaving it idle at the end."""
    items.sort(key=lambda item: not any(item.get_closest_marker(name) for name in ("slow", "multiproc")))


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object | None:
    """For `-n N` (--dist load): each TOGETHER group is one unit of work, every other test a unit of its own. (The
    xdist_group mark would say the same, but pytest-xdist 3.8 does not see it under pytest 9.)"""
    if config.getoption("dist") != "load":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class Together(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return TOGETHER.get(nodeid.split("::", 1)[0].rsplit("/", 1)[-1], nodeid)

    return Together(config, log)


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
