"""The fused LSTM cell of this checkout against another commit's, in one process (docs/benchmarks.md):

    python scripts/cell_ab.py COMMIT [--threads 2] [--sequences 4096] [--rounds 15]

Builds COMMIT's rrnx/models/rrn/lstm_cell.cpp with the same flags into a temporary folder, then times
forward + backward with gradients and the no-grad forward of both builds on one user-phase-shaped batch
(as scripts/lstm_kernels.py: sequences of 1-79 steps, E = H = 40), alternating them `--rounds` times,
and prints the median and the minimum of each and the ratio of the medians (old / new). Alternating in
one process keeps the machine's drift out of the ratio. Set OMP_WAIT_POLICY=PASSIVE to time the cell as
`rrnx fit` and `rrnx bench` run it (rrnx/threads.py). COMMIT's cell must take the same arguments.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.cpp_extension import load

from rrnx.models.rrn import fused
from rrnx.models.rrn.lstm import FusedPackedLSTMFunction


def build_at(commit: str, folder: Path):
    source = folder / "lstm_cell_old.cpp"
    root = Path(__file__).resolve().parent.parent
    source.write_bytes(subprocess.run(["git", "-C", str(root), "show", f"{commit}:rrnx/models/rrn/lstm_cell.cpp"],
                                      check=True, capture_output=True).stdout)
    return load(f"rrnx_lstm_ab_{commit[:12]}", sources=[str(source)], extra_cflags=fused.CFLAGS,
                build_directory=str(folder), verbose=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("commit")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sequences", type=int, default=4096)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as folder:
        old, new = build_at(args.commit, Path(folder)), fused.fused_cell(required=True)
        torch.manual_seed(0)
        lengths = torch.randint(1, 80, (args.sequences,)).sort(descending=True).values  # (B,)
        sizes = torch.stack([(lengths > t).sum() for t in range(int(lengths[0]))])  # (T,)
        lstm = torch.nn.LSTM(40, 40)
        x = torch.randn(int(sizes.sum()), 40, requires_grad=True)  # (R, E)
        bias = (lstm.bias_ih_l0 + lstm.bias_hh_l0).detach().requires_grad_()  # (4H,)
        params = [lstm.weight_ih_l0, bias, lstm.weight_hh_l0]

        def train_step(cell):
            FusedPackedLSTMFunction.apply(x, *params, sizes, cell).sum().backward()

        def cache_pass(cell):
            with torch.no_grad():
                FusedPackedLSTMFunction.apply(x, *params, sizes, cell)

        print(f"{len(x):,} rows, {len(sizes)} steps, {args.threads} threads; {args.commit} (old) against this checkout (new)")
        for name, work in (("forward + backward", train_step), ("no-grad forward", cache_pass)):
            seconds = {"old": [], "new": []}
            for cell in (old, new):
                work(cell)  # warm-up
            for i in range(args.rounds):
                for key, cell in (("old", old), ("new", new)) if i % 2 else (("new", new), ("old", old)):
                    start = time.perf_counter()
                    work(cell)
                    seconds[key].append(time.perf_counter() - start)
            median = {k: statistics.median(v) for k, v in seconds.items()}
            print(f"  {name:<18} " + ", ".join(f"{k} median {median[k] * 1e3:.1f} ms (min {min(v) * 1e3:.1f})"
                                               for k, v in seconds.items())
                  + f"; old / new {median['old'] / median['new']:.2f}x")


if __name__ == "__main__":
    main()
