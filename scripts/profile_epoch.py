"""torch.profiler over one `rrnx bench` epoch, each op's self time summed per phase (docs/benchmarks.md,
"Eq. (7) in one compiled pass", "Where the rest goes"):

    python scripts/profile_epoch.py [--preset netflix-full] [--threads 2] [--top 24]

The bench's data (from rrnx's cache when an earlier run wrote it) and batch sizes (4,096 users, 512 items);
a phase counts what its training steps run, including the other side's state cache the item phase
starts with. The matmuls, the per-rating gathers and the index-select ops also show their input shapes.
The profiler slows the epoch down; compare ops with each other, not the totals with `rrnx bench`.
"""

from __future__ import annotations

import argparse
import collections

import torch
from torch.profiler import ProfilerActivity, profile, record_function

import rrnx.bench as bench
from rrnx.data.cache import default_cache_dir
from rrnx.models.rrn.model import RRN

SHAPED = ("aten::mm", "aten::addmm", "aten::addmm_", "aten::index_select", "aten::index_copy_")
GRANULARITY = {"netflix-full": ("2mo", "2mo")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="netflix-6m")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--top", type=int, default=24)
    args = parser.parse_args()
    step = RRN.training_step

    def labelled_step(self, batch, batch_idx):
        with record_function("phase " + batch["side"]):
            return step(self, batch, batch_idx)

    RRN.training_step = labelled_step
    fit, profiles = bench.fit_model, []

    def profiled_fit(trainer, model, data):
        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            fit(trainer, model, data)
        profiles.append(prof)

    bench.fit_model = profiled_fit
    user_steps, item_steps = GRANULARITY.get(args.preset, ("1d", "7d"))
    bench.run_bench(preset=args.preset, threads=args.threads, user_granularity=user_steps,
                    item_granularity=item_steps, say=lambda *_: None, cache_dir=default_cache_dir(),
                    model_args={"user_batch_size": 4096, "item_batch_size": 512})
    totals = {"phase user": collections.Counter(), "phase item": collections.Counter()}
    wall = collections.Counter()

    def add(event, phase):
        key = event.name + (f" {event.input_shapes}" if event.name in SHAPED else "")
        totals[phase][key] += event.self_cpu_time_total
        for child in event.cpu_children:
            add(child, phase)

    for event in profiles[0].events():
        if event.name in totals:
            wall[event.name] += event.cpu_time_total
            for child in event.cpu_children:
                add(child, event.name)
    for phase, ops in totals.items():
        print(f"{phase}: {wall[phase] / 1e6:.2f} s under the profiler; self time by op (s)")
        for name, micros in ops.most_common(args.top):
            print(f"  {micros / 1e6:7.3f}  {name[:110]}")


if __name__ == "__main__":
    main()
