"""The Surprise plugin's own tests: run from the rrnx checkout with
`pytest plugins/rrnx-surprise/tests` (installed or not: the package root is put on sys.path).
They skip cleanly where scikit-surprise is not installed."""

from __future__ import annotations

import sys
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import pytest
import torch

surprise = pytest.importorskip("surprise", reason="scikit-surprise is not installed (pip install scikit-surprise)")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the plugin package, installed or not

from rrnx.data.datamodule import TemporalDataModule  # noqa: E402
from rrnx.training import fit_model  # noqa: E402
from rrnx_surprise import SurpriseBaseline, SurpriseKNN, SurpriseSVD, SurpriseSVDpp  # noqa: E402

TEST_START = "2010-03-10"
PLUGIN = Path(__file__).resolve().parents[1]
MODELS = {"surprise-baseline": SurpriseBaseline, "surprise-svd": SurpriseSVD, "surprise-svdpp": SurpriseSVDpp,
          "surprise-knn": SurpriseKNN}


def ratings(seed: int = 0, n: int = 900) -> pd.DataFrame:
    """Users with a planted taste (rank 1) and item biases, over 90 days from 2010-01-01."""
    rng = np.random.default_rng(seed)
    user, item = rng.integers(0, 40, n), rng.integers(0, 25, n)
    taste, appeal, bias = rng.normal(0, 1, 40), rng.normal(0, 1, 25), rng.normal(0, 0.5, 25)
    rating = np.clip(3 + bias[item] + taste[user] * appeal[item] + rng.normal(0, 0.1, n), 1, 5)
    frame = pd.DataFrame({"user": user * 3 + 7, "item": item + 100, "rating": rating,
                          "timestamp": 1_262_304_000 + rng.integers(0, 90 * 86_400, n)})
    return frame.drop_duplicates(["user", "item"])


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> TemporalDataModule:
    path = tmp_path_factory.mktemp("surprise") / "ratings.csv"
    ratings().to_csv(path, index=False)
    data = TemporalDataModule(path=str(path), format="csv", test_start=TEST_START, cache_dir=str(path.parent / "cache"))
    data.setup("fit")
    return data


def fit(cls, data: TemporalDataModule, tmp_path: Path | None = None, **kwargs):
    model = cls(data.n_users, data.n_items, **kwargs)
    model.set_data_stats(data.rating_range, data.rating_mean)
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                        default_root_dir=str(tmp_path) if tmp_path else None)
    fit_model(trainer, model, data)
    return model, trainer


def surprise_directly(algorithm, data: TemporalDataModule, split: str = "test") -> np.ndarray:
    """The same algorithm trained by Surprise itself on the run's training rows (original ids)."""
    train = data.split.train
    low, high = data.rating_range
    trainset = surprise.Dataset.load_from_df(train[["user", "item", "rating"]],
                                             surprise.Reader(rating_scale=(low, high))).build_full_trainset()
    algorithm.fit(trainset)
    rows = data.split.frame(split)
    return np.array([algorithm.predict(u, i).est for u, i in zip(rows["user"].tolist(), rows["item"].tolist())])


@pytest.mark.parametrize("cls, algorithm", [
    (SurpriseBaseline, lambda: surprise.BaselineOnly(verbose=False)),
    (SurpriseSVD, lambda: surprise.SVD(random_state=0)),
    (SurpriseSVDpp, lambda: surprise.SVDpp(random_state=0, cache_ratings=True)),
], ids=["baseline", "svd", "svdpp"])
def test_predicts_what_surprise_predicts_on_the_same_rows(data, cls, algorithm):
    model, _ = fit(cls, data)
    batch = data.triples("test")
    ours = model.predict_clamped(batch).numpy()
    assert np.allclose(ours, surprise_directly(algorithm(), data), atol=1e-5)


def test_knn_beats_the_mean_and_counts_its_similarities(data):
    model, _ = fit(SurpriseKNN, data, k=10)
    batch = data.triples("test")
    rmse = float(torch.sqrt(((model.predict_clamped(batch) - batch["rating"]) ** 2).mean()))
    mean = float(torch.sqrt(((batch["rating"] - data.rating_mean) ** 2).mean()))
    assert rmse < mean
    assert model.num_parameters() >= data.n_items ** 2  # the item-item similarity matrix


def test_checkpoint_round_trip(data, tmp_path):
    model, trainer = fit(SurpriseSVD, data, tmp_path, n_factors=5)
    trainer.save_checkpoint(tmp_path / "model.ckpt")
    loaded = SurpriseSVD.load_from_checkpoint(tmp_path / "model.ckpt", map_location="cpu")
    batch = data.triples("val")
    assert torch.equal(loaded.predict_clamped(batch), model.predict_clamped(batch))
    assert loaded.num_parameters() == model.num_parameters() > 0


def test_unfitted_model_says_so(data):
    with pytest.raises(RuntimeError, match="not fitted"):
        SurpriseSVD(data.n_users, data.n_items).predict_ratings(data.triples("val"))


def test_entry_points_and_search_spaces():
    """pyproject's entry points name these classes, and every search space parses as a sweep space."""
    import tomllib

    from rrnx.registry import constructor_params
    from rrnx.sweep.spec import parse_space

    declared = tomllib.loads((PLUGIN / "pyproject.toml").read_text())["project"]["entry-points"]["rrnx.models"]
    assert declared == {name: f"rrnx_surprise.model:{cls.__name__}" for name, cls in MODELS.items()}
    for name, cls in MODELS.items():
        for param in parse_space(Path(name), cls.search_space):
            assert param.key.split(".", 1)[1] in constructor_params(cls), (name, param.key)


def test_trains_by_name_through_rrnx_fit(tmp_path, monkeypatch, capsys):
    """Registered through an entry point (a minimal dist-info, as pip writes it), trained by name."""
    from rrnx import registry
    from rrnx.cli import main

    site = tmp_path / "site"
    info = site / "rrnx_surprise-0.1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: rrnx-surprise\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text("[rrnx.models]\n" + "".join(
        f"{name} = rrnx_surprise.model:{cls.__name__}\n" for name, cls in MODELS.items()))
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setattr(registry, "_warned", set())
    ratings().to_csv(tmp_path / "ratings.csv", index=False)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"data:\n  path: {tmp_path / 'ratings.csv'}\n  format: csv\n  test_start: {TEST_START}\n"
                      "model:\n  name: surprise-svd\n  surprise-svd:\n    n_factors: 5\n"
                      "trainer:\n  max_epochs: 1\n  enable_progress_bar: false\nlogger: none\n")
    assert main(["fit", str(recipe), "--run-dir", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "model surprise-svd: n_factors=5" in out and "surprise-svd: best epoch 0" in out
    assert main(["test", str(tmp_path / "run")]) == 0  # the pickled algorithm reloads from best.ckpt
