"""Reproduce the paper's comparison on Amazon Office at CPU scale: SFT, MSL, BEAR and direct, several seeds.

    python bench/reproduce_office.py                       # everything: tune BEAR, then 3 seeds x 4 objectives
    python bench/reproduce_office.py --objectives sft bear --seeds 0 --lam 0.25 --xi 2.75   # no tuning

Protocol (the paper's, scaled to a CPU): `bearrec prepare bear-csv` on ../shared/data/amazon/Office with a
seeded 10,000-row training sample and the validation split carved from the latest training rows; the
built-in tiny model trained from scratch with each objective; checkpoints selected on the validation
split; BEAR's lam and xi chosen by a grid on the validation split (seed 0) unless given; the full test
split decoded once with B = 10 beams; PruningRate@10 from the exact top-10 search on every test row.
Every stage skips what an earlier (possibly interrupted) run finished, and training resumes from its last
checkpoint, so the command can be re-run until it completes. Results: RUN_ROOT/report/ and docs/results.md.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from bearrec.data import prepare
from bearrec.demo import complete_run, trained_run
from bearrec.evaluate import evaluate
from bearrec.io import write_json
from bearrec.report import write_report
from bearrec.train import ObjectiveConfig, TrainConfig

ROOT = Path(__file__).resolve().parents[1]
OFFICE = ROOT.parent / "shared" / "data" / "amazon" / "Office"


def config(dataset: Path, run_dir: Path, objective: str, seed: int, args: argparse.Namespace,
           lam: float = 0.25, xi: float = 2.75) -> TrainConfig:
    """One run's training config: tiny Llama, compact prompt, B = 10, selection on validation."""
    return TrainConfig(
        dataset=str(dataset), output_dir=str(run_dir), model="tiny", template="compact", domain="office",
        max_history=args.max_history, seed=seed, selection_metric=args.selection_metric,
        objective=ObjectiveConfig(name=objective, beam_size=10, lam=lam, xi=xi),
        max_valid_rows=args.valid_rows,
        training={"num_train_epochs": args.epochs, "learning_rate": args.lr, "per_device_train_batch_size": 16,
                  "per_device_eval_batch_size": 32, "warmup_steps": 50, "logging_steps": 50,
                  "lr_scheduler_type": "cosine", "save_total_limit": 1, "train_sampling_strategy": "group_by_length"},
    )


COLUMNS = ("hr@1", "hr@5", "hr@10", "ndcg@5", "ndcg@10")


def _cell(stat: dict | None, digits: int = 4) -> str:
    if not stat or stat.get("mean") is None:
        return "-"
    std = stat.get("std")
    return f"{stat['mean']:.{digits}f}" + (f" ± {std:.{digits}f}" if std is not None else "")


