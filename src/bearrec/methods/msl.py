"""MSL: cross-entropy over the valid trie children of each prefix only (masked softmax), decoded with masked scores."""
from __future__ import annotations

from typing import TYPE_CHECKING

from .spec import LabelTokens, Objective, Settings

if TYPE_CHECKING:
    import torch


def msl_batch_loss(t: LabelTokens, o: Settings) -> torch.Tensor:
    """Sum over label tokens of -log p_t, the softmax over the valid children at temperature tau."""
    from .. import losses  # torch: only when training, not when a report reads method names

    return losses.msl_loss(t.child_logits, t.child_target, t.child_valid, o.tau).sum()


OBJECTIVE = Objective("msl", "cross-entropy over the valid trie children only (masked softmax loss)", "masked",
                      msl_batch_loss)
