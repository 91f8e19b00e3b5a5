"""Reader of the BIGRec/BEAR CSV format: id2name4Rec.json plus train.csv/test.csv of sliding-window rows.

Each CSV row is `user_id,item_ids,timestamp` (extra columns ignored); `item_ids` is a Python-literal list
whose last element is the target and the rest the history, oldest first. The publishers withheld the
validation split, so `valid` is carved from the latest rows of the training file (by timestamp, ties in
file order), never from test rows; by default it gets as many rows as the test file (the paper's 8:1:1).

An item whose catalog title is unusable (not a string, empty or whitespace only, or HTML markup; see
titles.clean_title, with no length limit: the published catalogs hold long titles) is handled by `untitled`:
"keep" (the default, so that the published rows stay exactly as published) gives it the placeholder title
"unknown item <id>" and names it in stats["notes"]; "drop" removes it from the catalog together with every
row that mentions it (stats["dropped"]: items_<reason>, rows_with_untitled_item). stats["untitled_items"]
counts such items either way. The files are read as UTF-8, a leading byte-order mark accepted.
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
from .text_files import text_lines
from .titles import UNTITLED_POLICIES, clean_title, placeholder_title, unescape_title, untitled_note, untitled_summary

CATALOG_FILE = "id2name4Rec.json"
REQUIRED_COLUMNS = ("user_id", "item_ids", "timestamp")
UNKNOWN_ITEM_POLICIES = ("error", "drop")


def read_catalog(path: Path) -> tuple[dict[str, str], dict[str, str]]:
    """Read {"<id>": "<title>"} in file order, unescaping HTML entities; duplicate titles stay distinct items.

    Returns (items, untitled): every item with its title, and {id: reason} for those whose title is unusable
    (their entry in `items` is then the raw value as text, to be replaced or dropped by the caller).
    """
    if not path.is_file():
        raise DataError(f"the catalog {path.name} is missing.", path=path,
                        fix=f"a BEAR dataset folder holds {CATALOG_FILE}, train.csv and test.csv")
    try:
        raw = json.loads(path.read_text(encoding="utf-8-sig"))
    except UnicodeDecodeError as e:
        raise DataError(f"not UTF-8 text ({e.reason} at byte {e.start}).", path=path,
                        fix="save the catalog as UTF-8") from None
    except json.JSONDecodeError as e:
        raise DataError(f"not valid JSON ({e.msg} at column {e.colno}).", path=path, line=e.lineno,
                        fix='the catalog must be one JSON object {"<item id>": "<title>"}') from None
    if not isinstance(raw, dict):
        raise DataError(f"expected a JSON object, found {type(raw).__name__}.", path=path, line=1,
                        fix='the catalog must be one JSON object {"<item id>": "<title>"}')
    if not raw:
        raise DataError("the catalog is empty.", path=path, fix="it must map every item id to its title")
    items: dict[str, str] = {}
    untitled: dict[str, str] = {}
    for item_id, title in raw.items():
        usable, reason = clean_title(title, max_length=None)
        if usable is None:
            untitled[str(item_id)] = reason
            items[str(item_id)] = "" if title is None else str(title)
        else:
            items[str(item_id)] = unescape_title(title)
    return items, untitled


def _timestamp(text: str, path: Path, line: int) -> int:
    if not text:
        raise DataError("the timestamp is empty: the row is incomplete.", path=path, line=line,
                        fix="complete the row (user_id,\"[item ids]\",timestamp) or remove it")
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


_TRUNCATED_FIX = ("complete the row or remove it; if the file was cut off (an interrupted download or copy), "
                  "fetch or export it again")


class _RecordLines:
    """Feeds csv.reader line by line and keeps the physical lines of the record being read."""

    def __init__(self, handle):
        self.handle = handle
        self.lines: list[str] = []

    def __iter__(self):
        return self

    def __next__(self) -> str:
        line = next(self.handle)
        self.lines.append(line)
        return line


def _ends_inside_quotes(text: str) -> bool:
    """Whether CSV text (as csv.reader reads it: a quote opens a field only at its start) ends inside a quoted field."""
    inside, at_field_start, k = False, True, 0
    while k < len(text):
        char = text[k]
        if inside:
            if char == '"':
                if text[k + 1:k + 2] == '"':
                    k += 1  # an escaped quote
                else:
                    inside = False
        elif char == '"' and at_field_start:
            inside = True
        at_field_start = not inside and char in ",\r\n"
        k += 1
    return inside


def _quote_error(source: _RecordLines, path: Path, line: int) -> DataError | None:
    """For a bad record: the error when a quoted field runs past its line (a row cut off inside its quoted list)."""
    if _ends_inside_quotes("".join(source.lines)):  # the open quote swallowed everything to the end of the file
        return DataError("the row is incomplete: the file ends inside its quoted item_ids list (no closing "
                         "quote); the file looks truncated.", path=path, line=line, fix=_TRUNCATED_FIX)
    if len(source.lines) > 1:
        return DataError(f"the row is incomplete: a quote opened on this line is closed only {len(source.lines) - 1} "
                         "line(s) later, so those lines were read into the same field (a row cut off inside its "
                         "quoted item_ids list?).", path=path, line=line,
                         fix="complete or remove this row; a quoted item_ids list ends with ]\" followed by "
                             ",timestamp")
    return None


def _fields_error(fields: list[str], header: list[str], path: Path, line: int) -> DataError:
    if len(fields) < len(header):
        absent = ", ".join(header[len(fields):])
        return DataError(f"the row is incomplete: expected {len(header)} fields, found {len(fields)} "
                         f"(no {absent}); it looks cut off.", path=path, line=line, fix=_TRUNCATED_FIX)
    return DataError(f"expected {len(header)} fields, found {len(fields)}.", path=path, line=line,
                     fix="quote the item_ids list, e.g. \"[1, 2, 3]\"")


def _parse_ids(text: str, path: Path, line: int) -> list[str]:
    text = text.strip()
    try:
        ids = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        if text.startswith("[") and not text.endswith("]"):
            raise DataError(f"item_ids {text!r} is not a list literal: the list is cut off (no closing ']'), so "
                            "the row is incomplete.", path=path, line=line,
                            fix="complete the list, e.g. \"[12, 7, 33]\", or remove the row") from None
        raise DataError(f"item_ids {text!r} is not a list literal.", path=path, line=line,
                        fix="write item_ids as a list such as [12, 7, 33]") from None
    if not isinstance(ids, (list, tuple)) or not all(isinstance(x, (int, str)) and not isinstance(x, bool)
                                                      for x in ids):
        raise DataError(f"item_ids {text!r} is not a list of ids.", path=path, line=line,
                        fix="write item_ids as a list such as [12, 7, 33]")
    if len(ids) < 2:
        raise DataError(f"empty history: item_ids {text!r} holds only a target.", path=path, line=line,
                        fix="each row needs at least one history item before the target (last) item")
    return [str(x).strip() for x in ids]


def read_rows(path: Path, catalog: dict[str, str], unknown_items: str, dropped: Counter,
              untitled: frozenset[str] | set[str] = frozenset()) -> list[Interaction]:
    """Read one CSV split, checking every row; DataError names the file and the editor line of a bad row.

    Rows naming an item of `untitled` (items dropped for want of a title) are dropped and counted.
    """
    if not path.is_file():
        raise DataError(f"{path.name} is missing.", path=path,
                        fix="use a folder that has both splits (the published Toy folder, for one, ships only "
                            "its test split), or name the files with the train_file/test_file options")
    rows: list[Interaction] = []
    n_read = 0
    handle = (line for _, line in text_lines(path, newline=""))  # UTF-8, each bad byte named by its line
    source = _RecordLines(handle)
    reader = csv.reader(source)
    try:
        header = [name.strip() for name in next(reader)]
    except StopIteration:
        raise DataError("the file is empty.", path=path, line=1,
                        fix="the first line must be the header user_id,item_ids,timestamp") from None
    except csv.Error as e:
        raise DataError(f"malformed CSV ({e}).", path=path, line=1) from None
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise DataError(f"missing column(s) {', '.join(missing)} (header: {','.join(header)}).", path=path,
                        line=1, fix="the header must include user_id,item_ids,timestamp")
    u, i, t = (header.index(c) for c in REQUIRED_COLUMNS)
    while True:
        line = reader.line_num + 1  # the first physical line of the next record
        source.lines = []
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            raise DataError(f"malformed CSV ({e}).", path=path, line=line,
                            fix="each row is user_id,\"[item ids]\",timestamp") from None
        except UnicodeDecodeError as e:
            raise DataError(f"not UTF-8 text ({e.reason}), at or after this line.", path=path, line=line,
                            fix="save the file as UTF-8") from None
        if not fields:
            continue
        try:
            if len(fields) != len(header):
                raise _fields_error(fields, header, path, line)
            ids = _parse_ids(fields[i], path, line)
        except DataError as error:
            raise (_quote_error(source, path, line) or error) from None
        n_read += 1
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
        timestamp = _timestamp(fields[t].strip(), path, line)
        if untitled and not untitled.isdisjoint(ids):
            dropped["rows_with_untitled_item"] += 1
            continue
        rows.append(Interaction(user, tuple(ids[:-1]), ids[-1], timestamp))
    if not rows:
        if n_read:
            raise DataError(f"every one of the {n_read} rows was dropped (dropped so far: "
                            f"{dict((k, v) for k, v in dropped.items() if v)}).", path=path,
                            fix="check the catalog, or use unknown_items='error' / untitled='keep'")
        raise DataError("the split has no rows.", path=path, fix="the file needs rows after its header")
    return rows


def prepare_bear_csv(source: str | Path, *, train_file: str = "train.csv", test_file: str = "test.csv",
                     catalog_file: str = CATALOG_FILE, valid_size: int | None = None,
                     train_sample: int | None = None, seed: int = 0, unknown_items: str = "error",
                     untitled: str = "keep") -> Dataset:
    """Read a BEAR dataset folder, carve `valid` from the latest training rows, optionally sample train.

    `untitled`: "keep" (default) or "drop" the items without a usable title (see the module docstring).
    """
    folder = Path(source)
    if not folder.is_dir():
        raise DataError("not a directory.", path=folder,
                        fix=f"pass the folder holding {CATALOG_FILE}, train.csv and test.csv")
    if unknown_items not in UNKNOWN_ITEM_POLICIES:
        raise ConfigError(f"unknown_items={unknown_items!r}; use one of {', '.join(UNKNOWN_ITEM_POLICIES)}.")
    if untitled not in UNTITLED_POLICIES:
        raise ConfigError(f"untitled={untitled!r}; use one of {', '.join(UNTITLED_POLICIES)}.")
    dropped: Counter = Counter({"rows_unknown_item": 0, "items_without_title": 0, "items_with_empty_title": 0,
                                "items_with_html_title": 0, "rows_with_untitled_item": 0,
                                "train_rows_not_sampled": 0})
    items, untitled_reasons = read_catalog(folder / catalog_file)
    drop = set(untitled_reasons) if untitled == "drop" else set()
    train_path, test_path = folder / train_file, folder / test_file
    test = read_rows(test_path, items, unknown_items, dropped, drop)
    train = read_rows(train_path, items, unknown_items, dropped, drop)
    notes = []
    if untitled == "drop":
        for reason in untitled_reasons.values():
            dropped[f"items_{reason}"] += 1
        items = {i: t for i, t in items.items() if i not in untitled_reasons}
        if not items:
            raise DataError("no item of the catalog has a usable title.", path=folder / catalog_file,
                            fix="give the items titles, or pass untitled='keep' (--untitled keep)")
    elif untitled_reasons:
        items = {i: placeholder_title(i) if i in untitled_reasons else t for i, t in items.items()}
        notes.append(untitled_note(list(untitled_reasons)))
    n_valid = len(test) if valid_size is None else int(valid_size)
    if not 0 < n_valid < len(train):
        raise ConfigError(f"valid_size={n_valid} must be between 1 and {len(train) - 1}, the number of rows of "
                          f"{train_file} minus one.")
    train = sorted(train, key=lambda row: row.timestamp)  # stable: ties keep file order
    train, valid = train[:-n_valid], train[-n_valid:]
    train = sample_rows(train, train_sample, seed, dropped)
    if test and max(r.timestamp for r in train + valid) > min(r.timestamp for r in test):
        notes.append("some training rows are later than the earliest test row: the source split is not "
                     "chronological")
    stats = compute_stats(items, {"train": train, "valid": valid, "test": test}, dropped=dict(dropped),
                          format="bear-csv", source=str(folder),
                          options={"train_file": train_file, "test_file": test_file, "valid_size": n_valid,
                                   "train_sample": train_sample, "seed": seed, "unknown_items": unknown_items,
                                   "untitled": untitled},
                          untitled_items=untitled_summary(untitled, untitled_reasons,
                                                          len(untitled_reasons) if untitled == "keep" else 0),
                          catalog_items_in_no_row=len(set(items) - {i for r in (*train, *valid, *test)
                                                                   for i in (*r.history, r.target)}),
                          valid_rule=f"the latest {n_valid} rows of {train_file} by timestamp (ties in file order)",
                          notes=notes)
    return Dataset(items=items, splits={"train": train, "valid": valid, "test": test}, stats=stats)
