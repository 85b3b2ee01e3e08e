"""Recipes that travel: every shipped recipe runs with no arguments, the packaged MovieTweetings
snapshot, `rrnx recipes` / `recipes copy`, and packaged recipes and sweeps found by name."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import ROOT
from rrnx import packaged
from rrnx.cli import main
from rrnx.data.cache import load_ratings
from rrnx.data.readers import read_ratings
from rrnx.data.sources import resolve_data
from rrnx.data.synthetic import PRESET_SPLITS, PRESETS, _cache_key, generate_preset
from rrnx.errors import DataError, RecipeError
from rrnx.recipe import apply_overrides, check_recipe, load_recipe, resolve_model
from rrnx.run import build_datamodule, data_fingerprint
from rrnx.sweep import load_sweep

RECIPES = sorted((ROOT / "recipes").glob("*.yaml"))
FALLBACKS = {"imdb": "imdb", "netflix-6m": "netflix-6m", "netflix-1y": "netflix-1y",
             "netflix-full": "netflix-full", "movielens-100k": "movielens-100k"}
QUICK = ["--trainer.max_epochs=1", "--logger.name=none", "--model.name=bias", "--trainer.enable_progress_bar=false"]


# ---------------------------------------------------------------- every recipe runs as written


@pytest.mark.parametrize("path", RECIPES, ids=[p.stem for p in RECIPES])
def test_every_shipped_recipe_resolves_and_checks_with_no_arguments(path):
    recipe, note = resolve_data(load_recipe(path))
    check_recipe(resolve_model(recipe)[0])
    data = recipe["data"]
    assert "synthetic_fallback" not in data  # the recorded recipe says what runs, not the rule
    if path.stem in FALLBACKS:  # no data.path as shipped: the preset at its data set's size, said in one line
        preset = FALLBACKS[path.stem]
        assert data["format"] == "synthetic" and data["synthetic"] == {"preset": preset, "seed": 0}
        assert "columns" not in data and "\n" not in note and f"synthetic {preset} preset" in note
        for key, value in PRESET_SPLITS[preset].items():  # the split the preset is sized for (null: first/last rating)
            assert data.get(key) == value or (data.get(key) is None and key != "test_start"), (key, data.get(key))
        if data.get("scale") is not None:  # a declared scale is the one the preset rates on
            assert list(data["scale"]) == PRESETS[preset].get("rating_scale", [1, 5])
    else:
        assert note is None
        assert data["format"] == "synthetic" or str(data["path"]).startswith("rrnx:")


def test_a_data_path_wins_over_the_fallback():
    recipe = apply_overrides(load_recipe(ROOT / "recipes" / "imdb.yaml"), [("data.path", "my-imdb.csv")])
    resolved, note = resolve_data(recipe)
    assert note is None and resolved["data"]["path"] == "my-imdb.csv" and resolved["data"]["format"] == "csv"
    assert resolved["data"]["columns"] and "synthetic_fallback" not in resolved["data"]


def test_an_unknown_fallback_preset_is_one_line():
    recipe = apply_overrides(load_recipe(ROOT / "recipes" / "imdb.yaml"), [("data.synthetic_fallback", "imbd")])
    with pytest.raises(RecipeError, match=r"data.synthetic_fallback: unknown synthetic preset 'imbd'; valid: .*imdb"):
        resolve_data(recipe)


def test_the_imdb_fallback_is_table1_size_on_imdb_stars():
    kwargs = _cache_key({"preset": "imdb", "seed": 0})[1]  # exactly what load_synthetic would generate
    assert (kwargs["n_users"], kwargs["n_items"], kwargs["n_ratings"]) == (440_800, 114_300, 1_429_600)
    assert kwargs["rating_scale"] == [1, 10]
    table, truth = generate_preset("imdb", n_users=2000, n_items=600, n_ratings=20_000)  # the same scale, small
    assert table["rating"].min() >= 1 and table["rating"].max() == 10 and truth["params"]["rating_scale"] == [1, 10]
    assert set(table["rating"].unique()) <= set(range(1, 11))


def test_fit_without_a_path_says_so_once_and_records_what_ran(tmp_path, capsys):
    """The imdb recipe as shipped, shrunk to the small preset's size and dates to stay fast."""
    run_dir = tmp_path / "run"
    small = [f"--data.{k}={v}" for k, v in PRESET_SPLITS["small"].items()]
    assert main(["fit", "recipes/imdb.yaml", "--data.synthetic_fallback=small", *small, "--run-dir", str(run_dir),
                 "--data.user_granularity=7d", "--data.item_granularity=7d", "--data.scale=null", *QUICK]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("data: no data.path")]
    assert len(lines) == 1 and "synthetic small preset" in lines[0] and "set data.path" in lines[0]
    recorded = load_recipe(run_dir / "recipe.yaml")
    assert recorded["data"]["format"] == "synthetic" and recorded["data"]["synthetic"] == {"preset": "small", "seed": 0}
    assert recorded["data"]["synthetic_fallback"] is None and recorded["data"]["path"] is None  # no rule left
    # rerunning the record builds the very same split, with no rule left to apply
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert data_fingerprint(build_datamodule(recorded)) == manifest["data_fingerprint"]


