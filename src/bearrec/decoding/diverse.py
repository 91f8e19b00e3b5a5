"""Diverse beam search over the item trie: G groups of B/G beams, each group penalised for choosing, at a step, the
tokens that earlier groups' beams chose at that step (Vijayakumar et al. 2016; the BEAR paper's future work).

Semantics are those of HF transformers 4.x group beam search (`num_beam_groups=G`, `diversity_penalty=λ`, Hamming
diversity, `early_stopping="never"`, length penalty 0) with the trie constraint and finishing of `beam_search`:

- at each step the groups run in order 0..G-1. Group g's token score is the log-prob (`score_mode`) of a valid trie
  child minus λ × the number of beams of groups < g of the same prompt that took the same token id at this step (the
  beams that continue: a candidate that only completes an item is no beam); it is added to the beam's cumulative
  score, so hypotheses are ranked by penalised scores, as in HF;
- each group then makes one ordinary beam-search step with its own B/G beams: of its 2B/G best candidates, the
  complete ones among the first B/G enter the group's finished list (kept to its B/G best), and the B/G best ones
  that can be extended are its next beams. All groups start from the prompt alone;
- a group stops, as an HF group does, once its finished list is full and its best candidate scores no higher than
  the list's worst (nothing can enter any more), or when nothing is left to extend;
- at the end the groups' finished lists of a prompt are merged and sorted by score, and at most B returned.

Two differences from HF: a trie node (an item text) found by several groups is returned once, with its best score
(HF would list it again: a recommendation list must not repeat an item); and a stopped group penalises nothing,
where HF feeds it pad tokens that still count against the later groups. As in `beam_search`, there are never
placeholders. With G = 1 the search is `beam_search` (tested).

All groups share one model forward per step: every beam slot of a prompt, whatever its group, is one query of the
step's `TreeFeed` / `FlatFeed` call; each slot records its group. Transformers 5 no longer ships group beam search
(`generate(num_beam_groups=...)` asks for the Hub repo transformers-community/group-beam-search), and bearrec
never calls `generate`.
"""
from __future__ import annotations

from typing import Any

import torch

from ..errors import ConfigError
from ..trie import ItemTrie
from .beam_search import CHECK_EVERY, NEG_INF, children_at, choose, start_search
from .common import Hypothesis, check_score_mode, child_log_probs, hypotheses, prepare_inputs


def check_groups(num_beams: int, groups: int, diversity_penalty: float) -> None:
    """Refuse a beam width that G groups cannot share evenly, and a negative (or NaN) diversity penalty."""
    if num_beams < 1:
        raise ConfigError(f"num_beams must be at least 1, got {num_beams}. Fix: pass a positive beam width.")
    if groups < 1 or groups > num_beams or num_beams % groups:
        raise ConfigError(f"diverse beam search splits num_beams={num_beams} into groups={groups} groups of equal "
                          f"size, which is impossible. Fix: use a number of groups between 1 and {num_beams} that "
                          f"divides {num_beams}.")
    if not diversity_penalty >= 0:
        raise ConfigError(f"diversity_penalty must be >= 0, got {diversity_penalty}. Fix: use 0 (no penalty) or a "
                          f"positive penalty such as 0.5.")


