"""PMF: Probabilistic Matrix Factorization (Salakhutdinov & Mnih, NIPS 2008).

r_hat_ij = <u_i, m_j> (+ global mean when `center`), trained on the L2-regularized squared
error  sum (r_ij - r_hat_ij)^2 + lambda (||u_i||^2 + ||m_j||^2)  over training ratings, the
MAP objective of PMF with spherical Gaussian priors. The paper's grid (Section 4.1):
lambda in {1, 1e-1, ..., 1e-5}, k in {20, 40, 80, 160} (sweeps/pmf-grid.yaml).
RRN's stationary part (eq. 7's <u_i, m_j>) is this model, and RRN pre-trains it (Section 4.1).

`biases: true` adds user and item biases, r_hat_ij = mu + b_i + b_j + <u_i, m_j>, with the same
per-rating L2 (Koren, Bell & Volinsky 2009; `biasedmf` is that model with Surprise's optimiser).
The default, false, is PMF as the paper runs it; recipes use whichever wins on validation.
"""

from __future__ import annotations

import torch
from torch import nn

from rrnx.models.base import TRAIN_LOSS, RatingModel


class PMF(RatingModel):
    """PMF (Salakhutdinov & Mnih, NIPS 2008): r_hat = <u_i, m_j> (+ mean, + biases).

    Args:
        dim: factor size k.
        reg: lambda, the L2 weight per observed rating (on the factors the rating touches).
        lr: learning rate of SparseAdam.
        center: predict <u_i, m_j> + the global training mean (False: plain <u_i, m_j>, as LIBPMF).
        init_std: standard deviation of the Gaussian initialisation of the factors.
        biases: add per-user and per-item biases (L2 weight `reg`, like the factors); not in PMF.
    """

    # `rrnx compare --tune`'s search space (rrnx/sweep/spec.py's format)
    search_space = {"model.dim": [10, 20, 40, 80, 160],
                    "model.reg": {"low": 1.0e-3, "high": 1.0, "log": True},
                    "model.lr": {"low": 1.0e-3, "high": 5.0e-2, "log": True},
                    "model.biases": [False, True]}

    def __init__(self, n_users: int, n_items: int, dim: int = 40, reg: float = 1e-2, lr: float = 1e-2,
                 center: bool = True, init_std: float = 0.1, biases: bool = False):
        super().__init__()
        self.save_hyperparameters()
        self.check_hparams(positive=("dim", "lr"), non_negative=("reg", "init_std"))
        self.user_factors = nn.Embedding(n_users, dim, sparse=True)  # (U, k)
        self.item_factors = nn.Embedding(n_items, dim, sparse=True)  # (I, k)
        nn.init.normal_(self.user_factors.weight, std=init_std)
        nn.init.normal_(self.item_factors.weight, std=init_std)
        if biases:
            self.user_bias = nn.Embedding(n_users, 1, sparse=True)  # b_i (U, 1)
            self.item_bias = nn.Embedding(n_items, 1, sparse=True)  # b_j (I, 1)
            nn.init.zeros_(self.user_bias.weight)
            nn.init.zeros_(self.item_bias.weight)
        self.register_buffer("global_mean", torch.zeros(()))

    def set_data_stats(self, rating_range, rating_mean) -> None:
        super().set_data_stats(rating_range, rating_mean)
        self.global_mean.fill_(rating_mean if self.hparams.center else 0.0)

    def forward(self, user: torch.Tensor, item: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        u = self.user_factors(user)  # (B, k)
        m = self.item_factors(item)  # (B, k)
        pred = (u * m).sum(-1) + self.global_mean  # (B,)
        if self.hparams.biases:
            b_u, b_i = self.user_bias(user), self.item_bias(item)  # (B, 1), (B, 1)
            pred = pred + b_u.squeeze(-1) + b_i.squeeze(-1)
            u, m = torch.cat([u, b_u], -1), torch.cat([m, b_i], -1)  # the biases share the factors' L2
        return pred, u, m

    def predict_ratings(self, batch: dict) -> torch.Tensor:
        return self(batch["user"], batch["item"])[0]

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        pred, u, m = self(batch["user"], batch["item"])
        mse = ((pred - batch["rating"]) ** 2).mean()
        loss = mse + self.hparams.reg * ((u ** 2).sum(-1) + (m ** 2).sum(-1)).mean()
        self.log(TRAIN_LOSS, mse, prog_bar=True, batch_size=len(pred))
        return loss

    def configure_optimizers(self):
        return torch.optim.SparseAdam(self.parameters(), lr=self.hparams.lr)
