"""Ratings readers: Netflix Prize, MovieLens, MovieTweetings, generic CSV / Parquet -> the canonical table.

The canonical table has the columns ``user, item, rating, timestamp`` in that order: the file's own ids
(int64 when every id is an integer, else str), float32 ratings, int64 unix seconds (UTC), rows in file order.

Text formats are parsed by pandas' C engine in chunks of whole lines, read with ``skip_blank_lines=False``
so that row ``i`` of a chunk is line ``i`` of it: a bad value found by a vectorised check is reported with
the file and 1-based line it came from, without a per-line Python loop on the happy path.
See docs/data-formats.md for the formats and the auto-detection rules.
"""

from __future__ import annotations

import csv
import gzip
import io
import zlib
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from rrnx.errors import DataError

FORMATS = ("netflix", "movielens", "movietweetings", "csv", "parquet")
DEFAULT_SCALES = {"netflix": (1.0, 5.0), "movielens": (0.5, 5.0), "movietweetings": (0.0, 10.0)}
CANONICAL_COLUMNS = ("user", "item", "rating", "timestamp")
PROGRESS_MIN_BYTES = 50 * 2**20  # below this, parsing takes about a second: no bar
CHUNK_BYTES = 32 * 2**20
MOVIELENS_FILES = ("ratings.csv", "ratings.dat", "u.data")
MOVIELENS_CSV_HEADER = ["userId", "movieId", "rating", "timestamp"]
NETFLIX_HEADER = re.compile(rb"^\s*\d+:\s*$")
EXCERPT_CHARS = 60  # file content quoted in a message is cut to this many printable characters
# Unix seconds from 1970-01-01 up to 2200-01-01: a rating outside is a unit mistake (milliseconds,
# microseconds) or a sign error, not a date anyone rated a film on.
MAX_UNIX_SECONDS = 7_258_118_400


