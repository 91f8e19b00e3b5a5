"""Reader of the BIGRec/BEAR CSV format: id2name4Rec.json plus train.csv/test.csv of sliding-window rows.

Each CSV row is `user_id,item_ids,timestamp` (extra columns ignored); `item_ids` is a Python-literal list
whose last element is the target and the rest the history, oldest first. The publishers withheld the
validation split, so `valid` is carved from the latest rows of the training file (by timestamp, ties in
file order), never from test rows; by default it gets as many rows as the test file (the paper's 8:1:1).
"""
from __future__ import annotations

import ast
import csv
import json
from collections import Counter
from pathlib import Path

from ..errors import ConfigError, DataError
from .dataset import Dataset, Interaction
from .preprocess import sample_rows
from .stats import compute_stats
from .titles import unescape_title

CATALOG_FILE = "id2name4Rec.json"
REQUIRED_COLUMNS = ("user_id", "item_ids", "timestamp")
UNKNOWN_ITEM_POLICIES = ("error", "drop")


def read_catalog(path: Path) -> dict[str, str]:
    """Read {"<id>": "<title>"} in file order, unescaping HTML entities; duplicate titles stay distinct items."""
    if not path.is_file():
        raise DataError(f"the catalog {path.name} is missing.", path=path,
                        fix=f"a BEAR dataset folder holds {CATALOG_FILE}, train.csv and test.csv")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(f"not valid JSON ({e.msg} at column {e.colno}).", path=path, line=e.lineno,
                        fix='the catalog must be one JSON object {"<item id>": "<title>"}') from None
    if not isinstance(raw, dict):
        raise DataError(f"expected a JSON object, found {type(raw).__name__}.", path=path, line=1,
                        fix='the catalog must be one JSON object {"<item id>": "<title>"}')
    if not raw:
        raise DataError("the catalog is empty.", path=path, fix="it must map every item id to its title")
    items: dict[str, str] = {}
    for item_id, title in raw.items():
        if not isinstance(title, str) or not title.strip():
            raise DataError(f"item {item_id!r} has no title (field {item_id!r} is {title!r}).", path=path,
                            fix="give every item a non-empty title string")
        items[str(item_id)] = unescape_title(title)
    return items


def _timestamp(text: str, path: Path, line: int) -> int:
    try:
        return int(text)
    except ValueError:
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        if value.is_integer():
            return int(value)
    raise DataError(f"timestamp {text!r} is not an integer.", path=path, line=line,
                    fix="timestamp must be unix time in seconds")


