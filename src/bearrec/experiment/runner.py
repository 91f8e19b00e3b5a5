"""Running an experiment: every stage not done yet, in the plan's order, with a line of progress per stage, under
a lock that keeps a second experiment out of the same output folder; OUTPUT/stages.json records what became of each.

By default each stage runs in this process and the first error stops the experiment. A config whose `schedule` sets
jobs > 1, a budget or limits runs each stage in a process of its own instead (bearrec.experiment.isolated)."""
from __future__ import annotations

import contextvars
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

from ..errors import BearrecError, ConfigError
from ..files import read_json_file, write_json
from .config import ExperimentConfig
from .isolated import run_isolated
from .stage import Stage
from .progress import Progress, Records
from .work import Experiment

# The stage being run (kind, label): lets a caller (or a test) tell tuning from the rest while it runs.
CURRENT_STAGE: contextvars.ContextVar[tuple[str, str] | None] = contextvars.ContextVar("stage", default=None)


def run_experiment(config: ExperimentConfig, output: str | Path | None = None, *,
                   print_fn: Callable[[str], None] = print) -> Path:
    """Run every stage not yet done (see the module docstring) and return OUTPUT/results.md."""
    experiment = Experiment(config, output)
    check_output(experiment)
    experiment.out.mkdir(parents=True, exist_ok=True)
    with _exclusive(experiment.out):
        return _run(experiment, print_fn)


def check_output(experiment: Experiment) -> None:
    """ConfigError, before anything is written, when OUTPUT is a file or holds another experiment (another name in
    its experiment.json), whose results this one would overwrite."""
    out = experiment.out
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--output {out} is a file. Fix: give a folder (it is created when missing).")
    recorded = out / "experiment.json"
    if recorded.is_file():
        name = read_json_file(recorded, dict, f"delete {recorded}, or choose another --output").get("name")
        if name != experiment.config.name:
            raise ConfigError(f"{out} holds the results of another experiment ({name!r}, in {recorded.name}); this "
                              f"one ({experiment.config.name!r}) would replace its results.md and experiment.json. Fix: "
                              "choose another --output (or `output:` in the config).")


LOCK_FIX = "if no bearrec experiment runs on this folder, delete {path}"


class _exclusive:
    """OUTPUT/experiment.lock, holding this process's id and start time while it runs: a second experiment on the
    same folder (whose stages would write the same files) is refused; a lock left by a process that died, or whose
    id now belongs to another process, is taken over with a note."""

    def __init__(self, out: Path):
        self.path = out / "experiment.lock"

    def __enter__(self) -> None:
        for _ in range(2):  # created atomically: of two experiments started together, one gets the lock
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._check_holder()
                self.path.unlink(missing_ok=True)  # its holder is gone: taken over
                continue
            with os.fdopen(fd, "w") as f:
                f.write(f"{os.getpid()} {_start_time(os.getpid())}")
            return
        raise ConfigError(f"{self.path} was taken again while this experiment took it over. Fix: "
                          + LOCK_FIX.format(path=self.path) + ", then run it again.")

    def _check_holder(self) -> None:
        """ConfigError when the lock's process still runs an experiment; a note when its id now names another."""
        text = self.path.read_text().strip() if self.path.is_file() else ""
        pid, _, started = text.partition(" ")
        pid = int(pid) if pid.isdigit() else None
        if pid is not None and pid != os.getpid() and _alive(pid):
            if started and started != _start_time(pid):
                print(f"bearrec: note: {self.path} names process {pid}, which is now another program (the "
                      "experiment that held it has ended): taken over.", file=sys.stderr)
            else:
                raise ConfigError(f"another bearrec experiment (process {pid}) is running in {self.path.parent}. "
                                  f"Fix: wait for it to finish, or stop it (kill {pid}); "
                                  + LOCK_FIX.format(path=self.path) + ".")

    def __exit__(self, *exc: Any) -> None:
        self.path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def _start_time(pid: int) -> str:
    """When process `pid` started (clock ticks since boot, /proc's field 22), so a reused id is told apart; "" where
    /proc does not say."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[-1].split()[19]


def _run(experiment: Experiment, print_fn: Callable[[str], None]) -> Path:
    """Every stage of the plan that is not done yet, with the progress lines; OUTPUT/results.md."""
    config = experiment.config
    experiment.check_runs()
    write_json(experiment.out / "experiment.json", config.to_json())
    plan = experiment.stages()
    progress = Progress(len(plan), print_fn)
    records = Records(experiment.out / "stages.json")
    if not config.schedule.isolated:
        _run_here(plan, progress, records, print_fn)
    else:
        unfinished = run_isolated(experiment, plan, progress, records, print_fn)
        if unfinished:
            raise BearrecError(
                f"{len(unfinished)} of {len(plan)} stages did not finish: " + "; ".join(
                    f"{r['label']} ({r['status']}{': ' + r['note'] if r['note'] else ''})" for r in unfinished)
                + f". Fix: read their logs (in {experiment.out / 'logs'}, listed in {records.path}), then run the "
                "experiment again: it redoes only the stages not finished.")
    results = experiment.out / "results.md"
    print_fn(results.read_text(encoding="utf-8"))
    print_fn(f"experiment {config.name} finished in {(time.perf_counter() - progress.started) / 60:.1f} min: "
             f"{results}")
    return results


def _run_here(plan: list[Stage], progress: Progress, records: Records, print_fn: Callable[[str], None]) -> None:
    """The stages not done yet, one after the other in this process; the first error stops them."""
    for index, stage in enumerate(plan, start=1):
        if stage.done():
            records.add(index, stage, "done")
            print_fn(f"[stage {index}/{len(plan)}] {stage.label}: done earlier, skipped")
            continue
        print_fn(progress.line(index, stage, plan[index:]))
        token = CURRENT_STAGE.set((stage.kind, stage.label))
        start, status = time.perf_counter(), "failed"
        try:
            stage.run()
            status = "ok"
        finally:
            CURRENT_STAGE.reset(token)
            records.add(index, stage, status, time.perf_counter() - start)
        progress.record(stage, time.perf_counter() - start)
