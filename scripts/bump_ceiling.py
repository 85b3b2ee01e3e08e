"""How far a model fitted to the squared error could rise after a planted award (issue 9's +0.3 target).

On a trained synthetic run, every figure below is the issue's measure applied to an item-level signal:
its mean over the 4 item steps after the award's step minus its mean over the steps before it, bumped
minus control items, averaged over the bump dates (`rrnx report --only exogenous` and
`../shared/tools/bump_effect.py` take the same difference of RRN's average predictions). The signals are
predictions of each item step's mean residual (rating minus the run's stationary part):

  hindsight        the step's own mean residual: a model that knew each step's ratings (not causal)
  told the date    the mean residual of the item's steps from the award's step up to the one before,
                   minus its mean before the award: a causal estimate for a model told when the award was
  EMA              a decayed, shrunk mean of the item's earlier residuals, weight fitted by least squares
                   on all training item steps (scripts/recency_oracle.py's signal)
  MLP              a small network over causal features of the item's residual history (decayed means at
                   4 rates, the last step's mean and count, steps since it), fitted by weighted squared
                   error on all training item steps: the best a squared-error fit over these features does

Each signal's training RMSE gain is printed next to it (on the training ratings; the MLP is fitted on
even items and scored on odd ones as well, so its gain is not only memorised).

usage: python scripts/bump_ceiling.py RUN_DIR [wide]
  wide: two hidden layers of 64 instead of one of 32 (it fits the training steps better and the held-out
  items worse: it memorises)
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

DECAYS, KAPPA = (0.5, 0.8, 0.9, 0.97), 10.0

run, wide = sys.argv[1], len(sys.argv) > 2 and sys.argv[2] == "wide"
torch.manual_seed(0)
data, model, seqs, count, row_of, item_of, residual = item_residuals(run)  # (N,) around the stationary part
rows = row_of.numpy()
S = np.bincount(rows, residual, minlength=seqs.n_active)  # (rows,) residual sum per item step
Q = np.bincount(rows, residual ** 2, minlength=seqs.n_active)
n = count.numpy().astype(float)
mean = S / np.maximum(n, 1)  # (rows,) the step's mean residual
step, offsets = seqs.step.numpy(), seqs.offsets.numpy()
entity = np.repeat(np.arange(seqs.n_entities), np.diff(offsets))  # (rows,)


def history_features() -> np.ndarray:
    """(rows, F) causal features: each from the item's steps strictly before the row's step."""
    out = np.zeros((seqs.n_active, 2 * len(DECAYS) + 3))
    for e in range(seqs.n_entities):
        s, c = np.zeros(len(DECAYS)), np.zeros(len(DECAYS))
        previous, last_mean, last_n = None, 0.0, 0.0
        for r in range(offsets[e], offsets[e + 1]):
            gap = 0.0 if previous is None else step[r] - previous
            if previous is not None:
                decay = np.power(DECAYS, gap)
                s, c = s * decay, c * decay
            out[r] = np.concatenate([s / (c + KAPPA), np.log1p(c), [last_mean, np.log1p(last_n), min(gap, 10) / 10]])
            s, c = s + S[r], c + n[r]
            previous, last_mean, last_n = step[r], mean[r], n[r]
    return out


def sse_of(prediction: np.ndarray, mask: np.ndarray) -> float:
    """Training squared error of the ratings in the masked steps after adding `prediction` per step."""
    return float((Q - 2 * prediction * S + prediction ** 2 * n)[mask].sum())


def fit_mlp(x: np.ndarray, fit_rows: np.ndarray) -> np.ndarray:
    """A 2-layer network predicting each step's mean residual, weighted by its rating count (= the
    squared error of the ratings, up to the within-step variance it cannot change)."""
    xt = torch.tensor(x, dtype=torch.float32)
    xt = (xt - xt[fit_rows].mean(0)) / (xt[fit_rows].std(0) + 1e-6)
    y, w = torch.tensor(mean, dtype=torch.float32), torch.tensor(n, dtype=torch.float32)
    width = 64 if wide else 32
    layers = [torch.nn.Linear(x.shape[1], width), torch.nn.Tanh()]
    layers += [torch.nn.Linear(width, width), torch.nn.Tanh()] if wide else []
    net = torch.nn.Sequential(*layers, torch.nn.Linear(width, 1))
    optimizer = torch.optim.Adam(net.parameters(), lr=0.01)
    idx = torch.as_tensor(fit_rows)
    for _ in range(3000 if wide else 1500):  # full batch
        optimizer.zero_grad()
        loss = (w[idx] * (net(xt[idx]).squeeze(-1) - y[idx]) ** 2).sum() / w[idx].sum()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        return net(xt).squeeze(-1).numpy()


truth = json.loads((Path(run) / "truth.json").read_text())
events = events_from_truth(truth)
events = events[events["item"].isin(data.split.item_ids)].reset_index(drop=True)
events["idx"] = item_indices(data, events["item"])
events["event_step"] = data.item_granularity.step_of([date_ts(d, "event date") for d in events["date"]])


def told_the_date() -> np.ndarray:
    """(rows,) for event items: mean residual of the steps since the award's step, before this one,
    minus the mean before the award (0 elsewhere and before the award)."""
    out = np.zeros(seqs.n_active)
    for _, e in events.iterrows():
        span = slice(offsets[e.idx], offsets[e.idx + 1])
        k = step[span] - e.event_step
        pre = S[span][k < 0].sum() / max(n[span][k < 0].sum(), 1)
        for j in np.flatnonzero(k >= 1):
            since = (k >= 0) & (k < k[j])
            out[span.start + j] = S[span][since].sum() / max(n[span][since].sum(), 1) - pre
    return out


def award_effect(signal: np.ndarray, steps_after: int = 4) -> tuple[float, list[float]]:
    """Bumped minus control: mean of `signal` over the steps 1..steps_after after the award's step
    minus its mean before the award's step; overall and per award date."""
    change = []
    for _, e in events.iterrows():
        span = slice(offsets[e.idx], offsets[e.idx + 1])
        k, own = step[span] - e.event_step, signal[span]
        pre, post = own[k < 0], own[(k >= 1) & (k <= steps_after)]
        if len(pre) and len(post):
            change.append((e.kind, e.date, post.mean() - pre.mean()))
    frame = pd.DataFrame(change, columns=["kind", "date", "change"]).groupby(["date", "kind"])["change"].mean()
    per_date = (frame.xs("bumped", level="kind") - frame.xs("control", level="kind")).tolist()
    return float(np.mean(per_date)), per_date


