"""Shared fixtures: tiny data the tests make themselves, and the optional real data folder."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from lightning.pytorch.callbacks import Callback

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Every test gets a private parse/generator cache, so no test trusts another's files, and
    runs from the project root so recipe paths read as in the README."""
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("RRNX_CACHE", str(tmp_path_factory.mktemp("rrnx-cache")))


def shared_data(*parts: str) -> Path:
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not available: {path} is absent (see ../shared/data/README.md)")
    return path


def ratings_frame(n_users=40, n_items=30, n_ratings=1500, days=120, seed=0, start="2010-01-01") -> pd.DataFrame:
    """A canonical ratings table with original ids that are not 0..n-1."""
    rng = np.random.default_rng(seed)
    t0 = int(pd.Timestamp(start, tz="UTC").timestamp())
    return pd.DataFrame({
        "user": rng.integers(0, n_users, n_ratings) * 7 + 100,
        "item": rng.integers(0, n_items, n_ratings) * 3 + 5000,
        "rating": rng.integers(1, 6, n_ratings).astype(np.float32),
        "timestamp": t0 + rng.integers(0, days * 86_400, n_ratings),
    })


@pytest.fixture
def ratings_csv(tmp_path) -> Path:
    path = tmp_path / "ratings.csv"
    ratings_frame().rename(columns={"user": "uid", "item": "iid", "rating": "stars", "timestamp": "ts"}).to_csv(
        path, index=False)
    return path


def tiny_csv_recipe(tmp_path: Path, logger: str = "none", model: str = "pmf", **model_keys) -> Path:
    """A recipe over a tiny csv of 30 users x 20 items over 90 days (test period from 2010-03-10)."""
    rng = np.random.default_rng(0)
    n = 700
    frame = pd.DataFrame({"user": rng.integers(0, 30, n), "item": rng.integers(0, 20, n),
                          "rating": rng.integers(1, 6, n).astype(float),
                          "timestamp": 1_262_304_000 + rng.integers(0, 90 * 86_400, n)})
    frame.drop_duplicates(["user", "item"]).to_csv(tmp_path / "ratings.csv", index=False)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"data:\n  path: {tmp_path / 'ratings.csv'}\n  format: csv\n  test_start: 2010-03-10\n"
                      f"model:\n  name: {model}\n" + "".join(f"  {k}: {v}\n" for k, v in model_keys.items())
                      + "trainer:\n  max_epochs: 1\n"
                      f"  enable_progress_bar: false\nlogger:\n  name: {logger}\n  mode: offline\n")
    return recipe


class Kill(Callback):
    """Dies as epoch 1 begins, after epoch 0's checkpoints are written."""

    def on_train_epoch_start(self, trainer, model):
        if trainer.current_epoch == 1:
            raise RuntimeError("killed after epoch 0")


def assert_resume_is_exact(recipe: dict, tmp_path: Path) -> None:
    """A run killed after epoch 0 and resumed has the per-epoch validation RMSE, test RMSE and final
    weights of an uninterrupted run."""
    from rrnx.run import fit

    full = fit(recipe, tmp_path / "full", quiet=True)
    with pytest.raises(RuntimeError, match="killed"):
        fit(recipe, tmp_path / "killed", quiet=True, callbacks=[Kill()])
    resumed = fit({}, tmp_path / "killed", resume=True, quiet=True)
    assert len(full["epochs"]) == recipe["trainer"]["max_epochs"] > 1
    assert [e["val/rmse"] for e in resumed["epochs"]] == [e["val/rmse"] for e in full["epochs"]]
    assert resumed["test_rmse"] == full["test_rmse"]
    a = torch.load(tmp_path / "full" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "killed" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
