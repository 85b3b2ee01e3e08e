"""Headroom for item dynamics: the validation RMSE of a run's stationary part alone, and with each item's
shrunk mean training residual of the last 8 weeks added (sum / (count + 5)), a hand-made recency signal.

usage: python scripts/recency_headroom.py RUN_DIR   (an RRN run with biases; docs/rrn.md, "Beyond the paper")
"""
import sys

import numpy as np
import torch

from rrnx.run import load_trained

recipe, metrics, data, model = load_trained(sys.argv[1])
model.attach(data)

def static(f):  # the stationary part of eq. (7): mean + biases + <u_i, m_j>
    with torch.no_grad():
        return model._stationary_score(torch.tensor(f["user_idx"].to_numpy()), torch.tensor(f["item_idx"].to_numpy())).numpy()

train, val = data.split.train, data.split.frame("val")
recent = train[train["timestamp"] > train["timestamp"].max() - 8 * 7 * 86_400]  # the last 8 weeks
res = (recent["rating"] - static(recent)).groupby(recent["item_idx"]).agg(["sum", "count"])
shift = val["item_idx"].map(res["sum"] / (res["count"] + 5)).fillna(0).to_numpy()  # shrunk mean residual
low, high = data.rating_range
for k in (0, 1):
    rmse = np.sqrt(((val["rating"] - np.clip(static(val) + k * shift, low, high)) ** 2).mean())
    print(f"stationary part {'+ recent item residual' if k else 'alone'}: validation RMSE {rmse:.4f}")
