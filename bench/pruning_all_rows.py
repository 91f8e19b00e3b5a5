"""PruningRate@K of runs over every row decoded with both searches, from their predictions (no model call).

`bearrec diagnose` measures PruningRate on the first rows of a split, with steps and ranks; an experiment with
`decoding.search: [beam, exact]` has already decoded every test row both ways, and this reads the rate from those files:
    python bench/pruning_all_rows.py RUN_DIR [RUN_DIR ...]
"""
from __future__ import annotations

import argparse

from bearrec.diagnose import pruning_from_predictions
from bearrec.files import read_jsonl
from bearrec.run_dir import RunDir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="run directories with predictions.jsonl and predictions-exact.jsonl")
    parser.add_argument("--split", default="test")
    args = parser.parse_args()
    for path in args.runs:
        run = RunDir(path)
        beam = list(read_jsonl(run.artefact("predictions", args.split)))
        exact = list(read_jsonl(run.artefact("predictions", args.split, search="exact")))
        s = pruning_from_predictions(beam, exact)
        rate = next(v for k, v in s.items() if k.startswith("pruning_rate@"))
        print(f"{path}: {s['n_rows']} rows, certified {s['certified_fraction']:.3f}, in the exact top-K "
              f"{s['n_in_exact_top_k']}, pruned {s['n_pruned']}, PruningRate "
              f"{'n/a' if rate is None else f'{rate:.3f}'}")


if __name__ == "__main__":
    main()
