"""Synthetic temporal ratings with planted, recorded effects: rrnx's embedded default dataset.

The full Netflix and IMDb sets (Wu et al., WSDM 2017, Table 1) are not redistributable, so rrnx
generates data of the same shape whose temporal structure is known. A static factorisation
(PMF) fits only the stationary part; the planted effects are the ones the paper's Section 4.3
shows an RRN tracking: taste drift (Sec. 1 "User Interest"), item perception trends (Sec. 1
"Change in Movie Perception", Fig. 6-7), award bumps (Sec. 4.3 "Exogenous", Fig. 5), seasonal
items (Sec. 1 "Seasonal Changes") and a global rating-scale change (Sec. 4.3 "User Interface
Changes", Fig. 8). The generative model and the truth file are documented in docs/synthetic.md.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from rrnx.data import parallel
from rrnx.data.cache import read_parquet, release_arrow_memory, write_atomic
from rrnx.data.ordering import chosen_mask, first_occurrences
from rrnx.errors import RecipeError

GENERATOR_VERSION = 1  # recorded in the truth file
# The cache key also holds a hash of the generator's source (this file and the sorting and threading
# helpers it calls): any change to it invalidates cached data (a manual version number was forgotten
# once, and stale data was silently reused).
SOURCE_HASH = hashlib.sha256(b"".join(
    (Path(__file__).parent / name).read_bytes() for name in ("synthetic.py", "ordering.py", "parallel.py"))).hexdigest()[:16]
USER_ID_OFFSET, USER_ID_STRIDE = 1000, 2  # ids are deliberately not 0..n-1
ITEM_ID_OFFSET, ITEM_ID_STRIDE = 1000, 3
SECONDS_PER_DAY = 86_400
MAX_BIN_CELLS = 20_000_000  # bound on the (time bin x item) popularity table, ~160 MB
CHUNK = 2_000_000  # ratings per chunk when gathering factor rows
LOOKUP_CHUNK = 4_000_000  # draws per chunk of the item lookups (sorted within a chunk, in cache)

DEFAULT_EFFECTS: dict = {
    # stationary part: r = global_mean + b_u + b_i + <p_u, q_i>
    "rank": 8,
    "global_mean": 3.4,
    "user_bias_sd": 0.3,
    "item_bias_sd": 0.4,
    "factor_sd": 0.4,  # per component: sd(<p,q>) = sqrt(rank) * factor_sd**2 ~ 0.45
    "noise_sd": 0.6,
    # arrivals and activity
    "initial_user_frac": 0.3,
    "initial_item_frac": 0.6,
    "user_activity_sigma": 1.0,  # lognormal sigma of per-user rating rate
    "item_popularity_sigma": 1.2,  # lognormal sigma of per-item popularity
    "novelty_boost": 3.0,  # extra popularity multiple right after release
    "novelty_days": 60.0,  # e-folding time of that boost
    # user taste drift: p_u(t) = p_u0 + s(t) (p_u1 - p_u0)
    "drift_user_frac": 0.3,
    "drift_start": None,  # ISO date; None = start
    "drift_end": None,  # ISO date; None = end of the generated span
    # item perception trends: b_i += slope_i * years since release
    "trend_item_frac": 0.1,
    "trend_slope_per_year": 0.8,  # typical |slope|; each item draws |slope| * U(0.5, 1.5), random sign
    # seasonal items: b_i += amplitude * cos(2 pi (doy - peak_i) / 365.25)
    "seasonal_item_frac": 0.05,
    "seasonal_amplitude": 0.5,
    # exogenous bumps ("an award"), each with a popularity-matched control item
    "bump_item_frac": 0.04,
    "bump_size": 1.0,
    "bump_half_life_days": 30.0,
    "bump_dates": None,  # list of ISO dates; None = at 55% and 75% of the span
    # global rating-scale shift
    "scale_shift_delta": 0.4,
    "scale_shift_date": None,  # ISO date; None = at 40% of the span
    # the integer rating scale [low, high]; every effect above is set on 1..5 and stretched to it
    "rating_scale": [1, 5],
}
DEFAULT_BUMP_FRACTIONS = (0.55, 0.75)
DEFAULT_SCALE_SHIFT_FRACTION = 0.4
BUMP_MIN_HISTORY_DAYS = 28  # bumped/control items are released at least this long before the bump

# Table 1 of the paper. n_ratings = train + test size; days run from start to the end of the test period.
PRESETS: dict[str, dict] = {
    "small": {"n_users": 3000, "n_items": 800, "n_ratings": 150_000, "start": "2005-01-01", "days": 365},
    "netflix-6m": {"n_users": 311_300, "n_items": 17_700, "n_ratings": 15_800_000,
                   "start": "2005-06-01", "days": 214},  # 2005-06-01 .. 2005-12-31
    "netflix-1y": {"n_users": 345_900, "n_items": 16_900, "n_ratings": 45_400_000,
                   "start": "2004-06-01", "days": 395},  # 2004-06-01 .. 2005-06-30
    "netflix-full": {"n_users": 477_400, "n_items": 17_800, "n_ratings": 100_400_000,
                     "start": "1999-12-01", "days": 2223,  # 1999-12-01 .. 2005-12-31
                     "scale_shift_date": "2004-03-01"},  # Netflix's label change, early 2004 (Koren 2009)
    "imdb": {"n_users": 440_800, "n_items": 114_300, "n_ratings": 1_429_600,
             "start": "1998-07-01", "days": 5571,  # 1998-07-01 .. 2013-09-30
             "rating_scale": [1, 10]},  # IMDb's stars, the scale of the paper's IMDb RMSEs
    # Not Table 1: MovieLens 100K's shape (943 users, 1,682 items, 1997-09-20 .. 1998-04-22), so
    # recipes/movielens-100k.yaml runs as written where the GroupLens file is not at hand.
    "movielens-100k": {"n_users": 943, "n_items": 1682, "n_ratings": 100_000,
                       "start": "1997-09-20", "days": 215},  # .. 1998-04-22
}
# Whose size each preset has, for the line a recipe without a data file prints ("at IMDb's Table 1 size").
PRESET_SIZED_AS: dict[str, str] = {
    "small": "rrnx's quick-default", "netflix-6m": "Netflix 6 months' Table 1", "netflix-1y": "Netflix 1 year's Table 1",
    "netflix-full": "full Netflix's Table 1", "imdb": "IMDb's Table 1", "movielens-100k": "MovieLens 100K's",
}
# The time split each preset is sized for (test_end exclusive), for recipes to copy.
PRESET_SPLITS: dict[str, dict] = {
    "small": {"train_start": "2005-01-01", "test_start": "2005-11-01", "test_end": "2006-01-01"},
    "netflix-6m": {"train_start": "2005-06-01", "test_start": "2005-12-01", "test_end": "2006-01-01"},
    "netflix-1y": {"train_start": "2004-06-01", "test_start": "2005-06-01", "test_end": "2005-07-01"},
    "netflix-full": {"train_start": "1999-12-01", "test_start": "2005-12-01", "test_end": "2006-01-01"},
    "imdb": {"train_start": "1998-07-01", "test_start": "2013-01-01", "test_end": "2013-10-01"},
    "movielens-100k": {"train_start": "1997-09-20", "test_start": "1998-04-01", "test_end": "1998-04-23"},
}


@dataclass
class _World:
    """Latent parameters of every user and item (indices 0..n-1; ids are derived from them)."""

    user_bias: np.ndarray  # (U,)
    item_bias: np.ndarray  # (I,)
    p0: np.ndarray  # (U, K) user factors at the start of the drift window
    p_delta: np.ndarray  # (U, K) p_u1 - p_u0; zero rows for users that do not drift
    q: np.ndarray  # (I, K)
    activity: np.ndarray  # (U,) relative rating rate per active day
    popularity: np.ndarray  # (I,) relative popularity
    arrival_day: np.ndarray  # (U,) int, first day the user may rate
    release_day: np.ndarray  # (I,) int, first day the item may be rated
    trend_slope: np.ndarray  # (I,) per year, 0 for non-trend items
    seasonal_amp: np.ndarray  # (I,)
    seasonal_peak: np.ndarray  # (I,) day of year, 1..365
    bump_day: np.ndarray  # (I,) int, huge for items without a bump
    bump_size: np.ndarray  # (I,)
    control_of: dict  # bumped item index -> control item index
    drift_users: np.ndarray  # (D,) user indices


def user_ids(index: np.ndarray) -> np.ndarray:
    """Public user id of user index k."""
    return USER_ID_OFFSET + USER_ID_STRIDE * np.asarray(index, dtype=np.int64)


def item_ids(index: np.ndarray) -> np.ndarray:
    """Public item id of item index k."""
    return ITEM_ID_OFFSET + ITEM_ID_STRIDE * np.asarray(index, dtype=np.int64)


# ----------------------------------------------------------------------------- validation


def _parse_date(name: str, value) -> np.datetime64:
    try:
        return np.datetime64(str(value), "D")
    except ValueError:
        raise RecipeError(f"synthetic: {name}={value!r} is not an ISO date like 2005-01-01") from None


def _check_params(n_users, n_items, n_ratings, start, days, effects: dict) -> dict:
    """Validate generate()'s arguments; return the effects with defaults filled in."""
    unknown = sorted(set(effects) - set(DEFAULT_EFFECTS))
    if unknown:
        raise RecipeError(f"synthetic: unknown effect parameter {unknown[0]!r}; valid ones are: "
                          + ", ".join(DEFAULT_EFFECTS))
    for name, value in (("n_users", n_users), ("n_items", n_items), ("n_ratings", n_ratings),
                        ("days", days), ("rank", effects.get("rank", 1))):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
            raise RecipeError(f"synthetic: {name} must be a positive integer, got {value!r}")
    if n_ratings > 0.5 * n_users * n_items:
        raise RecipeError(f"synthetic: n_ratings={n_ratings} is more than half of n_users*n_items="
                          f"{n_users * n_items}; lower n_ratings or raise n_users/n_items")
    _parse_date("start", start)
    eff = {**DEFAULT_EFFECTS, **effects}
    for name, default in DEFAULT_EFFECTS.items():
        value = eff[name]
        if isinstance(default, (int, float)) and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise RecipeError(f"synthetic: {name} must be a number, got {value!r}")
    for name in ("initial_user_frac", "initial_item_frac", "drift_user_frac", "trend_item_frac",
                 "seasonal_item_frac", "bump_item_frac"):
        if not 0.0 <= float(eff[name]) <= 1.0:
            raise RecipeError(f"synthetic: {name} must be in [0, 1], got {eff[name]!r}")
    for name in ("user_bias_sd", "item_bias_sd", "factor_sd", "noise_sd", "user_activity_sigma",
                 "item_popularity_sigma", "novelty_boost", "trend_slope_per_year", "seasonal_amplitude"):
        if float(eff[name]) < 0:
            raise RecipeError(f"synthetic: {name} must be >= 0, got {eff[name]!r}")
    for name in ("novelty_days", "bump_half_life_days"):
        if float(eff[name]) <= 0:
            raise RecipeError(f"synthetic: {name} must be > 0, got {eff[name]!r}")
    for name in ("drift_start", "drift_end", "scale_shift_date"):
        if eff[name] is not None:
            _parse_date(name, eff[name])
    scale = eff["rating_scale"]
    if isinstance(scale, str) or not hasattr(scale, "__len__") or len(scale) != 2 \
            or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in scale) \
            or not scale[0] < scale[1]:
        raise RecipeError(f"synthetic: rating_scale must be [low, high], two integers with low < high "
                          f"(e.g. [1, 10]), got {scale!r}")
    eff["rating_scale"] = [int(v) for v in scale]
    if eff["bump_dates"] is not None:
        if isinstance(eff["bump_dates"], str) or not len(eff["bump_dates"]):
            raise RecipeError("synthetic: bump_dates must be a non-empty list of ISO dates")
        for d in eff["bump_dates"]:
            _parse_date("bump_dates", d)
    return eff


