"""IGD, information-gain-weighted tuning (arXiv 2506.13229): the full-vocabulary cross-entropy of each response token,
weighted by beta where the token carries no information gain on the item trie, normalised by the weights' sum.

A token's information gain is the drop in entropy of the items consistent with its prefix (uniform over the catalog:
log(items under the prefix / items under the prefix and the token)). It is zero exactly where the prefix has one
trie child, so those tokens get beta and the others 1, as in the authors' tuning. Where this differs from the
authors' code is in docs/objectives-of-the-field.md.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..config_checks import check_fields, check_range
from .spec import LabelTokens, Objective, Settings

if TYPE_CHECKING:
    import torch


@dataclass
class IgdParams:
    """IGD's own hyperparameter (objective.params.beta), with the authors' default."""

    beta: float = 0.1  # the weight of zero-information-gain tokens (1.0: plain SFT)

    def __post_init__(self) -> None:
        check_fields(self, "objective.params.")
        check_range("objective.params.beta", self.beta, 0 <= self.beta < math.inf, ">= 0 and finite", 0.1)


def igd_batch_loss(t: LabelTokens, o: Settings) -> torch.Tensor:
    """N * sum_t w_t CE_t / sum_t w_t: the authors' weighted mean over the batch's tokens, times the token count N
    (the trainer divides by it); w_t = beta where the token's prefix has one child, else 1."""
    from .. import losses  # torch: only when training, not when a report reads method names

    ce = losses.sft_loss(t.logits, t.targets)
    weights = losses.igd_weights(t.child_valid.sum(1), o.settings().beta).to(ce.device)
    return int(t.targets.numel()) * (weights * ce).sum() / weights.sum().clamp(min=1e-12)


OBJECTIVE = Objective("igd", "cross-entropy down-weighted on tokens with no information gain on the item trie (IGD)",
                      "full", igd_batch_loss, params=IgdParams)
