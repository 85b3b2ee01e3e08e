"""Stable orders of large integer keys, the preparation's sorts (the generator's pair de-duplication,
the bucketing's (entity, step) order).

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
