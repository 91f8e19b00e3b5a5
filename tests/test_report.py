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
from bearrec.files import write_json, write_jsonl
from bearrec.metrics import evaluate_predictions
from bearrec.report import discover_runs, load_run, results_markdown, write_report
from bearrec.report.bootstrap import paired_bootstrap

N_ROWS = 60
# Items 0-29 are the ones fake predictions use; a catalog and popularity make the second metrics table wide.
CATALOG = {str(i): f"t{i}" for i in range(40)}
POPULARITY = {str(i): 100 - i for i in range(40)}
HIT_EVERY = {"bear": 2, "sasrec": 3, "popularity": 6}


def _row(i: int, ids: list[str]) -> dict:
    return {"index": i, "user_id": f"u{i}", "target": str(i % 20),
            "recommendations": [{"item_ids": [x], "title": f"t{x}", "score": -float(r)} for r, x in enumerate(ids)]}


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
        rows.append(_row(i, ids))
    return rows


def ranked_predictions(hit_rows: set[int]) -> list[dict]:
    """Rows whose target is ranked first on `hit_rows` and missed on the others: known metrics."""
    others = [str(20 + j) for j in range(10)]
    return [_row(i, [str(i % 20)] + others[:9] if i in hit_rows else others) for i in range(N_ROWS)]


def make_run(root: Path, method: str, seed: int, *, diagnosis: bool = True, predictions: bool = True,
             extra: dict | None = None, preds: list[dict] | None = None, kind: str = "llm",
             epoch_seconds: list[float] | None = None, train_seconds: float | None = None,
             exact: float | None = None, wide: bool = False) -> Path:
    """A fake run directory; kind="baseline" writes a baseline's (no loss history, never a diagnosis);
    `exact` writes metrics-exact.json with that certified_share; `wide` adds coverage and popularity metrics."""
    run = root / f"{method}-s{seed}"
    preds = preds if preds is not None else fake_predictions(HIT_EVERY.get(method, 4), seed)
    baseline = kind == "baseline"
    config = ({"kind": "baseline", "method": method, "objective": method, "seed": seed, "dataset": "ml-100k"}
              if baseline else {"objective": method, "seed": seed, "model": "tiny", "dataset": "ml-100k", "lr": 1e-4})
    write_json(run / "config.json", {**config, **(extra or {})})
    more = {"catalog": CATALOG, "popularity": POPULARITY} if wide else {}
    write_json(run / "metrics.json", evaluate_predictions(preds, ks=(1, 5, 10, 20), **more))
    base = 2.0 if method == "sft" else 1.8
    write_json(run / "log_history.json", [] if baseline else
               [{"loss": base - 0.1 * s + 0.01 * seed, "epoch": s / 2, "step": 10 * s} for s in range(1, 9)]
               + [{"eval_loss": base - 0.05 * e, "epoch": e, "step": 20 * e} for e in range(1, 5)]
               + [{"train_runtime": 12.0, "train_loss": 1.5, "step": 80}])
    if diagnosis and not baseline:
        rate = 0.88 if method == "sft" else 0.52
        write_json(run / "diagnosis.json", {
            "pruning_rate@10": rate + 0.01 * seed, "certified_fraction": 0.3, "n_in_exact_top_b": 40,
            "n_pruned": 3 + seed, "n_returned": 10 + 2 * seed,
            "pruned_token_outside_top_b_share": 0.7,
            "pruned_step_histogram": {"1": 10, "2": 5, "3": 2 + seed},
            "positive_token_rank_histogram": {"1": 50, "2": 10, "10": 3, ">10": 4 + seed}})
    if predictions:
        write_jsonl(run / "predictions.jsonl", preds)
    if epoch_seconds is not None or train_seconds is not None:
        write_json(run / "train_summary.json", {"train_seconds": train_seconds or sum(epoch_seconds or []),
                                                "epoch_seconds": epoch_seconds or []})
    if exact is not None:
        exact_metrics = evaluate_predictions(fake_predictions(2, seed + 7), ks=(1, 5, 10, 20))
        write_json(run / "metrics-exact.json", {**exact_metrics, "certified_share": exact, "search": "exact"})
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


