"""`rrnx compare`: model lists and settings, one split for every model, the Table 2 / Figure 1
files, reuse of finished runs, clear errors, and the W&B summary run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import tiny_csv_recipe
from rrnx.cli import main
from rrnx.compare import COLUMNS, MEAN_ROW, parse_models, plan_models
from rrnx.errors import RecipeError
from rrnx.intervals import paired_differences, rmse_interval
from rrnx.recipe import load_recipe, normalize, resolve_model


def test_parse_models_with_inline_settings():
    assert parse_models("pmf:dim=160:reg=0.01, timesvdpp") == [("pmf", {"dim": 160, "reg": 0.01}), ("timesvdpp", {})]
    for bad, message in (("pmf:dim", "key=value"), ("pmf,pmf", "named twice"), (",", "no model")):
        with pytest.raises(RecipeError, match=message):
            parse_models(bad)


def test_settings_precedence_and_dropped_keys():
    recipe = normalize({"model": {"name": "pmf", "dim": 8, "reg": 0.5, "timesvdpp": {"dim": 4, "n_bins": 3}}})
    plans, notes = plan_models(recipe, [("pmf", {}), ("timesvdpp", {"dim": 2}), ("autorec-i", {"hidden": 7})])
    sections = {p.name: p.section for p in plans}
    assert sections["pmf"] == {"name": "pmf", "dim": 8, "reg": 0.5}
    assert sections["timesvdpp"] == {"name": "timesvdpp", "dim": 2, "reg": 0.5, "n_bins": 3}  # inline > per-model > recipe
    assert sections["autorec-i"] == {"name": "autorec-i", "hidden": 7}
    assert notes == ["autorec-i: recipe key(s) dim, reg not accepted by this model, dropped"]


def test_unknown_model_or_key_is_a_clear_error():
    recipe = normalize({"model": {"name": "pmf"}})
    with pytest.raises(RecipeError, match="unknown model 'nope'; registered models: .*autorec-i.*pmf.*timesvdpp"):
        plan_models(recipe, [("pmf", {}), ("nope", {})])
    with pytest.raises(RecipeError, match="model.hidden: unknown key for model 'pmf'"):
        plan_models(recipe, [("pmf", {"hidden": 3})])


def test_cli_unknown_model_fails_before_training(tmp_path, capsys):
    assert main(["compare", str(tiny_recipe(tmp_path)), "--models", "pmf,nope", "--out", str(tmp_path / "out")]) == 2
    assert "unknown model 'nope'" in capsys.readouterr().err
    assert not (tmp_path / "out" / "pmf").exists()



def test_a_bad_value_of_the_last_model_fails_before_the_first_trains(tmp_path, capsys):
    """Types were checked model by model as each began: a typo in the seventh model's settings surfaced after
    the first six had trained. And a refused compare leaves no empty output folder behind."""
    out = tmp_path / "out"
    argv = ["compare", str(tiny_recipe(tmp_path)), "--models", "pmf,biasedmf:reg=abc", "--out", str(out)]
    assert main(argv) == 2
    assert "model.reg: expected float, got 'abc'" in capsys.readouterr().err
    assert not out.exists()

def test_compare_writes_table_and_figure_and_reuses_runs(tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["compare", str(tiny_recipe(tmp_path)), "--models", "pmf,autorec-u:hidden=8", "--out", str(out),
            "--trainer.max_epochs=2", "--model.autorec-u.rows_per_batch=4"]
    assert main(argv) == 0
    table = pd.read_csv(out / "comparison.csv")
    assert list(table.columns) == COLUMNS and table["model"].tolist() == ["pmf", "autorec-u", MEAN_ROW]
    for name in ("pmf", "autorec-u"):
        metrics = json.loads((out / name / "metrics.json").read_text())
        assert table.set_index("model").loc[name, "test_rmse"] == pytest.approx(metrics["test_rmse"])
        assert (out / name / "recipe.yaml").read_text().count("max_epochs: 2") == 1
    recorded = [json.loads((out / n / "manifest.json").read_text())["data_fingerprint"] for n in ("pmf", "autorec-u")]
    assert recorded[0] == recorded[1]  # one split for every model
    markdown = (out / "comparison.md").read_text()
    assert "| model | test RMSE | val RMSE | parameters | size (bytes) | training time (s) |" in markdown
    assert "autorec-u: recipe key(s) dim, reg not accepted" in markdown
    assert (out / "comparison.png").read_bytes()[:4] == b"\x89PNG" and (out / "comparison.pdf").read_bytes()[:5] == b"%PDF-"
    assert (out / "comparison.svg").read_text().lstrip().startswith("<?xml")
    capsys.readouterr()
    assert main(argv) == 0  # a second call reuses both finished runs
    assert capsys.readouterr().out.count("reusing the finished run") == 2


@pytest.mark.slow
def test_wandb_summary_run_holds_table_and_figure(tmp_path):
    out = tmp_path / "out"
    assert main(["compare", str(tiny_recipe(tmp_path, logger="wandb")), "--models", "pmf", "--out", str(out)]) == 0
    runs = sorted((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, "the summary run (the pmf run logs into out/pmf/)"
    media = [p.name for p in (runs[0] / "files" / "media").rglob("*")]
    assert any(name.endswith(".table.json") for name in media) and any(name.endswith(".png") for name in media)


def tiny_recipe(tmp_path: Path, logger: str = "none") -> Path:
    return tiny_csv_recipe(tmp_path, logger, dim=8, reg=0.01)


def test_tune_gives_every_model_the_same_budget_and_writes_tuned_settings(tmp_path, capsys):
    out = tmp_path / "out"
    recipe_path = tiny_csv_recipe(tmp_path, dim=20, reg=0.01)  # inside pmf's space: trial 0
    argv = ["compare", str(recipe_path), "--models", "bias,pmf", "--tune", "3", "--out", str(out),
            "--trainer.max_epochs=2"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert printed.count("trial   2 COMPLETE") + printed.count("trial   2 PRUNED") == 2  # progress, per model
    tuned = yaml.safe_load((out / "tuned.yaml").read_text())["model"]
    for name in ("bias", "pmf"):
        trials = pd.read_csv(out / "tune" / name / "trials.csv")
        assert len(trials) == 3  # the same budget for both
        best = trials.iloc[0]
        assert best["state"] == "complete"
        searched = {c.split(".", 1)[1]: best[c] for c in trials.columns if c.startswith("model.")}
        for key, value in searched.items():
            assert tuned[name][key] == pytest.approx(value) if isinstance(value, float) else tuned[name][key] == value
        metrics = json.loads((out / name / "metrics.json").read_text())  # the retrained best setting
        assert metrics["val_rmse"] == pytest.approx(best["val_rmse"], abs=1e-6)
    trial0 = pd.read_csv(out / "tune" / "pmf" / "trials.csv").set_index("trial").loc[0]
    assert trial0["model.reg"] == pytest.approx(0.01)  # the recipe's setting is the first trial
    recipe = load_recipe(recipe_path)
    recipe["model"] = {**yaml.safe_load((out / "tuned.yaml").read_text())["model"], "name": "pmf"}
    assert resolve_model(recipe)[0]["model"] == {"name": "pmf", **tuned["pmf"]}  # loadable as a model section


def test_tune_needs_a_search_space_and_a_positive_budget(tmp_path, monkeypatch, capsys):
    from rrnx.models.bias import Bias

    recipe = tiny_recipe(tmp_path)
    assert main(["compare", str(recipe), "--models", "bias", "--tune", "0", "--out", str(tmp_path / "a")]) == 2
    assert "at least 1" in capsys.readouterr().err
    monkeypatch.delattr(Bias, "search_space")
    assert main(["compare", str(recipe), "--models", "pmf,bias", "--tune", "2", "--out", str(tmp_path / "b")]) == 2
    assert "model 'bias' declares no search space" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


def test_table_has_mean_row_and_paired_intervals(tmp_path):
    out = tmp_path / "out"
    assert main(["compare", str(tiny_recipe(tmp_path)), "--models", "bias,pmf", "--out", str(out)]) == 0
    table = pd.read_csv(out / "comparison.csv").set_index("model")
    truth = pd.read_parquet(out / "pmf" / "predictions.parquet")["rating"].to_numpy()
    assert MEAN_ROW in table.index and table.loc[MEAN_ROW, "params"] == 1
    for name, other in (("bias", "pmf"), ("pmf", "bias")):
        row = table.loc[name]
        assert row["vs_best_other"] == other
        assert row["diff"] == pytest.approx(row["test_rmse"] - table.loc[other, "test_rmse"], abs=1e-6)
        assert row["ci_low"] <= row["diff"] <= row["ci_high"]
    assert table.loc["bias", "ci_low"] == pytest.approx(-table.loc["pmf", "ci_high"])  # paired: one set of draws
    assert "vs best other (95% CI)" in (out / "comparison.md").read_text()
    from rrnx.run import build_datamodule

    train_mean = build_datamodule(load_recipe(tiny_recipe(tmp_path))).split.train["rating"].mean()
    assert table.loc[MEAN_ROW, "test_rmse"] == pytest.approx(np.sqrt(((truth - train_mean) ** 2).mean()), rel=1e-5)


def test_paired_bootstrap_separates_a_real_difference_from_noise():
    rng = np.random.default_rng(0)
    truth = rng.normal(3, 1, 4000)
    good, worse = truth + rng.normal(0, 0.8, 4000), truth + rng.normal(0, 0.9, 4000)
    twin = good + rng.normal(0, 0.01, 4000)
    result = paired_differences(truth, {"good": good, "worse": worse})
    assert result["worse"]["vs"] == "good" and result["worse"]["ci_low"] > 0
    assert result["good"]["ci_high"] < 0
    noise = paired_differences(truth, {"good": good, "twin": twin})
    assert noise["twin"]["ci_low"] < 0 < noise["twin"]["ci_high"]
    low, high = rmse_interval(truth, good)
    assert low < np.sqrt(((good - truth) ** 2).mean()) < high
