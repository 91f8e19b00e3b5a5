"""The error matrix (issue 10): every bad run directory, config, argument, API call and input file is refused with
exit 2 and a message that names the file, key or argument and says how to fix it, with no traceback, and without
changing anything already on disk. A few positive controls sit beside the refusals they border on.

Every command runs in-process (`bearrec.cli.main`); argparse usage errors arrive as SystemExit(2).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

from bearrec.cli import main
from bearrec.errors import BearrecError
from run_fixtures import copy_run, train_small_run, write_small_dataset
from test_cli import write_bear_csv

# The settings of conftest.train_small_run as a YAML file, for `bearrec train` on the command line.
SMALL_CONFIG = """\
model: tiny
template: compact
max_history: 3
tiny: {vocab_size: 300, hidden_size: 32, intermediate_size: 64, num_layers: 1, num_heads: 4}
objective: {name: bear, num_beams: 5}
training:
  num_train_epochs: 1
  per_device_train_batch_size: 10
  eval_strategy: steps
  eval_steps: 1
  save_strategy: steps
  save_steps: 1
  logging_steps: 1
  disable_tqdm: true
  report_to: none
"""


# ---------------------------------------------------------------------------------------------------- helpers
def snapshot(*folders: Path) -> dict[str, str]:
    """{path: SHA-256} of every file under `folders` (a folder maps to "<dir>", so new empty folders count too;
    a folder that does not exist maps to "<absent>")."""
    state: dict[str, str] = {}
    for folder in map(Path, folders):
        if not folder.exists():
            state[str(folder)] = "<absent>"
            continue
        paths = [folder] if folder.is_file() else [folder, *sorted(folder.rglob("*"))]
        for path in paths:
            if path.is_dir():
                state[str(path)] = "<dir>"
            else:
                state[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return state


def assert_unchanged(before: dict[str, str], after: dict[str, str], new: tuple[Path, ...] = ()) -> None:
    """Nothing in `before` changed or went missing; nothing appeared but the paths in `new` (expected outputs)."""
    allowed = {str(p) for p in new}
    changed = sorted(p for p in before if p not in allowed and after.get(p) != before[p])
    added = sorted(p for p in after if p not in before and p not in allowed
                   and not any(p.startswith(a + os.sep) for a in allowed))
    assert not changed and not added, f"changed: {changed}; new: {added}"


def bearrec(capsys, *args) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `bearrec ARGS` run in-process (a SystemExit is a test failure here)."""
    capsys.readouterr()
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def usage_error(capsys, *args) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of a command line argparse must reject (it raises SystemExit)."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    return exc.value.code, out, err


def assert_refused(code: int, out: str, err: str, *names: str) -> None:
    """Exit 2, a bearrec error naming every one of `names` with its fix, and no traceback."""
    assert code == 2, f"exit {code}; stderr: {err[-2000:]}"
    assert "Traceback" not in out and "Traceback" not in err
    assert "bearrec: error:" in err, err[-2000:]
    message = err[err.index("bearrec: error:"):]
    for name in names:
        assert name in message, f"{name!r} not named in: {message}"
    assert "Fix:" in message, f"no fix in: {message}"


def assert_usage(code: int, out: str, err: str, *names: str) -> None:
    """Exit 2 from argparse, naming the argument and its allowed range, and no traceback."""
    assert code == 2
    assert "Traceback" not in out and "Traceback" not in err
    for name in names:
        assert name in err, f"{name!r} not named in: {err}"


@pytest.fixture
def run_copy(small_run, tmp_path) -> Path:
    """A copy of the small run (tmp_path/w/run) and its dataset (tmp_path/w/data), recording that dataset."""
    return copy_run(small_run, tmp_path / "w")


