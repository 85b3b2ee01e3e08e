"""Bucketing into per-side time steps: active steps only, CSR layout, standardized wallclock."""

import numpy as np
import pandas as pd
import pytest

from rrnx.data.steps import DAY, Granularity, build_sequences
from rrnx.errors import RrnxError

T0 = int(pd.Timestamp("2005-01-03", tz="UTC").timestamp())


@pytest.mark.parametrize("text, days", [("1d", 1), ("7d", 7), ("2w", 14), ("14d", 14)])
def test_day_granularities(text, days):
    g = Granularity.parse(text, T0 + 3600)
    assert g.origin == T0
    ts = np.array([T0, T0 + days * DAY - 1, T0 + days * DAY, T0 - 1])
    assert g.step_of(ts).tolist() == [0, 0, 1, -1]
    assert g.start_of(np.array([2]))[0] == T0 + 2 * days * DAY


def test_month_granularity_uses_calendar_months():
    g = Granularity.parse("2mo", int(pd.Timestamp("2005-01-20", tz="UTC").timestamp()))
    dates = ["2005-01-01", "2005-02-28", "2005-03-01", "2005-12-31", "2006-01-01"]
    ts = np.array([int(pd.Timestamp(d, tz="UTC").timestamp()) for d in dates])
    assert g.step_of(ts).tolist() == [0, 0, 1, 5, 6]
    assert pd.Timestamp(int(g.start_of(np.array([1]))[0]), unit="s").strftime("%Y-%m-%d") == "2005-03-01"


@pytest.mark.parametrize("bad", ["", "7", "d", "0d", "3y", "1.5d"])
def test_bad_granularity_is_named(bad):
    with pytest.raises(RrnxError, match="not a granularity"):
        Granularity.parse(bad, T0)


def test_sequences_hold_active_steps_only_in_time_order():
    # user 0 rates on days 0, 0, 9 (weeks 0, 1); user 1 never; user 2 on day 20 (week 2)
    entity = np.array([0, 2, 0, 0])
    other = np.array([5, 6, 7, 8])
    value = np.array([1.0, 2.0, 3.0, 4.0], dtype=np.float32)
    ts = T0 + np.array([9, 20, 0, 0]) * DAY
    seq, row = build_sequences("user", entity, other, value, ts, 3, Granularity.parse("7d", T0))
    assert seq.offsets.tolist() == [0, 2, 2, 3]
    assert seq.step.tolist() == [0, 1, 2]
    assert seq.newbie.tolist() == [1, 0, 1]
    assert seq.rating_offsets.tolist() == [0, 2, 3, 4]
    assert sorted(seq.other[0:2].tolist()) == [7, 8] and seq.other[2] == 5
    assert row.tolist() == [1, 2, 0, 0]  # the active-step row of each input rating
    assert seq.prev_tau[1] == seq.tau[0] and seq.prev_tau[0] == seq.tau[0]
    assert abs(float(seq.tau.mean())) < 1e-5
    assert np.allclose(seq.tau_of_step(seq.step), seq.tau, atol=1e-5)


def test_no_dense_users_by_steps_tensor():
    rng = np.random.default_rng(0)
    n = 10_000
    seq, _ = build_sequences("user", rng.integers(0, 5000, n), rng.integers(0, 300, n),
                             rng.random(n).astype(np.float32), T0 + rng.integers(0, 365 * DAY, n), 5000,
                             Granularity.parse("1d", T0))
    sizes = [a.size for a in vars(seq).values() if isinstance(a, np.ndarray)]
    assert max(sizes) <= n + 1


def test_bucketing_orders_ratings_as_lexsort_by_entity_then_step():
    """build_sequences sorts one (entity, step) key; the order must be lexsort's, ties in input order."""
    rng = np.random.default_rng(0)
    n = 5000
    entity, other = rng.integers(0, 40, n), rng.integers(0, 30, n)
    ts = T0 + rng.integers(-3, 200, n) * DAY // 2  # some before the origin: negative steps
    value = rng.integers(1, 6, n).astype(np.float32)
    g = Granularity.parse("7d", T0)
    seq, row = build_sequences("user", entity, other, value, ts, 45, g)
    step = g.step_of(ts)
    order = np.lexsort((step, entity))
    assert np.array_equal(seq.other, other[order]) and np.array_equal(seq.value, value[order])
    keys = np.stack([entity[order], step[order]], axis=1)
    new = np.r_[True, (keys[1:] != keys[:-1]).any(axis=1)]
    assert np.array_equal(seq.step, step[order][new])
    assert np.array_equal(seq.offsets, np.r_[0, np.cumsum(np.bincount(entity[order][new], minlength=45))])
    assert np.array_equal(row[order], np.cumsum(new) - 1)


def test_index_dtype_is_int32_only_where_the_indices_fit():
    from rrnx.data.ordering import index_dtype

    top = np.iinfo(np.int32).max
    assert index_dtype(0) is index_dtype(top) is np.int32  # indices 0 .. top - 1 (and bound top) fit
    assert index_dtype(top + 1) is np.int64


def test_linked_sides_give_each_rating_its_row_on_the_other_side():
    from rrnx.data.steps import link_sides

    rng = np.random.default_rng(1)
    n = 3000
    user, item = rng.integers(0, 50, n), rng.integers(0, 20, n)
    ts, value = T0 + rng.integers(0, 90, n) * DAY, rng.integers(1, 6, n).astype(np.float32)
    users, user_row, user_order = build_sequences("user", user, item, value, ts, 50, Granularity.parse("1d", T0),
                                                  return_order=True)
    items, item_row, item_order = build_sequences("item", item, user, value, ts, 20, Granularity.parse("7d", T0),
                                                  return_order=True)
    bucketed = {"user": (user_row, user_order), "item": (item_row, item_order)}
    link_sides(users, items, bucketed)
    assert bucketed == {} and users.other_row.dtype == items.other_row.dtype == np.int32
    assert users.other.dtype == items.other.dtype == np.int32  # the stored per-rating indices, halved
    assert user_row.dtype == user_order.dtype == np.int32  # the bucketing's per-rating temporaries, halved
    # the reference: each side's ratings in its own order are the ratings sorted stably by its row
    assert np.array_equal(users.other_row, item_row[np.argsort(user_row, kind="stable")])
    assert np.array_equal(items.other_row, user_row[np.argsort(item_row, kind="stable")])
    # and the row on the other side really holds that rating: same entity pair, same step
    for k in rng.integers(0, n, 50):  # k: a rating in the user sequences' order
        item_row_k = users.other_row[k]
        lo, hi = items.rating_offsets[item_row_k], items.rating_offsets[item_row_k + 1]
        user_row_k = np.searchsorted(users.rating_offsets, k, side="right") - 1
        user_k = np.searchsorted(users.offsets, user_row_k, side="right") - 1
        assert user_k in items.other[lo:hi]
        assert np.searchsorted(items.offsets, item_row_k, side="right") - 1 == users.other[k]  # the same item
