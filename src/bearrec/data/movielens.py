"""MovieLens-100K: fetch it at run time (never redistributed) and prepare it with the standard preprocessing.

Sources, tried in order: the official GroupLens archive (u.data, u.item), then the copy inside the PyPI
wheel recbole==1.2.1 (ml-100k.inter, ml-100k.item), read from the wheel's zip without installing it.

Defaults keep the published counts (943 users, 1,682 movies): no k-core (GroupLens already kept only users
with at least 20 ratings; a 5-core would remove the many movies rated fewer than 5 times), and movie 267,
whose title is "unknown" in the source, is kept under that title and named in stats["notes"]; pass
untitled="drop" to drop it (counted in stats["dropped"]). Any other movie without a usable title follows
the same option: kept under the placeholder "unknown item <id>", or dropped with its ratings (see titles).
stats["untitled_items"] counts them all. Every rating is an interaction.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from pathlib import Path

from ..errors import ConfigError, DataError
from .dataset import Dataset
from .preprocess import interaction_table, prepare_interactions
from .raw_logs import parse_number, read_recbole_inter, read_recbole_item
from .titles import UNTITLED_POLICIES

GROUPLENS_URL = "https://files.grouplens.org/datasets/movielens/ml-100k.zip"
RECBOLE_WHEEL = "recbole==1.2.1"
WHEEL_DIR = "recbole/dataset_example/ml-100k/"
RECBOLE_FILES = ("ml-100k.inter", "ml-100k.item")
GROUPLENS_FILES = ("u.data", "u.item")
UNKNOWN_TITLES = {"unknown", "unkonwn"}  # RecBole's copy misspells GroupLens' "unknown" (movie 267)


def cache_root() -> Path:
    """bearrec's cache folder: $BEARREC_CACHE, else the platform's user cache dir."""
    if os.environ.get("BEARREC_CACHE"):
        return Path(os.environ["BEARREC_CACHE"])
    try:
        from platformdirs import user_cache_dir
    except ImportError:  # platformdirs is a declared dependency; this only guards a broken install
        return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "bearrec"
    return Path(user_cache_dir("bearrec"))


def _has_copy(folder: Path) -> bool:
    return all((folder / f).is_file() for f in RECBOLE_FILES) or all((folder / f).is_file() for f in GROUPLENS_FILES)


def _download_grouplens(dest: Path, timeout: float = 5.0) -> None:
    """Fetch the GroupLens zip and extract u.data and u.item into `dest` (raises OSError when unreachable)."""
    archive = dest / "ml-100k.zip"
    with urllib.request.urlopen(GROUPLENS_URL, timeout=timeout) as response, open(archive, "wb") as out:
        shutil.copyfileobj(response, out)
    with zipfile.ZipFile(archive) as z:
        for name in GROUPLENS_FILES:
            (dest / name).write_bytes(z.read(f"ml-100k/{name}"))
    archive.unlink()


def _download_recbole_wheel(dest: Path) -> Path:
    """Download (not install) the recbole wheel with pip into `dest`; return the wheel path."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet",
           RECBOLE_WHEEL, "-d", str(dest)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise OSError(f"pip download failed: {e}") from None
    wheels = sorted(dest.glob("recbole-*.whl"))
    if done.returncode != 0 or not wheels:
        raise OSError(f"pip download failed: {done.stderr.strip()[-500:]}")
    return wheels[0]


def extract_from_wheel(wheel: Path, dest: Path) -> None:
    """Copy ml-100k.inter and ml-100k.item out of the recbole wheel (a zip) into `dest`."""
    try:
        with zipfile.ZipFile(wheel) as z:
            for name in RECBOLE_FILES:
                (dest / name).write_bytes(z.read(WHEEL_DIR + name))
    except (zipfile.BadZipFile, KeyError) as e:
        raise DataError(f"not a recbole wheel holding {WHEEL_DIR} ({e}).", path=wheel,
                        fix=f"delete it and fetch again; pip should download {RECBOLE_WHEEL}") from None


