"""What bf16 autocast buys on this CPU, and what it changes: one trained run's model, float32 against
torch.autocast("cpu", bfloat16) on the same float32 weights (what transformers.Trainer does with bf16=True).

    OMP_NUM_THREADS=1 python bench/cpu_bf16.py RUN_DIR [--rows 8] [--repeats 3]

Prints, measured side by side (the two precisions alternate, so that load from other jobs hits both alike):
- a bare matrix product of SmolLM2's MLP shape (GFLOP/s): CPUs with AMX (`lscpu` lists amx_bf16) run bf16 far faster;
- the forward pass over the first --rows test prompts (tokens/s);
- beam search over them (seconds), with how many of the B-item lists are identical and the mean overlap;
- the largest difference of the next-token log-probabilities over the prompts' last positions.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from bearrec.decoding import beam_search, left_pad
from bearrec.recommend import Recommender


def timed(fn, repeats: int, precisions=("float32", "bfloat16")) -> dict[str, float]:
    """Median seconds of fn(autocast) per precision, the precisions alternating within each repeat."""
    times: dict[str, list[float]] = {p: [] for p in precisions}
    for i in range(repeats + 1):  # the first round warms up
        for p in precisions:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=p == "bfloat16"):
                t = time.perf_counter()
                fn()
                if i:
                    times[p].append(time.perf_counter() - t)
    return {p: statistics.median(ts) for p, ts in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run")
    parser.add_argument("--rows", type=int, default=8)
    parser.add_argument("--num-beams", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rec = Recommender.from_run(args.run, device="cpu")
    model = rec.model.eval()
    rows = rec.dataset.split("test")[:args.rows]
    ids, mask = left_pad([rec.encode(r.history) for r in rows], rec.pad_token_id)
    print(f"{len(rows)} prompts of {int(mask.sum(1).min())}-{int(mask.sum(1).max())} tokens, score mode "
          f"{rec.score_mode}, B = {args.num_beams}, torch threads {torch.get_num_threads()}, torch {torch.__version__}")

    a, w = torch.randn(512, 576), torch.randn(1536, 576)
    t = timed(lambda: torch.nn.functional.linear(a, w), 20)
    flops = 2 * a.shape[0] * a.shape[1] * w.shape[0]
    print(f"matrix product 512x576 @ 576x1536: float32 {flops / t['float32'] / 1e9:.0f} GFLOP/s, bf16 "
          f"{flops / t['bfloat16'] / 1e9:.0f} GFLOP/s, x{t['float32'] / t['bfloat16']:.1f}")

    with torch.no_grad():
        t = timed(lambda: model(input_ids=ids, attention_mask=mask), args.repeats)
        tokens = int(mask.sum())
        print(f"forward over the prompts: float32 {tokens / t['float32']:.0f} tokens/s, bf16 "
              f"{tokens / t['bfloat16']:.0f} tokens/s, x{t['float32'] / t['bfloat16']:.1f}")
        last = {}
        for p in ("float32", "bfloat16"):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=p == "bfloat16"):
                last[p] = model(input_ids=ids, attention_mask=mask).logits[:, -1].float().log_softmax(-1)
        top = last["float32"].argmax(-1, keepdim=True)
        gap = (last["float32"].gather(-1, top) - last["bfloat16"].gather(-1, top)).abs().max()
        print(f"next-token log-prob of float32's argmax, largest difference: {float(gap):.3f} nats; same argmax in "
              f"{int((last['bfloat16'].argmax(-1, keepdim=True) == top).sum())} of {len(rows)} prompts")

        found = {}

        def search() -> None:
            precision = "bfloat16" if torch.is_autocast_enabled("cpu") else "float32"
            found[precision] = beam_search(model, ids, mask, rec.trie, args.num_beams, score_mode=rec.score_mode)

        t = timed(search, 1)
    lists = {p: [[tuple(h.item_ids) for h in hyps] for hyps in found[p]] for p in found}
    same = sum(x == y for x, y in zip(lists["float32"], lists["bfloat16"]))
    overlap = statistics.mean(len(set(x) & set(y)) for x, y in zip(lists["float32"], lists["bfloat16"]))
    print(f"beam search: float32 {t['float32']:.1f} s, bf16 {t['bfloat16']:.1f} s, x{t['float32'] / t['bfloat16']:.1f}; "
          f"identical lists {same} of {len(rows)}, mean overlap {overlap:.1f} of {args.num_beams}")


if __name__ == "__main__":
    main()
