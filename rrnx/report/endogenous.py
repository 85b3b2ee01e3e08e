"""Endogenous dynamics (paper, Section 4.3, Figs. 6-7): how an item's predictions change with age.

At every item time step, a fresh sample of the users active in that step (those who rated
anything in it) is asked about each selected item; the average prediction is plotted against
the item's age (time since its first training rating), relative to the item's own average, so
groups of items with different levels share one axis. Items are selected as in footnote 2 (a
large rating fluctuation between periods), by `--items`, and on synthetic data also by their
planted trend (rising "cult" items and fading ones, the analogue of Fig. 7's two groups).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from rrnx.data.steps import Granularity
from rrnx.report.plotting import finish, panel_figure
from rrnx.report.section import ReportOptions, Section, Skip
from rrnx.report.trace import first_rating_times, fluctuation, item_indices, mean_predictions_many, step_grid

KEY, TITLE, PAPER = "endogenous", "Endogenous dynamics", "Figs. 6-7"
YEARS_FOR_YEARLY_PERIODS = 3  # footnote 2 measures fluctuation per year; shorter data per month


def fluctuation_period(data) -> Granularity:
    """The period footnote 2 measures fluctuation over: a year, or a month on short data."""
    train_ts = data.split.train["timestamp"]
    years = (train_ts.max() - train_ts.min()) / (365.25 * 86_400)
    return Granularity.parse("12mo" if years >= YEARS_FOR_YEARLY_PERIODS else "1mo", int(train_ts.min()))


def item_groups(data, truth: dict | None, options: ReportOptions) -> pd.DataFrame:
    """item_idx -> group for every selection that applies; an item may be in several groups."""
    groups = []
    if options.items:
        groups.append(pd.DataFrame({"item_idx": item_indices(data, options.items), "group": "chosen"}))
    period = fluctuation_period(data)
    spread = fluctuation(data.split.train, period.step_of, options.min_period_ratings)
    wide = spread[spread > options.fluctuation_threshold]
    if len(wide):
        groups.append(pd.DataFrame({"item_idx": wide.index.to_numpy(),
                                    "group": f"fluctuation > {options.fluctuation_threshold:g}"}))
    for sign, name in ((1, "rising trend (truth)"), (-1, "falling trend (truth)")):
        ids = [t["item"] for t in (truth or {}).get("trend_items", []) if np.sign(t["slope_per_year"]) == sign]
        ids = [i for i in ids if i in set(data.split.item_ids)]
        if ids:
            groups.append(pd.DataFrame({"item_idx": item_indices(data, ids, "trend items"), "group": name}))
    if not groups:
        raise Skip(f"no item group: no item has a rating fluctuation above {options.fluctuation_threshold:g} with "
                   f"at least {options.min_period_ratings} ratings per period; give --items")
    return pd.concat(groups, ignore_index=True)


def endogenous_dynamics(model, data, groups: pd.DataFrame, n_users: int = 5000, items_per_group: int = 256,
                        seed: int = 0) -> pd.DataFrame:
    """Per (group, item, step) from the item's first rated step on: the mean prediction over up
    to `n_users` users active in that step (sampled afresh per step), the item's age in days,
    and `relative`, the prediction minus the item's mean over its steps."""
    rng = np.random.default_rng(seed)
    shuffled = groups.iloc[rng.permutation(len(groups))]
    groups = shuffled[shuffled.groupby("group").cumcount() < items_per_group]
    items = np.unique(groups["item_idx"].to_numpy())
    train = data.split.train
    gran = data.item_granularity
    active = train.assign(step=gran.step_of(train["timestamp"].to_numpy())).groupby("step")["user_idx"].unique()
    first = first_rating_times(data).loc[items]
    first_step = pd.Series(gran.step_of(first.to_numpy()), index=items)
    rows, queries = [], []
    for step, start, time in step_grid(data, "item", "train").itertuples(index=False):
        present = items[first_step.to_numpy() <= step]
        if step not in active.index or not len(present):
            continue
        users = active[step]
        users = np.sort(rng.choice(users, size=min(n_users, len(users)), replace=False))
        queries.append((users, present, start))
        rows.append(pd.DataFrame({"item_idx": present, "step": step, "time": time, "active_users": len(users),
                                  "age_days": (start - first.loc[present].to_numpy()) / 86_400}))
    for row, prediction in zip(rows, mean_predictions_many(model, data, queries)):
        row["prediction"] = prediction
    trace = pd.concat(rows, ignore_index=True)
    trace["relative"] = trace["prediction"] - trace.groupby("item_idx")["prediction"].transform("mean")
    trace["item"] = data.split.item_ids[trace["item_idx"].to_numpy()]
    return groups.merge(trace, on="item_idx").drop(columns="item_idx")


def age_curves(frame: pd.DataFrame, bin_days: float) -> pd.DataFrame:
    """Mean `relative` per run, group and age bin (bins of one item step)."""
    binned = frame.assign(age_bin=np.floor(frame["age_days"].clip(lower=0) / bin_days) * bin_days)
    return (binned.groupby(["run", "group", "age_bin"])
            .agg(relative=("relative", "mean"), items=("item", "nunique")).reset_index())


def plot_endogenous(frame: pd.DataFrame, bin_days: float):
    """Figs. 6-7: per run, mean prediction (relative to each item's mean) against item age."""
    curves = age_curves(frame, bin_days)
    runs = list(dict.fromkeys(frame["run"]))
    fig, axes = panel_figure(runs)
    for ax, run in zip(axes, runs):
        for group, sub in curves[curves["run"] == run].groupby("group"):
            ax.plot(sub["age_bin"], sub["relative"], marker=".", lw=1.4,
                    label=f"{group} ({frame.loc[frame['group'] == group, 'item'].nunique()})")
        ax.axhline(0, color="k", lw=0.6)
        ax.set_xlabel("item age (days since first training rating)")
        ax.legend(fontsize=7)
    low, high = axes[0].get_ylim()
    if high - low < 0.2:
        axes[0].set_ylim(-0.1, 0.1)
    axes[0].set_ylabel("avg prediction - item's mean")
    return finish(fig)


def section(runs, options: ReportOptions) -> Section:
    frames = []
    for run in runs:
        groups = item_groups(run.data, run.truth, options)
        frame = endogenous_dynamics(run.model, run.data, groups, options.n_active_users,
                                    options.items_per_group, options.seed)
        frames.append(frame.assign(run=run.label))
    frame = pd.concat(frames, ignore_index=True)
    bin_days = runs[0].data.item_granularity.days
    period = fluctuation_period(runs[0].data)
    caption = (f"Average predicted rating of each item over up to {options.n_active_users:,} users active in each "
               "item time step (a fresh sample per step), against the item's age, minus the item's mean. "
               f"Fluctuation: highest minus lowest mean rating over {period.count}-{period.unit} periods with at "
               f"least {options.min_period_ratings} training ratings (footnote 2).")
    counts = frame.groupby(["group", "run"])["item"].nunique().unstack("run").rename_axis(columns=None).reset_index()
    return Section(KEY, TITLE, PAPER, caption, {KEY: plot_endogenous(frame, bin_days)},
                   {"items per group": counts}, frame)
