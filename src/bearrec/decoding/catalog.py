"""Exact scores of every catalog item for a prompt: one pass over the trie's nodes with tree attention.

Every inner node of the trie is fed once, as a column that attends to the prompt and to its own ancestors only (a
4-D mask) at the position of its depth, so its logits are the next-token distribution after its prefix: every
edge's log-probability comes out of one forward, and an item's score is the sum along its path. Nodes go in
depth-first chunks. The only columns outside a chunk that its nodes attend to are the ancestors of its first node
(depth-first order), so each chunk is fed after that path, on a fresh copy of the prompts' cache. Cost per prompt:
one token per inner node plus at most the trie's depth per chunk, and every score is exact (always certified),
where best-first search (exact.py) may stop uncertified.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch

from ..errors import ConfigError
from ..models import logits_to_keep
from ..trie import ItemTrie
from .common import (cache_kwarg, check_score_mode, child_log_probs, custom_mask, hypotheses, prefill, prepare_inputs,
                     select_cache, tree_attention)
from .exact import CountResult, ExactResult, count_above, exact_top_k


def _ancestors(trie: ItemTrie, node: int) -> list[int]:
    """The proper ancestors of `node` below the root, shallowest first."""
    out = []
    cur = int(trie.parent[node])
    while cur > 0:
        out.append(cur)
        cur = int(trie.parent[cur])
    return out[::-1]


def _tree_mask(trie: ItemTrie, fed: torch.Tensor) -> torch.Tensor:
    """(len(fed), len(fed)) boolean: column j attends to column i when fed[i] is fed[j] or one of its ancestors."""
    n = trie.num_nodes
    where = torch.full((n,), -1, dtype=torch.long, device=fed.device)
    where[fed] = torch.arange(fed.numel(), device=fed.device)
    allowed = torch.zeros(fed.numel(), fed.numel(), dtype=torch.bool, device=fed.device)
    rows = torch.arange(fed.numel(), device=fed.device)
    cur = fed.clone()
    for _ in range(trie.max_depth):
        col = where[cur.clamp(min=0)]
        ok = (cur > 0) & (col >= 0)
        allowed[rows[ok], col[ok]] = True
        cur = torch.where(cur > 0, trie.parent[cur.clamp(min=0)], cur)
    return allowed


def _edge_log_probs(logits: torch.Tensor, nodes: torch.Tensor, trie: ItemTrie, score_mode: str,
                    edge_lp: torch.Tensor) -> None:
    """Write into edge_lp (prompts, nodes) the log-prob of each child edge of `nodes`, from their logits
    (prompts, len(nodes), vocab)."""
    P, Q, V = logits.shape
    children, valid = trie.padded_children(nodes)
    lp = child_log_probs(logits.reshape(P * Q, V), children.repeat(P, 1), valid.repeat(P, 1), score_mode)
    child = trie.step(nodes[:, None].expand_as(children).reshape(-1), children.reshape(-1)).reshape(children.shape)
    edge_lp[:, child[valid]] = lp.reshape(P, Q, -1)[:, valid]


@torch.no_grad()
def catalog_log_probs(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, trie: ItemTrie, *,
                      score_mode: str = "full", chunk_size: int = 512) -> torch.Tensor:
    """log P(prefix of node | prompt) for every node of `trie` and every (left-padded) prompt: (prompts, nodes)."""
    check_score_mode(score_mode)
    if chunk_size < 1:
        raise ConfigError(f"chunk_size must be >= 1, got {chunk_size}. Fix: e.g. 512.")
    if not tree_attention(model):
        raise ConfigError("scoring the whole catalog needs attention that takes a custom 4-D mask (sdpa or eager), "
                          f"not {getattr(model.config, '_attn_implementation', None)!r}. Fix: load the model with "
                          "attn_implementation='sdpa'.")
    input_ids, attention_mask, trie = prepare_inputs(model, input_ids, attention_mask, trie)
    P, W = input_ids.shape
    dev = input_ids.device
    edge_lp = torch.full((P, trie.num_nodes), float("-inf"), device=dev)
    root_logits, cache = prefill(model, input_ids, attention_mask)
    _edge_log_probs(root_logits[:, None], torch.zeros(1, dtype=torch.long, device=dev), trie, score_mode, edge_lp)
    prompt_len = attention_mask.sum(1)
    prompt_mask = attention_mask.bool()
    inner = trie.inner[trie.inner > 0]  # the root's children came from the prompt's last position
    all_rows = torch.arange(P, device=dev)
    for start in range(0, inner.numel(), chunk_size):
        chunk = inner[start:start + chunk_size]
        fed = torch.cat([torch.tensor(_ancestors(trie, int(chunk[0])), dtype=torch.long, device=dev), chunk])
        Q = fed.numel()
        ids = trie.token[fed][None, :].expand(P, Q)
        pos = prompt_len[:, None] + trie.depth[fed][None, :] - 1
        allowed = torch.cat([prompt_mask[:, None, :].expand(P, Q, W),
                             _tree_mask(trie, fed)[None].expand(P, Q, Q)], 2)
        out = model(input_ids=ids, attention_mask=custom_mask(model, allowed), position_ids=pos, use_cache=True,
                    **{cache_kwarg(model): select_cache(model, cache, all_rows)},
                    **logits_to_keep(model, chunk.numel()))  # its cache is dropped: each chunk starts anew
        _edge_log_probs(out.logits[:, -chunk.numel():].float(), chunk, trie, score_mode, edge_lp)
    node_lp = torch.zeros(P, trie.num_nodes, device=dev)
    for d in range(1, trie.max_depth + 1):
        level = torch.nonzero(trie.depth == d).squeeze(1)
        node_lp[:, level] = node_lp[:, trie.parent[level]] + edge_lp[:, level]
    return node_lp


def catalog_top_k(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, trie: ItemTrie, k: int,
                  *, score_mode: str = "full", chunk_size: int = 512) -> list[ExactResult]:
    """The k most probable catalog entries of each prompt from every item's exact score (always certified)."""
    node_lp = catalog_log_probs(model, input_ids, attention_mask, trie, score_mode=score_mode, chunk_size=chunk_size)
    dev = node_lp.device
    trie = trie.to(dev)
    ends, inner = trie.entries, trie.inner.numel()
    out = []
    for row in node_lp[:, ends]:
        best = torch.topk(row, min(k, ends.numel())).indices  # ties: torch's order (as best-first's heap)
        out.append(ExactResult(items=hypotheses(trie, ends[best], row[best]), certified=True, expansions=inner))
    return out


