"""Every raw reader fed arbitrary bytes (valid UTF-8 or not, gzipped or not, cut short): it returns data or raises a
DataError naming the file, never another exception (a UnicodeDecodeError, an EOFError, a csv or pandas error)."""
from __future__ import annotations

import gzip
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bearrec.data.bear_csv import read_catalog, read_rows
from bearrec.data.movielens import read_grouplens_data, read_grouplens_item
from bearrec.data.raw_logs import read_amazon_meta, read_amazon_reviews, read_recbole_inter, read_recbole_item
from bearrec.errors import DataError

READERS = {
    "amazon reviews": (read_amazon_reviews, "reviews.json"),
    "amazon meta": (read_amazon_meta, "meta_x.json"),
    "recbole .inter": (read_recbole_inter, "x.inter"),
    "recbole .item": (read_recbole_item, "x.item"),
    "bear-csv catalog": (read_catalog, "id2name4Rec.json"),
    "bear-csv rows": (lambda p: read_rows(p, {"1": "a", "2": "b"}, "error", Counter()), "train.csv"),
    "movielens u.data": (read_grouplens_data, "u.data"),
    "movielens u.item": (read_grouplens_item, "u.item"),
}
# Shapes that get past each reader's first checks, so that the random bytes land inside rows too.
PREFIXES = [b"", b'{"reviewerID": "u", "asin": "a", "unixReviewTime": 1}\n', b"user_id:token\titem_id:token\t"
            b"timestamp:float\n", b"item_id:token\ttitle:token_seq\n", b"user_id,item_ids,timestamp\n1,\"['1', '2']\",",
            "caf\u00e9 \u2013 ".encode()]


def _read(reader, path: Path) -> None:
    try:
        reader(path)
    except DataError as e:
        assert str(path) in str(e) or path.name in str(e), f"{e} does not name {path}"


@pytest.mark.parametrize("name", READERS)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(prefix=st.sampled_from(PREFIXES), body=st.one_of(st.binary(max_size=200),
                                                        st.text(max_size=120).map(lambda t: t.encode("utf-8"))),
       gz=st.booleans(), cut=st.integers(min_value=0, max_value=40))
def test_random_bytes_give_data_or_a_data_error(tmp_path_factory, name, prefix, body, gz, cut):
    reader, filename = READERS[name]
    data = prefix + body
    path = tmp_path_factory.mktemp("raw") / (filename + (".gz" if gz else ""))
    if gz:
        packed = gzip.compress(data)
        path.write_bytes(packed[:max(len(packed) - cut, 1)] if cut else packed)  # a truncated download
    else:
        path.write_bytes(data)
    _read(reader, path)


def test_a_latin1_file_names_the_line_the_byte_and_the_fix(tmp_path):
    path = tmp_path / "x.item"
    path.write_bytes("item_id:token\ttitle:token_seq\n1\tok\n2\tcaf\u00e9\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"x\.item, line 3: is not UTF-8 text: byte 0xe9 at column 6.*Fix: save it as "
                                        "UTF-8"):
        read_recbole_item(path)


def test_a_truncated_gzip_names_the_file_and_the_fix(tmp_path):
    path = tmp_path / "reviews.json.gz"
    path.write_bytes(gzip.compress(b'{"reviewerID": "u", "asin": "a", "unixReviewTime": 1}\n' * 50)[:-12])
    with pytest.raises(DataError, match=r"reviews\.json\.gz.*damaged or truncated gzip.*Fix: download"):
        read_amazon_reviews(path)
