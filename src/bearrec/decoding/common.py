"""Pieces shared by beam search, exact top-K and teacher-forced scoring: model calls, step scores, trie paths.

Everything works on the public model forward of a causal LM and on `ItemTrie`'s flat tensors, so
masks and scores for all beams of all prompts are a handful of tensor operations per step.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Protocol, Sequence

import torch

from ..errors import ConfigError
from ..models import logits_to_keep
from ..trie import ItemTrie

SCORE_MODES = ("full", "masked")


@dataclass
class Hypothesis:
    """One decoded catalog entry: its tokens, every item sharing them, and its (normalised) log-probability."""

    tokens: list[int]
    item_ids: list[str]
    score: float


class Rescorer(Protocol):
    """What changes each candidate token's score before beam search ranks it (D3, IGD's decoding)."""

    def to(self, device: torch.device) -> "Rescorer": ...

    def scores(self, trie: ItemTrie, llm: torch.Tensor, nodes: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """(P*S, W) new scores of the candidates `tokens` (P*S, W) of slots `nodes` (P, S), from their LLM log-probs
        `llm` (-inf where not a child)."""
        ...


def check_score_mode(score_mode: str) -> None:
    """Reject a score mode other than 'full' (softmax over the vocabulary) or 'masked' (over valid children)."""
    if score_mode not in SCORE_MODES:
        raise ConfigError(f"unknown score mode {score_mode!r}. Fix: use 'full' (SFT) or 'masked' (MSL/BEAR).")


def cache_kwarg(model: Any) -> str:
    """The forward keyword of the KV cache: `cache` in recent transformers 5.x, `past_key_values` before."""
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def output_cache(out: Any) -> Any:
    """The KV cache a forward returned (attribute name depends on the transformers release)."""
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values


def tree_attention(model: Any) -> bool:
    """Whether the model's attention takes a custom 4-D mask (sdpa and eager do; flash attention does not)."""
    return getattr(model.config, "_attn_implementation", None) in ("sdpa", "eager")


def custom_mask(model: Any, allowed: torch.Tensor) -> torch.Tensor:
    """A (batch, queries, keys) boolean "may attend" tensor as the 4-D mask the model's attention takes."""
    mask = allowed[:, None]
    if getattr(model.config, "_attn_implementation", None) == "eager":  # eager adds the mask to the scores
        return torch.zeros(mask.shape, device=mask.device).masked_fill_(~mask, torch.finfo(torch.float32).min)
    return mask


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask) of token lists padded on the left, the layout decoding expects."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros(len(prompts), width, dtype=torch.long)
    for r, p in enumerate(prompts):
        ids[r, width - len(p):] = torch.as_tensor(list(p), dtype=torch.long)
        mask[r, width - len(p):] = 1
    return ids, mask


def positions_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids that make a left-padded row give the same logits as the unpadded row."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def prepare_inputs(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                   trie: ItemTrie) -> tuple[torch.Tensor, torch.Tensor, ItemTrie]:
    """Move prompts and trie to the model's device; check left padding and the trie's token range."""
    device = next(model.parameters()).device
    input_ids = input_ids.to(device)
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    attention_mask = attention_mask.to(device)
    if input_ids.shape[0] and attention_mask.shape[1] and not bool(attention_mask[:, -1].all()):
        raise ConfigError("prompts must be LEFT-padded (the last column of attention_mask has a 0). "
                          "Fix: set tokenizer.padding_side = 'left'.")
    vocab = model.get_output_embeddings().weight.shape[0] if model.get_output_embeddings() is not None \
        else model.config.vocab_size
    if trie.edge_token.numel() and int(trie.edge_token.max()) >= vocab:
        raise ConfigError(f"the trie holds token id {int(trie.edge_token.max())} but the model's vocabulary has "
                          f"{vocab} entries. Fix: build the trie with the model's own tokenizer.")
    if trie.device != device:
        trie = trie.to(device)
    return input_ids, attention_mask, trie


def prefill(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, Any]:
    """One forward over the (left-padded) prompts: the last position's float32 logits and the KV cache."""
    out = model(input_ids=input_ids, attention_mask=attention_mask,
                position_ids=positions_from_mask(attention_mask), use_cache=True, **logits_to_keep(model, 1))
    return out.logits[:, -1, :].float(), output_cache(out)


def extend(model: Any, tokens: torch.Tensor, cache: Any, prompt_mask: torch.Tensor,
           prompt_len: torch.Tensor, offset: int) -> tuple[torch.Tensor, Any]:
    """Feed `tokens` (rows, n) after `offset` generated tokens on top of `cache`; return all float32 logits.

    `prompt_mask` (rows, prompt width) and `prompt_len` (rows,) describe each row's own prompt.
    """
    rows, n = tokens.shape
    ones = torch.ones(rows, offset + n, dtype=prompt_mask.dtype, device=prompt_mask.device)
    mask = torch.cat([prompt_mask, ones], dim=1)
    pos = prompt_len[:, None] + offset + torch.arange(n, device=tokens.device)[None, :]
    out = model(input_ids=tokens, attention_mask=mask, position_ids=pos, use_cache=True,
                **{cache_kwarg(model): cache})
    return out.logits.float(), output_cache(out)


def child_log_probs(logits: torch.Tensor, tokens: torch.Tensor, valid: torch.Tensor, score_mode: str) -> torch.Tensor:
    """Log-probs of each row's candidate `tokens` (rows, width); -inf where not `valid`.

    'full': log-softmax over the whole vocabulary, then restricted to the valid tokens (the order of HF's
    prefix_allowed_tokens_fn); 'masked': log-softmax over the valid children only (MSL/BEAR training).
    """
    neg_inf = logits.new_full((), float("-inf"))  # made on the device: no host-to-device copy (a sync on CUDA)
    if score_mode == "full":
        picked = torch.log_softmax(logits, dim=-1).gather(1, tokens)
        return torch.where(valid, picked, neg_inf)
    picked = torch.where(valid, logits.gather(1, tokens), neg_inf)
    out = torch.log_softmax(picked, dim=-1)
    return torch.where(valid, out, neg_inf)  # rows without valid children give nan; keep -inf


def hypotheses(trie: ItemTrie, nodes: torch.Tensor, scores: torch.Tensor) -> list[Hypothesis]:
    """Hypotheses for complete nodes with their scores."""
    seqs = trie.sequences(nodes)
    return [Hypothesis(tokens=s, item_ids=trie.items_at(int(n)), score=float(sc))
            for s, n, sc in zip(seqs, nodes.tolist(), scores.tolist())]


def select_cache(model: Any, cache: Any, rows: torch.Tensor) -> Any:
    """A fresh DynamicCache holding the given batch rows of `cache` (which stays untouched)."""
    from transformers import DynamicCache  # transformers takes seconds to import: only when a search runs

    data = [(layer.keys.index_select(0, rows), layer.values.index_select(0, rows)) for layer in cache.layers]
    return DynamicCache(data, config=model.config)
