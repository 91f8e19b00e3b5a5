"""Standard preprocessing of raw interaction logs into sliding-window rows and a global chronological split.

Steps, each counted in stats["dropped"] when it removes something:
 1. items without a usable title (missing, empty, HTML remnants, longer than `max_title_length`) are
    removed together with their interactions (untitled="drop", the default of the raw-log formats), or
    kept under the placeholder title "unknown item <id>" (untitled="keep"; named in stats["notes"]);
    stats["untitled_items"] counts them either way;
 2. an optional time window keeps interactions with start <= timestamp < end;
 3. exact duplicate (user, item, timestamp) interactions are kept once;
 4. iterative k-core: users and items with fewer than k interactions are removed until none is left
    (k <= 1 disables it);
 5. each user's interactions are ordered by timestamp with the fixed tie-break of `ordering`; every
    interaction after the first becomes a row whose target is that interaction and whose history is the
    up to `max_history` interactions before it. A user's first interaction is therefore only ever
    history; rows with fewer than `min_history` (default 1, as BIGRec) history items are dropped;
 6. rows are ordered globally by (target timestamp, user id, position) and cut by `split_ratio`
    (default 8:1:1) into train (earliest), valid and test (latest);
 7. optionally `train_sample` training rows are drawn (seeded by `seed`), kept in chronological order.
"""
from __future__ import annotations

from collections import Counter
from datetime import datetime, timezone
from typing import Mapping

import random

import numpy as np
import pandas as pd

from ..errors import ConfigError, DataError
from .dataset import SPLITS, Dataset, Interaction
from .ordering import TIE_BREAK_RULE, id_ranks, id_sort_key
from .stats import compute_stats, note_unseen_targets
from .titles import (DEFAULT_MAX_TITLE_LENGTH, UNKNOWN, UNTITLED_POLICIES, clean_title, placeholder_title,
                     untitled_note, untitled_summary)

COLUMNS = ("user_id", "item_id", "timestamp")
DEFAULT_K_CORE = 5
DEFAULT_MAX_HISTORY = 10
DEFAULT_SPLIT_RATIO = (8, 1, 1)
# Every reason preprocessing may drop something; all are written to stats.json, zeros included.
DROP_REASONS = ("items_without_title", "items_with_empty_title", "items_with_html_title",
                "items_with_too_long_title", "interactions_of_items_without_usable_title",
                "interactions_outside_time_window", "duplicate_interactions", "users_below_k_core",
                "items_below_k_core", "interactions_below_k_core", "users_with_one_interaction",
                "rows_with_short_history", "items_without_rows", "train_rows_not_sampled")


def parse_time(value: object, option: str) -> int | None:
    """Read a time-window bound given as unix seconds or an ISO date (UTC), for the start/end options."""
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return int(value)
    text = str(value).strip()
    if text.lstrip("-").isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"{option}={value!r} is neither unix seconds nor an ISO date (e.g. 2014-01-31).") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return int(moment.timestamp())


def interaction_table(users: list[str], items: list[str], timestamps: list[int]) -> pd.DataFrame:
    """The table every reader produces: string user and item ids, integer timestamps in seconds."""
    return pd.DataFrame({"user_id": pd.Series(users, dtype=object), "item_id": pd.Series(items, dtype=object),
                         "timestamp": pd.Series(timestamps, dtype="int64")})


def _filter_titles(table: pd.DataFrame, raw_titles: Mapping[str, object], max_title_length: int | None,
                   fallback_titles: Mapping[str, str], untitled: str, dropped: Counter,
                   reasons: dict[str, str]) -> tuple[pd.DataFrame, dict[str, str]]:
    """Title every item of `table`; one without a usable title is kept under a placeholder or dropped (`untitled`).

    `reasons` receives {item: reason} for every item without a usable title, fallback-titled ones included.
    """
    titles: dict[str, str] = {}
    for item in table["item_id"].unique():
        if item in fallback_titles:
            titles[item] = fallback_titles[item]
            reasons[item] = UNKNOWN
            continue
        title, reason = clean_title(raw_titles.get(item), max_title_length)
        if title is not None:
            titles[item] = title
            continue
        reasons[item] = reason
        if untitled == "keep":
            titles[item] = placeholder_title(item)
        else:
            dropped[f"items_{reason}"] += 1
    keep = table["item_id"].isin(titles.keys())
    dropped["interactions_of_items_without_usable_title"] += int((~keep).sum())
    return table[keep], titles


