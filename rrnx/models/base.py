"""RatingModel: what every rrnx model (built-in or plugin) is. See docs/plugins.md.

A model is a LightningModule whose constructor takes `n_users`, `n_items` (filled in by rrnx
from the data) and its own typed hyperparameters (filled in from the recipe's `model:` section).
It implements `predict_ratings(batch)`; rrnx evaluates every model the same way.
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
    and `item` (B,) contiguous indices and `timestamp` (B,) unix seconds, and either
    `training_step` (automatic optimization over shuffled training triples, the default loader)
    or their own `train_loader(data)`/`eval_loader(data, split)` (see RRN, AutoRec).
    """

    def __init__(self) -> None:
        super().__init__()
        self.val_rmse = MeanSquaredError(squared=False)
        self.test_rmse = MeanSquaredError(squared=False)
        # set by rrnx from the training data; saved in the checkpoint with the weights
        self.register_buffer("rating_range", torch.tensor([-float("inf"), float("inf")]))

    def set_data_stats(self, rating_range: tuple[float, float], rating_mean: float) -> None:
        """Called by rrnx before training; subclasses may override to use the mean (keep the call)."""
        self.rating_range.copy_(torch.tensor(rating_range, dtype=torch.float32))

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
        return self.predict_clamped({"user": users, "item": items, "timestamp": timestamps})

    def predict_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self.predict_clamped(batch)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def size_bytes(self) -> int:
        """Model size as in the paper (footnote 1): 4 bytes (float32) per parameter."""
        return 4 * self.num_parameters()