def excerpt(value, limit: int = EXCERPT_CHARS) -> str:
    """A short printable excerpt of file content for a message: bytes decoded leniently, control and
    non-printable characters escaped, cut to `limit` characters with the length that was left out."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "backslashreplace")
    text = str(value)
    shown = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text[:limit])
    if len(shown) > limit:
        shown = shown[:limit]
    return shown + (f"... ({len(text):,} characters)" if len(text) > limit else "")


@dataclass
class _Text:
    """The bytes of one or more text files, with where each file and each parsed chunk starts."""

    data: bytes
    files: list[tuple[Path, int]]  # (file, index of its first line in `data`)
    chunks: list[tuple[int, int, int]] = field(default_factory=list)  # (first byte, end byte, first line index)

    def where(self, line_index: int) -> str:
        """`name:line` (1-based, as in an editor) of a global 0-based line index."""
        path, first = next((p, f) for p, f in reversed(self.files) if f <= line_index)
        return f"{path.name}:{line_index - first + 1}"

    def line(self, line_index: int) -> str:
        start, end, first = next(chunk for chunk in reversed(self.chunks) if chunk[2] <= line_index)
        lines = self.data[start:end].split(b"\n", line_index - first + 1)
        return excerpt(lines[line_index - first].rstrip(b"\r"))

    def fail(self, line_index: int, message: str) -> DataError:
        return DataError(f"{self.where(line_index)}: {message}")


def _read_text(paths: list[Path]) -> _Text:
    """Concatenate files (each ending in a newline) so that one parse covers a directory of many."""
    parts, files, line_count = [], [], 0
    for path in paths:
        content = _read_bytes(path)
        if b"\0" in content:
            line = content.count(b"\n", 0, content.index(b"\0")) + 1
            raise DataError(f"{path.name}:{line}: a NUL byte: this is a binary file, not a text ratings file")
        if content and not content.endswith(b"\n"):
            content += b"\n"
        files.append((path, line_count))
        line_count += content.count(b"\n")
        parts.append(content)
    return _Text(b"".join(parts), files)


def _read_bytes(path: Path) -> bytes:
    """The file's content; a `.gz` file's content decompressed (rrnx ships MovieTweetings gzipped)."""
    try:
        content = path.read_bytes()
        return gzip.decompress(content) if _is_gzip(path) else content
    except OSError as error:
        raise DataError(f"{path}: cannot read: {error.strerror or error}") from None
    except (EOFError, zlib.error) as error:  # a truncated or corrupt gzip stream
        raise DataError(f"{path}: not a readable gzip file ({excerpt(error, 200)})") from None


def _is_gzip(path: Path) -> bool:
    return path.name.lower().endswith(".gz")


def plain_name(path: Path) -> str:
    """The file name that says the format: `ratings.dat.gz` reads as `ratings.dat`."""
    name = path.name.lower()
    return name[:-3] if name.endswith(".gz") else name


def _head(path: Path, size: int) -> bytes:
    """The first `size` bytes of the (decompressed) file: what format detection looks at."""
    try:
        with (gzip.open(path, "rb") if _is_gzip(path) else open(path, "rb")) as handle:
            return handle.read(size)
    except (OSError, EOFError, zlib.error) as error:  # gzip.BadGzipFile is an OSError
        raise DataError(f"{path}: cannot read: {excerpt(getattr(error, 'strerror', None) or error, 200)}") from None


def _parse_chunks(text: _Text, parse_chunk: Callable[[bytes], pd.DataFrame], skip_lines: int, progress: bool,
                  layout: str) -> pd.DataFrame:
    """Parse `text` after its first `skip_lines` lines, chunk by chunk; one row per line (blank lines too),
    indexed by global line index."""
    frames = list(_iter_chunks(text, parse_chunk, skip_lines, progress, layout))
    return pd.concat(frames) if frames else pd.DataFrame()


def _iter_chunks(text: _Text, parse_chunk: Callable[[bytes], pd.DataFrame], skip_lines: int, progress: bool,
                 layout: str):
    """Each chunk of whole lines of `text` after its first `skip_lines` lines, parsed: one row per line
    (blank lines too), indexed by global line index."""
    data, start, line_index = text.data, 0, skip_lines
    for _ in range(skip_lines):
        start = data.index(b"\n", start) + 1
    show = progress and len(data) > PROGRESS_MIN_BYTES
    with tqdm(total=len(data), initial=start, unit="B", unit_scale=True, disable=not show, file=sys.stderr,
              desc=f"parsing {text.files[0][0].name}") as bar:
        while start < len(data):
            end = data.find(b"\n", min(start + CHUNK_BYTES, len(data) - 1))
            end = len(data) if end < 0 else end + 1
            chunk = data[start:end]
            text.chunks.append((start, end, line_index))
            frame = _parse_one(text, chunk, line_index, parse_chunk, layout)
            frame.index += line_index  # index = global line index
            line_index += chunk.count(b"\n") + (not chunk.endswith(b"\n"))
            bar.update(end - start)
            start = end
            yield frame


def _parse_one(text: _Text, chunk: bytes, first_line: int, parse_chunk, layout: str) -> pd.DataFrame:
    try:
        return parse_chunk(chunk)
    except UnicodeDecodeError:  # only this chunk's lines are decoded one by one, to name the bad one
        bad = next(i for i, line in enumerate(chunk.split(b"\n")) if not _is_utf8(line))
        raise text.fail(first_line + bad, f"not UTF-8 text: '{text.line(first_line + bad)}'; "
                        "re-encode the file as UTF-8") from None
    except pd.errors.ParserError as error:  # a line with too many fields
        found = re.search(r"in line (\d+)", str(error))
        if not found:
            raise DataError(f"{text.where(first_line)}: cannot parse: {excerpt(error, 200)}") from None
        raise _expected_fields(text, first_line + int(found.group(1)) - 1, layout) from None


def _is_utf8(line: bytes) -> bool:
    try:
        line.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _expected_fields(text: _Text, bad: int, layout: str) -> DataError:
    return text.fail(bad, f"expected '{layout}', got '{text.line(bad)}'")


def _first(mask: pd.Series) -> int | None:
    """Index label (= global line index) of the first True, or None."""
    hits = np.flatnonzero(mask.to_numpy())
    return None if len(hits) == 0 else int(mask.index[hits[0]])


# ---------------------------------------------------------------- values -> canonical columns


def _ids(values: pd.Series) -> pd.Series:
    """int64 when every id is an integer, else str (ids are kept as the file wrote them)."""
    if pd.api.types.is_integer_dtype(values):
        return values.astype("int64")
    if pd.api.types.is_float_dtype(values) and np.all(np.mod(values.to_numpy(), 1) == 0):
        return values.astype("int64")  # blank lines made the column float; ids were integers
    numbers = pd.to_numeric(values, errors="coerce")
    if numbers.notna().all() and (numbers % 1 == 0).all():
        return numbers.astype("int64")
    return values.astype(str)


def _ratings(values: pd.Series, where: Callable[[int], DataError], scale) -> pd.Series:
    numbers = pd.to_numeric(values, errors="coerce")
    bad = _first(numbers.isna())
    if bad is not None:
        raise where(bad, f"rating '{excerpt(values[bad])}' is not a number")
    bad = _first(~np.isfinite(numbers))
    if bad is not None:  # inf passes a missing scale and turns every RMSE into NaN
        raise where(bad, f"rating {float(numbers[bad])} is not a finite number")
    if scale is not None:
        low, high = scale
        bad = _first((numbers < low) | (numbers > high))
        if bad is not None:
            raise where(bad, f"rating {float(numbers[bad])} outside the declared scale {low:g}..{high:g}")
    return numbers.astype("float32")


def _unix_seconds(values: pd.Series, where, allow_dates: bool) -> pd.Series:
    """Unix seconds from numbers, or (when `allow_dates`) from date/datetime strings, naive ones taken as UTC;
    a time before 1970 or after 2200 is an error (milliseconds given for seconds, or a sign error)."""
    seconds = _any_unix_seconds(values, where, allow_dates)
    bad = _first((seconds < 0) | (seconds >= MAX_UNIX_SECONDS))
    if bad is not None:
        value = int(seconds[bad])
        hint = ("; it looks like milliseconds: rrnx reads unix seconds" if value >= MAX_UNIX_SECONDS
                else "; rrnx reads unix seconds from 1970-01-01 on")
        raise where(bad, f"timestamp {value} is outside 1970-01-01..2200-01-01{hint}")
    return seconds


def _any_unix_seconds(values: pd.Series, where, allow_dates: bool) -> pd.Series:
    if pd.api.types.is_datetime64_any_dtype(values):
        return _datetimes_to_seconds(values)
    numbers = pd.to_numeric(values, errors="coerce")
    if pd.api.types.is_integer_dtype(numbers):
        return numbers.astype("int64")
    if numbers.notna().all():
        return np.floor(numbers).astype("int64")
    if not allow_dates:
        bad = _first(numbers.isna())
        raise where(bad, f"timestamp '{excerpt(values[bad])}' is not a number of unix seconds")
    as_text = values.astype(str)
    dates = pd.to_datetime(as_text, utc=True, errors="coerce", format="ISO8601")
    if dates.isna().any():
        dates = dates.fillna(pd.to_datetime(as_text.where(dates.isna()), utc=True, errors="coerce", format="mixed"))
    bad = _first(dates.isna())
    if bad is not None:
        raise where(bad, f"timestamp '{excerpt(values[bad])}' is neither unix seconds nor a date")
    return _datetimes_to_seconds(dates)


def _datetimes_to_seconds(dates: pd.Series) -> pd.Series:
    if dates.dt.tz is None:
        dates = dates.dt.tz_localize("UTC")
    return ((dates - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)).astype("int64")


def _canonical(user, item, rating, timestamp) -> pd.DataFrame:
    columns = {"user": _ids(user), "item": _ids(item), "rating": rating, "timestamp": timestamp}
    return pd.DataFrame({name: values.to_numpy() for name, values in columns.items()})


# ---------------------------------------------------------------- delimited text (MovieLens, MovieTweetings, CSV)


def _read_delimited(text: _Text, sep: str, names: list[str], header_lines: int, progress: bool, layout: str,
                    quoting: int = csv.QUOTE_NONE) -> pd.DataFrame:
    """One row per line after the header; `::` becomes one byte so that the C engine can split it."""
    wide = len(sep) > 1
    single = next((c for c in ("\t", "\x1f", "\x1e") if c.encode() not in text.data), None) if wide else sep
    if single is None:
        raise DataError(f"{text.files[0][0].name}: holds the control bytes TAB, 0x1f and 0x1e: "
                        f"not a '{layout}' text file")

    def parse_chunk(chunk: bytes) -> pd.DataFrame:
        if wide:
            chunk = chunk.replace(sep.encode(), single.encode())
        return pd.read_csv(io.BytesIO(chunk), sep=single, header=None, names=names, skip_blank_lines=False,
                           quoting=quoting, engine="c", keep_default_na=False, na_values=[""])

    frame = _parse_chunks(text, parse_chunk, header_lines, progress, layout)
    if frame.empty:
        return frame
    blank = frame.isna().all(axis=1)
    return frame[~blank]


def _check_complete(frame: pd.DataFrame, text: _Text, layout: str) -> None:
    bad = _first(frame.isna().any(axis=1))
    if bad is not None:
        raise _expected_fields(text, bad, layout)


def _text_reader(path: Path, sep: str, layout: str, header: bool, scale, progress) -> pd.DataFrame:
    text = _read_text([path])
    frame = _read_delimited(text, sep, list(CANONICAL_COLUMNS), int(header), progress, layout)
    if frame.empty:
        raise DataError(f"{path.name}: no ratings in the file (expected lines '{layout}')")
    _check_complete(frame, text, layout)
    where = text.fail
    return _canonical(frame["user"], frame["item"], _ratings(frame["rating"], where, scale),
                      _unix_seconds(frame["timestamp"], where, allow_dates=False))


def _movielens(path: Path, scale, progress) -> pd.DataFrame:
    path = _find_in_dir(path, MOVIELENS_FILES, "movielens")
    if plain_name(path).endswith(".csv"):
        _check_header(path, ",", MOVIELENS_CSV_HEADER)
        return _text_reader(path, ",", ",".join(MOVIELENS_CSV_HEADER), True, scale, progress)
    if plain_name(path).endswith(".dat"):
        return _text_reader(path, "::", "user::item::rating::timestamp", False, scale, progress)
    return _text_reader(path, "\t", "user\\titem\\trating\\ttimestamp", False, scale, progress)


def _movietweetings(path: Path, scale, progress) -> pd.DataFrame:
    path = _find_in_dir(path, ("ratings.dat",), "movietweetings")
    return _text_reader(path, "::", "user::item::rating::timestamp", False, scale, progress)


def _check_header(path: Path, sep: str, expected: list[str]) -> None:
    found = _header(path, sep)
    if found != expected:
        raise DataError(f"{path.name}:1: expected header '{sep.join(expected)}', got '{excerpt(sep.join(found))}'")


def _header(path: Path, sep: str) -> list[str]:
    raw = _head(path, 2**16).split(b"\n", 1)[0]
    if b"\0" in raw:  # as _read_text says of the whole file, before the header's garbage is listed as columns
        raise DataError(f"{path.name}:1: a NUL byte: this is a binary file, not a text ratings file")
    first = raw.decode("utf-8", "replace")
    if not first.strip():
        raise DataError(f"{path.name}:1: expected a header line naming the columns, got an empty line")
    try:
        return next(csv.reader([first.rstrip("\r\n")], delimiter=sep))
    except csv.Error as error:  # a stray carriage return: a binary file (parquet, gzip) read as csv
        raise DataError(f"{path.name}:1: not a '{sep}'-separated text header ({error}): "
                        f"'{excerpt(first)}'") from None


def _csv(path: Path, columns: dict | None, sep: str | None, scale, progress) -> pd.DataFrame:
    _require_file(path, "csv")
    sep = sep or ","
    header = _header(path, sep)
    mapping = _mapping(columns, header, path)
    text = _read_text([path])
    frame = _read_delimited(text, sep, header, 1, progress, sep.join(header), quoting=csv.QUOTE_MINIMAL)
    if frame.empty:
        raise DataError(f"{path.name}: no ratings in the file (only a header: {sep.join(header)})")
    frame = frame[[mapping[name] for name in CANONICAL_COLUMNS]]
    frame.columns = list(CANONICAL_COLUMNS)
    _check_complete(frame, text, sep.join(header))
    return _canonical(frame["user"], frame["item"], _ratings(frame["rating"], text.fail, scale),
                      _unix_seconds(frame["timestamp"], text.fail, allow_dates=True))


def _mapping(columns: dict | None, found: list[str], path: Path) -> dict[str, str]:
    """canonical name -> the file's column; names not mapped are looked up as themselves."""
    unknown = sorted(set(columns or {}) - set(CANONICAL_COLUMNS))
    if unknown:
        hint = ("; YAML reads {user:uid} as one key: write a space after each colon, {user: uid, item: mid}"
                if any(":" in str(name) for name in unknown) else "")
        raise DataError(f"columns: unknown canonical name(s) {unknown}; valid keys: {list(CANONICAL_COLUMNS)}{hint}")
    mapping = {name: (columns or {}).get(name, name) for name in CANONICAL_COLUMNS}
    missing = [f"{name}->{column!r}" for name, column in mapping.items() if column not in found]
    if missing:
        other = next((c for c in (";", "\t", "|") if len(found) == 1 and c in str(found[0])), None)
        fix = (f"the file looks {other!r}-separated: set data.sep (--data.sep='{other}')" if other else
               "pass columns={'user': ..., 'item': ..., 'rating': ..., 'timestamp': ...}")
        raise DataError(f"{path.name}: column(s) {', '.join(missing)} not in the file; "
                        f"its columns are {excerpt(found)}; {fix}")
    return mapping


