"""RRN on a frozen base model: RRN(base=...) adds another model's prediction to eq. (7) (base_model.py)."""

import numpy as np
import pandas as pd
import pytest
import torch

from rrnx.checkpoints import load_model
from rrnx.data.steps import build_sequences
from rrnx.errors import RrnxError
from rrnx.models.rrn import RRN
from rrnx.models.rrn.base_model import base_scores, train_base
from rrnx.models.rrn.sequences import ratings_frame_arrays
from rrnx.run import fit
from test_rrn import one_thread  # noqa: F401  (autouse: one torch thread for tiny tensors)
from test_rrn import datamodule, recipe, tiny_model, tiny_ratings, training_predictions

BASE = {"name": "timesvdpp", "dim": 3, "n_bins": 4}


def trained_pair(tmp_path, **settings):
    """An RRN on a base trained for 2 epochs, and the same RRN (same weights) without the base."""
    data = datamodule(tmp_path, tiny_ratings())
    with_base = tiny_model(data, biases=True, base=BASE, **settings)
    train_base(with_base.base_model, data, 2)
    plain = tiny_model(data, biases=True, **settings)
    plain.load_state_dict({k: v for k, v in with_base.state_dict().items() if not k.startswith("base_model.")})
    return data, with_base, plain


def table_scores(model, frame: pd.DataFrame) -> torch.Tensor:
    user, item, _, timestamp = ratings_frame_arrays(frame)
    return base_scores(model.base_model, user, item, timestamp)  # (N,) in the frame's order


def test_each_training_rating_gets_the_base_prediction_of_its_own_user_item_and_time(tmp_path):
    data, model, _ = trained_pair(tmp_path)
    train = data.split.train
    user, item, _, timestamp = ratings_frame_arrays(train)
    expected = table_scores(model, train)
    assert expected.std() > 0.05  # a trained base, not a constant
    for side in ("user", "item"):
        seqs = model._sides[side]
        entity, other = (user, item) if side == "user" else (item, user)
        # the training table's row of each rating of the side, in the side's rating order
        rows, _ = build_sequences(side, entity, other, np.arange(len(train), dtype=np.float32), timestamp,
                                  seqs.n_entities, seqs.granularity)
        row = torch.as_tensor(rows.value).long()  # (N,)
        per_rating_entity = torch.repeat_interleave(
            torch.repeat_interleave(torch.arange(seqs.n_entities), seqs.lengths),
            seqs.rating_offsets[1:] - seqs.rating_offsets[:-1])  # (N,) entity of each rating from the CSR
        assert torch.equal(per_rating_entity, torch.as_tensor(entity)[row])  # those rows are the side's ratings
        assert torch.equal(seqs.other.long(), torch.as_tensor(other)[row])
        torch.testing.assert_close(model._rating_base(seqs), expected[row])


def test_training_and_evaluation_predictions_are_eq7_plus_the_base(tmp_path):
    data, with_base, plain = trained_pair(tmp_path)
    train = data.split.train
    user, item, _, timestamp = ratings_frame_arrays(train)
    got, want = training_predictions(with_base), training_predictions(plain)
    for side in ("user", "item"):
        base = with_base._rating_base(with_base._sides[side]).numpy()
        np.testing.assert_allclose(got[side], want[side] + base, rtol=0, atol=1e-5)
    val = data.split.val
    batch = {"user": torch.as_tensor(val["user_idx"].to_numpy()), "item": torch.as_tensor(val["item_idx"].to_numpy()),
             "timestamp": torch.as_tensor(val["timestamp"].to_numpy())}
    expected = plain.predict_ratings(batch) + table_scores(with_base, val)
    torch.testing.assert_close(with_base.predict_ratings(batch), expected)
    at = with_base._scores_at(batch["user"], batch["item"], batch["timestamp"])
    torch.testing.assert_close(at, plain._scores_at(batch["user"], batch["item"], batch["timestamp"])
                               + table_scores(with_base, val))
    with pytest.raises(RrnxError, match="timestamp"):
        with_base.predict_ratings({"user": batch["user"], "item": batch["item"]})


