"""Loggers in a run folder: TensorBoard's events hold the validation RMSE of every epoch, and a killed
W&B run resumed with `rrnx fit --resume` goes on logging to the same W&B run (offline here)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from conftest import tiny_csv_recipe
from rrnx.cli import main
from rrnx.rundir import RunDir
from test_run_faults import fit_killed


def recipe_with(tmp_path: Path, logger: str, epochs: int) -> Path:
    path = tiny_csv_recipe(tmp_path, logger=logger)
    path.write_text(path.read_text().replace("max_epochs: 1", f"max_epochs: {epochs}\n  num_threads: 1"))
    return path


def test_tensorboard_logger_writes_val_rmse_under_the_run(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = tmp_path / "run"
    assert main(["fit", str(recipe_with(tmp_path, "tensorboard", 2)), "--run-dir", str(run_dir)]) == 0
    events = list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert events, "no TensorBoard events file under RUN/tensorboard"
    reader = EventAccumulator(str(run_dir / "tensorboard"))
    reader.Reload()
    assert "val/rmse" in reader.Tags()["scalars"]
    logged = [event.value for event in reader.Scalars("val/rmse")]
    recorded = [epoch["val/rmse"] for epoch in json.loads((run_dir / RunDir.METRICS).read_text())["epochs"]]
    assert logged == pytest.approx(recorded, abs=1e-6) and len(logged) == 2
    assert "test_rmse" in reader.Tags()["scalars"]  # the final numbers too


def test_resume_continues_the_same_wandb_run(tmp_path, monkeypatch):
    recipe = recipe_with(tmp_path, "wandb", 3)
    run_dir = tmp_path / "run"
    # as two separate `rrnx fit` invocations would: the killed process must not attach to the W&B
    # service an earlier test started in this pytest process (it would keep the run id "in use")
    monkeypatch.delenv("WANDB_SERVICE", raising=False)
    fit_killed(recipe, run_dir, "epoch_start", 1)  # kill -9 after epoch 0's checkpoint
    run_id = json.loads((run_dir / RunDir.WANDB_RUN).read_text())["id"]
    assert [p.name for p in (run_dir / "wandb").glob("offline-run-*")] != []
    assert main(["fit", "--resume", str(run_dir)]) == 0
    assert json.loads((run_dir / RunDir.WANDB_RUN).read_text())["id"] == run_id
    offline = sorted((run_dir / "wandb").glob("offline-run-*"))
    # one W&B run written by two processes: `wandb sync` uploads both folders into run `run_id` (W&B appends
    # "-1" to the second folder's name when both processes started within the same second)
    assert len(offline) == 2 and all(re.search(f"-{run_id}(-[0-9]+)?$", p.name) for p in offline), [p.name for p in offline]
    assert all(list(p.glob(f"run-{run_id}.wandb")) for p in offline)