# Seconds per epoch of the fake LLM runs (median: sft 90 s, bear 120 s) and a baseline's fit seconds.
EPOCHS = {("sft", 0): [60.0, 90.0, 120.0], ("sft", 1): [150.0, 30.0], ("bear", 0): [120.0], ("bear", 1): [120.0, 120.0]}
FIT_SECONDS = {("popularity", 0): 6.0, ("popularity", 1): 6.0, ("sasrec", 0): 24.0, ("sasrec", 1): 36.0}
# certified_share of the runs with metrics-exact.json (sft-s1 has none)
EXACT = {("bear", 0): 0.9, ("bear", 1): 0.8, ("sft", 0): 0.5}
ORDER = ["popularity", "sasrec", "sft", "bear"]


@pytest.fixture(scope="module")
def full_report(tmp_path_factory):
    """Two baselines and two LLM methods, two seeds each, with timing, exact-search metrics and wide tables."""
    root = tmp_path_factory.mktemp("runs")
    runs = [make_run(root, m, s, kind="baseline", train_seconds=FIT_SECONDS[m, s], wide=True)
            for m in ("popularity", "sasrec") for s in (0, 1)]
    runs += [make_run(root, m, s, epoch_seconds=EPOCHS[m, s], exact=EXACT.get((m, s)), wide=True)
             for m in ("bear", "sft") for s in (0, 1)]
    html_path, md_path = write_report(runs, root / "report", n_resamples=2000)
    return runs, html_path, md_path


def summary_of(html_path: Path) -> dict:
    return json.loads((html_path.parent / "summary.json").read_text())


def test_table_values_are_means_over_seeds(full_report):
    runs, html_path, _ = full_report
    table = parse(html_path).tables[0]
    header, body = table[0], {row[0]: row for row in table[1:]}
    assert [row[0] for row in table[1:]] == ORDER              # known methods in a fixed order, baselines first
    assert "HR@20" not in header                               # beam size 10 caps the cut-offs
    other = parse(html_path).tables[1]                         # the metrics beside the headline ones
    others = {row[0]: row for row in other[1:]}
    for method in ORDER:
        assert body[method][1] == "0, 1"
        for key, name in (("hr@10", "HR@10"), ("ndcg@10", "NDCG@10"), ("hr@5", "HR@5"), ("ndcg@1", "NDCG@1")):
            vals = [json.loads((r / "metrics.json").read_text())[key] for r in runs if r.name.startswith(method)]
            mean, std = np.mean(vals), np.std(vals, ddof=1)
            cell = (body[method][header.index(name)] if name in header
                    else others[method][other[0].index(name)])
            assert cell == f"{mean:.4f} ± {std:.4f}"
    summary = summary_of(html_path)
    bear_vals = [json.loads((r / "metrics.json").read_text())["ndcg@10"] for r in runs if r.name.startswith("bear")]
    assert summary["methods"]["bear"]["metrics"]["ndcg@10"]["mean"] == pytest.approx(np.mean(bear_vals))
    assert {m: e["kind"] for m, e in summary["methods"].items()} == {
        "popularity": "baseline", "sasrec": "baseline", "sft": "llm", "bear": "llm"}


def test_images_embedded_and_self_contained(full_report):
    _, html_path, _ = full_report
    text = html_path.read_text(encoding="utf-8")
    images = parse(html_path).images
    # metrics, pruning rate, pruned steps, token ranks, losses (baselines add none)
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
    for method in ("bear", "popularity"):
        html_row = next(r for r in parse(html_path).tables[0] if r[0] == method)
        assert "| " + " | ".join(html_row) + " |" in md


def test_diagnosis_and_bootstrap_sections(full_report):
    _, html_path, _ = full_report
    tables = parse(html_path).tables
    boot = next(t for t in tables if t[0][0] == "Difference (a − b)")
    row = next(r for r in boot[1:] if r[0] == "sft − bear")
    assert row[1] == "0, 1" and row[2] == str(N_ROWS) and row[6] == "yes"
    low, high = map(float, re.findall(r"[+-]\d\.\d+", row[4]))
    assert low < float(row[3]) < high < 0           # bear hits twice as often by construction: sft − bear < 0
    diag = next(t for t in tables if "PruningRate@10" in t[0])
    assert diag[1][diag[0].index("In exact top-B")] == "n/a"       # popularity, a baseline
    col = diag[0].index("PruningRate@10")
    assert {r[0]: r[col] for r in diag[1:]} == {"popularity": "n/a", "sasrec": "n/a",
                                                "sft": f"{0.885:.4f} ± {np.std([0.88, 0.89], ddof=1):.4f}",
                                                "bear": f"{0.525:.4f} ± {np.std([0.52, 0.53], ddof=1):.4f}"}