@pytest.fixture(scope="module")
def other_project(tmp_path_factory) -> Path:
    """A run trained on another dataset (30 items), with the relative path `dataset=data` given from its project
    folder (ROOT/data, ROOT/run); returns ROOT."""
    root = tmp_path_factory.mktemp("other_project")
    write_small_dataset(root / "data", n_items=30, n_users=34)
    cwd = os.getcwd()
    os.chdir(root)
    try:
        train_small_run(Path("data"), Path("run"))
    finally:
        os.chdir(cwd)
    return root


@pytest.fixture
def config_file(tmp_path) -> Path:
    path = tmp_path / "small.yaml"
    path.write_text(SMALL_CONFIG)
    return path


@pytest.fixture
def bear_csv(tmp_path) -> Path:
    raw = tmp_path / "raw"
    write_bear_csv(raw)
    return raw


def edit_items(data: Path) -> None:
    """Change the title of the first item of a prepared dataset's catalog."""
    lines = (data / "items.jsonl").read_text().splitlines()
    first = json.loads(lines[0])
    first["title"] = first["title"] + " renamed"
    lines[0] = json.dumps(first)
    (data / "items.jsonl").write_text("\n".join(lines) + "\n")


# ------------------------------------------------------------------------------------------- the run directory
def test_prepare_refuses_to_replace_a_different_dataset_without_overwrite(tmp_path, bear_csv, capsys):
    target = tmp_path / "prepared"
    write_small_dataset(target)  # another prepared dataset already lives there
    before = snapshot(tmp_path)
    assert_refused(*bearrec(capsys, "prepare", "bear-csv", bear_csv, target), str(target), "--overwrite")
    assert_unchanged(before, snapshot(tmp_path))


def test_prepare_with_overwrite_replaces_a_different_dataset(tmp_path, bear_csv, capsys):
    target = tmp_path / "prepared"
    write_small_dataset(target)
    code, out, err = bearrec(capsys, "prepare", "bear-csv", bear_csv, target, "--overwrite")
    assert code == 0, err
    assert "Traceback" not in out + err
    assert json.loads((target / "stats.json").read_text())["n_items"] == 40  # the CSV's catalog, not the old 24


@pytest.mark.parametrize("command", [
    ["recommend", "{run}", "--limit", "2", "--beams", "3"],
    ["evaluate", "{run}", "--limit", "2", "--beams", "3"],
    ["diagnose", "{run}", "--limit", "2", "--beams", "3", "--max-expansions", "20"],
], ids=["recommend", "evaluate", "diagnose"])
def test_a_run_whose_dataset_changed_since_training_is_refused(run_copy, command, capsys):
    edit_items(run_copy.parent / "data")
    before = snapshot(run_copy.parent)
    code, out, err = bearrec(capsys, *[c.format(run=run_copy) for c in command])
    assert_refused(code, out, err, str(run_copy / "config.json"), "changed")
    assert_unchanged(before, snapshot(run_copy.parent))


def test_recommend_histories_on_a_changed_dataset_warns_and_succeeds(run_copy, tmp_path, capsys):
    edit_items(run_copy.parent / "data")
    histories, output = tmp_path / "h.jsonl", tmp_path / "out.jsonl"
    histories.write_text(json.dumps({"history": ["1", "2"]}) + "\n")
    before = snapshot(run_copy.parent, histories)
    code, out, err = bearrec(capsys, "recommend", run_copy, "--histories", histories, "--beams", "3", "--output", output)
    assert code == 0, err
    assert "WARNING" in err and str(run_copy / "config.json") in err
    assert "Traceback" not in out + err
    assert len(json.loads(output.read_text())["recommendations"]) == 3
    assert_unchanged(before, snapshot(run_copy.parent, histories))


