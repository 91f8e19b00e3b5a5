"""Statistics for the report: mean ± std across seeds and paired bootstrap between two methods."""
from __future__ import annotations

import math
from numbers import Real
from typing import Sequence

import numpy as np

from ..errors import ConfigError, DataError

# Resampled index matrices are built in chunks of at most this many entries (~32 MB of int64).
_CHUNK_ELEMENTS = 1 << 22


def summarize_seeds(runs: Sequence[dict]) -> dict[str, dict[str, float]]:
    """Mean, sample std (ddof=1; NaN for a single run) and count of every numeric key across runs."""
    values: dict[str, list[float]] = {}
    for metrics in runs:
        for key, value in metrics.items():
            if isinstance(value, Real) and not isinstance(value, bool):
                values.setdefault(key, []).append(float(value))
    out = {}
    for key, vals in values.items():
        arr = np.asarray(vals, dtype=np.float64)
        std = float(arr.std(ddof=1)) if arr.size > 1 else math.nan
        out[key] = {"mean": float(arr.mean()), "std": std, "n": int(arr.size)}
    return out


def paired_bootstrap(a: np.ndarray, b: np.ndarray, n_resamples: int = 10000, confidence: float = 0.95,
                     seed: int = 0) -> dict[str, float]:
    """Percentile bootstrap CI of mean(b - a) over paired rows (b better when positive), with a p-value.

    Rows are resampled with replacement (the same rows for both methods, so their correlation
    is kept). `p_value` is two-sided for "no difference": the share of resampled differences,
    re-centred on 0, at least as far from 0 as the observed one, with +1 smoothing.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.ndim != 1 or a.shape != b.shape:
        raise DataError(f"paired vectors must be 1-D and of equal length, got shapes {a.shape} and {b.shape}.",
                        fix="evaluate both methods on the same rows")
    if a.size == 0:
        raise DataError("paired bootstrap needs at least one row.")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise DataError("paired vectors contain NaN or infinite values.")
    if not 0.0 < confidence < 1.0:
        raise ConfigError(f"confidence must be in (0, 1), got {confidence}.")
    if n_resamples < 1:
        raise ConfigError(f"n_resamples must be >= 1, got {n_resamples}.")

    diff = b - a
    n = diff.size
    observed = float(diff.mean())
    rng = np.random.default_rng(seed)
    means = np.empty(n_resamples, dtype=np.float64)
    chunk = max(1, _CHUNK_ELEMENTS // n)
    for start in range(0, n_resamples, chunk):
        stop = min(start + chunk, n_resamples)
        idx = rng.integers(0, n, size=(stop - start, n))
        means[start:stop] = diff[idx].mean(axis=1)
    alpha = 1.0 - confidence
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    # a tiny tolerance so that float noise in an all-zero difference does not look "extreme"
    extreme = np.abs(means - observed) >= abs(observed) - 1e-12
    p_value = (int(extreme.sum()) + 1) / (n_resamples + 1)
    return {"mean_diff": observed, "low": float(low), "high": float(high), "p_value": float(p_value),
            "n_rows": int(n), "n_resamples": int(n_resamples), "confidence": float(confidence)}
