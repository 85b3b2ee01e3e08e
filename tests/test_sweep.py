"""Sweeps: sweep files, local multi-worker studies, pruning, a killed worker, PostgreSQL, W&B.

Every study runs PMF on a tiny synthetic set (300 users, 100 items, 8,000 ratings) for a few
epochs; the PostgreSQL test starts its own server (initdb + pg_ctl) on 127.0.0.1."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from glob import glob
from pathlib import Path

import optuna
import pandas as pd
import pytest
import yaml

from rrnx.cli import main
from rrnx.errors import RecipeError
from rrnx.recipe import load_recipe
from rrnx.registry import discover
from rrnx.sweep import load_sweep
from rrnx.sweep.spec import check_sweep, resolve_recipe_path

ROOT = Path(__file__).resolve().parents[1]
SWEEPS = sorted((ROOT / "sweeps").glob("*.yaml"))
TINY = {"data.synthetic.n_users": 300, "data.synthetic.n_items": 100, "data.synthetic.n_ratings": 8000,
        "trainer.max_epochs": 2}


def write_sweep(tmp_path: Path, name: str = "tiny", **fields) -> Path:
    sweep = {"recipe": str(ROOT / "recipes" / "synthetic.yaml"), "fixed": {**TINY, **fields.pop("fixed", {})},
             "space": {"model.dim": [4, 8], "model.lr": {"low": 1e-3, "high": 3e-2, "log": True}},
             "sampler": {"name": "tpe", "seed": 0}, "n_trials": 4, **fields}
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"# rrnx sweep {path}\n" + yaml.safe_dump(sweep, sort_keys=False))
    return path


def study_of(out: Path, name: str = "tiny") -> optuna.Study:
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    return optuna.load_study(study_name=name, storage=JournalStorage(JournalFileBackend(str(out / "study.journal"))))


def states(study) -> dict[int, str]:
    """Trial states, leaving out a trial two workers raced for and gave up (`surplus`: budget met)
    and its re-enqueued point."""
    return {t.number: t.state.name for t in study.get_trials(deepcopy=False)
            if not t.user_attrs.get("surplus") and t.state.name != "WAITING"}


# ---------------------------------------------------------------- sweep files


@pytest.mark.parametrize("path", SWEEPS, ids=[p.name for p in SWEEPS])
def test_shipped_sweep_files_parse_and_match_their_recipe_and_model(path):
    first = path.read_text().splitlines()[0]
    assert first.startswith("# rrnx sweep sweeps/"), f"{path.name}: first line must be its launch command"
    raw = yaml.safe_load(path.read_text())
    recipe = load_recipe(resolve_recipe_path(path, raw["recipe"]))
    model = (raw.get("fixed") or {}).get("model.name", recipe["model"].get("name"))
    entry = discover().get(model)
    if entry is None or entry.error:
        pytest.skip(f"model {model!r} is not importable yet: {entry.error if entry else 'not registered'}")
    sweep = load_sweep(path)  # checks every searched and fixed key against recipe + model signature
    check_sweep(sweep)
    assert sweep.n_trials or sweep.timeout or sweep.sampler["name"] == "grid"


def test_unknown_keys_in_a_sweep_file_are_named(tmp_path, capsys):
    with pytest.raises(RecipeError, match="'trails'"):
        load_sweep(write_sweep(tmp_path, trails=3))
    bad_space = write_sweep(tmp_path, "bad", space={"model.dimm": [4, 8]})
    with pytest.raises(RecipeError, match="model.dimm"):
        load_sweep(bad_space)
    with pytest.raises(RecipeError, match="'lo'"):
        load_sweep(write_sweep(tmp_path, "bad2", space={"model.lr": {"lo": 1, "high": 2}}))
    with pytest.raises(RecipeError, match="n_startup"):
        load_sweep(write_sweep(tmp_path, "bad3", pruner={"name": "median", "n_startup": 2}))
    assert main(["sweep", str(bad_space), "--out", str(tmp_path / "o")]) == 2
    assert "model.dimm" in capsys.readouterr().err
    with pytest.raises(RecipeError, match="searched"):  # a searched key cannot also be fixed on the command line
        load_sweep(write_sweep(tmp_path), [("model.dim", 16)])



@pytest.mark.parametrize("fields, message", [
    ({"space": {"model.dim": {"low": 1, "high": 8, "step": 0}}}, "step must be a number > 0 (got 0)"),  # meant 1
    ({"sampler": {"name": "tpe", "seed": "abc"}}, "sampler.seed: expected an integer, got 'abc'"),  # a traceback
    ({"enqueue": [{"model.dim": 5}]}, "enqueue: model.dim=5 lies outside space.model.dim (one of [4, 8])"),
    ({"enqueue": [{"model.lr": 0.5}]}, "enqueue: model.lr=0.5 lies outside space.model.lr (float 0.001..0.03)"),
])
def test_values_optuna_would_take_silently_or_fail_on_are_refused_before_any_trial(tmp_path, capsys, fields, message):
    """A step of 0 ran as a step of 1; an enqueued point outside the space failed its trial with no reason,
    and the sweep still exited 0."""
    out = tmp_path / "o"
    assert main(["sweep", str(write_sweep(tmp_path, **fields)), "--out", str(out)]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())


def test_a_sweep_without_a_budget_writes_no_study(tmp_path, capsys):
    """The study's journal used to be written before the budget was asked for: the rerun with --n-trials was
    then told to --resume a study that had never run."""
    path, out = write_sweep(tmp_path, n_trials=None), tmp_path / "o"
    assert main(["sweep", str(path), "--out", str(out)]) == 2
    assert "no budget" in capsys.readouterr().err
    assert not (out / "study.journal").exists()

def test_space_kinds_and_numbers_written_as_1e_minus_n(tmp_path):
    sweep = load_sweep(write_sweep(tmp_path, sampler="grid", space={
        "model.reg": ["1e-1", "1e-5"], "model.dim": {"low": 20, "high": 60, "step": 20}}))
    assert sweep.grid() == {"model.reg": [0.1, 1e-5], "model.dim": [20, 40, 60]}
    assert sweep.grid_size() == 6


# ---------------------------------------------------------------- local studies


@pytest.mark.slow
def test_two_workers_finish_and_the_best_recipe_runs(tmp_path, capsys):
    sweep, out = write_sweep(tmp_path, pruner="none"), tmp_path / "out"
    assert main(["sweep", str(sweep), "--workers", "2", "--out", str(out), "--logger.name=none"]) == 0
    printed = capsys.readouterr().out
    assert "| rank | trial |" in printed and "best: trial" in printed
    table = pd.read_csv(out / "trials.csv")
    assert len(table) == 4 and set(table["state"]) == {"complete"}
    assert list(table["rank"]) == [1, 2, 3, 4] and table["val_rmse"].is_monotonic_increasing
    # (which worker ran which trial is a race: a worker that starts late may find none left)
    assert len({t.number for t in study_of(out).trials}) == 4
    best = out / "best-recipe.yaml"
    assert best.read_text().splitlines()[0] == f"# rrnx fit {best}"
    assert load_recipe(best)["model"]["dim"] == table.loc[0, "model.dim"]
    assert main(["fit", str(best), "--run-dir", str(tmp_path / "best-run")]) == 0
    assert (tmp_path / "best-run" / "metrics.json").is_file()
    # the study is local: running it again without --resume is refused, --resume has nothing to do
    assert main(["sweep", str(sweep), "--out", str(out), "--logger.name=none"]) == 2
    assert "--resume" in capsys.readouterr().err
    assert main(["sweep", str(sweep), "--resume", str(out), "--logger.name=none"]) == 0
    assert len(states(study_of(out))) == 4


def test_a_clearly_bad_trial_is_pruned(tmp_path):
    # two sane learning rates complete first (the median pruner's start-up), then an absurd one
    sweep = write_sweep(tmp_path, space={"model.lr": [0.01, 0.02, 500.0]}, fixed={"trainer.max_epochs": 3},
                        pruner={"name": "median", "n_startup_trials": 2},
                        enqueue=[{"model.lr": 0.01}, {"model.lr": 0.02}, {"model.lr": 500.0}], n_trials=3)
    out = tmp_path / "out"
    assert main(["sweep", str(sweep), "--out", str(out), "--logger.name=none"]) == 0
    study = study_of(out)
    assert states(study) == {0: "COMPLETE", 1: "COMPLETE", 2: "PRUNED"}
    pruned = out / "trials" / "trial-0002"
    assert (pruned / "PRUNED").is_file() and (pruned / "INCOMPLETE").is_file()
    assert not (pruned / "metrics.json").exists()
    assert pd.read_csv(out / "trials.csv").set_index("trial").loc[2, "state"] == "pruned"


def test_diverged_trials_in_a_row_do_not_stop_the_study(tmp_path, capsys, monkeypatch):
    """A learning rate that sends the weights to NaN is an answer about that point: the trial fails, counts
    against the budget, and the worker goes on (three errors in a row stop it; three divergences do not)."""
    import rrnx.run

    fit = rrnx.run.fit

    def diverging_fit(recipe, run_dir, **kwargs):  # a run whose every epoch went NaN (rrnx.run.fit's metrics)
        metrics = fit(recipe, run_dir, **kwargs)
        if recipe["model"]["lr"] > 1:
            metrics.update(val_rmse=float("nan"), test_rmse=float("nan"), diverged_epoch=0)
        return metrics

    monkeypatch.setattr(rrnx.run, "fit", diverging_fit)
    absurd = {"model.lr": 1.0e3}
    sweep = write_sweep(tmp_path, space={"model.lr": [0.01, 1.0e3]}, pruner="none", n_trials=4,
                        fixed={"trainer.max_epochs": 1}, enqueue=[absurd, absurd, absurd, {"model.lr": 0.01}])
    out = tmp_path / "out"
    assert main(["sweep", str(sweep), "--out", str(out), "--logger.name=none"]) == 0
    study = study_of(out)
    assert states(study) == {0: "FAIL", 1: "FAIL", 2: "FAIL", 3: "COMPLETE"}
    assert all("training diverged" in study.trials[k].user_attrs["error"] for k in (0, 1, 2))
    assert "in a row failed" not in capsys.readouterr().err
    # when no trial completes there is no best setting: the sweep says so and exits non-zero (it exited 0)
    only_absurd = write_sweep(tmp_path, "absurd", space={"model.lr": [0.01, 1.0e3]}, pruner="none", n_trials=1,
                              fixed={"trainer.max_epochs": 1}, enqueue=[absurd])
    assert main(["sweep", str(only_absurd), "--out", str(tmp_path / "absurd"), "--logger.name=none"]) == 2
    assert "no trial completed (1 failed)" in capsys.readouterr().err


@pytest.mark.slow
def test_a_killed_worker_leaves_a_study_that_resume_finishes(tmp_path):
    sweep = write_sweep(tmp_path, pruner="none", n_trials=3, fixed={"trainer.max_epochs": 12})
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "rrnx.cli", "sweep", str(sweep), "--out", str(out), "--logger.name=none"]
    worker = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    second = out / "trials" / "trial-0001"
    try:
        deadline = time.time() + 120
        while not (second / "recipe.yaml").exists() and time.time() < deadline and worker.poll() is None:
            time.sleep(0.02)
        assert (second / "recipe.yaml").exists(), "the sweep never reached its second trial"
    finally:
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait()
    assert not (second / "metrics.json").exists(), "trial 1 finished before the kill; make it longer"
    first_value = study_of(out).trials[0].value
    assert states(study_of(out)) == {0: "COMPLETE", 1: "RUNNING"}

    assert main(["sweep", str(sweep), "--resume", str(out), "--logger.name=none"]) == 0
    study = study_of(out)
    assert states(study) == {0: "COMPLETE", 1: "FAIL", 2: "COMPLETE", 3: "COMPLETE"}
    assert study.trials[0].value == first_value
    assert study.trials[2].user_attrs["retry_of"] == 1 and study.trials[2].params == study.trials[1].params
    assert (second / "FAILED").is_file() and (second / "INCOMPLETE").is_file()
    table = pd.read_csv(out / "trials.csv").set_index("trial")
    assert table.loc[1, "state"] == "lost" and len(table) == 4


@pytest.mark.slow
def test_wandb_offline_holds_every_trial_and_a_summary(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb-default"))
    sweep = write_sweep(tmp_path, pruner="none", n_trials=2, fixed={"trainer.max_epochs": 1})
    out = tmp_path / "out"
    assert main(["sweep", str(sweep), "--out", str(out), "--logger.name=wandb", "--logger.mode=offline"]) == 0
    for trial in sorted((out / "trials").iterdir()):
        assert len(glob(str(trial / "wandb" / "offline-run-*"))) == 1, f"{trial.name} has no W&B offline run"
        assert load_recipe(trial / "recipe.yaml")["logger"]["group"] == "tiny"
    summary = glob(str(out / "wandb" / "offline-run-*"))
    assert len(summary) == 1 and glob(f"{summary[0]}/*.wandb")


# ---------------------------------------------------------------- PostgreSQL


def postgres_bin() -> Path | None:
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    candidates = sorted(glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return Path(candidates[-1]).parent if candidates else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def postgres_url():
    """A throw-away PostgreSQL server on 127.0.0.1; as root, it runs as the `postgres` (or
    `nobody`) user, since the server refuses to run as root."""
    bindir = postgres_bin()
    if bindir is None:
        pytest.skip("no PostgreSQL server binary (initdb) found; install the `postgresql` package "
                    "(.ci/install-postgres.sh)")
    user = None
    if os.geteuid() == 0:
        user = next((u for u in ("postgres", "nobody") if _user_exists(u)), None)
        if user is None or not shutil.which("runuser"):
            pytest.skip("running as root without a `postgres`/`nobody` user or runuser to start PostgreSQL")
    # not tmp_path: pytest's base temp dir is private to root, and the server user must reach it
    base = Path(tempfile.mkdtemp(prefix="rrnx-pg-"))
    data, port = base / "data", free_port()
    if user:
        shutil.chown(base, user)
    as_user = ["runuser", "-u", user, "--"] if user else []
    run = lambda *cmd: subprocess.run(as_user + list(cmd), check=True, capture_output=True, text=True)  # noqa: E731
    try:
        run(str(bindir / "initdb"), "-D", str(data), "-U", "rrnx", "-A", "trust", "--no-sync")
        run(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(base / "server.log"), "-w", "-t", "60", "start",
            "-o", f"-c listen_addresses=127.0.0.1 -p {port} -k {base} -c fsync=off")
    except subprocess.CalledProcessError as exc:
        shutil.rmtree(base, ignore_errors=True)
        pytest.fail(f"could not start PostgreSQL: {exc.stderr or exc.stdout}")
    try:
        yield f"postgresql+psycopg2://rrnx@127.0.0.1:{port}/postgres"
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(base, ignore_errors=True)


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


@pytest.mark.slow
def test_workers_share_a_study_in_postgresql(tmp_path, postgres_url, capsys):
    sweep = write_sweep(tmp_path, pruner="none", n_trials=3)
    machine_a, machine_b = tmp_path / "a", tmp_path / "b"
    args = ["sweep", str(sweep), "--storage", postgres_url, "--study-name", "shared", "--logger.name=none"]
    assert main(args + ["--workers", "2", "--out", str(machine_a)]) == 0
    # a second machine running the same command joins the study: the budget is met, it only reports
    assert main(args + ["--out", str(machine_b)]) == 0
    assert "3 finished" in capsys.readouterr().out
    study = optuna.load_study(study_name="shared", storage=postgres_url)
    assert sorted(states(study).values()) == ["COMPLETE"] * 3
    assert len(pd.read_csv(machine_b / "trials.csv")) == 3 and (machine_b / "best-recipe.yaml").is_file()
    # a different search space cannot join the same study
    other = write_sweep(tmp_path, "other", space={"model.dim": [4, 16]})
    assert main(["sweep", str(other), "--storage", postgres_url, "--study-name", "shared",
                 "--out", str(tmp_path / "c"), "--logger.name=none"]) == 2
    assert "different sweep" in capsys.readouterr().err
