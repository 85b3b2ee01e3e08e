"""Mean test residual (rating minus prediction) of finished runs on rrnx synthetic data, by planted effect.

usage: python scripts/residual_by_effect.py RUN_DIR [RUN_DIR ...]   (docs/rrn.md, "Beyond the paper")
"""
import json, sys
import pandas as pd

for run in sys.argv[1:]:  # finished runs on synthetic data: mean of rating minus prediction, by planted effect
    truth = json.load(open(f"{run}/truth.json"))
    p = pd.read_parquet(f"{run}/predictions.parquet")
    residual = p["rating"] - p["prediction"]
    groups = {"all": p["item"] == p["item"],
              "rising trend": p["item"].isin([t["item"] for t in truth["trend_items"] if t["slope_per_year"] > 0]),
              "falling trend": p["item"].isin([t["item"] for t in truth["trend_items"] if t["slope_per_year"] < 0]),
              "bumped": p["item"].isin([b["item"] for b in truth["bumps"]])}
    print(run, "  ".join(f"{name} {residual[rows].mean():+.3f}" for name, rows in groups.items()))