def _parquet(path: Path, columns: dict | None, scale) -> pd.DataFrame:
    _require_file(path, "parquet")
    try:
        import pyarrow.parquet as pq

        found = pq.read_schema(path).names
    except Exception as error:  # pyarrow raises several types for a file that is not parquet
        raise DataError(f"{path.name}: not a readable parquet file ({excerpt(error, 200)})") from None
    mapping = _mapping(columns, found, path)
    frame = pd.read_parquet(path, columns=list(dict.fromkeys(mapping.values())))
    frame = pd.DataFrame({name: frame[mapping[name]].to_numpy() for name in CANONICAL_COLUMNS})
    if frame.empty:
        raise DataError(f"{path.name}: no ratings in the file")

    def where(row: int, message: str) -> DataError:
        return DataError(f"{path.name}: row {row + 1}: {message}")

    bad = _first(frame.isna().any(axis=1))
    if bad is not None:
        raise where(bad, f"missing value(s) in {frame.columns[frame.loc[bad].isna()].tolist()}")
    return _canonical(frame["user"], frame["item"], _ratings(frame["rating"], where, scale),
                      _unix_seconds(frame["timestamp"], where, allow_dates=True))


# ---------------------------------------------------------------- Netflix Prize


def netflix_files(path: Path) -> list[Path]:
    """The Netflix text files under `path`: mv_*.txt of training_set/, or combined_data_*.txt."""
    if path.is_file():
        return [path]
    for folder in (path / "training_set", path):
        movies = sorted(folder.glob("mv_*.txt")) if folder.is_dir() else []
        if movies:
            return movies
    combined = sorted(path.glob("combined_data_*.txt"))
    if combined:
        return combined
    raise DataError(f"{path}: no Netflix files; expected training_set/mv_*.txt or combined_data_*.txt")


