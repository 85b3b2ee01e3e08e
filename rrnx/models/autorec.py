"""AutoRec: autoencoders meet collaborative filtering (Sedhain, Menon, Sanner & Xie, WWW 2015),
the paper's "I-AR" and "U-AR" baselines (Wu et al., WSDM 2017, Section 4.1 and Table 2).

I-AutoRec encodes each item's vector of user ratings r^(i) in R^U, U-AutoRec each user's vector
of item ratings r^(u) in R^I; one implementation serves both (`side`):

    h(r) = W f(V r + mu) + b,   f = sigmoid, identity decoder, k = 500 hidden units   (AutoRec eq. 2)
    min  sum_r ||r - h(r)||^2_observed + lambda/2 (||W||^2 + ||V||^2)                (AutoRec eq. 3)

The loss sees observed entries only. We minimise eq. 3 divided by the number of training
ratings N (a mean squared error plus lambda/(2N) times the weight norms), with Adam on mini-batches
of rows instead of the paper's full-batch L-BFGS/Rprop; the norm term's gradient, lambda/N times
W and V, is applied as Adam's (coupled) weight decay on W and V only, which is the same update
without a pass over every weight in the loss (fused Adam where torch supports it: 5x faster).
Inputs are sparse: a batch's encoding gathers V's columns for its observed entries, and decoding
evaluates only the outputs that are scored, so no dense users x items matrix is ever built.

At prediction time the encoder sees the row's TRAINING ratings only (data.rating_matrix); the
validation and test ratings are never an input. A row without training ratings (impossible under
rrnx's split, possible through predict_at) is predicted as the global training mean. rrnx then
clamps every prediction to the training rating range.
"""

from __future__ import annotations

import torch
from torch import nn

from rrnx.data.batches import Batches, row_batches
from rrnx.models.base import TRAIN_LOSS, RatingModel
from rrnx.models.sparse import csr_positions

SIDES = ("item", "user")