def test_baselines_are_not_applicable_to_the_diagnosis(full_report, tmp_path):
    _, html_path, _ = full_report
    text = html_path.read_text(encoding="utf-8")
    diag = next(t for t in parse(html_path).tables if "PruningRate@10" in t[0])
    for row in diag[1:3]:
        assert row[0] in ("popularity", "sasrec") and row[1] == "0, 1" and set(row[2:]) == {"n/a"}
    assert "n/a for the baselines popularity, sasrec" in text
    assert "No diagnosis file" not in text
    summary = summary_of(html_path)
    assert summary["methods"]["popularity"]["diagnosis"] is None
    assert summary["methods"]["popularity"]["diagnosis_totals"] is None
    # baselines alone: no curve, and a plain sentence rather than a warning note
    runs = [make_run(tmp_path, m, 0, kind="baseline") for m in ("sasrec", "popularity")]
    html_only, _ = write_report(runs, tmp_path / "out", n_resamples=200)
    text = html_only.read_text(encoding="utf-8")
    assert "<p>Baselines (popularity, sasrec) log no loss history: no curve for them.</p>" in text
    assert "No run logged" not in text and "No diagnosis file" not in text
    assert len(parse(html_only).images) == 1                    # only the metrics plot
    assert "The runs do not all share the same model" not in text


def test_every_pair_of_methods_is_bootstrapped(full_report):
    runs, html_path, _ = full_report
    boot = summary_of(html_path)["paired_bootstrap"]
    assert [b["comparison"] for b in boot] == ["popularity - sasrec", "popularity - sft", "popularity - bear",
                                               "sasrec - sft", "sasrec - bear", "sft - bear"]
    assert all(b["metric"] == "ndcg@10" and b["seeds"] == [0, 1] and b["n_rows"] == N_ROWS for b in boot)
    assert {"mean_diff", "low", "high", "p_value"} <= set(boot[0])
    table = next(t for t in parse(html_path).tables if t[0][0] == "Difference (a − b)")
    assert len(table) - 1 == 6
    # a − b: per-row ndcg@10 averaged over the two seeds; with equal rows its mean is the difference of the means
    ndcg = {m: np.mean([json.loads((r / "metrics.json").read_text())["ndcg@10"] for r in runs
                        if r.name.startswith(m)]) for m in ORDER}
    for b in boot:
        first, second = b["comparison"].split(" - ")
        assert b["mean_diff"] == pytest.approx(ndcg[first] - ndcg[second])
    assert boot[-1]["mean_diff"] < 0                 # sft − bear: bear is the better one


def test_readable_column_names_and_legends(full_report):
    _, html_path, md_path = full_report
    tables = parse(html_path).tables
    assert tables[0][0] == ["Method", "Seeds", "HR@5", "HR@10", "NDCG@5", "NDCG@10", "min/epoch"]   # headline only
    assert tables[1][0] == ["Method", "HR@1", "NDCG@1", "MRR@1", "MRR@5", "MRR@10", "Coverage@1", "Coverage@5",
                            "Coverage@10", "Pop. rank@1", "Pop. rank@5", "Pop. rank@10", "Invalid", "Empty", "Rows"]
    diag = next(t for t in tables if "PruningRate@10" in t[0])[0]
    for name in ("Certified", "In exact top-B", "Pruned", "Returned", "Pruned outside top-B"):
        assert name in diag
    for table in tables:
        assert not [h for h in table[0] if re.fullmatch(r"[a-z_]+(@\d+)?", h)], table[0]   # no raw keys
    text, md = html_path.read_text(encoding="utf-8"), md_path.read_text(encoding="utf-8")
    assert text.count('<div class="legend">') >= len(tables) - 1      # the runs table needs none
    assert "<b>HR@5, HR@10</b>: hit rate: share of rows whose target item is in the top K" in text
    assert "<b>Pop. rank@1, Pop. rank@5, Pop. rank@10</b>" in text
    assert "- **HR@5, HR@10**: hit rate: share of rows whose target item is in the top K" in md
    assert "- **In exact top-B**: positives inside the exact top-B" in md
    assert "| Method | Seeds | HR@5 | HR@10 | NDCG@5 | NDCG@10 | min/epoch |" in md
    assert text.count('<div class="scroll"><table>') == len(tables)   # every table scrolls sideways on its own


