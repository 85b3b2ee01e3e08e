"""Update without re-training (paper, Section 4.5, Fig. 11).

The ratings of the first test step (the item step holding the test start; validation and test
halves together) are fed through the trained networks (`model.advance`), and the second step's
ratings are predicted with the advanced states and with the states at the end of training. The
RMSE improvement is shown per bucket of item rating fluctuation: the highest minus the lowest
mean rating over the item's steps (training and both test steps) with enough ratings; items
with fewer than `min_test_ratings` ratings in the second step are left out (footnote 3). Each
bucket's improvement has a bootstrap 95% interval over its items (items resampled with their
ratings, the same draws for both states), and buckets with fewer than `min_bucket_ratings`
ratings are left out.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from rrnx.report.plotting import finish, panel_figure
from rrnx.report.section import ReportOptions, Section, Skip
from rrnx.report.trace import date_ts, fluctuation

KEY, TITLE, PAPER = "update", "Update without re-training", "Section 4.5, Fig. 11"
FED_COLUMNS = ["user_idx", "item_idx", "rating", "timestamp"]


def test_steps(data) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """(ratings of the first test step, of the second, first step index) at the item granularity."""
    gran = data.item_granularity
    held = pd.concat([data.split.val, data.split.test], ignore_index=True)
    step = gran.step_of(held["timestamp"].to_numpy())
    first_step = int(gran.step_of([date_ts(data.hparams.test_start, "data.test_start")])[0])
    return held[step == first_step], held[step == first_step + 1], first_step


def predict_frame(model, data, ratings: pd.DataFrame) -> np.ndarray:
    columns = (torch.tensor(ratings[c].to_numpy(np.int64)) for c in ("user_idx", "item_idx", "timestamp"))
    return model.predict_at(data, *columns).numpy()


def update_without_retraining(model, data, min_test_ratings: int = 20, min_period_ratings: int = 20) -> pd.DataFrame:
    """Per item of the second test step: its fluctuation, ratings, and RMSE with the states at
    the end of training (`rmse_static`) and after feeding the first step (`rmse_updated`)."""
    first, second, first_step = test_steps(data)
    if first.empty or second.empty:
        raise Skip(f"the test period has no ratings in item step {first_step} or {first_step + 1}")
    static = predict_frame(model, data, second)
    model.advance(data, first[FED_COLUMNS])
    try:
        updated = predict_frame(model, data, second)
    finally:
        model.reset_states()
    scored = second.assign(err_static=(static - second["rating"]) ** 2, err_updated=(updated - second["rating"]) ** 2)
    per_item = scored.groupby("item_idx").agg(ratings=("rating", "size"), rmse_static=("err_static", "mean"),
                                              rmse_updated=("err_updated", "mean"))
    per_item[["rmse_static", "rmse_updated"]] = np.sqrt(per_item[["rmse_static", "rmse_updated"]])
    seen = pd.concat([data.split.train, first, second], ignore_index=True)
    per_item["fluctuation"] = fluctuation(seen, data.item_granularity.step_of, min_period_ratings)
    per_item = per_item[(per_item["ratings"] >= min_test_ratings) & per_item["fluctuation"].notna()]
    per_item["item"] = data.split.item_ids[per_item.index.to_numpy()]
    return per_item.reset_index(drop=True)


def by_fluctuation(per_item: pd.DataFrame, buckets: int = 4, min_bucket_ratings: int = 1) -> pd.DataFrame:
    """Per fluctuation quantile bucket: items, ratings, pooled RMSEs, the improvement and its 95%
    interval (improvement_low, improvement_high)."""
    bucket = pd.qcut(per_item["fluctuation"], min(buckets, len(per_item)), duplicates="drop")
    sq = per_item.assign(bucket=bucket.astype(str), se_static=per_item["rmse_static"] ** 2 * per_item["ratings"],
                         se_updated=per_item["rmse_updated"] ** 2 * per_item["ratings"])
    table = sq.groupby("bucket", sort=False, observed=True).agg(
        low=("fluctuation", "min"), items=("item", "size"), ratings=("ratings", "sum"),
        se_static=("se_static", "sum"), se_updated=("se_updated", "sum")).reset_index().sort_values("low")
    table["rmse_static"] = np.sqrt(table.pop("se_static") / table["ratings"])
    table["rmse_updated"] = np.sqrt(table.pop("se_updated") / table["ratings"])
    table["improvement"] = table["rmse_static"] - table["rmse_updated"]
    intervals = {name: improvement_interval(rows) for name, rows in sq.groupby("bucket", sort=False, observed=True)}
    table["improvement_low"] = [intervals[b][0] for b in table["bucket"]]
    table["improvement_high"] = [intervals[b][1] for b in table["bucket"]]
    return table[table["ratings"] >= min_bucket_ratings].drop(columns="low").reset_index(drop=True)


def improvement_interval(items: pd.DataFrame, resamples: int = 1000, seed: int = 0) -> tuple[float, float]:
    """Bootstrap 95% interval of a bucket's pooled RMSE improvement, resampling its items."""
    from rrnx.intervals import percentile_interval

    se = items[["se_static", "se_updated"]].to_numpy()  # (n_items, 2) summed squared errors
    counts = items["ratings"].to_numpy(np.float64)  # (n_items,)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(items), (resamples, len(items)))  # (resamples, n_items)
    pooled = np.sqrt(se[picks].sum(1) / counts[picks].sum(1)[:, None])  # (resamples, 2)
    return percentile_interval(pooled[:, 0] - pooled[:, 1])


