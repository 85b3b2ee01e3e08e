"""Figure scaffolding shared by the analyses: one panel per run, dates on the x axis."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: reports run on servers without a display

import matplotlib.dates as mdates  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter  # noqa: E402

PANEL_SIZE = (5.0, 3.4)
FORMATS = ("png", "pdf", "svg")  # PNG for the page and W&B; PDF and SVG scale for a paper
# TrueType fonts in PDFs (matplotlib's default Type 3 is refused by some publishers' checks); no
# creation dates, so an unchanged figure gives the same file
VECTOR_SETTINGS = {"pdf.fonttype": 42, "svg.hashsalt": "rrnx"}
NO_DATES = {"pdf": {"CreationDate": None}, "svg": {"Date": None}}
BYTE_UNITS = ((1e12, "TB"), (1e9, "GB"), (1e6, "MB"), (1e3, "kB"), (1.0, "B"))


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


def byte_label(value: float, _position=None) -> str:
    """300 kB, 1.5 MB: decimal units, as the paper's sizes (4 bytes per parameter)."""
    for unit, name in BYTE_UNITS:
        if value >= unit:
            return f"{value / unit:.3g} {name}"
    return f"{value:.3g} B"


def log_ticks(low: float, high: float, fewest: int = 3, most: int = 7) -> list[float]:
    """Tick positions in [low, high] on a log axis: the coarsest of 10^k, 1-2-5, 1-2-3-5 and
    1-1.5-2-3-4-5-6-8 per decade that gives `fewest` ticks, thinned to at most `most`."""
    decades = range(int(np.floor(np.log10(low))), int(np.ceil(np.log10(high))) + 1)
    for mantissas in ((1.0,), (1.0, 2.0, 5.0), (1.0, 2.0, 3.0, 5.0), (1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0)):
        ticks = [m * 10.0 ** e for e in decades for m in mantissas if low <= m * 10.0 ** e <= high]
        if len(ticks) >= fewest:
            break
    return ticks[::-(-len(ticks) // most)] if ticks else ticks


def bytes_axis(ax) -> None:
    """A log x axis of sizes in bytes with a few readable labels (300 kB, 1 MB). Matplotlib's
    default labels the minor ticks (2x10^5, 3x10^5, 4x10^5...) when the data spans less than a
    decade, and they collide (Fig. 1 did); its fallback on short spans crowds them too."""
    ax.set_xscale("log")
    low, high = ax.get_xlim()  # after the data and margins are in
    ax.set_xlim(low, high)
    ax.xaxis.set_major_locator(FixedLocator(log_ticks(low, high)))
    ax.xaxis.set_major_formatter(FuncFormatter(byte_label))
    ax.xaxis.set_minor_formatter(NullFormatter())


def mark_dates(ax, dates, label: str | None = None, color: str = "0.3") -> None:
    """Dashed vertical lines at event dates (awards, a scale change)."""
    for k, date in enumerate(sorted(set(dates))):
        ax.axvline(pd.Timestamp(date), color=color, ls="--", lw=1, label=label if k == 0 else None)


def finish(fig):
    fig.tight_layout()
    return fig


def close(fig) -> None:
    plt.close(fig)


def save_figure(fig, stem: Path, dpi: int) -> list[Path]:
    """`fig` as stem.png (at `dpi`), stem.pdf and stem.svg, then closed; returns the paths in FORMATS order."""
    paths = [stem.with_name(f"{stem.name}.{fmt}") for fmt in FORMATS]
    with matplotlib.rc_context(VECTOR_SETTINGS):
        for path, fmt in zip(paths, FORMATS):
            fig.savefig(path, dpi=dpi, metadata=NO_DATES.get(fmt))
    close(fig)
    return paths


def min_yspan(ax, span: float) -> None:
    """Widen a flat panel's y range to at least `span`, centred, so a static model's constant
    curve reads as flat instead of magnifying float rounding."""
    low, high = ax.get_ylim()
    if high - low < span:
        mid = (low + high) / 2
        ax.set_ylim(mid - span / 2, mid + span / 2)
