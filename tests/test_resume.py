"""Exact resume for every model: a run killed after an epoch and resumed ends where an uninterrupted
run ends (the runner keeps the RNG states and the training batches' shuffling state in checkpoints).
RRN's own case is in test_rrn.py."""

import pytest

from conftest import assert_resume_is_exact, tiny_csv_recipe
from rrnx import registry
from rrnx.recipe import load_recipe
from test_plugins import EXAMPLE_PLUGIN, fake_distribution


def tiny_recipe(tmp_path, name: str, **keys) -> dict:
    recipe = load_recipe(tiny_csv_recipe(tmp_path, model=name, **keys))
    recipe["trainer"].update(max_epochs=3, num_threads=1)
    recipe["data"]["batch_size"] = 64  # several shuffled batches per epoch
    return recipe


@pytest.mark.parametrize("name, keys", [("pmf", {"dim": 4}), ("timesvdpp", {"dim": 4}),
                                        ("autorec-u", {"hidden": 8, "rows_per_batch": 4})])
def test_resumed_run_equals_uninterrupted_run(tmp_path, name, keys):
    assert_resume_is_exact(tiny_recipe(tmp_path, name, **keys), tmp_path)


def test_resumed_plugin_run_with_dropout_equals_uninterrupted_run(tmp_path, monkeypatch):
    """The example plugin draws dropout masks from torch's global generator: only the runner's RNG
    state in the checkpoint makes its resume exact."""
    monkeypatch.syspath_prepend(str(EXAMPLE_PLUGIN))
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setattr(registry, "_warned", set())
    fake_distribution(tmp_path / "site", "rrnx-deepautoencoder",
                      {"deep-autoencoder": "rrnx_deepautoencoder:DeepAutoencoder"})
    recipe = tiny_recipe(tmp_path, "deep-autoencoder", layers="[8, 8, 16]", dropout=0.5, rows_per_batch=4)
    assert_resume_is_exact(recipe, tmp_path)
