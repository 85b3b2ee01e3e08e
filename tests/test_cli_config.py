"""The recipe layer on jsonargparse (rrnx.config) and the CLI around it: --print-config, `rrnx models
[NAME]`, `fit --help`, type errors before any data loads, complete recorded recipes, early stopping,
Ctrl-C, one default output folder."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import yaml
from conftest import tiny_csv_recipe

from rrnx.cli import EXIT_INTERRUPTED, EXIT_REFUSED, main
from rrnx.registry import constructor_params

ROOT = Path(__file__).resolve().parents[1]


def test_print_config_shows_every_key_of_the_chosen_model_and_writes_nothing(tmp_path, capsys, monkeypatch):
    from rrnx.models.rrn import RRN

    monkeypatch.chdir(tmp_path)
    recipe = ROOT / "recipes" / "synthetic.yaml"
    assert main(["fit", str(recipe), "--model.name=rrn", "--model.dim=8", "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert set(printed) == {"data", "model", "trainer", "logger"}
    model = printed["model"]
    assert model["name"] == "rrn" and model["dim"] == 8  # the override
    assert set(model) - {"name"} == set(constructor_params(RRN))  # every setting, none of another model's
    tuned = yaml.safe_load(recipe.read_text())["model"]["rrn"]
    assert model["net_lr"] == tuned["net_lr"]  # the recipe's per-model mapping
    assert model["hidden"] == 40  # a default the recipe never names
    assert printed["trainer"]["max_epochs"] == 10 and printed["trainer"]["early_stopping_patience"] is None
    assert printed["data"]["cache_dir"] is None and printed["logger"]["project"] == "rrnx"
    assert list(tmp_path.iterdir()) == []  # no run folder, no cache


@pytest.mark.parametrize("override, message", [
    ("--model.dim=abc", "model.dim: expected int, got 'abc'"),
    ("--model.step_stats=sometimes", "model.step_stats: expected bool or one of 'mean', 'residual', got 'sometimes'"),
    ("--model.rating_input=stars", "model.rating_input: expected one of 'scaled', 'raw', got 'stars'"),
    ("--logger.tags=3", "logger.tags: expected list[str] or null, got 3"),
    ("--trainer.early_stopping_patience=0", "trainer.early_stopping_patience: must be at least 1"),
])
def test_type_errors_come_before_the_data_loads(tmp_path, capsys, override, message):
    """The data path does not exist: the error must still be the value's, so the check ran first."""
    recipe = tiny_csv_recipe(tmp_path, model="rrn")
    code = main(["fit", str(recipe), "--out", str(tmp_path / "run"), "--data.path=/nonexistent/ratings.csv", override])
    err = capsys.readouterr().err
    assert code == EXIT_REFUSED and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_the_recorded_recipe_is_complete_and_reruns_the_run(tmp_path, capsys):
    from rrnx.models.pmf import PMF

    recipe = tiny_csv_recipe(tmp_path, model="pmf", dim=4)
    assert main(["fit", str(recipe), "--out", str(tmp_path / "a")]) == 0
    recorded = yaml.safe_load((tmp_path / "a" / "recipe.yaml").read_text())
    assert set(recorded["model"]) - {"name"} == set(constructor_params(PMF))
    assert "scale" in recorded["data"] and "accelerator" in recorded["trainer"] and "seed" in recorded["trainer"]
    assert main(["fit", str(tmp_path / "a" / "recipe.yaml"), "--out", str(tmp_path / "b")]) == 0
    first, second = (yaml.safe_load((tmp_path / d / "metrics.json").read_text()) for d in ("a", "b"))
    assert first["val_rmse"] == second["val_rmse"] and first["test_rmse"] == second["test_rmse"]


