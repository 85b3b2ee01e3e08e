"""Where a recipe's RRN epoch spends its time (docs/benchmarks.md, "Gathers through `index_select`"):

    python scripts/profile_recipe.py recipes/netflix-6m.yaml [--threads 1] [--start 20] [--batches 200]

One `rrnx bench --recipe` epoch (the recipe's RRN settings and batch sizes, no pre-train, on the bench's
netflix-6m data from rrnx's cache). It prints, per phase:
- the wall time of the first training batch (it computes the other side's state cache) and the median of
  the others, not profiled;
- torch.profiler's self time per op for the first batch, then per batch over batches START .. START + N - 1,
  from a second, profiled epoch of the same settings (the profiler slows ops down: compare them with each
  other, not with the wall times).
First, as a reference, advanced indexing (`table[index]`) against `index_select` on the two gathers
the change replaced: 200k sorted rows of the user side's 8.9M CSR offsets, and 6M rows of a 272,943 x 20
factor table.
"""

from __future__ import annotations

import argparse
import collections
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the CLI (rrnx/threads.py), before torch loads

import torch  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402

import rrnx.bench as bench  # noqa: E402
from rrnx.commands.bench import recipe_settings  # noqa: E402
from rrnx.data.cache import default_cache_dir  # noqa: E402
from rrnx.models.rrn.model import RRN  # noqa: E402
from row_kernels import best_ms  # noqa: E402 (scripts/row_kernels.py: this script's folder is on sys.path)


def gather_reference() -> None:
    offsets = torch.arange(8_862_002)
    rows = torch.randint(0, 8_862_001, (200_000,)).sort().values
    table, index = torch.randn(272_943, 20), torch.randint(0, 272_943, (6_000_000,))
    for name, t, i, repeats in (("1-D, 200k of 8.9M offsets", offsets, rows, 20),
                                ("rows, 6M of 272,943 x 20", table, index, 3)):
        print(f"  {name}: table[index] {best_ms(lambda: t[i], repeats):.1f} ms, "
              f"index_select {best_ms(lambda: t.index_select(0, i), repeats):.1f} ms (best of {repeats})")


def epoch(settings: dict, threads: int, hook) -> None:
    step = RRN.training_step

    def wrapped(self, batch, batch_idx):
        return hook(batch["side"], lambda: step(self, batch, batch_idx))

    RRN.training_step = wrapped
    try:
        bench.run_bench(preset="netflix-6m", threads=threads, user_granularity="1d", item_granularity="7d",
                        say=lambda *_: None, cache_dir=default_cache_dir(), model_args=dict(settings))
    finally:
        RRN.training_step = step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe", type=Path)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--start", type=int, default=20)
    parser.add_argument("--batches", type=int, default=200)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"advanced indexing against index_select, {args.threads} thread(s):")
    gather_reference()
    settings = recipe_settings(args.recipe)

    seconds = collections.defaultdict(list)

    def timed(side, run):
        start = time.perf_counter()
        out = run()
        seconds[side].append(time.perf_counter() - start)
        return out

    epoch(settings, args.threads, timed)
    count, profiles = collections.Counter(), {}

    def profiled(side, run):
        count[side] += 1
        k = count[side]
        key = (side, "first batch") if k == 1 else (side, f"batches {args.start}-{args.start + args.batches - 1}")
        if k in (1, args.start):
            profiles[key] = profile(activities=[ProfilerActivity.CPU])
            profiles[key].start()
        out = run()
        if k in (1, args.start + args.batches - 1):
            profiles[key].stop()
        return out

    epoch(settings, args.threads, profiled)
    for side in ("user", "item"):
        s = seconds[side]
        print(f"\n{side} phase, not profiled: {len(s)} batches, first {s[0]:.2f} s (with the other side's state "
              f"cache), the others median {statistics.median(s[1:]) * 1e3:.2f} ms, sum {sum(s[1:]):.2f} s")
        for (p_side, label), prof in profiles.items():
            if p_side != side:
                continue
            per = 1 if label == "first batch" else args.batches
            totals = collections.Counter()
            for event in prof.key_averages():
                totals[event.key] += event.self_cpu_time_total
            unit, scale = ("s", 1e6) if per == 1 else ("ms per batch", 1e3 * per)
            print(f"  profiled, {label}: self time {sum(totals.values()) / scale:.2f} {unit}")
            for key, value in totals.most_common(8):
                print(f"    {value / scale:8.3f}  {key}")


if __name__ == "__main__":
    main()
