"""Where a study lives, and how a study survives a killed worker.

Local by default: an Optuna journal file (OUT/study.journal), which several processes on one
machine append to safely, with no server. A database URL (postgresql://..., sqlite:///...)
uses Optuna's RDBStorage, so workers on many machines join one study; there Optuna's heartbeat
fails the trials of a worker that stopped beating.

Every trial records the host and process (pid + start time) that runs it, so a RUNNING trial
whose process is gone on this host is failed at once, on any storage, before any worker counts
the budget. Trials of other hosts are left to the heartbeat (RDB storages only). A trial lost
this way is enqueued again with the same parameters and does not count toward the budget.
"""

from __future__ import annotations

import json
import os
import socket
import warnings
from pathlib import Path

import optuna
from optuna.trial import TrialState

from rrnx.errors import RrnxError

# RDB heartbeat: a trial whose worker has not beaten for GRACE seconds is failed by the next
# worker that looks (Optuna calls fail_stale_trials at each trial start).
HEARTBEAT_SECONDS = 20
GRACE_SECONDS = 90
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
HOST_ATTR, PID_ATTR, START_ATTR = "host", "pid", "pid_start"
RETRY_ATTR = "retry_of"  # on a trial enqueued again after its worker died: the lost trial's number
SURPLUS_ATTR = "surplus"  # on a trial given up because the budget was met when it started


def is_url(storage: str) -> bool:
    return "://" in storage


def open_storage(storage: str):
    """An Optuna storage from a URL (RDB) or a journal file path."""
    if is_url(storage):
        try:
            return optuna.storages.RDBStorage(storage, heartbeat_interval=HEARTBEAT_SECONDS,
                                              grace_period=GRACE_SECONDS,
                                              heartbeat_stale_trial_callback=retry_lost_trial,
                                              engine_kwargs=_engine_kwargs(storage))
        except ImportError as exc:
            raise RrnxError(f"--storage {redact(storage)}: the database driver is missing ({exc}); "
                            f"for PostgreSQL: pip install psycopg2-binary") from None
        except Exception as exc:  # sqlalchemy.exc.OperationalError and friends: unreachable server
            raise RrnxError(f"--storage {redact(storage)}: cannot open the database: "
                            f"{str(exc).splitlines()[0]}") from None
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    Path(storage).parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(storage)))


def _engine_kwargs(url: str) -> dict:
    if url.startswith("sqlite"):
        return {"connect_args": {"timeout": 60}}  # several local processes wait for the file lock
    return {"pool_pre_ping": True}  # long trials outlive idle server connections


def redact(url: str) -> str:
    """A database URL without its password, for messages."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}" if ":" in creds else url
    return url


def study_exists(storage, name: str) -> bool:
    return any(s.study_name == name for s in optuna.study.get_all_study_summaries(storage, include_best_trial=False))


def mark_owner(trial) -> None:
    """Records which process runs this trial (read by fail_dead_trials)."""
    trial.set_user_attr(HOST_ATTR, socket.gethostname())
    trial.set_user_attr(PID_ATTR, os.getpid())
    trial.set_user_attr(START_ATTR, process_start(os.getpid()))


def process_start(pid: int) -> str | None:
    """The process's start time in clock ticks (Linux); tells a live pid from a reused one."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def process_alive(pid: int, start: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True  # no /proc: trust kill(0)
    return state != "Z" and (start is None or process_start(pid) == start)


def fail_dead_trials(study) -> list[int]:
    """Fails RUNNING trials whose process on this host is gone, and (RDB) those whose heartbeat
    went stale, and enqueues each again with the same parameters; returns their numbers. Each
    failed trial's run directory gets a FAILED note."""
    with warnings.catch_warnings():  # an API Optuna marks experimental since v2.9, and rrnx pins the call
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)  # calls retry_lost_trial for each (RDB storages)
    host, failed = socket.gethostname(), []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        attrs = trial.user_attrs
        if attrs.get(HOST_ATTR) != host or PID_ATTR not in attrs:
            continue
        if process_alive(int(attrs[PID_ATTR]), attrs.get(START_ATTR)):
            continue
        try:
            study._storage.set_trial_user_attr(trial._trial_id, "error", "its worker process died")
            study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another worker failed it first
        retry_lost_trial(study, trial)
        failed.append(trial.number)
        run_dir = attrs.get("run_dir")
        if run_dir and Path(run_dir).is_dir():
            (Path(run_dir) / "FAILED").write_text(f"trial {trial.number}: its worker process "
                                                  f"(pid {attrs[PID_ATTR]}) died mid-trial; trial "
                                                  f"parameters enqueued again\n")
    return failed


def retry_lost_trial(study, trial) -> None:
    """A trial lost with its worker is run again with the parameters it had drawn."""
    study.enqueue_trial(dict(trial.params), user_attrs={RETRY_ATTR: trial.number}, skip_if_exists=False)


def counted(trials) -> list:
    """The trials that count toward n_trials: those that ran to an answer (complete, pruned, or
    failed with an error of their own). Trials lost with their worker (retried) and trials given
    up as over-budget do not count."""
    retried = {t.user_attrs[RETRY_ATTR] for t in trials if RETRY_ATTR in t.user_attrs}
    return [t for t in trials if t.state in FINISHED or (
        t.state == TrialState.FAIL and t.number not in retried and not t.user_attrs.get(SURPLUS_ATTR))]


def budget_counts(study) -> tuple[int, int]:
    """(finished, running): finished trials as counted toward n_trials."""
    trials = study.get_trials(deepcopy=False)
    return len(counted(trials)), sum(t.state == TrialState.RUNNING for t in trials)


def store_signature(study, signature: dict) -> None:
    study.set_user_attr("rrnx:signature", json.dumps(signature, sort_keys=True))


def check_signature(study, signature: dict, where: str) -> None:
    stored = study.user_attrs.get("rrnx:signature")
    if stored is None:
        return
    stored = json.loads(stored)
    if stored != json.loads(json.dumps(signature, sort_keys=True)):
        diff = sorted(k for k in set(stored["space"]) | set(signature["space"])
                      if stored["space"].get(k) != json.loads(json.dumps(signature["space"].get(k))))
        what = f"space key {diff[0]}" if diff else ("sampler" if stored["sampler"] != signature["sampler"] else "objective")
        raise RrnxError(f"study {study.study_name!r} in {where} was created with a different sweep (its {what} "
                        f"differs); run the same sweep file to join it, or choose another --study-name")
