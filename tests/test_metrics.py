"""Metrics against hand-computed examples and properties that must hold for any input."""
from __future__ import annotations

import math
import random

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from bearrec.errors import ConfigError, DataError
from bearrec.metrics import evaluate_predictions, per_row_metrics, popularity_ranks


def rec(*ids: str) -> dict:
    return {"item_ids": list(ids), "title": "t", "score": 0.0}


def row(target: str, *entries: dict, index: int = 0) -> dict:
    return {"index": index, "user_id": "u", "target": target, "recommendations": list(entries)}


HAND = [
    row("a", rec("a"), rec("b"), rec("c")),          # hit at rank 1
    row("c", rec("a"), rec("b"), rec("c")),          # hit at rank 3
    row("z", rec("a"), rec("b"), rec("c")),          # miss
    row("y", rec("x", "y"), rec("b"), rec("c")),     # shared title: hit at rank 1
]


def test_hand_computed_values():
    m = evaluate_predictions(HAND, ks=(1, 2, 3))
    assert m["n_rows"] == 4
    assert m["hr@1"] == pytest.approx(2 / 4)
    assert m["hr@2"] == pytest.approx(2 / 4)
    assert m["hr@3"] == pytest.approx(3 / 4)
    assert m["ndcg@3"] == pytest.approx((1 + 1 / math.log2(4) + 0 + 1) / 4)
    assert m["mrr@3"] == pytest.approx((1 + 1 / 3 + 0 + 1) / 4)
    assert m["ndcg@2"] == pytest.approx(2 / 4)


def test_shared_title_is_one_slot():
    # The two-id entry occupies rank 1 only; "b" stays at rank 2 (not pushed to 3).
    m = evaluate_predictions([row("b", rec("x", "y"), rec("b"))], ks=(1, 2))
    assert m["hr@1"] == 0.0 and m["hr@2"] == 1.0
    assert m["ndcg@2"] == pytest.approx(1 / math.log2(3))


def test_ks_above_list_length_not_reported():
    m = evaluate_predictions(HAND, ks=(1, 3, 5, 10))
    assert "hr@3" in m and "hr@5" not in m and "ndcg@10" not in m and "mrr@5" not in m


def test_only_first_hit_counts():
    m = evaluate_predictions([row("a", rec("b"), rec("a"), rec("a"))], ks=(3,))
    assert m["mrr@3"] == pytest.approx(0.5)


def test_invalid_empty_coverage_popularity():
    catalog = {"a": "A", "b": "B", "c": "C", "d": "D"}
    preds = [
        row("a", rec("a"), rec(), rec("nope")),   # 2 invalid entries out of 3
        row("b"),                                  # empty list
        row("c", rec("b"), rec("c"), rec("a")),
    ]
    popularity = {"a": 10, "b": 5, "c": 5, "d": 1}
    m = evaluate_predictions(preds, ks=(1, 3), catalog=catalog, popularity=popularity)
    assert m["invalid_rate"] == pytest.approx(2 / 6)
    assert m["empty_rate"] == pytest.approx(1 / 3)
    assert m["coverage@1"] == pytest.approx(2 / 4)   # a, b
    assert m["coverage@3"] == pytest.approx(3 / 4)   # a, b, c
    # ranks: a=1, b=2, c=2 (tie), d=4; top-1 items a, b -> mean 1.5; top-3 valid: a, b, c, a
    assert m["mean_popularity_rank@1"] == pytest.approx(1.5)
    assert m["mean_popularity_rank@3"] == pytest.approx((1 + 2 + 2 + 1) / 4)
    # an empty row is a miss
    assert m["hr@3"] == pytest.approx(2 / 3)


def test_without_catalog_only_empty_ids_are_invalid():
    m = evaluate_predictions([row("a", rec("a"), rec("zzz"), rec())], ks=(1,))
    assert m["invalid_rate"] == pytest.approx(1 / 3)
    assert "coverage@1" not in m and "mean_popularity_rank@1" not in m


def test_popularity_ranks_ties_and_unseen():
    assert popularity_ranks({"a": 3, "b": 7, "c": 3, "d": 0}) == {"b": 1, "a": 2, "c": 2, "d": 4}
    m = evaluate_predictions([row("a", rec("new"))], ks=(1,), popularity={"a": 2, "b": 1})
    assert m["mean_popularity_rank@1"] == 3.0


def test_ids_compared_as_strings():
    m = evaluate_predictions([{"target": 3, "recommendations": [{"item_ids": ["3"]}]}], ks=(1,))
    assert m["hr@1"] == 1.0


def test_errors():
    with pytest.raises(DataError, match="no predictions"):
        evaluate_predictions([])
    with pytest.raises(DataError, match="recommendations"):
        evaluate_predictions([{"target": "a"}])
    with pytest.raises(DataError, match="item_ids"):
        evaluate_predictions([row("a", {"title": "x"})])
    with pytest.raises(ConfigError, match=">= 1"):
        evaluate_predictions(HAND, ks=(0, 1))


def test_per_row_matches_aggregate():
    vecs = per_row_metrics(HAND, ks=(1, 3))
    np.testing.assert_allclose(vecs["ndcg@3"], [1.0, 0.5, 0.0, 1.0])
    m = evaluate_predictions(HAND, ks=(1, 3))
    for key, vec in vecs.items():
        assert m[key] == pytest.approx(vec.mean())


ids = st.sampled_from([str(i) for i in range(8)])
entries = st.lists(st.lists(ids, min_size=0, max_size=2, unique=True).map(lambda x: rec(*x)), max_size=6)
rows = st.lists(st.builds(lambda target, recs: row(target, *recs), ids, entries), min_size=1, max_size=15)


@settings(max_examples=60, deadline=None)
@given(rows, st.randoms(use_true_random=False))
def test_properties(preds, rnd: random.Random):
    ks = (1, 2, 3, 5, 6)
    m = evaluate_predictions(preds, ks=ks)
    reported = sorted(int(k.split("@")[1]) for k in m if k.startswith("hr@"))
    for k in reported:
        for name in ("hr", "ndcg", "mrr"):
            assert 0.0 <= m[f"{name}@{k}"] <= 1.0
        assert m[f"ndcg@{k}"] <= m[f"hr@{k}"] + 1e-12
        assert m[f"mrr@{k}"] <= m[f"ndcg@{k}"] + 1e-12
    for lo, hi in zip(reported, reported[1:]):
        assert m[f"hr@{lo}"] <= m[f"hr@{hi}"]
        assert m[f"ndcg@{lo}"] <= m[f"ndcg@{hi}"] + 1e-12
    shuffled = list(preds)
    rnd.shuffle(shuffled)
    m2 = evaluate_predictions(shuffled, ks=ks)
    assert m2.keys() == m.keys()
    for key in m:
        assert m2[key] == pytest.approx(m[key])


def test_one_set_of_cutoffs_for_every_beam_width():
    from bearrec.metrics import DEFAULT_KS, cutoffs

    assert cutoffs(10) == (1, 5, 10) and cutoffs(5) == (1, 5) and cutoffs(3) == (1, 3)
    assert cutoffs(50) == (*DEFAULT_KS, 50) and cutoffs(1) == (1,)