features = history_features()
odd = entity % 2 == 1
p_all = fit_mlp(features, np.flatnonzero(n > 0))
p_even = fit_mlp(features, np.flatnonzero((n > 0) & ~odd))
lam = DECAYS.index(0.8)
ema = features[:, lam]
alpha = (ema * S).sum() / (ema * ema * n).sum()
base = np.sqrt(Q.sum() / n.sum())
everything = np.ones(seqs.n_active, bool)
print(f"{run}: {seqs.n_active:,} item steps, {int(n.sum()):,} training ratings, "
      f"{int((events.kind == 'bumped').sum())} bumped items over {events.date.nunique()} award dates; "
      f"stationary part's training RMSE {base:.4f}")
print(f"{'signal':<16} {'bumped - control':>17}  per date          training RMSE with it")
for name, signal, rmse in (
        ("hindsight", mean, None),
        ("told the date", told_the_date(), None),
        (f"EMA(0.8) x {alpha:.2f}", alpha * ema, np.sqrt(sse_of(alpha * ema, everything) / n.sum())),
        ("MLP", p_all, np.sqrt(sse_of(p_all, everything) / n.sum())),
        ("MLP (even items)", p_even, None)):
    overall, per_date = award_effect(signal)
    note = "" if rmse is None else f"{rmse:.4f} ({rmse - base:+.4f})"
    print(f"{name:<16} {overall:>+17.3f}  {', '.join(f'{v:+.3f}' for v in per_date):<17} {note}")
held_out = np.sqrt(sse_of(p_even, odd) / n[odd].sum())
print(f"MLP fitted on even items, odd items' training RMSE {held_out:.4f} "
      f"({held_out - np.sqrt(Q[odd].sum() / n[odd].sum()):+.4f} against the stationary part)")
