"""IGD's decoding (Lin et al., arXiv 2506.13229, the authors' `TrieLogitsProcessor`): decisive tokens cost less.

Every trie node carries the entropy mass of the items below it, H(node) = Σ −p_i·log p_i with p_i an item's share
of the training targets (an item never a target adds 0). A child's information gain is what choosing it removes,
IG = H(node) − H(child) ≥ 0. Among a node's children the gains are min-max scaled to [0, 1], and each candidate
token's log-probability is multiplied by 1 − weight·IG_scaled: the most decisive child's log-prob shrinks towards 0
(it costs less), the least decisive keeps its own; a node whose children all gain the same (one child included)
changes nothing. The authors subtract 1e-7 from every score first; bearrec leaves it out.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..searches import check_weight
from ..trie import ItemTrie


def node_entropy(trie: ItemTrie, item_counts: torch.Tensor) -> torch.Tensor:
    """(trie nodes,) H(node): Σ −p·log p over the items at or below each node, p = count / total count.

    `item_counts` is (trie.num_items,), column i for trie.item_ids[i]."""
    counts = item_counts.to(trie.device, torch.float64)
    total = counts.sum()
    p = counts / total if total > 0 else counts
    own = torch.where(p > 0, -p * torch.log(p.clamp_min(1e-300)), torch.zeros_like(p))
    return trie.sum_below(own)


@dataclass
class IGScaling:
    """IGD's decoding for a trie: each node's entropy mass, and the weight of the scaling (the authors' alpha)."""

    entropy: torch.Tensor  # (trie nodes,), from `node_entropy`
    weight: float

    @classmethod
    def from_counts(cls, trie: ItemTrie, item_counts: torch.Tensor, weight: float) -> "IGScaling":
        check_weight(weight, "igd")
        return cls(node_entropy(trie, item_counts), float(weight))

    def to(self, device: torch.device) -> "IGScaling":
        return IGScaling(self.entropy.to(device), self.weight)

    def scores(self, trie: ItemTrie, llm: torch.Tensor, nodes: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """(P*S, W) each candidate's log-prob times 1 − weight·IG_scaled (module docstring); -inf stays -inf."""
        parents = nodes.reshape(-1, 1).expand_as(tokens)
        child = trie.step(parents, tokens)
        valid = (child >= 0) & torch.isfinite(llm)  # a padding slot can name a real child: its log-prob is -inf
        gain = (self.entropy[parents.clamp(min=0)] - self.entropy[child.clamp(min=0)]).float()
        big = torch.finfo(gain.dtype).max
        low = torch.where(valid, gain, gain.new_full((), big)).amin(1, keepdim=True)
        high = torch.where(valid, gain, gain.new_full((), -big)).amax(1, keepdim=True)
        spread = high - low
        scaled = torch.where(spread > 0, (gain - low) / (spread + 1e-7), torch.zeros_like(gain))
        factor = 1.0 - self.weight * scaled
        return torch.where(valid, llm * factor, llm.new_full((), float("-inf")))
