"""What a running experiment shows and keeps: one progress line per stage with the time left, and OUTPUT/stages.json."""
from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any, Callable

from ..files import write_json
from .stage import Stage


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 60 else f"{seconds / 60:.1f} min"


class Progress:
    """One line per stage: stage i of N, what runs, time spent, and an estimate of the time left from the stages of
    the same kind run so far (the stages' own progress bars stay)."""

    def __init__(self, total: int, print_fn: Callable[[str], None] = print):
        self.total, self.print = total, print_fn
        self.started = time.perf_counter()
        self.seconds: dict[str, list[float]] = {}

    def estimate(self, remaining: list[Stage]) -> tuple[float, list[str]]:
        """Seconds the remaining stages may take (per kind, the median of that kind's stages run so far) and the
        kinds not timed yet, whose time the estimate leaves out."""
        left = sum(statistics.median(self.seconds[s.kind]) for s in remaining if s.kind in self.seconds)
        return left, sorted({s.kind for s in remaining if s.kind not in self.seconds})

    def line(self, index: int, stage: Stage, remaining: list[Stage]) -> str:
        spent = (time.perf_counter() - self.started) / 60
        left, untimed = self.estimate([stage, *remaining])
        eta = f"about {_minutes(left)} left" if not untimed else (
            f"over {_minutes(left)} left ({', '.join(untimed)} not timed yet)" if left >= 1 else "time left not known yet")
        return f"[stage {index}/{self.total} | {spent:.1f} min spent | {eta}] {stage.label}"

    def record(self, stage: Stage, seconds: float) -> None:
        self.seconds.setdefault(stage.kind, []).append(seconds)


class Records:
    """OUTPUT/stages.json: what became of each stage in the latest invocation, in the plan's order (status running,
    ok, done (earlier), failed, timeout, skipped or stopped; seconds; the limit; a note; its log), rewritten at each
    change."""

    def __init__(self, path: Path):
        self.path = path
        self.rows: dict[int, dict[str, Any]] = {}

    def add(self, index: int, stage: Stage, status: str, seconds: float = 0.0, *, limit: float | None = None,
            rc: int | None = None, note: str = "", log: Path | None = None) -> None:
        self.rows[index] = {"index": index, "kind": stage.kind, "label": stage.label, "dataset": stage.dataset,
                            "method": stage.method, "seed": stage.seed, "status": status, "seconds": round(seconds, 1),
                            "limit_s": None if limit is None else round(limit), "rc": rc, "note": note,
                            "log": None if log is None else str(log)}
        write_json(self.path, [self.rows[i] for i in sorted(self.rows)])
