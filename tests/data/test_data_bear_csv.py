"""BEAR CSV reader: parsing, the carved validation split, sampling, and a DataError for every bad input."""
from __future__ import annotations

import json
import time

import pytest

from bearrec.data import load_dataset, prepare
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
    ('{"1": "  "}', "has no title"),
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
