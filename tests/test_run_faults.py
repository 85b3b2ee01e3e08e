"""Faults against a run folder (issue 13): kill -9 at several points then resume in place, moved or
copied; two writers; a full disk while writing a checkpoint; changed data under test/predict/resume."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
import torch

from conftest import ROOT, tiny_csv_recipe
from rrnx.cli import EXIT_REFUSED, EXIT_SYSTEM, main
from rrnx.recipe import load_recipe
from rrnx.rundir import RunDir

EPOCHS = 4
# Runs `fit` in a child process that kills itself with SIGKILL at a hook: no cleanup runs, as with kill -9.
KILLER = textwrap.dedent("""
    import os, signal, sys, torch
    from lightning.pytorch.callbacks import Callback
    from rrnx.recipe import load_recipe
    from rrnx.run import fit
    torch.set_num_threads(1)
    hook, epoch = sys.argv[3], int(sys.argv[4])

    class Kill(Callback):
        def kill(self, trainer, now):
            if now == hook and epoch in (-1, trainer.current_epoch):
                os.kill(os.getpid(), signal.SIGKILL)
        def on_train_epoch_start(self, trainer, module): self.kill(trainer, "epoch_start")
        def on_test_start(self, trainer, module): self.kill(trainer, "test_start")

    fit(load_recipe(sys.argv[1]), sys.argv[2], quiet=True, callbacks=[Kill()])