def test_counts_print_as_integers(full_report):
    _, html_path, _ = full_report
    tables = parse(html_path).tables
    other = tables[1]
    assert {r[other[0].index("Rows")] for r in other[1:]} == {str(N_ROWS)}
    diag = next(t for t in tables if "PruningRate@10" in t[0])
    sft = next(r for r in diag if r[0] == "sft")
    assert sft[diag[0].index("In exact top-B")] == "40"              # same count every seed
    assert sft[diag[0].index("Pruned")] == "3.5 ± 0.7"               # 3 and 4: a mean that is not whole
    assert sft[diag[0].index("Returned")] == "11 ± 1.4"              # 10 and 12: a whole mean stays whole
    totals = summary_of(html_path)["methods"]["sft"]["diagnosis_totals"]
    assert totals == {"n_pruned": 7, "n_in_exact_top_b": 80, "runs": 2}


def test_minutes_per_epoch(full_report):
    _, html_path, _ = full_report
    table = parse(html_path).tables[0]
    col = table[0].index("min/epoch")
    assert {r[0]: r[col] for r in table[1:]} == {"popularity": "0.1 (fit)", "sasrec": "0.5 (fit)",
                                                 "sft": "1.5", "bear": "2.0"}
    methods = summary_of(html_path)["methods"]
    assert methods["sft"]["minutes_per_epoch"] == pytest.approx(1.5)   # median of 30, 60, 90, 120, 150 s
    assert methods["sft"]["fit_minutes"] is None
    assert methods["sasrec"]["fit_minutes"] == pytest.approx(0.5)      # median of 24 and 36 s
    assert methods["sasrec"]["minutes_per_epoch"] is None


def test_exact_search_table(full_report):
    runs, html_path, _ = full_report
    text = html_path.read_text(encoding="utf-8")
    assert "<h2>Exact top-K search (test split)</h2>" in text
    table = next(t for t in parse(html_path).tables if t[0][-1] == "Certified" and "HR@10" in t[0])
    assert table[0][:2] == ["Method", "Seeds"] and "NDCG@10" in table[0]
    body = {r[0]: r for r in table[1:]}
    assert list(body) == ["sft", "bear"]
    assert body["sft"][1] == "0" and body["sft"][-1] == "0.5000"
    assert body["bear"][1] == "0, 1" and body["bear"][-1] == f"{0.85:.4f} ± {np.std([0.9, 0.8], ddof=1):.4f}"
    assert text.count("Left out of this table") == 1
    assert "runs without metrics-exact.json (sft-s1)" in text and "baselines popularity, sasrec (n/a" in text
    methods = summary_of(html_path)["methods"]
    assert methods["bear"]["metrics_exact"]["certified_share"]["mean"] == pytest.approx(0.85)
    exact_hr = np.mean([json.loads((r / "metrics-exact.json").read_text())["hr@10"] for r in runs
                        if r.name.startswith("bear")])
    assert methods["bear"]["metrics_exact"]["hr@10"]["mean"] == pytest.approx(exact_hr)
    assert methods["popularity"]["metrics_exact"] is None


