"""The paper's baselines (TimeSVD++, I-AutoRec, U-AutoRec): each fits a planted structure on tiny
data, uses training ratings only as inputs, survives a checkpoint round trip, and behaves as
documented (docs/models.md) on dates after training."""

from __future__ import annotations

import lightning as L
import numpy as np
import pandas as pd
import pytest
import torch

from rrnx.data.datamodule import TemporalDataModule
from rrnx.models.autorec import IAutoRec, UAutoRec
from rrnx.models.timesvdpp import TimeSVDpp
from rrnx.training import fit_model

START = pd.Timestamp("2010-01-01", tz="UTC")
TEST_START = "2010-04-01"  # day 90 of 120


def planted_ratings(n_users=60, n_items=40, n_ratings=3000, rank=2, noise=0.1, seed=0) -> pd.DataFrame:
    """r = 3 + b_u + b_i + <p_u, q_i> + noise: a bias and low-rank structure a model must find."""
    rng = np.random.default_rng(seed)
    user, item = rng.integers(0, n_users, n_ratings), rng.integers(0, n_items, n_ratings)
    b_u, b_i = rng.normal(0, 0.5, n_users), rng.normal(0, 0.5, n_items)
    p, q = rng.normal(0, 0.7, (n_users, rank)), rng.normal(0, 0.7, (n_items, rank))
    rating = 3 + b_u[user] + b_i[item] + (p[user] * q[item]).sum(1) + rng.normal(0, noise, n_ratings)
    frame = pd.DataFrame({"user": user + 10, "item": item + 500, "rating": rating.astype(np.float32),
                          "timestamp": int(START.timestamp()) + rng.integers(0, 120 * 86_400, n_ratings)})
    return frame.drop_duplicates(["user", "item"])


def datamodule(tmp_path, frame: pd.DataFrame, name: str = "ratings.csv") -> TemporalDataModule:
    path = tmp_path / name
    frame.to_csv(path, index=False)
    data = TemporalDataModule(path=str(path), format="csv", test_start=TEST_START, batch_size=128,
                              cache_dir=str(tmp_path / "cache"))
    data.setup("fit")
    return data


def train(model, data: TemporalDataModule, epochs: int):
    torch.manual_seed(0)
    model.set_data_stats(data.rating_range, data.rating_mean)
    trainer = L.Trainer(max_epochs=epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        limit_val_batches=0)
    fit_model(trainer, model, data)
    return model.eval()


def rmse_on_test(model, data) -> float:
    batch = data.triples("test")
    return float(torch.sqrt(((model.predict_clamped(batch) - batch["rating"]) ** 2).mean()))


def mean_predictor_rmse(data) -> float:
    test = data.triples("test")["rating"]
    return float(torch.sqrt(((test - data.rating_mean) ** 2).mean()))


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    return datamodule(tmp_path_factory.mktemp("planted"), planted_ratings())


MODELS = [
    (TimeSVDpp, {"dim": 4, "lr": 0.1, "reg": 1e-2, "time_reg": 10.0}, 10),
    (IAutoRec, {"hidden": 32, "lr": 0.03, "rows_per_batch": 8, "l2": 1.0}, 15),
    (UAutoRec, {"hidden": 32, "lr": 0.03, "rows_per_batch": 8, "l2": 1.0}, 15),
]


@pytest.mark.parametrize("cls,kwargs,epochs", MODELS, ids=lambda v: getattr(v, "__name__", ""))
def test_fits_planted_structure(planted, cls, kwargs, epochs):
    model = train(cls(planted.n_users, planted.n_items, **kwargs), planted, epochs)
    rmse, baseline = rmse_on_test(model, planted), mean_predictor_rmse(planted)
    assert rmse < 0.6 * baseline, f"{cls.__name__}: test RMSE {rmse:.3f} vs mean predictor {baseline:.3f}"


def trained(cls, data, epochs=2, **kwargs):
    torch.manual_seed(0)
    return train(cls(data.n_users, data.n_items, **kwargs), data, epochs)


SMALL = {TimeSVDpp: {"dim": 4}, IAutoRec: {"hidden": 16, "rows_per_batch": 8}, UAutoRec: {"hidden": 16, "rows_per_batch": 8}}


