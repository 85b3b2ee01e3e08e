"""Time-step granularity trade-off (paper, Section 4.6, Table 3): accuracy against training time.

One row per run: user/item granularity, test RMSE and the mean training seconds per epoch of
each phase (`time/*_phase_s` in metrics.json's epoch rows, as RRN records them), or of the whole
epoch when a model has no phases. A sweep's folder stands for its finished trials.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from rrnx.report.plotting import finish, panel_figure
from rrnx.report.section import ReportOptions, Section, Skip

KEY, TITLE, PAPER = "granularity", "Granularity trade-off", "Table 3"
PHASE_PREFIX, PHASE_SUFFIX = "time/", "_phase_s"


def phase_seconds(epochs: list[dict]) -> dict[str, float]:
    """Mean seconds per epoch of each phase ('user', 'item'...) and of the whole epoch ('epoch')."""
    frame = pd.DataFrame(epochs)
    means = {"epoch": float(frame["seconds"].mean()) if "seconds" in frame else np.nan}
    for column in frame.columns:
        if column.startswith(PHASE_PREFIX) and column.endswith(PHASE_SUFFIX):
            means[column[len(PHASE_PREFIX):-len(PHASE_SUFFIX)]] = float(frame[column].mean())
    return means


def granularity_table(runs) -> pd.DataFrame:
    """Table 3: one row per run."""
    rows = []
    for run in runs:
        seconds = phase_seconds(run.metrics.get("epochs", []))
        user_g, item_g = run.granularity
        rows.append({"run": run.label, "model": run.model_label, "granularity": f"{user_g} / {item_g}",
                     "test_rmse": run.metrics.get("test_rmse"),
                     "user_phase_s": seconds.get("user", np.nan), "item_phase_s": seconds.get("item", np.nan),
                     "epoch_s": seconds["epoch"], "epochs": len(run.metrics.get("epochs", []))})
    return pd.DataFrame(rows)


def plot_granularity(table: pd.DataFrame):
    """Test RMSE against seconds per epoch, one labelled point per run."""
    fig, (ax,) = panel_figure(["accuracy vs training time per epoch"])
    for model, sub in table.groupby("model", sort=False):
        ax.scatter(sub["epoch_s"], sub["test_rmse"], label=model)
        for _, row in sub.iterrows():
            ax.annotate(row["granularity"], (row["epoch_s"], row["test_rmse"]), fontsize=7,
                        xytext=(4, 3), textcoords="offset points")
    ax.set_xlabel("training seconds per epoch (mean)")
    ax.set_ylabel("test RMSE")
    ax.legend(fontsize=7)
    return finish(fig)


def section(runs, options: ReportOptions) -> Section:
    granularities = {run.granularity for run in runs}
    if len(granularities) < 2:
        raise Skip(one_granularity_note(runs[0]))
    table = granularity_table(runs)
    caption = ("Granularity (user / item), test RMSE and mean training seconds per epoch of the user and item "
               "phases (RRN) and of the whole epoch (wall clock, including validation).")
    return Section(KEY, TITLE, PAPER, caption, {KEY: plot_granularity(table)}, {"Table 3": table.round(4)}, table)


def one_granularity_note(run) -> str:
    """Why Table 3 is not drawn from runs at one granularity, and the commands that would give it one."""
    user_g, item_g = run.granularity
    other = "7d" if user_g == item_g == "14d" else "14d"
    return (f"every run given uses {user_g} / {item_g} time steps (user / item), so there is no trade-off to show; "
            f"train the same recipe at another granularity, e.g. `rrnx fit {run.run_dir}/recipe.yaml "
            f"--data.user_granularity={other} --data.item_granularity={other} --out {run.run_dir}-{other}`, "
            "or sweep a grid (`rrnx sweep sweeps/rrn-granularity.yaml`), then give those runs (or the sweep folder) "
            "to `rrnx report` with these")
