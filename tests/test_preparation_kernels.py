"""The preparation's fast paths give exactly what the plain numpy calls they replace give."""

import numpy as np
import pytest

from rrnx.data import parallel
from rrnx.data.ordering import chosen_mask, first_occurrences, stable_order
from rrnx.data.steps import DAY


@pytest.mark.parametrize("high", [3, 1000, 2**40])  # many ties, some, almost none
def test_stable_order_is_the_stable_argsort(high):
    key = np.random.default_rng(0).integers(0, high, 200_000)
    order, sorted_key = stable_order(key)
    expected = np.argsort(key, kind="stable")
    assert order.dtype == np.int64 and np.array_equal(order, expected)
    assert np.array_equal(sorted_key, key[expected])
    assert np.array_equal(key, np.random.default_rng(0).integers(0, high, 200_000))  # not consumed
    narrow, _ = stable_order(key, dtype=np.int32)
    assert narrow.dtype == np.int32 and np.array_equal(narrow, expected)


@pytest.mark.parametrize("key", [np.array([5, -1, 5, -1, 0]), np.array([2**62, 1, 2**62, 0]),
                                 np.array([3, 1, 3], dtype=np.int32), np.array([], dtype=np.int64)])
def test_stable_order_falls_back_where_the_packed_key_would_not_fit(key):
    order, sorted_key = stable_order(key.copy(), consume=True)
    assert np.array_equal(order, np.argsort(key, kind="stable"))
    assert np.array_equal(sorted_key, np.sort(key, kind="stable"))


def test_first_occurrences_is_uniques_return_index():
    key = np.random.default_rng(1).integers(0, 5000, 100_000)
    assert np.array_equal(first_occurrences(key.copy(), consume=True), np.unique(key, return_index=True)[1])


def test_take_gathers_and_casts_in_chunks():
    rng = np.random.default_rng(2)
    values, index = rng.integers(0, 2**31 - 1, 1000).astype(np.int32), rng.integers(0, 1000, 10_001)
    out = parallel.take(values, index, np.int64, chunk=997)  # many chunks, the last one short
    assert out.dtype == np.int64 and np.array_equal(out, values[index])


def test_each_raises_a_tasks_exception():
    def task(i):
        if i == 3:
            raise ValueError("task 3")

    with pytest.raises(ValueError, match="task 3"):
        parallel.each(task, range(8))


def test_month_steps_by_day_table_match_the_calendar():
    # two days per timestamp on average around month, leap-year and epoch boundaries, seconds of the day too
    from rrnx.data.steps import Granularity

    def calendar(ts):
        return ts.astype("datetime64[s]").astype("datetime64[M]").astype(np.int64)

    rng = np.random.default_rng(3)
    months = Granularity.parse("1mo", 0)  # steps are months since 1970-01
    ts = rng.integers(-400 * DAY, 3000 * DAY, 400_000)  # 1968-11 .. 1978-03, before and after 1970
    assert len(ts) > 100_000  # the table path
    assert np.array_equal(months.step_of(ts), calendar(ts))
    assert months.step_of(ts[7]) == calendar(ts[7]) and months.step_of(ts[:3]).tolist() == calendar(ts[:3]).tolist()
    wide = rng.integers(-150_000 * DAY, 150_000 * DAY, 300_000)  # a per-day table of 300k days (820 years)
    assert np.array_equal(months.step_of(wide), calendar(wide))


@pytest.mark.parametrize("p", [0.0, 0.3, 1.0])
def test_compress_keeps_the_masked_rows_in_order(p):
    rng = np.random.default_rng(4)
    a, b = rng.integers(0, 100, 10_001), rng.random(10_001).astype(np.float32)
    mask = rng.random(10_001) < p
    kept_a, kept_b = parallel.compress([a, b], mask, chunk=997)
    assert kept_b.dtype == np.float32
    assert np.array_equal(kept_a, a[mask]) and np.array_equal(kept_b, b[mask])


@pytest.mark.parametrize("values", [
    np.random.default_rng(5).integers(-50, 3000, 20_000) * 3 + 1000,  # strided ids, negative ones too
    np.random.default_rng(6).integers(0, 400, 5_000).astype(np.int32),  # int32 stays int32
    np.array([7, 7, 7]), np.array([2**40, 5, 2**40]),  # one id; a span too wide for a table
    np.array(["b", "a", "b"], dtype=object),  # string ids go through pandas
])
def test_sorted_unique_is_sorted_pandas_unique(values, monkeypatch):
    import pandas as pd

    from rrnx.data.split import _sorted_unique

    monkeypatch.setattr(parallel, "CHUNK", 997)  # many chunks per thread, the last one short
    monkeypatch.setattr(parallel, "workers", lambda: 3)  # three presence tables, OR-ed
    expected = np.sort(pd.unique(values))
    got = _sorted_unique(values)
    assert got.dtype == expected.dtype and np.array_equal(got, expected)


@pytest.mark.parametrize("text", ["1d", "7d", "1mo", "2mo"])
def test_step_of_by_day_table_matches_the_exact_steps(text, monkeypatch):
    from rrnx.data.steps import Granularity

    monkeypatch.setattr(parallel, "CHUNK", 9973)
    rng = np.random.default_rng(7)
    origin = 1_000_000_000  # 2001-09-09 01:46:40 UTC: parse moves it to midnight (and to the 1st for months)
    granularity = Granularity.parse(text, origin)
    ts = origin + rng.integers(-400 * DAY, 900 * DAY, 200_000)  # before the origin too, any second of the day
    assert granularity.origin % DAY == 0 and len(ts) > 100_000  # the table path
    assert np.array_equal(granularity.step_of(ts), granularity._step_of(ts))
    off_midnight = Granularity(granularity.count, granularity.unit, granularity.origin + 3600)
    assert np.array_equal(off_midnight.step_of(ts), off_midnight._step_of(ts))  # the exact path


@pytest.mark.parametrize("population,size", [
    (20_000, 15_000), (20_001, 401), (123_457, 100_000), (50_000, 50_000), (300_007, 290_000),  # tail shuffle
    (20_000, 400), (9_000, 8_000), (5, 0)])  # Floyd's algorithm: choice itself
def test_chosen_mask_is_choice_sorted_and_leaves_the_generator_where_choice_does(population, size):
    for seed in range(3):
        expected_rng, rng = np.random.default_rng(seed), np.random.default_rng(seed)
        expected = np.sort(expected_rng.choice(population, size=size, replace=False))
        mask = chosen_mask(rng, population, size)
        assert mask.dtype == bool and len(mask) == population
        assert np.array_equal(np.flatnonzero(mask), expected)
        assert np.array_equal(rng.integers(0, 2**62, 4), expected_rng.integers(0, 2**62, 4))


def test_chosen_mask_draws_the_same_stream_in_chunks(monkeypatch):
    import rrnx.data.ordering as ordering

    monkeypatch.setattr(ordering, "SWAP_CHUNK", 1000)  # 290 chunks, the last one short
    expected_rng, rng = np.random.default_rng(7), np.random.default_rng(7)
    expected = np.sort(expected_rng.choice(300_007, size=290_000, replace=False))
    assert np.array_equal(np.flatnonzero(ordering.chosen_mask(rng, 300_007, 290_000)), expected)
    assert rng.random() == expected_rng.random()
