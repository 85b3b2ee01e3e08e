"""Seconds and peak resident memory of each stage of preparing a synthetic preset (reading rrnx's
cache, the time split, the bucketing) and, with --train, of RRN's attach, state caches and one
epoch of the bench's model (1 thread); each call's peak is read through /proc/self/clear_refs (Linux):

    python scripts/prep_memory.py netflix-full                  # 2-month steps on both sides
    python scripts/prep_memory.py netflix-6m 1d 7d --train      # the bench's 6-month setting
    python scripts/prep_memory.py netflix-full --cache          # through the prepared-data cache
    python scripts/prep_memory.py --netflix-text DIR CACHE_DIR  # a Netflix-format file (scripts/netflix_format.py)

The table is generated once if rrnx's cache lacks it. With --cache the data module's setup() runs, as
in `rrnx fit` and `rrnx bench`: the first run splits, buckets and writes the prepared data
(`write_prepared`), a rerun reads it back (`read_prepared`) without loading the table. Nested calls
reset the peak, so a stage's peak counts from the last nested call's start. docs/benchmarks.md
("Netflix full: a leaner, faster preparation", "the prepared-data cache") holds its figures.
"""

import argparse
import functools
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


def prepare(preset: str, user_granularity: str, item_granularity: str, cache: bool = False):
    split.keep_last_rating = staged("keep_last_rating", split.keep_last_rating)
    split._indexed = staged("_indexed", split._indexed)
    datamodule.time_split = staged("time_split", split.time_split)
    datamodule.build_sequences = staged("build_sequences", datamodule.build_sequences)
    settings = dict(format="synthetic", synthetic={"preset": preset, "seed": 0}, seed=0,
                    user_granularity=user_granularity, item_granularity=item_granularity, **PRESET_SPLITS[preset])
    if cache:
        return prepare_through_the_cache(settings)
    table, _ = staged("load_synthetic", load_synthetic)({"preset": preset, "seed": 0}, default_cache_dir())
    if not hasattr(datamodule.TemporalDataModule, "from_owned_table"):  # a checkout from before it existed
        return staged("from_table", datamodule.TemporalDataModule.from_table)(table, **settings)
    holder = [table]
    del table
    return staged("from_owned_table", datamodule.TemporalDataModule.from_owned_table)(holder, **settings)


def prepare_through_the_cache(settings: dict):
    """setup() with rrnx's cache dir: the prepared-data cache read back, or computed and written."""
    cls = datamodule.TemporalDataModule
    cls.load_table = staged("load_table", cls.load_table)
    datamodule.read_prepared = staged("read_prepared", datamodule.read_prepared)
    datamodule.write_prepared = staged("write_prepared", datamodule.write_prepared)
    data = cls(cache_dir=str(default_cache_dir()), **settings)
    staged("setup", data.setup)()
    print(f"prepared data: {data.prepared_cache}", flush=True)
    return data


def prepare_netflix_text(path: str, cache_dir: str):
    """setup() over a Netflix-format file with recipes/netflix-full.yaml's split and steps, the parse staged too."""
    import rrnx.data.cache as cache
    import rrnx.data.readers as readers
    from rrnx.recipe import load_recipe

    readers._netflix = staged("parse (_netflix)", readers._netflix)
    cache.load_ratings = staged("load_ratings", cache.load_ratings)
    datamodule.time_split = staged("time_split", split.time_split)
    datamodule.build_sequences = staged("build_sequences", datamodule.build_sequences)
    datamodule.write_prepared = staged("write_prepared", datamodule.write_prepared)
    settings = {k: v for k, v in load_recipe("recipes/netflix-full.yaml")["data"].items()
                if k not in ("path", "synthetic_fallback")}
    data = datamodule.TemporalDataModule(**{**settings, "path": path, "cache_dir": cache_dir})
    staged("setup", data.setup)()
    print(f"prepared data: {data.prepared_cache}", flush=True)
    return data


def train_one_epoch(data) -> None:
    import lightning as L
    import torch

    from rrnx.models.rrn import RRN
    from rrnx.training import fit_model

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = RRN(data.n_users, data.n_items, pretrain_epochs=0)  # the bench's model
    model.set_data_stats(data.rating_range, data.rating_mean)
    for name in ("attach", "_states_after_all_rows", "_cached_states"):
        setattr(RRN, name, staged(name, getattr(RRN, name)))
    trainer = L.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, accelerator="cpu")
    staged("fit, 1 epoch", fit_model)(trainer, model, data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("preset", nargs="?", default="netflix-full")
    parser.add_argument("user_granularity", nargs="?", default="2mo")
    parser.add_argument("item_granularity", nargs="?", default="2mo")
    parser.add_argument("--train", action="store_true", help="also RRN's attach, state caches and one epoch")
    parser.add_argument("--cache", action="store_true",
                        help="prepare through setup() and the prepared-data cache (read back, or written)")
    parser.add_argument("--netflix-text", nargs=2, metavar=("DIR", "CACHE_DIR"),
                        help="prepare a Netflix-format file instead of a preset (CACHE_DIR: empty, to time the parse)")
    args = parser.parse_args()
    if args.netflix_text:
        data = prepare_netflix_text(*args.netflix_text)
    else:
        data = prepare(args.preset, args.user_granularity, args.item_granularity, args.cache)
    if args.train:
        train_one_epoch(data)


if __name__ == "__main__":
    main()
