"""Planted trends as a run sees them: rising- minus falling-trend items, mean relative prediction over the
last 4 training steps, from `rrnx report RUN --only endogenous`'s endogenous.csv, with a 95% bootstrap
interval over the items (2,000 resamples, seed 0). docs/rrn.md, *The wallclock columns*.

usage: python scripts/trend_separation.py REPORT_DIR
"""
import sys

import numpy as np
import pandas as pd

frame = pd.read_csv(sys.argv[1].rstrip("/") + "/endogenous.csv")
for run, steps in frame.groupby("run"):
    last = steps[steps["step"] >= steps["step"].max() - 3].groupby(["group", "item"])["relative"].mean()
    rising, falling = last["rising trend (truth)"].to_numpy(), last["falling trend (truth)"].to_numpy()
    rng = np.random.default_rng(0)
    boot = [rng.choice(rising, len(rising)).mean() - rng.choice(falling, len(falling)).mean() for _ in range(2000)]
    low, high = np.percentile(boot, [2.5, 97.5])
    print(f"{run}: rising ({len(rising)} items) minus falling ({len(falling)}) over the last 4 training steps "
          f"{rising.mean() - falling.mean():+.3f} [{low:+.3f}, {high:+.3f}]")
