"""The machine a job runs on: the devices a user names (checked before any work, so that a misspelt or absent device
is a ConfigError naming the option, not torch's assertion after minutes of loading), and what a run's numbers depend
on beyond its config (threads, library versions, device, determinism), recorded with every run."""
from __future__ import annotations

import importlib.metadata
import os
import platform
from typing import TYPE_CHECKING, Any

from .errors import ConfigError

if TYPE_CHECKING:
    import torch

# OpenMP threads that wait for a core spin by default: best for a job alone (sleeping costs the tiny model 1.56x a
# step), ruinous beside another job (8.6x a step for two spinning jobs on 2 cores, 1.45x for two sleeping ones;
# bench/bench_threads.py, docs/benchmarks.md). So a job that starts on a busy machine lets its threads sleep.
WAIT_POLICY = "PASSIVE"


def set_thread_policy() -> None:
    """Before torch loads: OpenMP's waiting threads sleep (OMP_WAIT_POLICY=PASSIVE) unless the user set a policy."""
    os.environ.setdefault("OMP_WAIT_POLICY", WAIT_POLICY)


def busy_note() -> str | None:
    """A note when another job already keeps the cores busy (1-minute load average), or None."""
    load, cores = os.getloadavg()[0], os.cpu_count() or 1
    if load < cores - 0.5:
        return None
    return (f"bearrec: note: this machine is busy (load {load:.1f} on {cores} cores). Jobs that share cores slow each "
            "other; this one lets its waiting threads sleep (OMP_WAIT_POLICY=PASSIVE, unless set), and giving each job "
            "its share of threads is better still: OMP_NUM_THREADS=1 for two jobs on two cores (docs/development.md).")


def check_device(device: "str | torch.device", where: str = "--device") -> "torch.device":
    """`device` as a torch.device that this machine has; ConfigError naming `where` and the fix otherwise."""
    import torch  # torch loads after set_thread_policy: OpenMP reads its wait policy once

    try:
        found = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ConfigError(f"{where} {device!r} is not a device name. Fix: use cpu, cuda, cuda:1 or mps (or leave it "
                          "unset: a GPU when there is one).") from None
    if found.type == "cuda":
        build = "a CPU build of torch" if torch.version.cuda is None else f"torch with CUDA {torch.version.cuda}"
        if not torch.cuda.is_available():
            raise ConfigError(f"{where} {device!r}: this machine has no usable CUDA GPU ({build}). Fix: use cpu, or "
                              "leave it unset.")
        if found.index is not None and found.index >= torch.cuda.device_count():
            raise ConfigError(f"{where} {device!r}: this machine has {torch.cuda.device_count()} CUDA GPU(s), "
                              f"numbered from 0. Fix: use cuda:0 to cuda:{torch.cuda.device_count() - 1}.")
    elif found.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"{where} {device!r}: MPS is not available on this machine. Fix: use cpu.")
    elif found.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"{where} {device!r}: bearrec runs on cpu, cuda or mps. Fix: use one of them.")
    return found


# The thread count of deterministic mode: one, so that a machine of any size sums in the same order.
DETERMINISTIC_THREADS = 1


def use_determinism() -> None:
    """Deterministic mode: torch's deterministic algorithms and DETERMINISTIC_THREADS threads, so that a rerun on the
    same machine gives byte-identical models and predictions (slower: one thread). It holds for the rest of the process
    (torch's settings are global): a later run in the same process is made, and recorded, deterministic too."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS's deterministic workspace, before CUDA work
    import torch  # torch loads after set_thread_policy: OpenMP reads its wait policy once

    torch.set_num_threads(DETERMINISTIC_THREADS)
    torch.use_deterministic_algorithms(True, warn_only=True)  # warn_only: an op without a deterministic kernel warns


def environment(device: Any = None) -> dict[str, Any]:
    """What a run's numbers depend on beyond its config: threads, library versions, device, deterministic flags."""
    def version(name: str) -> str | None:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return None

    import torch  # torch loads after set_thread_policy: OpenMP reads its wait policy once

    return {"threads": torch.get_num_threads(), "torch": torch.__version__, "transformers": version("transformers"),
            "python": platform.python_version(), "device": str(device) if device is not None else "cpu",
            "deterministic": torch.are_deterministic_algorithms_enabled(),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY")}
