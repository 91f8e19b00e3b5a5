"""Standard preprocessing: title filter, time window, k-core, sliding windows, the chronological split."""
from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bearrec.data import prepare_interactions
from bearrec.data.ordering import id_sort_key
from bearrec.data.preprocess import interaction_table
from bearrec.errors import DataError


def _table(rows):
    users, items, stamps = zip(*rows)
    return interaction_table(list(users), list(items), list(stamps))


def _chain(n_users=10, per_user=6):
    """Users u0..u9 each interacting with items in order, one timestamp step apart: 60 interactions."""
    return [(f"u{u}", str((u + k) % 8 + 1), 1000 * k + u) for u in range(n_users) for k in range(per_user)]


TITLES = {str(i): f"Movie {i}" for i in range(1, 9)}


def test_split_is_chronological_and_8_1_1():
    ds = prepare_interactions(_table(_chain()), TITLES, source="mem", format="test", k_core=0)
    assert (len(ds.train), len(ds.valid), len(ds.test)) == (40, 5, 5)
    assert max(r.timestamp for r in ds.train) <= min(r.timestamp for r in ds.valid)
    assert max(r.timestamp for r in ds.valid) <= min(r.timestamp for r in ds.test)
    assert ds.stats["n_users"] == 10 and ds.stats["history_length"]["min"] == 1


def test_train_sample_is_seeded_and_counted():
    a = prepare_interactions(_table(_chain()), TITLES, source="m", format="t", k_core=0, train_sample=10, seed=3)
    b = prepare_interactions(_table(_chain()), TITLES, source="m", format="t", k_core=0, train_sample=10, seed=3)
    assert a.train == b.train and len(a.train) == 10 and a.stats["dropped"]["train_rows_not_sampled"] == 30
    assert len(a.items) == 8 and len(a.test) == 5  # catalog and evaluation splits do not depend on the sample


def test_history_is_up_to_max_history_preceding_items():
    rows = [("u", str(i), i) for i in range(1, 31)]
    ds = prepare_interactions(_table(rows), {str(i): f"t{i}" for i in range(1, 31)}, source="m", format="t",
                              k_core=0, max_history=10)
    by_target = {r.target: r for s in ds.splits.values() for r in s}
    assert by_target["2"].history == ("1",)
    assert by_target["30"].history == tuple(str(i) for i in range(20, 30))


def test_ties_are_broken_by_numeric_item_id():
    rows = [("u", "10", 5), ("u", "9", 5), ("u", "b", 5), ("u", "a", 5)] + [("v", str(i), i) for i in range(20, 40)]
    titles = {i: i for i in ("10", "9", "a", "b", *map(str, range(20, 40)))}
    ds = prepare_interactions(_table(rows), titles, source="m", format="t", k_core=0)
    u_rows = [r for s in ds.splits.values() for r in s if r.user_id == "u"]
    assert [r.target for r in u_rows] == ["10", "a", "b"] and u_rows[-1].history == ("9", "10", "a")
    assert sorted(["b", "10", "9", "a"], key=id_sort_key) == ["9", "10", "a", "b"]


def test_untitled_items_time_window_duplicates_and_k_core_are_counted():
    rows = _chain()
    rows += [("u0", "bad", 50), ("u1", "long", 60), ("u2", "nometa", 70)]  # unusable titles
    rows += [("u3", "1", 10_000_000)]  # outside the time window
    rows += [rows[0]]  # exact duplicate
    titles = dict(TITLES, bad='<span class="a">x</span>', long="x" * 201)
    ds = prepare_interactions(_table(rows), titles, source="m", format="t", k_core=0, end=9_000_000)
    d = ds.stats["dropped"]
    assert (d["items_with_html_title"], d["items_with_too_long_title"], d["items_without_title"]) == (1, 1, 1)
    assert d["interactions_of_items_without_usable_title"] == 3
    assert d["interactions_outside_time_window"] == 1 and d["duplicate_interactions"] == 1
    assert ds.stats["n_interactions"] == 60 and len(ds.items) == 8


def test_k_core_is_iterative():
    # Item 9 has 5 interactions but one is from user w, who has only 2 -> item 9 falls to 4 and goes too.
    rows = _chain() + [("w", "9", 1), ("w", "1", 2)] + [(f"u{u}", "9", 1) for u in range(4)]
    ds = prepare_interactions(_table(rows), dict(TITLES, **{"9": "nine"}), source="m", format="t", k_core=5)
    d = ds.stats["dropped"]
    assert "9" not in ds.items and (d["users_below_k_core"], d["items_below_k_core"]) == (1, 1)
    assert d["interactions_below_k_core"] == 6


def test_empty_split_and_nothing_left_are_errors():
    with pytest.raises(DataError, match="the valid split is empty") as err:
        prepare_interactions(_table(_chain(2, 3)), TITLES, source="log.inter", format="t", k_core=0)
    assert "log.inter" in str(err.value) and "Fix:" in str(err.value)
    with pytest.raises(DataError, match="no interactions are left"):
        prepare_interactions(_table(_chain()), TITLES, source="log.inter", format="t", k_core=50)


logs = st.lists(st.tuples(st.sampled_from([f"u{i}" for i in range(6)]), st.sampled_from(["1", "2", "10", "x", "y"]),
                          st.integers(0, 30)), min_size=0, max_size=80)


@settings(max_examples=60, deadline=None)
@given(logs, st.sampled_from([0, 1]))
def test_preparing_never_loses_or_invents_an_interaction(rows, k):
    """Targets = input (deduplicated) minus each user's first interaction; histories are the preceding ones."""
    unique = sorted(set(rows))
    titles = {i: f"title {i}" for i in ("1", "2", "10", "x", "y")}
    try:
        ds = prepare_interactions(_table(rows) if rows else interaction_table([], [], []), titles, source="m",
                                  format="t", k_core=k)
    except DataError as e:
        n_rows = len(unique) - len({u for u, _, _ in unique})
        assert "empty" in str(e) or "no interactions" in str(e)
        assert n_rows < 15  # 8:1:1 of 15 rows gives every split at least one row
        return
    seq: dict[str, list[tuple[int, str]]] = {}
    for user, item, ts in unique:
        seq.setdefault(user, []).append((ts, item))
    expected: Counter = Counter()
    for user, events in seq.items():
        events.sort(key=lambda e: (e[0], id_sort_key(e[1])))
        expected.update((user, item, ts) for ts, item in events[1:])
    got = [r for name in ("train", "valid", "test") for r in ds.splits[name]]
    assert Counter((r.user_id, r.target, r.timestamp) for r in got) == expected
    assert ds.stats["dropped"]["duplicate_interactions"] == len(rows) - len(unique)
    for r in got:
        events = sorted(seq[r.user_id], key=lambda e: (e[0], id_sort_key(e[1])))
        pos = events.index((r.timestamp, r.target))
        assert r.history == tuple(item for _, item in events[max(0, pos - 10):pos])
    train, valid, test = ds.train, ds.valid, ds.test
    assert max(r.timestamp for r in train) <= min(r.timestamp for r in valid)
    assert max(r.timestamp for r in valid) <= min(r.timestamp for r in test)