def plot_update(frame: pd.DataFrame):
    """Fig. 11: RMSE improvement per fluctuation bucket, one bar per run."""
    fig, (ax,) = panel_figure(["RMSE(no update) - RMSE(after feeding step 1)"])
    runs = list(dict.fromkeys(frame["run"]))
    width = 0.8 / len(runs)
    for k, run in enumerate(runs):
        sub = frame[frame["run"] == run].reset_index(drop=True)
        x = np.arange(len(sub)) + (k - (len(runs) - 1) / 2) * width
        errors = [sub["improvement"] - sub["improvement_low"], sub["improvement_high"] - sub["improvement"]]
        ax.bar(x, sub["improvement"], width, label=run, yerr=errors, capsize=2)
        for xi, yi, n in zip(x, sub["improvement"], sub["items"]):
            ax.annotate(f"{n}", (xi, yi), ha="center", va="bottom" if yi >= 0 else "top", fontsize=7)
        ax.set_xticks(np.arange(len(sub)), sub["bucket"], fontsize=7)
    ax.axhline(0, color="k", lw=0.6)
    ax.set_xlabel("item rating fluctuation (bar labels: items)")
    ax.set_ylabel("RMSE improvement")
    ax.legend(fontsize=7)
    return finish(fig)


def section(runs, options: ReportOptions) -> Section:
    able = [run for run in runs if callable(getattr(run.model, "advance", None))]
    if not able:
        names = ", ".join(sorted({run.model_name for run in runs}))
        raise Skip(f"no model here takes new ratings without re-training (no advance(): {names})")
    frames, items = [], []
    for run in able:
        per_item = update_without_retraining(run.model, run.data, options.min_test_ratings, options.min_period_ratings)
        if per_item.empty:
            raise Skip(f"{run.run_dir}: no item has {options.min_test_ratings}+ ratings in the second test step "
                       "and a measurable fluctuation; lower --min-test-ratings")
        items.append(per_item.assign(run=run.label))
        frames.append(by_fluctuation(per_item, min_bucket_ratings=options.min_bucket_ratings).assign(run=run.label))
    frame = pd.concat(frames, ignore_index=True)
    if frame.empty:
        raise Skip(f"no fluctuation bucket has {options.min_bucket_ratings}+ ratings; lower --min-bucket-ratings")
    first, second, step = test_steps(able[0].data)
    caption = (f"Ratings of the first test step ({len(first):,}, item step {step}) fed through the trained model; "
               f"RMSE on the second step's ratings of items with at least {options.min_test_ratings} of them, "
               "per quartile of item rating fluctuation; bars: bootstrap 95% intervals over items; buckets with "
               f"fewer than {options.min_bucket_ratings} ratings left out.")
    shown = frame[["run", "bucket", "items", "ratings", "rmse_static", "rmse_updated", "improvement",
                   "improvement_low", "improvement_high"]].round(4)
    return Section(KEY, TITLE, PAPER, caption, {KEY: plot_update(frame)}, {"per fluctuation bucket": shown},
                   pd.concat(items, ignore_index=True))
