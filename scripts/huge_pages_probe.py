"""Random-row gathers from a large table with and without transparent huge pages (docs/benchmarks.md, "On an
AVX-512 machine", the huge-page paragraph):

    python scripts/huge_pages_probe.py [--threads 2] [--fresh-output]

A (10,556,426 x 40) float32 table (1.7 GB, the shape of Netflix full's user-state rows at 40 floats), 2 MiB
aligned, filled after an optional madvise(MADV_HUGEPAGE); 3M random rows by `index_select`, best of 5, for
tables without, with, without and with the advice in turn. Each line gives the process's AnonHugePages at
that point (/proc/self/smaps_rollup). By default the output is one preallocated (3M, 40) tensor; with
--fresh-output each gather allocates its own, as `table.index_select(0, index)` does.
"""

from __future__ import annotations

import argparse
import ctypes
import time

import torch

ROWS, WIDTH, PICKS = 10_556_426, 40, 3_000_000
MADV_HUGEPAGE, HUGE = 14, 1 << 21


def anon_huge_mb() -> int:
    with open("/proc/self/smaps_rollup") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("AnonHugePages")) // 1024


def table(huge: bool) -> torch.Tensor:
    n = ROWS * WIDTH
    raw = torch.empty(n + HUGE // 4, dtype=torch.float32)  # room to start at a 2 MiB boundary
    start = (-raw.data_ptr()) % HUGE // 4
    rows = raw[start:start + n]
    if huge:
        libc = ctypes.CDLL("libc.so.6")
        libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        if libc.madvise(ctypes.c_void_p(rows.data_ptr()), ctypes.c_size_t(n * 4 // HUGE * HUGE), MADV_HUGEPAGE):
            raise OSError("madvise(MADV_HUGEPAGE) failed")
    rows.normal_()  # first touch, after the advice
    return rows.view(ROWS, WIDTH)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--fresh-output", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    index = torch.randint(0, ROWS, (PICKS,))
    out = None if args.fresh_output else torch.zeros(PICKS, WIDTH)
    for huge in (False, True, False, True):
        rows, best = table(huge), float("inf")
        for _ in range(5):
            start = time.perf_counter()
            if out is None:
                rows.index_select(0, index)
            else:
                torch.index_select(rows, 0, index, out=out)
            best = min(best, time.perf_counter() - start)
        print(f"advice {'MADV_HUGEPAGE' if huge else 'none         '}  AnonHugePages {anon_huge_mb():5d} MB  "
              f"{best * 1e3:6.1f} ms, {PICKS * WIDTH * 4 / best / 1e9:.1f} GB/s")
        del rows


if __name__ == "__main__":
    main()
