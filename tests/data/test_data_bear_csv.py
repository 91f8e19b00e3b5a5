"""BEAR CSV reader: parsing, the carved validation split, sampling, and a DataError for every bad input."""
from __future__ import annotations

import json
import time

import pytest

from bearrec.data import format_stats, load_dataset, prepare
from bearrec.errors import ConfigError, DataError


def test_reads_rows_carves_latest_train_rows_as_valid(bear_folder, tmp_path):
    ds = prepare("bear-csv", bear_folder, tmp_path / "out", valid_size=2)
    assert [len(ds.train), len(ds.valid), len(ds.test)] == [6, 2, 2]
    assert [r.timestamp for r in ds.valid] == [700, 800]
    assert max(r.timestamp for r in ds.train) <= min(r.timestamp for r in ds.valid)
    assert max(r.timestamp for r in ds.valid) <= min(r.timestamp for r in ds.test)
    first = ds.test[0]
    assert (first.user_id, first.history, first.target) == ("u0", ("1", "2"), "3")
    assert ds.items["1"] == "Item 1 & Co"  # HTML entity unescaped
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert stats["duplicate_titles"] == {"titles": 1, "items": 2, "extra_items": 1}
    assert stats["n_items"] == 6 and stats["n_test"] == 2 and stats["dropped"]["rows_unknown_item"] == 0
    assert stats["history_length"] == {"min": 2, "mean": 2.0, "max": 2}
    assert load_dataset(tmp_path / "out").valid == ds.valid


def test_valid_defaults_to_test_size_and_sample_is_seeded(bear_folder):
    ds = prepare("bear-csv", bear_folder, None)
    assert len(ds.valid) == len(ds.test) == 2
    a = prepare("bear-csv", bear_folder, None, train_sample=3, seed=1)
    b = prepare("bear-csv", bear_folder, None, train_sample=3, seed=1)
    assert a.train == b.train and len(a.train) == 3
    assert a.stats["dropped"]["train_rows_not_sampled"] == 3
    assert [r.timestamp for r in a.train] == sorted(r.timestamp for r in a.train)
    assert set(a.train) <= set(ds.train)  # sampled after carving: never a validation row
    with pytest.raises(ConfigError):
        prepare("bear-csv", bear_folder, None, train_sample=100)


def test_extra_columns_are_ignored(tmp_path, write_bear):
    folder = write_bear(tmp_path, {"1": "a", "2": "b"}, ['u,"[1, 2]","x",5', 'u,"[2, 1]","y",6'],
                        ['u,"[1, 2]","z",7'], header="user_id,item_ids,mask,timestamp")
    ds = prepare("bear-csv", folder, None, valid_size=1)
    assert ds.test[0].timestamp == 7 and len(ds.train) == 1


def test_unknown_items_can_be_dropped_and_counted(tmp_path, write_bear):
    folder = write_bear(tmp_path, {"1": "a", "2": "b"}, ['u,"[1, 2]",5', 'u,"[1, 99]",6', 'u,"[2, 1]",7'],
                        ['u,"[1, 2]",8'])
    ds = prepare("bear-csv", folder, None, unknown_items="drop")
    assert ds.stats["dropped"]["rows_unknown_item"] == 1 and len(ds.train) + len(ds.valid) == 2


@pytest.mark.parametrize("train, message, line", [
    (['u,"[1, 2]",5', 'u,"[1, 99]",6'], "not in id2name4Rec.json", 3),
    (['u,"[1, 2]",5', 'u,"[2]",6'], "empty history", 3),
    (['u,"[1, 2]",5', 'u,"[]",6'], "empty history", 3),
    (['u,"[1, 2]",5', 'u,"[1, 2]",yesterday'], "not an integer", 3),
    (['u,"[1, 2",5'], "not a list literal", 2),
    (['u,"__import__(\'os\')",5'], "not a list literal", 2),
    (['u,"{1: 2}",5'], "not a list of ids", 2),
    (['u,[1, 2],5'], "expected 3 fields", 2),
    (['u,"[1, 2]",5', 'u,"[1,\n2]",6', 'u,"[1, 2, 7]",7'], "not in id2name4Rec.json", 5),
])
def test_bad_rows_name_file_and_line(tmp_path, train, message, line, write_bear):
    folder = write_bear(tmp_path, {"1": "a", "2": "b"}, train, ['u,"[1, 2]",8'])
    with pytest.raises(DataError, match=message) as err:
        prepare("bear-csv", folder, None, valid_size=1)
    assert err.value.path == folder / "train.csv" and err.value.line == line
    assert f"train.csv, line {line}:" in str(err.value) and "Fix:" in str(err.value)


