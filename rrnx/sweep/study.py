"""`rrnx sweep`: create or join a study, run its workers, report the result."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import optuna

from rrnx.errors import RrnxError
from rrnx.sweep import report
from rrnx.sweep.runner import Job, quiet_logging, run_workers
from rrnx.sweep.spec import Sweep, initial_trials, make_pruner, make_sampler
from rrnx.sweep.storage import (budget_counts, check_signature, fail_dead_trials, open_storage, redact,
                                store_signature, study_exists)

N_TRIALS_ATTR = "rrnx:n_trials"


@dataclass
class SweepResult:
    study_name: str
    storage: str
    out: Path
    n_complete: int
    n_pruned: int
    n_failed: int
    best_params: dict | None
    best_val_rmse: float | None
    best_test_rmse: float | None
    best_recipe: Path | None
    wandb_summary_dir: str | None


def default_out(sweep: Sweep, study_name: str) -> Path:
    from rrnx.config import default_out as out_folder

    return out_folder("sweep", study_name)


def run_sweep(sweep: Sweep, out: Path | None = None, storage: str | None = None, workers: int = 1,
              n_trials: int | None = None, timeout: float | None = None, resume: bool = False,
              study_name: str | None = None, say=print) -> SweepResult:
    """Runs (or continues, or joins) the sweep's study until its budget; writes the report."""
    if workers < 1:
        raise RrnxError(f"--workers {workers}: need at least one worker")
    quiet_logging()
    for note in sweep.notes:
        say(note)
    check_data(sweep)
    study_name = study_name or sweep.study_name
    out = Path(out) if out else default_out(sweep, study_name)
    local = storage is None
    storage = storage or str(out / "study.journal")
    budgeted = n_trials or sweep.n_trials or timeout or sweep.timeout or sweep.sampler["name"] == "grid"
    if not budgeted and not resume and (local or not study_exists(open_storage(storage), study_name)):
        # a new study without a budget: refused before its journal is written (the rerun with a budget
        # would otherwise be told to --resume a study that never ran)
        raise RrnxError(no_budget(sweep))
    out.mkdir(parents=True, exist_ok=True)
    study, created = open_study(sweep, storage, study_name, resume, local)
    budget = resolve_budget(sweep, study, created, n_trials)
    timeout = timeout or sweep.timeout
    if budget is None and timeout is None:
        raise RrnxError(no_budget(sweep))
    dead = fail_dead_trials(study)
    if dead:
        say(f"marked trial(s) {', '.join(map(str, dead))} as failed: their worker process is gone")
    finished, running = budget_counts(study)
    say(f"study {study_name!r} ({redact(storage)}): {finished} finished, {running} running; "
        f"budget {budget if budget is not None else '-'} trials" + (f", {timeout:g} s" if timeout else "")
        + f"; {workers} worker(s); trials in {out / 'trials'}")
    job = Job(sweep=sweep, storage=storage, study_name=study_name, out=out.resolve(), n_trials=budget,
              deadline=time.time() + timeout if timeout else None)
    failed_workers = run_workers(job, workers)
    result = finish(sweep, study, storage, out, say)
    if failed_workers and budget is not None and budget_counts(study)[0] >= budget:
        say(f"note: worker(s) {', '.join(failed_workers)} stopped early; the others met the budget")
    elif failed_workers:
        raise RrnxError(f"worker(s) {', '.join(failed_workers)} stopped early; the report in {out} covers "
                        f"the trials that ran; continue with --resume {out}")
    if result.n_complete == 0 and result.n_failed > 0:  # no best setting: not a success a script may go on with
        raise RrnxError(f"no trial completed ({result.n_failed} failed): {out / 'trials.md'} lists them and each "
                        "trial folder's FAILED file says why")
    return result


def no_budget(sweep: Sweep) -> str:
    return f"{sweep.path}: no budget: set n_trials or timeout in the sweep file, or pass --n-trials/--timeout"


