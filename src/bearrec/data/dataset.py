"""The prepared-dataset format every later stage reads: a catalog and three chronological splits.

A prepared dataset is a directory holding
  items.jsonl                       {"item_id": str, "title": str, ...optional metadata}
  train.jsonl, valid.jsonl, test.jsonl
                                    {"user_id": str, "history": [item_id, ... oldest first],
                                     "target": item_id, "timestamp": int seconds}
  stats.json                        counts, history lengths, duplicate titles, every drop and the fingerprint.
Ids are strings everywhere so that any source's ids round-trip unchanged.

The fingerprint ("sha256:<hex>") identifies the content of the catalog and the splits: the SHA-256 of, for
each of items.jsonl, train.jsonl, valid.jsonl and test.jsonl in that order, a NUL byte, the file name, a
NUL byte and the file's bytes. stats.json is not part of it, so re-preparing the same data with another
source path gives the same fingerprint, and any edit of the four files changes it.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Mapping

from ..errors import DataError
from ..files import atomic_open, jsonl_objects, write_json

SPLITS = ("train", "valid", "test")
# The files the fingerprint covers, in its order; stats.json is written after them and marks completion.
CONTENT_FILES = ("items.jsonl", *(f"{name}.jsonl" for name in SPLITS))
DATASET_FILES = (*CONTENT_FILES, "stats.json")


@dataclass(frozen=True)
class Interaction:
    """One training or evaluation row: a user's history and the item that came next."""

    user_id: str
    history: tuple[str, ...]
    target: str
    timestamp: int

    def to_json(self) -> dict:
        return {"user_id": self.user_id, "history": list(self.history), "target": self.target,
                "timestamp": self.timestamp}


@dataclass
class Dataset:
    """A catalog (item id -> title, in catalog order) and the train/valid/test splits."""

    items: dict[str, str]
    splits: dict[str, list[Interaction]]
    stats: dict = field(default_factory=dict)
    metadata: dict[str, dict] = field(default_factory=dict)
    path: Path | None = None
    # dataset_fingerprint() of the files it was loaded from or saved to; None for one only in memory.
    fingerprint: str | None = None

    @property
    def train(self) -> list[Interaction]:
        return self.splits["train"]

    @property
    def valid(self) -> list[Interaction]:
        return self.splits["valid"]

    @property
    def test(self) -> list[Interaction]:
        return self.splits["test"]

    def split(self, name: str) -> list[Interaction]:
        """The rows of split `name`, with a clear error for an unknown name."""
        if name not in self.splits:
            raise DataError(f"unknown split {name!r}.", fix=f"use one of {', '.join(SPLITS)}")
        return self.splits[name]


def fingerprint_bytes(files: Mapping[str, bytes]) -> str:
    """The fingerprint of the four content files given as {file name: bytes} (see the module docstring)."""
    digest = hashlib.sha256()
    for name in CONTENT_FILES:
        digest.update(b"\0" + name.encode("utf-8") + b"\0")
        digest.update(files[name])
    return "sha256:" + digest.hexdigest()


def _missing_file(directory: Path, name: str) -> DataError:
    return DataError(f"the prepared dataset has no {name}.", path=directory / name,
                     fix=f"re-run `bearrec prepare FORMAT SOURCE {directory} --overwrite` to write it again")


def _read_content(directory: Path) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    for name in CONTENT_FILES:
        try:
            files[name] = (directory / name).read_bytes()
        except FileNotFoundError:
            raise _missing_file(directory, name) from None
        except IsADirectoryError:
            raise DataError(f"{name} is a folder, not a file.", path=directory / name,
                            fix="re-run `bearrec prepare` into a new OUTPUT_DIR") from None
    return files


def dataset_fingerprint(directory: str | Path) -> str:
    """"sha256:<hex>" of a prepared dataset's items.jsonl, train.jsonl, valid.jsonl and test.jsonl."""
    return fingerprint_bytes(_read_content(Path(directory)))