def _truncate(path: Path, other: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _random_bytes(path: Path, other: Path) -> None:
    path.write_bytes(os.urandom(path.stat().st_size))  # same size: only the checksum can tell


def _empty(path: Path, other: Path) -> None:
    path.write_bytes(b"")


def _from_other_run(path: Path, other: Path) -> None:
    shutil.copyfile(other / path.name, path)


@pytest.mark.parametrize("damage", [_truncate, _random_bytes, _empty, _from_other_run],
                         ids=["truncated", "random-bytes", "empty", "another-runs-catalog"])
def test_a_damaged_trie_is_refused(run_copy, other_project, damage, capsys):
    damage(run_copy / "trie.pt", other_project / "run")
    before = snapshot(run_copy.parent)
    code, out, err = bearrec(capsys, "recommend", run_copy, "--limit", "2", "--beams", "3")
    assert_refused(code, out, err, str(run_copy / "trie.pt"))
    assert_unchanged(before, snapshot(run_copy.parent))


def _weights(run: Path) -> Path:
    (path,) = (run / "model").glob("*.safetensors")
    return path


def _flip_near_end(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-7] ^= 0x01  # a byte of the last tensor's data, far past the header
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [
    lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size - 100]),
    _flip_near_end,
    lambda p: p.unlink(),
], ids=["truncated", "one-flipped-data-byte", "missing"])
def test_damaged_model_weights_are_refused(run_copy, damage, capsys):
    weights = _weights(run_copy)
    damage(weights)
    before = snapshot(run_copy.parent)
    code, out, err = bearrec(capsys, "recommend", run_copy, "--limit", "2", "--beams", "3")
    assert_refused(code, out, err, str(weights))
    assert_unchanged(before, snapshot(run_copy.parent))


def test_a_model_manifest_that_is_not_json_is_refused(run_copy, capsys):
    manifest = run_copy / "model" / "bearrec_model.json"
    manifest.write_text(manifest.read_text()[:-20])
    before = snapshot(run_copy.parent)
    code, out, err = bearrec(capsys, "recommend", run_copy, "--limit", "2", "--beams", "3")
    assert_refused(code, out, err, str(manifest), "JSON")
    assert_unchanged(before, snapshot(run_copy.parent))


def test_a_run_whose_dataset_moved_away_is_refused_naming_config_json(run_copy, tmp_path, capsys):
    (run_copy.parent / "data").rename(tmp_path / "elsewhere")
    before = snapshot(tmp_path)
    code, out, err = bearrec(capsys, "recommend", run_copy, "--limit", "2", "--beams", "3")
    assert_refused(code, out, err, str(run_copy / "config.json"), "not found")
    assert_unchanged(before, snapshot(tmp_path))


def test_recommend_from_another_working_folder_with_a_relative_dataset_path(other_project, tmp_path, monkeypatch,
                                                                           capsys):
    """Positive control: a run trained with `dataset=data` (relative), its project moved, used from elsewhere."""
    project = tmp_path / "moved"
    shutil.copytree(other_project / "data", project / "data")
    shutil.copytree(other_project / "run", project / "run")
    config = json.loads((project / "run" / "config.json").read_text())
    assert config["dataset"] == "data"  # as given, relative to the folder training ran from
    config["dataset_path"] = str(tmp_path / "gone")  # the original project folder no longer exists
    (project / "run" / "config.json").write_text(json.dumps(config))
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    before = snapshot(project)
    code, out, err = bearrec(capsys, "recommend", "../moved/run", "--limit", "2", "--beams", "3", "--output", "p.jsonl")
    assert code == 0, err
    assert "Traceback" not in out + err
    assert len((tmp_path / "cwd" / "p.jsonl").read_text().splitlines()) == 2
    assert_unchanged(before, snapshot(project))


def test_train_resume_on_a_run_made_with_another_config_is_refused(run_copy, config_file, capsys):
    before = snapshot(run_copy.parent)
    code, out, err = bearrec(capsys, "train", config_file, f"dataset={run_copy.parent / 'data'}",
                             f"output_dir={run_copy}", "objective.name=sft", "--resume")
    assert_refused(code, out, err, str(run_copy / "config.json"), "objective")
    assert_unchanged(before, snapshot(run_copy.parent))