def _resolve_dates(start: str, days: int, eff: dict) -> dict:
    """Fill the default date placements (fractions of the span) in, as ISO strings."""
    start_day = np.datetime64(start, "D")
    at = lambda frac: str(start_day + int(round(frac * days)))  # noqa: E731
    eff = dict(eff)
    eff["drift_start"] = str(_parse_date("drift_start", eff["drift_start"] or start))
    eff["drift_end"] = str(_parse_date("drift_end", eff["drift_end"] or str(start_day + days)))
    eff["scale_shift_date"] = str(_parse_date("scale_shift_date", eff["scale_shift_date"]
                                              or at(DEFAULT_SCALE_SHIFT_FRACTION)))
    eff["bump_dates"] = [str(_parse_date("bump_dates", d))
                         for d in (eff["bump_dates"] or [at(f) for f in DEFAULT_BUMP_FRACTIONS])]
    outside = [d for d in eff["bump_dates"] if not start_day <= np.datetime64(d, "D") < start_day + days]
    if outside:
        raise RecipeError(f"synthetic: bump_dates {outside} fall outside the generated span "
                          f"{start_day}..{start_day + days} (start + days, exclusive)")
    return eff


# ----------------------------------------------------------------------------- latent world


def _arrivals(rng, n: int, initial_frac: float, days: int) -> np.ndarray:
    """Day of arrival: a fraction present on day 0, the rest uniform over the span. Index 0 is initial."""
    day = rng.integers(0, days, size=n)
    initial = rng.random(n) < initial_frac
    initial[0] = True  # someone must exist on day 0
    day[initial] = 0
    return day.astype(np.int64)


