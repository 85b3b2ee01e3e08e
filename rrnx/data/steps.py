"""Time steps (paper, Section 3.1): ratings bucketed per side at its own granularity.

Each user (and each item) becomes a sequence of its *active* steps only, the steps in which it
rated (was rated); steps without ratings are skipped, and the wallclock tau (eq. 5) tells the
model how much time passed. Everything is stored in a compact CSR layout: never a dense
users x items x steps tensor.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from rrnx.data import parallel
from rrnx.data.ordering import index_dtype, stable_order
from rrnx.errors import RrnxError

DAY = 86_400
GRANULARITY_PATTERN = re.compile(r"^(\d+)(d|w|mo)$")


@dataclass(frozen=True)
class Granularity:
    """A step length, `Nd` (days), `Nw` (weeks) or `Nmo` (calendar months), counted from `origin`."""

    count: int
    unit: str  # "d" or "mo" (weeks are stored as 7*N days)
    origin: int  # unix seconds UTC of step 0's start (midnight / first of month)

    @classmethod
    def parse(cls, text: str, origin_ts: int, key: str = "granularity") -> "Granularity":
        match = GRANULARITY_PATTERN.match(str(text).strip())
        if not match or int(match.group(1)) < 1:
            raise RrnxError(f"data.{key}: {text!r} is not a granularity; expected e.g. 1d, 7d, 14d, 2w, 1mo, 2mo")
        count, unit = int(match.group(1)), match.group(2)
        if unit == "w":
            count, unit = 7 * count, "d"
        day0 = pd.Timestamp(int(origin_ts), unit="s", tz="UTC").normalize()
        if unit == "mo":
            day0 = day0.replace(day=1)
        return cls(count, unit, int(day0.timestamp()))

    def step_of(self, ts) -> np.ndarray:
        """Step index of each unix timestamp (negative before the origin). Many timestamps over a span of
        days, origin at midnight: each day's step looked up in a per-day table, chunk by chunk on the
        preparation's threads (a step holds whole days, so a timestamp's step is its day's)."""
        ts = np.asarray(ts, dtype=np.int64)
        if ts.ndim == 1 and len(ts) > 100_000 and self.origin % DAY == 0:
            first, last = int(ts.min()) // DAY, int(ts.max()) // DAY
            if last - first < len(ts):
                table = self._step_of(np.arange(first, last + 1, dtype=np.int64) * DAY)  # (days,)
                out = np.empty(len(ts), dtype=np.int64)

                def look_up(lo):
                    day = np.floor_divide(ts[lo:lo + parallel.CHUNK], DAY)
                    day -= first
                    out[lo:lo + parallel.CHUNK] = table[day]

                parallel.each(look_up, range(0, len(ts), parallel.CHUNK))
                return out
        return self._step_of(ts)

    def _step_of(self, ts: np.ndarray) -> np.ndarray:
        if self.unit == "d":
            return np.floor_divide(ts - self.origin, self.count * DAY)
        months = _month_number(ts) - _month_number(np.array([self.origin]))[0]
        return np.floor_divide(months, self.count)

    def start_of(self, step) -> np.ndarray:
        """Unix timestamp at which each step begins."""
        step = np.asarray(step, dtype=np.int64)
        if self.unit == "d":
            return self.origin + step * self.count * DAY
        first = _month_number(np.array([self.origin]))[0] + step * self.count  # months since year 0
        return (first - 1970 * 12).astype("datetime64[M]").astype("datetime64[s]").astype(np.int64)

    @property
    def days(self) -> float:
        """Approximate length in days (months count 30.44 days)."""
        return self.count * (1.0 if self.unit == "d" else 30.44)


def _month_number(ts: np.ndarray) -> np.ndarray:
    """year * 12 + month - 1 of each unix timestamp (UTC). Per rating only where step_of has no per-day
    table to fill instead."""
    months = np.asarray(ts, dtype=np.int64).astype("datetime64[s]").astype("datetime64[M]").astype(np.int64)
    return months + 1970 * 12


