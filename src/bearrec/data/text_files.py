"""Raw text files read line by line: UTF-8 (a BOM is skipped), gzip decompressed on the fly, and every failure a
DataError naming the file and the line, never a UnicodeDecodeError or an EOFError."""
from __future__ import annotations

import gzip
import io
import re
import zlib
from pathlib import Path
from typing import Iterator

from ..errors import DataError

# surrogateescape decodes each byte that is not UTF-8 to one lone surrogate U+DC80..U+DCFF: found after the fact,
# it names the line and the column of the first bad byte.
_UNDECODED = re.compile("[\udc80-\udcff]")


def text_lines(path: Path, *, newline: str | None = None, start: int = 1) -> Iterator[tuple[int, str]]:
    """(line number, text) of every line of `path`. `newline` as in `open` ("" keeps line endings, for csv)."""
    with open(path, "rb") as f:
        gzipped = f.read(2) == b"\x1f\x8b"  # gzip's magic number, whatever the file is called
    fix_encoding = ("save it as UTF-8 (e.g. `iconv -f latin1 -t utf-8 FILE > FILE.utf8` when it is Latin-1)")
    try:
        binary = gzip.open(path, "rb") if gzipped else open(path, "rb")
        with io.TextIOWrapper(binary, encoding="utf-8-sig", errors="surrogateescape", newline=newline) as handle:
            for lineno, line in enumerate(handle, start=start):
                bad = _UNDECODED.search(line)
                if bad is not None:
                    byte = ord(bad.group()) - 0xDC00
                    raise DataError(f"is not UTF-8 text: byte 0x{byte:02x} at column {bad.start() + 1}.", path=path,
                                    line=lineno, fix=fix_encoding)
                yield lineno, line
    except (EOFError, zlib.error, gzip.BadGzipFile) as e:
        if not gzipped:
            raise
        raise DataError(f"is a damaged or truncated gzip file ({type(e).__name__}: {e}).", path=path,
                        fix="download or compress it again, and check its size against the source's") from None
