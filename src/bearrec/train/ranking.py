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
from ..recommend import Recommender, gather_records
from ..trained_run import TrainedRun


@dataclass
class RankingEvaluator:
    """HR@B / NDCG@B / MRR@B of beam search with B beams on `rows`, for the model being trained (attached to `run`,
    the run's tokenizer, trie, item texts and score mode, at each call)."""

    rows: Sequence[Interaction]
    run: TrainedRun
    num_beams: int = 10
    batch_size: int = 16

    @torch.no_grad()
    def __call__(self, model: Any, rank: int = 0, world: int = 1) -> dict[str, float]:
        """Metrics over all rows; under several processes each decodes a share and all gather the records."""
        was_training = model.training
        model.eval()
        try:
            rec = Recommender(self.run.with_model(model), batch_size=self.batch_size)
            records = rec.recommend_rows(self.rows, self.num_beams, progress=False, rank=rank, world=world)
        finally:
            model.train(was_training)
        records = gather_records(records, world)
        metrics = evaluate_predictions(records, ks=cutoffs(self.num_beams))
        return {k: float(v) for k, v in metrics.items() if k.split("@")[0] in ("hr", "ndcg", "mrr")}
