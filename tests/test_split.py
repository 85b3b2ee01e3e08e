"""The strict time split leaks nothing from the future and drops unseen test users/items."""

import numpy as np
import pandas as pd
import pytest

from conftest import ratings_frame
from rrnx.data.split import time_split, to_timestamp
from rrnx.errors import RrnxError

TEST_START = "2010-03-15"


def test_no_train_rating_at_or_after_test_start():
    split = time_split(ratings_frame(), TEST_START, seed=1)
    assert split.train["timestamp"].max() < to_timestamp(TEST_START, "test_start")
    for half in (split.val, split.test):
        assert half["timestamp"].min() >= to_timestamp(TEST_START, "test_start")


def test_every_val_and_test_user_and_item_is_in_train():
    frame = ratings_frame()
    late = pd.DataFrame({"user": [999_999], "item": [5000], "rating": [3.0], "timestamp": [frame.timestamp.max()]})
    split = time_split(pd.concat([frame, late], ignore_index=True), TEST_START)
    train_users, train_items = set(split.train["user"]), set(split.train["item"])
    for half in (split.val, split.test):
        assert set(half["user"]) <= train_users and set(half["item"]) <= train_items
    assert split.summary["test_dropped_unseen"] >= 1


def test_halves_are_an_even_seeded_partition_of_the_test_period():
    frame = ratings_frame()
    a, b = time_split(frame, TEST_START, seed=3), time_split(frame, TEST_START, seed=3)
    assert a.val.equals(b.val)
    assert abs(len(a.val) - len(a.test)) <= 1
    assert len(a.val) + len(a.test) == a.summary["test_size"]
    c = time_split(frame, TEST_START, seed=4)
    assert not set(map(tuple, a.val[["user", "item", "timestamp"]].values)) == \
        set(map(tuple, c.val[["user", "item", "timestamp"]].values))


def test_indices_map_back_to_original_ids():
    split = time_split(ratings_frame(), TEST_START)
    for frame in (split.train, split.val, split.test):
        assert np.array_equal(split.user_ids[frame["user_idx"]], frame["user"].to_numpy())
        assert np.array_equal(split.item_ids[frame["item_idx"]], frame["item"].to_numpy())


def test_train_start_and_test_end_bound_the_periods():
    split = time_split(ratings_frame(), TEST_START, train_start="2010-02-01", test_end="2010-04-01")
    assert split.train["timestamp"].min() >= to_timestamp("2010-02-01", "x")
    assert max(split.val["timestamp"].max(), split.test["timestamp"].max()) < to_timestamp("2010-04-01", "x")


@pytest.mark.parametrize("kwargs, message", [
    (dict(test_start="2001-01-01"), "train side is empty"),
    (dict(test_start="2030-01-01"), "test side is empty"),
    (dict(test_start="2010-03-01", train_start="2010-04-01"), "must be before"),
    (dict(test_start="not a date"), "cannot read"),
    (dict(test_start=None), "test_start is required"),
])
def test_bad_splits_are_named(kwargs, message):
    with pytest.raises(RrnxError, match=message):
        time_split(ratings_frame(), **kwargs)


def _pairs(users, items):
    return pd.DataFrame({"user": np.asarray(users, dtype=np.int64), "item": np.asarray(items, dtype=np.int64)})


def test_repeated_pairs_are_found_by_the_sorted_key_or_left_to_pandas():
    from rrnx.data.split import _no_repeated_pairs

    assert _no_repeated_pairs(_pairs([5, 5, -3, 7], [1, 2, 1, 1]))
    assert not _no_repeated_pairs(_pairs([5, 9, 5], [2, 1, 2]))  # (5, 2) twice
    assert not _no_repeated_pairs(_pairs([0, 2**62], [0, 2**40]))  # key would overflow: pandas decides
    strings = pd.DataFrame({"user": ["a", "b"], "item": ["x", "x"]})
    assert not _no_repeated_pairs(strings)  # not integers: pandas decides


def test_the_fast_path_keeps_the_duplicate_policy():
    from rrnx.data.split import keep_last_rating

    frame = _pairs([1, 1, 2], [7, 7, 7]).assign(rating=[1.0, 2.0, 3.0], timestamp=[10, 20, 5])
    kept, dropped = keep_last_rating(frame)
    assert dropped == 1 and kept["rating"].tolist() == [2.0, 3.0]
    unique = frame.iloc[1:]
    kept, dropped = keep_last_rating(unique)
    assert kept is unique and dropped == 0


@pytest.mark.parametrize("ids", [np.array([3, 10, 11, 40]), np.array([-5, 0, 2**40])])  # lookup table; searchsorted
def test_positions_index_every_value_into_the_sorted_ids(ids):
    from rrnx.data.split import _positions

    values = ids[np.random.default_rng(0).integers(0, len(ids), 50)]
    assert np.array_equal(_positions(values, ids), np.searchsorted(ids, values))
    assert _positions(values, ids).dtype == np.int64


def test_an_owned_table_is_freed_before_the_bucketing(monkeypatch):
    import gc
    import weakref

    import rrnx.data.datamodule as datamodule

    table = ratings_frame()
    alive = weakref.ref(table)
    seen = []

    def bucketing(*args, **kwargs):
        gc.collect()
        seen.append(alive() is not None)
        return build(*args, **kwargs)

    build = datamodule.build_sequences
    monkeypatch.setattr(datamodule, "build_sequences", bucketing)
    holder = [table]
    del table
    data = datamodule.TemporalDataModule.from_owned_table(holder, test_start=TEST_START, batch_size=64)
    assert holder == [] and seen == [False, False]  # gone while both sides were bucketed
    assert set(data.prepare_seconds) == {"split", "bucketing"} and len(data.split.train) > 0


def test_string_ids_split_as_their_integer_ids_do():
    """Numeric columns take the threaded path (rrnx.data.parallel), other ids pandas': same rows either way."""
    frame = ratings_frame()
    named = frame.assign(user="u" + frame["user"].astype(str).str.zfill(8),
                         item=("i" + frame["item"].astype(str).str.zfill(8)).astype("string[pyarrow]"))
    a, b = time_split(frame, TEST_START, seed=2), time_split(named, TEST_START, seed=2)
    for half in ("train", "val", "test"):
        x, y = getattr(a, half), getattr(b, half)
        assert list(x.index) == list(y.index) == list(range(len(x)))
        for column in ("rating", "timestamp", "user_idx", "item_idx"):
            assert np.array_equal(x[column].to_numpy(), y[column].to_numpy())
    assert list(b.user_ids) == ["u" + str(u).zfill(8) for u in a.user_ids]