def serialize_dataset(dataset: Dataset) -> dict[str, bytes]:
    """The bytes `save_dataset` writes for items.jsonl and the three splits (one JSON object a line)."""
    def jsonl(rows: Iterable[dict]) -> bytes:
        return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode("utf-8")

    files = {"items.jsonl": jsonl({"item_id": i, "title": t, **dataset.metadata.get(i, {})}
                                  for i, t in dataset.items.items())}
    for name in SPLITS:
        files[f"{name}.jsonl"] = jsonl(row.to_json() for row in dataset.splits[name])
    return files


def save_dataset(dataset: Dataset, directory: str | Path, *, files: Mapping[str, bytes] | None = None) -> Path:
    """Write `dataset` to `directory` (each file atomically; stats.json, with the fingerprint, last).

    `files`: serialize_dataset(dataset) when the caller already has it.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in (files if files is not None else serialize_dataset(dataset)).items():
        with atomic_open(directory / name, "wb") as handle:
            handle.write(data)
    dataset.fingerprint = dataset_fingerprint(directory)  # from the files as written
    dataset.stats["fingerprint"] = dataset.fingerprint
    write_json(directory / "stats.json", dataset.stats)
    dataset.path = directory
    return directory


def _jsonl_objects(path: Path, data: bytes) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each non-blank line of a dataset file already read as `data`."""
    return jsonl_objects(path, data, fix_encoding="re-run `bearrec prepare` to write the dataset again")


def load_dataset(directory: str | Path) -> Dataset:
    """Read a prepared dataset, checking that every id in every split is in the catalog.

    Each file is read once; its bytes give both the rows and `Dataset.fingerprint`.
    """
    directory = Path(directory)
    if not (directory / "stats.json").exists():
        raise DataError("not a prepared dataset (stats.json is missing).", path=directory,
                        fix="create it with `bearrec prepare FORMAT SOURCE OUTPUT_DIR`")
    files = _read_content(directory)
    items: dict[str, str] = {}
    metadata: dict[str, dict] = {}
    items_path = directory / "items.jsonl"
    for lineno, obj in _jsonl_objects(items_path, files["items.jsonl"]):
        try:
            item_id, title = str(obj.pop("item_id")), str(obj.pop("title"))
        except KeyError as e:
            raise DataError(f"missing field {e.args[0]!r}.", path=items_path, line=lineno,
                            fix="each line needs item_id and title") from None
        if item_id in items:
            raise DataError(f"item id {item_id!r} appears twice.", path=items_path, line=lineno)
        items[item_id] = title
        if obj:
            metadata[item_id] = obj
    if not items:
        raise DataError("the catalog is empty.", path=items_path, fix="re-run `bearrec prepare`")
    splits: dict[str, list[Interaction]] = {}
    for name in SPLITS:
        path = directory / f"{name}.jsonl"
        rows: list[Interaction] = []
        for lineno, obj in _jsonl_objects(path, files[f"{name}.jsonl"]):
            try:
                row = Interaction(str(obj["user_id"]), tuple(str(i) for i in obj["history"]),
                                  str(obj["target"]), int(obj["timestamp"]))
            except (KeyError, TypeError, ValueError) as e:
                raise DataError(f"malformed row ({type(e).__name__}: {e}).", path=path, line=lineno,
                                fix="rows need user_id, history (list), target and an integer timestamp") from None
            for item in (*row.history, row.target):
                if item not in items:
                    raise DataError(f"item id {item!r} is not in the catalog.", path=path, line=lineno,
                                    fix="re-run `bearrec prepare` so splits and catalog agree")
            rows.append(row)
        splits[name] = rows
    stats_path = directory / "stats.json"
    try:
        stats = json.loads(stats_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"not valid JSON ({e}).", path=stats_path,
                        fix="re-run `bearrec prepare` to write the dataset again") from None
    if not isinstance(stats, dict):
        raise DataError("expected a JSON object.", path=stats_path, fix="re-run `bearrec prepare`")
    return Dataset(items=items, splits=splits, stats=stats, metadata=metadata, path=directory,
                   fingerprint=fingerprint_bytes(files))
