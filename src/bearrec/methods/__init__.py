"""Methods: one registry of every training objective and baseline (`registry`), one file per objective.

`ObjectiveConfig` is a config's `objective:` section; `get_objective(name).loss` is what the trainer calls.
"""
from .config import ObjectiveConfig
from .registry import (BASELINES, BASES, OBJECTIVES, baseline_names, get_objective, is_baseline, method_name,
                       objective_names, order_key, parse_method, report_order, score_mode)
from .spec import SCORE_MODES, Baseline, LabelTokens, Objective

__all__ = ["BASELINES", "BASES", "Baseline", "LabelTokens", "OBJECTIVES", "Objective", "ObjectiveConfig",
           "SCORE_MODES", "baseline_names", "get_objective", "is_baseline", "method_name", "objective_names",
           "order_key", "parse_method", "report_order", "score_mode"]
