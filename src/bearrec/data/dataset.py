"""The prepared-dataset format every later stage reads: a catalog and three chronological splits.

A prepared dataset is a directory holding
  items.jsonl                       {"item_id": str, "title": str, ...optional metadata}
  train.jsonl, valid.jsonl, test.jsonl
                                    {"user_id": str, "history": [item_id, ... oldest first],
                                     "target": item_id, "timestamp": int seconds}
  stats.json                        counts, history lengths, duplicate titles and every drop.
Ids are strings everywhere so that any source's ids round-trip unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from ..errors import DataError
from ..io import read_jsonl, write_json, write_jsonl

SPLITS = ("train", "valid", "test")


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

    def titles(self, item_ids: Iterable[str]) -> list[str]:
        return [self.items[i] for i in item_ids]


def save_dataset(dataset: Dataset, directory: str | Path) -> Path:
    """Write `dataset` to `directory` (each file atomically; stats.json last, marking completion)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    write_jsonl(directory / "items.jsonl",
                ({"item_id": i, "title": t, **dataset.metadata.get(i, {})} for i, t in dataset.items.items()))
    for name in SPLITS:
        write_jsonl(directory / f"{name}.jsonl", (row.to_json() for row in dataset.splits[name]))
    write_json(directory / "stats.json", dataset.stats)
    dataset.path = directory
    return directory


def load_dataset(directory: str | Path) -> Dataset:
    """Read a prepared dataset, checking that every id in every split is in the catalog."""
    directory = Path(directory)
    if not (directory / "stats.json").exists():
        raise DataError("not a prepared dataset (stats.json is missing).", path=directory,
                        fix="create it with `bearrec prepare FORMAT SOURCE OUTPUT_DIR`")
    items: dict[str, str] = {}
    metadata: dict[str, dict] = {}
    items_path = directory / "items.jsonl"
    for lineno, obj in enumerate(read_jsonl(items_path), start=1):
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
        for lineno, obj in enumerate(read_jsonl(path), start=1):
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
    import json

    stats = json.loads((directory / "stats.json").read_text(encoding="utf-8"))
    return Dataset(items=items, splits=splits, stats=stats, metadata=metadata, path=directory)