def test_models_lists_without_importing_torch():
    code = ("import sys; from rrnx.cli import main; code = main(['models']); "
            "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH', code)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT).stdout
    assert "rrn " in out and "timesvdpp" in out and out.strip().endswith("NO-TORCH 0")


def test_models_name_shows_types_defaults_and_help(capsys):
    assert main(["models", "rrn"]) == 0
    out = capsys.readouterr().out
    assert "Wu et al., WSDM 2017" in out
    assert "--model.net_lr  (float, default 0.003)" in out and "Adam's learning rate" in out
    assert "--model.bias_reg  (float or null, default null)" in out
    assert "model.rating_embedding: [False, True]" in out  # the search space rrnx compare --tune uses
    assert main(["models", "nope"]) == EXIT_REFUSED


def test_fit_help_lists_the_sections_keys(capsys):
    with pytest.raises(SystemExit):
        main(["fit", "--help"])
    out = capsys.readouterr().out
    for key in ("--data.user_granularity", "--data.test_start", "--logger.name", "--trainer.seed",
                "--trainer.early_stopping_patience", "--print-config", "rrnx models NAME"):
        assert key in out
    assert "stop after this many epochs" in out  # the docstring's help


def test_early_stopping_stops_after_patience_epochs_without_improvement(tmp_path, capsys):
    recipe = tiny_csv_recipe(tmp_path, model="pmf", dim=16, lr=0.05, reg=0.0)
    assert main(["fit", str(recipe), "--out", str(tmp_path / "stop"), "--trainer.max_epochs=30",
                 "--trainer.early_stopping_patience=2"]) == 0
    metrics = yaml.safe_load((tmp_path / "stop" / "metrics.json").read_text())
    epochs = [e["epoch"] for e in metrics["epochs"]]
    assert len(epochs) < 30  # an unregularised PMF on 700 random ratings overfits within a few epochs
    assert epochs[-1] == metrics["best_epoch"] + 2  # stopped exactly `patience` epochs after the best
    assert main(["fit", str(recipe), "--out", str(tmp_path / "all"), "--trainer.max_epochs=6"]) == 0
    assert len(yaml.safe_load((tmp_path / "all" / "metrics.json").read_text())["epochs"]) == 6  # off by default


def test_ctrl_c_says_where_the_run_is_and_how_to_resume(tmp_path, capsys, monkeypatch):
    import rrnx.run
    from rrnx.training import RngState

    class CtrlCAtEpoch1(RngState):  # a KeyboardInterrupt inside Lightning's loop, as Ctrl-C raises it
        def on_train_epoch_start(self, trainer, pl_module):
            if trainer.current_epoch == 1:
                raise KeyboardInterrupt

    recipe = tiny_csv_recipe(tmp_path, model="pmf", dim=4)
    run_dir = tmp_path / "run"
    monkeypatch.setattr(rrnx.run, "RngState", CtrlCAtEpoch1)
    assert main(["fit", str(recipe), "--out", str(run_dir), "--trainer.max_epochs=3"]) == EXIT_INTERRUPTED
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "last finished epoch (0)" in err[0] and f"rrnx fit --resume {run_dir}" in err[0]
    monkeypatch.undo()
    assert main(["fit", "--resume", str(run_dir)]) == 0
    assert len(yaml.safe_load((run_dir / "metrics.json").read_text())["epochs"]) == 3


def test_default_outputs_go_under_one_folder(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RRNX_OUT", str(tmp_path / "elsewhere"))
    assert main(["fit", str(tiny_csv_recipe(tmp_path, model="bias"))]) == 0
    (run,) = (tmp_path / "elsewhere").iterdir()
    assert run.name.startswith("bias-") and (run / "metrics.json").is_file()
    ignored = (ROOT / ".gitignore").read_text().split()
    assert "runs/" in ignored and not {"sweeps-out/", "compare-out/", "report-out/"} & set(ignored)


def test_the_cli_keeps_unknown_warnings_visible():
    main(["models"])
    assert not any(action == "ignore" and message is None and category is Warning
                   for action, message, category, *_ in warnings.filters)


def test_one_flag_style_and_one_meaning_per_flag():
    """Every command option is kebab-case; --out and --resume take a folder wherever they appear."""
    import argparse
    import re

    from rrnx.cli import build_parser

    parser, _ = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    seen = {}
    for name, command in sub.choices.items():
        for action in command._actions:
            for flag in action.option_strings:
                assert flag in ("-h", "--help") or re.fullmatch(r"--[a-z0-9]+(-[a-z0-9]+)*", flag), (name, flag)
                if flag in ("--out", "--resume"):
                    assert action.nargs is None and action.type is Path, (name, flag)  # a folder, not a switch
                seen.setdefault(flag, set()).add(name)
    assert {"fit", "sweep"} <= seen["--resume"] and {"fit", "compare", "sweep", "report"} <= seen["--out"]