def test_what_this_shows(tmp_path):
    """Best, runner-up and separability on runs built so the answers are known."""
    cases = {"clear": ({"bear": set(range(N_ROWS)), "sft": set(range(20)), "msl": set()}, "excludes 0."),
             "close": ({"bear": {0, 1} | set(range(3, 31)), "sft": set(range(2, 31)), "msl": set()},
                       "includes 0: not separable on these rows.")}
    for case, (hits, verdict) in cases.items():
        runs = [make_run(tmp_path / case, m, s, preds=ranked_predictions(h), diagnosis=False)
                for m, h in hits.items() for s in (0, 1)]
        html_path, md_path = write_report(runs, tmp_path / case / "out", n_resamples=2000)
        summary = summary_of(html_path)
        shows = summary["what_this_shows"]
        assert [s.split(":")[0] for s in shows] == ["HR@5", "HR@10", "NDCG@5", "NDCG@10"]
        for sentence in shows:
            assert "bear has the best mean" in sentence and "sft is the runner-up" in sentence
            assert f"paired bootstrap of bear − sft over {N_ROWS} rows and seeds 0, 1: the 95% CI [" in sentence
            assert sentence.endswith(verdict), sentence
        n_bear, n_sft = len(hits["bear"]), len(hits["sft"])
        assert shows[1].startswith(f"HR@10: bear has the best mean ({n_bear / N_ROWS:.4f}), sft is the runner-up "
                                   f"({n_sft / N_ROWS:.4f}), difference {(n_bear - n_sft) / N_ROWS:+.4f}; ")
        assert [b["comparison"] for b in summary["headline_bootstrap"]] == ["bear - sft"] * 4
        assert summary["headline_bootstrap"][1]["mean_diff"] == pytest.approx((n_bear - n_sft) / N_ROWS)
        text, md = html_path.read_text(encoding="utf-8"), md_path.read_text(encoding="utf-8")
        assert text.index("<h2>What this shows</h2>") < text.index("<h2>Comparison (test split)</h2>")
        assert f"<li>{shows[1]}</li>" in text
        assert "## What this shows\n\n" + "\n".join(f"- {s}" for s in shows) in md
        assert md.index("## What this shows") < md.index("## Comparison")


def test_what_this_shows_says_when_two_methods_are_equal_on_every_row(tmp_path):
    """A degenerate interval ([+0.0000, +0.0000]) is reported as what it is: the same per-row values."""
    hits = {"sft": set(range(20)), "bear-sft": set(range(20)), "msl": set(range(5))}
    runs = [make_run(tmp_path, m, 0, preds=ranked_predictions(h), diagnosis=False) for m, h in hits.items()]
    summary = summary_of(write_report(runs, tmp_path / "out", n_resamples=500)[0])
    for sentence in summary["what_this_shows"]:
        assert "sft has the best mean" in sentence and "bear-sft is the runner-up" in sentence, sentence
        assert sentence.endswith(f"over {N_ROWS} rows and seeds 0: equal on every row: nothing to separate."), sentence
    assert all(b["identical_rows"] for b in summary["headline_bootstrap"])
    runs.append(make_run(tmp_path, "bear", 0, preds=ranked_predictions(set(range(21))), diagnosis=False))
    shows = summary_of(write_report(runs, tmp_path / "out2", n_resamples=500)[0])["what_this_shows"]
    assert shows[1].endswith("includes 0: not separable on these rows."), shows[1]


def test_what_this_shows_with_one_method_and_no_predictions(tmp_path):
    single = write_report([make_run(tmp_path / "one", "sft", 0, diagnosis=False)], tmp_path / "one" / "out")[0]
    shows = summary_of(single)["what_this_shows"]
    assert len(shows) == 1 and shows[0].startswith("Only one method, sft (seeds 0), is in this report")
    runs = [make_run(tmp_path / "two", m, 0, diagnosis=False, predictions=False) for m in ("sft", "bear")]
    shows = summary_of(write_report(runs, tmp_path / "two" / "out")[0])["what_this_shows"]
    assert all("no paired bootstrap: no seed with predictions.jsonl in both methods." in s for s in shows)