def test_train_into_an_output_dir_that_is_a_file_is_refused(run_copy, tmp_path, config_file, capsys):
    target = tmp_path / "a-file"
    target.write_text("not a folder\n")
    before = snapshot(tmp_path)
    code, out, err = bearrec(capsys, "train", config_file, f"dataset={run_copy.parent / 'data'}",
                             f"output_dir={target}")
    assert_refused(code, out, err, str(target), "output_dir")
    assert_unchanged(before, snapshot(tmp_path))


# ------------------------------------------------------------------------------------------------ typed config
TYPED_CONFIG = [
    ("training.learning_rate=abc", "training.learning_rate"),
    ("max_train_rows=abc", "max_train_rows"),
    ("objective.lam=abc", "objective.lam"),
    ("training.per_device_train_batch_size=x", "training.per_device_train_batch_size"),
    ("objective.name=foo", "objective.name"),
    ("no_such_key=1", "no_such_key"),
    ("tiny.hidden_size=abc", "tiny.hidden_size"),
    ("seed=1.5", "seed"),
    ("objective.single_child_ce=maybe", "objective.single_child_ce"),
]


@pytest.mark.parametrize("override, key", TYPED_CONFIG, ids=[k for _, k in TYPED_CONFIG])
def test_a_bad_config_value_is_refused_before_the_output_dir_exists(run_copy, tmp_path, config_file, override, key,
                                                                     capsys):
    output_dir = tmp_path / "new-run"
    before = snapshot(tmp_path)
    code, out, err = bearrec(capsys, "train", config_file, f"dataset={run_copy.parent / 'data'}",
                             f"output_dir={output_dir}", override)
    assert_refused(code, out, err, key)
    assert not output_dir.exists()
    assert_unchanged(before, snapshot(tmp_path))


@pytest.mark.parametrize("content", [
    pytest.param("model: tiny\nobjective: {name: bear\n", id="bad-yaml"),
    pytest.param(None, id="missing-file"),
])
def test_a_bad_or_missing_config_file_is_refused_before_the_output_dir_exists(run_copy, tmp_path, content, capsys):
    path, output_dir = tmp_path / "config.yaml", tmp_path / "new-run"
    if content is not None:
        path.write_text(content)
    before = snapshot(tmp_path)
    code, out, err = bearrec(capsys, "train", path, f"dataset={run_copy.parent / 'data'}", f"output_dir={output_dir}")
    assert_refused(code, out, err, str(path))
    assert not output_dir.exists()
    assert_unchanged(before, snapshot(tmp_path))


# --------------------------------------------------------------------------------------------------- arguments
USAGE = [
    (["recommend", "{run}", "--limit", "-1"], "--limit"),
    (["recommend", "{run}", "--limit", "0"], "--limit"),
    (["recommend", "{run}", "--beams", "0"], "--num-beams/--beams"),
    (["diagnose", "{run}", "--limit", "0"], "--limit"),
    (["diagnose", "{run}", "--max-expansions", "0"], "--max-expansions"),
    (["evaluate", "{run}", "--num-beams", "0"], "--num-beams/--beams"),
]


@pytest.mark.parametrize("command, argument", USAGE, ids=[f"{c[0]}{c[2]}={c[3]}" for c, _ in USAGE])
def test_an_out_of_range_count_is_a_usage_error(run_copy, command, argument, capsys):
    before = snapshot(run_copy.parent)
    code, out, err = usage_error(capsys, *[c.format(run=run_copy) for c in command])
    assert_usage(code, out, err, f"argument {argument}", ">= 1")
    assert_unchanged(before, snapshot(run_copy.parent))


def test_a_negative_seed_is_a_usage_error(tmp_path, capsys):
    """`index --seed -1` would reach scikit-learn's own ValueError (a traceback): it is refused by name first."""
    code, out, err = usage_error(capsys, "index", tmp_path, "--seed", "-1")
    assert_usage(code, out, err, "argument --seed", ">= 0")