def test_missing_column_names_header_line(tmp_path, write_bear):
    folder = write_bear(tmp_path, {"1": "a"}, ['u,"[1, 1]"'], ['u,"[1, 1]"'], header="user_id,item_ids")
    with pytest.raises(DataError, match="missing column.*timestamp") as err:
        prepare("bear-csv", folder, None)
    assert err.value.line == 1 and "test.csv, line 1" in str(err.value)


@pytest.mark.parametrize("catalog, message", [
    ("{}", "catalog is empty"),
    ('{"1": "a",\n "2": }', "not valid JSON"),
    ('["a"]', "expected a JSON object"),
])
def test_bad_catalogs(tmp_path, catalog, message, write_bear):
    folder = write_bear(tmp_path, catalog, ['u,"[1, 1]",1'], ['u,"[1, 1]",2'])
    with pytest.raises(DataError, match=message) as err:
        prepare("bear-csv", folder, None)
    assert "id2name4Rec.json" in str(err.value)
    if message == "not valid JSON":
        assert err.value.line == 2


def test_missing_train_csv_and_empty_split(tmp_path, write_bear):
    folder = write_bear(tmp_path / "a", {"1": "a"}, None, ['u,"[1, 1]",2'])
    with pytest.raises(DataError, match="train.csv is missing"):
        prepare("bear-csv", folder, None)
    folder = write_bear(tmp_path / "b", {"1": "a"}, ['u,"[1, 1]",1'], [])
    with pytest.raises(DataError, match="no rows") as err:
        prepare("bear-csv", folder, None)
    assert err.value.path == folder / "test.csv"


def test_real_office_and_clothing(shared_data, tmp_path):
    office = prepare("bear-csv", shared_data / "amazon" / "Office", tmp_path / "office")
    s = office.stats
    assert (s["n_items"], s["n_test"], s["n_train"] + s["n_valid"]) == (2414, 1925, 15400)
    assert s["n_valid"] == 1925 and s["duplicate_titles"]["titles"] == 3
    assert max(r.timestamp for r in office.valid) <= min(r.timestamp for r in office.test)
    assert not any("&amp;" in t for t in office.items.values())
    started = time.perf_counter()
    clothing = prepare("bear-csv", shared_data / "amazon" / "Clothing", None)
    assert time.perf_counter() - started < 20
    s = clothing.stats
    assert (s["n_items"], s["n_test"], s["n_train"] + s["n_valid"]) == (22948, 5544, 44351)
    assert s["duplicate_titles"]["extra_items"] == 220


def test_real_toy_has_no_train_split(shared_data):
    with pytest.raises(DataError, match="train.csv is missing"):
        prepare("bear-csv", shared_data / "amazon" / "Toy", None)


# ---------------------------------------------------------------- items without a usable title (--untitled)

def _untitled_folder(tmp_path, write_bear):
    """Item 3's title is whitespace only, item 4's is null; item 3 is in one train row and the test row."""
    catalog = {"1": "Pen", "2": "Ink", "3": "  ", "4": None, "5": "Pad"}
    train = ['u,"[1, 2]",5', 'u,"[2, 3]",6', 'v,"[1, 5]",7', 'v,"[5, 2]",8']
    return write_bear(tmp_path, catalog, train, ['u,"[1, 3]",9', 'v,"[2, 1]",10'])


def test_untitled_items_are_kept_under_a_placeholder_by_default(tmp_path, write_bear):
    folder = _untitled_folder(tmp_path, write_bear)
    ds = prepare("bear-csv", folder, tmp_path / "out", valid_size=1)
    assert ds.items["3"] == "unknown item 3" and ds.items["4"] == "unknown item 4" and ds.items["1"] == "Pen"
    assert len(ds.train) + len(ds.valid) == 4 and len(ds.test) == 2  # every published row kept
    s = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert s["untitled_items"] == {"policy": "keep", "found": 2, "kept": 2,
                                   "by_reason": {"with_empty_title": 1, "without_title": 1}}
    assert s["options"]["untitled"] == "keep" and s["dropped"]["rows_with_untitled_item"] == 0
    assert any("unknown item" in note and "3, 4" in note for note in s["notes"])
    assert "untitled items 2" in format_stats(s) and "kept" in format_stats(s)


