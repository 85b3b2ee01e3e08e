"""Figure scaffolding shared by the analyses: one panel per run, dates on the x axis."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # files only: reports run on servers without a display

import matplotlib.dates as mdates  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

PANEL_SIZE = (5.0, 3.4)


def panel_figure(titles: list[str], sharey: bool = True):
    """A row of panels (one per run), returned as (figure, axes list)."""
    n = max(len(titles), 1)
    fig, axes = plt.subplots(1, n, figsize=(PANEL_SIZE[0] * n, PANEL_SIZE[1]), sharey=sharey, squeeze=False)
    for ax, title in zip(axes[0], titles):
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    return fig, list(axes[0])


def date_axis(ax) -> None:
    locator = mdates.AutoDateLocator(maxticks=6)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))


def mark_dates(ax, dates, label: str | None = None, color: str = "0.3") -> None:
    """Dashed vertical lines at event dates (awards, a scale change)."""
    for k, date in enumerate(sorted(set(dates))):
        ax.axvline(pd.Timestamp(date), color=color, ls="--", lw=1, label=label if k == 0 else None)


def finish(fig):
    fig.tight_layout()
    return fig


def close(fig) -> None:
    plt.close(fig)


def min_yspan(ax, span: float) -> None:
    """Widen a flat panel's y range to at least `span`, centred, so a static model's constant
    curve reads as flat instead of magnifying float rounding."""
    low, high = ax.get_ylim()
    if high - low < span:
        mid = (low + high) / 2
        ax.set_ylim(mid - span / 2, mid + span / 2)
