"""The comparison report from fake run directories: files, table values, embedded images, rendering."""
from __future__ import annotations

import base64
import json
import os
import re
import shutil
import struct
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from bearrec.errors import ConfigError, DataError
from bearrec.io import write_json, write_jsonl
from bearrec.metrics import evaluate_predictions
from bearrec.report import discover_runs, load_run, write_report

N_ROWS = 60


def fake_predictions(hit_every: int, seed: int) -> list[dict]:
    """Rows whose target is ranked first every `hit_every` rows, else at rank 3 or missed."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(N_ROWS):
        target = str(i % 20)
        others = [str(20 + j) for j in range(10)]
        if i % hit_every == 0:
            ids = [target] + others[:9]
        elif rng.random() < 0.5:
            ids = others[:2] + [target] + others[2:9]
        else:
            ids = others
        rows.append({"index": i, "user_id": f"u{i}", "target": target,
                     "recommendations": [{"item_ids": [x], "title": f"t{x}", "score": -float(r)}
                                         for r, x in enumerate(ids)]})
    return rows


def make_run(root: Path, method: str, seed: int, *, diagnosis: bool = True, predictions: bool = True,
             extra: dict | None = None) -> Path:
    run = root / f"{method}-s{seed}"
    preds = fake_predictions(2 if method == "bear" else 4, seed)
    write_json(run / "config.json", {"objective": method, "seed": seed, "model": "tiny", "dataset": "ml-100k",
                                     "lr": 1e-4, **(extra or {})})
    write_json(run / "metrics.json", evaluate_predictions(preds, ks=(1, 5, 10, 20)))
    base = 2.0 if method == "sft" else 1.8
    write_json(run / "log_history.json",
               [{"loss": base - 0.1 * s + 0.01 * seed, "epoch": s / 2, "step": 10 * s} for s in range(1, 9)]
               + [{"eval_loss": base - 0.05 * e, "epoch": e, "step": 20 * e} for e in range(1, 5)]
               + [{"train_runtime": 12.0, "train_loss": 1.5, "step": 80}])
    if diagnosis:
        rate = 0.88 if method == "sft" else 0.52
        write_json(run / "diagnosis.json", {
            "pruning_rate@10": rate + 0.01 * seed, "certified_fraction": 0.3, "n_in_exact_top_b": 40,
            "pruned_token_outside_top_b_share": 0.7,
            "pruned_step_histogram": {"1": 10, "2": 5, "3": 2 + seed},
            "positive_token_rank_histogram": {"1": 50, "2": 10, "10": 3, ">10": 4 + seed}})
    if predictions:
        write_jsonl(run / "predictions.jsonl", preds)
    return run


class _Tables(HTMLParser):
    """Collect the cells of every <table> and the src of every <img>."""

    def __init__(self):
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self.images: list[str] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "img":
            self.images.append(dict(attrs)["src"])

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self.tables[-1][-1].append("".join(self._cell))
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def parse(html_path: Path) -> _Tables:
    p = _Tables()
    p.feed(html_path.read_text(encoding="utf-8"))
    return p


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


@pytest.fixture(scope="module")
def full_report(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    runs = [make_run(root, m, s) for m in ("bear", "sft") for s in (0, 1)]
    html_path, md_path = write_report(runs, root / "report", n_resamples=2000)
    return runs, html_path, md_path


def test_table_values_are_means_over_seeds(full_report):
    runs, html_path, _ = full_report
    table = parse(html_path).tables[0]
    header, body = table[0], {row[0]: row for row in table[1:]}
    assert [row[0] for row in table[1:]] == ["sft", "bear"]   # known methods in a fixed order
    assert "hr@20" not in header                                # beam size 10 caps the cut-offs
    for method in ("sft", "bear"):
        assert body[method][1] == "0, 1"
        for key in ("hr@10", "ndcg@10", "ndcg@1"):
            vals = [json.loads((r / "metrics.json").read_text())[key] for r in runs if r.name.startswith(method)]
            mean, std = np.mean(vals), np.std(vals, ddof=1)
            cell = body[method][header.index(key)]
            assert cell == f"{mean:.4f} ± {std:.4f}"
    summary = json.loads((html_path.parent / "summary.json").read_text())
    bear_vals = [json.loads((r / "metrics.json").read_text())["ndcg@10"] for r in runs if r.name.startswith("bear")]
    assert summary["methods"]["bear"]["metrics"]["ndcg@10"]["mean"] == pytest.approx(np.mean(bear_vals))


def test_images_embedded_and_self_contained(full_report):
    _, html_path, _ = full_report
    text = html_path.read_text(encoding="utf-8")
    images = parse(html_path).images
    # metrics, pruning rate, pruned steps, token ranks, losses
    assert len(images) == 5
    for src in images:
        assert src.startswith("data:image/png;base64,")
        w, h = png_size(base64.b64decode(src.split(",", 1)[1]))
        assert w > 100 and h > 100
    assert not re.search(r"""(src|href)=["'](?!data:)""", text)
    assert "http://" not in text and "https://" not in text


