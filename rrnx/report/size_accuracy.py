"""Model size against accuracy (paper, Section 4.2, Fig. 1): test RMSE against bytes, 4 per
parameter (footnote 1), one labelled point per run."""

from __future__ import annotations

import pandas as pd

from rrnx.report.plotting import bytes_axis, finish, panel_figure
from rrnx.report.section import ReportOptions, Section

KEY, TITLE, PAPER = "size_accuracy", "Size vs accuracy", "Fig. 1"


def size_accuracy(runs) -> pd.DataFrame:
    return pd.DataFrame([{"run": run.label, "model": run.model_label, "size_bytes": run.metrics.get("size_bytes"),
                          "params": run.metrics.get("params"), "test_rmse": run.metrics.get("test_rmse")}
                         for run in runs])


def plot_size_accuracy(frame: pd.DataFrame):
    fig, (ax,) = panel_figure(["test RMSE vs model size"])
    for model, sub in frame.groupby("model", sort=False):
        ax.scatter(sub["size_bytes"], sub["test_rmse"], s=40, label=model)
        for _, row in sub.iterrows():
            ax.annotate(row["run"], (row["size_bytes"], row["test_rmse"]), fontsize=7,
                        xytext=(4, 3), textcoords="offset points")
    ax.set_xscale("log")
    ax.margins(x=0.3, y=0.2)
    bytes_axis(ax)
    ax.set_xlabel("model size (4 bytes per parameter)")
    ax.set_ylabel("test RMSE")
    ax.legend(fontsize=7)
    return finish(fig)


def section(runs, options: ReportOptions) -> Section:
    frame = size_accuracy(runs)
    caption = "Test RMSE (best validation epoch) against model size in bytes (log scale), one point per run."
    return Section(KEY, TITLE, PAPER, caption, {KEY: plot_size_accuracy(frame)}, {"runs": frame}, frame)
