"""Benchmark: our constrained beam search vs HF generate + a Python dict-trie prefix_allowed_tokens_fn.

For each beam size: prompts per second of both (same model, prompts and catalog; checked to return the
same items), and our time against its floor: one prompt forward plus one cached forward of all beams
per generated token, timed directly. Run:  python bench/bench_decoding.py [--model PATH|smollm2-135m]
"""
from __future__ import annotations

import argparse
import time
from typing import Any

import torch

from bearrec.decoding import beam_search
from bearrec.decoding.common import cache_kwarg, extend, prefill
from bearrec.decoding.testing import random_prompts, random_sequences, tiny_llama
from bearrec.trie import ItemTrie


def load(model_name: str | None, vocab: int) -> tuple[Any, int, int]:
    """(model, eos id, pad id): a random tiny Llama, or a real model by path / bearrec alias."""
    if model_name is None:
        return tiny_llama(vocab), 2, 0
    from bearrec.models import load_model, load_tokenizer

    tok = load_tokenizer(model_name)
    model = load_model(model_name, dtype="float32").eval()
    return model, tok.eos_token_id, tok.pad_token_id


def python_trie(seqs: list[list[int]]) -> dict[tuple, list[int]]:
    """The dict trie existing implementations use: prefix tuple -> allowed next tokens."""
    nxt: dict[tuple, set] = {}
    for s in seqs:
        for j in range(len(s)):
            nxt.setdefault(tuple(s[:j]), set()).add(s[j])
    return {k: sorted(v) for k, v in nxt.items()}


def hf_items(model, ids, mask, table, B, depth, eos, pad) -> list[list[tuple]]:
    width = ids.shape[1]

    def allowed(batch_id: int, sent: torch.Tensor) -> list[int]:
        return table.get(tuple(sent[width:].tolist()), [eos])

    out = model.generate(ids, attention_mask=mask, num_beams=B, num_return_sequences=B, do_sample=False,
                         prefix_allowed_tokens_fn=allowed, max_new_tokens=depth, early_stopping=False,
                         length_penalty=0.0, pad_token_id=pad, eos_token_id=eos,
                         return_dict_in_generate=True, output_scores=True)
    res = []
    for p in range(ids.shape[0]):
        hyps = []
        for r in range(p * B, (p + 1) * B):
            gen = out.sequences[r, width:].tolist()
            if float(out.sequences_scores[r]) > -1e8 and eos in gen:
                hyps.append(tuple(gen[: gen.index(eos) + 1]))
        res.append(hyps)
    return res


def floor_time(model, ids, mask, B, steps) -> float:
    """One prompt forward, then `steps` cached forwards of one token for all P*B beams."""
    start = time.perf_counter()
    logits, cache = prefill(model, ids, mask)
    cache.batch_repeat_interleave(B)
    rows = ids.shape[0] * B
    pmask = mask.repeat_interleave(B, 0)
    plen = pmask.long().sum(1)
    tok = logits.argmax(-1).repeat_interleave(B)[:, None]
    for t in range(steps):
        logits, cache = extend(model, tok, cache, pmask, plen, offset=t)
        tok = logits[:, -1].argmax(-1)[:, None]
    return time.perf_counter() - start


def count_forwards(model) -> list[int]:
    counter = [0]
    model.register_forward_hook(lambda *_: counter.__setitem__(0, counter[0] + 1))
    return counter


@torch.no_grad()
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="model folder or bearrec alias (default: a random tiny Llama)")
    ap.add_argument("--beams", type=int, nargs="+", default=[10, 20, 50])
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--prompt-len", type=int, default=96)
    ap.add_argument("--items", type=int, default=2000)
    ap.add_argument("--title-len", type=int, default=8, help="max title tokens before EOS")
    ap.add_argument("--vocab", type=int, default=2048, help="vocabulary of the tiny model (hidden size 32)")
    ap.add_argument("--repeats", type=int, default=3, help="time each method this many times, keep the fastest "
                    "(the machine is shared; the minimum is the least disturbed run)")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model, eos, pad = load(args.model, args.vocab)
    vocab = model.get_output_embeddings().weight.shape[0]
    seqs = random_sequences(args.items, min(vocab, 50000), eos=eos, max_len=args.title_len, seed=1)
    trie = ItemTrie.from_sequences(seqs)
    table = python_trie(seqs)
    ids, mask = random_prompts(args.prompts, min(vocab, 50000), min_len=args.prompt_len // 2,
                               max_len=args.prompt_len, pad=pad, seed=1)
    depth = trie.max_depth
    calls = count_forwards(model)
    beam_search(model, ids[:2], mask[:2], trie, 4)  # warm-up
    hf_items(model, ids[:2], mask[:2], table, 4, depth, eos, pad)
    print(f"model={args.model or 'tiny-llama'} prompts={args.prompts} prompt_len<={args.prompt_len} "
          f"items={args.items} depth={depth} threads={torch.get_num_threads()} device=cpu repeats={args.repeats} (min)")
    print(f"{'B':>4} {'ours p/s':>9} {'HF p/s':>8} {'speedup':>8} {'floor s':>8} {'ours s':>7} "
          f"{'ours/floor':>10} {'same items':>10}")
    for B in args.beams:
        t_ours = t_hf = t_floor = float("inf")
        for _ in range(args.repeats):
            calls[0] = 0
            t0 = time.perf_counter()
            ours = beam_search(model, ids, mask, trie, B)
            t_ours = min(t_ours, time.perf_counter() - t0)
            steps = calls[0] - 1
            t0 = time.perf_counter()
            theirs = hf_items(model, ids, mask, table, B, depth, eos, pad)
            t_hf = min(t_hf, time.perf_counter() - t0)
            t_floor = min(t_floor, floor_time(model, ids, mask, B, steps))
        same = all([tuple(h.tokens) for h in o] == t for o, t in zip(ours, theirs))
        P = args.prompts
        print(f"{B:>4} {P / t_ours:>9.2f} {P / t_hf:>8.2f} {t_hf / t_ours:>7.1f}x {t_floor:>8.3f} {t_ours:>7.3f} "
              f"{t_ours / t_floor:>9.2f}x {str(same):>10}")


if __name__ == "__main__":
    main()
