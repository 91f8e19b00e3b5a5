"""Benchmark: exact top-K against beam search on a trained model's test prompts.

For each run (a `bearrec train` output dir, or quick runs trained on Office here with --train): the fraction of
test prompts whose top-k is certified exact by best-first search within `max_expansions` (`exact_top_k`),
expansions per prompt, how often beam search (B = k) returns exactly the certified top-k, and the time of each
exact search relative to beam search on the same batches (interleaved repeats; the machine is shared): best-first
alone, `certified_top_k` (best-first, then the whole catalog scored with tree attention for the rows it did not
certify: every row certified) and `catalog_top_k` (the whole catalog for every row). The run's own score mode is
used ('masked' for MSL/BEAR, 'full' for SFT).

  python bench/bench_exact.py --run runs/tiny-msl --run runs/tiny-sft
  python bench/bench_exact.py --train msl sft          # quick 1-epoch tiny runs on 3,000 Office rows first
"""
from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from bearrec.decoding import beam_search, catalog_top_k, certified_top_k, exact_top_k, left_pad

ROOT = Path(__file__).resolve().parents[1]
OFFICE = ROOT.parent / "shared" / "data" / "amazon" / "Office"


def train_quick(objective: str, workdir: Path, rows: int, config: str) -> Path:
    """A 1-epoch tiny run on `rows` Office train rows (alpaca prompts), written under `workdir`."""
    from bearrec.data import prepare
    from bearrec.train import load_config, train

    data = workdir / "office"
    if not data.is_dir():
        prepare("bear-csv", OFFICE, data)
    cfg = load_config(config, [f"dataset={data}", f"output_dir={workdir / f'run-{objective}'}",
                               f"objective.name={objective}", f"max_train_rows={rows}", "template=alpaca",
                               "training.num_train_epochs=1"])
    t0 = time.perf_counter()
    run = train(cfg)
    print(f"trained {objective} in {time.perf_counter() - t0:.0f}s -> {run}", file=sys.stderr)
    return Path(run)


def bench_run(run: Path, args: argparse.Namespace) -> str:
    """One table row: certified fraction, expansions, beam/exact agreement and time ratio for one run."""
    from bearrec.recommend import Recommender

    rec = Recommender.from_run(run, device="cpu")
    rec.model.eval()
    rows = random.Random(args.seed).sample(rec.dataset.test, args.prompts)
    prompts = sorted((rec.encode(r.history) for r in rows), key=len)
    batches = [left_pad(prompts[s:s + args.batch_size], rec.pad_token_id)
               for s in range(0, len(prompts), args.batch_size)]
    k, mode = args.k, rec.score_mode

    def beam() -> list[list[tuple]]:
        return [[tuple(h.tokens) for h in hyps] for ids, mask in batches
                for hyps in beam_search(rec.model, ids, mask, rec.trie, k, score_mode=mode)]

    def exact() -> list[Any]:
        return [r for ids, mask in batches
                for r in exact_top_k(rec.model, ids, mask, rec.trie, k, score_mode=mode,
                                     max_expansions=args.max_expansions, nodes_per_step=args.nodes_per_step)]

    def certified() -> list[Any]:
        return [r for ids, mask in batches
                for r in certified_top_k(rec.model, ids, mask, rec.trie, k, score_mode=mode,
                                         max_expansions=args.max_expansions)]

    def catalog() -> list[Any]:
        return [r for ids, mask in batches for r in catalog_top_k(rec.model, ids, mask, rec.trie, k, score_mode=mode)]

    fns = {"beam": beam, "exact": exact, "certified": certified, "catalog": catalog}
    times: dict[str, list[float]] = {name: [] for name in fns}
    out: dict[str, Any] = {}
    beam()  # warm-up
    for r in range(args.repeats):
        for name in (list(fns) if r % 2 == 0 else list(fns)[::-1]):
            t0 = time.perf_counter()
            out[name] = fns[name]()
            times[name].append(time.perf_counter() - t0)
    gap = max(abs(x.score - y.score) for a, b in zip(out["certified"], out["catalog"]) for x, y in zip(a.items, b.items))
    assert gap < 1e-3, f"the exact searches disagree by {gap:.2g} on a score"  # the same lists, up to float error
    res = out["exact"]
    certified = sum(x.certified for x in res)
    same = sum(x.certified and [tuple(h.tokens) for h in x.items] == b for x, b in zip(res, out["beam"]))
    recall = statistics.mean(len({tuple(h.tokens) for h in x.items} & set(b)) / max(len(x.items), 1)
                             for x, b in zip(res, out["beam"]) if x.certified) if certified else float("nan")
    exp = sorted(x.expansions for x in res)
    best = {name: min(t) for name, t in times.items()}
    whole = sum(x.certified for x in out["certified"])
    return (f"{run.name:<14} {mode:>6} {certified:>4}/{len(res):<4} {certified / len(res):>8.1%} "
            f"{statistics.mean(exp):>9.0f} {exp[len(exp) // 2]:>8} {exp[-1]:>7} {same:>4}/{certified:<4} {recall:>7.1%} "
            f"{best['beam']:>7.2f} {best['exact']:>8.2f} {best['exact'] / best['beam']:>7.2f}x "
            f"{whole:>4}/{len(res):<4} {best['certified']:>7.2f} {best['certified'] / best['beam']:>7.2f}x "
            f"{best['catalog']:>7.2f} {best['catalog'] / best['beam']:>7.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", action="append", default=[], help="a `bearrec train` output dir (repeatable)")
    ap.add_argument("--train", nargs="*", default=[], metavar="OBJECTIVE",
                    help="train quick tiny runs with these objectives first (e.g. msl sft)")
    ap.add_argument("--train-rows", type=int, default=3000)
    ap.add_argument("--config", default=str(ROOT / "configs" / "tiny-cpu.yaml"))
    ap.add_argument("--workdir", default=None, help="where --train writes (default: a temporary folder)")
    ap.add_argument("--k", type=int, default=10, help="top-k of exact search = beam size B of beam search")
    ap.add_argument("--max-expansions", type=int, default=2000, help="exact_top_k's default")
    ap.add_argument("--nodes-per-step", type=int, default=32, help="exact_top_k's default")
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    if not args.run and not args.train:
        ap.error("give --run RUN_DIR and/or --train OBJECTIVE ...")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.workdir or tmp)
        runs = [Path(r) for r in args.run] + [train_quick(o, work, args.train_rows, args.config) for o in args.train]
        print(f"k = B = {args.k}, max_expansions={args.max_expansions}, nodes_per_step={args.nodes_per_step}, "
              f"{args.prompts} test prompts in batches of {args.batch_size}, threads={torch.get_num_threads()}, "
              f"cpu, torch {torch.__version__}, repeats={args.repeats} (times and ratio from the fastest repeat of each)")
        print(f"{'run':<14} {'score':>6} {'certified':>9} {'cert %':>8} {'exp mean':>9} {'median':>8} {'max':>7} "
              f"{'beam = exact':>9} {'recall':>7} {'beam s':>7} {'exact s':>8} {'exact/beam':>8} "
              f"{'certified':>9} {'cert. s':>7} {'/beam':>8} {'catalog s':>7} {'/beam':>8}")
        with torch.inference_mode():
            for run in runs:
                print(bench_run(run, args), flush=True)


if __name__ == "__main__":
    main()
