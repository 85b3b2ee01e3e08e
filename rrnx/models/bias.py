"""Baseline predictors: r_hat(u, i) = mu + b_u + b_i (Koren, "Factorization meets the
neighborhood", KDD 2008, Section 2.1; Surprise's `BaselineOnly` with its default ALS solver).

    min_b  sum_{(u,i) in train} (r_ui - mu - b_u - b_i)^2 + reg_user sum_u b_u^2 + reg_item sum_i b_i^2

The penalty is per user and per item, not per rating, so a user with three ratings is pulled
towards the mean much harder than one with three hundred. Each training epoch is one sweep of
alternating least squares, which solves the objective exactly for one side given the other
(Koren 2008, Surprise's `baseline_als`):

    b_i = sum_{u in R(i)} (r_ui - mu - b_u) / (reg_item + |R(i)|),  then
    b_u = sum_{i in R(u)} (r_ui - mu - b_i) / (reg_user + |R(u)|)

so the model has no learning rate, and the trainer's `max_epochs` is the number of sweeps
(Surprise: 10). The model needs every training rating at once: `train_loader` hands it the whole
training split as one batch per epoch.
"""

from __future__ import annotations

import torch
from torch import nn

from rrnx.data.batches import Batches, one_batch
from rrnx.distributed import all_reduce_sum_
from rrnx.models.base import TRAIN_LOSS, RatingModel


class Bias(RatingModel):
    """Baseline predictors (Koren 2010): mu + b_u + b_i, solved by alternating least squares.

    Args:
        reg_user: penalty on each b_u^2 (Surprise's reg_u: 15).
        reg_item: penalty on each b_i^2 (Surprise's reg_i: 10).
    """

    # `rrnx compare --tune`'s search space (rrnx/sweep/spec.py's format)
    search_space = {"model.reg_user": {"low": 0.1, "high": 100.0, "log": True},
                    "model.reg_item": {"low": 0.1, "high": 100.0, "log": True}}

    # under DDP each rank holds a share of the sweep's ratings and the sums and counts are added over the
    # ranks (rrnx.distributed.SelfSyncingDDP): every rank solves the same exact least squares
    syncs_own_updates = True

    def __init__(self, n_users: int, n_items: int, reg_user: float = 15.0, reg_item: float = 10.0):
        super().__init__()
        self.save_hyperparameters()
        self.check_hparams(non_negative=("reg_user", "reg_item"))
        self.automatic_optimization = False  # ALS sweeps, no gradient steps
        self.user_bias = nn.Parameter(torch.zeros(n_users), requires_grad=False)  # b_u (U,)
        self.item_bias = nn.Parameter(torch.zeros(n_items), requires_grad=False)  # b_i (I,)
        self.register_buffer("global_mean", torch.zeros(()))  # mu

    def set_data_stats(self, rating_range, rating_mean) -> None:
        super().set_data_stats(rating_range, rating_mean)
        self.global_mean.fill_(rating_mean)

    def train_loader(self, data) -> Batches:
        return one_batch(data.triples("train"))  # one ALS sweep per epoch over every training rating

    def predict_ratings(self, batch: dict) -> torch.Tensor:
        return self.global_mean + self.user_bias[batch["user"]] + self.item_bias[batch["item"]]  # (B,)

    @torch.no_grad()
    def training_step(self, batch: dict, batch_idx: int) -> None:
        user, item, rating = batch["user"], batch["item"], batch["rating"].float()  # (N,) each
        self.item_bias.copy_(self._solve(item, rating - self.global_mean - self.user_bias[user],
                                         len(self.item_bias), self.hparams.reg_item, all_reduce_sum_))
        self.user_bias.copy_(self._solve(user, rating - self.global_mean - self.item_bias[item],
                                         len(self.user_bias), self.hparams.reg_user, all_reduce_sum_))
        self.optimizers().step()  # a no-op that counts the sweep: Lightning checkpoints by global step
        mse = ((self.predict_ratings(batch) - rating) ** 2).mean()
        self.log(TRAIN_LOSS, mse, prog_bar=True, batch_size=len(rating))

    @staticmethod
    def _solve(owner: torch.Tensor, residual: torch.Tensor, n: int, reg: float, reduce=lambda t: t) -> torch.Tensor:
        """argmin_b sum (residual - b_owner)^2 + reg sum b^2, per owner: sum / (reg + count); `reduce`
        combines the sums and counts of several processes' shares (all_reduce_sum_)."""
        sums = reduce(torch.zeros(n, dtype=residual.dtype, device=residual.device).index_add_(0, owner, residual))  # (n,)
        counts = reduce(torch.bincount(owner, minlength=n).to(residual.dtype))  # (n,)
        return sums / (reg + counts)

    def configure_optimizers(self):
        # the updates are closed-form (training_step); this optimizer only advances the step count
        return torch.optim.SGD([self.user_bias, self.item_bias], lr=0.0)
