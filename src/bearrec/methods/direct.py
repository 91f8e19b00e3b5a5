"""The direct objective: the base plus lam * the relaxed beam-search survival term (3.1) of every title step."""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import ConfigError
from .bear import base_and_margin
from .spec import LabelTokens, Objective, Settings

if TYPE_CHECKING:
    import torch


def direct_batch_loss(t: LabelTokens, o: Settings) -> torch.Tensor:
    """Sum of the base CE plus lam * -log sigmoid((log P(y_<=t) - log P(b^B_<=t)) / xi) over each row's title steps.

    (3.1) compares prefixes y_<t up to the whole title; the EOS step completes y and is ranked among finished
    hypotheses, not against the extendable prefixes `beam_thresholds` reports, so it carries no direct term. Prefix
    log-probabilities and thresholds are both under the base's scores (the search decodes with the method's score
    mode)."""
    import torch

    from .. import losses  # torch: only when training, not when a report reads method names

    if t.log_thresholds is None:
        raise ConfigError("the direct objective needs beam-search thresholds for the batch.")
    ce, _ = base_and_margin(t, o)
    is_label = t.is_label
    step = is_label.cumsum(1) - 1
    rows, cols = is_label.nonzero(as_tuple=True)
    width = t.log_thresholds.shape[1]
    step_logp = ce.new_zeros(is_label.shape[0], width)
    step_logp = step_logp.index_put((rows, step[rows, cols]), -ce)
    mask = torch.zeros_like(step_logp, dtype=torch.bool).index_put((rows, step[rows, cols]),
                                                                    torch.ones_like(ce, dtype=torch.bool))
    last = is_label.sum(1) - 1
    has = last >= 0
    mask[has.nonzero(as_tuple=True)[0], last[has]] = False
    direct = losses.direct_loss(step_logp, mask, t.log_thresholds.to(ce.device), xi=o.xi)
    return ce.sum() + o.lam * direct.sum()


OBJECTIVE = Objective("direct", "the base plus the relaxed beam-search survival of every title prefix (3.1)", "masked",
                      direct_batch_loss, takes_base=True, needs_beam_thresholds=True)
