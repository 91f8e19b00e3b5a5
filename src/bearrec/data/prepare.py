"""The dispatcher the CLI calls: `prepare(FORMAT, SOURCE, OUTPUT_DIR, **options)` reads, preprocesses and saves."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from ..errors import ConfigError
from .bear_csv import prepare_bear_csv
from .dataset import Dataset, save_dataset
from .movielens import fetch_movielens_100k, prepare_movielens_100k
from .raw_logs import prepare_amazon, prepare_recbole

FORMATS: dict[str, Callable[..., Dataset]] = {
    "bear-csv": prepare_bear_csv,
    "movielens-100k": prepare_movielens_100k,
    "recbole": prepare_recbole,
    "amazon": prepare_amazon,
}

FETCHERS: dict[str, Callable[..., Path]] = {"movielens-100k": fetch_movielens_100k}


def fetch(name: str, cache_dir: str | Path | None = None) -> Path:
    """Download a public dataset into the cache (no-op when cached) and return its folder, for `bearrec data fetch`."""
    if name not in FETCHERS:
        raise ConfigError(f"no downloader for {name!r}; available: {', '.join(FETCHERS)}.")
    return FETCHERS[name](cache_dir)


def prepare(format: str, source: str | Path, output_dir: str | Path | None = None, **options) -> Dataset:
    """Prepare SOURCE in FORMAT and save it to OUTPUT_DIR (if given); options left as None use defaults."""
    if format not in FORMATS:
        raise ConfigError(f"unknown dataset format {format!r}; use one of {', '.join(FORMATS)}.")
    options = {k: v for k, v in options.items() if v is not None}
    try:
        dataset = FORMATS[format](source, **options)
    except TypeError as e:
        if "unexpected keyword argument" in str(e):
            raise ConfigError(f"format {format!r} does not take that option ({e}).") from None
        raise
    if output_dir is not None:
        save_dataset(dataset, output_dir)
    return dataset
