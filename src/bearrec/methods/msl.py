"""MSL: cross-entropy over the valid trie children of each prefix only (masked softmax), decoded with masked scores."""
from __future__ import annotations

import torch

from .. import losses
from .spec import LabelTokens, Objective, Settings


def msl_batch_loss(t: LabelTokens, o: Settings) -> torch.Tensor:
    """Sum over label tokens of -log p_t, the softmax over the valid children at temperature tau."""
    return losses.msl_loss(t.child_logits, t.child_target, t.child_valid, o.tau).sum()


OBJECTIVE = Objective("msl", "cross-entropy over the valid trie children only (masked softmax loss)", "masked",
                      msl_batch_loss)