""")


def fit_killed(recipe: Path, run_dir: Path, hook: str, epoch: int) -> None:
    done = subprocess.run([sys.executable, "-c", KILLER, str(recipe), str(run_dir), hook, str(epoch)],
                          cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == -9, done.stderr[-2000:]
    assert (run_dir / RunDir.INCOMPLETE).exists()


@pytest.fixture(scope="module")
def recipe(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("faults")
    path = tiny_csv_recipe(folder)
    text = path.read_text().replace("max_epochs: 1", f"max_epochs: {EPOCHS}\n  num_threads: 1")
    path.write_text(text.replace("name: pmf", "name: pmf\n  lr: 0.05"))
    return path


@pytest.fixture(scope="module")
def uninterrupted(recipe, tmp_path_factory) -> dict:
    run_dir = tmp_path_factory.mktemp("whole") / "run"
    assert main(["fit", str(recipe), "--run-dir", str(run_dir)]) == 0
    return json.loads((run_dir / RunDir.METRICS).read_text())


def best_val_rmse_of(run_dir: Path) -> float:
    """Validation RMSE of the weights in best.ckpt, computed here, not read from metrics.json."""
    from rrnx.run import build_datamodule

    recipe = load_recipe(run_dir / RunDir.RECIPE)
    data = build_datamodule(recipe)
    from rrnx.recipe import check_recipe
    model = RunDir(run_dir).load_model(check_recipe(recipe))
    val = data.triples("val")
    with torch.no_grad():
        pred = model.predict_ratings(val).clamp(*model.rating_range.tolist())
    return float(((pred - val["rating"]) ** 2).mean().sqrt())


def assert_consistent(run_dir: Path, uninterrupted: dict) -> dict:
    metrics = json.loads((run_dir / RunDir.METRICS).read_text())
    assert not (run_dir / RunDir.INCOMPLETE).exists()
    assert [e["epoch"] for e in metrics["epochs"]] == list(range(EPOCHS))
    best = min(metrics["epochs"], key=lambda e: e["val/rmse"])
    assert (metrics["best_epoch"], metrics["val_rmse"]) == (best["epoch"], best["val/rmse"])
    # best.ckpt holds the best epoch's weights (defect 1: after a move it held the last epoch's)
    assert best_val_rmse_of(run_dir) == pytest.approx(metrics["val_rmse"], abs=1e-5)
    preds = pd.read_parquet(run_dir / RunDir.PREDICTIONS)
    assert float(((preds.rating - preds.prediction) ** 2).mean() ** 0.5) == pytest.approx(metrics["test_rmse"], abs=1e-5)
    assert metrics["checkpoint"] == "checkpoints/best.ckpt"
    for key in ("best_epoch", "val_rmse", "test_rmse"):  # resumed runs match the uninterrupted one
        assert metrics[key] == pytest.approx(uninterrupted[key], abs=1e-6), key
    return metrics


@pytest.mark.parametrize("where", ["in_place", "moved", "copied"])
def test_kill_after_a_checkpoint_then_resume(recipe, uninterrupted, tmp_path, where):
    run_dir = tmp_path / "run"
    fit_killed(recipe, run_dir, "epoch_start", 2)  # epochs 0 and 1 are checkpointed
    target = {"in_place": run_dir, "moved": tmp_path / "moved", "copied": tmp_path / "copied"}[where]
    if where == "moved":
        run_dir.rename(target)
    elif where == "copied":
        shutil.copytree(run_dir, target)
    assert main(["fit", "--resume", str(target)]) == 0
    assert_consistent(target, uninterrupted)
    if where == "copied":  # the original is untouched and still unfinished
        assert (run_dir / RunDir.INCOMPLETE).exists() and not (run_dir / RunDir.METRICS).exists()


def test_kill_while_testing_then_resume_a_copy(recipe, uninterrupted, tmp_path):
    run_dir = tmp_path / "run"
    fit_killed(recipe, run_dir, "test_start", -1)  # after the last epoch, while testing
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    shutil.rmtree(run_dir)  # the copy must not need anything of the original
    assert main(["fit", "--resume", str(copy)]) == 0
    assert_consistent(copy, uninterrupted)
    assert main(["test", str(copy)]) == 0


def test_kill_before_the_first_checkpoint_restarts_in_place(recipe, uninterrupted, tmp_path, capsys):
    run_dir = tmp_path / "run"
    fit_killed(recipe, run_dir, "epoch_start", 0)
    assert not (run_dir / "checkpoints" / "last.ckpt").exists()
    assert main(["fit", str(recipe), "--run-dir", str(run_dir)]) == EXIT_REFUSED
    err = capsys.readouterr().err
    assert "before its first checkpoint" in err and "--resume" in err and "--overwrite" in err
    assert main(["fit", "--resume", str(run_dir)]) == 0
    assert "restarting it from the start" in capsys.readouterr().out
    assert_consistent(run_dir, uninterrupted)


def test_a_run_killed_before_recording_its_recipe_says_overwrite(recipe, tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / RunDir.INCOMPLETE).write_text("")  # killed between the marker and recipe.yaml
    assert main(["fit", "--resume", str(run_dir)]) == EXIT_REFUSED
    assert "rerun with the recipe and --overwrite" in capsys.readouterr().err
    assert main(["fit", str(recipe), "--run-dir", str(run_dir)]) == EXIT_REFUSED
    assert "--overwrite replaces it" in capsys.readouterr().err


def test_overwrite_replaces_a_run_and_refuses_a_foreign_folder(recipe, uninterrupted, tmp_path):
    run_dir = tmp_path / "run"
    fit_killed(recipe, run_dir, "epoch_start", 0)
    assert main(["fit", str(recipe), "--run-dir", str(run_dir), "--overwrite"]) == 0
    assert_consistent(run_dir, uninterrupted)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("keep me")
    assert main(["fit", str(recipe), "--run-dir", str(foreign), "--overwrite"]) == EXIT_REFUSED
    assert (foreign / "thesis.tex").read_text() == "keep me"


def test_train_seconds_add_up_over_a_resume(recipe, tmp_path):
    run_dir = tmp_path / "run"
    fit_killed(recipe, run_dir, "epoch_start", 2)
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    before = next(v["train_seconds"] for k, v in ckpt["callbacks"].items() if "EpochHistory" in k)
    assert before > 0
    assert main(["fit", "--resume", str(run_dir)]) == 0
    assert json.loads((run_dir / RunDir.METRICS).read_text())["train_seconds"] > before


def test_a_second_writer_is_refused_before_the_data_loads(recipe, tmp_path, capsys):
    run_dir = tmp_path / "run"
    run = RunDir(run_dir)
    with run.lock():  # as a running `rrnx fit` holds it (flock: a second open file conflicts, in-process too)
        code = main(["fit", str(recipe), "--run-dir", str(run_dir), "--data.path=/no/such/file.csv"])
        err = capsys.readouterr().err
        assert code == EXIT_REFUSED and "another rrnx process" in err and "Traceback" not in err
        assert "no such file" not in err  # refused before reading the data
        assert run.contents() == []


def test_two_concurrent_fits_into_one_folder(recipe, tmp_path):
    run_dir = tmp_path / "run"
    command = [sys.executable, "-m", "rrnx.cli", "fit", str(recipe), "--run-dir", str(run_dir)]
    first, second = (subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                     for _ in range(2))
    results = sorted([(p.wait(), p.stderr.read()) for p in (first, second)])
    assert [code for code, _ in results] == [0, EXIT_REFUSED], results
    assert "Traceback" not in results[1][1]
    assert RunDir(run_dir).is_finished()


def test_a_full_disk_while_writing_a_checkpoint_keeps_the_last_good_one(recipe, tmp_path, monkeypatch, capsys):
    """ENOSPC injected into the second checkpoint write: the run fails in one line (exit 3) and the
    last.ckpt of epoch 0 stays whole, so the run resumes."""
    run_dir = tmp_path / "run"
    calls = {"n": 0}

    real_write = Path.write_bytes

    def write_bytes(self, data):
        if self.name.endswith(".tmp") and self.parent.name == "checkpoints":
            calls["n"] += 1
            if calls["n"] == 3:  # epoch 0 wrote best and last; the next write hits a full disk
                real_write(self, bytes(data)[:100])
                raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(self, data)

    monkeypatch.setattr(Path, "write_bytes", write_bytes)
    assert main(["fit", str(recipe), "--run-dir", str(run_dir)]) == EXIT_SYSTEM
    assert "No space left on device" in capsys.readouterr().err
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 0
    monkeypatch.setattr(Path, "write_bytes", real_write)
    assert main(["fit", "--resume", str(run_dir)]) == 0


@pytest.fixture(scope="module")
def finished(recipe, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    assert main(["fit", str(recipe), "--run-dir", str(run_dir)]) == 0
    return run_dir


def changed_copy(finished: Path, tmp_path: Path, change) -> Path:
    """A copy of the finished run whose recipe points at an edited copy of its data."""
    copy = tmp_path / "run"
    shutil.copytree(finished, copy)
    recipe = load_recipe(copy / RunDir.RECIPE)
    frame = change(pd.read_csv(recipe["data"]["path"]))
    frame.to_csv(tmp_path / "ratings.csv", index=False)
    (copy / RunDir.RECIPE).write_text((copy / RunDir.RECIPE).read_text().replace(
        recipe["data"]["path"], str(tmp_path / "ratings.csv")))
    return copy


@pytest.mark.parametrize("command", [["test"], ["predict", "--user", "3"], ["report", "--no-wandb", "--only", "cold_start"]])
def test_changed_data_is_refused_on_reuse(finished, tmp_path, capsys, command):
    test_ts = pd.Timestamp("2010-03-10", tz="UTC").timestamp()
    copy = changed_copy(finished, tmp_path, lambda f: f[~((f.timestamp >= test_ts) & (f.index % 7 == 0))])
    args = [command[0], str(copy), *command[1:]] + (["--out", str(tmp_path / "report")] if command[0] == "report" else [])
    assert main(args) == EXIT_REFUSED
    err = capsys.readouterr().err
    assert "differs from what this run was trained on" in err and "--allow-data-change" in err
    assert "val (" in err and "train (" not in err  # names the halves that changed, only those
    if command[0] == "test":
        assert main([*args, "--allow-data-change"]) == 0
        assert "warning" in capsys.readouterr().err


def test_changed_user_count_is_refused_even_when_allowed(finished, tmp_path, capsys):
    first_user = None

    def drop_a_user(frame):
        nonlocal first_user
        first_user = frame.user.iloc[0]
        return frame[frame.user != first_user]

    copy = changed_copy(finished, tmp_path, drop_a_user)
    assert main(["predict", str(copy), "--user", "3", "--allow-data-change"]) == EXIT_REFUSED
    assert "users now" in capsys.readouterr().err


def test_changed_data_is_refused_on_resume(recipe, tmp_path, capsys):
    run_dir = tmp_path / "run"
    fit_killed(recipe, run_dir, "epoch_start", 1)
    data = Path(load_recipe(run_dir / RunDir.RECIPE)["data"]["path"])
    saved = data.read_bytes()
    try:
        frame = pd.read_csv(data)
        frame.assign(rating=frame.rating.where(frame.index % 5 != 0, 3.0)).to_csv(data, index=False)
        assert main(["fit", "--resume", str(run_dir)]) == EXIT_REFUSED
        assert "differs from what this run was trained on" in capsys.readouterr().err
    finally:
        data.write_bytes(saved)


@pytest.mark.parametrize("damage", ["missing", "truncated", "pickle"])
def test_a_damaged_best_checkpoint_is_one_line(finished, tmp_path, capsys, damage):
    copy = tmp_path / "run"
    shutil.copytree(finished, copy)
    best = copy / "checkpoints" / "best.ckpt"
    if damage == "missing":
        best.unlink()
    elif damage == "truncated":
        best.write_bytes(best.read_bytes()[:1000])
    else:  # a crafted pickle that would run code under weights_only=False
        import pickle

        class Evil:
            def __reduce__(self):
                return (Path(tmp_path / "pwned").write_text, ("owned",))

        best.write_bytes(pickle.dumps({"state_dict": Evil()}))
    assert main(["test", str(copy)]) == EXIT_REFUSED
    err = capsys.readouterr().err
    assert "best.ckpt" in err and "Traceback" not in err and len(err.splitlines()) == 1
    assert not (tmp_path / "pwned").exists()


def test_a_damaged_last_checkpoint_is_one_line_on_resume(recipe, tmp_path, capsys):
    run_dir = tmp_path / "run"
    fit_killed(recipe, run_dir, "epoch_start", 1)
    last = run_dir / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:500])  # e.g. a partial copy
    assert main(["fit", "--resume", str(run_dir)]) == EXIT_REFUSED
    err = capsys.readouterr().err
    assert "last.ckpt: damaged" in err and "--overwrite" in err and len(err.splitlines()) == 1


def test_run_dir_that_is_a_file_or_read_only(recipe, tmp_path, capsys):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert main(["fit", str(recipe), "--run-dir", str(a_file)]) == EXIT_REFUSED
    assert "not a directory" in capsys.readouterr().err
    read_only = tmp_path / "ro"
    read_only.mkdir()
    mounted = os.geteuid() == 0 and subprocess.run(  # root writes through chmod: use a read-only mount
        ["mount", "-t", "tmpfs", "-o", "size=1m,ro", "tmpfs", str(read_only)], capture_output=True).returncode == 0
    if os.geteuid() == 0 and not mounted:
        pytest.skip("running as root where no read-only tmpfs can be mounted")
    if not mounted:
        read_only.chmod(0o555)
    try:
        assert main(["fit", str(recipe), "--run-dir", str(read_only / "run")]) == EXIT_REFUSED
        assert "cannot write the run folder" in capsys.readouterr().err
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(read_only)], check=True)


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MB tmpfs mounted for the test, where the machine allows it (root); else the test skips
    and the injected-ENOSPC test above covers the same code path."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def test_a_real_full_disk_keeps_the_last_good_checkpoint(recipe, small_disk):
    from lightning.pytorch.callbacks import Callback

    from rrnx.run import fit

    filler = small_disk / "filler"

    class FillTheDisk(Callback):
        def on_train_epoch_start(self, trainer, module):
            if trainer.current_epoch == 1:
                with open(filler, "wb") as handle:
                    try:
                        while True:
                            handle.write(b"\0" * 65536)
                            handle.flush()
                    except OSError:
                        pass

    run_dir = small_disk / "run"
    with pytest.raises(OSError) as error:
        fit(load_recipe(recipe), run_dir, quiet=True, callbacks=[FillTheDisk()])
    assert error.value.errno == errno.ENOSPC
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 0
    assert not list(run_dir.rglob("*.tmp"))
    filler.unlink()
    assert main(["fit", "--resume", str(run_dir)]) == 0


def test_writing_to_a_read_only_file_system_names_the_file(tmp_path, capsys):
    """`rrnx update --out` and every run file go through replace_atomically: on a read-only mount the
    error names the file asked for (not the temp file), so the CLI prints one line with it (exit 3)."""
    from rrnx.rundir import replace_atomically

    mount = tmp_path / "ro"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,ro", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a read-only tmpfs here (needs root)")
    try:
        with pytest.raises(OSError) as error:
            replace_atomically(mount / "out.parquet", lambda temp: pd.DataFrame({"a": [1]}).to_parquet(temp))
        assert error.value.errno == errno.EROFS and error.value.filename == str(mount / "out.parquet")
        assert list(mount.iterdir()) == []
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def test_a_diverged_training_stops_and_keeps_its_best_finite_epoch(tmp_path, capsys):
    """Weights that become NaN in epoch 1 (as a too-large learning rate does) end training after that epoch
    with one line; the run's best epoch and test RMSE are finite and from before, and metrics.json says so."""
    from lightning.pytorch.callbacks import Callback

    from rrnx.run import fit

    class NaNInEpochOne(Callback):
        def on_train_epoch_start(self, trainer, module):
            if trainer.current_epoch == 1:
                with torch.no_grad():
                    module.user_factors.weight[0] = float("nan")

    recipe = load_recipe(tiny_csv_recipe(tmp_path))
    recipe["trainer"]["max_epochs"] = EPOCHS
    metrics = fit(recipe, tmp_path / "run", callbacks=[NaNInEpochOne()])
    assert metrics["diverged_epoch"] == 1 and metrics["best_epoch"] == 0
    assert [e["epoch"] for e in metrics["epochs"]] == [0, 1]  # stopped after the diverged epoch
    assert metrics["test_rmse"] == metrics["test_rmse"] and metrics["test_rmse"] < 5  # finite: epoch 0's weights
    assert "training diverged in epoch 1" in capsys.readouterr().out
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["diverged_epoch"] == 1


def test_a_training_that_diverges_in_its_first_epoch_stops_there_and_is_refused_as_a_result(tmp_path):
    """No finite epoch: training stops after epoch 0 instead of running on; its NaN RMSE is not a result
    (require_finite: `rrnx fit` exits 2 saying so, test_bad_inputs.py; a sweep records the trial as failed)."""
    from lightning.pytorch.callbacks import Callback

    from rrnx.errors import RrnxError
    from rrnx.run import fit, require_finite

    class NaNAtOnce(Callback):
        def on_train_epoch_start(self, trainer, module):
            with torch.no_grad():
                module.user_factors.weight[0] = float("nan")

    recipe = load_recipe(tiny_csv_recipe(tmp_path))
    recipe["trainer"]["max_epochs"] = EPOCHS
    metrics = fit(recipe, tmp_path / "run", quiet=True, callbacks=[NaNAtOnce()])
    assert metrics["diverged_epoch"] == 0 and [e["epoch"] for e in metrics["epochs"]] == [0]
    with pytest.raises(RrnxError, match="training diverged: val_rmse is nan"):
        require_finite(metrics)
