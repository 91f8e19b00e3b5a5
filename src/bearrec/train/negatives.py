"""Catalog items sampled for each training row and scored under its prompt: the negatives of apao-pairwise.

The authors score K uniformly sampled items per row by teacher-forcing them after the row's prompt on its repeated KV
cache. So does this, on the batch's own forward: its cache holds the prompt (the target's positions are masked out
of the negatives' attention), the first token's log-probs are the target's first step, and only the negatives'
first S - 1 tokens go through the model (S: the batch's longest response less one, its proper prefix lengths).
Cost: K (S - 1) more tokens per row, K copies of its KV cache and (R K, S - 1, vocabulary) logits.
"""
from __future__ import annotations

from typing import Any

import torch

from ..decoding.common import cache_kwarg, output_cache, select_cache
from ..errors import ConfigError
from ..methods.spec import Negatives
from ..trie import ItemTrie
from .batches import IGNORE


def proper_prefix_nodes(trie: ItemTrie, leaves: torch.Tensor, width: int) -> torch.Tensor:
    """(n, width) the node after each sequence's first t tokens, t = 1..width; -1 where t >= its length (the
    sequence ending at `leaves` has no proper prefix that long)."""
    out = torch.full((leaves.numel(), width), -1, dtype=torch.long, device=trie.device)
    cur = leaves.to(trie.device).clone()
    last = trie.depth[cur] - 1  # the longest proper prefix
    for _ in range(trie.max_depth):
        depth = trie.depth[cur.clamp(min=0)]
        keep = (cur >= 0) & (depth >= 1) & (depth <= last) & (depth <= width)
        rows = keep.nonzero(as_tuple=True)[0]
        out[rows, depth[rows] - 1] = cur[rows]
        cur = torch.where(cur > 0, trie.parent[cur.clamp(min=0)], torch.full_like(cur, -1))
    return out


def prefix_counts(trie: ItemTrie, width: int) -> torch.Tensor:
    """(width,) how many distinct proper prefixes of length t = 1..width the catalog has (trie nodes at depth t with
    a child)."""
    depths = trie.depth[trie.inner]
    counts = torch.bincount(depths, minlength=width + 1)[1:width + 1]
    return counts.to(torch.float32)


def batch_generator(seed: int, rank: int, step: int, input_ids: torch.Tensor) -> torch.Generator:
    """A generator for one batch's negatives, fixed by the seed, the process, the step and the batch's tokens: a
    rerun or a resumed run samples the same ones, and each micro-batch and epoch other ones."""
    ids = input_ids.long().cpu()
    weighted = (ids * torch.arange(1, ids.shape[1] + 1)).sum(1)  # the token order counts too
    key = hash((seed, rank, step, tuple(ids.sum(1).tolist()), tuple(weighted.tolist())))
    return torch.Generator().manual_seed(key % (2 ** 63))


def sample_items(trie: ItemTrie, rows: int, k: int, generator: torch.Generator) -> torch.Tensor:
    """(rows, k) end nodes of catalog items drawn uniformly with replacement, as the authors sample."""
    drawn = torch.randint(trie.num_items, (rows, k), generator=generator)
    return trie.item_end_nodes()[drawn.to(trie.device)]


def score_negatives(model: Any, outputs: Any, attention_mask: torch.Tensor, labels: torch.Tensor,
                    nodes: torch.Tensor, trie: ItemTrie, k: int, generator: torch.Generator) -> Negatives:
    """K sampled items per row scored after its prompt, from the batch's forward `outputs` (its logits of the last
    positions and its KV cache); `attention_mask`/`labels`/`nodes` (R, W) are the batch's, unshifted."""
    cache = output_cache(outputs)
    if cache is None:
        raise ConfigError("apao-pairwise scores its negatives on the batch's KV cache, and the forward returned none "
                          "(gradient checkpointing turns it off). Fix: set training.gradient_checkpointing=false, or "
                          "use the apao objective.")
    is_label = labels != IGNORE
    rows, width = labels.shape
    step = is_label.long().cumsum(1) - 1
    longest = int(is_label.sum(1).max())
    steps = torch.full((rows, longest), -1, dtype=torch.long, device=labels.device)
    r, c = is_label.nonzero(as_tuple=True)
    steps[r, step[r, c]] = nodes[r, c].to(labels.device)
    positive = steps[:, 1:].to(trie.device)  # the node after the target's first t tokens = before token t + 1
    s = longest - 1
    counts = prefix_counts(trie, s)
    leaves = sample_items(trie, rows, k, generator).reshape(-1)
    prefixes = proper_prefix_nodes(trie, leaves, s)  # (R * K, S)
    if s == 0:
        empty = outputs.logits.new_zeros((rows, k, 0), dtype=torch.float32)
        return Negatives(empty, prefixes.reshape(rows, k, 0), positive, counts)
    tokens = torch.where(prefixes >= 0, trie.token[prefixes.clamp(min=0)], torch.zeros_like(prefixes))
    logits = outputs.logits
    first = is_label.long().argmax(1) - 1 - (width - logits.shape[1])  # the position that predicts the first label
    first_lp = torch.log_softmax(logits[torch.arange(rows, device=logits.device), first].float(), dim=-1)
    lp = [first_lp.gather(1, tokens[:, 0].reshape(rows, k).to(logits.device))[..., None]]  # (R, K, 1)
    if s > 1:
        repeat = torch.arange(rows, device=labels.device).repeat_interleave(k)
        prompt = (attention_mask.bool() & ~is_label)[repeat].long()
        mask = torch.cat([prompt, torch.ones(rows * k, s - 1, dtype=torch.long, device=prompt.device)], dim=1)
        position = prompt.sum(1, keepdim=True) + torch.arange(s - 1, device=prompt.device)[None, :]
        out = model(input_ids=tokens[:, :s - 1].to(prompt.device), attention_mask=mask, position_ids=position,
                    use_cache=True, **{cache_kwarg(model): select_cache(model, cache, repeat.to(logits.device))})
        scores = out.logits.float()  # log p = logit - logsumexp: no second (rows, S, V) tensor kept for backward
        rest = scores.gather(2, tokens[:, 1:, None].to(scores.device)) - torch.logsumexp(scores, -1, keepdim=True)
        lp.append(rest.reshape(rows, k, s - 1))
    return Negatives(torch.cat(lp, dim=2), prefixes.reshape(rows, k, s), positive, counts)