def check_data(sweep: Sweep) -> None:
    """Reads the ratings once before any trial: a missing or unreadable file is one clear error,
    not a failed trial per worker, and the parse cache is warm for every trial."""
    from rrnx.data.datamodule import TemporalDataModule

    sample = sweep.trial_recipe({p.key: p.sample_value() for p in sweep.space})
    TemporalDataModule(**sample["data"]).load_table()


def open_study(sweep: Sweep, storage: str, study_name: str, resume: bool, local: bool):
    """(study, created). A local study (default storage) is continued only with --resume; a
    study in a database is joined by every worker that runs the same sweep."""
    backend = open_storage(storage)
    exists = study_exists(backend, study_name)
    where = redact(storage)
    if resume and not exists:
        raise RrnxError(f"--resume: no study {study_name!r} in {where}; run with --out instead of --resume to start it")
    if exists and local and not resume:
        raise RrnxError(f"{where} already holds study {study_name!r}; pass --resume {Path(storage).parent} to continue it, "
                        f"or choose another --out or --study-name")
    sampler, pruner = make_sampler(sweep), make_pruner(sweep)
    if not exists:
        try:
            study = optuna.create_study(storage=backend, study_name=study_name, direction=sweep.direction,
                                        sampler=sampler, pruner=pruner)
        except optuna.exceptions.DuplicatedStudyError:  # another machine created it just now
            pass
        else:
            store_signature(study, sweep.space_signature())
            for params in initial_trials(sweep):
                study.enqueue_trial(params)
            return study, True
    study = optuna.load_study(study_name=study_name, storage=backend, sampler=sampler, pruner=pruner)
    check_signature(study, sweep.space_signature(), where)
    return study, False


def resolve_budget(sweep: Sweep, study, created: bool, n_trials: int | None) -> int | None:
    """--n-trials, else the sweep file's n_trials, else the budget stored when the study began;
    a grid sweep is capped at the grid's size. The budget in use is stored in the study."""
    budget = n_trials or sweep.n_trials or (None if created else study.user_attrs.get(N_TRIALS_ATTR))
    if sweep.sampler["name"] == "grid":
        budget = min(budget or sweep.grid_size(), sweep.grid_size())
    if budget is not None and budget != study.user_attrs.get(N_TRIALS_ATTR):
        study.set_user_attr(N_TRIALS_ATTR, int(budget))
    return budget


def finish(sweep: Sweep, study, storage: str, out: Path, say) -> SweepResult:
    frame = report.trials_frame(study, sweep)
    if frame.empty:
        say("no trials ran")
        return SweepResult(study.study_name, storage, out, 0, 0, 0, None, None, None, None, None)
    report.write_tables(frame, out)
    say("\n" + report.markdown(frame))
    weights = report.importances(study, sweep)
    if weights:
        say("parameter importances: " + ", ".join(f"{k} {v:.2f}" for k, v in weights.items()))
    best_path = report.write_best_recipe(study, sweep, out)
    best = report.best_trial(study)
    summary_dir = report.log_wandb_summary(study, sweep, frame, weights, out)
    counts = frame["state"].value_counts()
    if best is not None:
        say(f"best: trial {best.number}  " + "  ".join(f"{k}={v}" for k, v in best.params.items())
            + f"  val RMSE {best.value:.4f}  test RMSE {best.user_attrs.get('test_rmse', float('nan')):.4f}")
        say(f"best recipe: {best_path}  (run it: rrnx fit {best_path})")
    else:
        say("no trial completed; no best recipe written")
    say(f"trials table: {out / 'trials.csv'}, {out / 'trials.md'}"
        + (f"; W&B summary run: {summary_dir}" if summary_dir else ""))
    return SweepResult(study.study_name, storage, out, int(counts.get("complete", 0)), int(counts.get("pruned", 0)),
                       int(counts.get("fail", 0)), dict(best.params) if best else None,
                       best.value if best else None, best.user_attrs.get("test_rmse") if best else None,
                       best_path, summary_dir)
