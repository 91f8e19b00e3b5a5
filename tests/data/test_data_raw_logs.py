"""Readers of raw logs on small fixture files: RecBole atomic files and Amazon 2014, 2018 and 2023 dumps."""
from __future__ import annotations

import gzip
import json

import pytest

from bearrec.data import load_dataset, prepare
from bearrec.errors import ConfigError, DataError

N_USERS, PER_USER = 8, 7  # 56 interactions, 48 rows after each user's first


def _events():
    """(user, item, seconds): every user rates 7 of 7 items, so a 5-core keeps everything."""
    return [(f"U{u}", f"B{(u + k) % 7:03d}", 1_400_000_000 + 86_400 * (k * N_USERS + u))
            for u in range(N_USERS) for k in range(PER_USER)]


def test_recbole_atomic_files(tmp_path, write_lines):
    inter = ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
    inter += [f"{u}\t{i}\t4\t{t}.0" for u, i, t in _events()]
    write_lines(tmp_path / "toy.inter", inter)
    item = ["item_id:token\ttitle:token_seq\trelease_year:token"]
    item += [f"B{k:03d}\tFilm &amp; Song {k}\t199{k}" for k in range(7)] + ["B999\tunused\t2000"]
    write_lines(tmp_path / "toy.item", item)
    ds = prepare("recbole", tmp_path, tmp_path / "out")
    assert ds.items["B000"] == "Film & Song 0 (1990)" and len(ds.items) == 7
    assert ds.stats["n_train"] + ds.stats["n_valid"] + ds.stats["n_test"] == N_USERS * (PER_USER - 1)
    assert ds.stats["n_users"] == N_USERS and ds.stats["options"]["k_core"] == 5
    assert load_dataset(tmp_path / "out").test == ds.test


@pytest.mark.parametrize("lines, message, line", [
    (["user_id:token\titem_id:token", "1\t2"], "missing column.*timestamp", 1),
    (["user_id:token\titem_id:token\ttimestamp:float", "1\t2\t3", "1\t2\tnoon"], "'noon' is not a number", 3),
    (["user_id:token\titem_id:token\ttimestamp:float", "1\t2"], "expected 3 tab-separated fields", 2),
])
def test_recbole_bad_inter(tmp_path, lines, message, line, write_lines):
    write_lines(tmp_path / "x.inter", lines)
    write_lines(tmp_path / "x.item", ["item_id:token\ttitle:token_seq", "2\tTwo"])
    with pytest.raises(DataError, match=message) as err:
        prepare("recbole", tmp_path / "x.inter", None)
    assert err.value.line == line and f"x.inter, line {line}:" in str(err.value)


def test_recbole_missing_item_file_or_title_column(tmp_path, write_lines):
    write_lines(tmp_path / "x.inter", ["user_id:token\titem_id:token\ttimestamp:float", "1\t2\t3"])
    with pytest.raises(DataError, match="x.item is missing"):
        prepare("recbole", tmp_path, None)
    write_lines(tmp_path / "x.item", ["item_id:token\tgenre:token"])
    with pytest.raises(DataError, match="no title column") as err:
        prepare("recbole", tmp_path, None)
    assert "x.item, line 1" in str(err.value)


def _amazon_2014(folder, compress=False):
    opener = (lambda p: gzip.open(p, "wt", encoding="utf-8")) if compress else (lambda p: open(p, "w"))
    suffix = ".json.gz" if compress else ".json"
    with opener(folder / f"reviews_Office_5{suffix}") as f:
        for u, i, t in _events():
            f.write(json.dumps({"reviewerID": u, "asin": i, "overall": 5.0, "unixReviewTime": t}) + "\n")
    with opener(folder / f"meta_Office{suffix}") as f:  # 2014 metadata: Python-literal dicts
        for k in range(7):
            f.write(repr({"asin": f"B{k:03d}", "title": f"Pen's &quot;{k}&quot;", "price": 1.5}) + "\n")
        f.write(repr({"asin": "B999"}) + "\n")
    return folder / f"reviews_Office_5{suffix}"


@pytest.mark.parametrize("compress", [False, True])
def test_amazon_2014(tmp_path, compress):
    ds = prepare("amazon", _amazon_2014(tmp_path, compress), tmp_path / "out")
    assert ds.items["B003"] == "Pen's \"3\"" and ds.stats["n_users"] == N_USERS
    assert "2014/2018" in ds.stats["notes"][0]


def test_amazon_2018_drops_html_titles_and_counts_them(tmp_path, write_lines):
    reviews = write_lines(tmp_path / "Office_Products_5.json", [json.dumps(
        {"reviewerID": u, "asin": i, "unixReviewTime": t, "reviewText": "ok"}) for u, i, t in _events()])
    meta = [json.dumps({"asin": f"B{k:03d}", "title": f"Stapler {k}"}) for k in range(6)]
    meta.append(json.dumps({"asin": "B006", "title": '<span id="productTitle">Broken</span>'}))
    write_lines(tmp_path / "meta_Office_Products.json", meta)
    ds = prepare("amazon", reviews, None, k_core=1)
    d = ds.stats["dropped"]
    assert "B006" not in ds.items and d["items_with_html_title"] == 1
    assert d["interactions_of_items_without_usable_title"] == N_USERS


def test_amazon_2023_parent_asin_and_milliseconds(tmp_path, write_lines):
    reviews = write_lines(tmp_path / "Office_Products.jsonl", [json.dumps(
        {"user_id": u, "asin": "child", "parent_asin": i, "timestamp": t * 1000 + 123, "rating": 5})
        for u, i, t in _events()])
    meta = write_lines(tmp_path / "items.jsonl",
                       [json.dumps({"parent_asin": f"B{k:03d}", "title": f"Desk {k}"}) for k in range(7)])
    ds = prepare("amazon", reviews, None, meta=meta)
    assert min(r.timestamp for r in ds.train) == 1_400_000_000 + 86_400 * N_USERS
    assert ds.items["B001"] == "Desk 1"


