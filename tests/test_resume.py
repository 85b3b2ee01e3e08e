"""Exact resume for every model: a run killed after an epoch and resumed ends where an uninterrupted
run ends (the runner keeps the RNG states and the training batches' shuffling state in checkpoints).
RRN's own case is in test_rrn.py."""

import pytest

from conftest import assert_resume_is_exact, tiny_csv_recipe
from rrnx.recipe import load_recipe


@pytest.mark.parametrize("name, keys", [("pmf", {"dim": 4}), ("timesvdpp", {"dim": 4})])
def test_resumed_run_equals_uninterrupted_run(tmp_path, name, keys):
    recipe = load_recipe(tiny_csv_recipe(tmp_path, model=name, **keys))
    recipe["trainer"].update(max_epochs=3, num_threads=1)
    recipe["data"]["batch_size"] = 64  # several shuffled batches per epoch
    assert_resume_is_exact(recipe, tmp_path)
