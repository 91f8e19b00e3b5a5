"""Evaluate a run or a predictions file: metrics.json with the run's config and the code version.

File names in a run directory: the test split's predictions and metrics are `predictions.jsonl`
and `metrics.json` (what `bearrec report` reads); other splits add the split's name
(`predictions-valid.jsonl`, `metrics-valid.json`), and a run on the first N rows only (`--limit N`)
adds `-firstN`, so a partial evaluation never stands in for the full one. Existing predictions are
reused only when they hold every requested row, decoded with the requested number of beams.
"""
from __future__ import annotations

import json
import subprocess
from collections import Counter
from pathlib import Path

from . import __version__
from .data import Dataset, load_dataset
from .errors import DataError
from .io import read_jsonl, write_json
from .metrics import evaluate_predictions

KS = (1, 5, 10, 20)


def split_file(run_dir: str | Path, kind: str, split: str, limit: int | None = None) -> Path:
    """`<kind>[-<split>][-first<N>].<ext>`: the split's name is left out for test, the limit when None."""
    ext = "jsonl" if kind in ("predictions",) else "json"
    parts = [kind] + ([split] if split != "test" else []) + ([f"first{limit}"] if limit is not None else [])
    return Path(run_dir) / f"{'-'.join(parts)}.{ext}"


def predictions_are_current(path: Path, n_rows: int, beams: int) -> bool:
    """True when `path` holds exactly `n_rows` rows decoded with `beams` beams."""
    if not path.exists():
        return False
    rows = list(read_jsonl(path))
    return len(rows) == n_rows and all(r.get("beams") == beams for r in rows)


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


def read_config(run_dir: str | Path) -> dict:
    path = Path(run_dir) / "config.json"
    if not path.exists():
        raise DataError("not a run directory (config.json is missing).", path=run_dir,
                        fix="pass a directory written by `bearrec train`, or a predictions .jsonl file")
    return json.loads(path.read_text(encoding="utf-8"))


def evaluate(source: str | Path, *, split: str = "test", beams: int = 10, output: str | Path | None = None,
             limit: int | None = None, dataset: Dataset | None = None) -> dict:
    """Metrics of a predictions file, or of a run directory on `split` (decoding first if needed)."""
    source = Path(source)
    config: dict = {}
    if source.is_dir():
        run_dir = source
        config = read_config(run_dir)
        predictions_path = split_file(run_dir, "predictions", split, limit)
        if dataset is None:
            dataset = load_dataset(config["dataset"])
        if not predictions_are_current(predictions_path, len(dataset.split(split)[:limit]), beams):
            from .recommend import Recommender

            Recommender.from_run(run_dir).recommend_split(split, predictions_path, k=beams, limit=limit)
        output = output or split_file(run_dir, "metrics", split, limit)
    elif source.exists():
        predictions_path = source
        if (source.parent / "config.json").exists():
            config = read_config(source.parent)
        output = output or source.with_name(source.stem.replace("predictions", "metrics") + ".json")
    else:
        raise DataError("no such predictions file or run directory.", path=source)
    if dataset is None and config.get("dataset"):
        dataset = load_dataset(config["dataset"])
    predictions = list(read_jsonl(predictions_path))
    metrics = evaluate_predictions(predictions, KS, catalog=dataset.items if dataset else None,
                                   popularity=popularity(dataset) if dataset else None)
    metrics.update(split=split, limit=limit, predictions=str(predictions_path), bearrec_version=code_version(),
                   config=config)
    write_json(output, metrics)
    return metrics
