"""Readers of raw interaction logs (RecBole atomic files, Amazon review dumps 2014/2018/2023) feeding preprocess.

Files are read as UTF-8 (a leading byte-order mark is accepted). Items without a usable title are dropped
with their interactions by default, as the standard preprocessing does; untitled="keep" (`--untitled keep`)
keeps them under the placeholder title "unknown item <id>" instead (see preprocess and titles).
"""
from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Iterator

import pandas as pd

from ..errors import DataError
from .dataset import Dataset
from .preprocess import interaction_table, prepare_interactions
from .text_files import text_lines

# RecBole .item columns that may hold the title, in order of preference.
RECBOLE_TITLE_FIELDS = ("movie_title", "title", "item_name", "name")


def parse_number(text: object, path: Path, line: int, field: str) -> int:
    """An integer timestamp from '881250949', '881250949.0' or a number; DataError naming the line otherwise."""
    try:
        value = float(text)  # type: ignore[arg-type]
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError
        return int(value)
    except (TypeError, ValueError):
        raise DataError(f"{field} {text!r} is not a number.", path=path, line=line,
                        fix=f"{field} must be unix time as an integer") from None


def iter_records(path: Path) -> Iterator[tuple[int, dict]]:
    """Yield (line number, dict) from JSON lines, accepting Python-literal dicts (Amazon 2014 metadata)."""
    for lineno, line in text_lines(path):
        text = line.strip()
        if not text:
            continue
        try:
            record = json.loads(text)
        except json.JSONDecodeError as e:
            try:
                record = ast.literal_eval(text)
            except (ValueError, SyntaxError, MemoryError, RecursionError):
                raise DataError(f"neither JSON nor a Python literal ({e.msg} at column {e.colno}).",
                                path=path, line=lineno, fix="each line must hold one object") from None
        if not isinstance(record, dict):
            raise DataError(f"expected an object, found {type(record).__name__}.", path=path, line=lineno,
                            fix="each line must hold one {...} record")
        yield lineno, record


# ---------------------------------------------------------------- RecBole atomic files

def _recbole_header(path: Path, header: str) -> dict[str, int]:
    names = [field.split(":", 1)[0].strip() for field in header.rstrip("\n").split("\t")]
    if not any(names):
        raise DataError("the header line is empty.", path=path, line=1,
                        fix="the first line must name the tab-separated fields, e.g. user_id:token")
    return {name: i for i, name in enumerate(names)}


def _require(columns: dict[str, int], names: tuple[str, ...], path: Path) -> None:
    missing = [n for n in names if n not in columns]
    if missing:
        raise DataError(f"missing column(s) {', '.join(missing)} (found {', '.join(columns)}).", path=path, line=1,
                        fix="the header needs " + ", ".join(f"{n}:<type>" for n in names))


def read_recbole_inter(path: Path) -> pd.DataFrame:
    """Read a RecBole `.inter` file (user_id, item_id, timestamp fields) into an interaction table."""
    users: list[str] = []
    items: list[str] = []
    stamps: list[int] = []
    lines = text_lines(path)
    columns = _recbole_header(path, next(lines, (1, ""))[1])
    _require(columns, ("user_id", "item_id", "timestamp"), path)
    u, i, t = columns["user_id"], columns["item_id"], columns["timestamp"]
    width = max(u, i, t) + 1
    for lineno, line in lines:
        if not line.strip():
            continue
        fields = line.rstrip("\n").split("\t")
        if len(fields) < width:
            raise DataError(f"the row is incomplete: expected {len(columns)} tab-separated fields, found "
                            f"{len(fields)}.", path=path, line=lineno,
                            fix="complete or remove the row (if the file was cut off, fetch or export it "
                                "again); separate fields with tabs, one interaction per line")
        if not fields[u] or not fields[i]:
            raise DataError("empty user_id or item_id.", path=path, line=lineno)
        users.append(fields[u])
        items.append(fields[i])
        stamps.append(parse_number(fields[t], path, lineno, "timestamp"))
    if not users:
        raise DataError("no interactions in the file.", path=path, fix="check that the right .inter file is given")
    return interaction_table(users, items, stamps)


def read_recbole_item(path: Path) -> dict[str, str]:
    """Read a RecBole `.item` file into {item_id: title}, appending a `release_year` as "Title (1995)"."""
    titles: dict[str, str] = {}
    lines = text_lines(path)
    columns = _recbole_header(path, next(lines, (1, ""))[1])
    _require(columns, ("item_id",), path)
    field = next((f for f in RECBOLE_TITLE_FIELDS if f in columns), None)
    if field is None:
        raise DataError(f"no title column (looked for {', '.join(RECBOLE_TITLE_FIELDS)}).", path=path, line=1,
                        fix="add a title field such as title:token_seq")
    i, t, y = columns["item_id"], columns[field], columns.get("release_year")
    for lineno, line in lines:
        if not line.strip():
            continue
        fields = line.rstrip("\n").split("\t")
        if len(fields) <= max(i, t):
            raise DataError(f"the row is incomplete: expected {len(columns)} tab-separated fields, found "
                            f"{len(fields)}.", path=path, line=lineno,
                            fix="complete or remove the row (if the file was cut off, fetch or export it "
                                "again); separate fields with tabs")
        title = fields[t]
        year = fields[y].strip() if y is not None and y < len(fields) else ""
        if year.isdigit() and len(year) == 4 and title.strip() and not title.rstrip().endswith(f"({year})"):
            title = f"{title.rstrip()} ({year})"
        titles.setdefault(fields[i], title)
    return titles


