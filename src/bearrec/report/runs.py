"""One run directory as the report reads it (`load_run`), and runs grouped into methods.

Run-directory contract (one directory per trained model, or fitted baseline, and seed; all JSON):
  config.json        required  {"objective": "sft"|"msl"|"bear"|"direct"|..., "seed": int,
                                "model": str, "dataset": str, ...any other settings}; "kind" is "llm"
                               (or absent) for a language model, "baseline" for a non-LLM baseline, whose
                               "method" and "objective" are its name ("popularity", "sasrec")
  metrics.json       required  the dict returned by bearrec.metrics.evaluate_predictions
                               (test split): {"hr@10": float, "ndcg@10": float, ...}
  log_history.json   required  the HF Trainer `state.log_history` list: dicts with "step",
                               "epoch" and "loss" (training) or "eval_loss" (validation);
                               `[]` for a run that was not trained (a zero-shot base model) and for baselines
  train_summary.json optional  {"epoch_seconds": [float, ...], "train_seconds": float, ...}: the min/epoch
                               column (a baseline's "train_seconds" is shown as its whole fit time)
  diagnosis.json     optional  {"pruning_rate@B": float, "certified_fraction": float,
                                "n_in_exact_top_b": int, "n_pruned": int, "pruned_token_outside_top_b_share": float,
                                "pruned_step_histogram": {"1": n, "2": n, ...},
                                "positive_token_rank_histogram": {"1": n, ..., "B": n, ">B": n}}
                               (a diagnosis of the first N rows, diagnosis-firstN.json, stands in when
                               there is none of the whole split; the report says which file it used);
                               never read for baselines, which do not decode with beam search (shown as n/a)
  metrics-exact.json optional  the metrics of the exact top-K search on the test split, with "certified_share"
  predictions.jsonl  optional  the decoder's predictions on the same split as metrics.json;
                               used for the paired bootstrap of every method against every other
  predictions-exact.jsonl optional  the exact search's predictions of the same rows: the paired bootstrap of
                               exact search against beam search, per method
  metrics-MODE.json  optional  for each decoding mode MODE of ALT_SEARCHES (diverse beam search, D3): that mode's
                               metrics of the test split; the run then gives the report one more row, "METHOD · MODE"
                               (`load_runs`), listed right after its method and compared like a method
  predictions-MODE.jsonl optional  that mode's predictions: its paired bootstraps and, against
                               predictions-exact.jsonl, its PruningRate (the beam-search diagnosis is not its own)
A missing optional file drops the matching plot, column or section with a note in the report; a
missing or malformed required file (or a malformed optional one) raises DataError naming the file and
the fix. File names are `RunDir`'s (bearrec.run_dir).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import BearrecError, DataError
from ..files import read_json_file, read_jsonl
from ..methods import order_key
from ..run_dir import RunDir
from ..searches import VARIANTS
from .columns import is_number

RUN_KINDS = ("llm", "baseline")
# The decoding modes besides beam search whose metrics a run directory may hold; each is reported as its own row.
ALT_SEARCHES = VARIANTS  # the decoding modes with rows of their own
MODE_SEPARATOR = " · "
# The settings a mode's predictions record (the first row's), shown as the row's "decoding" setting in the runs table.
MODE_SETTINGS = ("beams", "groups", "diversity_penalty", "assistant_weight", "assistant", "ig_weight")


@dataclass
class RunResult:
    """Everything the report reads from one run directory."""

    config: dict
    metrics: dict
    log_history: list
    diagnosis: dict | None = None
    predictions_path: Path | None = None
    run_dir: Path | None = None
    diagnosis_path: Path | None = None
    train_summary: dict | None = None
    metrics_exact: dict | None = None
    exact_predictions_path: Path | None = None
    search: str = "beam"

    @property
    def dataset(self) -> str:
        """What the run was evaluated on: the dataset's fingerprint where recorded, else its path."""
        return str(self.config.get("dataset_fingerprint") or self.config.get("dataset_path")
                   or self.config.get("dataset", ""))

    @property
    def method(self) -> str:
        """The report row's label: the trained method, with its decoding mode where that is not beam search."""
        return mode_label(self.base_method, self.search)

    @property
    def base_method(self) -> str:
        """The trained method, whatever the decoding."""
        if "method" in self.config:  # `bearrec train`: the objective with its base, e.g. "bear-sft"
            return str(self.config["method"])
        objective = self.config["objective"]
        return str(objective["name"] if isinstance(objective, dict) else objective)

    @property
    def kind(self) -> str:
        """"llm" (a language model decoding with beam search) or "baseline" (popularity, SASRec)."""
        return str(self.config.get("kind", "llm"))

    @property
    def is_baseline(self) -> bool:
        return self.kind == "baseline"

    @property
    def seed(self) -> int:
        return int(self.config["seed"])

    @property
    def name(self) -> str:
        run = self.run_dir.name if self.run_dir is not None else f"{self.base_method}-seed{self.seed}"
        return mode_label(run, self.search)


