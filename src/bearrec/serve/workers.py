"""Several worker processes on one machine (`--workers N`): each loads the run itself, on its own device.

uvicorn starts the workers and restarts any that dies; each calls `app_from_env`, which reads the options the parent
left in the environment and claims a free worker slot: slot i runs on the i-th device of `--device` (in turn), so
`--device cuda:0,cuda:1 --workers 2` gives one worker per GPU. A slot is an exclusive lock on a file, held for the
worker's life, so a restarted worker takes the slot (and device) of the one that died.
"""
from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO, Any

from .config import ServeConfig

SLOTS_ENV = "BEARREC_SERVE_SLOTS"  # the folder of the slot lock files, made by the parent
_held: list[IO[Any]] = []  # the open lock file of this process's slot (closing it frees the slot)


def claim_slot(folder: Path, count: int) -> int:
    """The first of `count` slots no live process holds; this process holds it until it exits."""
    for slot in range(count):
        f = open(folder / f"slot-{slot}.lock", "a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            continue
        _held.append(f)
        return slot
    raise RuntimeError(f"all {count} worker slots are held")


def threads_per_worker(workers: int) -> int:
    """CPU threads each worker's torch may use, so that N workers do not fight over the cores."""
    return max(1, (os.cpu_count() or 1) // workers)


def app_from_env() -> Any:
    """The app of one worker (uvicorn's factory): its slot, device and CPU threads, then the run loaded."""
    import torch

    from .app import create_app  # FastAPI and torch: in the worker process, not in the parent that spawns it
    from .engine import Engine  # the same

    config = ServeConfig.from_env()
    slot = claim_slot(Path(os.environ[SLOTS_ENV]), config.workers)
    devices = config.devices()
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(threads_per_worker(config.workers))
    return create_app(config, Engine.load(config, device=devices[slot % len(devices)]))