@pytest.mark.parametrize("line_text, message", [
    ('{"reviewerID": "u", "asin": "a", "unixReviewTime": ', "neither JSON nor a Python literal"),
    ('{"reviewerID": "u", "unixReviewTime": 5}', "missing field 'asin'"),
    ('{"reviewerID": "u", "asin": "a", "unixReviewTime": "soon"}', "'soon' is not a number"),
    ('{"user": "u"}', "no reviewer field"),
    ('[1, 2]', "expected an object"),
])
def test_amazon_bad_review_lines(tmp_path, line_text, message, write_lines):
    good = json.dumps({"reviewerID": "u", "asin": "a", "unixReviewTime": 1})
    reviews = write_lines(tmp_path / "r.json", [good, good, line_text])
    write_lines(tmp_path / "meta_x.json", [json.dumps({"asin": "a", "title": "A"})])
    with pytest.raises(DataError, match=message) as err:
        prepare("amazon", reviews, None)
    assert err.value.line == 3 and "r.json, line 3:" in str(err.value)


def test_amazon_meta_must_be_findable(tmp_path, write_lines):
    reviews = write_lines(tmp_path / "r.json", [json.dumps({"reviewerID": "u", "asin": "a", "unixReviewTime": 1})])
    with pytest.raises(DataError, match="which metadata file") as err:
        prepare("amazon", reviews, None)
    assert "--meta" in str(err.value)
    write_lines(tmp_path / "meta_x.json", [json.dumps({"title": "no asin"})])
    with pytest.raises(DataError, match="missing field 'asin'") as err:
        prepare("amazon", reviews, None)
    assert "meta_x.json, line 1" in str(err.value)


def _recbole_with_empty_title(folder, write_lines, bom=False):
    inter = ["user_id:token\titem_id:token\ttimestamp:float"] + [f"{u}\t{i}\t{t}" for u, i, t in _events()]
    item = ["item_id:token\ttitle:token_seq"] + [f"B{k:03d}\tFilm {k}" for k in range(6)] + ["B006\t   "]
    write_lines(folder / "toy.inter", inter)
    write_lines(folder / "toy.item", item)
    if bom:
        for name in ("toy.inter", "toy.item"):
            (folder / name).write_bytes(b"\xef\xbb\xbf" + (folder / name).read_bytes())
    return folder


def test_recbole_untitled_items_are_dropped_by_default_or_kept(tmp_path, write_lines):
    folder = _recbole_with_empty_title(tmp_path, write_lines)
    dropped = prepare("recbole", folder, None, k_core=1)
    assert "B006" not in dropped.items and dropped.stats["dropped"]["items_with_empty_title"] == 1
    assert dropped.stats["dropped"]["interactions_of_items_without_usable_title"] == N_USERS
    assert dropped.stats["untitled_items"] == {"policy": "drop", "found": 1, "kept": 0,
                                               "by_reason": {"with_empty_title": 1}}
    kept = prepare("recbole", folder, None, k_core=1, untitled="keep")
    assert kept.items["B006"] == "unknown item B006" and kept.stats["dropped"]["items_with_empty_title"] == 0
    assert kept.stats["untitled_items"]["kept"] == 1 and kept.stats["options"]["untitled"] == "keep"
    assert kept.stats["n_train"] + kept.stats["n_valid"] + kept.stats["n_test"] == N_USERS * (PER_USER - 1)
    assert any("unknown item" in note and "B006" in note for note in kept.stats["notes"])
    with pytest.raises(ConfigError, match="untitled='no'"):
        prepare("recbole", folder, None, untitled="no")


def test_recbole_files_with_a_byte_order_mark(tmp_path, write_lines):
    ds = prepare("recbole", _recbole_with_empty_title(tmp_path, write_lines, bom=True), None)
    assert ds.items["B000"] == "Film 0" and ds.stats["n_users"] == N_USERS


def test_recbole_short_row_is_reported_as_incomplete(tmp_path, write_lines):
    write_lines(tmp_path / "x.inter", ["user_id:token\titem_id:token\ttimestamp:float", "1\t2\t3", "1\t"])
    write_lines(tmp_path / "x.item", ["item_id:token\ttitle:token_seq", "2\tTwo"])
    with pytest.raises(DataError, match="the row is incomplete") as err:
        prepare("recbole", tmp_path / "x.inter", None)
    assert err.value.line == 3


def test_amazon_untitled_keep_uses_placeholders(tmp_path, write_lines):
    reviews = write_lines(tmp_path / "Office_Products_5.json", [json.dumps(
        {"reviewerID": u, "asin": i, "unixReviewTime": t}) for u, i, t in _events()])
    meta = [json.dumps({"asin": f"B{k:03d}", "title": f"Stapler {k}"}) for k in range(5)]
    meta.append(json.dumps({"asin": "B005", "title": ""}))  # B006 has no metadata line at all
    write_lines(tmp_path / "meta_Office_Products.json", meta)
    ds = prepare("amazon", reviews, None, untitled="keep")
    assert ds.items["B005"] == "unknown item B005" and ds.items["B006"] == "unknown item B006"
    assert ds.stats["untitled_items"]["by_reason"] == {"with_empty_title": 1, "without_title": 1}
    default = prepare("amazon", reviews, None, k_core=1)
    assert {"B005", "B006"}.isdisjoint(default.items)
    d = default.stats["dropped"]
    assert (d["items_with_empty_title"], d["items_without_title"]) == (1, 1)
