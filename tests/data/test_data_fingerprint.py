"""The dataset fingerprint, load_dataset's errors for missing files, and when prepare may write OUTPUT_DIR."""
from __future__ import annotations

import hashlib
import json

import pytest

from bearrec.cli import main
from bearrec.data import dataset_fingerprint, format_stats, load_dataset, prepare, save_dataset
from bearrec.errors import ConfigError, DataError

CONTENT = ("items.jsonl", "train.jsonl", "valid.jsonl", "test.jsonl")


def _expected(folder) -> str:
    digest = hashlib.sha256()
    for name in CONTENT:
        digest.update(b"\0" + name.encode() + b"\0" + (folder / name).read_bytes())
    return "sha256:" + digest.hexdigest()


def test_fingerprint_covers_the_four_files_and_is_recorded(bear_folder, tmp_path):
    out = tmp_path / "out"
    ds = prepare("bear-csv", bear_folder, out)
    fp = dataset_fingerprint(out)
    assert fp == _expected(out) and fp.startswith("sha256:") and len(fp) == 7 + 64
    assert ds.fingerprint == fp and ds.stats["fingerprint"] == fp
    stats = json.loads((out / "stats.json").read_text())
    assert stats["fingerprint"] == fp and f"fingerprint {fp}" in format_stats(stats)
    loaded = load_dataset(out)
    assert loaded.fingerprint == fp
    # stats.json is not part of it; any byte of a split is
    (out / "stats.json").write_text(json.dumps({**stats, "notes": ["edited"]}))
    assert dataset_fingerprint(out) == fp
    (out / "valid.jsonl").write_text((out / "valid.jsonl").read_text().replace('"timestamp": ', '"timestamp":  ', 1))
    assert load_dataset(out).fingerprint == dataset_fingerprint(out) != fp


def test_fingerprint_depends_on_content_not_on_where_it_is(bear_folder, tmp_path):
    a = prepare("bear-csv", bear_folder, tmp_path / "a")
    b = prepare("bear-csv", bear_folder, tmp_path / "b")
    c = prepare("bear-csv", bear_folder, tmp_path / "c", train_sample=3)
    assert a.fingerprint == b.fingerprint != c.fingerprint


def test_save_dataset_sets_the_fingerprint_of_what_it_wrote(bear_folder, tmp_path):
    ds = load_dataset(prepare("bear-csv", bear_folder, tmp_path / "a").path)
    ds.splits["test"] = ds.test[:1]
    save_dataset(ds, tmp_path / "b")
    assert ds.fingerprint == dataset_fingerprint(tmp_path / "b") == load_dataset(tmp_path / "b").fingerprint
    assert ds.fingerprint != dataset_fingerprint(tmp_path / "a")
    assert json.loads((tmp_path / "b" / "stats.json").read_text())["fingerprint"] == ds.fingerprint


@pytest.mark.parametrize("name", CONTENT)
def test_a_missing_file_of_a_prepared_dataset_is_named(bear_folder, tmp_path, name):
    out = tmp_path / "out"
    prepare("bear-csv", bear_folder, out)
    (out / name).unlink()
    with pytest.raises(DataError, match=f"has no {name}") as err:
        load_dataset(out)
    assert err.value.path == out / name and "bearrec prepare" in str(err.value)
    with pytest.raises(DataError, match=f"has no {name}"):
        dataset_fingerprint(out)


def test_unreadable_stats_json_is_a_data_error(bear_folder, tmp_path):
    out = tmp_path / "out"
    prepare("bear-csv", bear_folder, out)
    (out / "stats.json").write_text("{")
    with pytest.raises(DataError, match="stats.json: not valid JSON"):
        load_dataset(out)


# ---------------------------------------------------------------- re-preparing into an existing OUTPUT_DIR