def apply_k_core(table: pd.DataFrame, k: int | None, dropped: Counter) -> pd.DataFrame:
    """Iteratively remove users and items with fewer than k interactions until every one has at least k."""
    if k is None or k <= 1:
        return table
    users_before, items_before, rows_before = table["user_id"].nunique(), table["item_id"].nunique(), len(table)
    while len(table):
        user_n = table.groupby("user_id")["item_id"].transform("size")
        item_n = table.groupby("item_id")["user_id"].transform("size")
        keep = (user_n >= k) & (item_n >= k)
        if keep.all():
            break
        table = table[keep]
    dropped["users_below_k_core"] += users_before - table["user_id"].nunique()
    dropped["items_below_k_core"] += items_before - table["item_id"].nunique()
    dropped["interactions_below_k_core"] += rows_before - len(table)
    return table


def sliding_windows(table: pd.DataFrame, max_history: int, min_history: int,
                    dropped: Counter) -> list[tuple[tuple[int, int, int], Interaction]]:
    """Turn each user's ordered interactions into rows (target = i-th, history = up to max_history before)."""
    user_rank = id_ranks(table["user_id"])
    item_rank = id_ranks(table["item_id"])
    ordered = table.assign(_u=table["user_id"].map(user_rank), _i=table["item_id"].map(item_rank))
    ordered = ordered.sort_values(["_u", "timestamp", "_i"], kind="stable")
    users = ordered["user_id"].to_numpy()
    items = ordered["item_id"].tolist()
    stamps = ordered["timestamp"].tolist()
    ranks = ordered["_u"].tolist()
    starts = [0, *(np.flatnonzero(users[1:] != users[:-1]) + 1).tolist(), len(users)]
    rows: list[tuple[tuple[int, int, int], Interaction]] = []
    for a, b in zip(starts[:-1], starts[1:]):
        if b - a == 1:
            dropped["users_with_one_interaction"] += 1
        for i in range(a + 1, b):
            if i - a < min_history:
                dropped["rows_with_short_history"] += 1
                continue
            history = tuple(items[max(a, i - max_history):i])
            rows.append(((stamps[i], ranks[i], i - a),
                         Interaction(str(users[i]), history, items[i], int(stamps[i]))))
    return rows


def chronological_split(rows: list[tuple[tuple, Interaction]], ratio: tuple[int, int, int],
                        source: object) -> dict[str, list[Interaction]]:
    """Sort rows by (timestamp, user, position) and cut them into train/valid/test by `ratio`."""
    if len(ratio) != 3 or any(r < 0 for r in ratio) or sum(ratio) <= 0:
        raise ConfigError(f"split_ratio {ratio!r} must be three non-negative numbers, e.g. (8, 1, 1).")
    rows = sorted(rows, key=lambda pair: pair[0])
    n, total = len(rows), sum(ratio)
    n_valid = int(n * ratio[1] / total + 0.5)
    n_test = int(n * ratio[2] / total + 0.5)
    n_train = n - n_valid - n_test
    ordered = [row for _, row in rows]
    splits = {"train": ordered[:n_train], "valid": ordered[n_train:n_train + n_valid],
              "test": ordered[n_train + n_valid:]}
    for name in SPLITS:
        if not splits[name]:
            raise DataError(f"the {name} split is empty: only {n} rows survived preprocessing "
                            f"(split {ratio[0]}:{ratio[1]}:{ratio[2]}).", path=source,
                            fix="use more data, a lower --k-core, or a wider time window")
    return splits


def sample_rows(rows: list[Interaction], n: int | None, seed: int, dropped: Counter,
                split: str = "train") -> list[Interaction]:
    """Keep a seeded random `n` of a split's rows (the paper trains on 10,000), in their original order; the rest are
    counted in dropped["<split>_rows_not_sampled"]."""
    if n is None:
        return rows
    if not 0 < int(n) <= len(rows):
        raise ConfigError(f"{split}_sample={n} must be between 1 and {len(rows)}, the number of {split} rows. "
                          f"Fix: choose a smaller {split} sample, or leave it out.")
    keep = sorted(random.Random(seed).sample(range(len(rows)), int(n)))
    dropped[f"{split}_rows_not_sampled"] += len(rows) - len(keep)
    return [rows[k] for k in keep]


