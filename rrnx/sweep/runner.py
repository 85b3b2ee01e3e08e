"""Running a study: each trial is an ordinary `rrnx.run.fit` in OUT/trials/trial-NNNN.

Budget rule: `n_trials` counts the trials that ran to an answer: complete, pruned, or failed
with an error of their own (a diverging learning rate is an answer too). A trial lost with its
worker (killed, interrupted, machine gone) does not count: it is enqueued again with the same
parameters, and run by `--resume` or by a surviving worker. A worker starts a trial only while
finished + running < n_trials; when the rest are running in other workers it waits, and takes
over if one of them dies. `timeout` is per invocation: no trial starts after it; a running
trial finishes.
"""

from __future__ import annotations

import json
import logging
import math
import multiprocessing
import os
import sys
import time
import traceback
from dataclasses import dataclass, replace
from pathlib import Path

import optuna
from optuna.trial import TrialState

from rrnx.errors import RrnxError
from rrnx.models.base import VAL_RMSE
from rrnx.sweep.spec import Sweep, make_pruner, make_sampler
from rrnx.sweep.storage import (SURPLUS_ATTR, budget_counts, counted, fail_dead_trials, mark_owner, open_storage,
                                retry_lost_trial)

POLL_SECONDS = 2.0
MAX_FAILURES_IN_A_ROW = 3  # errors (not divergence) in a row that stop a worker: the setup is broken
DIVERGED_ATTR = "diverged"


@dataclass
class Job:
    """Everything a worker process needs (picklable: workers are spawned)."""
    sweep: Sweep
    storage: str
    study_name: str
    out: Path
    n_trials: int | None
    deadline: float | None  # time.time() after which no trial starts
    worker: int = 0
    threads: int | None = None


class SurplusTrial(Exception):
    """Two workers asked for the last trial at once; the later one gives its trial up."""


def trial_dir(out: Path, number: int) -> Path:
    return out / "trials" / f"trial-{number:04d}"


def runtime_recipe(recipe: dict, study_name: str) -> dict:
    """What a trial runs: its recipe grouped under the study in W&B, without progress bars."""
    recipe = json.loads(json.dumps(recipe))
    recipe["logger"] = {**recipe["logger"], "group": study_name, "job_type": "trial"}
    recipe["trainer"].setdefault("enable_progress_bar", False)
    return recipe


class TrialObjective:
    """Optuna objective: one trial = one run directory; returns the best validation RMSE."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self.last: optuna.trial.FrozenTrial | None = None

    def __call__(self, trial: optuna.Trial) -> float:
        mark_owner(trial)
        sweep = self.job.sweep
        params = {p.key: p.suggest(trial) for p in sweep.space}
        if self.is_surplus(trial):  # its point (a grid point, maybe) is kept for a later run
            trial.set_user_attr(SURPLUS_ATTR, True)
            retry_lost_trial(trial.study, trial)
            raise SurplusTrial(f"trial {trial.number} is over the budget of {self.job.n_trials}")
        run_dir = trial_dir(self.job.out, trial.number)
        trial.set_user_attr("run_dir", str(run_dir.resolve()))
        try:
            recipe = sweep.trial_recipe(params)
            trial.set_user_attr("recipe", json.dumps(recipe))
            metrics = self.fit(trial, recipe, run_dir)
        except optuna.TrialPruned as exc:
            note(run_dir, "PRUNED", f"trial {trial.number} was pruned by the {sweep.pruner['name']} pruner: {exc}\n")
            close_wandb("pruned", 0)
            raise
        except KeyboardInterrupt:
            note(run_dir, "FAILED", f"trial {trial.number} was interrupted; its parameters are enqueued again\n")
            retry_lost_trial(trial.study, trial)
            close_wandb("interrupted", 1)
            raise
        except BaseException as exc:
            trial.set_user_attr("error", f"{type(exc).__name__}: {exc}"[:500])
            note(run_dir, "FAILED", f"trial {trial.number} failed:\n{traceback.format_exc()}")
            close_wandb("failed", 1)
            raise
        for key in ("test_rmse", "best_epoch", "params", "train_seconds"):
            trial.set_user_attr(key, metrics[key])
        if not math.isfinite(metrics["val_rmse"]):  # Optuna fails the trial; say why
            trial.set_user_attr("error", f"validation RMSE is {metrics['val_rmse']} (training diverged)")
            trial.set_user_attr(DIVERGED_ATTR, True)
        return metrics["val_rmse"]

    def fit(self, trial, recipe: dict, run_dir: Path) -> dict:
        from rrnx.run import fit

        callbacks = [] if self.job.sweep.pruner["name"] == "none" else [pruning_callback(trial)]
        return fit(runtime_recipe(recipe, self.job.study_name), run_dir, quiet=True, callbacks=callbacks,
                   one_process="rrnx sweep")

    def is_surplus(self, trial) -> bool:
        if self.job.n_trials is None:
            return False
        earlier = [t for t in trial.study.get_trials(deepcopy=False) if t.number < trial.number]
        return len(counted(earlier)) + sum(t.state == TrialState.RUNNING for t in earlier) >= self.job.n_trials

    def record(self, study, frozen: optuna.trial.FrozenTrial) -> None:
        """Optuna callback after each trial: keeps it for the worker loop and prints one line."""
        self.last = frozen
        if not frozen.user_attrs.get(SURPLUS_ATTR):
            print(trial_line(frozen, self.job.worker), flush=True)


def pruning_callback(trial):
    """Optuna's Lightning pruning callback: reports val/rmse after each validation epoch."""
    from optuna_integration import PyTorchLightningPruningCallback

    return PyTorchLightningPruningCallback(trial, monitor=VAL_RMSE)