def test_markdown_twin_has_png_files_and_same_table(full_report):
    _, html_path, md_path = full_report
    md = md_path.read_text(encoding="utf-8")
    refs = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert len(refs) == 5
    for ref in refs:
        png_size((md_path.parent / ref).read_bytes())
    html_row = next(r for r in parse(html_path).tables[0] if r[0] == "bear")
    assert "| " + " | ".join(html_row) + " |" in md


def test_diagnosis_and_bootstrap_sections(full_report):
    _, html_path, _ = full_report
    tables = parse(html_path).tables
    boot = next(t for t in tables if t[0][0] == "difference")
    assert boot[1][0] == "bear − sft" and boot[1][1] == "0, 1" and boot[1][2] == str(N_ROWS)
    low, high = map(float, re.findall(r"[+-]\d\.\d+", boot[1][4]))
    assert 0 < low < float(boot[1][3]) < high      # bear hits twice as often by construction
    diag = next(t for t in tables if "pruning_rate@10" in t[0])
    assert diag[1][diag[0].index("n_in_exact_top_b")] == "40"    # counts shown as integers
    col = diag[0].index("pruning_rate@10")
    assert {r[0]: r[col] for r in diag[1:]} == {"sft": f"{0.885:.4f} ± {np.std([0.88, 0.89], ddof=1):.4f}",
                                                "bear": f"{0.525:.4f} ± {np.std([0.52, 0.53], ddof=1):.4f}"}


def test_missing_optional_files_give_notes(tmp_path):
    runs = [make_run(tmp_path, "sft", 0, diagnosis=False, predictions=False),
            make_run(tmp_path, "bear", 0, diagnosis=False, predictions=False)]
    (runs[0] / "log_history.json").write_text("[]")
    (runs[1] / "log_history.json").write_text("[]")
    html_path, _ = write_report(runs, tmp_path / "out")
    text = html_path.read_text(encoding="utf-8")
    assert "No diagnosis file in sft-s0, bear-s0" in text
    assert "no seed with predictions.jsonl in both methods" in text
    assert "No run logged a training or validation loss" in text
    assert len(parse(html_path).images) == 1                    # only the metrics plot
    assert "±" not in parse(html_path).tables[0][1][2]           # one seed: no std


def test_mixed_configs_and_different_rows_are_flagged(tmp_path):
    runs = [make_run(tmp_path, "sft", 0), make_run(tmp_path, "sft", 1, extra={"lr": 3e-4}),
            make_run(tmp_path, "bear", 0)]
    preds = [json.loads(line) for line in (runs[2] / "predictions.jsonl").read_text().splitlines()]
    write_jsonl(runs[2] / "predictions.jsonl", preds[:-1])
    html_path, _ = write_report(runs, tmp_path / "out", n_resamples=200)
    text = html_path.read_text(encoding="utf-8")
    assert "The runs of sft differ in lr" in text
    assert "predictions cover different rows" in text


