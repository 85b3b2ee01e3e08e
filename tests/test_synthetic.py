"""The synthetic generator: canonical table, determinism, and that each planted effect shows in raw data."""

import datetime
import json

import numpy as np
import pandas as pd
import pytest

from rrnx.data import synthetic
from rrnx.data.synthetic import PRESET_SPLITS, PRESETS, generate, generate_preset, load_synthetic
from rrnx.errors import RecipeError

DAY = 86_400
ALL_OFF = {"drift_user_frac": 0.0, "trend_item_frac": 0.0, "seasonal_item_frac": 0.0,
           "bump_item_frac": 0.0, "scale_shift_delta": 0.0}


def _epoch(date: str) -> int:
    return int(pd.Timestamp(date, tz="UTC").timestamp())


def _window_mean(df: pd.DataFrame, items, lo: int, hi: int) -> float:
    sel = df["item"].isin(items) & (df["timestamp"] >= lo) & (df["timestamp"] < hi)
    return float(df.loc[sel, "rating"].mean())


@pytest.fixture(scope="module")
def default_set():
    return generate()  # the "small" preset: 150k ratings, ~0.3 s


def test_same_seed_same_data_and_truth():
    a_table, a_truth = generate(n_users=300, n_items=100, n_ratings=5000, seed=7)
    b_table, b_truth = generate(n_users=300, n_items=100, n_ratings=5000, seed=7)
    pd.testing.assert_frame_equal(a_table, b_table)
    assert a_truth == b_truth
    c_table, _ = generate(n_users=300, n_items=100, n_ratings=5000, seed=8)
    assert not a_table.equals(c_table)


def test_canonical_table(default_set):
    df, truth = default_set
    assert list(df.columns) == ["user", "item", "rating", "timestamp"]
    assert [str(t) for t in df.dtypes] == ["int64", "int64", "float32", "int64"]
    assert len(df) == 150_000
    assert df["timestamp"].is_monotonic_increasing
    assert not df.duplicated(["user", "item"]).any()
    assert set(np.unique(df["rating"])) <= {1.0, 2.0, 3.0, 4.0, 5.0}
    # ids are not indices: code that mixes them up must break
    assert df["user"].min() >= 1000 and df["item"].min() >= 1000
    assert df["user"].max() > 3000 and df["item"].max() > 800
    assert df["timestamp"].min() >= _epoch("2005-01-01")
    assert df["timestamp"].max() < _epoch(truth["end"])
    json.loads(json.dumps(truth))  # serialisable as is


def test_no_rating_before_arrival_or_release():
    df, truth, world = synthetic._generate(600, 200, 20_000, "2005-01-01", 365, 1)
    first_day = (df["timestamp"] - _epoch("2005-01-01")) // DAY
    user_index = (df["user"] - synthetic.USER_ID_OFFSET) // synthetic.USER_ID_STRIDE
    item_index = (df["item"] - synthetic.ITEM_ID_OFFSET) // synthetic.ITEM_ID_STRIDE
    assert (first_day >= world.arrival_day[user_index]).all()
    assert (first_day >= world.release_day[item_index]).all()
    released = pd.DataFrame(truth["item_release"]["released"])
    first = df.groupby("item")["timestamp"].min()
    rel = released.set_index("item")["date"].map(_epoch)
    common = rel.index.intersection(first.index)
    assert len(common) > 20 and (first[common] >= rel[common]).all()


def test_heavy_tails_and_novelty(default_set):
    df, truth = default_set
    per_user = df.groupby("user").size()
    assert per_user.max() > 8 * per_user.median()
    released = pd.DataFrame(truth["item_release"]["released"])
    released = released[released["date"] < "2005-08-01"]
    rated = df.merge(released, on="item")
    age_days = (rated["timestamp"] - rated["date"].map(_epoch)) // DAY
    young, older = (age_days < 30).sum() / 30, ((age_days >= 120) & (age_days < 150)).sum() / 30
    assert young > 1.5 * older  # items are rated more just after release