def test_results_markdown(full_report, tmp_path):
    _, html_path, _ = full_report
    summary = summary_of(html_path)
    md = results_markdown(summary, title="Results")
    lines = md.splitlines()
    assert lines[0] == "## Results"
    assert lines[2] == ("| Method | Seeds | HR@1 | HR@5 | HR@10 | NDCG@5 | NDCG@10 | PruningRate@10 "
                        "| Pruned / in exact top-10 | Certified | min/epoch | Epoch ÷ SFT |")
    rows = {line.split(" | ")[0][2:]: line.strip("| ").split(" | ") for line in lines[4:8]}
    assert list(rows) == ORDER
    assert rows["popularity"][-5:] == ["n/a", "n/a", "n/a", "0.1 (fit)", "n/a"]
    assert rows["sft"][-4:] == ["7 / 80", "0.3000 ± 0.0000", "1.5", "1.00×"]
    assert rows["bear"][-2:] == ["2.0", "1.33×"]                        # median 120 s per epoch ÷ sft's 90 s
    assert summary["methods"]["bear"]["epoch_cost_vs_sft"] == pytest.approx(120 / 90)
    assert summary["methods"]["sasrec"]["epoch_cost_vs_sft"] is None
    bear_ndcg = summary["methods"]["bear"]["metrics"]["ndcg@10"]
    assert rows["bear"][6] == f"{bear_ndcg['mean']:.4f} ± {bear_ndcg['std']:.4f}"
    assert "- **Pruned / in exact top-10**: " in md and "- **min/epoch**: " in md and "- **Epoch ÷ SFT**: cost" in md
    assert "METHOD · MODE" not in md                                  # no decoding mode, no word about one
    for sentence in summary["what_this_shows"]:
        assert f"- {sentence}" in md
    boot = summary["paired_bootstrap"][-1]
    line = next(x for x in lines if x.startswith("- sft − bear ndcg@10: "))
    assert line == (f"- sft − bear ndcg@10: {boot['mean_diff']:+.4f} [{boot['low']:+.4f}, {boot['high']:+.4f}], "
                    + ("p < 0.001" if boot["p_value"] < 0.001 else f"p = {boot['p_value']:.3f}")
                    + f", {N_ROWS} rows, seeds [0, 1]")
    assert re.fullmatch(r"- sft − bear ndcg@10: -0\.\d{4} \[-0\.\d{4}, -0\.\d{4}\], p (= 0\.\d{3}|< 0\.001), 60 rows, "
                        r"seeds \[0, 1\]", line)
    assert sum(x.startswith("- ") and " ndcg@10: " in x for x in lines) == 6
    # the exact search's table: the seeds that have metrics-exact.json (sft-s1 has none), its certified share
    start = lines.index("**Exact top-K search** (the same rows):")
    exact = {line.split(" | ")[0][2:]: line.strip("| ").split(" | ") for line in lines[start + 4:start + 6]}
    assert exact["sft"][:2] == ["sft", "0"] and exact["sft"][-1] == "0.5000"
    assert exact["bear"][1] == "0, 1" and exact["bear"][-1].startswith("0.8500 ± ")
    # one seed: the std is null in summary.json, the cells show the mean alone; no title, no heading
    single = write_report([make_run(tmp_path, "sft", 0, diagnosis=False)], tmp_path / "out", n_resamples=200)[0]
    md = results_markdown(summary_of(single))
    assert md.startswith("| Method | Seeds | HR@1 |") and "±" not in md.splitlines()[2]
    assert "Only one method, sft" in md and "Paired bootstrap" not in md
    with pytest.raises(DataError, match="methods.*Fix"):
        results_markdown({"paired_bootstrap": []})


def test_missing_optional_files_give_notes(tmp_path):
    runs = [make_run(tmp_path, "sft", 0, diagnosis=False, predictions=False),
            make_run(tmp_path, "bear", 0, diagnosis=False, predictions=False)]
    (runs[0] / "log_history.json").write_text("[]")
    (runs[1] / "log_history.json").write_text("[]")
    html_path, _ = write_report(runs, tmp_path / "out")
    text = html_path.read_text(encoding="utf-8")
    assert "No diagnosis file in sft-s0, bear-s0" in text
    assert "No predictions.jsonl in any run of sft, bear: left out of the paired bootstrap." in text
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
    write_json(run / "config.json", {"objective": "sft", "seed": 0, "kind": "teacher"})
    with pytest.raises(DataError, match=r"'kind' must be one of llm, baseline.*Fix"):
        load_run(run)
    write_json(run / "config.json", {"objective": "sft", "seed": 0})
    write_json(run / "train_summary.json", {"epoch_seconds": "slow"})
    with pytest.raises(DataError, match=r"train_summary\.json.*'epoch_seconds' must be a list.*Fix"):
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
    # nothing is wider than the window: wide tables scroll inside their own box
    window = int(re.search(r'data-window-width="(\d+)"', dom.stdout)[1])
    scroll = int(re.search(r'data-scroll-width="(\d+)"', dom.stdout)[1])
    assert 0 < scroll <= window <= 1200, (scroll, window)
    shot = tmp_path / "report.png"
    subprocess.run(common + [f"--screenshot={shot}", url], capture_output=True, timeout=60, env=env)
    assert png_size(shot.read_bytes()) == (1200, 2000)
    keep = os.environ.get("BEARREC_KEEP_SCREENSHOT")
    if keep:
        shutil.copy(shot, keep)