def test_report_with_an_unknown_bootstrap_metric_is_a_usage_error(run_copy, tmp_path, capsys):
    before = snapshot(tmp_path)
    code, out, err = usage_error(capsys, "report", run_copy, "--output", tmp_path / "report",
                                 "--bootstrap-metric", "auc")
    assert_usage(code, out, err, "argument --bootstrap-metric", "auc", "ndcg@K")
    assert_unchanged(before, snapshot(tmp_path))


def test_recommend_with_limit_and_histories_is_refused(run_copy, tmp_path, capsys):
    histories = tmp_path / "h.jsonl"
    histories.write_text(json.dumps({"history": ["1"]}) + "\n")
    before = snapshot(tmp_path)
    code, out, err = bearrec(capsys, "recommend", run_copy, "--limit", "3", "--histories", histories,
                             "--output", tmp_path / "out.jsonl")
    assert_refused(code, out, err, "--limit", "--histories")
    assert_unchanged(before, snapshot(tmp_path))


def test_evaluate_an_unknown_split_is_refused(run_copy, capsys):
    before = snapshot(run_copy.parent)
    code, out, err = bearrec(capsys, "evaluate", run_copy, "--split", "nosuch", "--beams", "3")
    assert_refused(code, out, err, "nosuch", "test")
    assert_unchanged(before, snapshot(run_copy.parent))


# ------------------------------------------------------------------------------------------------- Python API
@pytest.fixture(scope="module")
def recommender(small_run, tmp_path_factory):
    from bearrec.recommend import Recommender

    return Recommender.from_run(copy_run(small_run, tmp_path_factory.mktemp("api")), device="cpu")


API_REFUSALS = [
    ("15", {"k": 3}, "list of item ids"),
    (["1", "2"], {"k": 2.5}, "k must be an integer"),
    (["1", "2"], {"k": "3"}, "k must be an integer"),
    (["1", "2"], {"k": None}, "k must be an integer"),
    (["1", "2"], {"k": 0}, "k must be an integer"),
    (["1", "no-such-item"], {"k": 3}, "no-such-item"),
    ([], {"k": 3}, "empty"),
]


@pytest.mark.parametrize("history, kwargs, match", API_REFUSALS,
                         ids=["string-history", "k=2.5", "k='3'", "k=None", "k=0", "unknown-item", "empty-history"])
def test_recommender_refuses_bad_calls(recommender, history, kwargs, match):
    with pytest.raises(BearrecError, match=match) as exc:
        recommender.recommend(history, **kwargs)
    assert "Fix:" in str(exc.value)


def test_recommender_reads_int_ids_as_their_strings(recommender):
    assert recommender.recommend([1, 2], k=3) == recommender.recommend(["1", "2"], k=3)


# ------------------------------------------------------------------------------------------------------ inputs
def test_a_dataset_without_valid_jsonl_is_refused(run_copy, capsys):
    (run_copy.parent / "data" / "valid.jsonl").unlink()
    before = snapshot(run_copy.parent)
    code, out, err = bearrec(capsys, "recommend", run_copy, "--limit", "2", "--beams", "3")
    assert_refused(code, out, err, "valid.jsonl")
    assert_unchanged(before, snapshot(run_copy.parent))


def test_recommend_output_that_is_a_folder_is_refused(run_copy, tmp_path, capsys):
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "keep.txt").write_text("mine\n")
    before = snapshot(tmp_path)
    code, out, err = bearrec(capsys, "recommend", run_copy, "--limit", "2", "--beams", "3", "--output", folder)
    assert_refused(code, out, err, str(folder), "folder")
    assert_unchanged(before, snapshot(tmp_path))