def sample_test_split(dataset: Dataset, n: int, seed: int) -> None:
    """Keep a seeded random `n` of the test rows (a smaller test set for quick comparisons), counted in the stats."""
    dropped: Counter = Counter()
    dataset.splits["test"] = sample_rows(dataset.test, n, seed, dropped, split="test")
    dataset.stats["n_test"] = len(dataset.test)
    dataset.stats.setdefault("dropped", {})["test_rows_not_sampled"] = dropped["test_rows_not_sampled"]
    dataset.stats.setdefault("notes", []).append(f"test split: a seeded sample (seed {seed}) of {n} rows")
    note_unseen_targets(dataset.stats, dataset.splits)


def prepare_interactions(table: pd.DataFrame, raw_titles: Mapping[str, object], *, source: object,
                         format: str, k_core: int | None = DEFAULT_K_CORE, max_history: int = DEFAULT_MAX_HISTORY,
                         min_history: int = 1, start: object = None, end: object = None,
                         max_title_length: int | None = DEFAULT_MAX_TITLE_LENGTH,
                         split_ratio: tuple[int, int, int] = DEFAULT_SPLIT_RATIO,
                         train_sample: int | None = None, seed: int = 0,
                         fallback_titles: Mapping[str, str] | None = None, untitled: str = "drop",
                         notes: list[str] | None = None) -> Dataset:
    """Apply the documented preprocessing to an interaction table and a raw title map; return the Dataset.

    `fallback_titles` are titles a reader gives items the source marks as untitled (kept whatever `untitled`).
    """
    if max_history < 1 or min_history < 1 or min_history > max_history:
        raise ConfigError(f"need 1 <= min_history ({min_history}) <= max_history ({max_history}).")
    if untitled not in UNTITLED_POLICIES:
        raise ConfigError(f"untitled={untitled!r}; use one of {', '.join(UNTITLED_POLICIES)}.")
    start_s, end_s = parse_time(start, "start"), parse_time(end, "end")
    dropped: Counter = Counter(dict.fromkeys(DROP_REASONS, 0))
    n_input = len(table)
    untitled_reasons: dict[str, str] = {}
    table, titles = _filter_titles(table, raw_titles, max_title_length, fallback_titles or {}, untitled, dropped,
                                   untitled_reasons)
    if start_s is not None or end_s is not None:
        keep = pd.Series(True, index=table.index)
        if start_s is not None:
            keep &= table["timestamp"] >= start_s
        if end_s is not None:
            keep &= table["timestamp"] < end_s
        dropped["interactions_outside_time_window"] += int((~keep).sum())
        table = table[keep]
    duplicated = table.duplicated(list(COLUMNS))
    dropped["duplicate_interactions"] += int(duplicated.sum())
    table = table[~duplicated]
    table = apply_k_core(table, k_core, dropped)
    if table.empty:
        raise DataError(f"no interactions are left after preprocessing ({n_input} read; dropped: "
                        f"{dict((k, v) for k, v in dropped.items() if v)}).", path=source,
                        fix="check the item titles, lower --k-core, or widen the time window")
    rows = sliding_windows(table, max_history, min_history, dropped)
    splits = chronological_split(rows, split_ratio, source)
    used = {i for name in SPLITS for row in splits[name] for i in (*row.history, row.target)}
    dropped["items_without_rows"] += len(set(table["item_id"].unique()) - used)
    items = {i: titles[i] for i in sorted(used, key=id_sort_key)}
    # Sampled after the catalog is fixed, so the item universe does not depend on the sample.
    splits["train"] = sample_rows(splits["train"], train_sample, seed, dropped)
    options = {"k_core": k_core, "max_history": max_history, "min_history": min_history, "start": start_s,
               "end": end_s, "max_title_length": max_title_length, "split_ratio": list(split_ratio),
               "train_sample": train_sample, "seed": seed, "untitled": untitled}
    kept = [i for i in items if i in untitled_reasons]
    notes = list(notes or [])
    placeholders = [i for i in kept if untitled_reasons[i] != UNKNOWN]
    if placeholders:
        notes.append(untitled_note(placeholders))
    stats = compute_stats(items, splits, dropped=dict(dropped), format=format, source=str(source),
                          n_input_interactions=n_input, n_interactions=len(table), options=options,
                          untitled_items=untitled_summary(untitled, untitled_reasons, len(kept)),
                          tie_break=TIE_BREAK_RULE, notes=notes)
    return Dataset(items=items, splits=splits, stats=stats)