def test_bumps_rise_and_controls_do_not(default_set):
    df, truth = default_set
    bumps = pd.DataFrame(truth["bumps"])
    assert len(bumps) == len(truth["control_items"]) > 10
    assert not set(bumps["item"]) & set(truth["control_items"])
    for date, group in bumps.groupby("date"):
        t, four_weeks = _epoch(date), 28 * DAY
        rise = _window_mean(df, group["item"], t, t + four_weeks) - _window_mean(df, group["item"], t - four_weeks, t)
        control = (_window_mean(df, group["control"], t, t + four_weeks)
                   - _window_mean(df, group["control"], t - four_weeks, t))
        assert rise > 0.4, (date, rise)
        assert abs(control) < 0.2, (date, control)


def test_scale_shift_moves_the_mean_by_delta():
    df, truth = generate(n_users=2000, n_items=400, n_ratings=120_000, seed=2, global_mean=3.0,
                         user_bias_sd=0.1, item_bias_sd=0.1, **{**ALL_OFF, "scale_shift_delta": 0.5})
    t = _epoch(truth["scale_shift"]["date"])
    after, before = df.loc[df["timestamp"] >= t, "rating"].mean(), df.loc[df["timestamp"] < t, "rating"].mean()
    assert after - before == pytest.approx(0.5, abs=0.07)


def test_trend_items_move_with_their_slope():
    df, truth = generate(n_users=2000, n_items=300, n_ratings=100_000, seed=3,
                         **{**ALL_OFF, "trend_item_frac": 0.3, "trend_slope_per_year": 1.5})
    trends = pd.DataFrame(truth["trend_items"])
    mid = _epoch("2005-07-01")
    for sign in (1, -1):
        items = trends.loc[np.sign(trends["slope_per_year"]) == sign, "item"]
        change = _window_mean(df, items, mid, _epoch(truth["end"])) - _window_mean(df, items, 0, mid)
        assert sign * change > 0.25, (sign, change)


def test_seasonal_items_peak_on_their_day():
    df, truth = generate(n_users=2000, n_items=300, n_ratings=100_000, days=730, seed=4,
                         **{**ALL_OFF, "seasonal_item_frac": 0.3, "seasonal_amplitude": 0.8})
    seasonal = pd.DataFrame(truth["seasonal_items"])
    rated = df.merge(seasonal, on="item")
    doy = pd.to_datetime(rated["timestamp"], unit="s").dt.day_of_year
    phase = np.cos(2 * np.pi * (doy - rated["peak_day_of_year"]) / 365.25)
    assert rated.loc[phase > 0.7, "rating"].mean() - rated.loc[phase < -0.7, "rating"].mean() > 0.8


