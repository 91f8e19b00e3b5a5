"""The report's rows of other decoding modes (diverse beam search, D3): one row per mode after its method, its own
metrics and PruningRate (its predictions against exact search's), in every table and paired bootstrap."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_report import N_ROWS, make_run, parse, ranked_predictions, summary_of

from bearrec.errors import DataError
from bearrec.files import write_json, write_jsonl
from bearrec.metrics import evaluate_predictions
from bearrec.report import load_runs, results_markdown, write_report


def _with(rows: list[dict], **facts) -> list[dict]:
    return [{**r, "k": 10, **facts} for r in rows]


def make_mode(run: Path, search: str, hit_rows: set[int], **facts) -> list[dict]:
    """predictions-SEARCH.jsonl (hits at rank 1 on `hit_rows`) and the metrics-SEARCH.json evaluate writes of them."""
    preds = _with(ranked_predictions(hit_rows), search=search, beams=10, **facts)
    write_jsonl(run / f"predictions-{search}.jsonl", preds)
    write_json(run / f"metrics-{search}.json", {**evaluate_predictions(preds, ks=(1, 5, 10, 20)), "search": search})
    return preds


# bear's exact top 10 holds the target on rows 0-29; its D3 decoding finds it on these rows (rank 1):
D3_HITS = {0: set(range(0, 40, 2)), 1: set(range(5, 30))}   # in exact top-10 and found: 15 of 30, then 25 of 30


@pytest.fixture(scope="module")
def mode_report(tmp_path_factory):
    """sft (seeds 0, 1; seed 0 also decoded by diverse beam search, without exact predictions) and bear (seeds 0, 1,
    each with exact predictions and a D3 decoding)."""
    root = tmp_path_factory.mktemp("modes")
    runs = [make_run(root, "sft", s, preds=ranked_predictions(set(range(5 + s))), epoch_seconds=[60.0])
            for s in (0, 1)]
    make_mode(runs[0], "diverse", set(range(8)), groups=2, diversity_penalty=0.5)
    for s in (0, 1):
        run = make_run(root, "bear", s, preds=ranked_predictions(set(range(10))), epoch_seconds=[90.0], exact=1.0)
        write_jsonl(run / "predictions-exact.jsonl", _with(ranked_predictions(set(range(30))), search="exact"))
        make_mode(run, "d3", D3_HITS[s], assistant_weight=0.0, assistant=None)
        runs.append(run)
    html_path, md_path = write_report(runs, root / "report", n_resamples=2000)
    return runs, html_path, md_path


def test_a_decoding_mode_is_its_own_row_after_its_method(mode_report):
    runs, html_path, md_path = mode_report
    beam, d3 = load_runs(runs[2])
    assert (beam.method, d3.method, d3.name) == ("bear", "bear · d3", "bear-s0 · d3")
    assert d3.metrics == json.loads((runs[2] / "metrics-d3.json").read_text()) and d3.metrics["hr@10"] == 20 / N_ROWS
    assert d3.predictions_path == runs[2] / "predictions-d3.jsonl"
    assert d3.exact_predictions_path == runs[2] / "predictions-exact.jsonl"
    # its own PruningRate: of the 30 exact top-10 positives, D3 returns the even rows 0-28 (15), misses 15
    assert d3.diagnosis["pruning_rate@10"] == 15 / 30
    assert (d3.diagnosis["n_pruned"], d3.diagnosis["n_in_exact_top_b"]) == (15, 30)
    assert beam.diagnosis["pruning_rate@10"] == 0.52 and d3.diagnosis_path is None and d3.log_history == []
    assert [r.method for r in load_runs(runs[1])] == ["sft"]           # no mode files: no extra row
    assert [r.method for r in load_runs(runs[0])] == ["sft", "sft · diverse"]
    table = parse(html_path).tables[0]
    assert [r[0] for r in table[1:]] == ["sft", "sft · diverse", "bear", "bear · d3"]
    row = next(r for r in table[1:] if r[0] == "bear · d3")
    rates = [20 / N_ROWS, 25 / N_ROWS]
    assert row[1] == "0, 1" and row[table[0].index("HR@10")] == f"{np.mean(rates):.4f} ± {np.std(rates, ddof=1):.4f}"
    assert row[table[0].index("min/epoch")] == "1.5"                    # the method's training
    runs_table = next(t for t in parse(html_path).tables if t[0][:4] == ["Method", "Kind", "Seed", "Run"])
    row = next(r for r in runs_table[1:] if r[3] == "bear-s1 · d3")
    assert row[:3] == ["bear · d3", "llm", "1"]                         # with the mode's settings from its predictions
    assert 'decoding={"assistant": null, "assistant_weight": 0.0, "beams": 10, "search": "d3"}' in row[-1]
    assert 'decoding={"beams": 10, "diversity_penalty": 0.5, "groups": 2, "search": "diverse"}' in md_path.read_text(
        encoding="utf-8")


def test_a_decoding_mode_has_its_own_pruning_rate_pooled_over_rows(mode_report):
    _, html_path, md_path = mode_report
    diag = next(t for t in parse(html_path).tables if "PruningRate@10" in t[0])
    cells = {r[0]: r for r in diag[1:]}
    col = diag[0].index("PruningRate@10")
    rates = [15 / 30, 5 / 30]                    # seed 1 returns rows 5-29: misses 0-4 of the exact top 10
    assert cells["bear · d3"][col] == f"{np.mean(rates):.4f} ± {np.std(rates, ddof=1):.4f}"
    assert cells["bear"][col] == f"{0.525:.4f} ± {np.std([0.52, 0.53], ddof=1):.4f}"   # beam search's diagnosis
    assert "sft · diverse" not in cells                 # no exact predictions in sft-s0: nothing to compute it from
    text = md_path.read_text(encoding="utf-8")
    assert "No predictions of their own and of exact search to compute the PruningRate of sft-s0 · diverse" in text
    assert "bear-s0 · d3: its predictions-d3.jsonl against predictions-exact.jsonl (60 rows)" in text
    entry = summary_of(html_path)["methods"]["bear · d3"]
    assert entry["diagnosis_totals"] == {"n_pruned": 20, "n_in_exact_top_b": 60, "runs": 2}   # 15 + 5 of 30 + 30
    assert (entry["search"], entry["trained_method"]) == ("d3", "bear")
    md = results_markdown(summary_of(html_path)).splitlines()
    header = md[0].strip("| ").split(" | ")
    row = next(line for line in md if line.startswith("| bear · d3 |")).strip("| ").split(" | ")
    assert row[header.index("Pruned / in exact top-10")] == "20 / 60"
    assert row[header.index("Epoch ÷ SFT")] == "1.50×"                # bear's 90 s per epoch ÷ sft's 60 s
    assert next(line for line in md if line.startswith("| sft |")).strip("| ").split(" | ")[-1] == "1.00×"
    assert any(line.startswith("- **Epoch ÷ SFT**: ") and "METHOD · MODE" in line for line in md)


def test_a_decoding_mode_is_paired_with_every_method_but_not_with_exact_search(mode_report):
    _, html_path, md_path = mode_report
    summary = summary_of(html_path)
    boot = {b["comparison"]: b for b in summary["paired_bootstrap"]}
    assert list(boot) == ["sft - sft · diverse", "sft - bear", "sft - bear · d3", "sft · diverse - bear",
                          "sft · diverse - bear · d3", "bear - bear · d3"]
    # per-row NDCG@10 (1 on a rank-1 hit) averaged over seeds: bear hits rows 0-9, D3 hits 20 and 25 rows
    assert boot["bear - bear · d3"]["mean_diff"] == pytest.approx((10 - (20 + 25) / 2) / N_ROWS)
    assert boot["bear - bear · d3"]["seeds"] == [0, 1] and boot["sft - sft · diverse"]["seeds"] == [0]
    table = next(t for t in parse(html_path).tables if t[0][0] == "Difference (a − b)")
    assert "bear − bear · d3" in [r[0] for r in table[1:]]
    assert [c["method"] for c in summary["exact_vs_beam"]] == ["bear"]   # exact − beam is beam search's alone
    exact = next(t for t in parse(html_path).tables if t[0][-1] == "Certified" and "HR@10" in t[0])
    assert [r[0] for r in exact[1:]] == ["bear"]
    assert "· d3)" not in md_path.read_text(encoding="utf-8").split("Left out of this table")[1].split("\n")[0]


def test_a_decoding_mode_on_other_rows_than_exact_search_is_refused(tmp_path):
    run = make_run(tmp_path, "bear", 0, preds=ranked_predictions(set(range(10))))
    write_jsonl(run / "predictions-exact.jsonl", _with(ranked_predictions(set(range(30)))))
    preds = make_mode(run, "d3", {1, 2})
    write_jsonl(run / "predictions-d3.jsonl", preds[:-1])
    with pytest.raises(DataError, match=r"predictions-d3\.jsonl: against predictions-exact\.jsonl: 1 rows .*Fix"):
        load_runs(run)
