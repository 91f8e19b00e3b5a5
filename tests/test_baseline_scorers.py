"""A baseline's fitted scorer kept in its run directory: loaded, it scores exactly as fitted; a changed file is refused;
a run made before scorers were kept gets one without redoing its predictions."""
from __future__ import annotations

import json
import random
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from bearrec import baselines
from bearrec.baseline_scorers import SCORER_FILE, load_scorer
from bearrec.baselines import baseline_done, run_baseline
from bearrec.data.dataset import load_dataset
from bearrec.errors import ConfigError
from bearrec.files import read_jsonl
from bearrec.run_dir import RunDir
from run_fixtures import write_small_dataset

TINY = {"embedding_dim": 16, "num_blocks": 1, "n_epochs": 1, "batch_size": 64, "n_sample": 32}


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("scorers") / "data"
    write_small_dataset(folder)
    return folder


def fitted_run(method: str, dataset: Path, folder: Path, monkeypatch) -> tuple[list, Path]:
    """run_baseline into `folder`, with the scorers it fitted (in order) caught on their way out."""
    fitted, fit = [], baselines.fit_baseline

    def caught(*args, **kwargs):
        fitted.append(fit(*args, **kwargs))
        return fitted[-1]

    monkeypatch.setattr(baselines, "fit_baseline", caught)
    run_baseline(method, dataset, folder, split="valid", k=5, settings=TINY if method == "sasrec" else None)
    return fitted, folder


def random_histories(items: list[str], n: int = 40, seed: int = 0) -> list[tuple[str, ...]]:
    """Histories of 0 to 8 catalog items (longer than the longest training history, so cut to max_len)."""
    rng = random.Random(seed)
    return [tuple(rng.choice(items) for _ in range(rng.randint(0, 8))) for _ in range(n)]


def test_loaded_sasrec_scores_exactly_as_fitted(small, tmp_path, monkeypatch):
    fitted, run = fitted_run("sasrec", small, tmp_path / "run", monkeypatch)
    dataset = load_dataset(small)
    state = torch.random.get_rng_state()
    loaded = load_scorer(run)
    assert torch.equal(torch.random.get_rng_state(), state)  # loading leaves the caller's random numbers alone
    histories = random_histories(list(dataset.items))
    want = fitted[0].score(histories)
    assert want.shape == (len(histories), len(dataset.items)) and np.ptp(want[1:]) > 0
    np.testing.assert_array_equal(loaded.score(histories), want)
    assert loaded.method == "sasrec" and loaded.item_ids == list(dataset.items)
    assert loaded.dataset_record["dataset_fingerprint"] == dataset.fingerprint
    loaded.check_dataset(dataset)  # the dataset it was fitted on passes
    recorded = json.loads((run / "config.json").read_text())["files"][SCORER_FILE]
    assert recorded["size"] == (run / SCORER_FILE).stat().st_size
    with pytest.raises(ConfigError, match=r"'nope' is not in .*Fix:"):
        loaded.score([("0", "nope")])


def test_popularity_round_trips(small, tmp_path, monkeypatch):
    fitted, run = fitted_run("popularity", small, tmp_path / "run", monkeypatch)
    loaded = load_scorer(run)
    histories = random_histories(loaded.item_ids, n=5)
    np.testing.assert_array_equal(loaded.score(histories), fitted[0].score(histories))
    assert loaded.method == "popularity" and loaded.scorer.counts.sum() == len(load_dataset(small).train)


def test_a_changed_scorer_is_refused(small, tmp_path, monkeypatch):
    _, run = fitted_run("popularity", small, tmp_path / "run", monkeypatch)
    path = run / SCORER_FILE
    data = bytearray(path.read_bytes())
    data[-1] ^= 1  # one bit of one count
    path.write_bytes(bytes(data))
    pattern = rf"{re.escape(str(path))}: does not have the size and SHA-256 .*not used\. Fix: delete it"
    with pytest.raises(ConfigError, match=pattern):
        load_scorer(run)
    with pytest.raises(ConfigError, match=pattern):  # nor is it silently replaced
        run_baseline("popularity", small, run, split="valid", k=5)
    with pytest.raises(ConfigError, match=pattern):
        baseline_done("popularity", small, run, split="valid", k=5)
    path.write_bytes(bytes(data[:-8]))  # cut short
    with pytest.raises(ConfigError, match=pattern):
        load_scorer(run)


def test_an_old_run_without_the_scorer_is_completed_by_a_refit(small, tmp_path, monkeypatch):
    fitted, run = fitted_run("sasrec", small, tmp_path / "run", monkeypatch)
    (run / SCORER_FILE).unlink()  # as the code before scorers were kept left it
    config = RunDir(run).config()
    RunDir(run).write_config({k: v for k, v in config.items() if k != "files"})
    with pytest.raises(ConfigError, match=rf"{re.escape(str(run / SCORER_FILE))}: is missing .*Fix: re-run"):
        load_scorer(run)
    predictions = run / "predictions-valid.jsonl"
    before = predictions.read_bytes(), predictions.stat().st_mtime_ns
    assert not baseline_done("sasrec", small, run, split="valid", k=5, settings=TINY)
    run_baseline("sasrec", small, run, split="valid", k=5, settings=TINY)
    assert len(fitted) == 2 and (predictions.read_bytes(), predictions.stat().st_mtime_ns) == before
    assert baseline_done("sasrec", small, run, split="valid", k=5, settings=TINY)
    # the refit (same seed) is the model that wrote the predictions: its top 5 are theirs
    loaded = load_scorer(run)
    rows = list(read_jsonl(predictions))
    dataset = load_dataset(small)
    top = baselines.top_k(loaded.score([row.history for row in dataset.valid]), 5)
    assert [[e["item_ids"][0] for e in r["recommendations"]] for r in rows] == \
        [[loaded.item_ids[j] for j in best] for best in top]
    run_baseline("sasrec", small, run, split="valid", k=5, settings=TINY)
    assert len(fitted) == 2  # done now: nothing fitted again


def test_what_is_no_kept_baseline_is_refused(small, tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match=r"no such run directory.*Fix:"):
        load_scorer(tmp_path / "nothing")
    trained = RunDir(tmp_path / "trained")
    trained.path.mkdir()
    trained.write_config({"kind": "train", "objective": "bear"})
    with pytest.raises(ConfigError, match=r"config\.json: is not a baseline run.*Fix:"):
        load_scorer(trained.path)
    _, popularity = fitted_run("popularity", small, tmp_path / "popularity", monkeypatch)
    _, sasrec = fitted_run("sasrec", small, tmp_path / "sasrec", monkeypatch)
    # another method's file, recorded as if it were this run's own: its header names what it is
    shutil.copy(popularity / SCORER_FILE, sasrec / SCORER_FILE)
    run = RunDir(sasrec)
    config = run.config()
    copied = json.loads((popularity / "config.json").read_text())["files"]
    run.write_config({**config, "files": copied})
    with pytest.raises(ConfigError, match=r"scorer\.safetensors: holds .* of method 'popularity', not .*'sasrec'.*Fix:"):
        load_scorer(sasrec)


def test_a_scorer_of_another_dataset_is_refused(small, tmp_path, monkeypatch):
    _, run = fitted_run("popularity", small, tmp_path / "run", monkeypatch)
    write_small_dataset(tmp_path / "other", n_items=25)
    other = load_dataset(tmp_path / "other")
    with pytest.raises(ConfigError, match=r"fitted on another dataset.*Fix:"):
        load_scorer(run).check_dataset(other)
