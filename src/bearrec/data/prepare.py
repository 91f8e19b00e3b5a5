"""The dispatcher the CLI calls: `prepare(FORMAT, SOURCE, OUTPUT_DIR, **options)` reads, preprocesses and saves.

OUTPUT_DIR is written only after the new dataset has been read and checked in full, and only when that
replaces nothing the user may want: a new or empty folder, one holding the same dataset (same
fingerprint: re-preparing is idempotent), or what an interrupted `prepare` left (bearrec's own files
without stats.json). A different prepared dataset, or a folder holding other files, is replaced only
with overwrite=True (`--overwrite`); that rewrites the five dataset files and leaves any other file alone.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from ..errors import ConfigError
from .bear_csv import prepare_bear_csv
from .dataset import DATASET_FILES, Dataset, dataset_fingerprint, fingerprint_bytes, save_dataset, serialize_dataset
from .movielens import fetch_movielens_100k, prepare_movielens_100k
from .preprocess import sample_test_split
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


_REFUSE_FIX = "Fix: pass --overwrite to replace it, or choose another OUTPUT_DIR."


def _is_own_file(name: str) -> bool:
    """A dataset file, or the temporary file an interrupted atomic write of one left behind."""
    return name in DATASET_FILES or any(name.startswith(f".{f}.") and name.endswith(".tmp") for f in DATASET_FILES)


def check_output_dir(output_dir: Path, overwrite: bool) -> None:
    """Refuse, before any work, an OUTPUT_DIR that is a file or a non-empty folder that is not a prepared dataset."""
    for path in (output_dir, *output_dir.parents):
        if path.exists() or path.is_symlink():
            if path.is_dir():
                break
            problem = ("is a file, not a folder" if path == output_dir
                       else f"cannot be created: {path} is a file, not a folder")
            raise ConfigError(f"OUTPUT_DIR {output_dir} {problem}. Fix: choose another OUTPUT_DIR, a new or "
                              "empty folder.")
    if not output_dir.is_dir() or (output_dir / "stats.json").exists() or overwrite:
        return
    others = sorted(p.name for p in output_dir.iterdir() if not _is_own_file(p.name))
    if others:
        shown = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
        raise ConfigError(f"OUTPUT_DIR {output_dir} is not empty ({shown}) and is not a prepared dataset; "
                          "bearrec will not write into a folder it did not create. Fix: choose another "
                          "OUTPUT_DIR, or pass --overwrite to write the dataset files into it (its other files are "
                          "left alone).")


def check_replacement(output_dir: Path, fingerprint: str, overwrite: bool) -> None:
    """Refuse to replace a prepared dataset in OUTPUT_DIR whose content differs from the new one (`fingerprint`)."""
    if overwrite or not (output_dir / "stats.json").exists():
        return
    missing = [name for name in DATASET_FILES if not (output_dir / name).is_file()]
    if missing:
        raise ConfigError(f"OUTPUT_DIR {output_dir} holds an incomplete prepared dataset ({', '.join(missing)} "
                          f"missing). {_REFUSE_FIX}")
    old = dataset_fingerprint(output_dir)
    if old != fingerprint:
        raise ConfigError(f"OUTPUT_DIR {output_dir} already holds a different prepared dataset (fingerprint "
                          f"{old}; the new one is {fingerprint}). {_REFUSE_FIX}")


def prepare(format: str, source: str | Path, output_dir: str | Path | None = None, overwrite: bool = False,
            test_sample: int | None = None, **options) -> Dataset:
    """Prepare SOURCE in FORMAT and save it to OUTPUT_DIR (if given); options left as None use defaults.

    `test_sample` keeps a seeded random N of the test rows (seed: the `seed` option + 1, so that it differs from the
    training sample's). An OUTPUT_DIR holding a different prepared dataset or other files raises ConfigError unless
    `overwrite`.
    """
    if format not in FORMATS:
        raise ConfigError(f"unknown dataset format {format!r}; use one of {', '.join(FORMATS)}.")
    options = {k: v for k, v in options.items() if v is not None}
    output = Path(output_dir) if output_dir is not None else None
    if output is not None:
        check_output_dir(output, overwrite)
    try:
        dataset = FORMATS[format](source, **options)
    except TypeError as e:
        if "unexpected keyword argument" in str(e):
            raise ConfigError(f"format {format!r} does not take that option ({e}).") from None
        raise
    if test_sample is not None:
        sample_test_split(dataset, test_sample, seed=int(options.get("seed", 0)) + 1)
    if output is not None:
        files = serialize_dataset(dataset)
        check_replacement(output, fingerprint_bytes(files), overwrite)
        save_dataset(dataset, output, files=files)
    return dataset