def note(run_dir: Path, name: str, text: str) -> None:
    """A marker next to the run's INCOMPLETE saying why it will never finish."""
    if run_dir.is_dir():
        (run_dir / name).write_text(text)


def close_wandb(state: str, exit_code: int) -> None:
    """A run interrupted by pruning or an error leaves its W&B run open; close it with its state,
    or the next trial in this process would log into it."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and wandb.run is not None:
        wandb.run.summary["sweep/state"] = state
        wandb.finish(exit_code=exit_code)


def trial_line(t: optuna.trial.FrozenTrial, worker: int) -> str:
    params = "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in t.params.items())
    if t.state == TrialState.COMPLETE:
        result = f"val {t.value:.4f}  test {t.user_attrs.get('test_rmse', float('nan')):.4f}"
    elif t.state == TrialState.PRUNED:
        step = max(t.intermediate_values) if t.intermediate_values else None
        result = f"pruned at epoch {step}" if step is not None else "pruned"
    else:
        result = f"failed: {t.user_attrs.get('error', '?')}"
    seconds = (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_complete else 0.0
    return f"[worker {worker}] trial {t.number:>3} {t.state.name:<8} {result}  ({seconds:.1f} s)  {params}"


def quiet_logging() -> None:
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # our own line per trial instead
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)
    from rrnx.loggers import quiet_lightning
    quiet_lightning()  # rrnx's known-noise filters only: other warnings, deprecations included, still show


def load_study(job: Job):
    study = optuna.load_study(study_name=job.study_name, storage=open_storage(job.storage),
                              pruner=make_pruner(job.sweep))
    # a seeded sampler is reproducible for a given worker and study history, yet never repeats
    # the draws of a sibling worker or of an earlier invocation
    study.sampler = make_sampler(job.sweep, seed_shift=7919 * job.worker + len(study.trials))
    return study


def run_worker(job: Job) -> None:
    """Runs trials until the budget (finished trials) or the deadline is reached."""
    quiet_logging()
    if job.threads:
        import torch
        torch.set_num_threads(job.threads)
        # each trial's fit keeps this worker's share instead of choosing from the free cores (rrnx.threads)
        job.sweep.base_recipe["trainer"]["num_threads"] = job.threads
    study = load_study(job)
    objective, failures, waiting = TrialObjective(job), 0, False
    while job.deadline is None or time.time() < job.deadline:
        fail_dead_trials(study)
        if job.n_trials is not None:
            finished, running = budget_counts(study)
            if finished >= job.n_trials:
                return
            if finished + running >= job.n_trials:
                if not waiting:
                    print(f"[worker {job.worker}] waiting for {running} running trial(s) to finish", flush=True)
                waiting = True
                time.sleep(POLL_SECONDS)
                continue
        waiting = False
        study.optimize(objective, n_trials=1, catch=(Exception,), callbacks=[objective.record])
        last = objective.last
        # a diverged trial is an answer about its point (too large a step), not a broken setup: it counts
        # against the budget but does not stop the worker, however many come in a row
        failed = (last is not None and last.state == TrialState.FAIL and not last.user_attrs.get(SURPLUS_ATTR)
                  and not last.user_attrs.get(DIVERGED_ATTR))
        failures = failures + 1 if failed else 0
        if failures >= MAX_FAILURES_IN_A_ROW:
            raise RrnxError(f"{failures} trials in a row failed in worker {job.worker}; last error: "
                            f"{last.user_attrs.get('error', '?')} (details: {last.user_attrs.get('run_dir')}/FAILED)")


def worker_main(job: Job) -> None:
    """Entry point of a spawned worker process."""
    die_with_parent()
    try:
        run_worker(job)
    except RrnxError as exc:
        print(f"rrnx sweep: worker {job.worker}: error: {exc}", file=sys.stderr, flush=True)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)


def die_with_parent() -> None:
    """Linux: a worker is killed with its parent `rrnx sweep`, so none trains on unattended."""
    try:
        import ctypes
        import signal
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def run_workers(job: Job, workers: int) -> list[str]:
    """Runs `workers` worker processes on the study (in this process when there is one);
    returns the workers that failed, with why."""
    if workers == 1:
        run_worker(job)
        return []
    threads = max(1, (os.cpu_count() or 1) // workers)
    if job.sweep.base_recipe["trainer"].get("num_threads"):
        threads = None  # the recipe decides
    context = multiprocessing.get_context("spawn")
    processes = []
    for worker in range(workers):
        process = context.Process(target=worker_main, args=(replace(job, worker=worker, threads=threads),),
                                  name=f"rrnx-sweep-worker-{worker}")
        process.start()
        processes.append(process)
    try:
        for process in processes:
            process.join()
    except KeyboardInterrupt:
        for process in processes:
            process.terminate()
        raise
    return [f"{w} ({exit_reason(p.exitcode)})" for w, p in enumerate(processes) if p.exitcode != 0]


def exit_reason(code: int) -> str:
    if code < 0:
        import signal
        return f"killed by {signal.Signals(-code).name}"
    return "error, see above" if code == 2 else f"exit code {code}"
