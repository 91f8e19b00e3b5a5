"""Non-LLM baselines (MostPop, cornac's SASRec) written as run directories that `bearrec report` reads like trained
runs; evaluate their predictions by file (`bearrec evaluate RUN_DIR/predictions.jsonl`), not by RUN_DIR."""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .baseline_scorers import PopularityScorer, SASRecScorer, Scorer, save_scorer, scorer_kept
from .baseline_scorers import StoredScorer, load_scorer  # noqa: F401  (re-exported: a kept baseline, loaded)
from .data.dataset import Dataset, Interaction, load_dataset
from .machine import check_device
from .errors import ConfigError
from .evaluate import evaluate
from .files import read_json_file, read_jsonl, write_json, write_jsonl
from .methods import baseline_names
from .run_dir import UNCHECKED_KEYS, RunDir

BASELINES = baseline_names()  # declared in the method registry
SEARCH = "baseline"  # the "search" of every predictions row a baseline writes
INSTALL_FIX = "pip install 'bearrec[baselines]'"


# Defaults for 10k-100k training rows on a CPU. Architecture of the SASRec paper (2 blocks, 1 head, dropout 0.2 for
# dense data; embedding 48 near its 50: 64 took ~1.5x the time per epoch here for the same valid HR@10 after one
# epoch). Each row yields one example per position (~10), so one epoch already shows each transition ~10 times: on
# ML-100K (79k rows) valid HR@10 was 0.145 / 0.144 / 0.150 after 1 / 2 / 3 epochs, ~190 s an epoch on one CPU thread.
# batch_size, learning_rate, n_sample, sample_alpha and loss ("ce" over in-batch + sampled negatives) are cornac's.
@dataclass(frozen=True)
class SASRecSettings:
    """cornac SASRec's settings, by cornac's names; defaults for 10k-100k training rows on a CPU."""

    embedding_dim: int = 48
    num_blocks: int = 2
    num_heads: int = 1
    dropout: float = 0.2
    n_epochs: int = 3
    batch_size: int = 512
    learning_rate: float = 0.001
    n_sample: int = 2048
    sample_alpha: float = 0.5
    loss: str = "ce"
    l2_reg: float = 0.0
    use_pos_emb: bool = True
    use_biases: bool = False
    device: str = "cpu"
    # None: the longest history in the training rows (positions past it are never trained)
    max_len: int | None = None


_POSITIVE_INTS = ("embedding_dim", "num_blocks", "num_heads", "n_epochs", "batch_size")