def test_drifting_users_move_towards_their_new_taste():
    df, truth, world = synthetic._generate(1500, 300, 60_000, "2005-01-01", 365, 5,
                                           **{**ALL_OFF, "drift_user_frac": 0.5, "noise_sd": 0.3})
    u = ((df["user"] - synthetic.USER_ID_OFFSET) // synthetic.USER_ID_STRIDE).to_numpy()
    i = ((df["item"] - synthetic.ITEM_ID_OFFSET) // synthetic.ITEM_ID_STRIDE).to_numpy()
    drifting = np.isin(df["user"], truth["drifting_users"])
    static = 3.4 + world.user_bias[u] + world.item_bias[i] + np.einsum("nk,nk->n", world.p0[u], world.q[i])
    residual = df["rating"].to_numpy() - static
    towards = np.einsum("nk,nk->n", world.p_delta[u], world.q[i])
    late = df["timestamp"].to_numpy() >= _epoch("2005-10-01")
    early = df["timestamp"].to_numpy() < _epoch("2005-03-01")
    corr = lambda m: np.corrcoef(residual[m], towards[m])[0, 1]  # noqa: E731
    assert corr(drifting & late) > 0.5
    assert corr(drifting & early) < 0.3


def test_cache_hit_returns_same_data_without_generating(tmp_path, monkeypatch):
    params = {"preset": "small", "n_users": 300, "n_items": 100, "n_ratings": 4000}
    table, truth = load_synthetic(params, tmp_path)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert len(files) == 2 and files[0].startswith("synthetic-") and files[0].endswith(".parquet")
    assert files[1].endswith(".truth.json")

    def no_generation(*args, **kwargs):
        raise AssertionError("cache hit must not regenerate")

    monkeypatch.setattr(synthetic, "generate", no_generation)
    again, again_truth = load_synthetic(dict(params), tmp_path)
    pd.testing.assert_frame_equal(table, again)
    assert truth == again_truth
    assert sorted(p.name for p in tmp_path.iterdir()) == files  # no temp files left behind


def test_cache_key_depends_on_every_parameter():
    key = synthetic._cache_key({"preset": "small"})[0]
    assert key == synthetic._cache_key(dict(PRESETS["small"]))[0]  # a preset is just its arguments
    assert key != synthetic._cache_key({"preset": "small", "seed": 1})[0]
    assert key != synthetic._cache_key({"preset": "small", "bump_size": 2.0})[0]
    # YAML turns 2005-01-01 into a datetime.date: same entry as the string
    assert key == synthetic._cache_key({"preset": "small", "start": datetime.date(2005, 1, 1)})[0]


def test_presets_have_table1_sizes():
    table1 = {"netflix-6m": (311_300, 17_700, 13_700_000 + 2_100_000),
              "netflix-1y": (345_900, 16_900, 41_500_000 + 3_900_000),
              "netflix-full": (477_400, 17_800, 98_100_000 + 2_300_000),
              "imdb": (440_800, 114_300, 1_400_000 + 29_600)}
    for name, (users, items, ratings) in table1.items():
        preset = PRESETS[name]
        assert (preset["n_users"], preset["n_items"]) == (users, items)
        assert preset["n_ratings"] == pytest.approx(ratings, rel=0.02)
    assert PRESETS["small"]["n_users"] == 3000 and PRESETS["small"]["n_items"] == 800


def test_preset_splits_cover_the_span_and_shift_is_in_training():
    for name, split in PRESET_SPLITS.items():
        start = pd.Timestamp(PRESETS[name]["start"])
        end = start + pd.Timedelta(days=PRESETS[name]["days"])
        assert pd.Timestamp(split["train_start"]) == start and pd.Timestamp(split["test_end"]) == end
        eff = synthetic._resolve_dates(PRESETS[name]["start"], PRESETS[name]["days"],
                                       {**synthetic.DEFAULT_EFFECTS, **PRESETS[name]})
        assert start < pd.Timestamp(eff["scale_shift_date"]) < pd.Timestamp(split["test_start"]), name
        assert all(pd.Timestamp(d) < pd.Timestamp(split["test_start"]) for d in eff["bump_dates"]), name


def test_generate_preset_applies_overrides():
    df, truth = generate_preset("small", seed=1, n_users=200, n_items=60, n_ratings=2000)
    assert len(df) == 2000 and truth["params"]["seed"] == 1 and truth["params"]["start"] == "2005-01-01"


@pytest.mark.parametrize("call, names", [
    (lambda: generate(n_ratings=0), ["n_ratings"]),
    (lambda: generate(n_users=-5), ["n_users"]),
    (lambda: generate(n_users=10, n_items=10, n_ratings=80), ["n_ratings"]),
    (lambda: generate(drift_user_frac=1.5), ["drift_user_frac"]),
    (lambda: generate(start="June 2005"), ["start"]),
    (lambda: generate(seed=None), ["seed"]),
    (lambda: generate(bump_size="big"), ["bump_size"]),
    (lambda: generate(bump_dates=["2007-01-01"]), ["bump_dates", "2007-01-01"]),
    (lambda: generate(bump_sise=2.0), ["bump_sise", "bump_size", "scale_shift_delta"]),
    (lambda: generate_preset("netflix-2y"), ["netflix-2y", "netflix-6m", "imdb", "small"]),
    (lambda: load_synthetic({"preset": "nope"}, "/nonexistent"), ["nope", "netflix-full"]),
])
def test_bad_parameters_name_themselves(call, names):
    with pytest.raises(RecipeError) as err:
        call()
    for name in names:
        assert name in str(err.value)
