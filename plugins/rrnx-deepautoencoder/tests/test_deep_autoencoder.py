"""The example plugin's own tests: run from the rrnx checkout with
`pytest plugins/rrnx-deepautoencoder/tests` (installed or not: the package root is put on sys.path)."""

from __future__ import annotations

import sys
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the plugin package, installed or not

from rrnx.data.datamodule import TemporalDataModule  # noqa: E402
from rrnx.training import fit_model  # noqa: E402
from rrnx_deepautoencoder import DeepAutoencoder  # noqa: E402

TEST_START = "2010-03-10"


def ratings(seed: int = 0, n: int = 900) -> pd.DataFrame:
    """Users with a planted taste (rank 1) and item biases, over 90 days from 2010-01-01."""
    rng = np.random.default_rng(seed)
    user, item = rng.integers(0, 40, n), rng.integers(0, 25, n)
    taste, appeal, bias = rng.normal(0, 1, 40), rng.normal(0, 1, 25), rng.normal(0, 0.5, 25)
    rating = np.clip(3 + bias[item] + taste[user] * appeal[item] + rng.normal(0, 0.1, n), 1, 5)
    frame = pd.DataFrame({"user": user, "item": item, "rating": rating,
                          "timestamp": 1_262_304_000 + rng.integers(0, 90 * 86_400, n)})
    return frame.drop_duplicates(["user", "item"])


def datamodule(tmp_path: Path, frame: pd.DataFrame, name: str = "ratings.csv") -> TemporalDataModule:
    frame.to_csv(tmp_path / name, index=False)
    data = TemporalDataModule(path=str(tmp_path / name), format="csv", test_start=TEST_START,
                              cache_dir=str(tmp_path / "cache"))
    data.setup("fit")
    return data


def fit(data: TemporalDataModule, epochs: int = 1, **kwargs) -> DeepAutoencoder:
    torch.manual_seed(0)
    model = DeepAutoencoder(data.n_users, data.n_items, layers=(16, 16, 32), **kwargs)
    model.set_data_stats(data.rating_range, data.rating_mean)
    trainer = L.Trainer(max_epochs=epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    fit_model(trainer, model, data)
    return model.eval()


def test_learns_the_training_ratings(tmp_path):
    data = datamodule(tmp_path, ratings())
    batch = data.triples("train")
    untrained = fit(data, epochs=0)
    trained = fit(data, epochs=15, lr=3e-3, dropout=0.0, rows_per_batch=8)
    error = {name: float(((m.predict_clamped(batch) - batch["rating"]) ** 2).mean())
             for name, m in (("before", untrained), ("after", trained))}
    assert error["after"] < 0.5 * error["before"], error


def test_refeeding_takes_a_second_step_per_batch(tmp_path):
    data = datamodule(tmp_path, ratings())
    steps = {}
    for refeed in (False, True):
        model = fit(data, refeed=refeed, rows_per_batch=8)
        steps[refeed] = model.trainer.optimizers[0].state_dict()["state"][0]["step"].item()
    assert steps[True] == 2 * steps[False]


def test_test_ratings_never_reach_the_encoder(tmp_path):
    frame = ratings()
    perturbed = frame.copy()
    future = perturbed["timestamp"] >= int(pd.Timestamp(TEST_START, tz="UTC").timestamp())
    perturbed.loc[future, "rating"] = 6 - perturbed.loc[future, "rating"]
    first, second = datamodule(tmp_path, frame, "a.csv"), datamodule(tmp_path, perturbed, "b.csv")
    batch = first.triples("test")
    assert torch.equal(fit(first).predict_clamped(batch), fit(second).predict_clamped(batch))
    assert not torch.equal(batch["rating"], second.triples("test")["rating"])


def test_prediction_needs_the_training_data_attached():
    model = DeepAutoencoder(3, 4, layers=(4, 4, 8))
    with pytest.raises(RuntimeError, match="attach"):
        model.predict_ratings({"user": torch.tensor([0]), "item": torch.tensor([1])})
