"""Time RRN's user-state cache, the no-grad LSTM pass over every user step that opens each item phase (or,
with --side item, the item-state cache that opens each user phase)
(docs/benchmarks.md, "The no-grad passes"):

    python scripts/state_cache.py [--threads 1] [--repeats 2] [--as-training] [--profile]
    python scripts/state_cache.py --preset netflix-full --side item --threads 2 --as-training
    python scripts/state_cache.py --sgemm-rows

--sgemm-rows checks instead what lstm_cell.cpp's `input_part` relies on: for a few E/H shapes, the row
counts M up to 3,000 at which a (M, E) x (E, 4H) product does not give its rows the bits the same rows
have in one product over all rows (this machine's BLAS, one thread).

On the bench's netflix-6m data (1-day user steps, from rrnx's cache as `rrnx bench`; the first run prepares
it; `--preset netflix-full`: 2-month steps on both sides, as the bench) with a fresh RRN of the bench's
sizes; it prints the seconds of each pass and, with --profile, torch's self time per op of one more. By
default the process allocates as `rrnx test`, `predict` and `report` do; --as-training keeps freed memory
in the heap first, as training does (rrnx.training.keep_freed_memory). Under an older commit: `cd
/tmp/rrnx-bench-SHA && ./venv/bin/python /work/main/scripts/state_cache.py` (scripts/bench_at.sh makes
that folder). """

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the CLI (rrnx/threads.py), before torch loads

import torch  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402

from rrnx.bench import prepare  # noqa: E402
from rrnx.commands.bench import PRESET_GRANULARITY  # noqa: E402
from rrnx.data.cache import default_cache_dir  # noqa: E402
from rrnx.models.rrn.model import RRN  # noqa: E402
from rrnx.training import keep_freed_memory  # noqa: E402


def sgemm_rows(max_rows: int = 3000) -> None:
    torch.set_num_threads(1)
    for embed, hidden in ((40, 40), (20, 20), (40, 20), (10, 10)):
        generator = torch.Generator().manual_seed(0)
        x, w = torch.randn(6000, embed, generator=generator), torch.randn(4 * hidden, embed, generator=generator)
        full = torch.mm(x, w.t())
        other = [m for m in range(1, max_rows + 1) if not torch.equal(torch.mm(x[5:5 + m], w.t()), full[5:5 + m])]
        print(f"E {embed}, H {hidden}: rows whose product has other bits: {other or 'none'}")


def bench_model(preset: str) -> tuple:
    """The bench's data for `preset` (2-month steps for netflix-full, else 1 day / 7 days; from rrnx's cache,
    prepared and cached by the first run) and a fresh RRN of the bench's sizes attached to it."""
    steps = PRESET_GRANULARITY.get(preset, ("1d", "7d"))  # as `rrnx bench` picks them
    data, _ = prepare(preset, *steps, 0, lambda *_: None, default_cache_dir())
    model = RRN(data.n_users, data.n_items, pretrain_epochs=0)
    model.set_data_stats(data.rating_range, data.rating_mean)
    model.attach(data)
    return data, model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--as-training", action="store_true")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--sgemm-rows", action="store_true")
    parser.add_argument("--preset", default="netflix-6m", choices=("netflix-6m", "netflix-full"))
    parser.add_argument("--side", default="user", choices=("user", "item"),
                        help="whose cache: user (opens the item phase) or item (opens the user phase)")
    args = parser.parse_args()
    if args.sgemm_rows:
        return sgemm_rows()
    torch.set_num_threads(args.threads)
    if args.as_training:
        keep_freed_memory()
    _, model = bench_model(args.preset)
    seqs = model._sides[args.side]
    print(f"{args.side}-state cache ({args.preset}): {seqs.n_active:,} {args.side} steps, {args.threads} thread(s)"
          + (", freed memory kept" if args.as_training else ""))
    for _ in range(args.repeats):
        start = time.perf_counter()
        model._states_after_all_rows(args.side, seqs)
        print(f"  {time.perf_counter() - start:.2f} s")
    if args.profile:
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            model._states_after_all_rows(args.side, seqs)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))


if __name__ == "__main__":
    main()
