"""Average predictions traced over time (Section 4.3): the building block of Figs. 5-8.

A trace asks the trained model what a set of users *would* rate a set of items at each time
step (`RatingModel.predict_at`, causal for temporal models), whether or not they rated them,
and averages over the users; the same users at every step unless the caller samples per step.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from rrnx.data.split import to_timestamp
from rrnx.errors import RrnxError

PAIRS_PER_CALL = 1 << 20  # (user, item) pairs per predict_at call: RRN reruns its LSTMs per call, so few big calls


def sample_users(data, n_users: int, seed: int = 0) -> np.ndarray:
    """A fixed random sample of user_idx (all users when there are fewer)."""
    rng = np.random.default_rng(seed)
    n = min(int(n_users), data.n_users)
    return np.sort(rng.choice(data.n_users, size=n, replace=False))


def item_indices(data, item_ids, what: str = "--items") -> np.ndarray:
    """item_idx of original item ids; ids unknown to the training data are a user error."""
    ids = np.array(list(item_ids))
    known = data.split.item_ids
    pos = np.searchsorted(known, ids)
    ok = (pos < len(known)) & (known[np.minimum(pos, len(known) - 1)] == ids)
    if not ok.all():
        missing = ", ".join(str(x) for x in ids[~ok][:5])
        raise RrnxError(f"{what}: item id(s) {missing} have no training rating in this run's data")
    return pos.astype(np.int64)


def step_grid(data, side: str = "item", until: str = "train") -> pd.DataFrame:
    """The time steps of one side's granularity from the first training rating to the end of
    training (`until='train'`) or of the test period (`'test'`): step, start (unix s), time."""
    gran = data.item_granularity if side == "item" else data.user_granularity
    first = int(data.split.train["timestamp"].min())
    last = int(data.split.train["timestamp"].max())
    if until == "test":
        last = max(last, *(int(data.split.frame(s)["timestamp"].max()) for s in ("val", "test")))
    steps = np.arange(int(gran.step_of([first])[0]), int(gran.step_of([last])[0]) + 1)
    starts = np.maximum(gran.start_of(steps), first)  # step 0 may begin before the first rating
    return pd.DataFrame({"step": steps, "start": starts, "time": pd.to_datetime(starts, unit="s")})


def mean_predictions(model, data, users: np.ndarray, items: np.ndarray, timestamp: int) -> np.ndarray:
    """(len(items),) average over `users` of the model's prediction for each item at one time."""
    return mean_predictions_many(model, data, [(users, items, timestamp)])[0]


def mean_predictions_many(model, data, queries: list[tuple]) -> list[np.ndarray]:
    """For each query (users, items, timestamp): the (len(items),) mean prediction over its users.
    Queries are packed into few predict_at calls of at most ~PAIRS_PER_CALL pairs each."""
    blocks = []  # (query, first item position, users, items of the block, timestamp)
    for q, (users, items, timestamp) in enumerate(queries):
        per_block = max(1, PAIRS_PER_CALL // max(len(users), 1))
        blocks += [(q, s, np.asarray(users), np.asarray(items[s:s + per_block]), int(timestamp))
                   for s in range(0, len(items), per_block)]
    means = [np.zeros(len(items)) for _, items, _ in queries]
    call, pairs = [], 0
    for block in blocks + [None]:
        size = 0 if block is None else len(block[2]) * len(block[3])
        if call and (block is None or pairs + size > PAIRS_PER_CALL):
            predict_blocks(model, data, call, means)
            call, pairs = [], 0
        if block is not None:
            call.append(block)
            pairs += size
    return means


def predict_blocks(model, data, blocks: list[tuple], means: list[np.ndarray]) -> None:
    """One predict_at call over every (user, item) pair of the blocks; block means into `means`."""
    users = np.concatenate([np.tile(b[2], len(b[3])) for b in blocks])  # users vary fastest
    items = np.concatenate([np.repeat(b[3], len(b[2])) for b in blocks])
    times = np.concatenate([np.full(len(b[2]) * len(b[3]), b[4]) for b in blocks])
    pred = model.predict_at(data, torch.tensor(users, dtype=torch.int64), torch.tensor(items, dtype=torch.int64),
                            torch.tensor(times, dtype=torch.int64)).float().numpy()  # (pairs,)
    offset = 0
    for q, first, block_users, block_items, _ in blocks:
        size = len(block_users) * len(block_items)
        block_means = pred[offset:offset + size].reshape(len(block_items), len(block_users)).mean(1)  # (I_b,)
        means[q][first:first + len(block_items)] = block_means
        offset += size


def trace_items(model, data, items: np.ndarray, users: np.ndarray, grid: pd.DataFrame) -> pd.DataFrame:
    """Long frame (item_idx, step, time, prediction): mean over the same `users` at every step."""
    means = mean_predictions_many(model, data, [(users, items, start) for start in grid["start"]])
    return pd.DataFrame({"item_idx": np.tile(items, len(grid)), "step": np.repeat(grid["step"].to_numpy(), len(items)),
                         "time": np.repeat(grid["time"].to_numpy(), len(items)), "prediction": np.concatenate(means)})


def date_ts(value, what: str) -> int:
    ts = to_timestamp(value, what)
    if ts is None:
        raise RrnxError(f"{what}: a date is required")
    return ts


def first_rating_times(data) -> pd.Series:
    """Per item_idx, the unix time of its first training rating (its 'age' origin)."""
    return data.split.train.groupby("item_idx")["timestamp"].min()


def fluctuation(frame: pd.DataFrame, period_of, min_ratings: int) -> pd.Series:
    """Per item_idx, the mean rating of its highest-rated period minus its lowest (footnote 2);
    periods with fewer than `min_ratings` ratings are left out, items with < 2 periods get NaN."""
    periods = frame.assign(period=period_of(frame["timestamp"].to_numpy()))
    stats = periods.groupby(["item_idx", "period"])["rating"].agg(["mean", "size"])
    stats = stats[stats["size"] >= min_ratings]
    spread = stats.groupby(level="item_idx")["mean"].agg(lambda m: m.max() - m.min() if len(m) > 1 else np.nan)
    return spread.rename("fluctuation")
