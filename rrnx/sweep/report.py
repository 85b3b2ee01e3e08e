"""The end of a sweep: the ranked trials table (printed, OUT/trials.csv, OUT/trials.md), the best
configuration as a runnable recipe (OUT/best-recipe.yaml), and a W&B summary run holding the
trials table and the parameter importances."""

from __future__ import annotations

import json
import math
import shlex
from pathlib import Path

import pandas as pd
from optuna.trial import TrialState

from rrnx.loggers import summary_run
from rrnx.recipe import dump_recipe
from rrnx.sweep.storage import RETRY_ATTR, SURPLUS_ATTR
from rrnx.sweep.spec import Sweep

STATE_ORDER = {TrialState.COMPLETE: 0, TrialState.PRUNED: 1, TrialState.FAIL: 2, TrialState.RUNNING: 3,
               TrialState.WAITING: 4}


def trials_frame(study, sweep: Sweep) -> pd.DataFrame:
    """One row per trial, best first: completed by validation RMSE, then pruned (by their last
    reported RMSE), failed, running and lost ones (failed with their worker, and run again).
    Trials given up as over-budget and enqueued trials not yet started are left out."""
    rows, trials = [], study.get_trials(deepcopy=False)
    retried = {t.user_attrs[RETRY_ATTR] for t in trials if RETRY_ATTR in t.user_attrs}
    for t in trials:
        if t.user_attrs.get(SURPLUS_ATTR) or t.state == TrialState.WAITING:
            continue
        lost = t.state == TrialState.FAIL and t.number in retried
        last_epoch = max(t.intermediate_values) if t.intermediate_values else None
        val = t.value if t.state == TrialState.COMPLETE else (
            t.intermediate_values[last_epoch] if last_epoch is not None else math.nan)
        seconds = (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_complete else math.nan
        row = {"trial": t.number, "state": "lost" if lost else t.state.name.lower(), "val_rmse": val,
               "test_rmse": t.user_attrs.get("test_rmse", math.nan),
               "epoch": t.user_attrs.get("best_epoch", last_epoch)}
        row.update({p.key: t.params.get(p.key) for p in sweep.space})
        row.update({"seconds": seconds, "params": t.user_attrs.get("params"),
                    "run_dir": t.user_attrs.get("run_dir", ""), "_order": 5 if lost else STATE_ORDER.get(t.state, 6)})
        rows.append(row)
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    for column in ("epoch", "params"):
        frame[column] = frame[column].astype("Int64")
    frame["seconds"] = frame["seconds"].round(1)
    frame = frame.sort_values(["_order", "val_rmse", "trial"], na_position="last").drop(columns="_order")
    frame.insert(0, "rank", range(1, len(frame) + 1))
    return frame.reset_index(drop=True)


def markdown(frame: pd.DataFrame, skip: tuple[str, ...] = ("run_dir",)) -> str:
    columns = [c for c in frame.columns if c not in skip]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for _, row in frame.iterrows():
        lines.append("| " + " | ".join(_cell(row[c], c) for c in columns) + " |")
    return "\n".join(lines) + "\n"


def _cell(value, column: str) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.4f}" if column.endswith("rmse") else f"{value:.4g}"
    return str(value)


def write_tables(frame: pd.DataFrame, out: Path) -> None:
    frame.to_csv(out / "trials.csv", index=False)
    (out / "trials.md").write_text(markdown(frame, skip=()))


def write_best_recipe(study, sweep: Sweep, out: Path) -> Path | None:
    """The best completed trial's recipe, with its `rrnx fit` command on the first line."""
    best = best_trial(study)
    if best is None:
        return None
    path = out / "best-recipe.yaml"
    recipe = json.loads(best.user_attrs["recipe"])
    params = ", ".join(f"{k}={v}" for k, v in best.params.items())
    header = "\n".join([
        f"# rrnx fit {shlex.quote(str(path))}",
        f"# best of sweep {sweep.path} (study {study.study_name!r}): trial {best.number}, {params}",
        f"# val RMSE {best.value:.4f}, test RMSE {best.user_attrs.get('test_rmse', math.nan):.4f}; "
        f"run directory {best.user_attrs.get('run_dir')}"])
    dump_recipe(recipe, path, header)
    return path


def best_trial(study):
    complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    return min(complete, key=lambda t: t.value) if complete else None


def importances(study, sweep: Sweep) -> dict[str, float]:
    """fANOVA importances of the searched keys; empty with fewer than two completed trials or no
    parameter that varied."""
    import optuna

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    varying = [p.key for p in sweep.space if len({repr(t.params.get(p.key)) for t in complete}) > 1]
    if len(complete) < 2 or not varying:
        return {}
    try:
        return dict(optuna.importance.get_param_importances(study, params=varying))
    except (ValueError, RuntimeError):  # e.g. parameters whose distributions changed mid-study
        return {}


def log_wandb_summary(study, sweep: Sweep, frame: pd.DataFrame, weights: dict, out: Path) -> str | None:
    """A `sweep-summary` W&B run in the study's group: trials table, importances, best trial."""
    run = summary_run(sweep.base_recipe["logger"], out, "sweep-summary", f"{study.study_name}-summary",
                      study.study_name, config={"sweep": str(sweep.path), "recipe": str(sweep.recipe_path),
                                                "space": {p.key: p.describe() for p in sweep.space},
                                                "sampler": sweep.sampler, "pruner": sweep.pruner})
    if run is None:
        return None
    import wandb

    table = frame.astype({c: "float64" for c in ("epoch", "params")})
    table = table.astype({c: str for c in table.columns if table[c].dtype == object})
    run.log({"trials": wandb.Table(dataframe=table)})
    if weights:
        run.log({"importances": wandb.Table(columns=["param", "importance"], data=[[k, v] for k, v in weights.items()])})
        for key, value in weights.items():
            run.summary[f"importance/{key}"] = value
    best = best_trial(study)
    if best is not None:
        run.summary.update({"best/trial": best.number, "best/val_rmse": best.value,
                            "best/test_rmse": best.user_attrs.get("test_rmse")})
        run.summary.update({f"best/{k}": v for k, v in best.params.items()})
    for state in ("complete", "pruned", "fail"):
        run.summary[f"trials/{state}"] = int((frame["state"] == state).sum()) if len(frame) else 0
    run_dir = str(Path(run.dir).parent)  # run.dir is its files/ folder
    run.finish()
    return run_dir
