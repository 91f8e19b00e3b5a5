"""APAO, prefix-aware optimisation (arXiv 2603.02730): the full-vocabulary cross-entropy plus beta times a weighted sum,
over the target's proper prefix lengths t, of a prefix loss L_t; the weights adapt to the losses (eta).

`apao`: L_t is the length-normalised prefix NLL. `apao-pairwise`: L_t is a softmax of the target's prefix against
the prefixes of catalog items sampled for each row, which the trainer scores under the row's prompt (`Negatives`).
The forms, and where they differ from the authors' code, are in docs/objectives-of-the-field.md.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..config_checks import check_fields, check_range
from ..errors import ConfigError
from .spec import LabelTokens, Objective, Settings

if TYPE_CHECKING:
    import torch


@dataclass
class ApaoParams:
    """APAO's own hyperparameters (objective.params.KEY), with the authors' defaults."""

    beta: float = 0.1        # the weight of the prefix term
    prefix_tau: float = 1.0  # the prefix scores' temperature
    eta: float = 0.0         # the adaptive weights' exponent: w_t ~ L_t * exp(eta * L_t)

    def __post_init__(self) -> None:
        check_fields(self, "objective.params.")
        check_range("objective.params.beta", self.beta, 0 <= self.beta < math.inf, ">= 0 and finite", 0.1)
        check_range("objective.params.prefix_tau", self.prefix_tau, 0 < self.prefix_tau < math.inf,
                    "> 0 and finite", 1.0)
        check_range("objective.params.eta", self.eta, -math.inf < self.eta < math.inf, "finite", 0.0)


@dataclass
class ApaoPairwiseParams(ApaoParams):
    """APAO pairwise's hyperparameters: APAO's and the number of catalog items sampled per row (authors: 100)."""

    num_negatives: int = 100

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range("objective.params.num_negatives", self.num_negatives, self.num_negatives >= 1,
                    "an integer >= 1", 100)


def weighted_prefix_term(t: LabelTokens, per_row: torch.Tensor, valid: torch.Tensor, p: ApaoParams) -> torch.Tensor:
    """The batch sum of CE + beta * sum_t w_t L_t (the authors' batch mean, times the token count: the trainer
    divides by it), L_t the mean of `per_row` over the rows with a prefix of length t."""
    from .. import losses  # torch: only when training, not when a report reads method names

    ce = losses.sft_loss(t.logits, t.targets).sum()
    if per_row.shape[1] == 0:  # every response is one token: no proper prefix
        return ce
    prefix = losses.prefix_means(per_row, valid)
    weights = losses.apao_adaptive_weights(prefix, p.eta)
    return ce + p.beta * int(t.targets.numel()) * (weights * prefix).sum()


def apao_batch_loss(t: LabelTokens, o: Settings) -> torch.Tensor:
    """CE + beta * sum_t w_t * mean over rows of -log P(y_<=t | x) / t / prefix_tau (batch sum)."""
    from .. import losses  # torch: only when training

    p = o.settings()
    token_lp, mask = losses.by_row(losses.token_log_probs(t.logits, t.targets), t.is_label)
    per_row, valid = losses.apao_pointwise_prefix_losses(token_lp, mask, p.prefix_tau)
    return weighted_prefix_term(t, per_row, valid, p)


def apao_pairwise_batch_loss(t: LabelTokens, o: Settings) -> torch.Tensor:
    """CE + beta * sum_t w_t * mean over rows of the prefix softmax loss against sampled negatives (batch sum)."""
    from .. import losses  # torch: only when training

    n = t.negatives
    if n is None:
        raise ConfigError("the apao-pairwise objective needs sampled negatives scored for the batch (the trainer "
                          "adds them). Fix: train through bearrec train, or fill LabelTokens.negatives.")
    p = o.settings()
    token_lp, mask = losses.by_row(losses.token_log_probs(t.logits, t.targets), t.is_label)
    per_row, valid = losses.apao_pairwise_prefix_losses(token_lp, mask, n.log_probs, n.nodes, n.positive_nodes,
                                                        n.prefix_counts, p.prefix_tau)
    return weighted_prefix_term(t, per_row, valid, p)


OBJECTIVE = Objective("apao", "cross-entropy plus adaptively weighted length-normalised prefix NLLs (APAO pointwise)",
                      "full", apao_batch_loss, reads_trie=False, params=ApaoParams)
PAIRWISE = Objective("apao-pairwise", "cross-entropy plus adaptively weighted prefix softmaxes against sampled items "
                     "(APAO pairwise)", "full", apao_pairwise_batch_loss, needs_negatives=True,
                     params=ApaoPairwiseParams)
