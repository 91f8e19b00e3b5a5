"""argparse `type=` functions that check a command-line value's range.

argparse reports an `ArgumentTypeError` under the option's own name and exits 2 without a traceback, e.g.
"bearrec recommend: error: argument --beams: must be an integer >= 1, got 0".
"""
from __future__ import annotations

import argparse
import re
from typing import Callable


def int_at_least(minimum: int) -> Callable[[str], int]:
    """A `type=` function for integers >= `minimum`."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {value}")
        return value

    parse.__name__ = f"integer >= {minimum}"
    return parse


positive_int = int_at_least(1)
non_negative_int = int_at_least(0)


def per_row_metric(text: str) -> str:
    """A `type=` function for a per-row ranking metric: hr@K, ndcg@K or mrr@K with K >= 1 (metrics.per_row_metrics)."""
    from .metrics import RANK_METRICS  # imported only when the option is parsed: numpy is slow to import

    match = re.fullmatch(r"([a-z]+)@(\d+)", text.strip().lower())
    if match is None or match[1] not in RANK_METRICS or int(match[2]) < 1:
        names = ", ".join(f"{name}@K" for name in RANK_METRICS)
        raise argparse.ArgumentTypeError(f"must be a per-row metric ({names} with K >= 1, e.g. ndcg@10), got {text!r}")
    return f"{match[1]}@{int(match[2])}"
