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
