"""Exogenous dynamics (paper, Section 4.3, Fig. 5): how predictions react to an outside event.

For chosen items (an award's winners; on synthetic data the planted bumps and their
popularity-matched controls), the average prediction over a fixed random sample of users, who
may or may not have rated the item, at every item time step, relative to a general baseline (the
same average over random items, which carries global changes such as a rating-scale shift)
and to the item's own level before the event. A temporal model should rise after the event
for the bumped items and not for the controls; a static one (PMF) is flat.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from rrnx.errors import RrnxError
from rrnx.report.plotting import date_axis, finish, mark_dates, min_yspan, panel_figure
from rrnx.report.section import ReportOptions, Section, Skip
from rrnx.report.trace import date_ts, item_indices, sample_users, step_grid, trace_items

KEY, TITLE, PAPER = "exogenous", "Exogenous dynamics", "Fig. 5"
COLORS = {"bumped": "tab:red", "control": "0.45", "chosen": "tab:blue"}
LINE_STYLES = ("-", "--", ":")  # one per event date


def events_from_truth(truth: dict) -> pd.DataFrame:
    """The planted bumps of synthetic data and their controls: item, kind, event date."""
    rows = [row for bump in truth.get("bumps", [])
            for row in ((bump["item"], "bumped", bump["date"]), (bump["control"], "control", bump["date"]))]
    return pd.DataFrame(rows, columns=["item", "kind", "date"])


def exogenous_dynamics(model, data, events: pd.DataFrame, n_users: int = 1000, seed: int = 0,
                       n_baseline_items: int = 200) -> pd.DataFrame:
    """Per (item, step): `prediction`, the mean over `n_users` fixed users; `general`, the same
    mean over a random sample of all items (the general baseline: it carries global changes
    such as a rating-scale shift); and `relative`, prediction - general minus its mean over the
    steps before the item's event step (0 before the event for an item that moves like the rest).

    `events` has columns item (original id), kind (bumped / control / chosen) and date; items
    without a training rating are left out (a synthetic bump on an item the split dropped).
    """
    known = events[events["item"].isin(data.split.item_ids)].reset_index(drop=True)
    if known.empty:
        raise RrnxError("none of the event items has a training rating in this run's data")
    items = item_indices(data, known["item"])
    rng = np.random.default_rng(seed)
    baseline_items = np.sort(rng.choice(data.n_items, size=min(n_baseline_items, data.n_items), replace=False))
    users = sample_users(data, n_users, seed)
    grid = step_grid(data, "item", "train")
    trace = trace_items(model, data, np.union1d(items, baseline_items), users, grid)
    general = trace[trace["item_idx"].isin(baseline_items)].groupby("step")["prediction"].mean().rename("general")
    frame = known.assign(item_idx=items).merge(trace, on="item_idx").merge(general, on="step")
    frame["event_step"] = data.item_granularity.step_of([date_ts(d, "event date") for d in frame["date"]])
    above = frame["prediction"] - frame["general"]
    before = above.where(frame["step"] < frame["event_step"])
    frame["relative"] = above - before.groupby([frame["item"], frame["date"]]).transform("mean")
    return frame.drop(columns="item_idx")


def plot_exogenous(frame: pd.DataFrame):
    """Fig. 5: one panel per run, a thin line per item and the group mean per event date."""
    runs = list(dict.fromkeys(frame["run"]))
    fig, axes = panel_figure(runs)
    for ax, run in zip(axes, runs):
        sub = frame[frame["run"] == run]
        dates = sorted(sub["date"].unique())
        for (kind, date), group in sub.groupby(["kind", "date"]):
            color, style = COLORS.get(kind, "tab:blue"), LINE_STYLES[dates.index(date) % len(LINE_STYLES)]
            for _, item in group.groupby("item"):
                ax.plot(item["time"], item["relative"], color=color, alpha=0.12, lw=0.7)
            mean = group.groupby("time")["relative"].mean()
            ax.plot(mean.index, mean.to_numpy(), color=color, ls=style, lw=2, label=f"{kind} ({date}, {group['item'].nunique()})")
        mark_dates(ax, sub["date"], "event")
        ax.axhline(0, color="k", lw=0.6)
        min_yspan(ax, 0.4)
        date_axis(ax)
        ax.legend(fontsize=7)
    axes[0].set_ylabel("avg prediction - general baseline\n(0 = as before the event)")
    return finish(fig)


def section(runs, options: ReportOptions) -> Section:
    frames = []
    for run in runs:
        events = chosen_events(run, options)
        frame = exogenous_dynamics(run.model, run.data, events, options.n_users, options.seed)
        frames.append(frame.assign(run=run.label))
    frame = pd.concat(frames, ignore_index=True)
    summary = event_summary(frame).pivot_table(index=["kind", "date", "items"], columns="run", values="mean_change")
    summary = summary.rename_axis(columns=None).reset_index()
    caption = (f"Average predicted rating of each item over {options.n_users:,} fixed random users (who may or "
               "may not have rated it), per item time step, relative to a general baseline (the same average over "
               "200 random items) and shifted so the steps before the event average 0; thick: group means.")
    return Section(KEY, TITLE, PAPER, caption, {KEY: plot_exogenous(frame)},
                   {"mean change in the 4 steps after the event step": summary}, frame)


def chosen_events(run, options: ReportOptions) -> pd.DataFrame:
    if options.items:
        if not options.event_date:
            raise Skip("--items was given without --event-date: the event to measure against")
        item_indices(run.data, options.items)  # an id unknown to the run's training data is an error
        return pd.DataFrame({"item": options.items, "kind": "chosen", "date": options.event_date})
    if run.truth and run.truth.get("bumps"):
        return events_from_truth(run.truth)
    raise Skip("needs items and an event: synthetic truth with bumps, or --items with --event-date")


def event_summary(frame: pd.DataFrame, steps_after: int = 4) -> pd.DataFrame:
    """Per run and group: mean `relative` over the `steps_after` steps after the event's step (a
    causal model sees the event's ratings only once their step has passed)."""
    offset = frame["step"] - frame["event_step"]
    after = frame[(offset >= 1) & (offset <= steps_after)]
    return (after.groupby(["run", "kind", "date"])
            .agg(items=("item", "nunique"), mean_change=("relative", "mean")).reset_index().round(4))
