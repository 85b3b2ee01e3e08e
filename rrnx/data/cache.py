"""The parse cache: a ratings source is parsed once, then loaded from `<cache_dir>/<key>.parquet`.

The key is the sha256 of the source's content (for a directory, each relevant file's name and content,
in sorted order) and of the reader settings, so an edited file or a changed setting is a miss, never a
stale hit. Writes go to a temp file in the cache directory and are then renamed over the final name, so a
killed run leaves at worst a `.tmp` file that no later run reads; an unreadable cache file is rebuilt.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import tempfile
import warnings
from pathlib import Path

import pandas as pd

from rrnx.data import readers
from rrnx.errors import DataError

HASH_BLOCK_BYTES = 8 * 2**20


def default_cache_dir() -> Path:
    """$RRNX_CACHE if set, else ~/.cache/rrnx."""
    configured = os.environ.get("RRNX_CACHE")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "rrnx"


def cache_key(path, format: str, columns: dict | None, sep: str | None, scale) -> str:
    """sha256 of the source content and the reader settings; `format` must already be resolved."""
    path = Path(path)
    digest = hashlib.sha256()
    settings = {"format": format, "columns": columns, "sep": sep, "scale": list(scale) if scale else None}
    digest.update(json.dumps(settings, sort_keys=True).encode())
    for file in sorted(readers.source_files(path, format), key=lambda f: f.name):
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode() + b"\0")
        with open(file, "rb") as handle:
            while block := handle.read(HASH_BLOCK_BYTES):
                digest.update(block)
        digest.update(b"\0")
    return digest.hexdigest()


def resolve_source_file(path, format: str = "auto") -> tuple[Path, str]:
    """The ratings path on this machine (`rrnx:NAME` resolved) and its format (`auto` detected)."""
    from rrnx.data.sources import resolve_path

    path = resolve_path(path)
    if format not in readers.FORMATS + ("auto",):
        raise DataError(f"unknown format '{format}'; valid formats: auto, {', '.join(readers.FORMATS)}")
    if not path.exists():
        raise DataError(f"{path}: no such file or directory")
    return path, readers.detect_format(path) if format == "auto" else format


def source_key(path, format="auto", columns=None, sep=None, scale=None) -> str:
    """The parse-cache key of a source as load_ratings computes it (the prepared-data cache builds on it)."""
    path, format = resolve_source_file(path, format)
    return cache_key(path, format, columns, sep, scale)


def load_ratings(path, format="auto", columns=None, sep=None, scale=None, cache_dir=None,
                 progress=True, key: str | None = None) -> pd.DataFrame:
    """read_ratings with a cache: the same source and settings parse once (the canonical table either way).
    `key`: source_key() of the same arguments when the caller has it (hashing a large file twice costs seconds)."""
    path, format = resolve_source_file(path, format)
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    cached = cache_dir / f"{key or cache_key(path, format, columns, sep, scale)}.parquet"
    table = _read_cached(cached)
    if table is not None:
        return table
    table = readers.read_ratings(path, format=format, columns=columns, sep=sep, scale=scale, progress=progress)
    release_heap_memory()
    _write_atomic(table, cached)
    return table


def read_parquet(path) -> pd.DataFrame:
    """pd.read_parquet, then arrow's memory pool hands the buffers it converted from back to the system:
    mimalloc keeps them otherwise, and Netflix full's 2.6 GiB table then holds 6.1 GiB resident."""
    table = pd.read_parquet(path)
    release_arrow_memory()
    return table


def release_heap_memory() -> bool:
    """Hand the free pages of glibc's heap back to the system (malloc_trim; a no-op without glibc). A
    parse's chunk columns (about 10 MB each, below glibc's mmap threshold once it has adapted) come from the heap,
    and freed they stay resident: after parsing Netflix's 100M-rating text the process held 5.2 GiB for a
    2.6 GiB table, 3.1 GiB once trimmed (scripts/prep_memory.py --netflix-text). Returns whether it ran."""
    try:
        return bool(ctypes.CDLL("libc.so.6").malloc_trim(0))
    except (OSError, AttributeError):
        return False


def release_arrow_memory() -> None:
    """Return the unused part of pyarrow's memory pool (after a parquet read or write) to the system."""
    import pyarrow

    pyarrow.default_memory_pool().release_unused()


def _read_cached(cached: Path) -> pd.DataFrame | None:
    if not cached.is_file():
        return None
    try:
        table = read_parquet(cached)
    except Exception as error:  # any unreadable cache file is only a miss
        warnings.warn(f"ignoring unreadable cache file {cached} ({error}); rebuilding it", stacklevel=3)
        return None
    if list(table.columns) != list(readers.CANONICAL_COLUMNS) or not _canonical_types(table):
        warnings.warn(f"ignoring cache file {cached}: not the canonical columns and types; rebuilding it",
                      stacklevel=3)
        return None
    return table


def _canonical_types(table: pd.DataFrame) -> bool:
    """user/item int64 or str, rating float32, timestamp int64: what the readers write."""
    ids_ok = all(table[c].dtype == "int64" or pd.api.types.is_object_dtype(table[c])
                 or pd.api.types.is_string_dtype(table[c]) for c in ("user", "item"))
    return ids_ok and table["rating"].dtype == "float32" and table["timestamp"].dtype == "int64"


def _write_atomic(table: pd.DataFrame, cached: Path) -> None:
    """Write next to the final name, then rename: readers see the old file, the new one, or none.
    A cache that cannot be written (no space, no permission) costs speed, never the run."""
    written = write_atomic(cached, lambda temp: table.to_parquet(temp, index=False))
    release_arrow_memory()
    if not written:
        warnings.warn(f"cannot write the parse cache in {cached.parent}; the next run parses the file again",
                      stacklevel=3)


def write_atomic(path: Path, write) -> bool:
    """`write(temp)` into a temp file next to `path`, then rename it over `path`; False (and nothing
    left behind) when the file system refuses, e.g. ENOSPC or EACCES, or the writer fails."""
    temp_name = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(handle)
        write(temp_name)
        os.replace(temp_name, path)
        return True
    except OSError:
        return False
    finally:
        if temp_name is not None and os.path.exists(temp_name):
            os.remove(temp_name)
