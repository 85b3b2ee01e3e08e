"""RRN's states after the training weights or the fed ratings change (issue 13, defects 13 and 14):
predictions after advance() never use a rating from the query's time or later (they are refused when
the step they read holds one), and the state cache follows every change of the weights, not only
optimizer steps."""

import numpy as np
import pandas as pd
import pytest
import torch

from rrnx.errors import RrnxError
from test_rrn import DAY, datamodule, one_thread, tiny_model, tiny_ratings  # noqa: F401 (one_thread: autouse)

TEST_START = int(pd.Timestamp("2005-03-22", tz="UTC").timestamp())


def fed_ratings(data, n=40) -> pd.DataFrame:
    """Validation ratings in time order, the first ones in the step that straddles test_start."""
    return data.split.val.sort_values("timestamp", kind="stable").head(n)


def leaks(data, fed: pd.DataFrame, users: torch.Tensor, items: torch.Tensor, t: int) -> torch.Tensor:
    """Queries at t that would read a rating fed at t or later: t is in a side's step that straddles
    test_start and that user or item has a fed rating in the step from t on (computed here, apart)."""
    out = torch.zeros(len(users), dtype=torch.bool)
    for granularity, column, entities in ((data.user_granularity, "user_idx", users),
                                          (data.item_granularity, "item_idx", items)):
        step = int(granularity.step_of(TEST_START - 1))
        if int(granularity.step_of(t)) != step:
            continue
        later = fed[(granularity.step_of(fed["timestamp"].to_numpy()) == step) & (fed["timestamp"] >= t)]
        out |= torch.as_tensor(np.isin(entities.numpy(), later[column].to_numpy()))
    return out


def test_predictions_after_advance_use_only_earlier_ratings(tmp_path):
    """At every time, each query either equals the prediction of a model fed only the ratings before
    that time, or (when a rating fed in its own step is later) is refused."""
    data = datamodule(tmp_path, tiny_ratings())
    fed = fed_ratings(data)
    # both sides' steps straddle test_start (day 80): the 3-day user step 26 and the 7-day item step 11
    assert data.user_granularity.step_of(TEST_START - 1) == data.user_granularity.step_of(TEST_START)
    assert data.item_granularity.step_of(TEST_START - 1) == data.item_granularity.step_of(TEST_START)
    users, items = np.meshgrid(np.arange(data.n_users), np.arange(data.n_items))
    users, items = torch.as_tensor(users.ravel()), torch.as_tensor(items.ravel())
    times = sorted({TEST_START + 3600, *fed["timestamp"].iloc[[0, 5, 20]].tolist(), int(fed["timestamp"].max()) + 1,
                    TEST_START + 20 * DAY})
    model = tiny_model(data)
    model.advance(data, fed)
    refused = 0
    for t in times:
        at = torch.full_like(users, int(t))
        leaky = leaks(data, fed, users, items, t)
        ok = ~leaky
        earlier = tiny_model(data)
        earlier.advance(data, fed[fed["timestamp"] < t])  # what was known before t
        expected = earlier.predict_at(data, users[ok], items[ok], at[ok])
        batch = {"user": users[ok], "item": items[ok], "timestamp": at[ok]}
        # equal up to float32 rounding (the LSTM runs over sequences of other lengths); the leak was 0.35
        torch.testing.assert_close(model.predict_at(data, users[ok], items[ok], at[ok]), expected, rtol=0, atol=1e-5)
        torch.testing.assert_close(model.predict_clamped(batch), earlier.predict_clamped(batch), rtol=0, atol=1e-5)
        if leaky.any():
            refused += 1
            with pytest.raises(RrnxError, match="precede ratings fed by advance"):
                model.predict_at(data, users[leaky], items[leaky], at[leaky])
            with pytest.raises(RrnxError, match="precede ratings fed by advance"):
                model.predict_clamped({"user": users[leaky], "item": items[leaky], "timestamp": at[leaky]})
    assert refused >= 2  # the straddled steps were exercised
    # and the fed ratings do reach predictions after their step
    later = torch.full_like(users, TEST_START + 20 * DAY)
    assert not torch.equal(model.predict_at(data, users, items, later), tiny_model(data).predict_at(data, users, items, later))


def test_the_state_cache_follows_load_state_dict_and_in_place_edits(tmp_path):
    data = datamodule(tmp_path, tiny_ratings())
    val = data.split.val
    batch = {"user": torch.as_tensor(val["user_idx"].to_numpy()), "item": torch.as_tensor(val["item_idx"].to_numpy())}
    model = tiny_model(data)
    model.predict_ratings(batch)  # fills the cache
    torch.manual_seed(1)
    other = tiny_model(data)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.1 * torch.randn_like(p))
    model.load_state_dict(other.state_dict())
    assert torch.equal(model.predict_ratings(batch), other.predict_ratings(batch))
    with torch.no_grad():
        model.user_net.project.weight.mul_(2.0)
        other.user_net.project.weight.mul_(2.0)
    other._clear_states()
    assert torch.equal(model.predict_ratings(batch), other.predict_ratings(batch))