def test_residual_step_statistics_are_taken_around_the_base_too(tmp_path):
    data, model, _ = trained_pair(tmp_path, step_stats="residual")
    seqs = model._sides["item"]
    from rrnx.models.rrn.sequences import gather

    batch = gather(seqs, torch.arange(seqs.n_entities))
    with torch.no_grad():
        stats = model._step_stats(seqs, batch)  # (R, 2)
        users, items = batch.other, batch.entities[batch.rating_entity]
        residual = batch.value - model._stationary_score(users, items) - model._rating_base(seqs)[batch.ratings]
    total = torch.zeros(len(batch.rows)).index_add_(0, batch.rating_row, residual)
    span = float(model.rating_range[1] - model.rating_range[0])
    torch.testing.assert_close(stats[:, 0], total / batch.ratings_per_row / (span / 4))


def test_an_rrn_on_a_base_trains_reloads_and_advances(tmp_path):
    settings = {"biases": True, "global_mean": True, "step_stats": "residual", "stationary_epoch": True,
                "base": BASE, "base_epochs": 2}
    metrics = fit(recipe(tmp_path, epochs=2, **settings), tmp_path / "run", quiet=True)
    base_rmse = metrics["epochs"][0]["base/val_rmse"]  # the base alone, logged with the pre-train
    assert 0 < base_rmse < 2 and metrics["epochs"][0]["val/rmse"] != base_rmse
    data = datamodule(tmp_path, tiny_ratings())
    model = load_model(RRN, tmp_path / "run" / "checkpoints" / "best.ckpt")
    model.attach(data)
    base = model.base_model
    assert not any(p.requires_grad for p in base.parameters())
    assert len(base.user_day_keys) > 1  # the base's data-sized tables came back with their trained values
    written = pd.read_parquet(tmp_path / "run" / "predictions.parquet")
    test = data.split.test
    batch = {"user": torch.as_tensor(test["user_idx"].to_numpy()), "item": torch.as_tensor(test["item_idx"].to_numpy()),
             "timestamp": torch.as_tensor(test["timestamp"].to_numpy())}
    predicted = model.predict_clamped(batch).numpy()
    np.testing.assert_allclose(np.sort(predicted), np.sort(written["prediction"].to_numpy()), rtol=0, atol=1e-5)
    rmse = float(np.sqrt(np.mean((predicted - test["rating"].to_numpy()) ** 2)))
    assert rmse == pytest.approx(metrics["test_rmse"], abs=1e-5)
    fed = data.split.val.iloc[:5]
    model.advance(data, fed)  # the fed ratings' base predictions are laid out with the extended sequences
    assert model._advanced["seqs"]["user"].base is not None
    later = torch.full((len(test),), int(test["timestamp"].max()) + 86_400)
    assert torch.isfinite(model.predict_at(data, batch["user"], batch["item"], later)).all()


def test_a_biased_mf_base_trains_under_an_rrn(tmp_path):
    metrics = fit(recipe(tmp_path, epochs=1, biases=True, global_mean=True, stationary_epoch=True,
                         base={"name": "biasedmf", "dim": 2}, base_epochs=2), tmp_path / "run", quiet=True)
    model = load_model(RRN, tmp_path / "run" / "checkpoints" / "best.ckpt")
    assert model.base_model.user_bias.weight.abs().max() > 0.01  # trained: biased MF starts its biases at 0
    data = datamodule(tmp_path, tiny_ratings())
    assert float(model.base_model.global_mean) == pytest.approx(data.rating_mean)
    assert float(model.mean_offset) == 0.0  # the base carries the training mean, eq. (7) does not add it again
    assert metrics["best_epoch"] == 0  # the one epoch is the stationary one: base + pre-train alone


@pytest.mark.parametrize("base, biases, message", [
    (BASE, False, "base needs biases"),
    ({"name": "rrn"}, True, "cannot be the base"),
    ({"dim": 3}, True, "must name a registered model"),
    ({"name": "timesvdpp", "colour": 1}, True, "base 'timesvdpp'"),
    ({"name": "bias"}, True, "must train by gradient steps"),  # closed-form ALS sweeps
])
def test_a_bad_base_is_one_clear_error_before_training(tmp_path, base, biases, message):
    with pytest.raises(RrnxError, match=message):
        fit(recipe(tmp_path, epochs=1, biases=biases, base=base), tmp_path / "run", quiet=True)
    assert not (tmp_path / "run" / "metrics.json").exists()
