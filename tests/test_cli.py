"""The README's pipeline through the command line, end to end on a small synthetic BEAR-CSV dataset."""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from bearrec.cli import main

WORDS = ["Blue", "Red", "Stapler", "Pen", "Paper", "Desk", "Lamp", "Clip", "Ink", "Note", "Pad", "Tape"]


def write_bear_csv(folder: Path, n_items: int = 40, n_users: int = 60, seed: int = 0) -> None:
    """A catalog and sliding-window rows in the BIGRec/BEAR CSV layout; test rows come last in time."""
    rng = random.Random(seed)
    folder.mkdir(parents=True)
    titles = {str(i): f"{rng.choice(WORDS)} {rng.choice(WORDS)} &amp; {i}" for i in range(1, n_items + 1)}
    (folder / "id2name4Rec.json").write_text(json.dumps(titles))
    train, test = ["user_id,item_ids,timestamp"], ["user_id,item_ids,timestamp"]
    for u in range(n_users):
        seq = [rng.randint(1, n_items) for _ in range(8)]
        # items follow each other in a learnable pattern: next = previous + 1 (mod catalog)
        seq = [(seq[0] + j) % n_items + 1 for j in range(8)]
        for end in range(5, 8):
            window = seq[max(0, end - 6): end + 1]
            ts = 1_000_000 + u * 10 + end
            (test if end == 7 and u % 3 == 0 else train).append(f'{u},"{window}",{ts + (10**6 if end == 7 and u % 3 == 0 else 0)}')
    (folder / "train.csv").write_text("\n".join(train) + "\n")
    (folder / "test.csv").write_text("\n".join(test) + "\n")


def run(*args: str) -> int:
    return main([str(a) for a in args])


def test_pipeline_prepare_train_recommend_evaluate_diagnose_report(tmp_path, capsys):
    raw, data, run_dir = tmp_path / "raw", tmp_path / "data", tmp_path / "runs" / "bear"
    write_bear_csv(raw)
    assert run("prepare", "bear-csv", raw, data) == 0
    stats = json.loads((data / "stats.json").read_text())
    assert stats["n_items"] == 40 and stats["n_test"] == 20
    assert "&amp;" not in (data / "items.jsonl").read_text()  # entities unescaped

    assert run("train", Path(__file__).parents[1] / "configs" / "tiny-cpu.yaml", f"dataset={data}",
               f"output_dir={run_dir}", "objective.name=bear", "max_train_rows=64", "max_valid_rows=16",
               "training.num_train_epochs=1", "tiny.hidden_size=32", "tiny.intermediate_size=64",
               "tiny.vocab_size=300") == 0
    for name in ("config.json", "model", "trie.pt", "log_history.json"):
        assert (run_dir / name).exists(), name

    assert run("recommend", run_dir, "--split", "test", "--num-beams", "5") == 0
    preds = [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
    assert len(preds) == 20 and all(len(p["recommendations"]) == 5 for p in preds)
    catalog = {json.loads(line)["item_id"] for line in (data / "items.jsonl").read_text().splitlines()}
    assert all(set(r["item_ids"]) <= catalog for p in preds for r in p["recommendations"])

    histories = tmp_path / "histories.jsonl"
    histories.write_text(json.dumps({"history": ["3", "4", "5"]}) + "\n")
    assert run("recommend", run_dir, "--histories", histories, "--beams", "3", "--output", tmp_path / "h.jsonl") == 0
    assert len(json.loads((tmp_path / "h.jsonl").read_text())["recommendations"]) == 3

    assert run("evaluate", run_dir, "--split", "test", "--num-beams", "5") == 0
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert {"hr@1", "hr@5", "ndcg@5", "mrr@5"} <= set(metrics) and "hr@10" not in metrics
    assert metrics["invalid_rate"] == 0 and metrics["config"]["objective"] == "bear"

    assert run("diagnose", run_dir, "--split", "test", "--num-beams", "5", "--limit", "6") == 0
    diagnosis = json.loads((run_dir / "diagnosis-first6.json").read_text())  # a partial run is named so
    assert diagnosis["n_rows"] == 6 and 0 <= diagnosis["certified_fraction"] <= 1

    assert run("report", run_dir, "--output", tmp_path / "report") == 0
    assert (tmp_path / "report" / "report.html").stat().st_size > 1000
    with pytest.raises(SystemExit) as exited:  # argparse refuses an unknown per-row metric
        run("report", run_dir, "--output", tmp_path / "r2", "--bootstrap-metric", "auc")
    assert exited.value.code == 2 and "argument --bootstrap-metric" in capsys.readouterr().err


def test_bad_input_exits_non_zero_with_the_file_named(tmp_path, capsys):
    raw = tmp_path / "raw"
    write_bear_csv(raw)
    (raw / "train.csv").write_text("user_id,item_ids,timestamp\n1,\"[1, 2\",5\n")
    assert run("prepare", "bear-csv", raw, tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert "train.csv" in err and "line 2" in err
    assert run("recommend", tmp_path / "nowhere") == 2
    assert run("train", tmp_path / "missing.yaml") == 2


def test_k_is_the_list_length_and_num_beams_the_beam_width(small_run, tmp_path, capsys):
    """--k sets the list length in both searches; under exact search --num-beams alone still works as --k, with a
    note; evaluate refuses a beam-search --k that differs from the beams it scores."""
    from run_fixtures import copy_run

    run_dir = copy_run(small_run, tmp_path)
    out = tmp_path / "p.jsonl"
    assert run("recommend", run_dir, "--k", "3", "--num-beams", "5", "--output", out) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert {len(r["recommendations"]) for r in rows} == {3} and {r["beams"] for r in rows} == {5}
    assert run("recommend", run_dir, "--search", "exact", "--k", "4", "--output", out) == 0
    assert {len(r["recommendations"]) for r in map(json.loads, out.read_text().splitlines())} == {4}
    assert "note" not in capsys.readouterr().err
    assert run("recommend", run_dir, "--search", "exact", "--num-beams", "2", "--output", out) == 0
    assert "--num-beams is read as --k" in capsys.readouterr().err
    assert {r["k"] for r in map(json.loads, out.read_text().splitlines())} == {2}
    assert run("evaluate", run_dir, "--k", "3", "--num-beams", "5") == 2
    assert "--k is the list length of --search exact" in capsys.readouterr().err
