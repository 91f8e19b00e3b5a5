"""Metric keys as the report shows them: column order, readable names, meanings, and every cell's text."""
from __future__ import annotations

import math
from numbers import Real
from typing import Sequence

# The metrics the "What this shows" section ranks methods by (those present).
HEADLINE_METRICS = ("hr@5", "hr@10", "ndcg@5", "ndcg@10")


def is_number(value: object) -> bool:
    """A JSON number: an int or float, not a bool."""
    return isinstance(value, Real) and not isinstance(value, bool)


# Column order of metric families in tables; unknown keys follow, alphabetically.
_FAMILY_ORDER = ("hr", "ndcg", "mrr", "coverage", "mean_popularity_rank", "pruning_rate", "pruning_rate_certified",
                 "certified_fraction", "certified_share", "n_in_exact_top_b", "n_pruned", "n_returned",
                 "pruned_token_outside_top_b_share", "invalid_rate", "empty_rate", "num_beams", "n_rows")


def cutoff_key(key: str) -> tuple:
    """Sort metric keys by family (_FAMILY_ORDER) then cut-off: hr@1, hr@5, ..., ndcg@1, ..., n_rows."""
    name, _, k = key.partition("@")
    rank = _FAMILY_ORDER.index(name) if name in _FAMILY_ORDER else len(_FAMILY_ORDER)
    return (rank, name, int(k) if k.isdigit() else math.inf, key)


def _is_count(key: str) -> bool:
    return key.startswith("n_") or key == "num_beams"


def format_stat(stat: dict | None, key: str = "") -> str:
    """'mean ± std' (no std for a single seed); counts as integers where whole, large values with fewer digits."""
    if stat is None or not is_number(stat.get("mean")) or math.isnan(stat["mean"]):
        return "–"
    mean, std = stat["mean"], stat.get("std")
    no_std = not is_number(std) or math.isnan(std)
    if _is_count(key):
        text = str(int(mean)) if float(mean).is_integer() else f"{mean:.1f}"
        return text if no_std or std == 0 else f"{text} ± {std:.1f}"
    digits = 1 if abs(mean) >= 100 else 4
    return f"{mean:.{digits}f}" if no_std else f"{mean:.{digits}f} ± {std:.{digits}f}"


def format_minutes(per_epoch: float | None, fit: float | None) -> str:
    """The min/epoch cell: minutes per epoch, else a baseline's fit minutes marked "(fit)", else "–"."""
    if per_epoch is not None:
        return f"{per_epoch:.1f}"
    return "–" if fit is None else f"{fit:.1f} (fit)"


def format_p_value(p: float, equals: str = "") -> str:
    """A bootstrap p-value as printed: 3 decimals, or "< 0.001" (a resampled p is never exactly 0)."""
    return "< 0.001" if p < 0.001 else f"{equals}{p:.3f}"


def format_interval(res: dict) -> str:
    """A paired bootstrap's confidence interval as text: "[+0.0012, +0.0034]"."""
    return f"[{res['low']:+.4f}, {res['high']:+.4f}]"


_LABELS = {"invalid_rate": "Invalid", "empty_rate": "Empty", "n_rows": "Rows", "certified_fraction": "Certified",
           "certified_share": "Certified", "n_in_exact_top_b": "In exact top-B", "n_pruned": "Pruned",
           "n_returned": "Returned", "num_beams": "Beams", "pruned_token_outside_top_b_share": "Pruned outside top-B"}
_FAMILY_LABELS = {"hr": "HR", "ndcg": "NDCG", "mrr": "MRR", "coverage": "Coverage", "mean_popularity_rank": "Pop. rank",
                  "pruning_rate": "PruningRate", "pruning_rate_certified": "Certified PruningRate"}
MEANINGS = {
    "hr": "hit rate: share of rows whose target item is in the top {k}",
    "ndcg": "normalised discounted cumulative gain of the target in the top {k} (1/log2(1 + rank), 0 when absent)",
    "mrr": "mean reciprocal rank of the target in the top {k} (0 when absent)",
    "coverage": "share of the catalog recommended in at least one row's top {k}",
    "mean_popularity_rank": "mean training-popularity rank of the recommended items in the top {k} (1 = most popular)",
    "pruning_rate": "share of positives in the exact top-{k} that beam search of width {k} prunes (lower is better)",
    "pruning_rate_certified": "PruningRate over the positives of rows whose exact search is certified",
    "invalid_rate": "share of recommended entries that are not catalog items",
    "empty_rate": "share of rows with no recommendation",
    "n_rows": "rows evaluated (mean over seeds)",
    "certified_fraction": "share of diagnosed rows whose exact top-B search is proved complete",
    "certified_share": "share of rows whose exact top-K search is proved complete",
    "n_in_exact_top_b": "positives inside the exact top-B (B = beam width)",
    "n_pruned": "of those, positives that beam search does not return",
    "n_returned": "rows whose positive beam search returns",
    "num_beams": "beam width B",
    "pruned_token_outside_top_b_share": "share of pruned positives whose token, at the step it is pruned, "
                                        "ranks below B in the next-token distribution",
}
SEEDS_MEANING = "the seeds (one run each) that the mean ± std is over"
MIN_PER_EPOCH_MEANING = ("median minutes per training epoch over every epoch of every seed (train_summary.json); "
                         "'(fit)': a baseline's whole fit time in minutes (median over seeds)")
MODE_TRAINING_MEANING = ("; a row of another decoding mode (METHOD · MODE) decodes its method's trained models, so "
                         "shows its method's training cost")
EPOCH_COST_MEANING = ("cost per epoch ÷ SFT: the row's min/epoch divided by sft's (1.00× = as costly per epoch as "
                      "SFT); n/a for a baseline, – where either is not recorded")


def column_name(key: str) -> str:
    """The readable column name of a metric key (hr@10 -> HR@10); an unknown key stays as it is."""
    if key in _LABELS:
        return _LABELS[key]
    family, sep, k = key.partition("@")
    return f"{_FAMILY_LABELS[family]}@{k}" if sep and family in _FAMILY_LABELS else key


def legend(keys: Sequence[str], extra: Sequence[tuple[str, str]] = ()) -> tuple:
    """A legend block: (column names, meaning) for `extra` then `keys`, the cut-offs of one family on one line."""
    items: list[tuple[str, str]] = list(extra)
    families: dict[str, list[str]] = {}
    for key in keys:
        family, sep, _ = key.partition("@")
        meaning_key = family if sep else key
        if meaning_key in MEANINGS:
            families.setdefault(meaning_key, []).append(column_name(key))
    items += [(", ".join(labels), MEANINGS[m].format(k="K")) for m, labels in families.items()]
    return ("legend", items)


def headline_columns(keys: Sequence[str]) -> list[str]:
    """The HEADLINE_METRICS among `keys` (else every HR/NDCG key): the columns of the main tables."""
    head = [k for k in keys if k in HEADLINE_METRICS]
    return head or [k for k in keys if k.split("@")[0] in ("hr", "ndcg")]
