"""What the compared runs' numbers depend on beyond their configs (threads, library versions, device, determinism),
and a warning when they differ: a rerun under other settings agrees with a table only within its noise."""
from __future__ import annotations

from typing import Sequence

from .runs import RunResult

# The keys of bearrec.machine.environment() that change floating-point results (python's version does not).
ENVIRONMENT_KEYS = ("threads", "torch", "transformers", "device", "deterministic")


def environment_differences(runs: Sequence[RunResult]) -> dict[str, list]:
    """{key: the distinct values} of each ENVIRONMENT_KEYS entry the LLM runs' trainings or decodings differ in."""
    seen: dict[str, set] = {}
    for run in runs:
        if run.kind != "llm":
            continue
        for where in (run.config.get("environment"), run.metrics.get("environment"), (run.metrics_exact or {}).get(
                "environment")):
            for key in ENVIRONMENT_KEYS if isinstance(where, dict) else ():
                seen.setdefault(key, set()).add(str(where.get(key)))
    return {key: sorted(values) for key, values in seen.items() if len(values) > 1}


def environment_note(differences: dict[str, list]) -> str | None:
    """The report's warning about `differences`, or None when the runs agree (or record nothing)."""
    if not differences:
        return None
    listing = "; ".join(f"{key}: {', '.join(values)}" for key, values in differences.items())
    return (f"Warning: these runs were trained or decoded under different settings that change floating-point results "
            f"({listing}). Their differences mix method and machine: compare runs made alike (`deterministic: true` "
            "fixes the threads), or read the paired intervals as noise-level at best.")
