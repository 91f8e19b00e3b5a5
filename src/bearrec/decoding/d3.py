"""D3 ("Decoding Matters", Bao et al. 2024, arXiv 2406.14900) on the item trie: how beam search scores a token.

- **No length normalisation, ghost tokens left out.** A ghost token is one whose probability given its prefix is
  near 1 (the rest of a title once its first words fix it). D3 found that dividing a title's log-probability by
  its length favours titles with many of them. bearrec's beam search sums log-probs without normalising, and under
  D3 a token of probability >= GHOST_PROB adds nothing at all.
- **The text-free assistant.** An ID-based model's distribution over the catalog (bearrec's SASRec baseline) is
  turned into a distribution over each trie node's children: the assistant mass of the items below the child over
  that below the node. A candidate token then scores (1 - weight) * LLM log-prob + weight * assistant log-prob,
  D3's `guidance_scale * (llm - cf) + cf` with weight = 1 - guidance_scale. D3's code takes the best item below a
  child (its comment offers "max or sum"); bearrec takes the sum, so that the assistant's token scores along a
  title add up to its log-probability of the item.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..searches import check_weight
from ..trie import ItemTrie

GHOST_PROB = 0.99  # a token at least this probable given its prefix is a ghost token: it adds 0 to the score
GHOST_LOG_PROB = math.log(GHOST_PROB)
TINY = 1e-300  # the least assistant mass a subtree is given (float64), so that log-masses stay finite


def subtree_log_mass(trie: ItemTrie, item_probs: torch.Tensor) -> torch.Tensor:
    """(prompts, trie nodes): the log of the assistant probability of the items below (or at) each node.

    `item_probs` is (prompts, trie.num_items), column i for trie.item_ids[i]."""
    mass = trie.sum_below(item_probs.to(trie.device, torch.float64))
    return mass.clamp_min(TINY).log().float()


@dataclass
class D3:
    """D3 scoring for one batch of prompts: ghost tokens left out, and the text-free assistant when given (each trie
    node's assistant log-mass per prompt, and its weight). `D3()` is D3 without an assistant."""

    log_mass: torch.Tensor | None = None  # (prompts, trie nodes), from `subtree_log_mass`
    weight: float = 0.0

    @classmethod
    def with_assistant(cls, trie: ItemTrie, item_scores: torch.Tensor, weight: float) -> "D3":
        """D3 with the assistant of `item_scores` (prompts, trie.num_items): logits over the catalog, softmaxed as
        D3 does."""
        check_weight(weight)
        return cls(subtree_log_mass(trie, torch.softmax(item_scores.double(), dim=-1)), float(weight))

    def to(self, device: torch.device) -> "D3":
        return D3(None if self.log_mass is None else self.log_mass.to(device), self.weight)

    def scores(self, trie: ItemTrie, llm: torch.Tensor, nodes: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """(P*S, W) D3's score of each candidate token of slots `nodes` (P, S), whose candidates are `tokens`
        (P*S, W) with LLM log-probs `llm` (-inf where not a child): ghost tokens count 0, then the assistant mixes in."""
        neg_inf = llm.new_full((), float("-inf"))
        valid = torch.isfinite(llm)
        llm = torch.where(llm >= GHOST_LOG_PROB, torch.zeros_like(llm), llm)
        if self.log_mass is None or self.weight == 0:
            return torch.where(valid, llm, neg_inf)
        helper = self.assistant_log_probs(trie, nodes, tokens)
        mixed = (1.0 - self.weight) * llm + self.weight * helper
        return torch.where(valid & torch.isfinite(helper), mixed, neg_inf)

    def assistant_log_probs(self, trie: ItemTrie, nodes: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """(P*S, W) the assistant's log-prob of each candidate token given its slot's node (-inf: not a child)."""
        assert self.log_mass is not None
        P, S = nodes.shape
        parents = nodes.reshape(-1, 1).expand_as(tokens)
        child = trie.step(parents, tokens)
        prompt = torch.arange(P, device=tokens.device).repeat_interleave(S)[:, None].expand_as(tokens)
        out = self.log_mass[prompt, child.clamp(min=0)] - self.log_mass[prompt, parents.clamp(min=0)]
        return torch.where(child >= 0, out, out.new_full((), float("-inf")))
