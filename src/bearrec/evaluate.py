"""Evaluate a run or a predictions file: metrics.json with the run's config and the code version.

A run's files are named by `RunDir.artefact` (predictions.jsonl and metrics.json for the whole test split; other
splits and `--limit N` add `-SPLIT` and `-firstN`). Existing predictions are reused only when they hold every
requested row, decoded with the requested number of beams. Predictions are checked against the split they
claim to be (one row per index, the split's users and targets) before anything is counted.
"""
from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Sequence

from . import __version__
from .data import Dataset
from .data.dataset import Interaction
from .errors import DataError
from .files import read_jsonl, write_json
from .machine import environment
from .metrics import DEFAULT_KS, evaluate_predictions
from .run_dir import RunDir
from .searches import SearchOptions



def current_predictions(path: Path, n_rows: int, num_beams: int, search: str = "beam",
                        facts: dict | None = None) -> list[dict] | None:
    """The records of `path` when it holds exactly `n_rows` rows decoded by `search` with `num_beams` beams (exact:
    that many items) and the search's settings `facts` (`SearchOptions.facts`); else None."""
    if not path.exists():
        return None
    rows = list(read_jsonl(path))
    if search == "exact":
        ok = all(r.get("search") == "exact" and r.get("k") == num_beams for r in rows)
    else:
        # lists of every beam: a file written with --k below the beams holds shorter lists, not these
        ok = all(r.get("search", "beam") == search and r.get("beams") == num_beams
                 and r.get("k", num_beams) == num_beams
                 and all(r.get(key) == value for key, value in (facts or {}).items()) for r in rows)
    return rows if ok and len(rows) == n_rows else None


def predictions_are_current(path: Path, n_rows: int, num_beams: int, search: str = "beam",
                            facts: dict | None = None) -> bool:
    """True when `path` holds exactly `n_rows` rows decoded by `search` with `num_beams` beams (exact: that many
    items) and the search's settings `facts`."""
    return current_predictions(path, n_rows, num_beams, search, facts) is not None


def popularity(dataset: Dataset) -> Counter:
    """How often each item is a training target (the popularity rank of `mean_popularity_rank@K`)."""
    return Counter(row.target for row in dataset.train)


