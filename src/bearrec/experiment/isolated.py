"""Running each stage of an experiment in a process of its own, as the config's `schedule` asks: `jobs` stages of
one phase at once (every method's training, then every beam search, ...), each stopped at its time limit (its kind's
`limits_s`, and what is left of `budget_s`, less `reserve_s` for the reports).

A stage that fails, times out or gets no time is recorded, the later stages it covers (its dataset's, or its run's)
are skipped, and the others go on. The `optional` kinds run if time allows: skipped when less than `optional_min_s`
is left, and a timeout of one is no failure. Each stage's output goes to OUTPUT/logs/."""
from __future__ import annotations

import os
import pickle
import re
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from ..errors import BearrecError
from .config import FINAL_PHASES
from .stage import Stage
from .progress import Progress, Records
from .work import Experiment

MIN_STAGE_S = 10  # a stage given less time is skipped: starting its process alone takes seconds
PARALLEL = {"tune", *FINAL_PHASES}  # kinds whose consecutive stages never read each other's output
STOP_GRACE_S = 3  # after SIGTERM, the seconds a stage's processes get before SIGKILL


@dataclass
class _Child:
    index: int
    stage: Stage
    process: subprocess.Popen
    started: float
    limit: float | None
    log: Path


def run_isolated(experiment: Experiment, plan: list[Stage], progress: Progress, records: Records,
                 print_fn: Callable[[str], None]) -> list[dict[str, Any]]:
    """Run the stages not done yet; the records of those that did not finish (an optional kind's timeout or lack of
    time aside)."""
    schedule = experiment.config.schedule
    run = _Run(experiment, plan, progress, records, print_fn)
    with run.stopping_children():
        for wave in _waves(plan):  # a wave's stages run `jobs` at a time; the next wave waits for all of them
            for index, stage in wave:
                while len(run.running) >= schedule.jobs:
                    run.wait_one()
                run.start_or_skip(index, stage)
            while run.running:
                run.wait_one()
    return [r for r in records.rows.values() if r["status"] not in ("ok", "done")
            and not (r["kind"] in schedule.optional and r["status"] in ("timeout", "skipped"))]


def _waves(plan: list[Stage]) -> Iterator[list[tuple[int, Stage]]]:
    """The plan cut into runs of consecutive stages of one parallel kind (every other stage alone)."""
    wave: list[tuple[int, Stage]] = []
    for index, stage in enumerate(plan, start=1):
        if wave and not (stage.kind in PARALLEL and stage.kind == wave[-1][1].kind):
            yield wave
            wave = []
        wave.append((index, stage))
    if wave:
        yield wave