def _netflix(path: Path, scale, progress) -> pd.DataFrame:
    """Chunk by chunk: each chunk's lines are checked and turned into numeric columns before the next is
    parsed, so only one chunk's strings (its dates) exist at a time. A 100M-rating file (2 GB, Netflix's
    full size) needed more than 24 GB when all lines were parsed first (the dates as 100M Python strings,
    then copied by a concat); this way the columns weigh 28 bytes a rating (docs/benchmarks.md)."""
    text = _read_text(netflix_files(path))
    layout = "CustomerID,Rating,YYYY-MM-DD' or 'MovieID:"
    parts, movie = [], np.nan  # movie: the last MovieID seen, carried into the next chunk
    for frame in _iter_chunks(text, _netflix_chunk, 0, progress, layout):
        columns, movie = _netflix_ratings(frame, movie, text, layout, scale)
        if columns is not None:
            parts.append(columns)
    if not parts:
        raise DataError(f"{text.files[0][0].name}: no ratings in the file (expected lines '{layout}')")
    text.data = b""  # every line is checked: the 2 GB of text are no longer needed for messages
    columns = {}
    for name in CANONICAL_COLUMNS:  # one column at a time, its chunks freed as it is joined
        chunks = [part.pop(name) for part in parts]
        columns[name] = _joined_ids(chunks) if name in ("user", "item") else np.concatenate(chunks)
        del chunks
    return pd.DataFrame(columns, copy=False)


