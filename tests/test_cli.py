"""`rrnx fit` end to end, the run directory, `rrnx test`, and the errors people meet."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import ROOT, shared_data, tiny_csv_recipe
from rrnx.checkpoints import load_model
from rrnx.cli import main
from rrnx.errors import RrnxError
from rrnx.models.timesvdpp import TimeSVDpp
from rrnx.recipe import SECTIONS, check_recipe, load_recipe, resolve_model
from rrnx.registry import discover

SMALL = ["--data.synthetic.n_users=400", "--data.synthetic.n_items=150", "--data.synthetic.n_ratings=8000",
         "--trainer.max_epochs=2", "--logger.name=none", "--trainer.enable_progress_bar=false"]


def rrnx(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rrnx.cli", *args], capture_output=True, text=True, cwd=ROOT)


@pytest.mark.slow
def test_fit_synthetic_writes_the_run_directory(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert main(["fit", "recipes/synthetic.yaml", "--run-dir", str(run_dir), "--model.name=pmf", *SMALL]) == 0
    out = capsys.readouterr().out
    assert "Train size" in out and "Sparsity" in out and "test RMSE" in out
    for name in ("recipe.yaml", "split.json", "manifest.json", "metrics.json", "predictions.parquet",
                 "truth.json", "checkpoints/best.ckpt"):
        assert (run_dir / name).exists(), name
    assert not (run_dir / "INCOMPLETE").exists()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert [e["epoch"] for e in metrics["epochs"]] == [0, 1]
    best = min(metrics["epochs"], key=lambda e: e["val/rmse"])
    assert metrics["best_epoch"] == best["epoch"] and metrics["val_rmse"] == best["val/rmse"]
    assert metrics["size_bytes"] == 4 * metrics["params"] > 0
    preds = pd.read_parquet(run_dir / "predictions.parquet")
    assert list(preds.columns) == ["user", "item", "timestamp", "rating", "prediction"]
    assert len(preds) == json.loads((run_dir / "split.json").read_text())["test_half_size"]
    rmse = float(((preds.rating - preds.prediction) ** 2).mean() ** 0.5)
    assert rmse == pytest.approx(metrics["test_rmse"], rel=1e-4)
    # the resolved recipe reruns as it is, and `rrnx test` re-evaluates the best checkpoint
    assert load_recipe(run_dir / "recipe.yaml")["model"]["name"] == "pmf"
    assert main(["test", str(run_dir)]) == 0
    assert f"{metrics['test_rmse']:.4f}" in capsys.readouterr().out


@pytest.mark.slow
def test_fit_logs_to_wandb_offline(tmp_path):
    run_dir = tmp_path / "run"
    args = [a for a in SMALL if not a.startswith("--logger")]
    assert main(["fit", "recipes/synthetic.yaml", "--run-dir", str(run_dir), "--trainer.max_epochs=1", *args]) == 0
    offline = list((run_dir / "wandb").glob("offline-run-*"))
    assert offline, "no offline W&B run was written"
    assert list(offline[0].glob("*.wandb"))


def test_fit_movietweetings_real_data(tmp_path, capsys):
    path = shared_data("movietweetings-100k", "ratings.dat")
    run_dir = tmp_path / "mt"
    assert main(["fit", "recipes/movietweetings.yaml", f"--data.path={path}", "--model.name=pmf",
                 "--run-dir", str(run_dir), "--trainer.max_epochs=1", "--logger.name=csv",
                 "--trainer.enable_progress_bar=false"]) == 0
    out = capsys.readouterr().out
    assert "2013-08-01" in out and "test RMSE" in out
    split = json.loads((run_dir / "split.json").read_text())
    assert split["train_data"].endswith("2013-07-31")


def test_every_recipe_is_valid_and_starts_with_its_launch_command():
    models = discover()
    for path in sorted((ROOT / "recipes").glob("*.yaml")):
        first = path.read_text().splitlines()[0]
        assert first.startswith(f"# rrnx fit recipes/{path.name}"), path.name
        recipe = load_recipe(path)
        assert set(recipe) <= set(SECTIONS)
        entry = models.get(recipe["model"]["name"])
        if entry is None or entry.error:
            continue  # a model still being written is reported by `rrnx models`
        check_recipe(resolve_model(recipe)[0])
        for name, settings in recipe["model"].items():  # per-model mappings: each valid for its model
            if isinstance(settings, dict) and name in models and not models[name].error:
                check_recipe(resolve_model({**recipe, "model": {**recipe["model"], "name": name}})[0])


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("extra, message", [
    (["--model.name=nope"], "unknown model 'nope'; registered models: .*pmf"),
    (["--model.dimm=3"], "model.dimm: unknown key for model 'pmf'; valid keys: .*dim"),
    (["--data.pathh=x"], "data.pathh: unknown key"),
    (["--trainer.max_epoch=1"], "trainer.max_epoch: unknown key"),
    (["--optim.lr=1"], "unknown section 'optim'"),
    (["--logger.name=mlflow"], "unknown logger 'mlflow'"),
    (["--data.test_start=2030-01-01", "--data.test_end=null"], "test side is empty"),
    (["--data.train_start=null", "--data.test_start=2004-01-01"], "train side is empty"),
    (["--data.user_granularity=fortnight"], "not a granularity"),
    (["stray"], "unrecognised argument 'stray'"),
])
def test_recipe_mistakes_get_one_clear_line(tmp_path, extra, message):
    run_dir = tmp_path / "run"
    result = rrnx("fit", "recipes/synthetic.yaml", "--run-dir", str(run_dir), *SMALL, *extra)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("rrnx fit: error:")]
    assert len(lines) == 1 and pytest.importorskip("re").search(message, lines[0]), result.stderr
    assert not run_dir.exists(), "a failed run must leave no run directory behind"


@pytest.mark.parametrize("content, message", [
    ("1\t2\t5\t880000000\n3\t4\n", r"u\.data:2: "),
    ("1\t2\t9\t880000000\n", r"u\.data:1: .*outside the declared scale"),
    ("1\t2\tfive\t880000000\n", r"u\.data:1: .*not a number"),
])
def test_bad_data_files_get_one_clear_line(tmp_path, content, message):
    data = write(tmp_path, "u.data", content)
    result = rrnx("fit", "recipes/movielens-100k.yaml", f"--data.path={data}", "--run-dir", str(tmp_path / "r"),
                  "--logger.name=none")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert pytest.importorskip("re").search(message, result.stderr), result.stderr
    assert not (tmp_path / "r").exists()


def test_missing_file_and_missing_recipe(tmp_path):
    result = rrnx("fit", "recipes/movielens-100k.yaml", f"--data.path={tmp_path / 'nowhere.data'}")
    assert result.returncode == 2 and "nowhere.data" in result.stderr and "Traceback" not in result.stderr
    result = rrnx("fit", str(tmp_path / "missing.yaml"))
    assert result.returncode == 2 and "recipe file not found" in result.stderr
    bad = write(tmp_path, "bad.yaml", "data: [unclosed\n")
    result = rrnx("fit", str(bad))
    assert result.returncode == 2 and "not valid YAML" in result.stderr


def test_directory_without_ratings(tmp_path):
    result = rrnx("fit", "recipes/movielens-100k.yaml", f"--data.path={tmp_path}")
    assert result.returncode == 2 and str(tmp_path) in result.stderr and "Traceback" not in result.stderr


def test_test_refuses_an_unfinished_run(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "recipe.yaml").write_text(yaml.safe_dump({"model": {"name": "pmf"}}))
    (run_dir / "INCOMPLETE").write_text("")
    result = rrnx("test", str(run_dir))
    assert result.returncode == 2 and "did not finish" in result.stderr


def test_a_missing_or_broken_checkpoint_is_one_line(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert main(["fit", str(tiny_csv_recipe(tmp_path)), "--run-dir", str(run_dir)]) == 0
    best = run_dir / "checkpoints" / "best.ckpt"
    capsys.readouterr()
    for broken, message in ((best.read_bytes()[:5000], "not a loadable PMF checkpoint"), (b"", "not a loadable"),
                            (None, "no such checkpoint file")):
        best.unlink()
        if broken is not None:
            best.write_bytes(broken)
        assert main(["test", str(run_dir)]) == 2
        err = capsys.readouterr().err
        assert message in err and str(best) in err and len(err.strip().splitlines()) == 1, err
    with pytest.raises(RrnxError, match="not a loadable TimeSVDpp checkpoint"):  # another model's checkpoint
        load_model(TimeSVDpp, run_dir / "checkpoints" / "last.ckpt")


def test_existing_run_dir_is_not_overwritten(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "keep.txt").write_text("x")
    result = rrnx("fit", "recipes/synthetic.yaml", "--run-dir", str(run_dir), *SMALL)
    assert result.returncode == 2 and "exists" in result.stderr
    assert (run_dir / "keep.txt").read_text() == "x"


def test_models_lists_the_builtin_models_with_their_package():
    result = rrnx("models")
    assert result.returncode == 0
    line = next(line for line in result.stdout.splitlines() if line.startswith("pmf "))
    assert "rrnx" in line and "rrnx.models.pmf:PMF" in line
