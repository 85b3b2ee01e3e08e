"""Rating-scale change (paper, Section 4.3 "User Interface Changes", Fig. 8).

Average predictions over a fixed random sample of users at every item time step, one curve
per group of items released (first rated) in the same period. A change of the rating scale
(Netflix relabelled its stars in early 2004; the synthetic data plants a global shift) moves
every curve of a temporal model at once; a static model's curves are constant.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from rrnx.report.plotting import date_axis, finish, mark_dates, min_yspan, panel_figure
from rrnx.report.section import ReportOptions, Section
from rrnx.report.trace import date_ts, first_rating_times, sample_users, step_grid, trace_items

KEY, TITLE, PAPER = "scale_shift", "Rating-scale change", "Fig. 8"
CATALOGUE = "catalogue (at start)"


def release_groups(data, truth: dict | None = None) -> pd.DataFrame:
    """item_idx -> group: release year, or quarter when the training data spans under two years.
    Release dates come from the synthetic truth when there is one (items not listed there were
    out at the start), else from each item's first training rating."""
    first = first_rating_times(data)
    train_ts = data.split.train["timestamp"]
    short = (train_ts.max() - train_ts.min()) < 2 * 365 * 86_400
    if truth and "item_release" in truth:
        released = {r["item"]: r["date"] for r in truth["item_release"].get("released", [])}
        dates = pd.Series([released.get(i) for i in data.split.item_ids[first.index]], index=first.index)
        when = pd.to_datetime(dates)
        label = when.dt.to_period("Q" if short else "Y").astype(str).where(dates.notna(), CATALOGUE)
    else:
        when = pd.to_datetime(first, unit="s")
        label = when.dt.to_period("Q" if short else "Y").astype(str)
    return pd.DataFrame({"item_idx": first.index.to_numpy(), "group": label.to_numpy(),
                         "first_step": data.item_granularity.step_of(first.to_numpy())})


def rating_scale_trace(model, data, groups: pd.DataFrame, n_users: int = 1000, items_per_group: int = 256,
                       seed: int = 0) -> pd.DataFrame:
    """Per (group, step) from the group's first rated step on: the mean prediction over `n_users`
    fixed users and at most `items_per_group` sampled items of the group."""
    rng = np.random.default_rng(seed)
    shuffled = groups.iloc[rng.permutation(len(groups))]
    chosen = shuffled[shuffled.groupby("group").cumcount() < items_per_group].sort_values("item_idx")
    trace = trace_items(model, data, chosen["item_idx"].to_numpy(), sample_users(data, n_users, seed),
                        step_grid(data, "item", "train"))
    trace = trace.merge(chosen, on="item_idx")
    trace = trace[trace["step"] >= trace.groupby("group")["first_step"].transform("min")]
    return (trace.groupby(["group", "step", "time"])
            .agg(prediction=("prediction", "mean"), items=("item_idx", "nunique")).reset_index())


def plot_rating_scale(frame: pd.DataFrame, shift_date: str | None = None):
    """Fig. 8: one panel per run, one curve per release group."""
    runs = list(dict.fromkeys(frame["run"]))
    fig, axes = panel_figure(runs)
    for ax, run in zip(axes, runs):
        for group, sub in frame[frame["run"] == run].groupby("group"):
            ax.plot(sub["time"], sub["prediction"], lw=1.6 if group == CATALOGUE else 1.1, label=group)
        if shift_date:
            mark_dates(ax, [shift_date], "scale change")
        min_yspan(ax, 0.4)
        date_axis(ax)
        ax.legend(fontsize=7, ncol=2)
    axes[0].set_ylabel("avg predicted rating")
    return finish(fig)


def shift_summary(frame: pd.DataFrame, data, shift_date: str) -> pd.DataFrame:
    """Per run and group with steps on both sides: mean prediction before and after the step of
    the change, and the difference."""
    shift_step = int(data.item_granularity.step_of([date_ts(shift_date, "scale-change date")])[0])
    side = np.where(frame["step"] < shift_step, "before", np.where(frame["step"] > shift_step, "after", "at"))
    means = frame.assign(side=side).pivot_table(index=["run", "group"], columns="side", values="prediction")
    means = means.reindex(columns=["before", "after"]).dropna().rename_axis(columns=None)
    return means.assign(change=means["after"] - means["before"]).reset_index().round(4)


def section(runs, options: ReportOptions) -> Section:
    frames, shift_date = [], options.shift_date
    for run in runs:
        groups = release_groups(run.data, run.truth)
        frame = rating_scale_trace(run.model, run.data, groups, options.n_users, options.items_per_group, options.seed)
        frames.append(frame.assign(run=run.label))
        if shift_date is None and run.truth and run.truth.get("scale_shift", {}).get("delta"):
            shift_date = run.truth["scale_shift"]["date"]
    frame = pd.concat(frames, ignore_index=True)
    caption = (f"Average predicted rating over {options.n_users:,} fixed random users, per item time step, "
               "one curve per group of items released (first rated) in the same period"
               + (f"; dashed: the rating-scale change on {shift_date}." if shift_date else "."))
    tables = {}
    if shift_date:
        tables["mean prediction before/after the change"] = shift_summary(frame, runs[0].data, shift_date)
    return Section(KEY, TITLE, PAPER, caption, {KEY: plot_rating_scale(frame, shift_date)}, tables, frame)
