"""The generator's subsample: rng.choice then a mask (the generator before bab86d2) against chosen_mask,
alternating in one process, at Netflix-full size:

    python scripts/choice_ab.py
"""

import time

import numpy as np

from rrnx.data.ordering import chosen_mask


def before(rng, n, size):
    mask = np.zeros(n, dtype=bool)
    mask[rng.choice(n, size=size, replace=False)] = True
    return mask


n, size = 110_000_000, 100_400_000
for r in range(3):
    for name, f in (("choice + mask", before), ("chosen_mask", chosen_mask)):
        t = time.perf_counter(); m = f(np.random.default_rng(r), n, size); dt = time.perf_counter() - t
        print(f"round {r}  {name:14s} {dt:5.2f} s  ({int(m.sum()):,} chosen)", flush=True)
        del m
