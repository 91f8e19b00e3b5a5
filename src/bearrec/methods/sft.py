"""SFT (BIGRec): cross-entropy of every response token over the whole vocabulary, decoded with full scores."""
from __future__ import annotations

from typing import TYPE_CHECKING

from .spec import LabelTokens, Objective, Settings

if TYPE_CHECKING:
    import torch


def sft_batch_loss(t: LabelTokens, o: Settings) -> torch.Tensor:
    """Sum over label tokens of -log softmax(logits)[y_t]."""
    from .. import losses  # torch: only when training, not when a report reads method names

    return losses.sft_loss(t.logits, t.targets).sum()


OBJECTIVE = Objective("sft", "cross-entropy over the full vocabulary (BIGRec)", "full", sft_batch_loss,
                      reads_trie=False)
