"""Where in the returned list each run's hits fall, and the scores and titles found at each rank.

    python bench/rank_profile.py runs/office-repro/sft-seed0 runs/office-repro/bear-seed0 [--split test]

Per rank r = 1..B of a run's predictions: hits at r, the median score of the item at r, and the share
of items at r whose first three words start a title in the user's history. It explains a list whose
hits sit at its end (docs/results.md: SFT's full-softmax scores leave long history-like titles last).
"""
from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from bearrec.files import read_jsonl
from bearrec.run_dir import RunDir


def profile(run_dir: Path, split: str) -> dict[str, list[float]]:
    """Hits, median score and history-prefix share at each rank of `run_dir`'s predictions on `split`."""
    dataset = RunDir(run_dir).load_dataset()
    rows = dataset.split(split)
    predictions = list(read_jsonl(RunDir(run_dir).artefact("predictions", split)))
    beams = max(len(p["recommendations"]) for p in predictions)
    hits, scores, history_like = [0] * beams, [[] for _ in range(beams)], [0] * beams
    for pred, row in zip(predictions, rows):
        starts = {tuple(dataset.items[h].split()[:3]) for h in row.history}
        for r, rec in enumerate(pred["recommendations"]):
            hits[r] += row.target in rec["item_ids"]
            scores[r].append(rec["score"])
            history_like[r] += tuple(rec["title"].split()[:3]) in starts
    n = len(predictions)
    return {"hits": hits, "median_score": [statistics.median(s) if s else float("nan") for s in scores],
            "history_like": [h / n for h in history_like]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--split", default="test")
    args = p.parse_args()
    for run in args.runs:
        prof = profile(run, args.split)
        print(f"{run}")
        print("  rank          " + " ".join(f"{r:>6d}" for r in range(1, len(prof["hits"]) + 1)))
        print("  hits          " + " ".join(f"{h:>6d}" for h in prof["hits"]))
        print("  median score  " + " ".join(f"{s:>6.1f}" for s in prof["median_score"]))
        print("  history-like  " + " ".join(f"{s:>6.2f}" for s in prof["history_like"]))


if __name__ == "__main__":
    main()