def _netflix_chunk(chunk: bytes) -> pd.DataFrame:
    """One row per line; a `MovieID:` line gets a 4th field `:` so every id column stays numeric."""
    chunk = chunk.replace(b":\r\n", b":\n").replace(b":\n", b",,,:\n")
    return pd.read_csv(io.BytesIO(chunk), sep=",", header=None, names=["user", "rating", "date", "mark"],
                       skip_blank_lines=False, quoting=csv.QUOTE_NONE, engine="c",
                       keep_default_na=False, na_values=[""])


def _netflix_ratings(frame: pd.DataFrame, movie_before: float, text: _Text, layout: str, scale) -> tuple:
    """One chunk's ratings as {user, item, rating, timestamp} arrays (None when it holds none) and the
    last MovieID seen by its end; every line checked, a bad one named by file and line."""
    frame = frame[~frame.isna().all(axis=1)]
    if frame.empty:
        return None, movie_before
    is_movie = frame["mark"].notna()
    bad = _first(is_movie & ((frame["mark"] != ":") | frame["rating"].notna() | frame["date"].notna()))
    if bad is not None:
        raise _expected_fields(text, bad, layout)
    movie = pd.to_numeric(frame["user"].where(is_movie), errors="coerce")
    bad = _first(is_movie & movie.isna())
    if bad is not None:
        raise text.fail(bad, f"expected 'MovieID:' with a numeric id, got '{text.line(bad)}'")
    movie = movie.ffill().fillna(movie_before)
    last_movie = float(movie.iloc[-1])
    movie, ratings = movie[~is_movie], frame[~is_movie]
    if ratings.empty:
        return None, last_movie
    bad = _first(movie.isna())
    if bad is not None:
        raise text.fail(bad, f"expected a 'MovieID:' line before the first rating, got '{text.line(bad)}'")
    _check_complete(ratings.drop(columns="mark"), text, layout)
    dates = pd.to_datetime(ratings["date"], format="%Y-%m-%d", errors="coerce", utc=True)
    bad = _first(dates.isna())
    if bad is not None:
        raise text.fail(bad, f"date '{excerpt(ratings['date'][bad])}' is not YYYY-MM-DD")
    return {"user": _ids(ratings["user"]).to_numpy(), "item": _ids(movie).to_numpy(),
            "rating": _ratings(ratings["rating"], text.fail, scale).to_numpy(),
            "timestamp": _datetimes_to_seconds(dates).to_numpy()}, last_movie


