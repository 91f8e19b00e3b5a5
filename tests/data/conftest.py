"""Fixture writers for the data-layer tests: small BEAR folders, RecBole files and Amazon dumps in tmp_path."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

# <repo>/../shared/data, where the real (read-only, not redistributable) datasets live.
SHARED_DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent (it is not part of the repository)")
    return SHARED_DATA


def _write_bear(folder: Path, catalog: dict | str, train: list[str] | str | None, test: list[str] | str,
               header: str = "user_id,item_ids,timestamp") -> Path:
    """Write id2name4Rec.json and train/test CSVs; rows are given as raw CSV lines (header added)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "id2name4Rec.json").write_text(catalog if isinstance(catalog, str) else json.dumps(catalog))
    for name, rows in (("train.csv", train), ("test.csv", test)):
        if rows is None:
            continue
        text = rows if isinstance(rows, str) else "\n".join([header, *rows]) + "\n"
        (folder / name).write_text(text)
    return folder


@pytest.fixture
def write_bear():
    """The BEAR folder writer, as a fixture so test modules need not import this conftest."""
    return _write_bear


@pytest.fixture
def bear_folder(tmp_path: Path) -> Path:
    """A well-formed BEAR folder: 6 items, 8 train rows (t=100..800), 2 test rows (t=900, 1000)."""
    catalog = {str(i): f"Item {i} &amp; Co" for i in range(1, 7)}
    catalog["6"] = catalog["5"]  # a duplicate title, kept as a distinct item
    train = [f'u{k % 3},"[{1 + k % 5}, {2 + k % 4}, {1 + (k + 2) % 6}]",{100 * (k + 1)}' for k in range(8)]
    test = ['u0,"[1, 2, 3]",900', 'u1,"[4, 5, 6]",1000']
    return _write_bear(tmp_path / "bear", catalog, train, test)


def _write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def write_lines():
    """Writes a list of lines as a UTF-8 text file and returns its path."""
    return _write_lines
