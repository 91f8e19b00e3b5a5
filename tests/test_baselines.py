"""The non-LLM baselines: MostPop by brute force, SASRec (cornac) learning a pattern, and their run directories."""
from __future__ import annotations

import json
import random
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from bearrec import baselines
from bearrec.baselines import fit_baseline, prediction_rows, resolve_settings, run_baseline
from bearrec.data.dataset import Dataset, Interaction, load_dataset, save_dataset
from bearrec.errors import ConfigError
from bearrec.evaluate import check_predictions
from bearrec.files import read_jsonl
from run_fixtures import write_small_dataset

# Small enough to fit in about a second on one CPU thread.
TINY = {"embedding_dim": 16, "num_blocks": 1, "n_epochs": 2, "batch_size": 64, "n_sample": 32}


def successor_dataset(folder: Path, n_items: int = 20, n_train: int = 400, seed: int = 0) -> Dataset:
    """Rows whose target is always the item after the history's last one (item i is followed by item i+1)."""
    rng = random.Random(seed)
    items = {str(i): f"item {i}" for i in range(n_items)}

    def row(u: int) -> Interaction:
        start, length = rng.randrange(n_items), rng.randint(1, 4)
        seq = [str((start + j) % n_items) for j in range(length + 1)]
        return Interaction(f"u{u}", tuple(seq[:-1]), seq[-1], u)

    rows = [row(u) for u in range(n_train + 80)]
    dataset = Dataset(items=items, splits={"train": rows[:n_train], "valid": rows[n_train:n_train + 40],
                                           "test": rows[n_train + 40:]})
    save_dataset(dataset, folder)
    return dataset


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("baselines") / "data"
    write_small_dataset(folder)
    return folder