class _Run:
    """The state of one invocation: the stages running, those that failed (they stop the stages they cover), the
    budget's start."""

    def __init__(self, experiment: Experiment, plan: list[Stage], progress: Progress, records: Records,
                 print_fn: Callable[[str], None]):
        self.experiment, self.plan, self.progress, self.records, self.print = (experiment, plan, progress, records,
                                                                               print_fn)
        self.schedule = experiment.config.schedule
        self.started = time.monotonic()
        self.running: list[_Child] = []
        self.failed: list[Stage] = []

    def say(self, index: int, stage: Stage, text: str) -> None:
        self.print(f"[stage {index}/{len(self.plan)}] {stage.label}: {text}")

    def skip(self, index: int, stage: Stage, note: str, *, failure: bool) -> None:
        self.records.add(index, stage, "skipped", note=note)
        self.say(index, stage, f"SKIPPED ({note})")
        if failure:
            self.failed.append(stage)

    def start_or_skip(self, index: int, stage: Stage) -> None:
        """Start the stage's process, unless it is done, follows a stage that failed, or has too little time."""
        blocker = next((f for f in self.failed if f.covers(stage)), None)
        if blocker is not None:
            self.skip(index, stage, f"after {blocker.label}, which did not finish", failure=False)
            return
        try:
            if stage.done():
                self.records.add(index, stage, "done")
                self.say(index, stage, "done earlier, skipped")
                return
        except BearrecError as e:  # e.g. a run directory made with another config
            self.records.add(index, stage, "failed", note=str(e))
            self.say(index, stage, f"FAILED ({e})")
            self.failed.append(stage)
            return
        optional = stage.kind in self.schedule.optional
        limit = self.schedule.limits_s.get(stage.kind)
        if self.schedule.budget_s is not None:
            left = self.schedule.budget_s - (time.monotonic() - self.started)
            left -= 0 if stage.kind == "report" else self.schedule.reserve_s
            if optional and left < self.schedule.optional_min_s:
                self.skip(index, stage, f"less than {self.schedule.optional_min_s:g} s left", failure=False)
                return
            limit = left if limit is None else min(limit, left)
        if limit is not None and limit < MIN_STAGE_S:
            self.skip(index, stage, "no time left", failure=not optional)
            return
        self.print(self.progress.line(index, stage, self.plan[index:]))
        self.running.append(self.start(index, stage, limit))
        self.records.add(index, stage, "running", limit=limit, log=self.running[-1].log)

    def start(self, index: int, stage: Stage, limit: float | None) -> _Child:
        """`python -m bearrec.experiment.child INDEX LABEL` in a session of its own, the config on its stdin."""
        import bearrec

        slug = re.sub(r"[^\w.+-]+", "-", stage.label)
        log = self.experiment.out / "logs" / f"{index:03d}-{slug}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        path = [str(Path(bearrec.__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in path if p)}  # this bearrec, not another
        with open(log, "wb") as out:
            process = subprocess.Popen([sys.executable, "-m", "bearrec.experiment.child", str(index), stage.label],
                                       stdin=subprocess.PIPE, stdout=out, stderr=subprocess.STDOUT, env=env,
                                       start_new_session=True)
        try:
            process.stdin.write(pickle.dumps((self.experiment.config, str(self.experiment.out))))
            process.stdin.close()
        except BrokenPipeError:  # it died at once: its log says why
            pass
        return _Child(index, stage, process, time.monotonic(), limit, log)

    def wait_one(self) -> None:
        """Wait until a running stage ends, or is stopped at its limit, and record it."""
        while True:
            for child in self.running:
                seconds = time.monotonic() - child.started
                timed_out = child.limit is not None and seconds > child.limit and child.process.poll() is None
                if timed_out:
                    _stop(child.process)
                if child.process.poll() is not None:
                    self.running.remove(child)
                    self.finish(child, timed_out)
                    return
            time.sleep(0.2)

    def finish(self, child: _Child, timed_out: bool) -> None:
        stage, rc = child.stage, child.process.returncode
        seconds = time.monotonic() - child.started
        status = "ok" if rc == 0 and not timed_out else "timeout" if timed_out else "failed"
        note = (f"hit its {child.limit:.3g} s limit" if timed_out else "" if status == "ok" else _error_line(child.log))
        self.records.add(child.index, stage, status, seconds, limit=child.limit, rc=rc, note=note, log=child.log)
        self.say(child.index, stage, f"{status.upper()} in {seconds:.1f} s" + (f" ({note})" if note else ""))
        if status == "ok":
            self.progress.record(stage, seconds)
            return
        lines = child.log.read_text(encoding="utf-8", errors="replace").splitlines()[-25:]
        self.print("\n".join(f"    | {line}" for line in lines))
        if stage.kind not in self.schedule.optional:
            self.failed.append(stage)

    @contextmanager
    def stopping_children(self) -> Iterator[None]:
        """On any way out (an error, Ctrl-C, SIGTERM), stop the stages still running and record them as stopped."""
        handler = None
        if threading.current_thread() is threading.main_thread():
            handler = signal.signal(signal.SIGTERM, _exit_on_sigterm)
        try:
            yield
        finally:
            for child in self.running:  # all at once first, so that stopping them takes one grace period, not several
                _signal(child.process, signal.SIGTERM)
            for child in self.running:
                _stop(child.process)
                self.records.add(child.index, child.stage, "stopped", time.monotonic() - child.started,
                                 limit=child.limit, rc=child.process.returncode, log=child.log)
            self.running.clear()
            if handler is not None:
                signal.signal(signal.SIGTERM, handler)


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def _signal(process: subprocess.Popen, sig: int) -> bool:
    """Send `sig` to the stage's whole session (its data loader workers too); False when it is gone."""
    try:
        os.killpg(process.pid, sig)
        return True
    except ProcessLookupError:
        return False


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM to the stage's session, SIGKILL if it is still there STOP_GRACE_S later."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if not _signal(process, sig):
            break
        try:
            process.wait(timeout=STOP_GRACE_S)
            break
        except subprocess.TimeoutExpired:
            continue
    process.wait()


def _error_line(log: Path) -> str:
    """The last line of a stage's log that names an error (300 characters at most)."""
    lines = [line for line in log.read_text(encoding="utf-8", errors="replace").splitlines()
             if "error" in line.lower()]
    return lines[-1].strip()[:300] if lines else "see its log"
