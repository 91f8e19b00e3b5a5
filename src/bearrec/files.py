"""Atomic file output, JSON Lines helpers and file digests: an interrupted job never leaves a half-written file, and a
file that changed under a run is named instead of used."""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator

from .errors import DataError


def refuse_folder(path: str | os.PathLike) -> None:
    """DataError when an output file's path is a folder (checked before any work, not after it)."""
    if Path(path).is_dir():
        raise DataError("is a folder, so a file cannot be written there.", path=path,
                        fix="give a file name (the output is one file)")


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", **kwargs: Any) -> Iterator[Any]:
    """Open a temporary file beside `path`; rename it over `path` only if the block succeeds."""
    path = Path(path)
    refuse_folder(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except (FileExistsError, NotADirectoryError):
        raise DataError("cannot be written: a part of its folder path is a file.", path=path,
                        fix="choose an output path inside a folder") from None
    except PermissionError:
        raise DataError("cannot be written: permission denied in its folder.", path=path,
                        fix="choose a folder you can write to, or change its permissions") from None
    os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes the file private (0600): honour the umask like open() does
    os.close(fd)
    try:
        with open(tmp, mode, **kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    """The process's umask (read by setting and restoring it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def strict_json(obj: Any) -> Any:
    """`obj` with every NaN or infinite float replaced by None, so the file is valid JSON (NaN is not)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict_json(v) for v in obj]
    return obj


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write `obj` as indented, strict JSON (NaN and infinities become null), atomically."""
    with atomic_open(path, "w", encoding="utf-8") as f:
        json.dump(strict_json(obj), f, indent=2, ensure_ascii=False, allow_nan=False)
        f.write("\n")


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> int:
    """Write one JSON object per line, atomically; return the number of rows."""
    n = 0
    with atomic_open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False))
            f.write("\n")
            n += 1
    return n


def jsonl_objects(path: str | os.PathLike, data: bytes, *, fix_encoding: str = "save it as UTF-8 JSON Lines"
                  ) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each non-blank line of a JSON Lines file already read as `data`; a malformed
    line raises DataError naming the file and the line."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError("is not UTF-8 text.", path=path, line=data[:e.start].count(b"\n") + 1,
                        fix=fix_encoding) from None
    for lineno, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"not valid JSON ({e.msg} at column {e.colno}).", path=path, line=lineno,
                            fix="each line must hold one JSON object") from None
        if not isinstance(obj, dict):
            raise DataError("expected a JSON object.", path=path, line=lineno)
        yield lineno, obj


def read_jsonl(path: str | os.PathLike, *, with_lines: bool = False) -> Iterator[Any]:
    """Yield the objects of a JSON Lines file (with their line numbers: (line, obj)); a malformed line raises
    DataError naming it. Blank lines are skipped."""
    try:
        data = Path(path).read_bytes()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise DataError("no such file.", path=path, fix="check the path") from None
    for lineno, obj in jsonl_objects(path, data):
        yield (lineno, obj) if with_lines else obj


def read_json_file(path: str | os.PathLike, expected: type = dict, fix: str = "re-run the command that wrote it"
                   ) -> Any:
    """One JSON file, with a DataError naming it when it is missing, not JSON, or not of the `expected` type."""
    try:
        with open(path, encoding="utf-8") as f:
            obj = json.load(f)
    except FileNotFoundError:
        raise DataError("is missing.", path=path, fix=fix) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"is not valid JSON ({getattr(e, 'msg', e)}).", path=path, fix=fix) from None
    if not isinstance(obj, expected):
        raise DataError(f"should hold a JSON {expected.__name__}.", path=path, fix=fix)
    return obj


# Set to 1 to skip the SHA-256 check of model files on load (it reads every byte once; see docs/benchmarks.md).
SKIP_VERIFY_ENV = "BEARREC_SKIP_VERIFY"


def file_digest(path: str | os.PathLike) -> dict[str, Any]:
    """{"size": bytes, "sha256": hex} of one file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return {"size": os.path.getsize(path), "sha256": h.hexdigest()}


def verify_digest(path: Path, want: dict[str, Any], fix: str) -> None:
    """DataError naming `path` when it is missing, or its size or SHA-256 differs from `want`."""
    if not path.is_file():
        raise DataError("is missing.", path=path, fix=fix)
    size = path.stat().st_size
    if size != want.get("size"):
        raise DataError(f"has {size} bytes, but {want.get('size')} were written (truncated or replaced).",
                        path=path, fix=fix)
    if file_digest(path)["sha256"] != want.get("sha256"):
        raise DataError("does not have the SHA-256 recorded when it was written (corrupted or replaced).",
                        path=path, fix=fix)


def verification_skipped() -> bool:
    """Whether the user asked, explicitly, to skip the checksum of model files (BEARREC_SKIP_VERIFY=1)."""
    return os.environ.get(SKIP_VERIFY_ENV, "").strip().lower() in ("1", "true", "yes")
