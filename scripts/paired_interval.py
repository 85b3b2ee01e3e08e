"""Test RMSE of finished runs on their identical test rows, each against the best other, with the
paired bootstrap 95% interval `rrnx compare` prints (rrnx/intervals.py), for runs trained apart:

    python scripts/paired_interval.py runs/n6m/rrn runs/n6m/pmf-es runs/n6m/timesvdpp-es

Every run must be finished and hold the same test rows (same user, item, timestamp, rating order).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

from rrnx.intervals import paired_differences, rmse_interval
from rrnx.rundir import RunDir

KEYS = ["user", "item", "timestamp", "rating"]


def main(paths: list[str]) -> int:
    frames = {}
    for path in paths:
        run = RunDir(Path(path))
        run.require_finished()
        frames[Path(path).name] = pd.read_parquet(run.file(RunDir.PREDICTIONS))
    first = next(iter(frames.values()))
    for name, frame in frames.items():
        if not frame[KEYS].equals(first[KEYS]):
            print(f"{name}: other test rows than {next(iter(frames))}; not comparable", file=sys.stderr)
            return 2
    truth = first["rating"].to_numpy()
    predictions = {name: frame["prediction"].to_numpy() for name, frame in frames.items()}
    diffs = paired_differences(truth, predictions)
    print(f"{len(truth):,} identical test rows")
    for name, prediction in predictions.items():
        rmse = float(np.sqrt(((prediction.astype(np.float64) - truth) ** 2).mean()))
        low, high = rmse_interval(truth, prediction)
        d = diffs[name]
        print(f"  {name:<16} test RMSE {rmse:.4f} [{low:.4f}, {high:.4f}]   minus {d['vs']}: {d['diff']:+.4f} "
              f"[{d['ci_low']:+.4f}, {d['ci_high']:+.4f}]  ({100 * d['diff'] / (rmse - d['diff']):+.2f}%)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
