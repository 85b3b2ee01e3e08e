"""Bootstrap confidence intervals for RMSEs measured on one set of test rows.

Test halves here hold 1-16k ratings, so a 0.005 RMSE difference between two models can be noise.
Both functions resample the rows with replacement (percentile bootstrap, Efron & Tibshirani 1993,
ch. 13), with a fixed seed so a table is reproducible. A paired bootstrap draws the same rows for
every model, so what varies between models is the models, not the rows (the comparison is paired).
"""

from __future__ import annotations

import numpy as np

RESAMPLES = 1000
SEED = 0
LEVEL = 0.95


def resample_rmse(squared_errors: np.ndarray, resamples: int = RESAMPLES, seed: int = SEED) -> np.ndarray:
    """RMSE of each row of `squared_errors` (M, n) on `resamples` shared bootstrap draws of the
    n columns: (resamples, M)."""
    squared_errors = np.atleast_2d(np.asarray(squared_errors, dtype=np.float64))  # (M, n)
    n = squared_errors.shape[1]
    rng = np.random.default_rng(seed)
    out = np.empty((resamples, len(squared_errors)))
    for draw in range(resamples):
        rows = rng.integers(0, n, n)  # (n,)
        out[draw] = np.sqrt(squared_errors[:, rows].mean(1))
    return out


def percentile_interval(samples: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(samples, [tail, 100 - tail])
    return float(low), float(high)


def rmse_interval(truth: np.ndarray, prediction: np.ndarray, resamples: int = RESAMPLES,
                  seed: int = SEED) -> tuple[float, float]:
    """95% bootstrap interval of one RMSE (an empty set of rows gives NaNs)."""
    if len(truth) == 0:
        return float("nan"), float("nan")
    squared = (np.asarray(prediction, np.float64) - np.asarray(truth, np.float64)) ** 2
    return percentile_interval(resample_rmse(squared[None], resamples, seed)[:, 0])


def paired_differences(truth: np.ndarray, predictions: dict[str, np.ndarray], resamples: int = RESAMPLES,
                       seed: int = SEED, exclude_from_best: tuple[str, ...] = ()) -> dict[str, dict]:
    """For each model: RMSE minus the RMSE of the best *other* model (lowest RMSE, leaving out
    `exclude_from_best`), with the paired bootstrap 95% interval of that difference.
    A negative interval that excludes 0 says the model beats every other one on these rows."""
    names = list(predictions)
    truth = np.asarray(truth, np.float64)
    squared = np.stack([(np.asarray(predictions[n], np.float64) - truth) ** 2 for n in names])  # (M, n)
    rmse = np.sqrt(squared.mean(1))  # (M,)
    draws = resample_rmse(squared, resamples, seed)  # (resamples, M)
    result = {}
    for m, name in enumerate(names):
        others = [o for o, other in enumerate(names) if other != name and other not in exclude_from_best]
        if not others:
            continue
        best = min(others, key=lambda o: rmse[o])
        low, high = percentile_interval(draws[:, m] - draws[:, best])
        result[name] = {"vs": names[best], "diff": float(rmse[m] - rmse[best]), "ci_low": low, "ci_high": high}
    return result