def test_recommend_output_under_a_file_is_refused(run_copy, tmp_path, capsys):
    (tmp_path / "file").write_text("mine\n")
    output = tmp_path / "file" / "sub" / "out.jsonl"
    before = snapshot(tmp_path)
    code, out, err = bearrec(capsys, "recommend", run_copy, "--limit", "2", "--beams", "3", "--output", output)
    assert_refused(code, out, err, str(output))
    assert_unchanged(before, snapshot(tmp_path))


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                    reason="root ignores file permissions, so a read-only folder is writable")
def test_recommend_into_a_read_only_folder_is_refused(run_copy, tmp_path, capsys):
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        before = snapshot(tmp_path)
        code, out, err = bearrec(capsys, "recommend", run_copy, "--limit", "2", "--beams", "3",
                                 "--output", folder / "out.jsonl")
        assert_refused(code, out, err, str(folder / "out.jsonl"), "permission")
        assert_unchanged(before, snapshot(tmp_path))
    finally:
        folder.chmod(0o700)


def test_a_bear_csv_cut_off_mid_row_is_refused(tmp_path, bear_csv, capsys):
    train = bear_csv / "train.csv"
    text = train.read_text()
    train.write_text(text[: len(text) - 9])  # the last row ends inside its quoted item_ids list
    n_lines = len(train.read_text().splitlines())
    output = tmp_path / "prepared"
    before = snapshot(tmp_path)
    code, out, err = bearrec(capsys, "prepare", "bear-csv", bear_csv, output)
    assert_refused(code, out, err, str(train), f"line {n_lines}")
    assert not output.exists()
    assert_unchanged(before, snapshot(tmp_path))


def test_a_bom_in_the_csv_header_is_accepted(tmp_path, bear_csv, capsys):
    """Positive control: a UTF-8 byte-order mark before the header (as Excel writes it) is not a column name."""
    for name in ("train.csv", "test.csv"):
        path = bear_csv / name
        path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    code, out, err = bearrec(capsys, "prepare", "bear-csv", bear_csv, tmp_path / "prepared")
    assert code == 0, err
    assert json.loads((tmp_path / "prepared" / "stats.json").read_text())["n_test"] == 20


@pytest.mark.parametrize("untitled", [None, "keep", "drop"], ids=["default", "keep", "drop"])
def test_an_item_with_an_empty_title(tmp_path, bear_csv, untitled, capsys):
    """Positive controls: kept under a placeholder title (the default) or dropped with its rows, counted either way."""
    catalog = bear_csv / "id2name4Rec.json"
    titles = json.loads(catalog.read_text())
    titles["7"] = "  "
    catalog.write_text(json.dumps(titles))
    output = tmp_path / "prepared"
    code, out, err = bearrec(capsys, "prepare", "bear-csv", bear_csv, output,
                             *(["--untitled", untitled] if untitled else []))
    assert code == 0, err
    assert "Traceback" not in out + err
    items = {json.loads(line)["item_id"]: json.loads(line)["title"]
             for line in (output / "items.jsonl").read_text().splitlines()}
    stats = json.loads((output / "stats.json").read_text())
    if untitled == "drop":
        assert "7" not in items and stats["dropped"]["items_with_empty_title"] == 1
        assert stats["dropped"]["rows_with_untitled_item"] > 0
    else:
        assert items["7"] == "unknown item 7"
    assert "untitled_items" in stats


HISTORIES = [
    pytest.param('{"history": ["1", "2"]}\n{"history": ["1", \n', "line 2", id="malformed-json"),
    pytest.param('{"history": ["1", "2"]}\n{"items": ["1", "2"]}\n', "line 2", id="no-history"),
    pytest.param('{"history": ["1", "2"]}\n{"history": ["1", "no-such-item"]}\n', "no-such-item", id="unknown-id"),
    pytest.param('{"history": ["1", "2"]}\n{"history": []}\n', "line 2", id="empty-history"),
]


