"""Validation ranking metrics during training: decode the validation rows with the constrained beam search.

`BearTrainer.evaluate` adds these (`eval_ndcg@10`, `eval_hr@10`, ...) to the validation loss, so that
checkpoints can be selected on validation NDCG@10, the default `selection_metric`. Test data is never used.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

from ..data.dataset import Interaction
from ..metrics import cutoffs, evaluate_predictions
from ..prompts import ItemTexts
from ..trie import ItemTrie


@dataclass
class RankingEvaluator:
    """HR@B / NDCG@B / MRR@B of beam search with B beams on `rows`, for the model being trained."""

    rows: Sequence[Interaction]
    tokenizer: Any
    trie: ItemTrie
    texts: ItemTexts
    items: dict[str, str]
    score_mode: str
    num_beams: int = 10
    batch_size: int = 16

    @torch.no_grad()
    def __call__(self, model: Any, rank: int = 0, world: int = 1) -> dict[str, float]:
        """Metrics over all rows; under several processes each decodes a share and all gather the records."""
        from ..recommend import Recommender, gather_records

        was_training = model.training
        model.eval()
        try:
            rec = Recommender(model=model, tokenizer=self.tokenizer, trie=self.trie, texts=self.texts,
                              items=self.items, score_mode=self.score_mode, batch_size=self.batch_size)
            records = rec.recommend_rows(self.rows, self.num_beams, progress=False, rank=rank, world=world)
        finally:
            model.train(was_training)
        records = gather_records(records, world)
        metrics = evaluate_predictions(records, ks=cutoffs(self.num_beams))
        return {k: float(v) for k, v in metrics.items() if k.split("@")[0] in ("hr", "ndcg", "mrr")}
