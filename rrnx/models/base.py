"""RatingModel: what every rrnx model (built-in or plugin) is. See docs/plugins.md.

A model is a LightningModule whose constructor takes `n_users`, `n_items` (filled in by rrnx
from the data) and its own typed hyperparameters (filled in from the recipe's `model:` section).
It implements `predict_ratings(batch)`; rrnx evaluates every model the same way.

Data flows one way, from the runner into the model (rrnx.training):
    model.attach(data)
    trainer.fit(model, train_dataloaders=model.train_loader(data), val_dataloaders=model.eval_loader(data, "val"))
and likewise `model.eval_loader(data, "test")` for trainer.test / trainer.predict. The defaults here
serve a model trained on shuffled rating triples; a model never reaches for the trainer's data.
"""

from __future__ import annotations

import lightning as L
import torch
from torchmetrics import MeanSquaredError

# Metric keys: defined once, used by checkpointing, sweeps, reports.
VAL_RMSE = "val/rmse"
TEST_RMSE = "test/rmse"
TRAIN_LOSS = "train/loss"


class RatingModel(L.LightningModule):
    """Base class: RMSE evaluation on the validation/test halves, clamping to the rating scale.

    Subclasses implement `predict_ratings(batch) -> (B,) tensor` for a batch dict with `user` (B,)
    and `item` (B,) contiguous indices and `timestamp` (B,) unix seconds, and `training_step` over
    the batches of `train_loader(data)` (shuffled training triples unless overridden, see RRN,
    AutoRec); a model that needs its training data (rating vectors, sequences) reads it in `attach`.
    """

    def __init__(self) -> None:
        super().__init__()
        self.val_rmse = MeanSquaredError(squared=False)
        self.test_rmse = MeanSquaredError(squared=False)
        # set by rrnx from the training data; saved in the checkpoint with the weights
        self.register_buffer("rating_range", torch.tensor([-float("inf"), float("inf")]))

    def check_hparams(self, positive: tuple[str, ...] = (), non_negative: tuple[str, ...] = ()) -> None:
        """Saved hyperparameters outside their range, as one ValueError naming the first (the runner reports it
        in one line before training): a learning rate of 0 was torch's error at the first step, a size of 0
        or a negative regulariser trained a degenerate model with exit 0."""
        for names, holds, what in ((positive, lambda v: v > 0, "> 0"), (non_negative, lambda v: v >= 0, ">= 0")):
            for name in names:
                value = self.hparams[name]
                if value is not None and not holds(value):  # NaN fails both
                    raise ValueError(f"{name} must be {what}, got {value}")

    def set_data_stats(self, rating_range: tuple[float, float], rating_mean: float) -> None:
        """Called by rrnx before training; subclasses may override to use the mean (keep the call)."""
        self.rating_range.copy_(torch.tensor(rating_range, dtype=torch.float32))

    # ---------------------------------------------------------------- data: the runner hands it in
    def attach(self, data) -> None:
        """Reads what the model needs from `data` (a set-up TemporalDataModule, training ratings only)
        before any loader or prediction; called by the runner before every trainer call and by
        predict_at. Must be cheap when repeated with the same data. Default: nothing to read."""

    def train_loader(self, data):
        """Training batches, any iterable with a __len__: by default shuffled training triples."""
        return data.triples_loader("train", shuffle=True)

    def eval_loader(self, data, split: str):
        """Batches of the split's triples (`user`, `item`, `rating`, `timestamp`) for validation,
        test and predict: by default in order."""
        return data.triples_loader(split)

    # ---------------------------------------------------------------- predictions
    def predict_ratings(self, batch: dict) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def predict_clamped(self, batch: dict) -> torch.Tensor:
        return self.predict_ratings(batch).float().clamp(self.rating_range[0], self.rating_range[1])

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self.val_rmse.update(self.predict_clamped(batch), batch["rating"].float())
        self.log(VAL_RMSE, self.val_rmse, on_epoch=True, prog_bar=True, batch_size=len(batch["rating"]))

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self.test_rmse.update(self.predict_clamped(batch), batch["rating"].float())
        self.log(TEST_RMSE, self.test_rmse, on_epoch=True, batch_size=len(batch["rating"]))

    @torch.no_grad()
    def predict_at(self, data, users: torch.Tensor, items: torch.Tensor, timestamps: torch.Tensor) -> torch.Tensor:
        """Clamped predictions for arbitrary (user_idx, item_idx, unix time) triples, using training
        data only (analyses call this to trace predictions over time). Static models ignore time;
        temporal models (RRN) override it to use the states of the step each timestamp falls in."""
        self.attach(data)
        return self.predict_clamped({"user": users, "item": items, "timestamp": timestamps})

    def predict_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self.predict_clamped(batch)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def size_bytes(self) -> int:
        """Model size as in the paper (footnote 1): 4 bytes (float32) per parameter."""
        return 4 * self.num_parameters()
