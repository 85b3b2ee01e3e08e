"""Times RRN's LSTM kernels alone, back to back in one process (docs/benchmarks.md):

    python scripts/lstm_kernels.py [--threads 1] [--kernels torch,fused] [--sequences 4096]

A user-phase-shaped batch: `--sequences` sequences of 1-79 steps (uniform), E = H = 40, the rows
packed time-major as RRN packs them. Per kernel: forward + backward with gradients, and the no-grad
forward of the state caches; best of 3 after a warm-up, and the ratio to the first kernel.
"""

from __future__ import annotations

import argparse
import time

import torch

from rrnx.models.rrn.lstm import packed_lstm
from rrnx.training import keep_freed_memory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--kernels", default="torch,fused")
    parser.add_argument("--sequences", type=int, default=4096)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    keep_freed_memory()  # as training runs (rrnx.training.fit_model)
    torch.manual_seed(0)
    lengths = torch.randint(1, 80, (args.sequences,)).sort(descending=True).values  # (B,)
    batch_sizes = torch.stack([(lengths > t).sum() for t in range(int(lengths[0]))])  # (T,)
    lstm = torch.nn.LSTM(40, 40)
    x = torch.randn(int(batch_sizes.sum()), 40, requires_grad=True)  # (R, E)
    kernels = args.kernels.split(",")

    def train_step(kernel):
        packed_lstm(lstm, x, batch_sizes, kernel).sum().backward()

    def cache_pass(kernel):
        with torch.no_grad():
            packed_lstm(lstm, x, batch_sizes, kernel)

    print(f"{len(x):,} rows, {len(batch_sizes)} steps, {args.sequences:,} sequences, {args.threads} threads")
    for name, work in (("forward + backward", train_step), ("no-grad forward", cache_pass)):
        best = {}
        for kernel in kernels:
            work(kernel)  # warm-up (and the fused cell's build or load)
        for _ in range(3):
            for kernel in kernels:
                start = time.perf_counter()
                work(kernel)
                best[kernel] = min(best.get(kernel, float("inf")), time.perf_counter() - start)
        base = best[kernels[0]]
        print(f"  {name:<18} " + ", ".join(f"{k} {best[k] * 1e3:.0f} ms ({base / best[k]:.2f}x)" for k in kernels))


if __name__ == "__main__":
    main()