def _joined_ids(chunks: list[np.ndarray]) -> np.ndarray:
    """The chunks' ids as one column: int64 when every chunk's are integers, else all as str (as _ids)."""
    if all(c.dtype == np.int64 for c in chunks):
        return np.concatenate(chunks)
    return np.concatenate([c.astype(str).astype(object) for c in chunks])


# ---------------------------------------------------------------- detection and dispatch


def _find_in_dir(path: Path, names: tuple[str, ...], format: str) -> Path:
    if path.is_file():
        return path
    for name in names:
        for candidate in (path / name, path / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    raise DataError(f"{path}: no {format} ratings file; expected one of {', '.join(names)} (or gzipped, .gz) "
                    f"in this directory")


def source_files(path, format: str) -> list[Path]:
    """The files the reader of `format` reads from `path`: the file itself, or the relevant files of a directory."""
    path = Path(path)
    if path.is_file():
        return [path]
    if format == "netflix":
        return netflix_files(path)
    if format in ("movielens", "movietweetings"):
        return [_find_in_dir(path, MOVIELENS_FILES if format == "movielens" else ("ratings.dat",), format)]
    _require_file(path, format)
    return [path]


def _require_file(path: Path, format: str) -> None:
    if not path.is_file():
        raise DataError(f"{path}: a {format} source must be a file, not a directory")


def _looks_like_movietweetings(path: Path) -> bool:
    """ratings.dat: MovieTweetings has 7-digit IMDb item ids and ratings above 5; MovieLens has neither."""
    lines = _head(path, 2**16).split(b"\n")[:-1] or [b""]
    fields = [line.strip().split(b"::") for line in lines if line.count(b"::") == 3]
    for _, item, rating, _ in fields:
        if len(item) >= 7 or _number(rating) > 5:
            return True
    return "tweet" in path.resolve().parent.name.lower()


def _number(raw: bytes) -> float:
    try:
        return float(raw)
    except ValueError:
        return float("nan")


def detect_format(path) -> str:
    """The format of `path` from its name and its first bytes; DataError when neither tells."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or directory")
    if path.is_dir():
        return _detect_dir(path)
    name = plain_name(path)
    first = _head(path, 4096).split(b"\n", 1)[0] + b"\n"
    if name.endswith(".parquet") or first.startswith(b"PAR1"):
        return "parquet"
    if name.startswith(("mv_", "combined_data")) or NETFLIX_HEADER.match(first):
        return "netflix"
    if first.count(b"::") == 3:
        return "movietweetings" if _looks_like_movietweetings(path) else "movielens"
    if name == "u.data" or (first.count(b"\t") == 3 and b"," not in first):
        return "movielens"
    if first.rstrip(b"\r\n").decode("utf-8", "replace").split(",") == MOVIELENS_CSV_HEADER:
        return "movielens"
    if name.endswith((".csv", ".tsv", ".txt")):
        return "csv"
    raise DataError(f"{path}: cannot tell the format from its name or first line '{excerpt(first.rstrip())}'; "
                    f"pass format= one of {', '.join(FORMATS)}")


def _detect_dir(path: Path) -> str:
    if (path / "training_set").is_dir() or any(path.glob("mv_*.txt")) or any(path.glob("combined_data_*.txt")):
        return "netflix"
    for name in MOVIELENS_FILES:
        for candidate in (path / name, path / f"{name}.gz"):
            if candidate.is_file():
                return detect_format(candidate)
    raise DataError(f"{path}: no ratings file found; expected one of training_set/mv_*.txt, combined_data_*.txt "
                    f"(netflix), {', '.join(MOVIELENS_FILES)} (movielens / movietweetings)")


def read_ratings(path, format: str = "auto", columns: dict | None = None, sep: str | None = None,
                 scale: tuple[float, float] | None = None, progress: bool = True) -> pd.DataFrame:
    """Read a ratings file or dataset directory into the canonical table (see module docstring);
    `rrnx:NAME` reads a data set shipped with rrnx."""
    from rrnx.data.sources import resolve_path

    path = resolve_path(path)
    if format not in FORMATS + ("auto",):
        raise DataError(f"unknown format '{format}'; valid formats: auto, {', '.join(FORMATS)}")
    if not path.exists():
        raise DataError(f"{path}: no such file or directory")
    format = detect_format(path) if format == "auto" else format
    scale = tuple(scale) if scale is not None else DEFAULT_SCALES.get(format)
    if format == "netflix":
        return _netflix(path, scale, progress)
    if format == "movielens":
        return _movielens(path, scale, progress)
    if format == "movietweetings":
        return _movietweetings(path, scale, progress)
    if format == "csv":
        return _csv(path, columns, sep, scale, progress)
    return _parquet(path, columns, scale)