def _draw_world(rng, n_users: int, n_items: int, days: int, start: str, eff: dict) -> _World:
    k = int(eff["rank"])
    p0 = rng.normal(0, eff["factor_sd"], (n_users, k)).astype(np.float32)
    p_delta = np.zeros_like(p0)
    drift_users = np.flatnonzero(rng.random(n_users) < eff["drift_user_frac"])
    p1 = rng.normal(0, eff["factor_sd"], (len(drift_users), k)).astype(np.float32)
    p_delta[drift_users] = p1 - p0[drift_users]
    world = _World(
        user_bias=rng.normal(0, eff["user_bias_sd"], n_users), item_bias=rng.normal(0, eff["item_bias_sd"], n_items),
        p0=p0, p_delta=p_delta, q=rng.normal(0, eff["factor_sd"], (n_items, k)).astype(np.float32),
        activity=rng.lognormal(0, eff["user_activity_sigma"], n_users),
        popularity=rng.lognormal(0, eff["item_popularity_sigma"], n_items),
        arrival_day=_arrivals(rng, n_users, eff["initial_user_frac"], days),
        release_day=_arrivals(rng, n_items, eff["initial_item_frac"], days),
        trend_slope=np.zeros(n_items), seasonal_amp=np.zeros(n_items), seasonal_peak=np.ones(n_items, np.int64),
        bump_day=np.full(n_items, np.iinfo(np.int64).max // 4), bump_size=np.zeros(n_items),
        control_of={}, drift_users=drift_users)
    taken = np.zeros(n_items, bool)
    _plant_bumps(rng, world, taken, start, days, eff)
    free = rng.permutation(np.flatnonzero(~taken))
    n_trend = min(len(free), int(round(eff["trend_item_frac"] * n_items)))
    trend, free = free[:n_trend], free[n_trend:]
    sign = rng.choice([-1.0, 1.0], size=n_trend)
    world.trend_slope[trend] = sign * eff["trend_slope_per_year"] * rng.uniform(0.5, 1.5, n_trend)
    seasonal = free[: int(round(eff["seasonal_item_frac"] * n_items))]
    world.seasonal_amp[seasonal] = eff["seasonal_amplitude"]
    world.seasonal_peak[seasonal] = rng.integers(1, 366, size=len(seasonal))
    return world


def _plant_bumps(rng, world: _World, taken: np.ndarray, start: str, days: int, eff: dict) -> None:
    """Give bump_item_frac of the items a bump, split over the bump dates, each paired with a control.

    Candidates are popular items (above the median) released BUMP_MIN_HISTORY_DAYS before the bump;
    they are sorted by popularity and paired neighbour to neighbour, and a coin decides which of each
    pair is bumped: the control has the same release window and nearly the same popularity.
    """
    n_total = int(round(eff["bump_item_frac"] * len(taken)))
    dates = eff["bump_dates"]
    start_day = np.datetime64(start, "D")
    for j, date in enumerate(dates):  # a handful of bump dates
        n_pairs = n_total // len(dates) + (j < n_total % len(dates))
        day = int((np.datetime64(date, "D") - start_day).astype(np.int64))
        eligible = np.flatnonzero(~taken & (world.release_day <= day - BUMP_MIN_HISTORY_DAYS))
        eligible = eligible[world.popularity[eligible] >= np.median(world.popularity)]
        n_pairs = min(n_pairs, len(eligible) // 2)
        if n_pairs == 0:
            continue
        chosen = rng.choice(eligible, size=2 * n_pairs, replace=False)
        pairs = chosen[np.argsort(world.popularity[chosen])].reshape(n_pairs, 2)  # (P, 2)
        flip = rng.random(n_pairs) < 0.5
        bumped, control = np.where(flip, pairs[:, 0], pairs[:, 1]), np.where(flip, pairs[:, 1], pairs[:, 0])
        world.bump_day[bumped] = day
        world.bump_size[bumped] = eff["bump_size"]
        world.control_of.update(zip(bumped.tolist(), control.tolist()))
        taken[chosen] = True


# ----------------------------------------------------------------------------- who rates what, when


def _item_table(world: _World, days: int, eff: dict) -> tuple[np.ndarray, int]:
    """Flat per-bin cumulative item distribution, row b offset by b, for one searchsorted.

    Row b holds popularity * novelty(age) * (fraction of the bin the item is out), normalised.
    """
    n_items = len(world.popularity)
    bin_days = max(1, -(-days * n_items // MAX_BIN_CELLS))
    n_bins = -(-days // bin_days)
    bin_start = np.arange(n_bins) * bin_days  # (B,)
    bin_end = np.minimum(bin_start + bin_days, days)
    rel = world.release_day[None, :]  # (1, I)
    out_frac = np.clip((bin_end[:, None] - rel) / (bin_end - bin_start)[:, None], 0.0, 1.0)  # (B, I)
    age = (bin_start + bin_end)[:, None] / 2.0 - rel  # (B, I)
    novelty = 1.0 + eff["novelty_boost"] * np.exp(-np.maximum(age, 0) / eff["novelty_days"])
    novelty[:, world.release_day == 0] = 1.0  # the back catalogue is not new
    table = np.cumsum(world.popularity[None, :] * novelty * out_frac, axis=1)  # (B, I)
    table /= table[:, -1:]
    table += np.arange(n_bins)[:, None]
    return table.ravel(), bin_days


def _draw_events(rng, world: _World, n: int, days: int, table: np.ndarray, bin_days: int):
    """n (user, item, day) draws: user by activity x time present, day uniform after arrival, item by bin."""
    n_items = len(world.popularity)
    weight = world.activity * (days - world.arrival_day)
    counts = rng.multinomial(n, weight / weight.sum())
    user = np.repeat(np.arange(len(weight)), counts)  # O(n), no lookups
    b = rng.integers(np.repeat(world.arrival_day, counts), days)  # (n,) day, then its bin, in place
    b //= bin_days
    key = rng.random(n)
    key += b  # b + random, exactly (float addition commutes)
    item = np.empty(n, np.int64)

    def look_up(lo):  # a chunk's keys in sorted order: consecutive lookups stay in one cache-sized table
        part = key[lo:lo + LOOKUP_CHUNK]  # row, and each search starts from the last one's result
        order = np.argsort(part)  # (any order of equal keys: each key's item depends on the key alone)
        item[lo:lo + LOOKUP_CHUNK][order] = np.searchsorted(table, part[order], side="right")

    parallel.each(look_up, range(0, n, LOOKUP_CHUNK))
    del key
    b *= n_items
    item -= b
    b //= n_items
    np.minimum(item, n_items - 1, out=item)
    b *= bin_days  # the bin's first day
    low = world.release_day[item]
    np.maximum(low, b, out=low)
    np.maximum(low, np.repeat(world.arrival_day, counts), out=low)  # arrival_day[user], without the lookups
    b += bin_days
    np.minimum(b, days, out=b)
    day = rng.integers(low, b)
    return user, item, day


def _sample_events(rng, world: _World, n_ratings: int, days: int, eff: dict):
    """n_ratings distinct (user, item) pairs with their day; duplicates are redrawn."""
    n_items = len(world.popularity)
    table, bin_days = _item_table(world, days, eff)
    # one (n,) int64 array at a time is copied and its source freed: at Netflix-full scale (110M draws)
    # each weighs 0.9 GB, and keeping all three sources next to their copies took the generator to 10 GiB
    events = [np.empty(0, np.int64) for _ in range(3)]  # user, item, day
    for _ in range(20):  # a few rounds; each round only tops up the deficit
        deficit = n_ratings - len(events[0])
        if deficit <= 0:
            break
        new = list(_draw_events(rng, world, int(deficit * 1.1) + 16, days, table, bin_days))
        for k in range(3):  # what np.concatenate([old, new]) gives, without copying the first round's draws
            events[k] = np.concatenate([events[k], new[k]]) if len(events[k]) else new[k]
            new[k] = None
        # each pair's first draw, in draw order so the subsample below is seed-determined
        _keep(events, first_occurrences(events[0] * n_items + events[1], consume=True))
    if len(events[0]) < n_ratings:
        raise RecipeError(f"synthetic: could not place n_ratings={n_ratings} distinct (user, item) pairs; "
                          "lower n_ratings or raise n_users/n_items")
    _keep(events, mask=chosen_mask(rng, len(events[0]), n_ratings))  # rng.choice's subsample, sorted
    return tuple(events)


def _keep(arrays: list, index: np.ndarray | None = None, mask: np.ndarray | None = None) -> None:
    """arrays[k] = arrays[k][np.sort(index)] for each k (`index` distinct), or arrays[k][mask]: a mask
    instead of the sort, the rows copied chunk by chunk on the preparation's threads, one array at a time
    (each source freed before the next copy)."""
    if mask is None:
        mask = np.zeros(len(arrays[0]), dtype=bool)
        mask[index] = True
    for k in range(len(arrays)):
        arrays[k] = parallel.compress([arrays[k]], mask)[0]


# ----------------------------------------------------------------------------- ratings


def _signal(world: _World, user, item, day, start: str, days: int, eff: dict) -> np.ndarray:
    """Noise-free rating before rounding: every planted effect at (user, item, day)."""
    start_day = np.datetime64(start, "D")
    drift_lo = int((np.datetime64(eff["drift_start"], "D") - start_day).astype(np.int64))
    drift_hi = int((np.datetime64(eff["drift_end"], "D") - start_day).astype(np.int64))
    shift_day = int((np.datetime64(eff["scale_shift_date"], "D") - start_day).astype(np.int64))
    dates = start_day + np.arange(days)
    day_of_year = (dates - dates.astype("datetime64[Y]")).astype(np.int64) + 1  # (days,)
    out = np.empty(len(user), np.float64)

    def chunk(lo):  # chunks bound the (chunk, K) gathers; each writes its own slice of `out`
        u, i, d = user[lo:lo + CHUNK], item[lo:lo + CHUNK], day[lo:lo + CHUNK]
        q = world.q[i]  # (C, K)
        s = np.clip((d - drift_lo) / max(drift_hi - drift_lo, 1), 0.0, 1.0)  # (C,)
        dot = np.einsum("ck,ck->c", world.p0[u], q) + s * np.einsum("ck,ck->c", world.p_delta[u], q)
        since_bump = d - world.bump_day[i]
        bump = world.bump_size[i] * np.exp2(-np.maximum(since_bump, 0) / eff["bump_half_life_days"])
        season = np.cos(2 * np.pi * (day_of_year[d] - world.seasonal_peak[i]) / 365.25)
        out[lo:lo + CHUNK] = (eff["global_mean"] + world.user_bias[u] + world.item_bias[i] + dot
                              + world.trend_slope[i] * (d - world.release_day[i]) / 365.25
                              + world.seasonal_amp[i] * season + np.where(since_bump >= 0, bump, 0.0)
                              + eff["scale_shift_delta"] * (d >= shift_day))

    parallel.each(chunk, range(0, len(user), CHUNK))
    return out


# ----------------------------------------------------------------------------- truth


def _iso(start: str, day) -> list[str]:
    return [str(d) for d in np.datetime64(start, "D") + np.asarray(day, dtype=np.int64)]


def _truth(world: _World, params: dict, eff: dict, start: str, noise_floor_rmse: float) -> dict:
    """JSON-serialisable record of every planted effect, by public id and ISO date."""
    bumped = np.array(sorted(world.control_of), dtype=np.int64)
    control = np.array([world.control_of[b] for b in bumped.tolist()], dtype=np.int64)
    trend = np.flatnonzero(world.trend_slope)
    seasonal = np.flatnonzero(world.seasonal_amp)
    late_items = np.flatnonzero(world.release_day > 0)
    return {
        "params": params,
        "generator_version": GENERATOR_VERSION,
        "end": str(np.datetime64(start, "D") + params["days"]),
        "ids": {"user": f"{USER_ID_OFFSET} + {USER_ID_STRIDE}*k", "item": f"{ITEM_ID_OFFSET} + {ITEM_ID_STRIDE}*k"},
        "global_mean": eff["global_mean"],
        "noise_sd": eff["noise_sd"],
        "noise_floor_rmse": noise_floor_rmse,
        "scale_shift": {"date": eff["scale_shift_date"], "delta": eff["scale_shift_delta"]},
        "bumps": [{"item": int(i), "date": d, "size": eff["bump_size"], "half_life_days": eff["bump_half_life_days"],
                   "control": int(c)} for i, d, c in zip(item_ids(bumped), _iso(start, world.bump_day[bumped]),
                                                         item_ids(control))],
        "control_items": item_ids(control).tolist(),
        "seasonal_items": [{"item": int(i), "peak_day_of_year": int(p), "amplitude": eff["seasonal_amplitude"]}
                           for i, p in zip(item_ids(seasonal), world.seasonal_peak[seasonal])],
        "trend_items": [{"item": int(i), "slope_per_year": round(float(s), 6), "origin": o}
                        for i, s, o in zip(item_ids(trend), world.trend_slope[trend],
                                           _iso(start, world.release_day[trend]))],
        "drifting_users": user_ids(world.drift_users).tolist(),
        "drift_window": {"start": eff["drift_start"], "end": eff["drift_end"]},
        "user_arrival": {"initial_frac": eff["initial_user_frac"], "initial_users": int((world.arrival_day == 0).sum()),
                         "rest": "uniform over the span"},
        "item_release": {"initial_frac": eff["initial_item_frac"],
                         "released": [{"item": int(i), "date": d} for i, d in
                                      zip(item_ids(late_items), _iso(start, world.release_day[late_items]))]},
    }


# ----------------------------------------------------------------------------- public API


def generate(n_users: int = 3000, n_items: int = 800, n_ratings: int = 150_000, start: str = "2005-01-01",
             days: int = 365, seed: int = 0, **effects) -> tuple[pd.DataFrame, dict]:
    """Generate a canonical ratings table (user, item, rating, timestamp) and its ground truth.

    `effects` overrides DEFAULT_EFFECTS (see docs/synthetic.md); a *_frac of 0 or a size of 0
    switches that effect off. Same arguments -> identical table and truth.
    """
    table, truth, _ = _generate(n_users, n_items, n_ratings, start, days, seed, **effects)
    return table, truth


def _generate(n_users, n_items, n_ratings, start, days, seed, **effects) -> tuple[pd.DataFrame, dict, _World]:
    """generate(), also returning the latent world (for tests that check effects against it)."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise RecipeError(f"synthetic: seed must be a non-negative integer, got {seed!r}")
    eff = _resolve_dates(str(start), days, _check_params(n_users, n_items, n_ratings, start, days, effects))
    start = str(np.datetime64(str(start), "D"))
    rng = np.random.default_rng(seed)
    world = _draw_world(rng, n_users, n_items, days, start, eff)
    user, item, day = _sample_events(rng, world, n_ratings, days, eff)
    signal = _signal(world, user, item, day, start, days, eff)
    # (n,) float64 arrays at Netflix-full scale weigh 0.8 GB each: every step below works in place and
    # frees what it has spent (the same values as the expressions in the comments, bit for bit)
    value = rng.normal(0, eff["noise_sd"], len(signal))
    value += signal  # value = signal + noise
    low, high = eff["rating_scale"]
    if (low, high) != (1, 5):  # stretch 1..5 onto the scale; 1..5 itself is left bit-for-bit as it was
        signal, value = (low + (x - 1) * (high - low) / 4 for x in (signal, value))
    rating = np.rint(value, out=value)  # rating = clip(rint(value), low, high)
    np.clip(rating, low, high, out=rating)
    del value
    error = np.clip(signal, low, high, out=signal)  # noise floor = sqrt(mean((clip(signal) - rating) ** 2))
    del signal
    error -= rating
    np.square(error, out=error)
    noise_floor = float(np.sqrt(np.mean(error)))
    del error
    order = np.argsort(day.astype(np.uint16) if days <= 65_535 else day, kind="stable")  # 16 bits: radix sort
    start_s = int(np.datetime64(start, "s").astype(np.int64))
    columns = {"user": parallel.take(user, order, np.int64, fn=user_ids)}  # user_ids(user[order])
    del user
    columns["item"] = parallel.take(item, order, np.int64, fn=item_ids)
    del item
    columns["rating"] = parallel.take(rating, order, np.float32)  # rating[order].astype(np.float32)
    del rating
    columns["timestamp"] = parallel.take(day, order, np.int64,
                                         fn=lambda d: start_s + d.astype(np.int64) * SECONDS_PER_DAY)
    del day, order
    table = pd.DataFrame(columns, copy=False)
    del columns
    params = {"n_users": n_users, "n_items": n_items, "n_ratings": n_ratings, "start": start,
              "days": days, "seed": seed, **eff}
    return table, _truth(world, params, eff, start, round(noise_floor, 6)), world


def _preset_kwargs(name: str, overrides: dict) -> dict:
    if name not in PRESETS:
        raise RecipeError(f"synthetic: unknown preset {name!r}; valid presets are: " + ", ".join(PRESETS))
    return {**PRESETS[name], **overrides}


def generate_preset(name: str, seed: int = 0, **overrides) -> tuple[pd.DataFrame, dict]:
    """generate() at one of PRESETS' sizes (Table 1 of the paper, or "small"), with overrides."""
    return generate(seed=seed, **_preset_kwargs(name, overrides))


def _cache_key(params: dict) -> tuple[str, dict]:
    """(sha256 of the canonical JSON of the fully resolved arguments, the kwargs for generate())."""
    kwargs = dict(params)
    if "preset" in kwargs:
        kwargs = _preset_kwargs(kwargs.pop("preset"), kwargs)
    sizes = {k: kwargs.pop(k) for k in ("n_users", "n_items", "n_ratings", "start", "days", "seed") if k in kwargs}
    full = {**dict(zip(("n_users", "n_items", "n_ratings", "start", "days", "seed"),
                       (3000, 800, 150_000, "2005-01-01", 365, 0))), **sizes}
    eff = _resolve_dates(str(full["start"]), full["days"], _check_params(
        full["n_users"], full["n_items"], full["n_ratings"], full["start"], full["days"], kwargs))
    full["start"] = str(_parse_date("start", full["start"]))  # YAML may hand over a datetime.date
    canonical = json.dumps({"version": GENERATOR_VERSION, "source": SOURCE_HASH, **full, **eff}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest(), {**full, **kwargs}


def is_cached(params: dict, cache_dir) -> bool:
    """Whether load_synthetic(params, cache_dir) would read the table instead of generating it."""
    key, _ = _cache_key(params)
    return (Path(cache_dir) / f"synthetic-{key}.parquet").exists() and (
        Path(cache_dir) / f"synthetic-{key}.truth.json").exists()


def load_synthetic(params: dict, cache_dir) -> tuple[pd.DataFrame, dict]:
    """Generate (or read from cache) the dataset for params: {"preset": name, ...overrides} or generate() kwargs.

    Cached as <cache_dir>/synthetic-<sha256>.parquet and .truth.json, each written atomically.
    """
    key, kwargs = _cache_key(params)
    cache_dir = Path(cache_dir)
    table_path = cache_dir / f"synthetic-{key}.parquet"
    truth_path = cache_dir / f"synthetic-{key}.truth.json"
    if table_path.exists() and truth_path.exists():
        return read_parquet(table_path), json.loads(truth_path.read_text())
    table, truth = generate(**kwargs)
    # truth first: a table without its truth is never read; a cache that cannot be written costs speed
    written = write_atomic(truth_path, lambda p: Path(p).write_text(json.dumps(truth)))
    written = written and write_atomic(table_path, lambda p: table.to_parquet(p, index=False))
    release_arrow_memory()
    if not written:
        warnings.warn(f"cannot write the synthetic-data cache in {cache_dir}; the next run generates it again",
                      stacklevel=2)
    return table, truth
