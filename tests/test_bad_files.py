"""Bad ratings files and a bad cache (issue 13): each is one clear error naming file and line, or a
documented policy, never a wrong number; file content in messages is a short printable excerpt."""

from __future__ import annotations

import errno
import warnings

import numpy as np
import pandas as pd
import pytest

from conftest import ratings_frame
from rrnx.data import cache
from rrnx.data.cache import load_ratings
from rrnx.data.readers import EXCERPT_CHARS, read_ratings
from rrnx.data.split import format_summary, keep_last_rating, time_split
from rrnx.errors import DataError


def write_lines(path, lines: list[bytes]):
    path.write_bytes(b"\n".join([b"user,item,rating,timestamp", *lines]) + b"\n")
    return path


GOOD = b"1,2,4,1262304000"


@pytest.mark.parametrize("bad, message", [
    (b"1,2,inf,1262304000", r"bad.csv:3: rating inf is not a finite number"),
    (b"1,2,-inf,1262304000", r"bad.csv:3: rating -inf is not a finite number"),
    (b"1,2,4,1262304000000", r"bad.csv:3: timestamp 1262304000000 .*looks like milliseconds"),
    (b"1,2,4,-5", r"bad.csv:3: timestamp -5 is outside 1970-01-01"),
    (b"1,2,\xff\xfe,1262304000", r"bad.csv:3: not UTF-8 text: '1,2,\\xff\\xfe,1262304000'"),
    (b"1,2," + b"x" * 1_000_000 + b",1262304000", r"bad.csv:3: rating 'x{60}\.\.\. \(1,000,000 characters\)'"),
])
def test_a_bad_value_is_one_line_naming_file_and_line(tmp_path, bad, message):
    path = write_lines(tmp_path / "bad.csv", [GOOD, bad, GOOD])
    with pytest.raises(DataError, match=message) as error:
        read_ratings(path, progress=False)
    assert "\n" not in str(error.value) and len(str(error.value)) < 300


@pytest.mark.parametrize("format", ["auto", "csv", "movielens", "movietweetings", "netflix"])
def test_a_binary_file_is_refused_in_one_short_line(tmp_path, format):
    path = tmp_path / "ratings.dat"
    path.write_bytes(bytes(range(256)) * 100)
    with pytest.raises(DataError) as error:
        read_ratings(path, format=format, progress=False)
    text = str(error.value)
    assert "ratings.dat" in text and "\n" not in text and len(text) < 400
    assert "\x00" not in text and "\x1f" not in text  # control bytes are escaped, never printed raw



def test_a_parquet_file_read_as_csv_is_one_line(tmp_path):
    """Its header line was listed as 1,254 characters of column names, or (with a carriage return in it) the csv
    module's header reader raised: a traceback."""
    path = tmp_path / "ratings.parquet"
    pd.DataFrame({"user": [1, 2], "item": [3, 4], "rating": [5.0, 4.0], "timestamp": [10, 20]}).to_parquet(path)
    with pytest.raises(DataError) as error:
        read_ratings(path, format="csv", progress=False)
    text = str(error.value)
    assert text.startswith("ratings.parquet:1: a NUL byte: this is a binary file") and "\n" not in text
    assert len(text) < 400
    carriage = tmp_path / "cr.csv"
    carriage.write_bytes(b"user,item\r,rating,timestamp\n1,2,3,4\n")
    with pytest.raises(DataError, match=r"^cr.csv:1: not a ','-separated text header"):
        read_ratings(carriage, format="csv", progress=False)


def test_a_columns_mapping_written_without_spaces_gets_a_hint(tmp_path):
    """--data.columns={user:uid} is one YAML key, 'user:uid', with no value: the error now says so."""
    path = tmp_path / "r.csv"
    path.write_text("uid,mid,stars,ts\n1,2,3,4\n")
    with pytest.raises(DataError, match="write a space after each colon"):
        read_ratings(path, format="csv", columns={"user:uid": None, "item:mid": None}, progress=False)


def test_a_file_with_another_separator_gets_a_hint(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text("user;item;rating;timestamp\n1;2;3;4\n")
    with pytest.raises(DataError, match="looks ';'-separated: set data.sep"):
        read_ratings(path, format="csv", progress=False)
    assert len(read_ratings(path, format="csv", sep=";", progress=False)) == 1

def test_file_content_in_messages_is_cut_to_a_printable_excerpt(tmp_path):
    secret = "SECRET=" + "s" * 500
    path = tmp_path / "environ"
    path.write_bytes(("\0".join(["SHELL=/bin/bash", "HOME=/root", secret])).encode())
    with pytest.raises(DataError) as error:
        read_ratings(path, progress=False)
    assert "s" * (EXCERPT_CHARS + 1) not in str(error.value) and "\\x00" in str(error.value)


def test_duplicates_keep_the_latest_rating_and_are_counted():
    frame = pd.DataFrame({"user": [1, 1, 2, 1, 1], "item": [5, 5, 5, 6, 5], "rating": [1., 2., 3., 4., 5.],
                          "timestamp": [10, 30, 10, 10, 20]})
    kept, dropped = keep_last_rating(frame)
    assert dropped == 2
    assert kept.sort_values(["user", "item"])["rating"].tolist() == [2.0, 4.0, 3.0]  # (1,5) keeps t=30
    ratings = ratings_frame()
    ratings = ratings.drop_duplicates(["user", "item"])
    doubled = pd.concat([ratings, ratings.iloc[:7].assign(rating=1.0, timestamp=ratings["timestamp"].min())])
    split = time_split(doubled, "2010-04-01")
    assert split.summary["duplicates_dropped"] == 7
    assert split.summary == {**time_split(ratings, "2010-04-01").summary, "duplicates_dropped": 7}
    assert "7 earlier ratings" in format_summary(split.summary)


def test_a_cache_that_cannot_be_written_costs_speed_not_the_run(tmp_path, monkeypatch):
    path = write_lines(tmp_path / "ok.csv", [GOOD, b"2,3,5,1262305000"])

    def full_disk(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", full_disk)
    with pytest.warns(UserWarning, match="cannot write the parse cache"):
        table = load_ratings(path, cache_dir=tmp_path / "cache", progress=False)
    assert len(table) == 2
    assert list((tmp_path / "cache").iterdir()) == []  # no temp file left behind


def test_a_cache_file_of_the_wrong_types_is_rebuilt(tmp_path):
    path = write_lines(tmp_path / "ok.csv", [GOOD, b"2,3,5,1262305000"])
    table = load_ratings(path, cache_dir=tmp_path / "cache", progress=False)
    (cached,) = (tmp_path / "cache").glob("*.parquet")
    table.astype({"rating": "str", "timestamp": "float64"}).to_parquet(cached, index=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again = load_ratings(path, cache_dir=tmp_path / "cache", progress=False)
    assert any("canonical columns and types" in str(w.message) for w in caught)
    pd.testing.assert_frame_equal(again, table)
    assert pd.read_parquet(cached)["rating"].dtype == np.float32  # the rebuilt file replaced the bad one


def test_cache_write_helper_leaves_nothing_on_failure(tmp_path):
    def fail(temp):
        open(temp, "w").write("half")
        raise OSError(errno.ENOSPC, "No space left on device")

    assert not cache.write_atomic(tmp_path / "x.parquet", fail)
    assert list(tmp_path.iterdir()) == []
