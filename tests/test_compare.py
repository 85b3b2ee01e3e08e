"""`rrnx compare`: model lists and settings, one split for every model, the Table 2 / Figure 1
files, reuse of finished runs, clear errors, and the W&B summary run."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from conftest import tiny_csv_recipe
from rrnx.cli import main
from rrnx.compare import COLUMNS, parse_models, plan_models
from rrnx.errors import RecipeError
from rrnx.recipe import normalize


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


def test_compare_writes_table_and_figure_and_reuses_runs(tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["compare", str(tiny_recipe(tmp_path)), "--models", "pmf,autorec-u:hidden=8", "--out", str(out),
            "--trainer.max_epochs=2", "--model.autorec-u.rows_per_batch=4"]
    assert main(argv) == 0
    table = pd.read_csv(out / "comparison.csv")
    assert list(table.columns) == COLUMNS and table["model"].tolist() == ["pmf", "autorec-u"]
    for name in ("pmf", "autorec-u"):
        metrics = json.loads((out / name / "metrics.json").read_text())
        assert table.set_index("model").loc[name, "test_rmse"] == pytest.approx(metrics["test_rmse"])
        assert (out / name / "recipe.yaml").read_text().count("max_epochs: 2") == 1
    recorded = [json.loads((out / n / "manifest.json").read_text())["data_fingerprint"] for n in ("pmf", "autorec-u")]
    assert recorded[0] == recorded[1]  # one split for every model
    markdown = (out / "comparison.md").read_text()
    assert "| model | test RMSE | val RMSE | parameters | size (bytes) | training time (s) |" in markdown
    assert "autorec-u: recipe key(s) dim, reg not accepted" in markdown
    assert (out / "comparison.png").read_bytes()[:4] == b"\x89PNG"
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
