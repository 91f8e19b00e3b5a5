"""One stage of an experiment (prepare, index, tune, select, then per seed each phase for every method, then the
reports): what it does, whether an earlier invocation did it, and what it covers."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable


@dataclass
class Stage:
    """One step of an experiment: `run` does it, `done` tells whether an earlier invocation already did."""

    kind: str  # one of config.KINDS
    label: str
    run: Callable[[], Any]
    done: Callable[[], bool]
    # what it works on (None: every dataset, method or seed): a stage that fails stops the later stages it covers
    dataset: str | None = None
    method: str | None = None
    seed: int | None = None

    def covers(self, later: Stage) -> bool:
        """Whether `later` works on what this stage makes (its dataset, and its method and seed where it has one)."""
        return self.dataset == later.dataset and self.method in (None, later.method) and self.seed in (None, later.seed)