def _search(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, trie: ItemTrie,
            num_beams: int, groups: int, penalty: float, score_mode: str, steps: int
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """The step loop (module docstring): finished nodes and scores (P, groups, B/groups), -1 / -inf where empty."""
    check_score_mode(score_mode)
    check_groups(num_beams, groups, penalty)
    input_ids, attention_mask, trie = prepare_inputs(model, input_ids, attention_mask, trie)
    dev = input_ids.device
    P, G, k = input_ids.shape[0], groups, num_beams // groups
    fin_nodes = torch.full((P, G, k), -1, dtype=torch.long, device=dev)
    fin_scores = torch.full((P, G, k), NEG_INF, device=dev)
    if P == 0 or steps == 0 or trie.edge_token.numel() == 0:
        return fin_nodes, fin_scores
    fanout, logits, feed, static = start_search(model, input_ids, attention_mask, trie, steps)
    # beam slots (P, S) as in beam_search; slot_group says whose beam a slot holds (-1: the root, every group's).
    # Static shapes: group g owns slots g*k .. g*k+k-1; otherwise a prompt's live beams come first, group by group.
    slot_node = torch.zeros(P, 1, dtype=torch.long, device=dev)
    slot_score = torch.zeros(P, 1, device=dev)
    slot_group = torch.full((P, 1), -1, dtype=torch.long, device=dev)
    done = torch.zeros(P, G, dtype=torch.bool, device=dev)
    for t in range(steps):
        S, W = slot_node.shape[1], fanout[t]
        tokens, valid = children_at(trie, slot_node.reshape(-1), W)
        log_p = child_log_probs(logits, tokens, valid, score_mode).view(P, S * W)
        tokens = tokens.view(P, S * W)
        parent_score = slot_score.repeat_interleave(W, 1)
        owner = slot_group.repeat_interleave(W, 1)
        chosen = torch.zeros(P, logits.shape[1], device=dev)  # per token id: beams of earlier groups taking it now
        picks = []  # per group: (kept, rank among the extendable, node, score, parent slot, token), each (P, C)
        for g in range(G):
            token_score = log_p - penalty * chosen.gather(1, tokens) if g else log_p
            cand = torch.where((owner == g) | (owner < 0), token_score + parent_score, NEG_INF)
            top_s, parent, tok, child, ok, fin, run_rank, keep = choose(
                trie, cand, tokens, slot_node, W, k, done[:, g, None])
            merged_s = torch.cat([fin_scores[:, g], torch.where(fin, top_s, NEG_INF)], 1)
            merged_n = torch.cat([fin_nodes[:, g], child], 1)
            best_s, idx = merged_s.topk(k, dim=1)
            fin_scores[:, g] = best_s
            fin_nodes[:, g] = torch.where(torch.isfinite(best_s), merged_n.gather(1, idx), -1)
            # the group stops when nothing is left to extend or its best candidate cannot enter its finished list
            best = torch.where(ok, top_s, NEG_INF).amax(1)
            done[:, g] |= ~keep.any(1) | (torch.isfinite(best_s[:, k - 1]) & (best <= best_s[:, k - 1]))
            chosen.scatter_add_(1, tok, keep.float())  # this step's beams, even of a group that just stopped
            picks.append((keep & ~done[:, g, None], run_rank, child, top_s, parent, tok))
        if t == steps - 1:
            break
        keep, run_rank, child, top_s, parent, tok = (torch.stack(field, 1) for field in zip(*picks))  # (P, G, C)
        if static:
            width, start = num_beams, torch.arange(G, device=dev)[None, :] * k
            if (t + 1) % CHECK_EVERY == 0 and bool(done.all()):  # every group of every prompt has stopped
                break
        else:
            kept = keep.sum(2)  # (P, G)
            width = int(kept.sum(1).max())
            if width == 0:
                break
            start = kept.cumsum(1) - kept
        # the next beams: group g's j-th kept candidate goes to slot start[g] + j; the others to a spare last column
        dest = torch.where(keep, run_rank + start[:, :, None], width).flatten(1)
        group_of = torch.arange(G, device=dev)[None, :, None].expand_as(keep)

        def scatter(values: torch.Tensor, fill: float) -> torch.Tensor:
            out = torch.full((P, width + 1), fill, dtype=values.dtype, device=dev)
            return out.scatter_(1, dest, values.flatten(1))[:, :width]

        slot_node, slot_score, slot_group = scatter(child, -1), scatter(top_s, NEG_INF), scatter(group_of, G)
        parent_slot, new_tokens = scatter(parent, 0), scatter(tok, 0)
        logits = feed.step(parent_slot, new_tokens, slot_node >= 0, offset=t)
    return fin_nodes, fin_scores


def merge_groups(nodes: list[int], scores: list[float], limit: int) -> tuple[list[int], list[float]]:
    """The best `limit` distinct nodes of the groups' finished lists, best first (ties: earlier group first)."""
    best: dict[int, float] = {}
    for node, score in sorted(zip(nodes, scores), key=lambda ns: -ns[1]):
        if node >= 0 and node not in best:
            best[node] = score
    picked = list(best.items())[:limit]
    return [n for n, _ in picked], [s for _, s in picked]


@torch.no_grad()
def diverse_beam_search(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, trie: ItemTrie,
                        num_beams: int, *, groups: int, diversity_penalty: float, score_mode: str = "full",
                        max_new_tokens: int | None = None) -> list[list[Hypothesis]]:
    """Trie-constrained diverse beam search: for each left-padded prompt, up to `num_beams` distinct catalog entries,
    best first by their penalised scores (module docstring); conventions as `beam_search` (length penalty 0)."""
    steps = trie.max_depth if max_new_tokens is None else int(max_new_tokens)
    nodes, scores = _search(model, input_ids, attention_mask, trie, num_beams, groups, float(diversity_penalty),
                            score_mode, steps)
    trie = trie.to(nodes.device)
    out: list[list[Hypothesis]] = []
    for row_nodes, row_scores in zip(nodes.flatten(1).tolist(), scores.flatten(1).tolist()):
        keep_nodes, keep_scores = merge_groups(row_nodes, row_scores, num_beams)
        out.append(hypotheses(trie, torch.tensor(keep_nodes, dtype=torch.long, device=nodes.device),
                              torch.tensor(keep_scores, dtype=torch.float64)))
    return out