# ---------------------------------------------------------------- the packaged MovieTweetings


def test_packaged_movietweetings_loads_with_its_licence_and_citation():
    table = load_ratings("rrnx:movietweetings-100k", "movietweetings", progress=False)
    assert len(table) == 100_000 and table["user"].nunique() == 16_554 and table["item"].nunique() == 10_506
    assert (table["rating"].min(), table["rating"].max()) == (0.0, 10.0)
    folder = packaged.PACKAGE_DIR / "datasets" / "movietweetings-100k"
    assert "MIT License" in (folder / "LICENSE").read_text()
    assert "Dooms" in (folder / "README.md").read_text() and "CrowdRec" in (folder / "README.md").read_text()
    with pytest.raises(DataError, match=r"rrnx:nope: no data set 'nope' ships with rrnx; .*movietweetings-100k"):
        read_ratings("rrnx:nope")


def test_gzipped_files_read_as_the_plain_file(tmp_path):
    text = "1::0114508::8::1381006850\n2::0499549::10::1379793936\n2::1305591::5::1379793940\n"
    plain = tmp_path / "plain" / "ratings.dat"
    packed = tmp_path / "tweet" / "ratings.dat.gz"
    for path in (plain, packed):
        path.parent.mkdir()
    plain.write_text(text)
    packed.write_bytes(gzip.compress(text.encode()))
    expected = read_ratings(plain, "movietweetings")
    assert read_ratings(packed).equals(expected)  # detected as movietweetings through the gzip
    assert read_ratings(packed.parent, "movietweetings").equals(expected)  # found in its folder
    (tmp_path / "broken.dat.gz").write_bytes(gzip.compress(text.encode())[:-9])
    with pytest.raises(DataError, match="broken.dat.gz: not a readable gzip file"):
        read_ratings(tmp_path / "broken.dat.gz", "movietweetings")


@pytest.mark.slow
def test_movietweetings_recipe_trains_on_the_packaged_copy(tmp_path, capsys):
    run_dir = tmp_path / "mt"
    assert main(["fit", "movietweetings", "--run-dir", str(run_dir), *QUICK]) == 0
    assert "2013-08-01" in capsys.readouterr().out
    assert load_recipe(run_dir / "recipe.yaml")["data"]["path"] == "rrnx:movietweetings-100k"
    assert json.loads((run_dir / "split.json").read_text())["train_data"].endswith("2013-07-31")


# ---------------------------------------------------------------- rrnx recipes, recipes copy


def test_packaged_recipes_and_sweeps_are_the_top_level_folders():
    assert list(packaged.shipped("recipe").values()) == RECIPES  # one copy, read in place in a checkout
    assert list(packaged.shipped("sweep").values()) == sorted((ROOT / "sweeps").glob("*.yaml"))
    assert not set(packaged.shipped("recipe")) & set(packaged.shipped("sweep"))  # `recipes copy NAME` is unambiguous


def test_rrnx_recipes_lists_every_recipe_and_sweep_with_its_launch_command(capsys):
    assert main(["recipes"]) == 0
    out = capsys.readouterr().out
    for path in RECIPES:
        assert f"rrnx fit {path.stem}" in out, path.stem
    for path in sorted((ROOT / "sweeps").glob("*.yaml")):
        assert f"rrnx sweep {path.stem}" in out, path.stem