def test_runs_of_different_datasets_are_refused(tmp_path):
    runs = [make_run(tmp_path, "sft", 0, extra={"dataset_fingerprint": "sha256:aa", "dataset_path": "/d/office"}),
            make_run(tmp_path, "bear", 0, extra={"dataset_fingerprint": "sha256:bb", "dataset_path": "/d/toy"})]
    with pytest.raises(ConfigError, match=r"2 different datasets \(sft-s0 on /d/office; bear-s0 on /d/toy\).*Fix"):
        write_report(runs, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_diagnosis_of_the_first_rows_is_used_and_named(tmp_path):
    runs = [make_run(tmp_path, "sft", 0), make_run(tmp_path, "bear", 0)]
    (runs[0] / "diagnosis.json").rename(runs[0] / "diagnosis-first40.json")
    (runs[0] / "diagnosis-first40.json").write_text(
        (runs[0] / "diagnosis-first40.json").read_text().replace('"certified_fraction"', '"n_rows": 40, "certified_fraction"'))
    html_path, _ = write_report(runs, tmp_path / "out", n_resamples=200)
    text = html_path.read_text(encoding="utf-8")
    assert "sft-s0: diagnosis-first40.json (40 rows)" in text and "No diagnosis file" not in text


def test_missing_required_file_names_it(tmp_path):
    run = make_run(tmp_path, "sft", 0)
    (run / "metrics.json").unlink()
    with pytest.raises(DataError, match=r"metrics\.json.*missing.*Fix"):
        write_report([run], tmp_path / "out")
    write_json(run / "metrics.json", {"hr@1": 0.1})
    write_json(run / "config.json", {"seed": 0})
    with pytest.raises(DataError, match=r"config\.json.*'objective'"):
        load_run(run)
    write_json(run / "config.json", {"objective": "sft", "seed": "zero"})
    with pytest.raises(DataError, match="'seed' must be an integer"):
        load_run(run)


def test_bad_bootstrap_metric(tmp_path):
    with pytest.raises(ConfigError, match="ndcg@10"):
        write_report([make_run(tmp_path, "sft", 0)], tmp_path / "out", bootstrap_metric="ndcg")


def test_runs_are_grouped_by_method_so_bases_stay_apart(tmp_path):
    """BEAR on the MSL base and on the SFT base share objective "bear" but are two methods."""
    from bearrec.report import load_run

    msl_base = load_run(make_run(tmp_path, "bear", 0))
    sft_base = load_run(make_run(tmp_path / "s", "bear", 0, extra={"method": "bear-sft"}))
    assert (msl_base.method, sft_base.method) == ("bear", "bear-sft")


def test_discover_runs(tmp_path):
    expected = [make_run(tmp_path / "a", "sft", 0), make_run(tmp_path / "b", "bear", 3)]
    (tmp_path / "notarun").mkdir()
    assert discover_runs(tmp_path) == sorted(expected)


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not on PATH (apt-get install chromium)")
def test_renders_in_headless_chromium(full_report, tmp_path):
    _, html_path, _ = full_report
    n_images = len(parse(html_path).images)
    common = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
              "--disable-background-networking", "--disable-component-update", "--disable-sync",
              "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000",
              "--window-size=1200,2000"]
    url = html_path.resolve().as_uri()
    env = {**os.environ, "HOME": str(tmp_path)}
    dom = subprocess.run(common + ["--dump-dom", url], capture_output=True, text=True, timeout=60, env=env)
    assert f'data-images-loaded="{n_images}/{n_images}"' in dom.stdout, dom.stderr[-2000:]
    shot = tmp_path / "report.png"
    subprocess.run(common + [f"--screenshot={shot}", url], capture_output=True, timeout=60, env=env)
    assert png_size(shot.read_bytes()) == (1200, 2000)
    keep = os.environ.get("BEARREC_KEEP_SCREENSHOT")
    if keep:
        shutil.copy(shot, keep)
