"""Slow reference searches the decoding tests compare the fast paths against: a plain-Python trie, a beam search with
no cache (one forward per beam), and brute-force teacher-forced scoring of every item."""
from __future__ import annotations

import math
from typing import Any

import torch

from decoding_fixtures import item_trie


def dict_trie(seqs: list[list[int]]) -> tuple[dict[tuple, set], set]:
    """Plain Python trie: prefix -> allowed next tokens, and the set of complete sequences."""
    nxt: dict[tuple, set] = {}
    for s in seqs:
        for j in range(len(s)):
            nxt.setdefault(tuple(s[:j]), set()).add(s[j])
    return nxt, {tuple(s) for s in seqs}


@torch.no_grad()
def reference_beam(model: Any, prompt: list[int], seqs: list[list[int]], B: int, score_mode: str, steps: int,
                   ) -> tuple[list[tuple[float, tuple]], list[float], list[list[tuple]]]:
    """Slow reference beam search (no cache, one forward per beam): finished list, thresholds, kept prefixes.

    Per step: rank every continuation, keep the 2B best; the complete ones among the first B join the
    finished list (kept to B); the B best that can still be extended are the next beams.
    """
    nxt, complete = dict_trie(seqs)
    beams: list[tuple[float, tuple]] = [(0.0, ())]
    finished: list[tuple[float, tuple]] = []
    thresholds: list[float] = []
    kept: list[list[tuple]] = []
    for _ in range(steps):
        cands = []
        for s, prefix in beams:
            logits = model(torch.tensor([prompt + list(prefix)])).logits[0, -1].float()
            allowed = sorted(nxt[prefix])
            lp = torch.log_softmax(logits, -1)[allowed] if score_mode == "full" else torch.log_softmax(logits[allowed], -1)
            cands += [(s + float(v), prefix + (tok,)) for tok, v in zip(allowed, lp)]
        cands = sorted(cands, key=lambda c: -c[0])[: 2 * B]
        finished = sorted(finished + [c for c in cands[:B] if c[1] in complete], key=lambda c: -c[0])[:B]
        beams = [c for c in cands if c[1] in nxt][:B]
        thresholds.append(beams[B - 1][0] if len(beams) >= B else -math.inf)
        kept.append([p for _, p in beams])
        if not beams:
            break
    return finished, thresholds + [-math.inf] * (steps - len(thresholds)), kept


def brute_force(model: Any, ids: torch.Tensor, mask: torch.Tensor, seqs: list[list[int]], score_mode: str,
                ) -> list[list[tuple[float, tuple]]]:
    """Every distinct sequence of each prompt with its teacher-forced log-prob, best first."""
    from bearrec.decoding.exact import sequence_log_probs

    trie = item_trie(seqs)
    distinct = sorted({tuple(s) for s in seqs})
    out = []
    for p in range(ids.shape[0]):
        rows = torch.tensor([p] * len(distinct))
        tot = sequence_log_probs(model, ids[rows], mask[rows], distinct, trie=trie, score_mode=score_mode).totals()
        out.append(sorted(zip(tot, distinct), reverse=True))
    return out


def hf_rescored_beam(model: Any, ids: torch.Tensor, mask: torch.Tensor, B: int, processor: Any, max_new_tokens: int,
                     eos: int = 2, pad: int = 0) -> list[list[tuple[tuple, float]]]:
    """Per prompt, (tokens up to EOS, score) of HF generate's beam search with `processor` as its logits processor
    (it must apply the trie constraint itself), length penalty 0 and early_stopping="never"."""
    out = model.generate(ids, attention_mask=mask, num_beams=B, num_return_sequences=B, do_sample=False,
                         logits_processor=[processor], length_penalty=0.0, early_stopping="never",
                         max_new_tokens=max_new_tokens, pad_token_id=pad, eos_token_id=eos,
                         return_dict_in_generate=True, output_scores=True)
    found = []
    for p in range(ids.shape[0]):
        rows = []
        for r in range(p * B, (p + 1) * B):
            gen = out.sequences[r, ids.shape[1]:].tolist()
            rows.append((tuple(gen[: gen.index(eos) + 1]), float(out.sequences_scores[r])))
        found.append(rows)
    return found

