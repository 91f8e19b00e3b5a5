"""Semantic IDs' file: each catalog item's code sequence, as `bearrec index` writes it (bearrec.semantic_index).

DATASET_DIR/semantic_ids.json: {"levels", "codes", "seed", "embeddings", "dataset_fingerprint",
"items": {item_id: [c1, ..., cL, d]}, "stats"}. A model reads and writes an item's codes as one token per level and
code (`code_tokens`): level 1 is <a_C>, level 2 <b_C>, ..., the disambiguation code the next letter; `load_index`
reads the file back, checked against the dataset.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import ConfigError, DataError
from .files import read_json_file

INDEX_FILE = "semantic_ids.json"
LEVEL_LETTERS = "abcdefghijklmnopqrstuvwxyz"


def code_token(level: int, code: int) -> str:
    """The token of `code` at `level` (0-based): <a_12> for level 0, code 12."""
    return f"<{LEVEL_LETTERS[level]}_{code}>"


def code_tokens(record: dict[str, Any]) -> list[str]:
    """Every token an index's codes can use, level by level (the disambiguation level up to its largest code)."""
    sizes = [int(record["codes"])] * int(record["levels"]) + [int(record["stats"]["extra_code_max"]) + 1]
    return [code_token(level, c) for level, size in enumerate(sizes) for c in range(size)]


def item_codes(record: dict[str, Any]) -> dict[str, str]:
    """item id -> its codes as one string of code tokens ("<a_3><b_0><c_7><d_0>")."""
    return {item: "".join(code_token(level, c) for level, c in enumerate(codes))
            for item, codes in record["items"].items()}


def load_index(dataset: Any) -> dict[str, Any]:
    """DATASET_DIR/semantic_ids.json of a loaded dataset, checked: made from this version of the dataset, one code
    sequence of the same length per catalog item, no two alike, every code within the index's range."""
    if dataset.path is None:
        raise ConfigError("semantic IDs are read from a prepared dataset's folder; this dataset is only in memory. "
                          "Fix: save it with save_dataset, then run `bearrec index` on that folder.")
    path = Path(dataset.path) / INDEX_FILE
    fix = f"run `bearrec index {dataset.path}` (with the --levels, --codes and --embeddings you want)"
    if not path.is_file():
        raise DataError("is missing: item_kind: semantic_id needs every item's codes.", path=path, fix=fix)
    record = read_json_file(path, dict, fix)
    kinds = {"levels": int, "codes": int, "items": dict, "stats": dict, "dataset_fingerprint": str}
    for key, kind in kinds.items():
        if not isinstance(record.get(key), kind) or isinstance(record.get(key), bool):
            raise DataError(f"has no {key!r} field of type {kind.__name__} (not written by `bearrec index`).",
                            path=path, fix=fix)
    if not 1 <= record["levels"] < len(LEVEL_LETTERS) or not isinstance(record["stats"].get("extra_code_max"), int):
        raise DataError("has levels out of range or no stats.extra_code_max (not written by `bearrec index`).",
                        path=path, fix=fix)
    if record["dataset_fingerprint"] != dataset.fingerprint:
        raise DataError("was computed for another version of the dataset (its fingerprint differs).", path=path,
                        fix=fix + " again")
    items = record["items"]
    missing = [i for i in dataset.items if i not in items]
    extra = [i for i in items if i not in dataset.items]
    if missing or extra:
        which = f"item {missing[0]!r} of the catalog has no codes" if missing else f"item {extra[0]!r} is not in the catalog"
        raise DataError(f"does not cover the catalog exactly ({which}; {len(missing)} missing, {len(extra)} extra).",
                        path=path, fix=fix + " again")
    levels, size, extra_max = record["levels"], record["codes"], record["stats"]["extra_code_max"]
    for item, codes in items.items():
        ok = (isinstance(codes, list) and len(codes) == levels + 1 and all(isinstance(c, int) for c in codes)
              and all(0 <= c < size for c in codes[:-1]) and 0 <= codes[-1] <= extra_max)
        if not ok:
            raise DataError(f"item {item!r} has codes {codes!r}, not {levels} codes in [0, {size}) and a "
                            f"disambiguation code in [0, {extra_max}].", path=path, fix=fix + " again")
    if len({tuple(c) for c in items.values()}) != len(items):
        raise DataError("gives two items the same codes.", path=path, fix=fix + " again")
    return record
