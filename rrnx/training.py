"""The runner's side of a Lightning run: data flows one way, from the runner into the model.

    model.attach(data)
    trainer.fit(model, train_dataloaders=model.train_loader(data), val_dataloaders=model.eval_loader(data, "val"))

and likewise for test and predict with `model.eval_loader(data, split)`. The data (a set-up
TemporalDataModule) knows no trainer and no model; a model never reaches for the trainer's data.
`rrnx fit`, `rrnx test`, `rrnx bench` and the tests all train and evaluate through these functions.
"""

from __future__ import annotations

import torch

from rrnx.models.base import TEST_RMSE


def fit_model(trainer, model, data, ckpt_path: str | None = None) -> None:
    """Trains `model` on `data`'s training split, validating on its validation half; `ckpt_path`
    resumes from a checkpoint."""
    model.attach(data)
    trainer.fit(model, train_dataloaders=model.train_loader(data), val_dataloaders=model.eval_loader(data, "val"),
                ckpt_path=ckpt_path)


def evaluate_model(trainer, model, data, ckpt_path: str | None = None) -> float:
    """Test RMSE of `model` (at `ckpt_path` when given) on `data`'s test half."""
    model.attach(data)
    results = trainer.test(model, dataloaders=model.eval_loader(data, "test"), ckpt_path=ckpt_path, verbose=False)
    return float(results[0][TEST_RMSE])


def predict_model(trainer, model, data, split: str = "test", ckpt_path: str | None = None) -> torch.Tensor:
    """The model's clamped predictions of every rating of the split, in the split's order, (N,)."""
    model.attach(data)
    return torch.cat(trainer.predict(model, dataloaders=model.eval_loader(data, split), ckpt_path=ckpt_path))
