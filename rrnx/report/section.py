"""What every analysis hands the page: a Section (figures, tables, the frame it plotted), or a
Skip saying why the given runs do not support it."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd


class Skip(Exception):
    """The runs given do not support this analysis; the message says why (shown on the page)."""


@dataclass
class ReportOptions:
    """Sample sizes and selections; defaults as in the paper where it gives them."""

    n_users: int = 1000  # Figs. 5, 8: fixed random users, the same at every step
    n_active_users: int = 5000  # Figs. 6-7: active users sampled afresh at every step
    items: list[int] | None = None  # user-chosen item ids (Figs. 5-7)
    event_date: str | None = None  # the exogenous event for --items (Fig. 5), e.g. an award
    shift_date: str | None = None  # a known rating-scale change (Fig. 8) when no synthetic truth
    items_per_group: int = 256  # cap on items traced per group (footnote 2 selects 256 movies)
    fluctuation_threshold: float = 0.5  # footnote 2: fluctuation > 0.5
    min_period_ratings: int = 20  # footnote 2 asks 1000 per year on Netflix; scaled for small sets
    min_test_ratings: int = 20  # footnote 3 asks 100 in the test month on Netflix
    min_bucket_ratings: int = 20  # bucketed figures (cold start, update) leave out smaller buckets
    seed: int = 0
    dpi: int = 100


@dataclass
class Section:
    """One analysis as shown: figures (file stem -> matplotlib Figure), small tables for the page,
    and `frame`, everything it plotted (written as CSV and logged)."""

    key: str
    title: str
    paper: str  # which figure/table of the paper it reproduces
    caption: str
    figures: dict = field(default_factory=dict)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    frame: pd.DataFrame | None = None
    notes: list[str] = field(default_factory=list)
