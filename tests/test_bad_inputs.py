"""Bad values on the command line and in recipes (issue 13, defect 8): each is one line on stderr
and exit 2, refused before a run folder is written; never a traceback or a run that trains on it."""

from __future__ import annotations

import pytest

from conftest import tiny_csv_recipe
from rrnx.cli import EXIT_REFUSED, EXIT_SYSTEM, main
from rrnx.rundir import RunDir


@pytest.mark.parametrize("override, message", [
    ("--model.dim=-3", "dim must be > 0, got -3"),
    ("--model.dim=0", "dim must be > 0, got 0"),
    ("--model.lr=0", "lr must be > 0, got 0"),  # was torch's "Invalid learning rate" traceback at the first step
    ("--model.reg=-1", "reg must be >= 0, got -1"),  # trained with exit 0
    ("--model.lr=abc", "model.lr: expected float, got 'abc'"),
    ("--model.center=1", "model.center: expected bool"),
    ("--model.reg=.nan", "model.reg: expected float, got nan"),
    ("--trainer.max_epochs=abc", "trainer.max_epochs: expected int or null"),
    ("--trainer.seed=abc", "trainer.seed: expected int"),
    ("--trainer.num_threads=-2", "trainer.num_threads: must be at least 1"),
    ("--trainer.seed=-1", "trainer.seed: must be in 0..4294967295"),  # was numpy's ValueError, a traceback
    ("--data.seed=-1", "data.seed: must be at least 0"),  # was a traceback
    ("--trainer.max_epochs=0", "trainer.max_epochs: must be at least 1"),  # left a run folder that trained nothing
    ("--data.batch_size=0", "data.batch_size: must be at least 1"),
    ("--data.scale=[1]", "data.scale: expected [min, max]"),
    ("--data.scale=[5, 1]", "data.scale: expected [min, max]"),
    ("--data.test_start=2010-13-01", "data.test_start: cannot read '2010-13-01' as a date"),  # was a traceback
    ("--data.format=synthetic", "is set, but data.format is synthetic, which generates its ratings"),  # path ignored
    ("--trainer.accelerator=gpu", "trainer: "),
    ("--logger.mode=nope", "logger.mode: expected one of 'offline', 'online', 'disabled'"),  # was pydantic's
    ("--trainer.accelerator=tpu", "trainer: "),  # torch_xla missing: was a ModuleNotFoundError traceback
])
def test_a_bad_value_is_one_line_and_writes_no_run(tmp_path, capsys, override, message):
    if override == "--trainer.accelerator=gpu":
        import torch
        if torch.cuda.is_available():
            pytest.skip("this machine has a GPU")
    if override == "--trainer.accelerator=tpu":
        import importlib.util
        if importlib.util.find_spec("torch_xla") is not None:
            pytest.skip("this machine has torch_xla")
    run_dir = tmp_path / "run"
    assert main(["fit", str(tiny_csv_recipe(tmp_path)), "--run-dir", str(run_dir), override]) == EXIT_REFUSED
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not RunDir(run_dir).is_run()  # nothing written that a later run would trust



def test_a_recipe_file_without_a_model_name_or_with_a_date_that_is_none_is_one_line(tmp_path, capsys, monkeypatch):
    """Both were tracebacks: a KeyError naming the default run folder, a ValueError from yaml's date reader."""
    monkeypatch.chdir(tmp_path)
    text = tiny_csv_recipe(tmp_path).read_text()
    for edit, message in ((text.replace("  name: pmf\n", "  dim: 4\n"), "model.name is required"),
                          (text.replace("test_start: 2010-03-10", "test_start: 2010-02-30"),
                           "data.test_start: cannot read '2010-02-30' as a date")):
        recipe = tmp_path / "edited.yaml"
        recipe.write_text(edit)
        assert main(["fit", str(recipe)]) == EXIT_REFUSED
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
        assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_wandb_online_without_an_api_key_is_one_line_before_the_run_folder(tmp_path, capsys, monkeypatch):
    """W&B raised its UsageError (a traceback) once the run folder had been written."""
    for name in ("WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc, no W&B settings file
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    run_dir = tmp_path / "run"
    argv = ["fit", str(tiny_csv_recipe(tmp_path, logger="wandb")), "--run-dir", str(run_dir), "--logger.mode=online"]
    assert main(argv) == EXIT_REFUSED
    err = capsys.readouterr().err
    assert "W&B mode online needs an API key" in err and len(err.strip().splitlines()) == 1
    assert not run_dir.exists()


@pytest.mark.parametrize("override", ["--model.item_batch_size=0", "--model.user_batch_size=-1",
                                      "--model.eval_batch_rows=0", "--model.pretrain_epochs=-1"])
def test_rrn_sizes_below_their_least_are_one_line(tmp_path, capsys, override):
    """An item batch of 0 was a ZeroDivisionError in the middle of the first epoch."""
    run_dir = tmp_path / "run"
    recipe = tiny_csv_recipe(tmp_path, model="rrn")
    assert main(["fit", str(recipe), "--run-dir", str(run_dir), override]) == EXIT_REFUSED
    err = capsys.readouterr().err
    key = override.split("=")[0].removeprefix("--model.")
    assert f"{key} must be at least" in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not RunDir(run_dir).is_run()

@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    folder = tmp_path_factory.mktemp("finished")
    run_dir = folder / "run"
    assert main(["fit", str(tiny_csv_recipe(folder)), "--run-dir", str(run_dir)]) == 0
    return run_dir


def test_predict_before_the_training_data_is_refused(finished, capsys):
    assert main(["predict", str(finished), "--user", "3", "--at", "2009-06-01"]) == EXIT_REFUSED
    assert "before the training data begins (2010-01-01)" in capsys.readouterr().err
    assert main(["predict", str(finished), "--user", "3", "--at", "2010-13-01"]) == EXIT_REFUSED
    assert "--at: cannot read '2010-13-01' as a date" in capsys.readouterr().err  # the flag, not "data.at"
    assert main(["predict", str(finished), "--user", "3", "--at", "2010-02-01"]) == 0


def test_an_os_error_is_one_line_with_the_path_and_exit_3(monkeypatch, capsys):
    import rrnx.commands.models as models

    def read_only(args, overrides):
        raise OSError(30, "Read-only file system", "/somewhere/out.parquet")

    monkeypatch.setattr(models, "run", read_only)
    assert main(["models"]) == EXIT_SYSTEM
    assert capsys.readouterr().err.strip() == "rrnx models: error: /somewhere/out.parquet: Read-only file system"


def test_a_float_in_exponent_notation_is_read_as_a_float(tmp_path):
    """YAML 1.1 reads 1e-3 as a string; a float-typed key takes it as the number people mean."""
    run_dir = tmp_path / "run"
    assert main(["fit", str(tiny_csv_recipe(tmp_path)), "--run-dir", str(run_dir), "--model.lr=1e-2"]) == 0
    from rrnx.recipe import load_recipe
    assert load_recipe(run_dir / "recipe.yaml")["model"]["lr"] == 0.01


def test_a_diverged_training_is_not_a_result(tmp_path, capsys):
    """A learning rate that makes every RMSE NaN exits 2 saying so, instead of printing NaN with exit 0."""
    code = main(["fit", str(tiny_csv_recipe(tmp_path)), "--run-dir", str(tmp_path / "run"), "--model.lr=1e30"])
    err = capsys.readouterr().err
    assert code == EXIT_REFUSED and "training diverged" in err and "val_rmse is nan" in err