def read_rows(path: Path, catalog: dict[str, str], unknown_items: str,
              dropped: Counter) -> list[Interaction]:
    """Read one CSV split, checking every row; DataError names the file and the editor line of a bad row."""
    if not path.is_file():
        raise DataError(f"{path.name} is missing.", path=path,
                        fix="use a folder that has both splits (the published Toy folder, for one, ships only "
                            "its test split), or name the files with the train_file/test_file options")
    rows: list[Interaction] = []
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle)
        try:
            header = next(reader)
        except StopIteration:
            raise DataError("the file is empty.", path=path, line=1,
                            fix="the first line must be the header user_id,item_ids,timestamp") from None
        except csv.Error as e:
            raise DataError(f"malformed CSV ({e}).", path=path, line=reader.line_num) from None
        missing = [c for c in REQUIRED_COLUMNS if c not in header]
        if missing:
            raise DataError(f"missing column(s) {', '.join(missing)} (header: {','.join(header)}).", path=path,
                            line=1, fix="the header must include user_id,item_ids,timestamp")
        u, i, t = (header.index(c) for c in REQUIRED_COLUMNS)
        while True:
            line = reader.line_num + 1  # the first physical line of the next record
            try:
                fields = next(reader)
            except StopIteration:
                break
            except csv.Error as e:
                raise DataError(f"malformed CSV ({e}).", path=path, line=line,
                                fix="quote fields that contain commas, e.g. \"[1, 2, 3]\"") from None
            if not fields:
                continue
            if len(fields) != len(header):
                raise DataError(f"expected {len(header)} fields, found {len(fields)}.", path=path, line=line,
                                fix="quote the item_ids list, e.g. \"[1, 2, 3]\"")
            try:
                ids = ast.literal_eval(fields[i].strip())
            except (ValueError, SyntaxError, MemoryError, RecursionError):
                raise DataError(f"item_ids {fields[i]!r} is not a list literal.", path=path, line=line,
                                fix="write item_ids as a list such as [12, 7, 33]") from None
            if not isinstance(ids, (list, tuple)) or not all(isinstance(x, (int, str)) and not isinstance(x, bool)
                                                              for x in ids):
                raise DataError(f"item_ids {fields[i]!r} is not a list of ids.", path=path, line=line,
                                fix="write item_ids as a list such as [12, 7, 33]")
            if len(ids) < 2:
                raise DataError(f"empty history: item_ids {fields[i]!r} holds only a target.", path=path, line=line,
                                fix="each row needs at least one history item before the target (last) item")
            ids = [str(x).strip() for x in ids]
            unknown = [x for x in ids if x not in catalog]
            if unknown:
                if unknown_items == "drop":
                    dropped["rows_unknown_item"] += 1
                    continue
                raise DataError(f"item id(s) {', '.join(map(repr, unknown[:5]))} are not in {CATALOG_FILE}.",
                                path=path, line=line,
                                fix="use the catalog that belongs to this split, or pass unknown_items='drop' "
                                    "to drop such rows (counted in stats.json)")
            user = fields[u].strip()
            if not user:
                raise DataError("empty user_id.", path=path, line=line)
            rows.append(Interaction(user, tuple(ids[:-1]), ids[-1], _timestamp(fields[t].strip(), path, line)))
    if not rows:
        raise DataError("the split has no rows.", path=path, fix="the file needs rows after its header")
    return rows


def prepare_bear_csv(source: str | Path, *, train_file: str = "train.csv", test_file: str = "test.csv",
                     catalog_file: str = CATALOG_FILE, valid_size: int | None = None,
                     train_sample: int | None = None, seed: int = 0, unknown_items: str = "error") -> Dataset:
    """Read a BEAR dataset folder, carve `valid` from the latest training rows, optionally sample train."""
    folder = Path(source)
    if not folder.is_dir():
        raise DataError("not a directory.", path=folder,
                        fix=f"pass the folder holding {CATALOG_FILE}, train.csv and test.csv")
    if unknown_items not in UNKNOWN_ITEM_POLICIES:
        raise ConfigError(f"unknown_items={unknown_items!r}; use one of {', '.join(UNKNOWN_ITEM_POLICIES)}.")
    dropped: Counter = Counter(rows_unknown_item=0, train_rows_not_sampled=0)
    items = read_catalog(folder / catalog_file)
    train_path, test_path = folder / train_file, folder / test_file
    test = read_rows(test_path, items, unknown_items, dropped)
    train = read_rows(train_path, items, unknown_items, dropped)
    n_valid = len(test) if valid_size is None else int(valid_size)
    if not 0 < n_valid < len(train):
        raise ConfigError(f"valid_size={n_valid} must be between 1 and {len(train) - 1}, the number of rows of "
                          f"{train_file} minus one.")
    train = sorted(train, key=lambda row: row.timestamp)  # stable: ties keep file order
    train, valid = train[:-n_valid], train[-n_valid:]
    train = sample_rows(train, train_sample, seed, dropped)
    notes = []
    if test and max(r.timestamp for r in train + valid) > min(r.timestamp for r in test):
        notes.append("some training rows are later than the earliest test row: the source split is not "
                     "chronological")
    stats = compute_stats(items, {"train": train, "valid": valid, "test": test}, dropped=dict(dropped),
                          format="bear-csv", source=str(folder),
                          options={"train_file": train_file, "test_file": test_file, "valid_size": n_valid,
                                   "train_sample": train_sample, "seed": seed, "unknown_items": unknown_items},
                          catalog_items_in_no_row=len(set(items) - {i for r in (*train, *valid, *test)
                                                                   for i in (*r.history, r.target)}),
                          valid_rule=f"the latest {n_valid} rows of {train_file} by timestamp (ties in file order)",
                          notes=notes)
    return Dataset(items=items, splits={"train": train, "valid": valid, "test": test}, stats=stats)