def find_recbole_files(source: str | Path) -> tuple[Path, Path]:
    """Locate the `.inter` and `.item` files from a directory holding one dataset, or from the `.inter` path."""
    source = Path(source)
    if source.is_dir():
        inters = sorted(source.glob("*.inter"))
        if len(inters) != 1:
            raise DataError(f"expected exactly one .inter file, found {len(inters)}.", path=source,
                            fix="pass the .inter file itself as SOURCE")
        inter = inters[0]
    elif source.exists():
        inter = source
    else:
        raise DataError("no such file or directory.", path=source, fix="check the SOURCE path")
    item = inter.with_suffix(".item")
    if not item.exists():
        raise DataError(f"the item file {item.name} is missing beside {inter.name}.", path=item,
                        fix="titles come from the .item file (item_id and title fields); add it")
    return inter, item


def prepare_recbole(source: str | Path, **options) -> Dataset:
    """Prepare RecBole atomic files (`X.inter` + `X.item`) with the standard preprocessing (5-core by default)."""
    inter, item = find_recbole_files(source)
    return prepare_interactions(read_recbole_inter(inter), read_recbole_item(item), source=inter,
                                format="recbole", **options)


# ---------------------------------------------------------------- Amazon review dumps

def _field(record: dict, name: str, path: Path, line: int) -> object:
    if name not in record or record[name] in (None, ""):
        raise DataError(f"missing field {name!r}.", path=path, line=line,
                        fix="is this the right file? reviews need reviewerID/asin/unixReviewTime (2014, 2018) "
                            "or user_id/parent_asin/timestamp (2023)")
    return record[name]


def read_amazon_reviews(path: Path) -> tuple[pd.DataFrame, str]:
    """Read an Amazon review dump (2014/2018 or 2023 layout, detected per record) into an interaction table."""
    users: list[str] = []
    items: list[str] = []
    stamps: list[int] = []
    editions: set[str] = set()
    for lineno, record in iter_records(path):
        if "reviewerID" in record:
            editions.add("2014/2018")
            users.append(str(_field(record, "reviewerID", path, lineno)))
            items.append(str(_field(record, "asin", path, lineno)))
            stamps.append(parse_number(_field(record, "unixReviewTime", path, lineno), path, lineno,
                                       "unixReviewTime"))
        elif "user_id" in record:
            editions.add("2023")
            users.append(str(_field(record, "user_id", path, lineno)))
            items.append(str(record.get("parent_asin") or _field(record, "asin", path, lineno)))
            # 2023 timestamps are milliseconds.
            stamps.append(parse_number(_field(record, "timestamp", path, lineno), path, lineno, "timestamp") // 1000)
        else:
            raise DataError("no reviewer field (reviewerID or user_id).", path=path, line=lineno,
                            fix="pass the review file as SOURCE and the metadata file with --meta")
    if not users:
        raise DataError("no reviews in the file.", path=path, fix="check that the right file is given")
    if len(editions) > 1:
        raise DataError("mixes the 2014/2018 and 2023 layouts.", path=path, fix="prepare one dump at a time")
    return interaction_table(users, items, stamps), editions.pop()


def read_amazon_meta(path: Path) -> dict[str, object]:
    """Read Amazon metadata ({asin or parent_asin, title} per line, JSON or Python literal) into {item: title}."""
    titles: dict[str, object] = {}
    for lineno, record in iter_records(path):
        item = record.get("parent_asin") or record.get("asin")
        if not item:
            raise DataError("missing field 'asin' (or 'parent_asin').", path=path, line=lineno,
                            fix="is this the metadata file? each line needs an asin and a title")
        titles.setdefault(str(item), record.get("title"))
    if not titles:
        raise DataError("the metadata file is empty.", path=path, fix="pass the category's meta_*.json file")
    return titles


def find_amazon_meta(reviews: Path) -> Path:
    """The metadata file beside a review dump: the single `meta_*` file in the same folder."""
    candidates = sorted(p for p in reviews.parent.glob("meta_*") if p != reviews)
    if len(candidates) != 1:
        raise DataError(f"cannot tell which metadata file goes with {reviews.name} "
                        f"({len(candidates)} meta_* files beside it).", path=reviews.parent,
                        fix="name the metadata file with the meta option (--meta PATH)")
    return candidates[0]


def prepare_amazon(source: str | Path, meta: str | Path | None = None, **options) -> Dataset:
    """Prepare an Amazon review dump plus its metadata with the standard preprocessing (5-core by default)."""
    reviews = Path(source)
    if not reviews.is_file():
        raise DataError("no such review file.", path=reviews, fix="pass the review dump (.json, .jsonl or .gz)")
    meta_path = Path(meta) if meta else find_amazon_meta(reviews)
    if not meta_path.is_file():
        raise DataError("no such metadata file.", path=meta_path, fix="check the --meta path")
    table, edition = read_amazon_reviews(reviews)
    return prepare_interactions(table, read_amazon_meta(meta_path), source=reviews, format="amazon",
                                notes=[f"Amazon {edition} layout; titles from {meta_path.name}"], **options)
