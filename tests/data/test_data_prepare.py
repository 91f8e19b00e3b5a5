"""The dispatcher the CLI calls: format names, option checking, saving, and the stats summary."""
from __future__ import annotations

import pytest

from bearrec.data import FORMATS, fetch, format_stats, load_dataset, prepare
from bearrec.errors import ConfigError


def test_formats_are_listed():
    assert set(FORMATS) == {"bear-csv", "movielens-100k", "recbole", "amazon"}


def test_unknown_format_option_and_fetcher_are_config_errors(bear_folder):
    with pytest.raises(ConfigError, match="unknown dataset format"):
        prepare("csv", bear_folder, None)
    with pytest.raises(ConfigError, match="does not take that option"):
        prepare("bear-csv", bear_folder, None, k_core=5)
    with pytest.raises(ConfigError, match="no downloader"):
        fetch("movielens-1m")


def test_unset_options_use_defaults_and_output_is_saved(bear_folder, tmp_path):
    ds = prepare("bear-csv", bear_folder, tmp_path / "out", train_sample=None, seed=None, valid_size=None)
    assert load_dataset(tmp_path / "out").stats == ds.stats
    text = format_stats(ds.stats)
    assert "items 6" in text and "duplicate titles 1" in text and "dropped: nothing" in text


def test_test_sample_keeps_a_seeded_share_of_the_test_rows_and_counts_the_rest(bear_folder, tmp_path):
    from bearrec.cli import main

    full = prepare("bear-csv", bear_folder)
    n = len(full.test) - 1
    sampled = prepare("bear-csv", bear_folder, tmp_path / "out", test_sample=n, seed=4)
    assert len(sampled.test) == n and set(sampled.test) < set(full.test) and sampled.train == full.train
    assert sampled.stats["n_test"] == n and sampled.stats["dropped"]["test_rows_not_sampled"] == 1
    again = prepare("bear-csv", bear_folder, test_sample=n, seed=4)
    assert again.test == sampled.test and load_dataset(tmp_path / "out").test == sampled.test
    with pytest.raises(ConfigError, match=f"test_sample={len(full.test) + 1} must be between 1 and {len(full.test)}"):
        prepare("bear-csv", bear_folder, test_sample=len(full.test) + 1)
    assert main(["prepare", "bear-csv", str(bear_folder), str(tmp_path / "cli"), "--test-sample", str(n)]) == 0
    assert load_dataset(tmp_path / "cli").stats["n_test"] == n