def test_exact_search_is_compared_with_beam_search_on_the_same_rows(tmp_path):
    """exact − beam per method: a known difference of per-row NDCG@10 (hits at rank 1 on known rows), rows matched
    by (index, target) whatever the exact file's order; a method without exact predictions is left out."""
    beam, exact = ranked_predictions(set(range(10))), ranked_predictions(set(range(25)))
    runs = []
    for seed in (0, 1):
        run = make_run(tmp_path, "bear", seed, preds=beam, exact=1.0)
        write_jsonl(run / "predictions-exact.jsonl", list(reversed(exact)))  # another order, the same rows
        runs.append(run)
    runs.append(make_run(tmp_path, "sft", 0, preds=beam, exact=1.0))  # metrics-exact.json, no exact predictions
    html_path, md_path = write_report(runs, tmp_path / "report", n_resamples=2000)
    compared = summary_of(html_path)["exact_vs_beam"]
    assert [c["method"] for c in compared] == ["bear"] and compared[0]["seeds"] == [0, 1]
    assert compared[0]["mean_diff"] == pytest.approx(15 / N_ROWS) and compared[0]["n_rows"] == N_ROWS
    hits = lambda rows: np.array([1.0 if i in rows else 0.0 for i in range(N_ROWS)])  # NDCG@10 of a rank-1 hit: 1
    paired = paired_bootstrap(hits(set(range(10))), hits(set(range(25))), n_resamples=2000)  # rows matched
    assert (compared[0]["low"], compared[0]["high"]) == pytest.approx((paired["low"], paired["high"]))
    assert compared[0]["low"] > 0
    table = next(t for t in parse(html_path).tables if "Mean difference (exact − beam)" in t[0])
    assert table[1][:4] == ["bear", "0, 1", str(N_ROWS), f"{15 / N_ROWS:+.4f}"] and table[1][-1] == "yes"
    assert "Exact search against beam search" in md_path.read_text(encoding="utf-8")
    md = results_markdown(summary_of(html_path)).splitlines()
    assert "**Exact top-K search** (the same rows; exact − beam: paired bootstrap of per-row NDCG@10, 95% CI):" in md
    cells = {line.split(" | ")[0][2:]: line.strip("| ").split(" | ") for line in md if line.startswith("| bear |")
             or line.startswith("| sft |")}
    assert cells["bear"][-1] == f"{compared[0]['mean_diff']:+.4f} [{compared[0]['low']:+.4f}, {compared[0]['high']:+.4f}]"
    assert cells["sft"][-1] == "–"  # no exact predictions: no comparison


def test_runs_made_under_different_threads_or_versions_are_flagged(tmp_path):
    env = {"threads": 2, "torch": "2.13.0", "transformers": "5.24.0", "device": "cpu", "deterministic": False}
    runs = [make_run(tmp_path, "sft", 0, extra={"environment": env}),
            make_run(tmp_path, "bear", 0, extra={"environment": {**env, "threads": 1}})]
    write_report(runs, tmp_path / "rep")
    md = (tmp_path / "rep" / "report.md").read_text()
    summary = json.loads((tmp_path / "rep" / "summary.json").read_text())
    assert "Warning: these runs were trained or decoded under different settings" in md and "threads: 1, 2" in md
    assert summary["environment_differences"] == {"threads": ["1", "2"]}
    assert "threads: 1, 2" in results_markdown(summary)
    write_report(runs[:1] + [make_run(tmp_path / "b", "bear", 0, extra={"environment": env})], tmp_path / "alike")
    assert "Warning" not in (tmp_path / "alike" / "report.md").read_text()


def test_one_seed_decides_nothing_between_two_trained_models(tmp_path):
    """Even where the paired interval excludes 0, one seed of each LLM method ranks two models, not two methods."""
    write_report([make_run(tmp_path, "sft", 0), make_run(tmp_path, "bear", 0)], tmp_path / "rep")
    shows = json.loads((tmp_path / "rep" / "summary.json").read_text())["what_this_shows"]
    separated = [s for s in shows if "excludes 0" in s]
    assert separated and all("one seed decides nothing between them" in s for s in separated)
    write_report([make_run(tmp_path / "two", m, s) for m in ("sft", "bear") for s in (0, 1)], tmp_path / "two-rep")
    shows = json.loads((tmp_path / "two-rep" / "summary.json").read_text())["what_this_shows"]
    assert not any("one seed decides nothing" in s for s in shows)
