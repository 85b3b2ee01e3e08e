"""Write a synthetic preset's table in the Netflix Prize's own text format, then time parsing and
preparing it as a user's copy would be (issue 10, item 3: a real 100M-row ratings file):

    python scripts/netflix_format.py write netflix-full /tmp/netflix-text   # combined_data_1.txt, ~2 GB
    /usr/bin/time -v python scripts/netflix_format.py prepare /tmp/netflix-text /tmp/netflix-cache

`write` takes the preset's table from rrnx's synthetic-data cache (generating it if absent) and writes
one `MovieID:` line per item followed by its `CustomerID,Rating,YYYY-MM-DD` lines (Kaggle's
combined_data layout). `prepare` runs what `rrnx fit recipes/netflix-full.yaml --data.path=DIR`
runs before training, with recipes/netflix-full.yaml's split and steps and an empty cache directory:
parse (and write the parse cache), split, bucket, write the prepared data; it prints the seconds of
each stage and the table's size. Run it twice to time the cached rerun.
"""

import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv


def write(preset: str, out: Path) -> None:
    from rrnx.data.cache import default_cache_dir
    from rrnx.data.synthetic import load_synthetic

    start = time.perf_counter()
    table, _ = load_synthetic({"preset": preset, "seed": 0}, default_cache_dir())
    n_ratings, n_items = write_netflix_text(table, out / "combined_data_1.txt")
    size = (out / "combined_data_1.txt").stat().st_size
    print(f"wrote {n_ratings:,} ratings of {n_items:,} items, {size / 1e9:.2f} GB, "
          f"in {time.perf_counter() - start:.1f} s: {out / 'combined_data_1.txt'}")


def write_netflix_text(table, path: Path) -> tuple[int, int]:
    """A canonical table (integer ids, ratings 1..5, midnight-UTC timestamps) as one combined_data file,
    items in id order, each item's ratings in time order; returns (ratings, items)."""
    order = np.lexsort((table["timestamp"].to_numpy(), table["item"].to_numpy()))  # by item, then time
    item = table["item"].to_numpy()[order]
    rows = pa.table({"user": pa.array(table["user"].to_numpy()[order]),
                     "rating": pa.array(table["rating"].to_numpy()[order].astype(np.int8)),
                     "date": pa.array(table["timestamp"].to_numpy()[order], pa.timestamp("s")).cast(pa.date32())})
    del table, order
    starts = np.flatnonzero(np.r_[True, item[1:] != item[:-1]])
    ends = np.r_[starts[1:], len(item)]
    path.parent.mkdir(parents=True, exist_ok=True)
    options = pacsv.WriteOptions(include_header=False, quoting_style="none")
    with open(path, "wb") as handle:
        for first, end in zip(starts.tolist(), ends.tolist()):
            handle.write(f"{item[first]}:\n".encode())
            pacsv.write_csv(rows.slice(first, end - first), handle, options)
    return len(item), len(starts)


def prepare(path: Path, cache_dir: Path) -> None:
    from rrnx.data.datamodule import TemporalDataModule
    from rrnx.recipe import load_recipe

    data_settings = {k: v for k, v in load_recipe("recipes/netflix-full.yaml")["data"].items()
                     if k not in ("path", "synthetic_fallback")}
    data = TemporalDataModule(**{**data_settings, "path": str(path), "cache_dir": str(cache_dir)})
    start = time.perf_counter()
    data.setup()
    seconds = ", ".join(f"{k} {v:.1f} s" for k, v in data.prepare_seconds.items())
    print(f"prepared {len(data.split.train):,} train ratings ({data.n_users:,} users, {data.n_items:,} items) "
          f"in {time.perf_counter() - start:.1f} s: {seconds}; prepared data {data.prepared_cache}")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "write":
        write(sys.argv[2], Path(sys.argv[3]))
    elif len(sys.argv) == 4 and sys.argv[1] == "prepare":
        prepare(Path(sys.argv[2]), Path(sys.argv[3]))
    else:
        sys.exit(__doc__)