def mode_label(name: str, search: str) -> str:
    """`name` as a row of decoding mode `search`: itself for beam search, else "name · search" (e.g. "sft · d3")."""
    return name if search == "beam" else f"{name}{MODE_SEPARATOR}{search}"


def report_key(label: str) -> tuple:
    """Sort key of a row label: the method registry's report order (`order_key`), each method's decoding modes
    right after it in ALT_SEARCHES order."""
    base, sep, search = label.rpartition(MODE_SEPARATOR)
    if sep and search in ALT_SEARCHES:
        return (*order_key(base), 1 + ALT_SEARCHES.index(search))
    return (*order_key(label), 0)


def load_run(run_dir: str | Path) -> RunResult:
    """Read one run directory (see the module docstring for its files) through `RunDir`."""
    run = RunDir(run_dir)
    if not run.path.is_dir():
        raise BearrecError(f"{run.path}: not a run directory. Fix: pass directories written by training/evaluation.")
    config = read_json_file(run.config_path, dict, 'write the run settings, at least {"objective": ..., "seed": ...}')
    for key in ("objective", "seed"):
        if key not in config:
            raise DataError(f"lacks {key!r}.", path=run.config_path,
                            fix='config.json needs {"objective": str, "seed": int, ...}')
    if not isinstance(config["seed"], int) or isinstance(config["seed"], bool):
        raise DataError(f"'seed' must be an integer, got {config['seed']!r}.", path=run.config_path)
    if config.get("kind", "llm") not in RUN_KINDS:
        raise DataError(f"'kind' must be one of {', '.join(RUN_KINDS)}, got {config['kind']!r}.",
                        path=run.config_path, fix='leave "kind" out (or "llm") for a language model, '
                                              '"baseline" for popularity or SASRec')
    metrics = read_json_file(run.artefact("metrics"), dict,
                             "evaluate the run on the test split (`bearrec evaluate RUN_DIR`)")
    history = read_json_file(run.log_history_path, list, "write trainer.state.log_history, or [] for an untrained run")
    best = None if config.get("kind") == "baseline" else run.best("diagnosis")
    diagnosis = read_json_file(best[1], dict, "diagnose the run again (`bearrec diagnose RUN_DIR`)") if best else None
    if diagnosis is not None:
        for key in ("pruned_step_histogram", "positive_token_rank_histogram"):
            hist = diagnosis.get(key, {})
            if not isinstance(hist, dict) or not all(is_number(v) and v >= 0 for v in hist.values()):
                raise DataError(f"{key!r} must map buckets to counts >= 0.", path=best[1])
    preds = run.artefact("predictions")
    exact_path = run.artefact("metrics", search="exact")
    exact = (read_json_file(exact_path, dict, "evaluate the run again (`bearrec evaluate RUN_DIR --search exact`)")
             if exact_path.is_file() else None)
    exact_preds = run.artefact("predictions", search="exact")
    return RunResult(config, metrics, history, diagnosis, preds if preds.exists() else None, run.path,
                     best[1] if best else None, _read_train_summary(run), exact,
                     exact_preds if exact_preds.exists() else None)


def load_runs(run_dir: str | Path) -> list[RunResult]:
    """The run's beam-search row (`load_run`) followed by one row per decoding mode of ALT_SEARCHES it has
    metrics of (`search_modes`)."""
    run = load_run(run_dir)
    return [run, *search_modes(run)]


def search_modes(run: RunResult) -> list[RunResult]:
    """A row per decoding mode of ALT_SEARCHES whose metrics-MODE.json the (beam-search) run's directory holds: its
    metrics and predictions; the run's training (config, plus the mode's "decoding" settings; train_summary) and exact
    predictions; no loss curve and no exact-search metrics (both are the method's row's); its PruningRate computed
    from its predictions against the exact ones, never the beam search's diagnosis."""
    if run.run_dir is None or run.is_baseline or run.search != "beam":
        return []
    found = []
    for search in ALT_SEARCHES:
        metrics_path = RunDir(run.run_dir).artefact("metrics", search=search)
        if not metrics_path.is_file():
            continue
        metrics = read_json_file(metrics_path, dict,
                                 f"evaluate the run again (`bearrec evaluate RUN_DIR --search {search}`)")
        preds = RunDir(run.run_dir).artefact("predictions", search=search)
        preds = preds if preds.is_file() else None
        exact = run.exact_predictions_path
        first = next(iter(read_jsonl(preds)), {}) if preds else {}
        decoding = {"search": search, **{k: first[k] for k in MODE_SETTINGS if isinstance(first, dict) and k in first}}
        found.append(replace(run, config={**run.config, "decoding": decoding}, metrics=metrics, log_history=[],
                             predictions_path=preds, metrics_exact=None,
                             diagnosis=mode_pruning(preds, exact) if preds and exact else None,
                             diagnosis_path=None, search=search))
    return found