@pytest.mark.parametrize("cls", [TimeSVDpp, IAutoRec, UAutoRec], ids=lambda c: c.__name__)
def test_validation_and_test_ratings_never_reach_the_model(tmp_path, cls):
    """Perturbing every rating of the test period changes nothing the model predicts."""
    frame = planted_ratings(n_ratings=800)
    perturbed = frame.copy()
    future = perturbed["timestamp"] >= int(pd.Timestamp(TEST_START, tz="UTC").timestamp())
    perturbed.loc[future, "rating"] = 9.0 - perturbed.loc[future, "rating"]
    data, data_perturbed = datamodule(tmp_path, frame, "a.csv"), datamodule(tmp_path, perturbed, "b.csv")
    assert not torch.equal(data.triples("test")["rating"], data_perturbed.triples("test")["rating"])
    batch = data.triples("test")
    first = trained(cls, data, **SMALL[cls]).predict_ratings(batch)
    second = trained(cls, data_perturbed, **SMALL[cls]).predict_ratings(batch)
    assert torch.equal(first, second)


@pytest.mark.parametrize("cls", [TimeSVDpp, IAutoRec, UAutoRec], ids=lambda c: c.__name__)
def test_checkpoint_round_trip(tmp_path, planted, cls):
    model = trained(cls, planted, epochs=1, **SMALL[cls])
    model.trainer.save_checkpoint(tmp_path / "model.ckpt")
    loaded = cls.load_from_checkpoint(tmp_path / "model.ckpt", map_location="cpu").eval()
    batch = planted.triples("test")
    expected = model.predict_clamped(batch)
    assert torch.equal(loaded.predict_at(planted, batch["user"], batch["item"], batch["timestamp"]), expected)
    assert loaded.num_parameters() == model.num_parameters()


def test_timesvdpp_terms_on_future_dates(planted):
    """docs/models.md: after training, day terms are zero, Bin(t) is the last bin, dev_u(t) extrapolates."""
    model = trained(TimeSVDpp, planted, epochs=1, dim=4)
    train = planted.triples("train")
    user, item = train["user"][:50], train["item"][:50]  # (50,)
    day = torch.div(train["timestamp"][:50], 86_400, rounding_mode="floor").float()  # (50,) training days
    assert model.user_day_row(user, day)[1].all()  # every training (user, day) has its own terms
    future = day.max() + 365 + torch.arange(50.0)  # (50,) a year after training
    assert not model.user_day_row(user, future)[1].any()
    assert (model.item_bin(item, future) == item * model.hparams.n_bins + model.hparams.n_bins - 1).all()
    gap = future - model.user_mean_day[user]
    assert torch.allclose(model.deviation(user, future), gap.pow(model.hparams.beta))
    with torch.no_grad():  # without the drift terms, all future dates predict the same
        model.user_drift.weight.zero_()
        model.user_factor_drift.weight.zero_()
        at = lambda days: model.predict_ratings({"user": user, "item": item, "timestamp": (days * 86_400).long()})
        assert torch.allclose(at(future), at(future + 400))
        assert not torch.allclose(at(day), at(future))  # training days do use their day terms


def test_autorec_row_without_training_ratings_predicts_the_mean(planted):
    model = trained(IAutoRec, planted, epochs=1, hidden=8)
    model.row_offsets[-1] = model.row_offsets[-2]  # pretend the last item has no training ratings
    item = torch.tensor([planted.n_items - 1, 0])
    with torch.no_grad():
        pred = model.predict_ratings({"user": torch.tensor([0, 0]), "item": item, "timestamp": torch.zeros(2).long()})
    assert pred[0].item() == pytest.approx(planted.rating_mean) and pred[1].item() != pytest.approx(planted.rating_mean)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["timesvdpp", "autorec-i", "autorec-u"])
def test_real_data_one_epoch(tmp_path, name):
    """One epoch on MovieLens 100K's reference split through `rrnx fit`'s code path."""
    from pathlib import Path

    from rrnx.run import fit

    ratings = Path(__file__).resolve().parents[2] / "shared" / "data" / "ml-100k" / "u.data"
    if not ratings.exists():
        pytest.skip(f"real data not available: {ratings} is absent")
    recipe = {"data": {"path": str(ratings), "format": "movielens", "test_start": "1998-04-01"},
              "model": {"name": name}, "trainer": {"max_epochs": 1, "enable_progress_bar": False},
              "logger": {"name": "none"}}
    metrics = fit(recipe, tmp_path / "run", quiet=True)
    assert 0.8 < metrics["test_rmse"] < 1.3
