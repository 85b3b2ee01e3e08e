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