def fetch_movielens_100k(cache_dir: str | Path | None = None) -> Path:
    """Return a folder holding MovieLens-100K, downloading it once into the cache (atomically) if needed."""
    root = Path(cache_dir) if cache_dir is not None else cache_root()
    target = root / "movielens-100k"
    if _has_copy(target):
        return target
    root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".movielens-100k.", dir=root))
    errors: list[str] = []
    try:
        try:
            _download_grouplens(work)
        except (OSError, zipfile.BadZipFile, KeyError) as e:
            errors.append(f"GroupLens ({GROUPLENS_URL}): {e}")
            for name in GROUPLENS_FILES:
                (work / name).unlink(missing_ok=True)
            with tempfile.TemporaryDirectory() as wheel_dir:
                try:
                    extract_from_wheel(_download_recbole_wheel(Path(wheel_dir)), work)
                except OSError as e2:
                    errors.append(f"PyPI wheel {RECBOLE_WHEEL}: {e2}")
                    raise DataError("could not download MovieLens-100K: " + "; ".join(errors), path=target,
                                    fix=f"download {GROUPLENS_URL}, unzip it and pass the ml-100k folder as "
                                        "SOURCE") from None
        if _has_copy(target):  # another process finished first
            return target
        shutil.rmtree(target, ignore_errors=True)
        os.replace(work, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def read_grouplens_item(path: Path) -> dict[str, str]:
    """Read GroupLens u.item (pipe-separated, Latin-1): {movie id: "Title (year)"} as published."""
    titles: dict[str, str] = {}
    with open(path, encoding="latin-1") as handle:
        for lineno, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            fields = line.rstrip("\n").split("|")
            if len(fields) < 2 or not fields[0]:
                raise DataError("expected movie id|title|...", path=path, line=lineno)
            titles.setdefault(fields[0], fields[1])
    return titles


def read_grouplens_data(path: Path):
    """Read GroupLens u.data (user, item, rating, timestamp; tab-separated) into an interaction table."""
    users, items, stamps = [], [], []
    with open(path, encoding="latin-1") as handle:
        for lineno, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            fields = line.split()
            if len(fields) != 4:
                raise DataError(f"expected 4 tab-separated fields, found {len(fields)}.", path=path, line=lineno,
                                fix="u.data lines are: user id, item id, rating, timestamp")
            users.append(fields[0])
            items.append(fields[1])
            stamps.append(parse_number(fields[3], path, lineno, "timestamp"))
    if not users:
        raise DataError("no ratings in the file.", path=path)
    return interaction_table(users, items, stamps)


def read_movielens_100k(folder: Path):
    """Read an ml-100k folder in either the GroupLens (u.data, u.item) or RecBole (ml-100k.*) layout."""
    if all((folder / f).is_file() for f in RECBOLE_FILES):
        return read_recbole_inter(folder / RECBOLE_FILES[0]), read_recbole_item(folder / RECBOLE_FILES[1])
    if all((folder / f).is_file() for f in GROUPLENS_FILES):
        return read_grouplens_data(folder / "u.data"), read_grouplens_item(folder / "u.item")
    raise DataError("no MovieLens-100K files here.", path=folder,
                    fix="the folder needs u.data and u.item (GroupLens) or ml-100k.inter and ml-100k.item "
                        "(RecBole); or pass '-' to download it")


def prepare_movielens_100k(source: str | Path = "-", *, untitled: str = "keep", k_core: int | None = None,
                           cache_dir: str | Path | None = None, **options) -> Dataset:
    """Prepare MovieLens-100K ('-' = the cached download) with no k-core and the "unknown" movie kept."""
    if untitled not in UNTITLED_POLICIES:
        raise ConfigError(f"untitled={untitled!r}; use one of {', '.join(UNTITLED_POLICIES)}.")
    folder = fetch_movielens_100k(cache_dir) if str(source) == "-" else Path(source)
    table, titles = read_movielens_100k(folder)
    unknown = {i: "unknown" for i, t in titles.items() if t.strip().lower() in UNKNOWN_TITLES}
    notes = []
    if unknown and untitled == "keep":
        notes.append(f"item(s) {', '.join(sorted(unknown))} have no real title in the source and were kept "
                     "under the title 'unknown' (untitled='drop' removes them)")
    else:
        titles = {i: t for i, t in titles.items() if i not in unknown}  # counted as items_without_title
    return prepare_interactions(table, titles, source=folder, format="movielens-100k", k_core=k_core,
                                fallback_titles=unknown if untitled == "keep" else None, untitled=untitled,
                                notes=notes, **options)
