"""A hand-made causal item-recency signal against a trained RRN: how much of the item dynamics the item
LSTMs could have taken from their own residual inputs (docs/rrn.md, "What the dynamic part learns").

Before each item step, the signal is an exponentially decayed, shrunk mean of the item's earlier training
residuals, EMA = sum_s lambda^(t-s) res_s / (sum_s lambda^(t-s) n_s + kappa); its weight alpha is fitted by
least squares on the training ratings. Printed per (lambda, kappa): alpha, the training RMSE without and
with alpha * EMA, and the validation RMSE (unclamped) of the final states' prediction without and with
the EMA at the end of training; then the bump effect of the (0.8, 10) signal: its mean over the 4 item
steps after each planted award minus its mean over the 3 before, bumped minus control items, and the
same figure for RRN's own item dynamic bias b_j(t) (with `dynamic_bias: true`).

usage: python scripts/recency_oracle.py RUN_DIR [full]
  residuals of RRN's stationary part; with `full`, of the whole RRN (what its dynamics left)
"""
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from rrnx.report.exogenous import events_from_truth
from rrnx.report.trace import date_ts, item_indices
from item_residuals import item_residuals

run, full = sys.argv[1], len(sys.argv) > 2 and sys.argv[2] == "full"
data, model, seqs, count, row_of, item_of, residual = item_residuals(run, full)
with torch.no_grad():
    val = data.split.frame("val")
    batch = {"user": torch.tensor(val["user_idx"].to_numpy()), "item": torch.tensor(val["item_idx"].to_numpy())}
    val_pred = model.predict_ratings(batch) if full else model._stationary_score(batch["user"], batch["item"])
    val_residual = val["rating"].to_numpy(np.float32) - val_pred.numpy()
rows = row_of.numpy()
S = np.bincount(rows, residual, minlength=seqs.n_active)  # residual sum per item step
Q = np.bincount(rows, residual ** 2, minlength=seqs.n_active)
n = count.numpy().astype(float)
step, offsets = seqs.step.numpy(), seqs.offsets.numpy()
last_step = int(seqs.granularity.step_of(model._test_start - 1))


def ema(lam: float, kappa: float):
    """The signal before each item step (rows,) and after the last training step (items,)."""
    before, final = np.zeros(seqs.n_active), np.zeros(seqs.n_entities)
    for e in range(seqs.n_entities):
        s = c = 0.0
        previous = None
        for r in range(offsets[e], offsets[e + 1]):
            if previous is not None:
                decay = lam ** (step[r] - previous)
                s, c = s * decay, c * decay
            before[r] = s / (c + kappa)
            s, c, previous = s + S[r], c + n[r], step[r]
        decay = lam ** (last_step + 1 - previous)
        final[e] = s * decay / (c * decay + kappa)
    return before, final


print(f"{'whole RRN' if full else 'stationary part'}: training RMSE {np.sqrt(Q.sum() / n.sum()):.4f}, "
      f"validation RMSE {np.sqrt(np.mean(val_residual ** 2)):.4f}")
for lam in (0.5, 0.8, 0.9, 0.97):
    for kappa in (3.0, 10.0):
        p, final = ema(lam, kappa)
        alpha = (p * S).sum() / max((p * p * n).sum(), 1e-12)
        sse = Q.sum() - 2 * alpha * (p * S).sum() + alpha ** 2 * (p * p * n).sum()
        v = np.sqrt(np.mean((val_residual - alpha * final[val["item_idx"].to_numpy()]) ** 2))
        print(f"lambda {lam:4} kappa {kappa:4}: alpha {alpha:5.2f}  + alpha EMA: training {np.sqrt(sse / n.sum()):.4f}"
              f"  validation {v:.4f}")

p, _ = ema(0.8, 10.0)
alpha = (p * S).sum() / (p * p * n).sum()
truth = json.loads((Path(run) / "truth.json").read_text())
events = events_from_truth(truth)
events = events[events["item"].isin(data.split.item_ids)].reset_index(drop=True)
events["idx"] = item_indices(data, events["item"])
events["event_step"] = data.item_granularity.step_of([date_ts(d, "event date") for d in events["date"]])
dynamic_bias = model._cached_states("item")[0][:, -1].numpy() if model.hparams.dynamic_bias else None  # (rows,)


def award_effect(signal: np.ndarray) -> float:
    change = []
    for _, e in events.iterrows():
        k = step[offsets[e.idx]:offsets[e.idx + 1]] - e.event_step
        own = signal[offsets[e.idx]:offsets[e.idx + 1]]
        pre, post = own[(k >= -3) & (k < 0)], own[(k >= 1) & (k <= 4)]
        if len(pre) and len(post):
            change.append((e.kind, post.mean() - pre.mean()))
    by_kind = pd.DataFrame(change, columns=["kind", "change"]).groupby("kind")["change"].mean()
    return by_kind["bumped"] - by_kind["control"]


print(f"bumped minus control, 4 item steps after the award vs 3 before: EMA(0.8, 10) x {alpha:.2f} "
      f"{award_effect(alpha * p):+.3f}" + ("" if dynamic_bias is None else
                                          f"; RRN's item dynamic bias {award_effect(dynamic_bias):+.3f}"))