@dataclass
class StepSequences:
    """One side's training history, CSR over entities -> active steps -> ratings.

    Entity e's active steps are rows offsets[e]:offsets[e+1] of the step arrays, in time order;
    step row s holds the ratings rating_offsets[s]:rating_offsets[s+1].
    """

    side: str  # "user" or "item"
    granularity: Granularity
    offsets: np.ndarray  # (n_entities + 1,) int64
    step: np.ndarray  # (n_active,) int64 global step index
    tau: np.ndarray  # (n_active,) float32 standardized wallclock of the step's start (eq. 5)
    prev_tau: np.ndarray  # (n_active,) float32 tau of the entity's previous active step (its own tau if first)
    newbie: np.ndarray  # (n_active,) float32 1 on the entity's first active step (eq. 5's 1_newbie)
    rating_offsets: np.ndarray  # (n_active + 1,) int64
    other: np.ndarray  # (n_ratings,) int32 (int64 past 2^31) index of the other side (items for users, users for items)
    value: np.ndarray  # (n_ratings,) float32 rating
    tau_mean: float  # days since epoch; tau = (day - tau_mean) / tau_std
    tau_std: float
    # (n_ratings,) int32 (int64 past 2^31 rows) the row, among the OTHER side's active steps, that holds each
    # rating: set by the data module once both sides are bucketed (link_sides), so a model finds the other
    # side's state
    other_row: np.ndarray | None = None

    @property
    def n_entities(self) -> int:
        return len(self.offsets) - 1

    @property
    def n_active(self) -> int:
        return len(self.step)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def tau_of_step(self, step) -> np.ndarray:
        """Standardized wallclock of arbitrary steps (e.g. test steps) on the training scale."""
        return standardized_tau(self.granularity, step, self.tau_mean, self.tau_std)


def standardized_tau(granularity: Granularity, step, tau_mean: float, tau_std: float) -> np.ndarray:
    """Eq. (5)'s wallclock tau of each step: its start in days, standardized (Section 4.1)."""
    days = granularity.start_of(step) / DAY
    return ((days - tau_mean) / tau_std).astype(np.float32)


def build_sequences(side: str, entity: np.ndarray, other: np.ndarray, value: np.ndarray, ts: np.ndarray,
                    n_entities: int, granularity: Granularity, return_order: bool = False) -> tuple:
    """Bucket one side's ratings; returns the sequences and, for each input rating, the row of the
    active step that holds it (so a model can find the state *before* that step); with `return_order`
    also the order (n,) that puts the input ratings in the sequences' order. Both are int32 when the
    ratings fit (half the memory of the bucketing's largest temporaries at Netflix-full scale)."""
    # one int64 key (entity, step) sorted stably: the order of lexsort((step, entity)) with one sort and
    # without the two sorted copies; temporaries are freed as soon as they are spent (Netflix full: 98M)
    key = granularity.step_of(ts)  # (n,) step
    low = int(key.min()) if len(key) else 0
    span = int(key.max()) - low + 1 if len(key) else 1
    key -= low
    key += entity.astype(np.int64, copy=False) * span  # entity * span + (step - low)
    index = index_dtype(len(key))  # rows and positions fit
    order, key = stable_order(key, consume=True, dtype=index)  # by entity, then step, then input order
    new_row = np.ones(len(order), dtype=bool)
    np.not_equal(key[1:], key[:-1], out=new_row[1:])
    starts = np.flatnonzero(new_row)
    row_entity, row_step = np.divmod(key[starts], span)
    row_step += low
    del key
    row_of_sorted = np.cumsum(new_row, dtype=index)  # (n,) active-step row of each sorted rating, + 1
    row_of_sorted -= 1
    del new_row
    offsets = np.zeros(n_entities + 1, dtype=np.int64)
    offsets[1:] = np.bincount(row_entity, minlength=n_entities)
    offsets = np.cumsum(offsets)
    rating_offsets = np.append(starts, len(order)).astype(np.int64)
    days = granularity.start_of(row_step) / DAY
    tau_mean, tau_std = float(days.mean()), float(days.std()) or 1.0
    tau = ((days - tau_mean) / tau_std).astype(np.float32)  # standardized_tau without a second start_of
    first = np.zeros(len(row_step), dtype=bool)
    first[offsets[:-1][np.diff(offsets) > 0]] = True
    prev_tau = np.where(first, tau, np.roll(tau, 1)).astype(np.float32)
    row_of_rating = np.empty(len(order), dtype=index)
    parallel.scatter(row_of_rating, order, row_of_sorted)  # row_of_rating[order] = row_of_sorted
    del row_of_sorted
    seq = StepSequences(side, granularity, offsets, row_step.astype(np.int64), tau, prev_tau,
                        first.astype(np.float32), rating_offsets,
                        parallel.take(other, order, index_dtype(int(other.max()) + 1 if len(other) else 0)),
                        parallel.take(value, order, np.float32), tau_mean, tau_std)
    if not return_order:
        return seq, row_of_rating
    return seq, row_of_rating, order


def link_sides(user: StepSequences, item: StepSequences, bucketed: dict) -> None:
    """Set each side's other_row from the two bucketings of the same ratings: `bucketed` maps each side
    to build_sequences' (rows, order), and is emptied as they are spent (at Netflix-full scale each is
    0.4 GiB). A user's rating, in the user sequences' order, sits in the item row
    item_rows[user_order], and the other way round. The rows keep build_sequences' dtype (int32 where
    they fit)."""
    user_rows, user_order = bucketed.pop("user")
    item_rows, item_order = bucketed.pop("item")
    user.other_row = parallel.take(item_rows, user_order)
    del item_rows, user_order
    item.other_row = parallel.take(user_rows, item_order)