@pytest.fixture(scope="module")
def successor(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("successor") / "data"
    successor_dataset(folder)
    return folder


def hit_rate(rows: list[dict], k: int) -> float:
    return float(np.mean([any(r["target"] in e["item_ids"] for e in r["recommendations"][:k]) for r in rows]))


# ---------------------------------------------------------------------------------------------- popularity
def test_popularity_is_the_brute_force_count(small):
    dataset = load_dataset(small)
    counts = Counter(row.target for row in dataset.train)
    catalog = list(dataset.items)
    want = sorted(catalog, key=lambda i: (-counts[i], catalog.index(i)))[:7]
    rows = prediction_rows(fit_baseline("popularity", dataset), dataset, dataset.test, 7)
    assert len(rows) == len(dataset.test)
    for row in rows:
        assert [e["item_ids"] for e in row["recommendations"]] == [[i] for i in want]
        assert [e["score"] for e in row["recommendations"]] == [float(counts[i]) for i in want]
        assert [e["title"] for e in row["recommendations"]] == [dataset.items[i] for i in want]


def test_run_directory_predictions_check_and_metrics_match_a_hand_count(small, tmp_path):
    metrics = run_baseline("popularity", small, tmp_path / "run", split="test", k=5)
    dataset = load_dataset(small)
    path = tmp_path / "run" / "predictions.jsonl"
    rows = list(read_jsonl(path))
    check_predictions(rows, path, dataset.test, "test")  # raises on a bad row
    assert all(r["search"] == "baseline" and r["k"] == 5 and len(r["recommendations"]) == 5 for r in rows)
    assert [r["index"] for r in rows] == list(range(len(dataset.test)))
    top5 = [e["item_ids"][0] for e in rows[0]["recommendations"]]
    assert metrics["hr@5"] == pytest.approx(np.mean([row.target in top5 for row in dataset.test]))
    assert metrics["hr@1"] == pytest.approx(np.mean([row.target == top5[0] for row in dataset.test]))
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["hr@5"] == metrics["hr@5"]
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["kind"] == "baseline" and config["method"] == config["objective"] == "popularity"
    assert config["num_beams"] == 5 and config["baseline"] == {} and config["seed"] == 0
    assert config["dataset_fingerprint"] == dataset.fingerprint
    assert json.loads((tmp_path / "run" / "log_history.json").read_text()) == []
    summary = json.loads((tmp_path / "run" / "train_summary.json").read_text())
    assert summary["method"] == "popularity" and summary["epoch_seconds"] == []
    assert set(summary["train_seconds_by_split"]) == {"test"} and summary["train_seconds"] >= 0


def test_report_reads_a_baseline_run(small, tmp_path):
    from bearrec.report import load_run

    run_baseline("popularity", small, tmp_path / "run", split="test", k=5)
    result = load_run(tmp_path / "run")
    assert result.method == "popularity" and result.seed == 0 and result.predictions_path is not None


# ---------------------------------------------------------------------------------------------- sasrec
def test_sasrec_learns_the_successor_pattern(successor):
    dataset = load_dataset(successor)
    settings = {**TINY, "embedding_dim": 32, "n_epochs": 8, "learning_rate": 0.01}
    sasrec = prediction_rows(fit_baseline("sasrec", dataset, settings=settings), dataset, dataset.test, 10)
    popular = prediction_rows(fit_baseline("popularity", dataset), dataset, dataset.test, 10)
    assert hit_rate(sasrec, 1) >= 0.9  # 1.0 with seeds 0 and 1
    assert hit_rate(popular, 1) <= 0.2  # 0.1: the counts are nearly uniform


def test_sasrec_same_seed_same_predictions(successor):
    dataset = load_dataset(successor)
    histories = [row.history for row in dataset.valid]
    first = fit_baseline("sasrec", dataset, seed=3, settings=TINY).score(histories)
    second = fit_baseline("sasrec", dataset, seed=3, settings=TINY).score(histories)
    other = fit_baseline("sasrec", dataset, seed=4, settings=TINY).score(histories)
    assert np.array_equal(first, second)
    assert not np.array_equal(first, other)


def test_batched_scores_equal_the_library_score(successor):
    dataset = load_dataset(successor)
    model = baselines.fit_cornac_sasrec(dataset, resolve_settings("sasrec", TINY, dataset), seed=0)
    scorer = baselines.sasrec_scorer(model)
    histories = [row.history for row in dataset.test[:10]]
    batched = scorer.score(histories)
    for history, row in zip(histories, batched):
        one = model.score(0, [model.iid_map[i] for i in history])
        np.testing.assert_allclose(row, one, rtol=1e-5, atol=1e-5)


def test_sasrec_item_index_is_the_catalog_and_max_len_the_longest_history(successor):
    dataset = load_dataset(successor)
    settings = resolve_settings("sasrec", TINY, dataset)
    assert settings["max_len"] == max(len(row.history) for row in dataset.train) == 4
    scorer = fit_baseline("sasrec", dataset, settings=TINY)
    assert scorer.item_ids == list(dataset.items)
    assert scorer.score([("3",)]).shape == (1, len(dataset.items))


def test_sessions_are_training_rows():
    rows = [Interaction("u", ("a", "b"), "c", 5), Interaction("u", ("b", "c"), "d", 6)]
    dataset = Dataset(items={i: i for i in "abcd"}, splits={"train": rows, "valid": [], "test": []})
    assert baselines.sasrec_sessions(dataset) == [("u", "0", "a", 0), ("u", "0", "b", 1), ("u", "0", "c", 2),
                                                  ("u", "1", "b", 0), ("u", "1", "c", 1), ("u", "1", "d", 2)]


# ---------------------------------------------------------------------------------------------- settings
def test_unknown_or_bad_settings_are_config_errors(successor, tmp_path):
    with pytest.raises(ConfigError, match="hidden_units.*Fix"):
        resolve_settings("sasrec", {"hidden_units": 64})
    with pytest.raises(ConfigError, match="loss.*Fix"):
        resolve_settings("sasrec", {"loss": "hinge"})
    with pytest.raises(ConfigError, match="n_epochs"):
        resolve_settings("sasrec", {"n_epochs": 0})
    with pytest.raises(ConfigError, match="multiple"):
        resolve_settings("sasrec", {"embedding_dim": 10, "num_heads": 3})
    with pytest.raises(ConfigError, match="no settings"):
        resolve_settings("popularity", {"n_epochs": 3})
    with pytest.raises(ConfigError, match="unknown baseline"):
        run_baseline("bpr", successor, tmp_path / "run", split="valid")
    assert not (tmp_path / "run").exists()


def test_missing_cornac_is_a_config_error(successor, tmp_path, monkeypatch):
    for name in ("cornac", "cornac.models", "cornac.data"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ConfigError, match=r"pip install 'bearrec\[baselines\]'"):
        run_baseline("sasrec", successor, tmp_path / "run", split="valid", settings=TINY)
    assert not (tmp_path / "run" / "config.json").exists()


# ---------------------------------------------------------------------------------------------- run directory
def test_an_output_dir_made_otherwise_is_refused(small, successor, tmp_path):
    run = tmp_path / "run"
    run_baseline("popularity", small, run, split="valid", k=5)
    for change in ({"seed": 1}, {"k": 3}):
        with pytest.raises(ConfigError, match=r"config\.json.*(seed|num_beams).*Fix"):
            run_baseline("popularity", small, run, split="valid", **{"k": 5, **change})
    with pytest.raises(ConfigError, match=r"config\.json.*method.*Fix"):
        run_baseline("sasrec", small, run, split="valid", k=5, settings=TINY)
    with pytest.raises(ConfigError, match=r"config\.json.*dataset_fingerprint.*Fix"):
        run_baseline("popularity", successor, run, split="valid", k=5)
    sasrec = tmp_path / "sasrec"
    run_baseline("sasrec", successor, sasrec, split="valid", settings=TINY)
    with pytest.raises(ConfigError, match=r"config\.json.*baseline.*Fix"):
        run_baseline("sasrec", successor, sasrec, split="valid", settings={**TINY, "dropout": 0.5})


class SplitSpy(dict):
    """A dataset's splits that fail the test on any read of the test rows."""

    def __getitem__(self, key):
        assert key != "test", "the test rows were read"
        return super().__getitem__(key)

    def get(self, key, default=None):
        assert key != "test", "the test rows were read"
        return super().get(key, default)

    def values(self):
        raise AssertionError("every split was read")

    def items(self):
        raise AssertionError("every split was read")


@pytest.mark.parametrize("method", ["popularity", "sasrec"])
def test_the_valid_split_never_reads_the_test_rows(method, successor, tmp_path, monkeypatch):
    def spied_load(directory):
        dataset = load_dataset(directory)
        dataset.splits = SplitSpy(dataset.splits)
        return dataset

    monkeypatch.setattr(baselines, "load_dataset", spied_load)
    with pytest.raises(AssertionError, match="test rows were read"):
        spied_load(successor).test  # the spy works
    settings = TINY if method == "sasrec" else None
    metrics = run_baseline(method, successor, tmp_path / "run", split="valid", settings=settings)
    assert metrics["split"] == "valid" and (tmp_path / "run" / "predictions-valid.jsonl").is_file()
    assert not (tmp_path / "run" / "predictions.jsonl").exists()


def test_rerun_skips_what_is_done(successor, tmp_path, monkeypatch):
    calls = []
    fit = baselines.fit_baseline

    def counted(*args, **kwargs):
        calls.append(args[0])
        return fit(*args, **kwargs)

    monkeypatch.setattr(baselines, "fit_baseline", counted)
    run = tmp_path / "run"
    first = run_baseline("sasrec", successor, run, split="valid", settings=TINY)
    again = run_baseline("sasrec", successor, run, split="valid", settings=TINY)
    assert len(calls) == 1 and again["hr@10"] == first["hr@10"]
    (run / "metrics-valid.json").unlink()  # predictions current: evaluated again without a fit
    assert run_baseline("sasrec", successor, run, split="valid", settings=TINY)["hr@10"] == first["hr@10"]
    assert len(calls) == 1
    run_baseline("sasrec", successor, run, split="test", settings=TINY)
    assert len(calls) == 2
    summary = json.loads((run / "train_summary.json").read_text())
    assert set(summary["train_seconds_by_split"]) == {"valid", "test"}
    assert summary["train_seconds"] == summary["train_seconds_by_split"]["valid"]
    (run / "predictions-valid.jsonl").write_text("")  # stale predictions: fitted again
    run_baseline("sasrec", successor, run, split="valid", settings=TINY)
    assert len(calls) == 3
