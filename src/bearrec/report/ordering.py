"""The order of methods in the report's tables, plots and pairs: the one place that knows it."""
from __future__ import annotations

from ..baselines import BASELINES as BASELINE_METHODS

METHOD_ORDER = BASELINE_METHODS + ("sft", "msl", "msl+ce", "direct", "direct+ce", "direct-sft", "bear", "bear+ce",
                                   "bear-sft")


def method_order_key(method: str) -> tuple[int, str]:
    """Sort key of a method: the known ones first, in METHOD_ORDER, then the others alphabetically."""
    return (METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER), method)
