"""Stable orders of large integer keys, the preparation's sorts (the generator's pair de-duplication,
the bucketing's (entity, step) order), and the generator's subsample (`chosen_mask`).

`np.argsort(key, kind="stable")` on int64 runs numpy's timsort over the keys and their positions; an
unstable `np.sort` of one int64 per element runs numpy's SIMD quicksort (AVX-512 / AVX2). On 30M
random keys here: 4.8 s for the stable argsort, 0.19 s for the sort alone, 2.2 s with the packing and
unpacking around it (most of it filling fresh memory). `stable_order` packs each key with its position,
`key << bits | position`, sorts that once and unpacks both: the positions of equal keys come out
ascending, so the order is exactly the stable one. Where the packed value would not fit in int64 (or
a key is negative) it falls back to the stable argsort.
"""

from __future__ import annotations

import numpy as np


def index_dtype(bound: int) -> type:
    """int32 for indices below `bound` when they fit, else int64: the orders and positions here, and the
    per-rating index arrays of the step sequences (`other`, `other_row`; at Netflix-full scale int64
    would add 1.5 GiB to every run)."""
    return np.int32 if bound <= np.iinfo(np.int32).max else np.int64


def stable_order(key: np.ndarray, consume: bool = False, dtype=np.int64) -> tuple[np.ndarray, np.ndarray]:
    """(order, key[order]) with order == np.argsort(key, kind="stable") as `dtype` (int32 where the
    positions fit halves its memory), for an int64 `key`.

    With `consume`, `key`'s own memory is reused for the sorted keys (the caller must not read `key`
    afterwards): one (n,) array less at the peak (98M ratings at Netflix-full scale: 0.7 GiB)."""
    n = len(key)
    bits = max(1, int(n - 1).bit_length())
    if n == 0 or key.dtype != np.int64 or int(key.min()) < 0 or int(key.max()) >> (63 - bits):
        order = np.argsort(key, kind="stable")
        return order.astype(dtype, copy=False), key[order]
    packed = key if consume else key.copy()
    packed <<= bits
    order = np.arange(n, dtype=dtype)
    packed |= order
    packed.sort()  # unstable, but no two packed values are equal: the positions break every tie
    np.bitwise_and(packed, (1 << bits) - 1, out=order, casting="unsafe")  # < n: fits `dtype`
    packed >>= bits
    return order, packed


def first_occurrences(key: np.ndarray, consume: bool = False) -> np.ndarray:
    """The position of each distinct key's first occurrence, in the order of the sorted distinct keys:
    what `np.unique(key, return_index=True)[1]` returns (as int32 where the positions fit)."""
    order, sorted_key = stable_order(key, consume, index_dtype(len(key)))
    if len(order) == 0:
        return order
    starts = np.ones(len(order), dtype=bool)
    np.not_equal(sorted_key[1:], sorted_key[:-1], out=starts[1:])
    return order[starts]


SWAP_CHUNK = 1 << 22  # draws per chunk of `chosen_mask`'s swap positions (32 MB of int64)


def chosen_mask(rng: np.random.Generator, population: int, size: int) -> np.ndarray:
    """A boolean mask of `population` entries whose True positions are
    `np.sort(rng.choice(population, size, replace=False))`, leaving `rng` in the state that call leaves it:
    the same random stream, without `choice`'s swaps.

    For size > population // 50 (and population > 10000) numpy's `choice` runs a partial Fisher-Yates
    shuffle from the tail of arange(population): for i = n-1 down to first = max(n - size, 1) it draws
    j_i in [0, i] (Lemire's bounded integers, what `rng.integers(0, i, endpoint=True)` draws) and swaps
    positions i and j_i; it returns what ends in positions n - size .. n-1, with no further draw. Those
    100M dependent swaps at Netflix-full scale are random reads of a 0.9 GB array, one at a time. Here
    the draws are made in chunks and only the n - size positions *not* chosen are traced: position p
    ends holding the value that was at the last position written into it. Its last writer is the
    smallest i > p with j_i = p, and what that position held before its own swap comes the same way
    from its own last writer, so p's final value is where the chain p -> writer -> writer's writer ...
    ends. Each step of a chain moves to a later position, so the chains are short. Elsewhere (Floyd's algorithm)
    this calls `choice` itself. tests/test_preparation_kernels.py checks both against `choice`."""
    if not (population > 10000 and size > population // 50 and size <= population):
        mask = np.zeros(population, dtype=bool)
        mask[rng.choice(population, size=size, replace=False)] = True
        return mask
    first = max(population - size, 1)
    writer = np.full(population, population, dtype=index_dtype(population + 1))  # population: no writer
    for hi in range(population - 1, first - 1, -SWAP_CHUNK):
        i = np.arange(hi, max(hi - SWAP_CHUNK, first - 1), -1, dtype=np.int64)  # the swap steps, in order
        j = rng.integers(0, i, endpoint=True)  # (chunk,) the positions they swap with
        i[j == i] = population  # a swap with itself writes nothing
        np.minimum.at(writer, j, i.astype(writer.dtype))  # the last write into j is the smallest i
    end = np.arange(population - size, dtype=np.int64)  # positions not chosen -> the ends of their chains
    open_ = np.arange(len(end))
    while len(open_):
        step = writer[end[open_]]
        more = step < population
        open_ = open_[more]
        end[open_] = step[more]
    mask = np.ones(population, dtype=bool)
    mask[end] = False
    return mask
