"""rrnx update RUN_DIR NEW_RATINGS [--format F] [--until DATE] [--out FILE]: feed newly observed
ratings through a trained RRN without re-training (paper, Section 4.5)."""

from pathlib import Path

import numpy as np

from rrnx.commands import ALLOW_DATA_CHANGE_HELP

NAME = "update"
HELP = "advance a trained RRN's states with newly observed ratings (no re-training) and predict what follows"


def add_arguments(parser) -> None:
    parser.add_argument("run_dir", type=Path, help="a finished `rrnx fit` run directory of an RRN")
    parser.add_argument("new_ratings", type=Path, help="ratings observed after training, original ids, any rrnx format")
    parser.add_argument("--format", default="auto", help="format of NEW_RATINGS (default: detected)")
    parser.add_argument("--until", help="feed only ratings before this date; predict (and score) the ones from it on, "
                                        "with the states before and after the update")
    parser.add_argument("--out", type=Path, help="write the scored predictions (with --until) or the advanced "
                                                 "dynamic states of the users and items touched (without) as parquet")
    parser.add_argument("--allow-data-change", action="store_true", help=ALLOW_DATA_CHANGE_HELP)


def known_ratings(frame, split, say):
    """NEW_RATINGS with contiguous indices; unknown users/items are reported and skipped."""
    from rrnx.commands.predict import to_index

    keep = np.ones(len(frame), bool)
    for side, ids in (("user", split.user_ids), ("item", split.item_ids)):
        values = frame[side].to_numpy()
        uniq = np.unique(values)
        _, unknown = to_index(ids, uniq, side)
        if unknown:
            drop = np.isin(values, np.asarray(unknown, dtype=values.dtype))
            shown = ", ".join(map(str, unknown[:5])) + (" ..." if len(unknown) > 5 else "")
            say(f"skipped {int((drop & keep).sum()):,} ratings of {len(unknown):,} {side}s unknown to the model: {shown}")
            keep &= ~drop
    frame = frame[keep].copy()
    frame["user_idx"] = to_index(split.user_ids, frame["user"].to_numpy(), "user")[0]
    frame["item_idx"] = to_index(split.item_ids, frame["item"].to_numpy(), "item")[0]
    return frame


def warn_off_scale(frame, path, rating_range) -> None:
    """One warning line when new ratings lie outside the training ratings' range (a file on another scale,
    say 1-10 against a model trained on 1-5, would be fed and scored as if it were on the model's)."""
    import sys

    low, high = rating_range
    off = (frame["rating"] < low) | (frame["rating"] > high)
    if off.any():
        example = float(frame["rating"][off].iloc[0])
        print(f"warning: {path}: {int(off.sum()):,} of {len(frame):,} ratings lie outside the training ratings' "
              f"range {low:g}..{high:g} (e.g. {example:g}): is the file on the model's scale?", file=sys.stderr)


def run(args, overrides) -> int:
    import torch

    from rrnx.data.cache import load_ratings
    from rrnx.data.split import to_timestamp
    from rrnx.errors import RrnxError
    from rrnx.loggers import quiet_lightning
    from rrnx.run import load_trained

    quiet_lightning()
    recipe, _, data, model = load_trained(args.run_dir, args.allow_data_change)
    if not hasattr(model, "advance"):
        raise RrnxError(f"{args.run_dir}: model {recipe['model']['name']!r} has no states to update; "
                        "only RRN learns a transition function (Section 4.5)")
    frame = load_ratings(args.new_ratings, args.format, scale=data.hparams.scale, cache_dir=data.cache_dir,
                         progress=False)  # a declared data.scale refuses what lies outside it, naming the row
    warn_off_scale(frame, args.new_ratings, data.rating_range)
    frame = known_ratings(frame, data.split, print)
    test_start = to_timestamp(data.hparams.test_start, "data.test_start")
    early = frame["timestamp"].to_numpy() < test_start
    if early.any():
        print(f"skipped {int(early.sum()):,} ratings from before the end of training ({data.hparams.test_start})")
        frame = frame[~early]
    if len(frame) == 0:  # fed nothing, predicted nothing: exit 0 would read as a done update
        raise RrnxError(f"{args.new_ratings}: no rating left to feed or predict (each was skipped above: "
                        "a user or item unknown to the model, or from before the end of training)")
    until = to_timestamp(args.until, "--until") if args.until else None
    fed = frame if until is None else frame[frame["timestamp"] < until]
    held = frame.iloc[:0] if until is None else frame[frame["timestamp"] >= until]
    if until is not None and len(held) == 0:
        raise RrnxError(f"--until {args.until}: no rating of {args.new_ratings} is on or after that date to predict")

    def predict(rows):
        tensors = [torch.as_tensor(rows[c].to_numpy(np.int64)) for c in ("user_idx", "item_idx", "timestamp")]
        return model.predict_at(data, *tensors).numpy()

    before = predict(held) if len(held) else None
    counts = model.advance(data, fed)
    print(f"fed {counts['ratings']:,} new ratings of {counts['users']:,} users and {counts['items']:,} items "
          f"through the trained networks")
    if len(held):
        after = predict(held)
        rating = held["rating"].to_numpy()
        rmse = [float(np.sqrt(np.mean((p - rating) ** 2))) for p in (before, after)]
        print(f"predicted {len(held):,} ratings from {args.until} on: RMSE {rmse[0]:.4f} with the training states, "
              f"{rmse[1]:.4f} after the update")
        out = held[["user", "item", "timestamp", "rating"]].assign(before_update=before, after_update=after)
    else:
        out = touched_states(model, data, fed)
    if args.out:
        from rrnx.rundir import replace_atomically

        replace_atomically(args.out, lambda temp: out.to_parquet(temp, index=False))
        print(f"wrote {len(out):,} rows to {args.out}")
    return 0


def touched_states(model, data, fed):
    """The advanced dynamic states (W u_t + b) of the users and items the new ratings touched."""
    import pandas as pd

    user_final, item_final = model._final_states()
    frames = []
    for side, column, ids, final in (("user", "user_idx", data.split.user_ids, user_final),
                                     ("item", "item_idx", data.split.item_ids, item_final)):
        idx = np.unique(fed[column].to_numpy(np.int64))
        states = final[torch_index(idx)].numpy()
        frame = pd.DataFrame(states, columns=[f"d{k}" for k in range(states.shape[1])])
        frame.insert(0, "id", ids[idx].astype(str))
        frame.insert(0, "side", side)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def torch_index(idx):
    import torch

    return torch.as_tensor(idx, dtype=torch.int64)