def results_markdown(runs: list[Path], summary: dict) -> str:
    """The results table (mean ± std over seeds), training minutes per epoch and the paired bootstrap CIs.

    Minutes per epoch are the median over every epoch of every seed: robust to one run slowed by other jobs.
    """
    epoch_minutes: dict[str, list[float]] = {}
    pooled: dict[str, list[int]] = {}  # method -> [pruned, positives in the exact top-10], over all seeds
    for run in runs:
        conf = json.loads((run / "config.json").read_text())
        secs = json.loads((run / "train_summary.json").read_text()).get("epoch_seconds") or []
        method = conf.get("method", conf["objective"])  # the name the report groups by
        epoch_minutes.setdefault(method, []).extend(x / 60 for x in secs)
        diag = json.loads((run / "diagnosis.json").read_text())
        counts = pooled.setdefault(method, [0, 0])
        counts[0] += diag["n_pruned"]
        counts[1] += diag["n_in_exact_top_b"]
    head = ("| method | seeds | " + " | ".join(COLUMNS)
            + " | PruningRate@10 | pruned / in exact top-10 | certified | min/epoch |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for method, info in summary["methods"].items():
        m, d = info["metrics"], info.get("diagnosis") or {}
        minutes = epoch_minutes.get(method) or []
        lines.append(f"| {method} | {','.join(map(str, info['seeds']))} | "
                     + " | ".join(_cell(m.get(k)) for k in COLUMNS)
                     + f" | {_cell(d.get('pruning_rate@10'), 3)} | {pooled[method][0]} / {pooled[method][1]}"
                     + f" | {_cell(d.get('certified_fraction'), 3)} | "
                     + (f"{statistics.median(minutes):.1f}" if minutes else "-") + " |")
    lines += ["", "Paired bootstrap (10,000 resamples, 95%) of the per-row difference on the same test rows:", ""]
    for b in summary.get("paired_bootstrap") or []:
        lines.append(f"- {b['comparison']} {b['metric']}: {b['mean_diff']:+.4f} [{b['low']:+.4f}, {b['high']:+.4f}], "
                     f"p = {b['p_value']:.3f}, {b['n_rows']} rows, seeds {b['seeds']}")
    return "\n".join(lines) + "\n"


PAPER_LAM, PAPER_XI = 0.25, 2.75
GRID = [(lam, xi) for lam in (0.1, 0.25, 1.0) for xi in (1.0, 2.75)]


def tune_bear(dataset: Path, args: argparse.Namespace) -> tuple[float, float]:
    """BEAR's (lam, xi) with the best NDCG@10 on the whole validation split, seed 0; test is never read."""
    results = {}
    for lam, xi in GRID:
        run_dir = trained_run(config(dataset, args.out / "tune" / f"bear-lam{lam}-xi{xi}", "bear", 0, args, lam, xi))
        results[(lam, xi)] = evaluate(run_dir, split="valid", beams=10)["ndcg@10"]
        print(f"tuning BEAR: lam={lam} xi={xi}: validation ndcg@10 = {results[(lam, xi)]:.4f}")
    best = max(GRID, key=lambda k: results[k])
    write_json(args.out / "tune.json", {"grid": [{"lam": lam, "xi": xi, "valid_ndcg@10": results[(lam, xi)]}
                                                 for lam, xi in GRID],
                                        "selected": {"lam": best[0], "xi": best[1]}})
    print(f"tuning BEAR: selected lam={best[0]} xi={best[1]} (validation only)")
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "office-repro")
    p.add_argument("--objectives", nargs="+", default=["sft", "msl", "bear", "direct"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--max-history", type=int, default=5)
    p.add_argument("--valid-rows", type=int, default=500, help="validation rows used for selection")
    p.add_argument("--diagnose-rows", type=int, default=None, help="test rows diagnosed (the first N; default all)")
    p.add_argument("--max-expansions", type=int, default=2000)
    p.add_argument("--selection-metric", default="eval_ndcg@10")
    p.add_argument("--lam", type=float, default=None, help="BEAR's lambda (with --xi: skip the tuning grid)")
    p.add_argument("--xi", type=float, default=None, help="BEAR's xi (with --lam: skip the tuning grid)")
    args = p.parse_args()

    dataset = args.out / "data" / "office"
    if not (dataset / "stats.json").exists():
        prepare("bear-csv", OFFICE, dataset, train_sample=10000, seed=0)
    started = time.time()
    if args.lam is None or args.xi is None:
        args.lam, args.xi = tune_bear(dataset, args)
    runs = []
    for seed in args.seeds:
        for objective in args.objectives:
            run_dir = args.out / f"{objective}-seed{seed}"
            lam, xi = (args.lam, args.xi) if objective == "bear" else (PAPER_LAM, PAPER_XI)
            runs.append(complete_run(config(dataset, run_dir, objective, seed, args, lam, xi), beams=10,
                                     diagnose_rows=args.diagnose_rows, max_expansions=args.max_expansions))
            print(f"finished {run_dir} ({(time.time() - started) / 60:.1f} min so far)")
    html, md = write_report(runs, args.out / "report", title="bearrec on Amazon Office (CPU scale)")
    print(f"report: {html}\n        {md}")
    table = results_markdown(runs, json.loads((args.out / "report" / "summary.json").read_text()))
    (args.out / "results.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
