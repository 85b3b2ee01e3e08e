"""Biased matrix factorisation: r_hat(u, i) = mu + b_u + b_i + p_u^T q_i (Koren, Bell & Volinsky,
"Matrix factorization techniques for recommender systems", IEEE Computer 2009, eq. 4-5; the
"SVD" of the Netflix Prize and of Surprise's `SVD`).

    min  sum_{(u,i) in train} (r_ui - r_hat(u, i))^2 + reg (|p_u|^2 + |q_i|^2) + bias_reg (b_u^2 + b_i^2)

with the penalty per rating on the terms that rating touches, as in Koren's (and Surprise's)
stochastic gradient descent. Two optimisers over shuffled mini-batches of training triples:

- `sgd`: plain SGD on half the batch's *summed* loss, so each parameter moves by lr times the sum
  of its per-rating steps (err * q_i - reg * p_u, ...), the mini-batch form of Surprise's
  per-rating SGD with the same meaning of lr (Surprise: lr 0.005,
  reg 0.02 for factors and biases, 100 factors, 20 epochs, init N(0, 0.1)).
- `adam`: SparseAdam on the batch's mean loss (as rrnx's PMF).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from rrnx.models.base import TRAIN_LOSS, RatingModel

OPTIMIZERS = ("sgd", "adam")


class BiasedMF(RatingModel):
    """Biased MF (Koren, Bell & Volinsky 2009): mu + b_u + b_i + <p_u, q_i>, Surprise's SVD.

    Args:
        dim: factor size k (Surprise: 100).
        reg: L2 weight per rating on p_u and q_i (Surprise: 0.02).
        bias_reg: L2 weight per rating on b_u and b_i (Surprise: 0.02).
        lr: learning rate (Surprise's SGD: 0.005).
        optimizer: `sgd` (Surprise's update, summed over the batch) or `adam` (SparseAdam, mean loss).
        init_std: standard deviation of the Gaussian initialisation of p_u, q_i (biases start at 0).
    """

    # `rrnx compare --tune`'s search space (rrnx/sweep/spec.py's format)
    search_space = {"model.dim": [10, 20, 50, 100, 200],
                    "model.reg": {"low": 0.003, "high": 0.3, "log": True},
                    "model.bias_reg": {"low": 0.003, "high": 0.3, "log": True},
                    "model.lr": {"low": 0.001, "high": 0.05, "log": True},
                    "model.optimizer": ["sgd", "adam"]}

    def __init__(self, n_users: int, n_items: int, dim: int = 100, reg: float = 0.02, bias_reg: float = 0.02,
                 lr: float = 0.005, optimizer: Literal["sgd", "adam"] = "sgd", init_std: float = 0.1):
        super().__init__()
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)} (got {optimizer!r})")
        self.save_hyperparameters()
        self.check_hparams(positive=("dim", "lr"), non_negative=("reg", "bias_reg", "init_std"))
        self.user_bias = nn.Embedding(n_users, 1, sparse=True)  # b_u (U, 1)
        self.item_bias = nn.Embedding(n_items, 1, sparse=True)  # b_i (I, 1)
        self.user_factors = nn.Embedding(n_users, dim, sparse=True)  # p_u (U, k)
        self.item_factors = nn.Embedding(n_items, dim, sparse=True)  # q_i (I, k)
        nn.init.zeros_(self.user_bias.weight)
        nn.init.zeros_(self.item_bias.weight)
        nn.init.normal_(self.user_factors.weight, std=init_std)
        nn.init.normal_(self.item_factors.weight, std=init_std)
        self.register_buffer("global_mean", torch.zeros(()))  # mu

    def set_data_stats(self, rating_range, rating_mean) -> None:
        super().set_data_stats(rating_range, rating_mean)
        self.global_mean.fill_(rating_mean)

    def forward(self, user: torch.Tensor, item: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b_u, b_i = self.user_bias(user).squeeze(-1), self.item_bias(item).squeeze(-1)  # (B,), (B,)
        p, q = self.user_factors(user), self.item_factors(item)  # (B, k), (B, k)
        pred = self.global_mean + b_u + b_i + (p * q).sum(-1)  # (B,)
        penalty = self.hparams.reg * ((p ** 2).sum(-1) + (q ** 2).sum(-1)) + self.hparams.bias_reg * (b_u ** 2 + b_i ** 2)
        return pred, penalty  # (B,), (B,)

    def predict_ratings(self, batch: dict) -> torch.Tensor:
        return self(batch["user"], batch["item"])[0]

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        pred, penalty = self(batch["user"], batch["item"])
        squared = (pred - batch["rating"]) ** 2  # (B,)
        self.log(TRAIN_LOSS, squared.mean(), prog_bar=True, batch_size=len(pred))
        per_rating = squared + penalty  # (B,)
        # sgd: d/dp of (err^2 + reg |p|^2) / 2 is Surprise's step -(err q - reg p)
        if self.hparams.optimizer == "sgd":  # a sum over the global batch: DDP averages the ranks' gradients,
            return per_rating.sum() / 2 * self.trainer.world_size  # so each rank's part counts world_size times
        return per_rating.mean()

    def configure_optimizers(self):
        if self.hparams.optimizer == "sgd":
            return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)
        return torch.optim.SparseAdam(self.parameters(), lr=self.hparams.lr)