class AutoRec(RatingModel):
    """Shared implementation; use IAutoRec (`autorec-i`) or UAutoRec (`autorec-u`).

    Args:
        hidden: k, the hidden layer size (the paper and AutoRec: 500).
        l2: lambda, the weight-decay strength of AutoRec's eq. 3 (on the full-data objective).
        lr: Adam learning rate.
        rows_per_batch: rows (items for I-AutoRec, users for U-AutoRec) per mini-batch.
        init_std: standard deviation of the Gaussian initialisation of V and W.
    """

    side: str = "item"  # the entity whose rating vector is encoded
    # `rrnx compare --tune`'s search space (rrnx/sweep/spec.py's format)
    search_space = {"model.hidden": [100, 200, 500],
                    "model.l2": {"low": 1.0, "high": 1000.0, "log": True},
                    "model.lr": {"low": 3.0e-4, "high": 1.0e-2, "log": True}}

    def __init__(self, n_users: int, n_items: int, hidden: int = 500, l2: float = 300.0, lr: float = 3e-3,
                 rows_per_batch: int = 128, init_std: float = 0.03):
        super().__init__()
        self.save_hyperparameters()
        self.check_hparams(positive=("hidden", "lr", "rows_per_batch"), non_negative=("l2", "init_std"))
        self.n_rows, self.n_inputs = (n_items, n_users) if self.side == "item" else (n_users, n_items)
        self.encoder = nn.Parameter(torch.randn(self.n_inputs, hidden) * init_std)  # V^T (N, k)
        self.encoder_bias = nn.Parameter(torch.zeros(hidden))  # mu (k,)
        self.decoder = nn.Parameter(torch.randn(self.n_inputs, hidden) * init_std)  # W (N, k)
        self.decoder_bias = nn.Parameter(torch.zeros(self.n_inputs))  # b (N,)
        self.register_buffer("global_mean", torch.zeros(()))
        # training matrix of `side` as CSR: training data, rebuilt by attach(), not stored in checkpoints
        for name, dtype in (("row_offsets", torch.long), ("row_inputs", torch.long), ("row_values", torch.float32)):
            self.register_buffer(name, torch.zeros(0, dtype=dtype), persistent=False)

    def set_data_stats(self, rating_range, rating_mean) -> None:
        super().set_data_stats(rating_range, rating_mean)
        self.global_mean.fill_(rating_mean)
        with torch.no_grad():
            self.decoder_bias.fill_(rating_mean)  # start at the mean: 10 epochs go to the structure

    def attach(self, data) -> None:
        """Reads the training rating vectors (rows of data.rating_matrix(side)), once."""
        if len(self.row_offsets):
            return
        matrix = data.rating_matrix(self.side)  # CSR (n_rows, n_inputs), training ratings only
        device = self.global_mean.device
        self.row_offsets = matrix.crow_indices().to(device)  # (n_rows + 1,)
        self.row_inputs = matrix.col_indices().to(device)  # (nnz,)
        self.row_values = matrix.values().float().to(device)  # (nnz,)

    def train_loader(self, data) -> Batches:
        return row_batches(self.n_rows, self.hparams.rows_per_batch, data.hparams.seed)

    # ---------------------------------------------------------------- the model
    def encode(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """f(V r + mu) of each row's training vector; also the row's observed (owner, input, value) entries."""
        if len(self.row_offsets) == 0:
            raise RuntimeError(f"{type(self).__name__} needs its training data: call model.attach(data) first "
                               "(rrnx's runner and predict_at do)")
        owner, position = csr_positions(self.row_offsets, rows)  # (N,), (N,)
        inputs, values = self.row_inputs[position], self.row_values[position]  # (N,), (N,)
        weighted = values[:, None] * self.encoder[inputs]  # (N, k)
        pre = torch.zeros(len(rows), self.hparams.hidden, dtype=weighted.dtype, device=weighted.device)  # (R, k)
        code = torch.sigmoid(pre.index_add(0, owner, weighted) + self.encoder_bias)  # (R, k)
        return code, owner, inputs, values

    def decode_at(self, code: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        """h(r)[inputs]: only the decoder outputs that are scored. code (M, k), inputs (M,) -> (M,)."""
        return (self.decoder[inputs] * code).sum(-1) + self.decoder_bias[inputs]

    def predict_ratings(self, batch: dict) -> torch.Tensor:
        rows, inputs = (batch["item"], batch["user"]) if self.side == "item" else (batch["user"], batch["item"])
        unique_rows, inverse = torch.unique(rows, return_inverse=True)  # (R,), (B,)
        code = self.encode(unique_rows)[0]  # (R, k)
        pred = self.decode_at(code[inverse], inputs)  # (B,)
        has_training = self.row_offsets[rows + 1] > self.row_offsets[rows]  # (B,)
        return torch.where(has_training, pred, self.global_mean)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        code, owner, inputs, values = self.encode(batch["rows"])  # (R, k), (N,), (N,), (N,)
        pred = self.decode_at(code[owner], inputs)  # (N,) reconstructions of the observed entries
        mse = ((pred - values) ** 2).mean()  # + lambda/(2N) ||W, V||^2 through the optimizer's weight decay
        self.log(TRAIN_LOSS, mse, prog_bar=True, batch_size=len(values))
        return mse

    def configure_optimizers(self):
        if len(self.row_values) == 0:
            raise RuntimeError(f"{type(self).__name__}: attach(data) before configure_optimizers (rrnx's runner does)")
        decay = self.hparams.l2 / len(self.row_values)  # gradient of lambda/(2N) ||theta||^2 is lambda/N theta
        groups = [{"params": [self.encoder, self.decoder], "weight_decay": decay},
                  {"params": [self.encoder_bias, self.decoder_bias], "weight_decay": 0.0}]
        return adam(groups, self.hparams.lr)


def adam(groups, lr: float) -> torch.optim.Adam:
    """Fused Adam (one kernel over all weights) where this torch supports it on the device, else foreach."""
    try:
        return torch.optim.Adam(groups, lr=lr, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.Adam(groups, lr=lr)


class IAutoRec(AutoRec):
    """I-AutoRec: encodes each item's vector of user ratings (Sedhain et al., 2015). See AutoRec for Args."""

    side = "item"


class UAutoRec(AutoRec):
    """U-AutoRec: encodes each user's vector of item ratings (Sedhain et al., 2015). See AutoRec for Args."""

    side = "user"