@pytest.mark.parametrize("content, named", HISTORIES)
def test_a_bad_histories_file_is_refused(run_copy, tmp_path, content, named, capsys):
    histories, output = tmp_path / "histories.jsonl", tmp_path / "out.jsonl"
    histories.write_text(content)
    before = snapshot(tmp_path)
    code, out, err = bearrec(capsys, "recommend", run_copy, "--histories", histories, "--beams", "3",
                             "--output", output)
    assert_refused(code, out, err, str(histories), named)
    assert not output.exists()
    assert_unchanged(before, snapshot(tmp_path))


@pytest.mark.parametrize("model", ["./no/such/folder", "no-such-org/no-such-model"], ids=["folder", "hub-name"])
def test_train_with_a_model_that_does_not_exist_is_refused(run_copy, tmp_path, config_file, model, capsys,
                                                            monkeypatch):
    """A missing folder, or a hub name neither cached nor downloadable (offline: refused at once, no retries)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # as on a machine without the hub; read when bearrec resolves the name
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    output_dir = tmp_path / "new-run"
    before = snapshot(tmp_path)
    code, out, err = bearrec(capsys, "train", config_file, f"dataset={run_copy.parent / 'data'}",
                             f"output_dir={output_dir}", f"model={model}")
    assert_refused(code, out, err, model.lstrip("./"))
    assert not output_dir.exists()
    assert_unchanged(before, snapshot(tmp_path))


def _predictions(run: Path) -> list[dict]:
    """Hand-made predictions of the test split (the rows' own users and targets, one recommendation each)."""
    rows = [json.loads(line) for line in (run.parent / "data" / "test.jsonl").read_text().splitlines()]
    return [{"index": i, "user_id": r["user_id"], "target": r["target"], "beams": 1,
             "recommendations": [{"item_ids": [r["target"]], "title": "t", "score": -1.0}]} for i, r in enumerate(rows)]


def _duplicated(rows: list[dict]) -> list[dict]:
    return rows[:2] + [rows[1]] + rows[2:]


def _other_target(rows: list[dict]) -> list[dict]:
    rows[1]["target"] = rows[0]["target"] if rows[0]["target"] != rows[1]["target"] else rows[2]["target"]
    return rows


def _no_target(rows: list[dict]) -> list[dict]:
    del rows[1]["target"]
    return rows


@pytest.mark.parametrize("damage, named", [(_duplicated, "line 3"), (_other_target, "line 2"), (_no_target, "line 2")],
                         ids=["duplicated-row", "target-differs-from-split", "no-target"])
def test_evaluate_refuses_a_bad_predictions_file(run_copy, damage, named, capsys):
    path = run_copy / "predictions-hand.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in damage(_predictions(run_copy))))
    before = snapshot(run_copy.parent)
    code, out, err = bearrec(capsys, "evaluate", path)
    assert_refused(code, out, err, str(path), named)
    assert_unchanged(before, snapshot(run_copy.parent))


def test_report_over_runs_of_two_datasets_is_refused(tmp_path, capsys):
    runs = []
    for name, fingerprint in (("run-alpha", "sha256:" + "a" * 64), ("run-beta", "sha256:" + "b" * 64)):
        run = tmp_path / "runs" / name
        run.mkdir(parents=True)
        (run / "config.json").write_text(json.dumps({"objective": "bear", "seed": 0, "dataset": f"data-{name}",
                                                     "dataset_fingerprint": fingerprint}))
        (run / "metrics.json").write_text(json.dumps({"hr@1": 0.1, "ndcg@1": 0.1, "mrr@1": 0.1}))
        (run / "log_history.json").write_text("[]")
        runs.append(run)
    output = tmp_path / "report"
    before = snapshot(tmp_path)
    code, out, err = bearrec(capsys, "report", *runs, "--output", output)
    assert_refused(code, out, err, "different datasets", "run-alpha", "run-beta")
    assert not output.exists()
    assert_unchanged(before, snapshot(tmp_path))