# ---------------------------------------------------------------------------------------------- settings
def resolve_settings(method: str, settings: dict | None, dataset: Dataset | None = None) -> dict[str, Any]:
    """The full settings of `method` (defaults filled in, values checked); ConfigError naming a bad key and the fix."""
    check_method(method)
    settings = dict(settings or {})
    if method == "popularity":
        if settings:
            raise ConfigError(f"the popularity baseline takes no settings, got {sorted(settings)}. "
                              "Fix: pass no settings for method 'popularity'.")
        return {}
    known = {f.name for f in fields(SASRecSettings)}
    for key in settings:
        if key not in known:
            raise ConfigError(f"SASRec has no setting {key!r}. Fix: remove it, or use one of "
                              f"{', '.join(sorted(known))}.")
    resolved = asdict(SASRecSettings(**settings))
    for key in _POSITIVE_INTS + ("n_sample",):
        value = resolved[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < (0 if key == "n_sample" else 1):
            raise ConfigError(f"SASRec setting {key!r} must be an integer >= {0 if key == 'n_sample' else 1}, "
                              f"got {value!r}. Fix: e.g. {key}={getattr(SASRecSettings, key)}.")
    for key in ("dropout", "learning_rate", "sample_alpha", "l2_reg"):
        value = resolved[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ConfigError(f"SASRec setting {key!r} must be a number >= 0, got {value!r}. "
                              f"Fix: e.g. {key}={getattr(SASRecSettings, key)}.")
        resolved[key] = float(value)
    if resolved["dropout"] >= 1:
        raise ConfigError(f"SASRec setting 'dropout' must be below 1, got {resolved['dropout']}. "
                          "Fix: e.g. dropout=0.2.")
    if resolved["embedding_dim"] % resolved["num_heads"]:
        raise ConfigError(f"SASRec setting 'embedding_dim' ({resolved['embedding_dim']}) must be a multiple of "
                          f"'num_heads' ({resolved['num_heads']}). Fix: change one of them.")
    for key in ("use_pos_emb", "use_biases"):
        if not isinstance(resolved[key], bool):
            raise ConfigError(f"SASRec setting {key!r} must be true or false, got {resolved[key]!r}. "
                              f"Fix: {key}={str(getattr(SASRecSettings, key)).lower()}.")
    max_len = resolved["max_len"]
    if max_len is not None and (isinstance(max_len, bool) or not isinstance(max_len, int) or max_len < 1):
        raise ConfigError(f"SASRec setting 'max_len' must be an integer >= 1 or null, got {max_len!r}. "
                          "Fix: leave it out (the longest training history is used).")
    if max_len is None and dataset is not None:
        resolved["max_len"] = max((len(row.history) for row in dataset.train), default=1) or 1
    check_device(resolved["device"], "SASRec setting 'device'")
    make_sasrec(resolved, seed=0)  # cornac's own checks (e.g. the loss name)
    return resolved


def check_method(method: str) -> str:
    if method not in BASELINES:
        raise ConfigError(f"unknown baseline {method!r}. Fix: use one of {', '.join(BASELINES)}.")
    return method


def sasrec_class() -> Any:
    """cornac's SASRec class, or a ConfigError saying how to install the optional extra."""
    try:
        from cornac.models import SASRec
    except ImportError as e:
        raise ConfigError(f"the sasrec baseline needs the cornac library, which cannot be imported ({e}). "
                          f"Fix: {INSTALL_FIX}") from None
    return SASRec


def make_sasrec(resolved: dict[str, Any], seed: int) -> Any:
    """An unfitted cornac SASRec with resolved settings; cornac's own refusal (e.g. of a loss name) as a ConfigError."""
    kwargs = {k: v for k, v in resolved.items() if k != "max_len"}
    try:
        return sasrec_class()(**kwargs, max_len=resolved["max_len"] or 1, seed=seed)
    except ValueError as e:
        raise ConfigError(f"cornac refused a SASRec setting: {e}. Fix: change that setting.") from None


# ---------------------------------------------------------------------------------------------- models
def sasrec_sessions(dataset: Dataset) -> list[tuple[str, str, str, int]]:
    """cornac USIT tuples: each training row (history + [target]) is one session, so SASRec's objective learns
    every next-item position of it (the prefix up to each position predicts the item there)."""
    return [(row.user_id, str(r), item, position)
            for r, row in enumerate(dataset.train)
            for position, item in enumerate((*row.history, row.target))]


def fit_cornac_sasrec(dataset: Dataset, settings: dict[str, Any], seed: int) -> Any:
    """cornac SASRec fitted on the training rows, its item index over the whole catalog in catalog order."""
    import torch
    from cornac.data import SequentialDataset

    item_index = {item: i for i, item in enumerate(dataset.items)}
    train = SequentialDataset.build(sasrec_sessions(dataset), fmt="USIT", global_iid_map=dict(item_index), seed=seed)
    torch.manual_seed(seed)
    model = make_sasrec(settings, seed)
    model.fit(train)
    if list(model.iid_map) != list(item_index):
        raise RuntimeError("cornac's item index differs from the catalog order")  # a changed cornac API
    return model


def sasrec_scorer(model: Any) -> SASRecScorer:
    """The scorer of a fitted cornac SASRec: its network (`model.model`) over its item index, in that order."""
    if model.pad_idx != len(model.iid_map):
        raise RuntimeError("cornac's SASRec pads with another index than its item count")  # a changed cornac API
    return SASRecScorer(model.model, list(model.iid_map), model.max_len, model.device)


def fit_baseline(method: str, dataset: Dataset, *, seed: int = 0, settings: dict | None = None) -> Scorer:
    """The fitted baseline `method` (settings as `resolve_settings` returns them, or raw ones to resolve)."""
    resolved = resolve_settings(method, settings, dataset)
    if not dataset.train:
        raise ConfigError("the dataset has no training rows. Fix: prepare a dataset with a train split.")
    if method == "popularity":
        counts = Counter(row.target for row in dataset.train)
        return PopularityScorer(dataset.items, np.array([counts.get(i, 0) for i in dataset.items], dtype=np.float64))
    return sasrec_scorer(fit_cornac_sasrec(dataset, resolved, seed))


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """The indices of the k best scores of each row, best first; equal scores in catalog (index) order."""
    return np.argsort(-np.asarray(scores), axis=1, kind="stable")[:, :k]


def prediction_rows(scorer: Scorer, dataset: Dataset, rows: Sequence[Interaction], k: int,
                    batch_size: int = 512) -> list[dict]:
    """bearrec predictions records (see bearrec.recommend) of `rows`: k single-item entries each, best first."""
    item_ids = list(dataset.items)
    records = []
    for start in range(0, len(rows), batch_size):
        block = rows[start:start + batch_size]
        scores = scorer.score([row.history for row in block])
        for offset, (row, best) in enumerate(zip(block, top_k(scores, k))):
            records.append({"index": start + offset, "user_id": row.user_id, "target": row.target,
                            "search": SEARCH, "k": k, "recommendations": [
                                {"item_ids": [item_ids[j]], "title": dataset.items[item_ids[j]],
                                 "score": float(scores[offset, j])} for j in best]})
    return records


# ---------------------------------------------------------------------------------------------- run directory
def predictions_current(path: Path, rows: Sequence[Interaction], k: int) -> bool:
    """Whether `path` holds a baseline's k-entry predictions of exactly these rows."""
    if not path.is_file():
        return False
    found = list(read_jsonl(path))
    return len(found) == len(rows) and all(
        p.get("search") == SEARCH and p.get("k") == k and len(p.get("recommendations", ())) == k
        and p.get("index") == i and p.get("target") == row.target and p.get("user_id") == row.user_id
        for i, (p, row) in enumerate(zip(found, rows)))


def _check_same_run(run: RunDir, record: dict[str, Any]) -> None:
    """ConfigError naming config.json when the folder holds a run made with other settings, seed, method or data."""
    stored = run.config()  # checked against its checksum
    keys = sorted((set(stored) | set(record)) - set(UNCHECKED_KEYS) - {"files"})  # "files": the scorer's digest
    differ = [k for k in keys if stored.get(k) != record.get(k)]
    if differ:
        shown = "; ".join(f"{k}: {stored.get(k)!r} there, {record.get(k)!r} now" for k in differ)
        raise ConfigError(f"{run.config_path}: holds a run made with other settings ({shown}). "
                          "Fix: choose another output_dir, or delete that folder to redo the run.")


def _open_run(method: str, dataset_dir: str | Path, output_dir: str | Path, seed: int, settings: dict | None,
              k: int, name: str | None = None) -> tuple[RunDir, Dataset, dict[str, Any]]:
    """The run directory, the dataset and the config record of a baseline run, checked (arguments, settings, and an
    existing config.json against this one)."""
    check_method(method)
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ConfigError(f"k must be an integer >= 1, got {k!r}. Fix: e.g. k=10.")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"seed must be an integer, got {seed!r}. Fix: e.g. seed=0.")
    dataset = load_dataset(dataset_dir)
    if k > len(dataset.items):
        raise ConfigError(f"k={k} is more than the {len(dataset.items)} items of the catalog. "
                          f"Fix: use k <= {len(dataset.items)}.")
    resolved = resolve_settings(method, settings, dataset)
    run = RunDir(output_dir)
    record = {"kind": "baseline", "method": name or method, "objective": method, "seed": seed, "baseline": resolved,
              "num_beams": k, **run.record_dataset(str(dataset_dir), dataset)}
    if run.is_run():
        _check_same_run(run, record)
    return run, dataset, record


def baseline_done(method: str, dataset_dir: str | Path, output_dir: str | Path, *, split: str, seed: int = 0,
                  settings: dict | None = None, k: int = 10, name: str | None = None) -> bool:
    """Whether `run_baseline` with these arguments would find everything done (a folder of other settings raises)."""
    run, dataset, _ = _open_run(method, dataset_dir, output_dir, seed, settings, k, name)
    return (run.is_run() and run.artefact("metrics", split).is_file()
            and predictions_current(run.artefact("predictions", split), dataset.split(split), k) and scorer_kept(run))


def run_baseline(method: str, dataset_dir: str | Path, output_dir: str | Path, *, split: str, seed: int = 0,
                 settings: dict | None = None, k: int = 10, name: str | None = None) -> dict:
    """Fit baseline `method`, keep it (`load_scorer`), write `split`'s predictions and metrics into run directory
    `output_dir`; the metrics. `name`: what the run is reported under (default `method`).

    Work already done (that split's current predictions and metrics, the scorer) is skipped; a folder made with
    other settings, seed, method or dataset is refused. Each fit rewrites the scorer, so it is the latest fit's."""
    run, dataset, record = _open_run(method, dataset_dir, output_dir, seed, settings, k, name)
    rows = dataset.split(split)
    run.path.mkdir(parents=True, exist_ok=True)
    if not run.is_run():
        run.write_config(record)
    if not run.log_history_path.is_file():
        write_json(run.log_history_path, [])
    predictions = run.artefact("predictions", split)
    metrics = run.artefact("metrics", split)
    current = predictions_current(predictions, rows, k)
    if not current or not scorer_kept(run):  # a run made before scorers were kept is fitted again (same seed)
        started = time.perf_counter()
        scorer = fit_baseline(method, dataset, seed=seed, settings=record["baseline"])
        seconds = time.perf_counter() - started
        save_scorer(run, scorer)
        if not current:
            write_jsonl(predictions, prediction_rows(scorer, dataset, rows, k))
            _record_seconds(run, method, split, seconds)
    if current and metrics.is_file():
        return read_json_file(metrics, dict, f"delete it to evaluate {predictions.name} again")
    return evaluate(predictions, split=split, dataset=dataset)


def _record_seconds(run: RunDir, method: str, split: str, seconds: float) -> None:
    """train_summary.json: the first split's fit seconds as train_seconds, each split's in train_seconds_by_split."""
    summary = (read_json_file(run.summary_path, dict, "delete train_summary.json; it is written again")
               if run.summary_path.is_file() else {})
    by_split = dict(summary.get("train_seconds_by_split", {}))
    by_split[split] = seconds
    if "train_seconds" not in summary or summary.get("train_split") == split:
        summary.update(train_seconds=seconds, train_split=split)
    summary.update(epoch_seconds=[], method=method, train_seconds_by_split=by_split)
    write_json(run.summary_path, summary)
