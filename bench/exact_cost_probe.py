"""What exact search costs for one trained run, per search mode, on the first rows of its test split.

Times beam search, best-first exact search under full and masked scores (for each --nodes-per-step: the nodes each
prompt expands per forward), and the whole-catalog pass; then, for a few rows, counts the trie's inner nodes whose
prefix is at least as probable as the exact 10th item (the nodes any exact search must expand under full scores) and
as beam search's 10th (a bound a pruned pass could start from):
    python bench/exact_cost_probe.py RUN_DIR [--rows 8] [--catalog-rows 2] [--max-expansions 2000]
        [--nodes-per-step 8 32] [--scores full masked]
"""
from __future__ import annotations

import argparse
import time

import torch

from bearrec.decoding import beam_search, left_pad
from bearrec.decoding.catalog import catalog_log_probs
from bearrec.decoding.exact import exact_top_k
from bearrec.recommend import Recommender


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run")
    parser.add_argument("--rows", type=int, default=8)
    parser.add_argument("--catalog-rows", type=int, default=2)
    parser.add_argument("--num-beams", type=int, default=10)
    parser.add_argument("--max-expansions", type=int, default=2000)
    parser.add_argument("--nodes-per-step", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--scores", nargs="+", choices=["full", "masked"], default=["full", "masked"])
    args = parser.parse_args()
    rec = Recommender.from_run(args.run, device="cpu")
    rows = rec.dataset.split("test")[:args.rows]
    ids, mask = left_pad([rec.encode(r.history) for r in rows], rec.pad_token_id)
    trie, b = rec.trie, args.num_beams
    print(f"{len(rows)} rows, prompts of {int(mask.sum(1).min())}-{int(mask.sum(1).max())} tokens, trie of "
          f"{trie.num_nodes} nodes, run's score mode {rec.score_mode}, torch threads {torch.get_num_threads()}")
    t = time.perf_counter()
    beam_search(rec.model, ids, mask, trie, b, score_mode=rec.score_mode)
    print(f"beam search: {time.perf_counter() - t:.1f} s", flush=True)
    for score in args.scores:
        for step in args.nodes_per_step:
            t = time.perf_counter()
            found = exact_top_k(rec.model, ids, mask, trie, b, score_mode=score, max_expansions=args.max_expansions,
                                nodes_per_step=step)
            print(f"best-first exact, {score} scores, {step} nodes per step: {time.perf_counter() - t:.1f} s, "
                  f"{sum(r.certified for r in found)} of {len(found)} certified, "
                  f"expansions {[r.expansions for r in found]}", flush=True)
    inner = trie.child_ptr.diff() > 0
    ends = trie.item_counts(torch.arange(trie.num_nodes)) > 0
    for i in range(min(args.catalog_rows, len(rows))):
        beams = beam_search(rec.model, ids[i:i + 1], mask[i:i + 1], trie, b, score_mode="full")[0]
        t = time.perf_counter()
        lp = catalog_log_probs(rec.model, ids[i:i + 1], mask[i:i + 1], trie, score_mode="full")[0]
        seconds = time.perf_counter() - t
        kth, beam_kth = torch.topk(lp[ends], b).values[-1], min(h.score for h in beams)
        print(f"row {i}: catalog pass {seconds:.1f} s; exact {b}th item {float(kth):.2f}, beam's {beam_kth:.2f}; "
              f"inner nodes at least as probable: {int(((lp >= kth) & inner).sum())} and "
              f"{int(((lp >= beam_kth) & inner).sum())} of {int(inner.sum())}")


if __name__ == "__main__":
    main()
