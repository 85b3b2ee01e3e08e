"""RRN's states after the training weights or the fed ratings change (issue 13, defects 13 and 14):
predictions after advance() use only ratings strictly before the query's step, and the state cache
follows every change of the weights, not only optimizer steps."""

import numpy as np
import pandas as pd
import torch

from test_rrn import DAY, datamodule, one_thread, tiny_model, tiny_ratings  # noqa: F401 (one_thread: autouse)

TEST_START = int(pd.Timestamp("2005-03-22", tz="UTC").timestamp())


def fed_ratings(data, n=40) -> pd.DataFrame:
    """Validation ratings in time order, the first ones in the step that straddles test_start."""
    return data.split.val.sort_values("timestamp", kind="stable").head(n)


def test_predictions_after_advance_use_only_earlier_ratings(tmp_path):
    data = datamodule(tmp_path, tiny_ratings())
    fed = fed_ratings(data)
    # both sides' steps straddle test_start (day 80): the 3-day user step 26 and the 7-day item step 11
    assert data.user_granularity.step_of(TEST_START - 1) == data.user_granularity.step_of(TEST_START)
    assert int(fed["timestamp"].min()) < int(data.user_granularity.start_of(
        data.user_granularity.step_of(TEST_START) + 1))
    users, items = np.meshgrid(np.arange(data.n_users), np.arange(data.n_items))
    users, items = torch.as_tensor(users.ravel()), torch.as_tensor(items.ravel())
    times = sorted({TEST_START + 3600, *fed["timestamp"].iloc[[0, 5, 20]].tolist(), int(fed["timestamp"].max()) + 1,
                    TEST_START + 20 * DAY})
    model = tiny_model(data)
    model.advance(data, fed)
    for t in times:
        at = torch.full_like(users, int(t))
        with_all = model.predict_at(data, users, items, at)
        batch = {"user": users, "item": items, "timestamp": at}
        with_all_eval = model.predict_ratings(batch)
        earlier = tiny_model(data)
        earlier.advance(data, fed[fed["timestamp"] < t])  # what was known before t
        # equal up to float32 rounding (the LSTM runs over sequences of other lengths); the leak was 0.3
        torch.testing.assert_close(with_all, earlier.predict_at(data, users, items, at), rtol=0, atol=1e-5)
        torch.testing.assert_close(with_all_eval, earlier.predict_ratings(batch), rtol=0, atol=1e-5)
    # and the fed ratings do reach predictions after their step
    assert not torch.equal(model.predict_at(data, users, items, torch.full_like(users, TEST_START + 20 * DAY)),
                           tiny_model(data).predict_at(data, users, items, torch.full_like(users, TEST_START + 20 * DAY)))


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
