"""Test RMSE over trainer seeds, per model, from the runs of scripts/seed_study.sh.

Prints, per setting (the run name without its `-sN`), the mean and standard deviation over seeds of the
validation and test RMSE of the best epoch, the best epochs, then the difference of mean test RMSE between
chosen pairs with a 95% Welch interval over the seeds (seed-to-seed spread only: every run is scored on the
same test rows, whose own sampling noise docs/results.md's paired bootstrap measures), with the
conservative min(n_a, n_b) - 1 degrees of freedom.

usage: python scripts/seed_summary.py OUT [OUT ...]   (the settings of several folders together)
"""
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

# Student's t 0.975 quantiles for 1..20 degrees of freedom
T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
        2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086]
PAIRS = [("ml-rrn", "ml-timesvdpp"), ("ml-rrn", "ml-rrn-stationary"), ("ml-rrn", "ml-biasedmf"),
         ("ml-rrn", "ml-timesvdpp-fresh"), ("mt-rrn", "mt-timesvdpp"), ("mt-rrn", "mt-rrn-stationary"),
         ("mt-rrn", "mt-bias"), ("ml-rrnbase", "ml-timesvdpp"), ("ml-rrnbase", "ml-rrn"),
         ("ml-rrnbase", "ml-rrnbase-stationary"), ("mt-rrnbase", "mt-timesvdpp"), ("mt-rrnbase", "mt-rrn"),
         ("mt-rrnbase", "mt-rrnbase-stationary")]

runs = defaultdict(dict)  # setting -> seed -> metrics
for path in sorted(p for out in sys.argv[1:] for p in Path(out).glob("*-s*/metrics.json")):
    setting, seed = path.parent.name.rsplit("-s", 1)
    runs[setting][int(seed)] = json.loads(path.read_text())
test = {k: np.array([m["test_rmse"] for _, m in sorted(v.items())]) for k, v in runs.items()}
print(f"{'setting':<20} {'seeds':>5} {'val mean':>9} {'sd':>7} {'test mean':>10} {'sd':>7} {'min':>7} {'max':>7}  best epochs")
for setting, by_seed in sorted(runs.items()):
    val = np.array([m["val_rmse"] for _, m in sorted(by_seed.items())])
    t = test[setting]
    epochs = [m["best_epoch"] for _, m in sorted(by_seed.items())]
    print(f"{setting:<20} {len(t):>5} {val.mean():>9.4f} {val.std(ddof=1):>7.4f} {t.mean():>10.4f} {t.std(ddof=1):>7.4f} "
          f"{t.min():>7.4f} {t.max():>7.4f}  {epochs}")
for a, b in PAIRS:
    if a in test and b in test:
        x, y = test[a], test[b]
        se = np.sqrt(x.var(ddof=1) / len(x) + y.var(ddof=1) / len(y))
        half = T975[min(min(len(x), len(y)) - 2, len(T975) - 1)] * se  # needs 2 seeds each
        d = x.mean() - y.mean()
        print(f"{a} minus {b}: {d:+.4f} [{d - half:+.4f}, {d + half:+.4f}]")
