"""The README's first command end to end, shrunk: fetch and prepare MovieLens-100K, train each method,
evaluate, diagnose, print the table and write the report (the real sizes are only in bearrec.demo)."""
from __future__ import annotations

import json

import pytest

from bearrec import demo
from bearrec.data import fetch_movielens_100k
from bearrec.errors import BearrecError


@pytest.mark.slow
def test_demo_runs_end_to_end_and_says_which_run_made_each_number(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("BEARREC_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr("bearrec.data.movielens._download_grouplens",
                        lambda dest, timeout=5.0: (_ for _ in ()).throw(OSError("no GroupLens in tests")))
    try:
        fetch_movielens_100k()
    except (BearrecError, OSError) as e:
        pytest.skip(f"MovieLens-100K cannot be fetched here ({e})")
    monkeypatch.setattr(demo, "QUICK", demo.DemoSize(train_rows=48, valid_rows=8, test_rows=8, diagnose_rows=3,
                                                    epochs=1))
    summary = demo.run_demo(tmp_path / "out", quick=True)
    out = capsys.readouterr().out
    for method in demo.METHODS:
        run = tmp_path / "out" / "runs" / f"{method}-seed0"
        assert f"{method}-seed0" in out
        metrics = json.loads((run / "metrics.json").read_text())
        assert metrics["n_rows"] == 8 and metrics["invalid_rate"] == 0
        assert json.loads((run / "diagnosis-first3.json").read_text())["n_rows"] == 3
    assert "ndcg@10" in out and "configs: <run>/config.json" in out
    # BEAR with the single-child CE is its own method, decoded with masked scores like BEAR
    bear_ce = json.loads((tmp_path / "out" / "runs" / "bear+ce-seed0" / "config.json").read_text())
    assert bear_ce["method"] == "bear+ce" and bear_ce["objective"] == "bear" and bear_ce["score_mode"] == "masked"
    assert bear_ce["objective_config"]["single_child_ce"] is True
    assert (tmp_path / "out" / "report" / "report.html").exists() and summary["size"]["train_rows"] == 48
    stats = json.loads((tmp_path / "out" / "data" / "ml100k" / "stats.json").read_text())
    assert stats["n_train"] == 48 and stats["n_test"] == 8 and stats["dropped"]["test_rows_not_sampled"] > 0
    # a second run reuses everything that is finished
    demo.run_demo(tmp_path / "out", quick=True)
    assert f"method {len(demo.METHODS)}/{len(demo.METHODS)}" in capsys.readouterr().out
    # a diagnosis of another number of rows is its own file, and the report takes the one of the most rows;
    # another config in the same directory is refused
    run = tmp_path / "out" / "runs" / "sft-seed0"
    dataset = tmp_path / "out" / "data" / "ml100k"
    demo.complete_run(demo.demo_config(dataset, run, "sft", demo.QUICK), beams=10, diagnose_rows=2, max_expansions=100)
    assert json.loads((run / "diagnosis-first2.json").read_text())["n_rows"] == 2
    assert demo.comparison_table([run]).endswith("over the first 3 of them; configs: <run>/config.json")
    with pytest.raises(BearrecError, match="different config"):
        demo.complete_run(demo.demo_config(dataset, run, "bear", demo.QUICK), beams=10, diagnose_rows=2,
                          max_expansions=100)
