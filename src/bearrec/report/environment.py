"""What the compared runs' numbers depend on beyond their configs, and warnings about it: the machine (threads,
library versions, device, determinism), where a rerun under other settings agrees only within noise, and a test split
whose targets the training split never shows."""
from __future__ import annotations

from typing import Sequence

from ..data.stats import UNSEEN_NOTE_SHARE
from ..errors import DataError
from ..files import read_json_file
from ..run_dir import RunDir
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


def unseen_targets_note(runs: Sequence[RunResult]) -> str | None:
    """The dataset's stats.json note when most test targets never appear in training (cold start), or None."""
    for run in runs:
        if run.run_dir is None:
            continue
        try:
            stats = read_json_file(RunDir(run.run_dir).dataset_location() / "stats.json")
        except DataError:
            continue
        test = (stats.get("unseen_targets") or {}).get("test") or {}
        if test.get("share", 0) > UNSEEN_NOTE_SHARE:
            return (f"Note: {test['rows']} of the test rows ({test['share']:.0%}) name a target the training split "
                    "never shows (the dataset's stats.json): those items are cold-start, known to a model by their "
                    "titles only, and popularity cannot rank them.")
        return None
    return None


def environment_note(differences: dict[str, list]) -> str | None:
    """The report's warning about `differences`, or None when the runs agree (or record nothing)."""
    if not differences:
        return None
    listing = "; ".join(f"{key}: {', '.join(values)}" for key, values in differences.items())
    return (f"Warning: these runs were trained or decoded under different settings that change floating-point results "
            f"({listing}). Their differences mix method and machine: compare runs made alike (`deterministic: true` "
            "fixes the threads), or read the paired intervals as noise-level at best.")