def test_recipes_copy_refuses_to_overwrite_without_force(tmp_path, capsys):
    assert main(["recipes", "copy", "imdb", str(tmp_path)]) == 0
    copied = tmp_path / "imdb.yaml"
    assert copied.read_text() == (ROOT / "recipes" / "imdb.yaml").read_text()
    copied.write_text("# mine\n")
    assert main(["recipes", "copy", "imdb", str(copied)]) == 2
    assert copied.read_text() == "# mine\n"
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "already exists; pass --force" in err[0]
    assert main(["recipes", "copy", "imdb", str(copied), "--force"]) == 0
    assert copied.read_text() == (ROOT / "recipes" / "imdb.yaml").read_text()
    assert main(["recipes", "copy", "nope", str(tmp_path)]) == 2
    assert main(["recipes", "copy", "imdb", str(tmp_path / "no" / "such.yaml")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "no packaged recipe or sweep of that name" in err[0] and "no such folder" in err[1]
    assert not (tmp_path / "no").exists()


def test_a_file_wins_over_a_name_and_an_unknown_name_lists_the_packaged_ones(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert packaged.find("synthetic") == ROOT / "recipes" / "synthetic.yaml"
    assert packaged.find("synthetic.yaml") == ROOT / "recipes" / "synthetic.yaml"
    (tmp_path / "synthetic.yaml").write_text("model: {name: pmf}\n")
    assert packaged.find("synthetic.yaml") == Path("synthetic.yaml")
    with pytest.raises(RecipeError, match=r"^synthetc: no such recipe file here and no packaged recipe .*: imdb, "):
        packaged.find("synthetc")
    with pytest.raises(RecipeError, match=r"recipes/x.yaml: recipe file not found; .*synthetic"):
        packaged.find("recipes/x.yaml")


def test_a_packaged_sweep_by_name_and_a_copied_sweep_find_their_recipe(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sweep = load_sweep(packaged.find("pmf-grid", "sweep"))
    assert sweep.recipe_path.resolve() == (ROOT / "recipes" / "movietweetings.yaml").resolve()
    assert main(["recipes", "copy", "pmf-grid", "mine.yaml"]) == 0
    copied = load_sweep("mine.yaml")  # its ../recipes/movietweetings.yaml is not next to it: the packaged one
    assert copied.recipe_path == ROOT / "recipes" / "movietweetings.yaml"
    assert copied.base_recipe["data"]["path"] == "rrnx:movietweetings-100k" and copied.notes == []
    granularity = load_sweep(packaged.find("rrn-granularity", "sweep"))  # netflix-6m without a path: said once
    assert granularity.base_recipe["data"]["synthetic"] == {"preset": "netflix-6m", "seed": 0}
    assert len(granularity.notes) == 1 and "synthetic netflix-6m preset" in granularity.notes[0]


@pytest.mark.slow
def test_fit_by_name_from_another_folder(tmp_path):
    env = {**os.environ, "RRNX_CACHE": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, "-m", "rrnx.cli", "fit", "synthetic", *QUICK, "--run-dir", "run"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "run" / "metrics.json").exists() and "bias: best epoch 0" in done.stdout
    done = subprocess.run([sys.executable, "-m", "rrnx.cli", "fit", "synthetc"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.count("\n") == 1 and "packaged recipes: imdb" in done.stderr


@pytest.mark.slow
def test_the_wheel_carries_the_recipes_sweeps_and_movietweetings(tmp_path):
    """Built from a copy of the tree (the checkout gets no build/ folder); needs setuptools here."""
    build_meta = pytest.importorskip("setuptools.build_meta")
    source = tmp_path / "src"
    for name in ("rrnx", "recipes", "sweeps"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(ROOT / name, source / name)
    here = Path.cwd()
    os.chdir(source)  # setuptools builds the project in the current folder
    try:
        wheel = build_meta.build_wheel(str(tmp_path / "dist"))
    finally:
        os.chdir(here)
    names = set(zipfile.ZipFile(tmp_path / "dist" / wheel).namelist())
    for path in RECIPES:
        assert f"rrnx/_shipped/recipes/{path.name}" in names
    for path in (ROOT / "sweeps").glob("*.yaml"):
        assert f"rrnx/_shipped/sweeps/{path.name}" in names
    for name in ("ratings.dat.gz", "LICENSE", "README.md"):
        assert f"rrnx/datasets/movietweetings-100k/{name}" in names
    assert "rrnx/cli.py" in names and "rrnx/models/rrn/model.py" in names
    assert "rrnx/models/rrn/lstm_cell.cpp" in names  # the fused LSTM cell compiles from it at first use
