"""Cold start (paper, Section 4.4, Figs. 9-10): where one model beats another, by history length.

Test ratings are bucketed by how many training ratings their user (Fig. 9) or item (Fig. 10)
has, in log-spaced buckets (1, 2, 3-4, 5-8, ...); per bucket, the gain of run A over run B is
(RMSE_B - RMSE_A) / RMSE_B, with a paired bootstrap 95% interval (the bucket's ratings
resampled, the same draws for both runs; rrnx.intervals). Buckets with fewer than
`min_bucket_ratings` test ratings are left out: their gain is noise. Both runs must predict the
same test ratings: their manifests' data fingerprints must match.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from rrnx.errors import RrnxError
from rrnx.report.plotting import finish, panel_figure
from rrnx.report.section import ReportOptions, Section, Skip

KEY, TITLE, PAPER = "cold_start", "Cold start", "Figs. 9-10"
STATIC_MODELS = ("pmf",)  # the paper's reference for the gain


def check_same_split(run_a, run_b) -> None:
    if not run_a.fingerprint or run_a.fingerprint != run_b.fingerprint:
        raise RrnxError(f"{run_a.run_dir} and {run_b.run_dir} were not trained on the same split "
                        "(manifest.json data_fingerprint differs): their predictions cannot be compared")


def log_bucket(counts: np.ndarray) -> np.ndarray:
    """0 for 1 rating, 1 for 2, 2 for 3-4, 3 for 5-8, ...: ceil(log2(count))."""
    return np.ceil(np.log2(np.maximum(counts, 1))).astype(np.int64)


def cold_start_gain(pred_a: pd.DataFrame, pred_b: pd.DataFrame, train: pd.DataFrame, side: str,
                    min_bucket_ratings: int = 1) -> pd.DataFrame:
    """Per log bucket of `side` ('user' or 'item') training counts: entities, ratings, both RMSEs,
    the relative gain of A over B and its 95% interval (gain_low, gain_high). `pred_*` are
    predictions.parquet frames of one split."""
    keys = ["user", "item", "timestamp"]
    both = pred_a[keys + ["rating", "prediction"]].merge(
        pred_b[keys + ["prediction"]], on=keys, suffixes=("_a", "_b"), validate="one_to_one")
    if len(both) != len(pred_a):
        raise RrnxError("the two runs' predictions.parquet do not hold the same test ratings")
    counts = train.groupby(side).size()
    both["train_count"] = counts.reindex(both[side]).fillna(0).to_numpy(np.int64)
    both["bucket"] = log_bucket(both["train_count"].to_numpy())
    both["err_a"] = (both["prediction_a"] - both["rating"]) ** 2
    both["err_b"] = (both["prediction_b"] - both["rating"]) ** 2
    table = both.groupby("bucket").agg(entities=(side, "nunique"), ratings=("rating", "size"),
                                       rmse_a=("err_a", "mean"), rmse_b=("err_b", "mean")).reset_index()
    table[["rmse_a", "rmse_b"]] = np.sqrt(table[["rmse_a", "rmse_b"]])
    table["low"] = np.where(table["bucket"] == 0, 1, 2 ** (table["bucket"] - 1).clip(lower=0) + 1)
    table["high"] = 2 ** table["bucket"]
    table["gain"] = (table["rmse_b"] - table["rmse_a"]) / table["rmse_b"]
    intervals = [gain_interval(rows["err_a"].to_numpy(), rows["err_b"].to_numpy())
                 for _, rows in both.groupby("bucket")]  # same bucket order as the table
    table["gain_low"], table["gain_high"] = zip(*intervals) if intervals else ((), ())
    return table[table["ratings"] >= min_bucket_ratings].reset_index(drop=True).assign(side=side)


def gain_interval(err_a: np.ndarray, err_b: np.ndarray) -> tuple[float, float]:
    """Paired bootstrap 95% interval of (RMSE_B - RMSE_A) / RMSE_B from per-rating squared errors."""
    from rrnx.intervals import percentile_interval, resample_rmse

    draws = resample_rmse(np.stack([err_a, err_b]))  # (resamples, 2)
    return percentile_interval((draws[:, 1] - draws[:, 0]) / np.maximum(draws[:, 1], 1e-12))


def plot_cold_start(frame: pd.DataFrame):
    """Figs. 9-10: gain (%) against training ratings per user / per item, marker area = count."""
    fig, axes = panel_figure(["per user (Fig. 9)", "per item (Fig. 10)"], sharey=False)
    for ax, side in zip(axes, ("user", "item")):
        sub = frame[frame["side"] == side]
        for pair, rows in sub.groupby("pair", sort=False):
            x = np.sqrt(rows["low"] * rows["high"])  # geometric middle of the bucket
            area = 300 * rows["entities"] / max(rows["entities"].max(), 1)
            errors = [100 * (rows["gain"] - rows["gain_low"]), 100 * (rows["gain_high"] - rows["gain"])]
            line = ax.errorbar(x, 100 * rows["gain"], yerr=errors, lw=0.8, alpha=0.6, capsize=2)
            ax.scatter(x, 100 * rows["gain"], s=np.maximum(area, 6), alpha=0.6, label=pair, color=line[0].get_color())
        ax.axhline(0, color="k", lw=0.6)
        ax.set_xscale("log")
        ax.set_xlabel(f"training ratings per {side}")
        ax.legend(fontsize=7)
    axes[0].set_ylabel("RMSE gain of A over B (%)")
    return finish(fig)


def comparison_pairs(runs) -> list[tuple]:
    """(A, B) pairs on the same split: each run against the first static run (PMF), or against
    the first run when there is none. Runs on other splits are left out."""
    reference = next((r for r in runs if r.model_name in STATIC_MODELS), runs[0])
    return [(run, reference) for run in runs if run is not reference and run.fingerprint == reference.fingerprint]


def section(runs, options: ReportOptions) -> Section:
    if len(runs) < 2:
        raise Skip("needs two runs on the same split (e.g. an RRN run and a PMF run)")
    pairs = comparison_pairs(runs)
    if not pairs:
        reference = next((r for r in runs if r.model_name in STATIC_MODELS), runs[0])
        other = next(r for r in runs if r is not reference)
        try:
            check_same_split(other, reference)
        except RrnxError as exc:
            raise Skip(str(exc)) from None
    frames = []
    for run_a, run_b in pairs:
        check_same_split(run_a, run_b)
        train = run_a.data.split.train
        for side in ("user", "item"):
            table = cold_start_gain(run_a.predictions(), run_b.predictions(), train, side, options.min_bucket_ratings)
            frames.append(table.assign(pair=f"{run_a.label} over {run_b.label}"))
    frame = pd.concat(frames, ignore_index=True)
    if frame.empty:
        raise Skip(f"no bucket has {options.min_bucket_ratings}+ test ratings; lower --min-bucket-ratings")
    caption = ("Relative RMSE gain (RMSE_B - RMSE_A) / RMSE_B on the test half, bucketed by the number of "
               "training ratings of the rating's user (left) and item (right); bars: paired bootstrap 95% "
               f"intervals; buckets with fewer than {options.min_bucket_ratings} test ratings left out; "
               "marker area: users / items in the bucket.")
    shown = frame[["pair", "side", "low", "high", "entities", "ratings", "rmse_a", "rmse_b", "gain", "gain_low",
                   "gain_high"]].round(4)
    return Section(KEY, TITLE, PAPER, caption, {KEY: plot_cold_start(frame)}, {"gain per bucket": shown}, frame)
