"""Seconds and peak resident memory of each stage of preparing a synthetic preset (reading rrnx's
cache, the time split, the bucketing), each call's peak read through /proc/self/clear_refs (Linux):

    python scripts/prep_memory.py [PRESET]      # default netflix-full; generates the table once if not cached

docs/benchmarks.md ("Netflix full: a leaner, faster preparation") holds its figures.
"""

import functools
import sys
import time

import rrnx.data.datamodule as datamodule
import rrnx.data.split as split
from rrnx.data.cache import default_cache_dir
from rrnx.data.synthetic import PRESET_SPLITS, load_synthetic


def memory() -> tuple[float, float]:
    """(resident, peak resident since the last reset) in GiB."""
    fields = dict(line.split(":", 1) for line in open("/proc/self/status"))
    return int(fields["VmRSS"].split()[0]) / 2**20, int(fields["VmHWM"].split()[0]) / 2**20


def staged(name: str, fn):
    """fn, printing its seconds, the resident memory before and after, and its own peak."""
    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        before, _ = memory()
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current resident size
        start = time.perf_counter()
        out = fn(*args, **kwargs)
        after, peak = memory()
        print(f"{name:26s} {time.perf_counter() - start:6.1f} s  resident {before:5.2f} -> {after:5.2f} GiB, "
              f"peak {peak:5.2f} GiB", flush=True)
        return out
    return wrapped


def main(preset: str) -> None:
    split.keep_last_rating = staged("keep_last_rating", split.keep_last_rating)
    split._indexed = staged("_indexed", split._indexed)
    datamodule.time_split = staged("time_split", split.time_split)
    datamodule.build_sequences = staged("build_sequences", datamodule.build_sequences)
    table, _ = staged("load_synthetic", load_synthetic)({"preset": preset, "seed": 0}, default_cache_dir())
    holder = [table]
    del table
    staged("from_owned_table", datamodule.TemporalDataModule.from_owned_table)(
        holder, format="synthetic", synthetic={"preset": preset, "seed": 0}, seed=0,
        user_granularity="2mo", item_granularity="2mo", **PRESET_SPLITS[preset])


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "netflix-full")