def test_untitled_items_can_be_dropped_with_their_rows(tmp_path, write_bear):
    folder = _untitled_folder(tmp_path, write_bear)
    ds = prepare("bear-csv", folder, None, untitled="drop", valid_size=1)
    assert set(ds.items) == {"1", "2", "5"}
    assert all("3" not in (*r.history, r.target) for rows in ds.splits.values() for r in rows)
    d = ds.stats["dropped"]
    assert (d["items_with_empty_title"], d["items_without_title"], d["rows_with_untitled_item"]) == (1, 1, 2)
    assert len(ds.train) + len(ds.valid) == 3 and len(ds.test) == 1
    assert ds.stats["untitled_items"]["kept"] == 0 and ds.stats["untitled_items"]["policy"] == "drop"
    assert "rows with untitled item 2" in format_stats(ds.stats)
    with pytest.raises(ConfigError, match="untitled='maybe'"):
        prepare("bear-csv", folder, None, untitled="maybe")


def test_dropping_every_row_of_a_split_is_an_error_not_an_empty_split(tmp_path, write_bear):
    folder = write_bear(tmp_path, {"1": "Pen", "2": "Ink", "3": ""}, ['u,"[1, 2]",5', 'u,"[2, 1]",6'],
                        ['u,"[1, 3]",9'])
    with pytest.raises(DataError, match="every one of the 1 rows was dropped") as err:
        prepare("bear-csv", folder, None, untitled="drop")
    assert err.value.path == folder / "test.csv" and "rows_with_untitled_item" in str(err.value)


# ---------------------------------------------------------------- CSV errors that say what is wrong

@pytest.mark.parametrize("text, message, line", [
    # the last line cut off inside the quoted item_ids list, with and without a final newline
    ('user_id,item_ids,timestamp\nu,"[1, 2]",5\nu,"[2, 1', "file ends inside its quoted item_ids list", 3),
    ('user_id,item_ids,timestamp\nu,"[1, 2]",5\nu,"[2, 1\n', "file ends inside its quoted item_ids list", 3),
    # a row cut off inside its list, followed by more rows: the quote runs into the next line
    ('user_id,item_ids,timestamp\nu,"[1, 2\nu,"[2, 1]",6\n', "closed only 1 line", 2),
    # too few columns
    ('user_id,item_ids,timestamp\nu,"[1, 2]",5\nu,"[2, 1]"\n',
     r"incomplete: expected 3 fields, found 2 \(no timestamp\)", 3),
    ('user_id,item_ids,timestamp\nu,"[1, 2]",5\nu\n', r"found 1 \(no item_ids, timestamp\)", 3),
    ('user_id,item_ids,timestamp\nu,"[1, 2]",5\nu,"[2, 1]",', "timestamp is empty: the row is incomplete", 3),
])
def test_truncated_rows_are_reported_as_incomplete(tmp_path, text, message, line, write_bear):
    folder = write_bear(tmp_path, {"1": "a", "2": "b"}, text, ['u,"[1, 2]",8'])
    with pytest.raises(DataError, match=message) as err:
        prepare("bear-csv", folder, None, valid_size=1)
    assert err.value.path == folder / "train.csv" and err.value.line == line
    assert "incomplete" in str(err.value) and "quote the item_ids list" not in str(err.value)


def test_unclosed_list_inside_quotes_says_it_is_cut_off(tmp_path, write_bear):
    folder = write_bear(tmp_path, {"1": "a", "2": "b"}, ['u,"[1, 2]",5', 'u,"[2, 1",6'], ['u,"[1, 2]",8'])
    with pytest.raises(DataError, match=r"cut off \(no closing '\]'\)") as err:
        prepare("bear-csv", folder, None, valid_size=1)
    assert err.value.line == 3


def test_utf8_byte_order_mark_is_accepted(tmp_path, write_bear):
    folder = write_bear(tmp_path, {"1": "a", "2": "b"}, ['u,"[1, 2]",5', 'u,"[2, 1]",6'], ['u,"[1, 2]",8'])
    for name in ("train.csv", "test.csv", "id2name4Rec.json"):
        path = folder / name
        path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    ds = prepare("bear-csv", folder, None, valid_size=1)
    assert ds.test[0].user_id == "u" and ds.items == {"1": "a", "2": "b"}


def test_missing_test_csv_names_the_file(tmp_path, write_bear):
    folder = write_bear(tmp_path, {"1": "a", "2": "b"}, ['u,"[1, 2]",5', 'u,"[2, 1]",6'], ['u,"[1, 2]",8'])
    (folder / "test.csv").unlink()
    with pytest.raises(DataError, match="test.csv is missing") as err:
        prepare("bear-csv", folder, None)
    assert err.value.path == folder / "test.csv" and "Fix:" in str(err.value)
