"""rrnx predict RUN_DIR --user ID [--item ID ...] [--at DATE] [--top N]: one user's predicted ratings."""

from pathlib import Path

import numpy as np

from rrnx.commands import ALLOW_DATA_CHANGE_HELP

NAME = "predict"
HELP = "a user's predicted ratings (for --item IDs, or the top N items not rated in training) at a date"


def add_arguments(parser) -> None:
    parser.add_argument("run_dir", type=Path, help="a finished `rrnx fit` run directory")
    parser.add_argument("--user", required=True, help="the user's original id (as in the ratings file)")
    parser.add_argument("--item", nargs="+", help="original item ids to predict (default: top N unrated items)")
    parser.add_argument("--at", help="date of the prediction, e.g. 2005-12-15 (default: the end of training)")
    parser.add_argument("--top", type=int, default=10, help="how many items without --item (default 10)")
    parser.add_argument("--allow-data-change", action="store_true", help=ALLOW_DATA_CHANGE_HELP)


def to_index(ids: np.ndarray, values, what: str) -> tuple[np.ndarray, list]:
    """Contiguous indices of original ids (`ids` sorted, as Split.user_ids/item_ids); returns
    (indices of the known ones, the unknown values)."""
    given = np.asarray(values)
    if ids.dtype.kind in "iu":
        as_int = np.array([_as_int(v) for v in given.tolist()], dtype=object)
        known_type = np.array([v is not None for v in as_int], dtype=bool)  # (empty: bool, not float)
        values = np.where(known_type, as_int, -1).astype(np.int64)
    else:
        values, known_type = given.astype(str), np.ones(len(given), bool)
    pos = np.clip(np.searchsorted(ids, values), 0, max(len(ids) - 1, 0))
    known = known_type & (ids[pos] == values) if len(ids) else np.zeros(len(values), bool)
    return pos[known], given[~known].tolist()  # the unknown ones as given ('abc', not the -1 it stood for)


def _as_int(value):
    try:
        return int(str(value))
    except ValueError:
        return None


def run(args, overrides) -> int:
    import pandas as pd
    import torch

    from rrnx.data.split import to_timestamp
    from rrnx.errors import RrnxError
    from rrnx.loggers import quiet_lightning
    from rrnx.run import load_trained

    quiet_lightning()
    recipe, _, data, model = load_trained(args.run_dir, args.allow_data_change)
    split = data.split
    user, unknown = to_index(split.user_ids, [args.user], "user")
    if unknown:
        raise RrnxError(f"--user {args.user}: no such user in the training data of {args.run_dir}")
    at = to_timestamp(args.at, "--at") if args.at else to_timestamp(data.hparams.test_start, "data.test_start")
    first = int(split.train["timestamp"].min())
    if at < first:  # no state exists before the first training step: the answer would be made up
        raise RrnxError(f"--at {args.at}: before the training data begins "
                        f"({pd.Timestamp(first, unit='s', tz='UTC'):%Y-%m-%d}); predict at a later date")
    train = split.train
    rated = np.unique(train.loc[train["user_idx"] == user[0], "item_idx"].to_numpy())
    if args.item:
        items, unknown = to_index(split.item_ids, args.item, "item")
        if unknown:
            raise RrnxError(f"--item: unknown item id(s) {', '.join(map(str, unknown))} (not in the training data)")
    else:
        if args.top < 1:
            raise RrnxError("--top must be at least 1")
        items = np.setdiff1d(np.arange(split.n_items), rated)
    n = len(items)
    pred = model.predict_at(data, torch.full((n,), int(user[0])), torch.as_tensor(items),
                            torch.full((n,), int(at))).numpy()
    table = pd.DataFrame({"item": split.item_ids[items], "predicted": pred.round(4),
                          "rated_in_training": np.isin(items, rated)})
    if not args.item:
        table = table.sort_values("predicted", ascending=False, kind="stable").head(args.top)
    when = pd.Timestamp(int(at), unit="s", tz="UTC").strftime("%Y-%m-%d")
    print(f"{recipe['model']['name']} ({args.run_dir}): user {args.user} at {when}, "
          f"{len(rated)} items rated in training")
    print(table.to_string(index=False))
    return 0