def mode_pruning(preds_path: Path, exact_path: Path) -> dict:
    """PruningRate@K of a decoding mode over every row, from its predictions against the exact search's (pooled over
    rows: positives it misses among those in the exact top K), with the diagnosis file's key names."""
    from ..diagnose import pruning_from_predictions  # here: bearrec.diagnose imports torch, needed only for modes
    mode, exact = list(read_jsonl(preds_path)), list(read_jsonl(exact_path))
    try:
        found = pruning_from_predictions(mode, exact)
    except KeyError as e:
        raise DataError(f"a row has no {e} (against {exact_path.name}).", path=preds_path,
                        fix="decode the split again, with this search and with `--search exact`") from None
    except DataError as e:
        raise DataError(f"against {exact_path.name}: {e}", path=preds_path) from None
    found["n_in_exact_top_b"] = found.pop("n_in_exact_top_k")
    return found


def _read_train_summary(run: RunDir) -> dict | None:
    """train_summary.json, its timing fields checked, or None where there is none."""
    path = run.summary_path
    if not path.is_file():
        return None
    fix = "re-run training, or delete train_summary.json (the report only reads its timing)"
    summary = read_json_file(path, dict, fix)
    epochs = summary.get("epoch_seconds")
    if epochs is not None and not (isinstance(epochs, list) and all(is_number(s) and s >= 0 for s in epochs)):
        raise DataError("'epoch_seconds' must be a list of seconds >= 0.", path=path, fix=fix)
    total = summary.get("train_seconds")
    if total is not None and not (is_number(total) and total >= 0):
        raise DataError(f"'train_seconds' must be a number >= 0, got {total!r}.", path=path, fix=fix)
    return summary


def discover_runs(root: str | Path) -> list[Path]:
    """Every run directory under `root` (itself included) with test metrics of every row, sorted."""
    runs = (RunDir(p.parent) for p in Path(root).rglob(RunDir(root).config_path.name))
    return sorted(run.path for run in runs if run.artefact("metrics").is_file())


def run_dataset(runs: Sequence[RunResult], key: str) -> str:
    """The dataset path a run with dataset `key` names (for messages)."""
    run = next(r for r in runs if r.dataset == key)
    return str(run.config.get("dataset_path") or run.config.get("dataset") or key)


def group_by_method(runs: Sequence[RunResult]) -> dict[str, list[RunResult]]:
    """Runs by row label (`RunResult.method`), known methods first in the method registry's report order, then the
    others alphabetically, each method's decoding modes right after it (`report_key`); seeds sorted."""
    groups: dict[str, list[RunResult]] = {}
    for run in runs:
        groups.setdefault(run.method, []).append(run)
    order = sorted(groups, key=report_key)
    return {m: sorted(groups[m], key=lambda r: r.seed) for m in order}


def baseline_methods(groups: dict[str, list[RunResult]]) -> list[str]:
    """The methods whose runs are all baselines (no beam search, no logged loss)."""
    return [m for m, rs in groups.items() if all(r.is_baseline for r in rs)]


def run_minutes(runs: list[RunResult]) -> tuple[float | None, float | None]:
    """(median minutes per epoch over every epoch of every run, else a baseline's median fit minutes over seeds)."""
    epochs = [s for r in runs if r.train_summary for s in (r.train_summary.get("epoch_seconds") or [])]
    if epochs:
        return float(np.median(epochs)) / 60, None
    fits = [r.train_summary["train_seconds"] for r in runs
            if r.is_baseline and r.train_summary and is_number(r.train_summary.get("train_seconds"))]
    return None, (float(np.median(fits)) / 60 if fits else None)


def diagnosis_totals(runs: list[RunResult]) -> dict | None:
    """n_pruned and n_in_exact_top_b summed over the runs that report both."""
    have = [r.diagnosis for r in runs if r.diagnosis is not None
            and is_number(r.diagnosis.get("n_pruned")) and is_number(r.diagnosis.get("n_in_exact_top_b"))]
    if not have:
        return None
    return {"n_pruned": int(sum(d["n_pruned"] for d in have)),
            "n_in_exact_top_b": int(sum(d["n_in_exact_top_b"] for d in have)), "runs": len(have)}


def epoch_cost_ratios(groups: dict[str, list[RunResult]], timing: dict[str, tuple]) -> dict[str, float | None]:
    """Each LLM row's minutes per epoch (`run_minutes`) ÷ sft's, a decoding mode's row its method's training; None for
    baselines and where either is not recorded."""
    base = timing.get("sft", (None, None))[0]
    return {m: timing[m][0] / base if base and timing[m][0] is not None and not all(r.is_baseline for r in rs) else None
            for m, rs in groups.items()}