def code_version() -> str:
    """bearrec's version, with the git commit when running from a checkout."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent,
                                capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"{__version__}+{commit}" if commit else __version__


def check_predictions(rows: list[dict], path: Path, split_rows: Sequence[Interaction] | None, split: str) -> None:
    """DataError naming `path` and the line unless the rows are rows 0..n-1 of the split, each once, with its
    user and target (without a split: each index once, and a target on every line)."""
    fix = f"decode the predictions again (`bearrec recommend RUN_DIR --split {split}`)"
    seen: set[int] = set()
    for line, row in enumerate(rows, start=1):
        index = row.get("index")
        if isinstance(index, bool) or not isinstance(index, int):
            raise DataError(f"has no integer 'index' (got {index!r}).", path=path, line=line, fix=fix)
        if index in seen:
            raise DataError(f"repeats row index {index}: a row would be counted twice.", path=path, line=line, fix=fix)
        seen.add(index)
        if "target" not in row:
            raise DataError("has no 'target'.", path=path, line=line, fix=fix)
        if split_rows is None:
            continue
        if not 0 <= index < len(split_rows):
            raise DataError(f"row index {index} is outside the {split} split ({len(split_rows)} rows).", path=path,
                            line=line, fix=f"{fix}, or pass the split these predictions are of (--split)")
        want = split_rows[index]
        if str(row["target"]) != want.target or str(row.get("user_id", want.user_id)) != want.user_id:
            raise DataError(f"row {index} has user {row.get('user_id')!r} and target {row['target']!r}, but row {index} "
                            f"of the {split} split is user {want.user_id!r} with target {want.target!r}.", path=path,
                            line=line, fix=f"{fix}, or pass the split these predictions are of (--split)")
    if split_rows is not None and seen != set(range(len(seen))):
        missing = min(set(range(len(seen))) - seen)
        raise DataError(f"lacks row {missing}: the rows must be the first {len(seen)} of the {split} split.",
                        path=path, fix=fix)


def evaluate(source: str | Path, *, split: str = "test", num_beams: int = 10, output: str | Path | None = None,
             limit: int | None = None, dataset: Dataset | None = None, batch_size: int = 16, search: str = "beam",
             max_expansions: int = 2000, k: int | None = None, options: SearchOptions | None = None) -> dict:
    """Metrics of a predictions file, or of a run directory on `split` (decoding first if needed, with `search`
    "beam", "diverse" or "d3" with `num_beams` beams and the variants' `options`, or "exact" with lists of `k`
    items, default num_beams); exact predictions add `certified_share`, the share of rows proved exact."""
    options = options or SearchOptions()
    width = (k or num_beams) if search == "exact" else num_beams  # the length of each row's list
    source = Path(source)
    config: dict = {}
    decoded_on = None  # where the predictions were decoded, when this call decodes them
    if source.is_dir():
        run = RunDir(source).require()
        config = run.config()
        predictions_path = run.artefact("predictions", split, limit, search)
        dataset = run.load_dataset(dataset=dataset)
        if config.get("kind") == "baseline":  # nothing to decode: a baseline's predictions are written when fitted
            if limit is not None:
                raise DataError("is a baseline run: its predictions cover the whole split.", path=run.path,
                                fix="evaluate it without --limit")
            if search != "beam" or not predictions_path.is_file():
                raise DataError(f"is a {config.get('method')} baseline run without predictions of the {split} split"
                                + (f" ({search} search applies to language models only)" if search != "beam" else "")
                                + ".", path=run.path, fix="fit it with `bearrec experiment` (or "
                                "bearrec.baselines.run_baseline), which writes its predictions")
        elif not predictions_are_current(predictions_path, len(dataset.split(split)[:limit]), width, search,
                                         options.facts(search)):
            from .recommend import Recommender  # torch and transformers: only to decode, not to score a file

            rec = Recommender.from_run(run.path, batch_size=batch_size, search=search, max_expansions=max_expansions,
                                       dataset=dataset, options=options)
            rec.recommend_split(split, predictions_path, k=width, limit=limit)
            decoded_on = environment(rec.device)
        output = output or run.artefact("metrics", split, limit, search)
    elif source.is_file():
        predictions_path = source
        run = RunDir(source.parent)
        if run.is_run():
            config = run.config()
            dataset = run.load_dataset(dataset=dataset)
        elif dataset is None:
            print(f"bearrec: note: {source} is not in a run directory, so its rows were not checked against the "
                  f"{split} split (users, targets): a hit counts whatever target a row names. Fix: evaluate a run "
                  "directory, or keep the file in the run directory it came from.", file=sys.stderr)
        output = output or source.with_name(source.stem.replace("predictions", "metrics") + ".json")
    else:
        raise DataError("no such predictions file or run directory.", path=source,
                        fix="pass a run directory or a predictions .jsonl file")
    predictions = list(read_jsonl(predictions_path))
    check_predictions(predictions, predictions_path, dataset.split(split) if dataset else None, split)
    metrics = evaluate_predictions(predictions, DEFAULT_KS, catalog=dataset.items if dataset else None,
                                   popularity=popularity(dataset) if dataset else None)
    searches = {r.get("search", "beam") for r in predictions}
    if searches == {"exact"}:
        metrics["certified_share"] = sum(bool(r.get("certified")) for r in predictions) / len(predictions)
    metrics.update(split=split, limit=limit, search="/".join(sorted(searches)), predictions=str(predictions_path),
                   bearrec_version=code_version(), config=config,
                   **({"environment": decoded_on} if decoded_on is not None else {}))
    write_json(output, metrics)
    return metrics
