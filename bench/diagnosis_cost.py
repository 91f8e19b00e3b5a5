"""What deciding "is the positive in the exact top B?" costs, by counting against by proving, on one trained run.

For the first rows of the run's test split: beam search (its entries above a positive count as found), then
`count_above` over each positive's own score (what `diagnose` does), then best-first search proving the exact top B
(what it did before). Checks that both give every row the same answer and prints the times side by side:
    python bench/diagnosis_cost.py RUN_DIR [--rows 8] [--batch-size 4] [--num-beams 10] [--max-expansions 20000]
"""
from __future__ import annotations

import argparse
import time

import torch

from bearrec.decoding import beam_search, count_above, exact_top_k, left_pad, sequence_log_probs
from bearrec.diagnose import TIE_TOLERANCE
from bearrec.recommend import Recommender


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run")
    parser.add_argument("--rows", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--num-beams", type=int, default=10)
    parser.add_argument("--max-expansions", type=int, default=20000)
    args = parser.parse_args()
    rec = Recommender.from_run(args.run, device="cpu")
    rows = rec.dataset.split("test")[:args.rows]
    positives = rec.texts.response_ids(rec.tokenizer, [r.target for r in rows])
    b, trie, mode = args.num_beams, rec.trie, rec.score_mode
    print(f"{args.run}: {len(rows)} test rows in batches of {args.batch_size}, score mode {mode}, B = {b}, "
          f"max_expansions {args.max_expansions}, trie of {trie.num_nodes} nodes, torch threads "
          f"{torch.get_num_threads()}", flush=True)
    times = {"beam": 0.0, "count": 0.0, "prove": 0.0}
    counted, proved = [], []
    for start in range(0, len(rows), args.batch_size):
        batch = rows[start:start + args.batch_size]
        pos = positives[start:start + args.batch_size]
        ids, mask = left_pad([rec.encode(r.history) for r in batch], rec.pad_token_id)
        t = time.perf_counter()
        beams = beam_search(rec.model, ids, mask, trie, b, score_mode=mode)
        times["beam"] += time.perf_counter() - t
        t = time.perf_counter()
        seq = sequence_log_probs(rec.model, ids, mask, pos, trie=trie, score_mode=mode)
        floors = [float(lp.sum()) + TIE_TOLERANCE for lp in seq.log_probs]
        known = [[trie.item_node(h.item_ids[0]) for h in beam if h.score > fl and r.target not in h.item_ids]
                 for beam, fl, r in zip(beams, floors, batch)]
        counts = count_above(rec.model, ids, mask, trie, b, floors, known=known, score_mode=mode,
                             max_expansions=args.max_expansions)
        times["count"] += time.perf_counter() - t
        t = time.perf_counter()
        found = exact_top_k(rec.model, ids, mask, trie, b, score_mode=mode, max_expansions=args.max_expansions)
        times["prove"] += time.perf_counter() - t
        for r, c, f in zip(batch, counts, found):
            counted.append((c.count < b, c.certified, c.expansions))
            proved.append((any(r.target in h.item_ids for h in f.items), f.certified, f.expansions))
        print(f"rows {start}-{start + len(batch) - 1}: count expansions {[c.expansions for c in counts]}, "
              f"proof expansions {[f.expansions for f in found]}, in top {b} {[c.count < b for c in counts]}",
              flush=True)
    agree = sum(c[0] == p[0] for c, p in zip(counted, proved) if c[1] and p[1])
    both = sum(c[1] and p[1] for c, p in zip(counted, proved))
    print(f"beam search {times['beam']:.1f} s; counting {times['count']:.1f} s "
          f"({sum(c[1] for c in counted)}/{len(rows)} settled); proving the top {b} {times['prove']:.1f} s "
          f"({sum(p[1] for p in proved)}/{len(rows)} certified); proof/count {times['prove'] / times['count']:.1f}x; "
          f"answers agree on {agree} of the {both} rows both settled")


if __name__ == "__main__":
    main()
