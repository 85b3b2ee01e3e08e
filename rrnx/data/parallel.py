"""The preparation's threads: chunked numpy work (searchsorted, gathers, einsum, elementwise maths all
release the GIL) spread over the CPUs this process may use. Every call writes its own slice of the
output, so the result is the serial one, bit for bit; only the time changes."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable

import numpy as np

from rrnx.threads import allowed_cpus

MAX_WORKERS = 8
CHUNK = 1 << 22  # elements per task: large enough to hide the thread hand-off, small enough to balance


def workers() -> int:
    return max(1, min(len(allowed_cpus()), MAX_WORKERS))


def each(fn: Callable, items: Iterable) -> None:
    """fn(item) for every item, on `workers()` threads; the first exception is raised here."""
    items = list(items)
    n = min(workers(), len(items))
    if n <= 1:
        for item in items:
            fn(item)
        return
    with ThreadPoolExecutor(n) as pool:
        for _ in pool.map(fn, items):
            pass


def take(values, index, dtype=None, chunk: int = CHUNK, fn: Callable | None = None):
    """values[index] (or fn(values[index]), elementwise), cast to `dtype` (e.g. int64), gathered chunk by
    chunk on `workers()` threads straight into the result: no whole-size temporaries."""
    out = np.empty(len(index), dtype=dtype or values.dtype)

    def gather(lo):
        picked = values[index[lo:lo + chunk]]
        out[lo:lo + chunk] = picked if fn is None else fn(picked)

    each(gather, range(0, len(index), chunk))
    return out


def compress(columns: list, mask: np.ndarray, chunk: int = CHUNK) -> list:
    """[values[mask] for values in columns], chunk by chunk on `workers()` threads: each chunk's rows land
    at the offset the chunks before it fill, so the rows keep their order."""
    starts = range(0, len(mask), chunk)
    counts = np.zeros(len(starts) + 1, dtype=np.int64)

    def count(k):
        counts[k + 1] = np.count_nonzero(mask[starts[k]:starts[k] + chunk])

    each(count, range(len(starts)))
    offsets = np.cumsum(counts)
    out = [np.empty(int(offsets[-1]), dtype=values.dtype) for values in columns]

    def copy(k):
        lo, keep = starts[k], mask[starts[k]:starts[k] + chunk]
        for values, kept in zip(columns, out):
            kept[offsets[k]:offsets[k + 1]] = values[lo:lo + chunk][keep]

    each(copy, range(len(starts)))
    return out


def scatter(out: np.ndarray, index: np.ndarray, values: np.ndarray, chunk: int = CHUNK) -> None:
    """out[index] = values for an `index` without repeats (a permutation), chunk by chunk on `workers()`
    threads: no two chunks write the same element."""
    def put(lo):
        out[index[lo:lo + chunk]] = values[lo:lo + chunk]

    each(put, range(0, len(index), chunk))

