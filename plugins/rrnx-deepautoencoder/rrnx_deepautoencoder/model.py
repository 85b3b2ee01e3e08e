"""Deep autoencoder for collaborative filtering (Kuchaiev & Ginsburg, "Training Deep AutoEncoders
for Collaborative Filtering", arXiv:1708.01715, 2017), an rrnx model plugin.

User-based: each user's vector of item ratings x in R^I (0 = unrated) is encoded and decoded by

    encoder  I -> 512 -> 512 -> 1024   SELU after every layer          (the paper's best Netflix model)
    code     dropout(p = 0.8)                                           (high dropout on the code layer)
    decoder  1024 -> 512 -> 512 -> I   SELU, except a linear output layer

trained on the masked MSE (MMSE: error on the user's observed ratings only) and with dense
re-feeding: after the step on x, y = f(x) is fed back as a dense example with itself as target,
and a second step is taken on ||f(y) - y||^2 over all items. Adam replaces the paper's SGD with
momentum so that rrnx's ten epochs suffice.

Uses only rrnx's public plugin contract (docs/plugins.md): subclass RatingModel, take
n_users/n_items plus typed hyperparameters, read the training matrix from the data's
rating_matrix("user") in attach(data), feed rows through train_loader(data), and
predict_ratings(batch) -> (B,); with rrnx's public helpers row_batches and csr_positions.
At prediction time a user's code is computed from their TRAINING ratings only.
"""

from __future__ import annotations

import torch
from torch import nn

from rrnx.data.batches import Batches, row_batches
from rrnx.models.base import TRAIN_LOSS, RatingModel
from rrnx.models.sparse import csr_positions


def selu_stack(sizes: list[int]) -> nn.Sequential:
    layers = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(n_in, n_out), nn.SELU()]
    return nn.Sequential(*layers)


class DeepAutoencoder(RatingModel):
    """Args:
        layers: encoder layer sizes; the decoder mirrors them (Kuchaiev & Ginsburg: 512, 512, 1024).
        dropout: dropout probability on the code layer (the paper: 0.8).
        lr: Adam learning rate.
        weight_decay: Adam weight decay (the paper uses none; dropout regularises).
        refeed: take the dense re-feeding step after each MMSE step.
        rows_per_batch: users per mini-batch.
    """

    def __init__(self, n_users: int, n_items: int, layers: tuple[int, ...] = (512, 512, 1024),
                 dropout: float = 0.8, lr: float = 3e-4, weight_decay: float = 0.0, refeed: bool = True,
                 rows_per_batch: int = 32):
        super().__init__()
        self.save_hyperparameters()
        self.automatic_optimization = False  # two steps per batch: MMSE, then dense re-feeding
        sizes = [n_items, *layers]
        self.encoder = selu_stack(sizes)  # (B, I) -> (B, code)
        self.code_dropout = nn.Dropout(dropout)
        self.decoder_body = selu_stack(sizes[::-1][:-1])  # (B, code) -> (B, layers[0])
        self.output = nn.Linear(layers[0], n_items)  # linear output layer, (B, layers[0]) -> (B, I)
        self.register_buffer("global_mean", torch.zeros(()))
        self.training_matrix = None  # CSR (U, I) of training ratings, from the DataModule

    def set_data_stats(self, rating_range, rating_mean) -> None:
        super().set_data_stats(rating_range, rating_mean)
        self.global_mean.fill_(rating_mean)
        with torch.no_grad():
            self.output.bias.fill_(rating_mean)  # start at the mean (0-10 scales too), not at 0

    def attach(self, data) -> None:  # rrnx calls it before training and in predict_at
        if self.training_matrix is None:
            self.training_matrix = data.rating_matrix("user")  # training ratings only, never val/test

    def train_loader(self, data) -> Batches:
        return row_batches(self.hparams.n_users, self.hparams.rows_per_batch, data.hparams.seed)  # {"rows": (B,)}

    def dense_rows(self, users: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The users' training rating vectors (B, I) and the mask of their observed entries (B, I)."""
        if self.training_matrix is None:
            raise RuntimeError("DeepAutoencoder needs its training data: call model.attach(data) first")
        crow, col, val = (self.training_matrix.crow_indices(), self.training_matrix.col_indices(),
                          self.training_matrix.values())
        owner, position = csr_positions(crow, users)  # (N,) batch row and CSR position of each entry
        x = torch.zeros(len(users), self.hparams.n_items, device=self.global_mean.device)  # (B, I)
        observed = torch.zeros_like(x, dtype=torch.bool)  # (B, I)
        x[owner, col[position]] = val[position].to(x)
        observed[owner, col[position]] = True
        return x, observed

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder_body(self.code_dropout(self.encoder(x)))  # (B, layers[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output(self.hidden(x))  # (B, I)

    def predict_ratings(self, batch: dict) -> torch.Tensor:
        users, inverse = torch.unique(batch["user"], return_inverse=True)  # (Bu,), (B,)
        h = self.hidden(self.dense_rows(users)[0])[inverse]  # (B, layers[0])
        item = batch["item"]  # (B,)
        return (self.output.weight[item] * h).sum(-1) + self.output.bias[item]  # (B,) only the scored outputs

    def training_step(self, batch: dict, batch_idx: int) -> None:
        optimizer = self.optimizers()
        x, observed = self.dense_rows(batch["rows"])  # (B, I), (B, I)
        y = self(x)  # (B, I)
        mmse = ((y - x) ** 2 * observed).sum() / observed.sum().clamp(min=1)
        optimizer.zero_grad()
        self.manual_backward(mmse)
        optimizer.step()
        if self.hparams.refeed:  # dense re-feeding: f(x) is a fully observed example of itself
            target = y.detach()  # (B, I)
            refeed_loss = ((self(target) - target) ** 2).mean()
            optimizer.zero_grad()
            self.manual_backward(refeed_loss)
            optimizer.step()
        self.log(TRAIN_LOSS, mmse, prog_bar=True, batch_size=len(x))

    def configure_optimizers(self):
        settings = {"lr": self.hparams.lr, "weight_decay": self.hparams.weight_decay}
        try:  # fused Adam: one kernel over all weights, several times faster on CPU where supported
            return torch.optim.Adam(self.parameters(), fused=True, **settings)
        except (RuntimeError, TypeError):
            return torch.optim.Adam(self.parameters(), **settings)
