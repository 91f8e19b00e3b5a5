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

On an accelerator the step loop is GPU-shaped: every tensor's shape depends on the batch, B, the step and the
trie only, never on which beams are alive, and nothing in a step waits for the device. All P*B beam slots are
computed (a dead slot has score -inf and node -1, and feeds a dummy token that attends to its prompt and itself
only); each beam's candidates are its node's children read into a fixed width, the widest fan-out of the trie at
that depth; the next beams are scattered into their slots. The host looks at whether every prompt has finished
only every CHECK_EVERY steps (the result is the same either way: a finished prompt changes nothing). On a CPU,
where reading a value costs nothing but computing a dead slot does, the same loop reads the largest number of
live beams each step and feeds only that many slots (`static_shapes`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import torch

from ..errors import ConfigError
from ..trie import ItemTrie
from .common import (Hypothesis, cache_kwarg, check_score_mode, child_log_probs, custom_mask, extend,
                     hypotheses, output_cache, prefill, prepare_inputs, tree_attention)
from .common import Rescorer

NEG_INF = float("-inf")
CHECK_EVERY = 4  # steps between two looks of the host at whether every prompt has finished


@dataclass
class _Result:
    """Raw outcome of one batched search: finished nodes/scores (P, B) and per-step thresholds (P, steps)."""

    fin_nodes: torch.Tensor
    fin_scores: torch.Tensor
    thresholds: torch.Tensor


class TreeFeed:
    """The per-prompt cache rows of tree attention: which generated columns each beam slot descends from."""

    def __init__(self, model: Any, cache: Any, attention_mask: torch.Tensor, prompt_len: torch.Tensor):
        self.model, self.cache, self.prompt_len = model, cache, prompt_len
        self.prompt_mask = attention_mask.bool()
        self.anc = torch.zeros(attention_mask.shape[0], 1, 0, dtype=torch.bool, device=attention_mask.device)

    def step(self, parent_slot: torch.Tensor, tokens: torch.Tensor, live: torch.Tensor, offset: int) -> torch.Tensor:
        """Feed one token per beam slot (P, B): slot j of prompt p descends from slot parent_slot[p, j] of the
        previous step; dead slots (not `live`) attend to their prompt and themselves only. (P*B, vocab) logits."""
        P, B = tokens.shape
        G = self.anc.shape[2]
        inherited = self.anc.gather(1, parent_slot[:, :, None].expand(P, B, G)) & live[:, :, None]
        own = torch.eye(B, dtype=torch.bool, device=tokens.device).expand(P, B, B)
        self.anc = torch.cat([inherited, own], 2)
        mask = custom_mask(self.model, torch.cat([self.prompt_mask[:, None, :].expand(P, B, -1), self.anc], 2))
        pos = (self.prompt_len + offset)[:, None].expand(P, B)
        out = self.model(input_ids=tokens, attention_mask=mask, position_ids=pos, use_cache=True,
                         **{cache_kwarg(self.model): self.cache})
        self.cache = output_cache(out)
        return out.logits.reshape(P * B, -1).float()


class FlatFeed:
    """The fallback without custom masks: one cache row per beam slot, reordered each step."""

    def __init__(self, model: Any, cache: Any, attention_mask: torch.Tensor, prompt_len: torch.Tensor):
        self.model, self.cache = model, cache
        self.prompt_mask, self.prompt_len = attention_mask, prompt_len
        self.slots = 1  # cache rows per prompt: one after the prefill, one per beam slot after a step

    def step(self, parent_slot: torch.Tensor, tokens: torch.Tensor, live: torch.Tensor, offset: int) -> torch.Tensor:
        P, S = tokens.shape
        rows = (torch.arange(P, device=tokens.device)[:, None] * self.slots + parent_slot).reshape(-1)
        self.cache.reorder_cache(rows)
        self.slots = S
        logits, self.cache = extend(self.model, tokens.reshape(-1, 1), self.cache,
                                    self.prompt_mask.repeat_interleave(S, 0), self.prompt_len.repeat_interleave(S, 0),
                                    offset=offset)
        return logits[:, -1, :]


def static_shapes(device: torch.device) -> bool:
    """Whether the step loop keeps all B slots of every prompt and looks at the device only every CHECK_EVERY steps
    (an accelerator, whose queue a host read would drain), or feeds only the live slots, read each step (a CPU,
    where a read costs nothing and a dead slot's compute would)."""
    return device.type != "cpu"


def fanout_by_depth(trie: ItemTrie, steps: int) -> list[int]:
    """The widest fan-out among the trie's nodes at each depth 0..steps-1 (at least 1): how many candidates each beam
    has at each step, a property of the trie alone (read once, before the step loop)."""
    counts = trie.child_ptr.diff()
    widest = torch.zeros(int(trie.depth.max()) + 1, dtype=counts.dtype, device=counts.device)
    widest.scatter_reduce_(0, trie.depth.long(), counts, reduce="amax")
    found = widest.tolist()
    return [max(1, found[t]) if t < len(found) else 1 for t in range(steps)]


def children_at(trie: ItemTrie, nodes: torch.Tensor, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(tokens, valid), both (len(nodes), width): each node's next tokens in order, padded with 0 (node -1: none).

    Unlike `ItemTrie.padded_children`, the width is given, so the shapes do not depend on the nodes."""
    safe = nodes.clamp(min=0)
    start = trie.child_ptr[safe]
    count = torch.where(nodes >= 0, trie.child_ptr[safe + 1] - start, torch.zeros_like(start))
    cols = torch.arange(width, device=nodes.device)
    valid = cols[None, :] < count[:, None]
    edge = (start[:, None] + cols[None, :]).clamp(max=trie.edge_token.numel() - 1)
    return torch.where(valid, trie.edge_token[edge], torch.zeros_like(edge)), valid


def start_search(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, trie: ItemTrie,
                 steps: int) -> tuple[list[int], torch.Tensor, TreeFeed | FlatFeed, bool]:
    """A search's first forward and what its steps need: the trie's fan-out per depth, the prompts' last logits, the
    cache feeder (tree attention where the model takes custom masks) and whether shapes stay static."""
    fanout = fanout_by_depth(trie, steps)
    prompt_len = attention_mask.long().sum(1)
    logits, cache = prefill(model, input_ids, attention_mask)
    feed = TreeFeed(model, cache, attention_mask, prompt_len) if tree_attention(model) else \
        FlatFeed(model, cache, attention_mask, prompt_len)
    return fanout, logits, feed, static_shapes(input_ids.device)


class Choice(NamedTuple):
    """One step's ranked candidates (P, C) and what beam search makes of them (see `choose`)."""

    score: torch.Tensor  # cumulative scores, best first
    parent: torch.Tensor  # the slot each extends
    token: torch.Tensor
    child: torch.Tensor  # its trie node (-1 where not ok)
    ok: torch.Tensor  # a real candidate of a prompt still searching
    finished: torch.Tensor  # among the first `width`, and completes an item
    run_rank: torch.Tensor  # its rank among the candidates that can still be extended
    keep: torch.Tensor  # one of the `width` best that can still be extended: a next beam


def choose(trie: ItemTrie, cand: torch.Tensor, tokens: torch.Tensor, slot_node: torch.Tensor, fanout: int,
           width: int, stopped: torch.Tensor) -> Choice:
    """One beam-search step of `width` beams over the candidates `cand` (P, S*fanout) of slots `slot_node` (P, S), whose
    tokens are `tokens` (P, S*fanout): the 2*width best are ranked; `stopped` (P, 1) prompts choose nothing."""
    score, index = cand.topk(min(2 * width, cand.shape[1]), dim=1)
    parent = index // fanout
    token = tokens.gather(1, index)
    ok = torch.isfinite(score) & ~stopped
    child = torch.where(ok, trie.step(slot_node.gather(1, parent), token), -1)
    rank = torch.arange(score.shape[1], device=score.device)
    finished = ok & (trie.item_counts(child) > 0) & (rank < width)[None, :]
    run = ok & (trie.num_children(child) > 0)
    run_rank = run.long().cumsum(1) - 1
    return Choice(score, parent, token, child, ok, finished, run_rank, run & (run_rank < width))


def _search(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, trie: ItemTrie,
            num_beams: int, score_mode: str, length_penalty: float, max_steps: int, early_stop: bool,
            rescore: Rescorer | None = None) -> _Result:
    """The beam search loop (see the module docstring); all beam slots of all prompts advance together."""
    check_score_mode(score_mode)
    if num_beams < 1:
        raise ConfigError(f"num_beams must be at least 1, got {num_beams}.")
    input_ids, attention_mask, trie = prepare_inputs(model, input_ids, attention_mask, trie)
    if rescore is not None:
        rescore = rescore.to(input_ids.device)
    dev = input_ids.device
    P, B = input_ids.shape[0], num_beams
    fin_nodes = torch.full((P, B), -1, dtype=torch.long, device=dev)
    fin_scores = torch.full((P, B), NEG_INF, device=dev)
    thresholds = torch.full((P, max_steps), NEG_INF, device=dev)
    if P == 0 or max_steps == 0 or trie.edge_token.numel() == 0:
        return _Result(fin_nodes, fin_scores, thresholds)
    fanout, logits, feed, static = start_search(model, input_ids, attention_mask, trie, max_steps)
    # beam slots (P, S): S = 1 at the first step (the root), then B (static) or the most live beams of any prompt;
    # prompt p's live beams are its first slots, a dead slot has node -1 and score -inf
    slot_node = torch.zeros(P, 1, dtype=torch.long, device=dev)
    slot_score = torch.zeros(P, 1, device=dev)
    done = torch.zeros(P, dtype=torch.bool, device=dev)
    for t in range(max_steps):
        S, W = slot_node.shape[1], fanout[t]
        tokens, valid = children_at(trie, slot_node.reshape(-1), W)
        step = child_log_probs(logits, tokens, valid, score_mode)
        if rescore is not None:
            step = rescore.scores(trie, step, slot_node, tokens)
        cand = slot_score.reshape(-1, 1) + step
        top_s, parent, tok, child, ok, fin, run_rank, keep = choose(
            trie, cand.view(P, S * W), tokens.view(P, S * W), slot_node, W, B, done[:, None])
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
        if t == max_steps - 1:
            break
        if static:
            width = B
            if (t + 1) % CHECK_EVERY == 0 and not bool(keep.any()):
                break
        else:
            width = int(keep.sum(1).max())
            if width == 0:
                break
        # the next beams: prompt p's j-th kept candidate goes to slot j; the others to a spare last column
        dest = torch.where(keep, run_rank, torch.full_like(run_rank, width))
        slot_node = torch.full((P, width + 1), -1, dtype=torch.long, device=dev).scatter_(1, dest, child)[:, :width]
        slot_score = torch.full((P, width + 1), NEG_INF, device=dev).scatter_(1, dest, top_s)[:, :width]
        parent_slot = torch.zeros(P, width + 1, dtype=torch.long, device=dev).scatter_(1, dest, parent)[:, :width]
        new_tokens = torch.zeros(P, width + 1, dtype=torch.long, device=dev).scatter_(1, dest, tok)[:, :width]
        logits = feed.step(parent_slot, new_tokens, slot_node >= 0, offset=t)
    return _Result(fin_nodes, fin_scores, thresholds)


@torch.no_grad()
def beam_search(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, trie: ItemTrie,
                num_beams: int, *, score_mode: str = "full", length_penalty: float = 0.0,
                max_new_tokens: int | None = None, rescore: Rescorer | None = None) -> list[list[Hypothesis]]:
    """Constrained beam search: for each left-padded prompt, up to `num_beams` catalog entries, best first.

    `score_mode` is 'full' (SFT: softmax over the vocabulary, then invalid tokens removed) or 'masked'
    (MSL/BEAR: softmax over the valid children). A hypothesis's score is the sum of its token log-probs,
    divided by len**length_penalty when length_penalty != 0 (len counts the EOS token), as in HF.
    `max_new_tokens` defaults to the trie's depth; entries longer than it are never returned. `rescore` changes each
    candidate token's score before the ranking: D3's (`bearrec.decoding.d3.D3`) or IGD's (`...ig.IGScaling`).
    """
    steps = trie.max_depth if max_new_tokens is None else int(max_new_tokens)
    res = _search(model, input_ids, attention_mask, trie, num_beams, score_mode, length_penalty, steps, True, rescore)
    trie = trie.to(res.fin_nodes.device)
    out: list[list[Hypothesis]] = []
    for nodes, scores in zip(res.fin_nodes, res.fin_scores):
        live = nodes >= 0
        out.append(hypotheses(trie, nodes[live], scores[live]))
    return out


@torch.no_grad()
def beam_thresholds(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, trie: ItemTrie,
                    num_beams: int, *, score_mode: str = "full", max_steps: int) -> torch.Tensor:
    """(batch, max_steps) cumulative log-prob of the B-th prefix beam search keeps at each step (objective 3.1).

    Column t is the step that generates token t+1: after ranking every valid continuation of the live
    beams, beam search keeps the B best ones that can still be extended; the value is the cumulative
    (unnormalised) log-prob of the B-th of those, so a positive prefix y_<=t+1 (not complete) is kept
    iff its parent was kept and its log-prob is >= this value (ties aside). -inf where fewer than B
    prefixes are kept, and at every step after the search has nothing left to extend. No early
    stopping on finished hypotheses is applied here, so every step a beam could reach is reported.
    """
    res = _search(model, input_ids, attention_mask, trie, num_beams, score_mode, 0.0, int(max_steps), False)
    return res.thresholds
