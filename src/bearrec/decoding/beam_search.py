"""Trie-constrained beam search on our own cached loop, and the per-step beam thresholds used in training.

Semantics are those of HF `generate(num_beams=B, prefix_allowed_tokens_fn=...)` with
`early_stopping="never"` (the canonical beam search; with length_penalty=0 `early_stopping=False` gives
the same): at each step the 2B best candidates over all live beams are ranked; those among the first B
that complete an item enter the finished list (kept to the B best by score / len**length_penalty), and
the B best candidates that can still be extended become the next beams. Unlike HF, we never return
placeholder or invalid hypotheses: a catalog (or a trie branch) with fewer than B items gives fewer.

A candidate is complete when items end at its trie node (for tries built by `from_catalog` every
sequence ends with EOS, so that is exactly "EOS was generated"); it stays extendable when the node has
children (only possible for tries whose sequences are prefixes of others).

The KV cache is never reordered: each prompt keeps one cache row holding its prompt and every token
any of its beams generated (B new columns per step), and a 4-D attention mask lets each beam attend to
its prompt and its own ancestors only ("tree attention"). A step thus appends B columns per prompt
instead of copying P*B prompt-length caches; attention implementations that take no custom 4-D mask
(flash attention) fall back to one cache row per beam, reordered each step.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..errors import ConfigError
from ..trie import ItemTrie
from .common import (Hypothesis, cache_kwarg, check_score_mode, child_log_probs, custom_mask, extend,
                     hypotheses, output_cache, prefill, prepare_inputs, tree_attention)

NEG_INF = float("-inf")


@dataclass
class _Result:
    """Raw outcome of one batched search: finished nodes/scores (P, B) and per-step thresholds (P, steps)."""

    fin_nodes: torch.Tensor
    fin_scores: torch.Tensor
    thresholds: torch.Tensor


class _Tree:
    """The per-prompt cache rows of tree attention: which generated columns each beam slot descends from."""

    def __init__(self, model: Any, cache: Any, attention_mask: torch.Tensor, prompt_len: torch.Tensor):
        self.model, self.cache, self.prompt_len = model, cache, prompt_len
        self.prompt_mask = attention_mask.bool()
        self.anc = torch.zeros(attention_mask.shape[0], 1, 0, dtype=torch.bool, device=attention_mask.device)

    def step(self, slot_p: torch.Tensor, slot_j: torch.Tensor, parent_slot: torch.Tensor, tokens: torch.Tensor,
             offset: int) -> torch.Tensor:
        """Feed one token per live beam (prompt slot_p, slot slot_j, child of slot parent_slot); its logits."""
        P, dev = self.anc.shape[0], tokens.device
        width = int(slot_j.max()) + 1
        ids = torch.zeros(P, width, dtype=torch.long, device=dev)
        ids[slot_p, slot_j] = tokens
        par = torch.zeros(P, width, dtype=torch.long, device=dev)
        par[slot_p, slot_j] = parent_slot
        live = torch.zeros(P, width, dtype=torch.bool, device=dev)
        live[slot_p, slot_j] = True
        G = self.anc.shape[2]
        inherited = self.anc.gather(1, par[:, :, None].expand(P, width, G)) & live[:, :, None]
        own = torch.eye(width, dtype=torch.bool, device=dev).expand(P, width, width)
        self.anc = torch.cat([inherited, own], 2)
        mask = custom_mask(self.model, torch.cat([self.prompt_mask[:, None, :].expand(P, width, -1), self.anc], 2))
        pos = (self.prompt_len + offset)[:, None].expand(P, width)
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True,
                         **{cache_kwarg(self.model): self.cache})
        self.cache = output_cache(out)
        return out.logits[slot_p, slot_j].float()


def _search(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, trie: ItemTrie,
            num_beams: int, score: str, length_penalty: float, max_steps: int, early_stop: bool) -> _Result:
    """The beam search loop (see the module docstring); all beams of all prompts advance together."""
    check_score_mode(score)
    if num_beams < 1:
        raise ConfigError(f"num_beams must be at least 1, got {num_beams}.")
    input_ids, attention_mask, trie = prepare_inputs(model, input_ids, attention_mask, trie)
    dev = input_ids.device
    P, B = input_ids.shape[0], num_beams
    fin_nodes = torch.full((P, B), -1, dtype=torch.long, device=dev)
    fin_scores = torch.full((P, B), NEG_INF, device=dev)
    thresholds = torch.full((P, max_steps), NEG_INF, device=dev)
    if P == 0 or max_steps == 0:
        return _Result(fin_nodes, fin_scores, thresholds)
    prompt_len = attention_mask.long().sum(1)
    logits, cache = prefill(model, input_ids, attention_mask)
    tree = _Tree(model, cache, attention_mask, prompt_len) if tree_attention(model) else None
    row_prompt = torch.arange(P, device=dev)
    row_beam = torch.zeros(P, dtype=torch.long, device=dev)
    row_node = torch.zeros(P, dtype=torch.long, device=dev)
    row_score = torch.zeros(P, device=dev)
    done = torch.zeros(P, dtype=torch.bool, device=dev)
    for t in range(max_steps):
        tokens, valid = trie.padded_children(row_node)
        cand = row_score[:, None] + child_log_probs(logits, tokens, valid, score)
        W = tokens.shape[1]
        grid = torch.full((P, B, W), NEG_INF, device=dev)
        grid[row_prompt, row_beam] = cand
        rowmap = torch.full((P, B), -1, dtype=torch.long, device=dev)
        rowmap[row_prompt, row_beam] = torch.arange(row_node.numel(), device=dev)
        top_s, top_i = grid.view(P, B * W).topk(min(2 * B, B * W), dim=1)
        parent = rowmap.gather(1, top_i // W)
        ok = torch.isfinite(top_s) & (parent >= 0) & ~done[:, None]
        pr = parent.clamp(min=0)
        child = trie.step(row_node[pr], tokens[pr, top_i % W])
        child = torch.where(ok, child, torch.full_like(child, -1))
        rank = torch.arange(top_s.shape[1], device=dev)
        fin = ok & (trie.item_counts(child) > 0) & (rank < B)[None, :]
        run = ok & (trie.num_children(child) > 0)
        run_rank = run.long().cumsum(1) - 1
        keep = run & (run_rank < B)
        # the B-th extendable prefix kept at this step (-inf when fewer than B are kept)
        bth = (keep & (run_rank == B - 1))
        thresholds[:, t] = torch.where(bth, top_s, torch.full_like(top_s, NEG_INF)).amax(1)
        # finished list: the B best complete hypotheses so far, normalised like HF's BeamSearchScorer
        norm = top_s
        if length_penalty != 0.0:
            norm = top_s / trie.depth[child.clamp(min=0)].float() ** length_penalty
        merged_s = torch.cat([fin_scores, torch.where(fin, norm, torch.full_like(norm, NEG_INF))], 1)
        merged_n = torch.cat([fin_nodes, child], 1)
        fin_scores, idx = merged_s.topk(B, dim=1)
        fin_nodes = torch.where(torch.isfinite(fin_scores), merged_n.gather(1, idx), torch.full_like(idx, -1))
        # stop a prompt when nothing is left to extend, or (optionally) when no extension can still enter
        best = torch.where(keep, top_s, torch.full_like(top_s, NEG_INF)).amax(1)
        if length_penalty > 0:
            bound = best / float(max(max_steps, t + 2)) ** length_penalty
        elif length_penalty < 0:
            bound = best / float(t + 2) ** length_penalty
        else:
            bound = best
        stop = ~keep.any(1)
        if early_stop:
            stop |= torch.isfinite(fin_scores[:, B - 1]) & (bound <= fin_scores[:, B - 1])
        done |= stop
        keep &= ~done[:, None]
        p_idx, j = keep.nonzero(as_tuple=True)
        if p_idx.numel() == 0 or t == max_steps - 1:
            break
        new_parent = parent[p_idx, j]
        new_tokens = tokens[new_parent, (top_i % W)[p_idx, j]]
        parent_slot = row_beam[new_parent]
        row_prompt, row_beam = p_idx, run_rank[p_idx, j]
        row_node, row_score = child[p_idx, j], top_s[p_idx, j]
        if tree is not None:
            logits = tree.step(row_prompt, row_beam, parent_slot, new_tokens, offset=t)
            continue
        cache.reorder_cache(new_parent)
        logits, cache = extend(model, new_tokens[:, None], cache, attention_mask[row_prompt],
                               prompt_len[row_prompt], offset=t)
        logits = logits[:, -1, :]
    return _Result(fin_nodes, fin_scores, thresholds)


@torch.no_grad()
def beam_search(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, trie: ItemTrie,
                num_beams: int, *, score: str = "full", length_penalty: float = 0.0,
                max_new_tokens: int | None = None) -> list[list[Hypothesis]]:
    """Constrained beam search: for each left-padded prompt, up to `num_beams` catalog entries, best first.

    `score` is 'full' (SFT: softmax over the vocabulary, then invalid tokens removed) or 'masked'
    (MSL/BEAR: softmax over the valid children). A hypothesis's score is the sum of its token log-probs,
    divided by len**length_penalty when length_penalty != 0 (len counts the EOS token), as in HF.
    `max_new_tokens` defaults to the trie's depth; entries longer than it are never returned.
    """
    steps = trie.max_depth if max_new_tokens is None else int(max_new_tokens)
    res = _search(model, input_ids, attention_mask, trie, num_beams, score, length_penalty, steps, True)
    trie = trie.to(res.fin_nodes.device)
    out: list[list[Hypothesis]] = []
    for nodes, scores in zip(res.fin_nodes, res.fin_scores):
        live = nodes >= 0
        out.append(hypotheses(trie, nodes[live], scores[live]))
    return out


@torch.no_grad()
def beam_thresholds(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, trie: ItemTrie,
                    num_beams: int, *, score: str = "full", max_steps: int) -> torch.Tensor:
    """(batch, max_steps) cumulative log-prob of the B-th prefix beam search keeps at each step (objective 3.1).

    Column t is the step that generates token t+1: after ranking every valid continuation of the live
    beams, beam search keeps the B best ones that can still be extended; the value is the cumulative
    (unnormalised) log-prob of the B-th of those, so a positive prefix y_<=t+1 (not complete) is kept
    iff its parent was kept and its log-prob is >= this value (ties aside). -inf where fewer than B
    prefixes are kept, and at every step after the search has nothing left to extend. No early
    stopping on finished hypotheses is applied here, so every step a beam could reach is reported.
    """
    res = _search(model, input_ids, attention_mask, trie, num_beams, score, 0.0, int(max_steps), False)
    return res.thresholds
