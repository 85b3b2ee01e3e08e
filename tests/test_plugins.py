"""Plugins: discovery through the `rrnx.models` entry-point group, a broken plugin reported by name
while the others keep working, two plugins claiming one name is an error naming both, and the
example plugin (plugins/rrnx-deepautoencoder) installed and trained by name through `rrnx fit`."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import tiny_csv_recipe
from rrnx import registry
from rrnx.errors import RecipeError

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_PLUGIN = ROOT / "plugins" / "rrnx-deepautoencoder"


def fake_distribution(site: Path, name: str, models: dict[str, str]) -> None:
    """A minimal installed distribution (dist-info with METADATA and entry_points.txt) under `site`."""
    info = site / f"{name.replace('-', '_')}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    lines = [f"{model} = {target}" for model, target in models.items()]
    (info / "entry_points.txt").write_text("[rrnx.models]\n" + "\n".join(lines) + "\n")


@pytest.fixture
def site(tmp_path, monkeypatch):
    """A fresh directory on sys.path for fake distributions; warnings start from scratch."""
    path = tmp_path / "site"
    path.mkdir()
    monkeypatch.syspath_prepend(str(path))
    monkeypatch.setattr(registry, "_warned", set())
    return path


def test_builtin_models_are_registered():
    entries = registry.discover()
    for name in ("pmf", "timesvdpp", "autorec-i", "autorec-u"):
        assert entries[name].cls is not None and entries[name].package == "rrnx"


def test_broken_plugin_is_reported_and_the_others_keep_working(site, capsys):
    fake_distribution(site, "rrnx-broken", {"broken-model": "rrnx_no_such_module_xyz:Model"})
    entry = registry.discover()["broken-model"]
    assert entry.package == "rrnx-broken" and "ModuleNotFoundError" in entry.error
    assert registry.get_model_class("pmf").__name__ == "PMF"
    warning = capsys.readouterr().err
    assert "broken-model" in warning and "rrnx-broken" in warning and "rrnx_no_such_module_xyz" in warning
    with pytest.raises(RecipeError, match="broken-model.*rrnx-broken.*failed to import"):
        registry.get_model_class("broken-model")


def test_two_plugins_claiming_one_name_is_an_error_naming_both(site):
    fake_distribution(site, "rrnx-first", {"twin": "first_pkg:Model"})
    fake_distribution(site, "rrnx-second", {"twin": "second_pkg:Model"})
    with pytest.raises(RecipeError) as error:
        registry.discover()
    message = str(error.value)
    assert "'twin'" in message and "rrnx-first" in message and "rrnx-second" in message
    assert "first_pkg:Model" in message and "second_pkg:Model" in message


def test_a_plugin_cannot_take_a_builtin_name(site):
    fake_distribution(site, "rrnx-impostor", {"pmf": "impostor:PMF"})
    with pytest.raises(RecipeError, match="'pmf'.*(rrnx-impostor.*rrnx \\(|rrnx \\(.*rrnx-impostor)"):
        registry.discover()


def install_example_plugin(tmp_path: Path) -> Path:
    """pip-installs a copy of the example plugin into a private target directory, offline."""
    if importlib.util.find_spec("setuptools") is None:
        pytest.skip("setuptools is not installed in this environment: an offline (--no-build-isolation) "
                    "install of the example plugin needs it (pip install setuptools)")
    source = tmp_path / "plugin-src"
    shutil.copytree(EXAMPLE_PLUGIN, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    target = tmp_path / "plugin-site"
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
               "--no-index", "--target", str(target), str(source)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return target


@pytest.mark.slow
def test_example_plugin_installs_and_trains_by_name(tmp_path):
    target = install_example_plugin(tmp_path)
    recipe = tiny_csv_recipe(tmp_path)
    script = ("import sys; from rrnx.cli import main; assert main(['models']) == 0; "
              f"sys.exit(main(['fit', {str(recipe)!r}, '--run-dir', {str(tmp_path / 'run')!r}, "
              "'--model.name=deep-autoencoder', '--model.layers=[16,16,32]']))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(target), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert re.search(r"deep-autoencoder +rrnx-deepautoencoder 0.1.0", done.stdout)  # columns fit the longest name
    assert "deep-autoencoder: best epoch 0" in done.stdout
    assert (tmp_path / "run" / "metrics.json").is_file()


def test_a_plugin_calling_sys_exit_on_import_is_reported_not_fatal(site, capsys):
    (site / "rrnx_exits_on_import.py").write_text("import sys\nsys.exit(3)\n")
    fake_distribution(site, "rrnx-exits", {"exiting-model": "rrnx_exits_on_import:Model"})
    assert "SystemExit" in registry.discover()["exiting-model"].error
    assert registry.get_model_class("pmf").__name__ == "PMF"
    assert "exiting-model" in capsys.readouterr().err


def test_the_ten_line_contract_in_the_docs_trains_and_evaluates():
    """docs/plugins.md's example model, as printed there, goes through the runner's functions."""
    import re

    import lightning as L

    from conftest import ratings_frame
    from rrnx.data.datamodule import TemporalDataModule
    from rrnx.training import evaluate_model, fit_model

    text = (ROOT / "docs" / "plugins.md").read_text()
    code = re.search(r"## The contract in ten lines\n\n```python\n(.*?)```", text, re.S).group(1)
    assert len(code[code.index("class MyModel"):].strip().splitlines()) == 10
    namespace: dict = {}
    exec(code, namespace)
    data = TemporalDataModule.from_table(ratings_frame(), test_start="2010-03-10", batch_size=64)
    model = namespace["MyModel"](n_users=data.n_users, n_items=data.n_items)
    model.set_data_stats(data.rating_range, data.rating_mean)
    trainer = L.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False)
    fit_model(trainer, model, data)
    assert 0 < evaluate_model(trainer, model, data) < 10