def test_same_dataset_again_is_fine_a_different_one_needs_overwrite(bear_folder, tmp_path):
    out = tmp_path / "out"
    first = prepare("bear-csv", bear_folder, out)
    again = prepare("bear-csv", bear_folder, out)  # idempotent
    assert again.fingerprint == first.fingerprint
    before = {n: (out / n).read_bytes() for n in CONTENT}
    with pytest.raises(ConfigError, match="already holds a different prepared dataset") as err:
        prepare("bear-csv", bear_folder, out, train_sample=3)
    assert str(out) in str(err.value)
    assert "Fix: pass --overwrite to replace it, or choose another OUTPUT_DIR" in str(err.value)
    assert {n: (out / n).read_bytes() for n in CONTENT} == before  # nothing written
    replaced = prepare("bear-csv", bear_folder, out, overwrite=True, train_sample=3)
    assert load_dataset(out).fingerprint == replaced.fingerprint != first.fingerprint


def test_an_incomplete_prepared_dataset_needs_overwrite(bear_folder, tmp_path):
    out = tmp_path / "out"
    prepare("bear-csv", bear_folder, out)
    (out / "valid.jsonl").unlink()
    with pytest.raises(ConfigError, match=r"incomplete prepared dataset \(valid.jsonl missing\)"):
        prepare("bear-csv", bear_folder, out)
    prepare("bear-csv", bear_folder, out, overwrite=True)
    assert load_dataset(out).fingerprint == dataset_fingerprint(out)


def test_a_folder_of_other_files_is_refused_before_any_work(bear_folder, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="is not empty .*notes.txt.* not a prepared dataset") as err:
        prepare("bear-csv", tmp_path / "does-not-exist", out)  # refused before the source is even read
    assert "Fix: choose another OUTPUT_DIR, or pass --overwrite" in str(err.value)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    prepare("bear-csv", bear_folder, out, overwrite=True)
    assert (out / "notes.txt").read_text() == "keep me" and len(load_dataset(out).items) == 6


def test_empty_folder_and_leftovers_of_an_interrupted_prepare_are_fine(bear_folder, tmp_path):
    (tmp_path / "empty").mkdir()
    prepare("bear-csv", bear_folder, tmp_path / "empty")
    left = tmp_path / "left"
    left.mkdir()
    (left / "items.jsonl").write_text('{"item_id": "9", "title": "old"}\n')
    (left / ".train.jsonl.abc123.tmp").write_text("partial")
    ds = prepare("bear-csv", bear_folder, left)
    assert load_dataset(left).fingerprint == ds.fingerprint


def test_output_path_that_is_a_file(bear_folder, tmp_path):
    path = tmp_path / "out.txt"
    path.write_text("x")
    with pytest.raises(ConfigError, match="out.txt is a file, not a folder"):
        prepare("bear-csv", bear_folder, path, overwrite=True)
    with pytest.raises(ConfigError, match="cannot be created: .*out.txt is a file"):
        prepare("bear-csv", bear_folder, path / "sub")
    assert path.read_text() == "x"


def test_invalid_new_dataset_writes_nothing(tmp_path, write_bear, bear_folder):
    out = tmp_path / "out"
    prepare("bear-csv", bear_folder, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    bad = write_bear(tmp_path / "bad", {"1": "a", "2": "b"}, ['u,"[1, 2]",5', 'u,"[2, 9]",6'], ['u,"[1, 2]",8'])
    with pytest.raises(DataError, match="not in id2name4Rec.json"):
        prepare("bear-csv", bad, out, overwrite=True)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_cli_overwrite_flag(bear_folder, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["prepare", "bear-csv", str(bear_folder), str(out)]) == 0
    assert "fingerprint sha256:" in capsys.readouterr().out
    assert main(["prepare", "bear-csv", str(bear_folder), str(out), "--train-sample", "3"]) == 2
    err = capsys.readouterr().err
    assert "--overwrite" in err and "Traceback" not in err
    assert main(["prepare", "bear-csv", str(bear_folder), str(out), "--train-sample", "3", "--overwrite"]) == 0
    assert load_dataset(out).stats["n_train"] == 3
