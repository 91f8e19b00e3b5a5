"""Ranking metrics for generated recommendations (HR, NDCG, MRR, validity, coverage, popularity bias).

Input: one prediction per evaluated row, as written by the decoder
  {"index": int, "user_id": str, "target": item_id,
   "recommendations": [{"item_ids": [item_id, ...], "title": str, "score": float}, ...]}
with `recommendations` ranked best first.

Matching rules (exact item match, RecBole-style keys):
- The target is hit at rank r (1-based) if it is among the `item_ids` of entry r. Entry r is one
  generated title; when several catalog items share that title they share the slot, so the
  hypothesis occupies one rank whichever of its ids is the target (it is not expanded into
  several ranks, and it does not push later entries down).
- Only the first hit counts (one relevant item per row): HR@K = 1[r <= K],
  NDCG@K = 1/log2(r + 1) if r <= K else 0, MRR@K = 1/r if r <= K else 0.
- K is reported only when K <= B, B being the longest recommendation list in the input
  (the beam size); a K above it would silently equal the value at B, so it is left out.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

from .errors import ConfigError, DataError

DEFAULT_KS: tuple[int, ...] = (1, 5, 10, 20)  # the cutoffs of every metric table


def cutoffs(num_beams: int) -> tuple[int, ...]:
    """The cutoffs a list of `num_beams` recommendations is scored at: DEFAULT_KS below it, and num_beams itself."""
    return tuple(k for k in DEFAULT_KS if k < num_beams) + (num_beams,)
RANK_METRICS = ("hr", "ndcg", "mrr")


def _entries(row: dict, position: int) -> list[list[str]]:
    """The item-id lists of a row's ranked recommendations, validated, ids as strings."""
    where = f"prediction {row.get('index', position)}"
    if "target" not in row or "recommendations" not in row:
        raise DataError(f"{where} lacks 'target' or 'recommendations'.",
                        fix="each prediction needs target and a ranked recommendations list")
    recs = row["recommendations"]
    if not isinstance(recs, list):
        raise DataError(f"{where}: 'recommendations' must be a list.")
    out = []
    for entry in recs:
        ids = entry.get("item_ids") if isinstance(entry, dict) else None
        if not isinstance(ids, list):
            raise DataError(f"{where}: each recommendation needs an 'item_ids' list.")
        out.append([str(i) for i in ids])
    return out


def _hit_rank(entries: list[list[str]], target: str) -> int:
    """1-based rank of the first entry containing the target; 0 when absent."""
    for rank, ids in enumerate(entries, start=1):
        if target in ids:
            return rank
    return 0


def reported_ks(ks: Sequence[int], list_length: int) -> list[int]:
    """The cut-offs that can be reported for lists of length `list_length` (sorted, deduplicated)."""
    bad = [k for k in ks if int(k) < 1]
    if bad:
        raise ConfigError(f"cut-offs K must be >= 1, got {bad}.")
    return sorted({int(k) for k in ks if int(k) <= list_length})


def hit_ranks(predictions: Iterable[dict]) -> np.ndarray:
    """Each prediction's 1-based rank of its target (0 when absent), rows validated and in order."""
    return _parse(list(predictions))[1]


def _parse(rows: list[dict]) -> tuple[list[list[list[str]]], np.ndarray, int]:
    """Each row's entries, the hit rank per row (0 = miss) and the longest list length."""
    entries = [_entries(row, i) for i, row in enumerate(rows)]
    ranks = np.array([_hit_rank(e, str(r["target"])) for e, r in zip(entries, rows)], dtype=np.int64)
    return entries, ranks, max((len(e) for e in entries), default=0)


def _metrics_from_ranks(ranks: np.ndarray, ks: list[int]) -> dict[str, np.ndarray]:
    """Per-row HR/NDCG/MRR vectors at each cut-off from hit ranks."""
    out: dict[str, np.ndarray] = {}
    safe = np.where(ranks > 0, ranks, 1).astype(np.float64)
    for k in ks:
        hit = (ranks > 0) & (ranks <= k)
        out[f"hr@{k}"] = hit.astype(np.float64)
        out[f"ndcg@{k}"] = np.where(hit, 1.0 / np.log2(safe + 1.0), 0.0)
        out[f"mrr@{k}"] = np.where(hit, 1.0 / safe, 0.0)
    return out


def per_row_metrics(predictions: Iterable[dict], ks: Sequence[int] = DEFAULT_KS) -> dict[str, np.ndarray]:
    """Per-row HR/NDCG/MRR vectors (row order kept), for paired bootstrap between methods."""
    _, ranks, longest = _parse(list(predictions))
    return _metrics_from_ranks(ranks, reported_ks(ks, longest))


def popularity_ranks(popularity: dict[str, int]) -> dict[str, int]:
    """Competition rank of each item by training count (1 = most popular; ties share the best rank)."""
    counts = np.array(list(popularity.values()), dtype=np.int64)
    ordered = np.sort(counts)[::-1]
    # rank = 1 + number of items with a strictly larger count
    better = np.searchsorted(-ordered, -counts, side="left")
    return {str(item): int(b) + 1 for item, b in zip(popularity, better)}


def evaluate_predictions(predictions: Iterable[dict], ks: Sequence[int] = DEFAULT_KS, *,
                         catalog: dict[str, str] | None = None,
                         popularity: dict[str, int] | None = None) -> dict:
    """Aggregate metrics over all rows as one flat dict (means over rows; see the module docstring).

    Keys: `hr@K`, `ndcg@K`, `mrr@K` for each K <= B (the longest list; larger K are not
    reported), `n_rows`, `invalid_rate` (share of recommendation entries with no item ids or,
    when `catalog` is given, an id outside it), `empty_rate` (share of rows with no
    recommendations), `coverage@K` (distinct valid recommended items in the top K / catalog
    size; needs `catalog`) and `mean_popularity_rank@K` (mean training-popularity rank of the
    recommended item ids in the top K, 1 = most popular, items absent from `popularity` ranked
    after all of its items; needs `popularity`).
    """
    rows = list(predictions)
    if not rows:
        raise DataError("no predictions to evaluate.", fix="evaluate a non-empty split")
    all_entries, ranks, longest = _parse(rows)
    cutoffs = reported_ks(ks, longest)
    result: dict = {name: float(vec.mean()) for name, vec in _metrics_from_ranks(ranks, cutoffs).items()}
    result["n_rows"] = len(rows)

    def valid(ids: list[str]) -> bool:
        return bool(ids) and (catalog is None or all(i in catalog for i in ids))

    n_entries = sum(len(e) for e in all_entries)
    n_invalid = sum(not valid(ids) for e in all_entries for ids in e)
    result["invalid_rate"] = n_invalid / n_entries if n_entries else 0.0
    result["empty_rate"] = sum(not e for e in all_entries) / len(rows)

    if catalog is not None:
        for k in cutoffs:
            seen = {i for e in all_entries for ids in e[:k] if valid(ids) for i in ids}
            result[f"coverage@{k}"] = len(seen) / len(catalog) if catalog else 0.0
    if popularity is not None:
        pop_rank = popularity_ranks(popularity)
        unseen = len(pop_rank) + 1
        for k in cutoffs:
            ranks_k = [pop_rank.get(i, unseen) for e in all_entries for ids in e[:k] if valid(ids) for i in ids]
            result[f"mean_popularity_rank@{k}"] = float(np.mean(ranks_k)) if ranks_k else float("nan")
    return result