def certified_top_k(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, trie: ItemTrie, k: int,
                    *, score_mode: str = "full", max_expansions: int = 2000, chunk_size: int = 512) -> list[ExactResult]:
    """Best-first search (`exact_top_k`), then the whole catalog scored exactly for the rows it could not certify
    within `max_expansions`, so every row is certified (where the attention takes a 4-D mask; else they stay as
    best-first search left them). A rescored row's expansions add the inner nodes it was scored over."""
    found = exact_top_k(model, input_ids, attention_mask, trie, k, score_mode=score_mode, max_expansions=max_expansions)
    open_rows = [i for i, r in enumerate(found) if not r.certified]
    if open_rows and tree_attention(model):
        rows = torch.tensor(open_rows, device=input_ids.device)
        mask = None if attention_mask is None else attention_mask[rows]
        for i, res in zip(open_rows, catalog_top_k(model, input_ids[rows], mask, trie, k, score_mode=score_mode,
                                                   chunk_size=chunk_size)):
            found[i] = ExactResult(items=res.items, certified=True, expansions=found[i].expansions + res.expansions)
    return found


def certified_count_above(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, trie: ItemTrie,
                          k: int, floors: Sequence[float], *, known: Sequence[Sequence[int]] | None = None,
                          exclude: Sequence[int] | None = None, score_mode: str = "full", max_expansions: int = 2000,
                          chunk_size: int = 512) -> list[CountResult]:
    """`count_above`, then the whole catalog scored exactly for the rows it could not settle within
    `max_expansions` (where the attention takes a 4-D mask), as `certified_top_k` does for the top k."""
    found = count_above(model, input_ids, attention_mask, trie, k, floors, known=known, exclude=exclude, score_mode=score_mode,
                        max_expansions=max_expansions)
    open_rows = [i for i, r in enumerate(found) if not r.certified]
    if open_rows and tree_attention(model):
        rows = torch.tensor(open_rows, device=input_ids.device)
        mask = None if attention_mask is None else attention_mask[rows]
        node_lp = catalog_log_probs(model, input_ids[rows], mask, trie, score_mode=score_mode, chunk_size=chunk_size)
        trie = trie.to(node_lp.device)
        ends, inner = trie.entries, trie.inner.numel()
        for j, i in enumerate(open_rows):
            n = int(((node_lp[j, ends] > floors[i]) & (ends != (exclude[i] if exclude is not None else -1))).sum())
            found[i] = CountResult(count=min(k, n), certified=True, expansions=found[i].expansions + inner)
    return found
