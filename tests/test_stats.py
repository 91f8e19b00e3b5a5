"""Seed summaries and the paired bootstrap."""
from __future__ import annotations

import math

import numpy as np
import pytest

from bearrec.errors import ConfigError, DataError
from bearrec.report.bootstrap import paired_bootstrap, summarize_seeds


def test_summarize_seeds_mean_std():
    s = summarize_seeds([{"hr@10": 0.1, "n_rows": 10, "name": "x"}, {"hr@10": 0.3, "n_rows": 10}])
    assert s["hr@10"]["mean"] == pytest.approx(0.2)
    assert s["hr@10"]["std"] == pytest.approx(np.std([0.1, 0.3], ddof=1))
    assert s["hr@10"]["n"] == 2
    assert "name" not in s


def test_summarize_single_run_std_is_nan():
    s = summarize_seeds([{"hr@10": 0.1}])
    assert s["hr@10"]["mean"] == 0.1 and math.isnan(s["hr@10"]["std"])


def test_identical_inputs():
    a = np.random.default_rng(1).random(200)
    r = paired_bootstrap(a, a.copy(), n_resamples=2000)
    assert r["mean_diff"] == 0.0
    assert r["low"] <= 0.0 <= r["high"]
    assert r["p_value"] == pytest.approx(1.0)


def test_clear_shift_excludes_zero():
    rng = np.random.default_rng(2)
    a = rng.random(300)
    b = a + 0.1 + rng.normal(0, 0.05, 300)
    r = paired_bootstrap(a, b, n_resamples=2000)
    assert r["mean_diff"] == pytest.approx(float((b - a).mean()))
    assert 0.0 < r["low"] < r["mean_diff"] < r["high"]
    assert r["p_value"] < 0.01
    r_rev = paired_bootstrap(b, a, n_resamples=2000)
    assert r_rev["high"] < 0.0


def test_noise_interval_contains_zero_and_width_shrinks_with_confidence():
    rng = np.random.default_rng(3)
    a, b = rng.random(500), rng.random(500)
    wide = paired_bootstrap(a, b, n_resamples=3000, confidence=0.99)
    narrow = paired_bootstrap(a, b, n_resamples=3000, confidence=0.5)
    assert wide["high"] - wide["low"] > narrow["high"] - narrow["low"]


def test_reproducible_with_seed_and_chunking():
    rng = np.random.default_rng(4)
    a, b = rng.random(50_000), rng.random(50_000)   # several chunks of resamples
    r1 = paired_bootstrap(a, b, n_resamples=300, seed=7)
    r2 = paired_bootstrap(a, b, n_resamples=300, seed=7)
    r3 = paired_bootstrap(a, b, n_resamples=300, seed=8)
    assert r1 == r2
    assert (r1["low"], r1["high"]) != (r3["low"], r3["high"])


def test_bad_inputs():
    with pytest.raises(DataError, match="equal length"):
        paired_bootstrap(np.zeros(3), np.zeros(4))
    with pytest.raises(DataError, match="NaN"):
        paired_bootstrap(np.array([0.0, np.nan]), np.zeros(2))
    with pytest.raises(ConfigError):
        paired_bootstrap(np.zeros(3), np.zeros(3), confidence=1.0)
