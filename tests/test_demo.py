"""The README's first command end to end, shrunk: `bearrec demo` is the experiment in bearrec/configs/demo.yaml (fetch
and prepare MovieLens-100K, train each method, fit the baselines, evaluate, diagnose, report), here made tiny."""
from __future__ import annotations

import json

import pytest

from bearrec import experiment as exp
from bearrec.data import fetch_movielens_100k
from bearrec.errors import BearrecError

# no sentence encoder needed; collaborative codes from 48 rows leave most movies without an embedding (one leaf):
# accepted here, as a smoke test, with the warning that says so
TINIER = ("datasets.ml100k.prepare.train_sample=48", "datasets.ml100k.test_sample=8", "train.max_valid_rows=8",
          "diagnosis.rows=3", "datasets.ml100k.index.embeddings=collaborative",
          "datasets.ml100k.index.max_leaf_share=1")


@pytest.mark.slow
def test_demo_runs_end_to_end_and_says_which_run_made_each_number(tmp_path, monkeypatch):
    monkeypatch.setenv("BEARREC_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr("bearrec.data.movielens._download_grouplens",
                        lambda dest, timeout=5.0: (_ for _ in ()).throw(OSError("no GroupLens in tests")))
    try:
        fetch_movielens_100k()
    except (BearrecError, OSError) as e:
        pytest.skip(f"MovieLens-100K cannot be fetched here ({e})")
    config = exp.load_experiment(exp.demo_config_path(), exp.DEMO_QUICK + TINIER)
    lines: list[str] = []
    results = exp.run_experiment(config, tmp_path / "out", print_fn=lines.append)
    out = tmp_path / "out"
    methods = [m.name for m in config.methods]
    assert {"popularity", "sasrec", "sft", "msl", "bear+ce", "sid-sft", "sid-bear"} <= set(methods)
    for method in methods:
        run = out / "runs" / "ml100k" / f"{method}-seed0"
        metrics = json.loads((run / "metrics.json").read_text())
        assert metrics["n_rows"] == 8 and metrics["invalid_rate"] == 0, method
        if method not in exp.BASELINES:
            assert json.loads((run / "diagnosis-first3.json").read_text())["n_rows"] == 3
        assert f"| {method} |" in results.read_text()
    # BEAR with the single-child CE is its own method, decoded with masked scores like BEAR
    bear_ce = json.loads((out / "runs" / "ml100k" / "bear+ce-seed0" / "config.json").read_text())
    assert bear_ce["method"] == "bear+ce" and bear_ce["objective"] == "bear" and bear_ce["score_mode"] == "masked"
    assert bear_ce["objective_config"]["single_child_ce"] is True and bear_ce["domain"] == "movie"
    sid = json.loads((out / "runs" / "ml100k" / "sid-bear-seed0" / "config.json").read_text())
    assert sid["item_kind"] == "semantic_id" and sid["objective"] == "bear" and sid["method"] == "sid-bear"
    assert json.loads((out / "data" / "ml100k" / "semantic_ids.json").read_text())["levels"] == 3
    assert (out / "report" / "ml100k" / "report.html").exists()
    stats = json.loads((out / "data" / "ml100k" / "stats.json").read_text())
    assert stats["n_train"] == 48 and stats["n_test"] == 8 and stats["dropped"]["test_rows_not_sampled"] > 0
    # a second run reuses everything that is finished
    lines.clear()
    exp.run_experiment(config, out, print_fn=lines.append)
    assert sum(line.endswith("done earlier, skipped") for line in lines) == len(exp.Experiment(config, out).stages()) - 2
