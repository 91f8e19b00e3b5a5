"""Property (issue 10): whatever damage a trained run directory or its dataset takes, every command either gives
exactly the result of the undamaged run or stops with exit 2 and a clear error (a fix, no traceback); never a
different result with exit 0.

One file of a copy of the small run (or of its dataset) is truncated, has bytes flipped, is replaced by the file of
the same name from another run (another seed, another dataset), or is emptied; then `recommend --limit 3`,
`evaluate --limit 3` and `diagnose --limit 2 --max-expansions 50` run on the copy and are compared with their
outputs on an undamaged copy, computed once.
"""
from __future__ import annotations

import io
import json
import shutil
import traceback
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from bearrec.cli import main
from run_fixtures import copy_run, train_small_run, write_small_dataset

# Files of the project (PROJECT/run, PROJECT/data) that a corruption may hit; a glob names one file.
TARGETS = ["run/config.json", "run/trie.pt", "run/model/*.safetensors", "run/model/config.json",
           "run/model/tokenizer.json", "run/model/bearrec_model.json", "data/items.jsonl", "data/test.jsonl"]
KINDS = ["truncate", "flip", "swap", "empty"]

# (name, arguments after the run directory, the file it writes in the run directory)
COMMANDS = [
    ("recommend", ["--limit", "3"], "predictions-first3.jsonl"),
    ("evaluate", ["--limit", "3"], "metrics-first3.json"),
    ("diagnose", ["--limit", "2", "--max-expansions", "50"], "diagnosis-first2.json"),
]


def resolve(project: Path, target: str) -> Path:
    (path,) = sorted(project.glob(target))
    return path


def call(*args) -> tuple[object, str, str]:
    """(exit code, stdout, stderr) of `bearrec ARGS` in-process; an exception escaping main is reported as a
    traceback on stderr (exit code "exception"), as the console script would print it."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            code: object = main([str(a) for a in args])
        except SystemExit as e:
            code = e.code
        except Exception:  # noqa: BLE001 - the property is that nothing escapes: show it
            code = "exception"
            err.write(traceback.format_exc())
    return code, out.getvalue(), err.getvalue()


def result(run: Path, name: str) -> object:
    """The content of a command's output file, less what names the copy's own location."""
    path = run / name
    content = json.loads(path.read_text()) if path.suffix == ".json" else [
        json.loads(line) for line in path.read_text().splitlines()]
    if isinstance(content, dict):
        content.pop("predictions", None)  # the path of the predictions file: differs per copy
    return content


def outcomes(project: Path) -> dict[str, tuple[object, str, object]]:
    """{command: (exit code, stderr, output content or None)} of every command on PROJECT/run, each one from
    scratch (a command's outputs are removed before the next runs, so evaluate decodes again)."""
    run = project / "run"
    found = {}
    for name, args, output in COMMANDS:
        code, out, err = call(name, run, *args)
        content = result(run, output) if code == 0 else None
        found[name] = (code, out + err, content)
        for leftover in ("predictions-first3.jsonl", output):
            (run / leftover).unlink(missing_ok=True)
    return found


def corrupt(path: Path, kind: str, fraction: float, flips: list[tuple[float, int]], other: Path) -> None:
    data = path.read_bytes()
    if kind == "truncate":
        data = data[: min(int(fraction * len(data)), len(data) - 1)]
    elif kind == "flip":
        buffer = bytearray(data)
        for where, mask in flips:
            buffer[min(int(where * len(buffer)), len(buffer) - 1)] ^= mask
        data = bytes(buffer)
    elif kind == "swap":
        data = other.read_bytes()
    else:
        data = b""
    path.write_bytes(data)


@pytest.fixture(scope="module")
def projects(small_run, tmp_path_factory) -> dict[str, Path]:
    """The undamaged copy of the small run ("pristine"), another run (seed 1, on another dataset) to take files
    from ("other"), a folder for the damaged copies ("work"), and the undamaged outputs ("reference")."""
    root = tmp_path_factory.mktemp("corruption")
    pristine = copy_run(small_run, root / "pristine").parent
    write_small_dataset(root / "other" / "data", n_items=26, n_users=32)
    train_small_run(root / "other" / "data", root / "other" / "run", "seed=1")
    reference_copy = root / "reference"
    shutil.copytree(pristine, reference_copy)
    reference = outcomes(reference_copy)
    for name, (code, text, _) in reference.items():
        assert code == 0, f"{name} fails on the undamaged run: {text[-2000:]}"
    (root / "work").mkdir()
    return {"pristine": pristine, "other": root / "other", "work": root / "work", "reference": reference}


def every_file_and_kind(test):
    """Explicit examples: each kind of damage to each file once (the random draws come on top of these)."""
    for target in TARGETS:
        for kind in KINDS:
            test = example(target=target, kind=kind, fraction=0.5, flips=[(0.5, 0x01), (0.9, 0x10)])(test)
    return test


@settings(max_examples=20, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(target=st.sampled_from(TARGETS), kind=st.sampled_from(KINDS), fraction=st.floats(0, 1),
       flips=st.lists(st.tuples(st.floats(0, 1), st.integers(1, 255)), min_size=1, max_size=4))
@every_file_and_kind
def test_a_damaged_run_gives_the_same_result_or_a_clear_error(projects, target, kind, fraction, flips):
    project = projects["work"] / "project"
    shutil.rmtree(project, ignore_errors=True)
    shutil.copytree(projects["pristine"], project)
    path = resolve(project, target)
    corrupt(path, kind, fraction, flips, resolve(projects["other"], target))
    assert_same_or_refused(projects, project, f"{kind} of {target}")


def assert_same_or_refused(projects: dict, project: Path, what: str) -> None:
    """Every command on the damaged PROJECT gives the reference result, or exit 2 with a fix and no traceback."""
    for name, (code, text, content) in outcomes(project).items():
        want = projects["reference"][name][2]
        assert "Traceback" not in text, f"{name} after {what}: {text[-3000:]}"
        if code == 0:
            assert content == want, f"{name} gives another result after {what}, with exit 0"
        else:
            assert code == 2, f"{name} after {what}: exit {code}: {text[-2000:]}"
            assert "bearrec: error:" in text and "Fix:" in text, f"{name} after {what}: {text[-2000:]}"


def test_one_flipped_bit_in_config_json_max_history(projects):
    """A corruption the random draws can miss, found by flipping the bytes of config.json's values one at a time."""
    project = projects["work"] / "project"
    shutil.rmtree(project, ignore_errors=True)
    shutil.copytree(projects["pristine"], project)
    config = project / "run" / "config.json"
    data = bytearray(config.read_bytes())
    where = data.index(b'"max_history": 3') + len(b'"max_history": ')
    data[where] ^= 0x01  # "3" -> "2"
    config.write_bytes(bytes(data))
    assert_same_or_refused(projects, project, "one flipped bit in config.json's max_history")
