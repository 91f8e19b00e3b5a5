"""The README's first command: MovieLens-100K, the tiny model, SFT vs MSL vs BEAR (with and without the
single-child CE), end to end on a CPU.

Every step reuses what an earlier (possibly interrupted) demo already finished: the prepared
dataset, each trained run (training resumes from its last checkpoint), predictions and diagnoses.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from .io import write_json

# MSL and BEAR as the reference implements them, and BEAR with the single-child CE that a model trained from
# scratch needs to keep reading its prompt (docs/results.md, "Why MSL and BEAR lost"). BEAR on the SFT base
# (bear-sft) is measured on the same data by bench/masked_family.py.
METHODS = ("sft", "msl", "bear", "bear+ce")
TABLE_KEYS = ("hr@1", "hr@5", "hr@10", "ndcg@5", "ndcg@10", "pruning_rate@10")


@dataclass(frozen=True)
class DemoSize:
    """How much of MovieLens-100K the demo trains and evaluates on (the full data takes hours on 2 cores)."""

    train_rows: int
    valid_rows: int
    test_rows: int
    diagnose_rows: int | None  # None: every test row
    epochs: int


FULL = DemoSize(train_rows=12000, valid_rows=300, test_rows=1000, diagnose_rows=None, epochs=2)
QUICK = DemoSize(train_rows=200, valid_rows=40, test_rows=40, diagnose_rows=20, epochs=1)


def demo_config(dataset: Path, run_dir: Path, method: str, size: DemoSize, seed: int = 0):
    """The training config of one demo run (a method: sft, msl, bear, bear-sft...): tiny Llama, compact prompt,
    10 beams, paper's BEAR settings."""
    from .train import ObjectiveConfig, TrainConfig

    return TrainConfig(
        dataset=str(dataset), output_dir=str(run_dir), model="tiny", template="compact", domain="movie",
        max_history=10, objective=ObjectiveConfig.for_method(method, beam_size=10, lam=0.25, xi=2.75), seed=seed,
        max_valid_rows=size.valid_rows,
        training={"num_train_epochs": size.epochs, "learning_rate": 2e-3, "per_device_train_batch_size": 16,
                  "per_device_eval_batch_size": 32, "warmup_steps": 20, "logging_steps": 20,
                  "lr_scheduler_type": "cosine"},
    )


def trained_run(config) -> Path:
    """RUN_DIR with its trained model: trained (or resumed) unless done. Another config in RUN_DIR is an error."""
    from .train import check_run_config, train

    run_dir = Path(config.output_dir)
    check_run_config(run_dir, config)
    if not (run_dir / "model").is_dir():
        train(config, resume=(run_dir / "checkpoints").is_dir())
    return run_dir


def complete_run(config, *, beams: int, diagnose_rows: int | None, max_expansions: int) -> Path:
    """Train (or resume), evaluate on the test split and diagnose its first rows; each stage only once.
    A run directory made with another config is an error."""
    from .diagnose import diagnose_run
    from .evaluate import evaluate
    from .run_dir import RunDir

    run = RunDir(trained_run(config))
    if not run.artefact("metrics").exists():
        evaluate(run.path, split="test", beams=beams)
    if not run.artefact("diagnosis", limit=diagnose_rows).exists():
        diagnose_run(run.path, split="test", beams=beams, limit=diagnose_rows, max_expansions=max_expansions)
    return run.path


def demo_dataset(directory: Path, size: DemoSize) -> None:
    """MovieLens-100K prepared as usual, with seeded samples of the training and test rows (counted in stats)."""
    from collections import Counter

    from .data import load_dataset, prepare, save_dataset
    from .data.preprocess import sample_rows

    prepare("movielens-100k", "-", directory, train_sample=size.train_rows, seed=0)
    dataset = load_dataset(directory)
    dropped = Counter()
    dataset.splits["test"] = sample_rows(dataset.test, min(size.test_rows, len(dataset.test)), 1, dropped)
    dataset.stats["n_test"] = len(dataset.test)
    dataset.stats.setdefault("dropped", {})["test_rows_not_sampled"] = dropped["train_rows_not_sampled"]
    dataset.stats.setdefault("notes", []).append(
        f"demo: a seeded sample of {size.train_rows} training and {len(dataset.test)} test rows")
    save_dataset(dataset, directory)


def run_demo(output: str | Path = "demo-output", *, quick: bool = False, seed: int = 0) -> dict:
    """Fetch and prepare MovieLens-100K, train, evaluate and diagnose each objective, print and report."""
    from .report import write_report

    size = QUICK if quick else FULL
    out = Path(output)
    started = time.time()
    dataset = out / "data" / "ml100k"
    if not (dataset / "stats.json").exists():
        print("[1/4] fetching and preparing MovieLens-100K")
        demo_dataset(dataset, size)
    runs = []
    for step, method in enumerate(METHODS, start=1):
        run_dir = out / "runs" / f"{method}-seed{seed}"
        print(f"[2/4] method {step}/{len(METHODS)}: {method} -> {run_dir}")
        runs.append(complete_run(demo_config(dataset, run_dir, method, size, seed), beams=10,
                                 diagnose_rows=size.diagnose_rows, max_expansions=1000))
    print("[3/4] comparison")
    table = comparison_table(runs)
    print(table)
    print("[4/4] report")
    html, md = write_report(runs, out / "report")
    summary = {"runs": [str(r) for r in runs], "report": str(html), "minutes": (time.time() - started) / 60,
               "size": size.__dict__}
    write_json(out / "demo_summary.json", summary)
    print(f"report: {html}\n        {md}\ndemo finished in {summary['minutes']:.1f} min")
    return summary


def comparison_table(run_dirs: list[Path]) -> str:
    """A plain-text table of each run's test metrics and PruningRate@10, naming run, seed and config."""
    from .io import read_json_file
    from .run_dir import RunDir

    lines = [f"{'run':<16}{'seed':>5}" + "".join(f"{k:>17}" for k in TABLE_KEYS)]
    rows, diagnosed = None, None
    for run_dir in run_dirs:
        run = RunDir(run_dir)
        values = read_json_file(run.artefact("metrics"))
        rows = values.get("n_rows")
        best = run.best("diagnosis")
        if best is not None:
            diagnosis = read_json_file(best[1])
            values.update(diagnosis)
            diagnosed = diagnosis.get("n_rows")
        cells = "".join(f"{values[k]:>17.4f}" if isinstance(values.get(k), (int, float)) else f"{'-':>17}"
                        for k in TABLE_KEYS)
        lines.append(f"{run.path.name:<16}{run.config().get('seed', ''):>5}{cells}")
    lines.append(f"test rows: {rows} (seeded sample of MovieLens-100K's test split); PruningRate@10 "
                 f"over the first {diagnosed if diagnosed is not None else '-'} of them; configs: <run>/config.json")
    return "\n".join(lines)
