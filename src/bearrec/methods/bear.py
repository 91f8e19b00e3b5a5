"""BEAR: the base cross-entropy plus lam * log sigmoid((log beta_t - log p_t) / xi), beta_t the B-th largest child
probability (method.md). `objective.weighted` gives the reference implementation's detached-weight form."""
from __future__ import annotations

from typing import TYPE_CHECKING

from .spec import LabelTokens, Objective, Settings

if TYPE_CHECKING:
    import torch


def base_and_margin(t: LabelTokens, o: Settings) -> tuple[torch.Tensor, torch.Tensor]:
    """(base CE_t, Delta_t = log beta_t - log p_t): the base is MSL, or the full-vocabulary CE on the SFT base. The
    margin is taken over the valid children either way: it does not depend on the softmax's normaliser."""
    from .. import losses  # torch: only when training, not when a report reads method names

    ce, delta = losses.pruning_margin(t.child_logits, t.child_target, t.child_valid, num_beams=o.num_beams, tau=o.tau,
                                      detach_threshold=o.detach_threshold)
    if o.base == "sft":
        ce = losses.sft_loss(t.logits, t.targets)
    return ce, delta


def bear_batch_loss(t: LabelTokens, o: Settings) -> torch.Tensor:
    """Sum over label tokens of base_t + lam * log sigmoid(Delta_t / xi) (or the reference's weighted form)."""
    from .. import losses  # torch: only when training, not when a report reads method names

    if o.weighted:
        weighted = losses.bear_weighted_loss(t.child_logits, t.child_target, t.child_valid, num_beams=o.num_beams,
                                             lam=o.lam, xi=o.xi, tau=o.tau)
        return weighted.sum() * int(t.targets.numel())  # normalised over tokens already; the trainer divides again
    ce, delta = base_and_margin(t, o)
    return (ce + o.lam * losses.bear_regularizer(delta, o.xi)).sum()


OBJECTIVE = Objective("bear", "the base plus a term that pushes each positive token into its step's top B (BEAR)",
                      "masked", bear_batch_loss, takes_base=True)
