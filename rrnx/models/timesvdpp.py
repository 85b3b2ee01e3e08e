"""TimeSVD++: collaborative filtering with temporal dynamics (Koren, KDD 2009), the paper's
"T-SVD" baseline (Wu et al., WSDM 2017, Section 4.1 and Table 2).

    r_hat(u, i, t) = mu + b_u + alpha_u dev_u(t) + b_{u,t}                    time-changing user bias
                   + (b_i + b_{i,Bin(t)}) (c_u + c_{u,t})                       item bias, user scale
                   + q_i^T (p_u + alpha_pu dev_u(t) + |N(u)|^{-1/2} sum_{j in N(u)} y_j)
    dev_u(t) = sign(t - t_u) |t - t_u|^beta                                      t in days

t_u is the user's mean training rating day; Bin(t) splits the training span into `n_bins` equal
bins; N(u) is the set of items u rated in *training* (implicit feedback). The day-specific terms
b_{u,t} and c_{u,t} exist only for (user, day) pairs seen in training and are stored compactly:
a sorted key array of those pairs plus one row per pair. A date after training has no
day-specific terms (zero), falls into the last item bin, and extrapolates dev_u(t); see
docs/models.md ("TimeSVD++ on future dates"), since forward prediction is exactly that case.

Training minimises the squared error plus L2 on every parameter a rating touches (Koren's SGD
objective), in mini-batches with SparseAdam instead of per-rating SGD. The data-dependent parts
(t_u, the (user, day) index, N(u)) are built by `attach(data)` from the training split, which
rrnx's runner calls before training; N(u) is not saved in checkpoints, `attach(data)` restores it.

`bias_reg_user` / `bias_reg_item` add Koren's *baseline* penalty lambda sum_u b_u^2 + lambda sum_i
b_i^2 (KDD 2008, eq. 2; rrnx's `bias` model), once per user and item rather than per rating:
each rating carries lambda / |R(u)| of it. A per-rating L2 shrinks every user's bias by the same
factor; this one shrinks a user with three ratings far more than one with three hundred, which is
what sparse data needs (MovieTweetings: 5.7 training ratings per user). 0 (default) leaves it out.
`baseline_init: true` starts b_u and b_i at the exact minimiser of that baseline objective (ten
sweeps of alternating least squares, as the `bias` model; with bias_reg_user/item, or Surprise's
15/10 when those are 0), so training starts from the bias model's predictions instead of the mean.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from rrnx.models.base import TRAIN_LOSS, RatingModel
from rrnx.models.sparse import csr_positions

DAY = 86_400
DAY_KEY_STRIDE = 1 << 20  # (user, day) key = user * stride + day; days since 1970 stay below 2**20 until 4840


def scalar_table(n: int, init: float = 0.0) -> nn.Embedding:
    table = nn.Embedding(n, 1, sparse=True)  # (n, 1)
    nn.init.constant_(table.weight, init)
    return table


class TimeSVDpp(RatingModel):
    """TimeSVD++ (Koren, KDD 2009): time-dependent biases and user factors with implicit feedback.

    Args:
        dim: factor size k (the paper's grid: 20, 40, 80, 160).
        reg: L2 weight per rating on the static terms it touches (the paper's grid: 1 .. 1e-5).
        time_reg: L2 weight on the time-dependent terms alpha_u, alpha_pu, b_{u,t}, c_{u,t} and
            b_{i,Bin(t)}; larger than `reg` (as in Koren's settings) so that they do not soak up the
            static effects a future date relies on: a future date has no day terms, its bin is the
            last, most thinly observed one, and dev_u(t) extrapolates the drifts beyond the data.
        lr: learning rate of SparseAdam.
        n_bins: number of item-bias time bins over the training span (Koren: 30).
        beta: exponent of dev_u(t) (Koren: 0.4).
        init_std: standard deviation of the Gaussian initialisation of p_u, q_i and y_j.
        bias_reg: per-rating L2 weight on b_u and b_i (None: `reg`, as Koren and the paper).
        bias_reg_user: per-user penalty on b_u^2 (the `bias` model's reg_user), added to `bias_reg`'s per-rating L2.
        bias_reg_item: per-item penalty on b_i^2 (the `bias` model's reg_item), added to `bias_reg`'s per-rating L2.
        baseline_init: start b_u, b_i at the baseline predictors' least-squares solution (see above).
    """

    # `rrnx compare --tune`'s search space (rrnx/sweep/spec.py's format)
    search_space = {"model.dim": [10, 20, 40, 80],
                    "model.reg": {"low": 1.0e-3, "high": 1.0, "log": True},
                    "model.time_reg": {"low": 0.1, "high": 100.0, "log": True},
                    "model.lr": {"low": 1.0e-3, "high": 5.0e-2, "log": True},
                    "model.baseline_init": [False, True],
                    "model.bias_reg_user": {"low": 1.0, "high": 100.0, "log": True},
                    "model.bias_reg_item": {"low": 1.0, "high": 100.0, "log": True}}

    def __init__(self, n_users: int, n_items: int, dim: int = 40, reg: float = 0.1, time_reg: float = 10.0,
                 lr: float = 1e-2, n_bins: int = 30, beta: float = 0.4, init_std: float = 0.05,
                 bias_reg: float | None = None, bias_reg_user: float = 0.0, bias_reg_item: float = 0.0,
                 baseline_init: bool = False):
        super().__init__()
        self.save_hyperparameters()
        self.check_hparams(positive=("dim", "lr", "n_bins"), non_negative=("reg", "time_reg", "beta", "init_std",
                                                                           "bias_reg", "bias_reg_user", "bias_reg_item"))
        self.user_bias = scalar_table(n_users)  # b_u (U, 1)
        self.user_drift = scalar_table(n_users)  # alpha_u (U, 1)
        self.user_scale = scalar_table(n_users, 1.0)  # c_u (U, 1)
        self.item_bias = scalar_table(n_items)  # b_i (I, 1)
        self.item_bin_bias = scalar_table(n_items * n_bins)  # b_{i,Bin} (I * n_bins, 1), row i * n_bins + bin
        self.user_factors = nn.Embedding(n_users, dim, sparse=True)  # p_u (U, k)
        self.user_factor_drift = nn.Embedding(n_users, dim, sparse=True)  # alpha_pu (U, k)
        self.item_factors = nn.Embedding(n_items, dim, sparse=True)  # q_i (I, k)
        self.implicit_factors = nn.Embedding(n_items, dim, sparse=True)  # y_j (I, k)
        for table, std in ((self.user_factors, init_std), (self.item_factors, init_std),
                           (self.implicit_factors, init_std), (self.user_factor_drift, 0.0)):
            nn.init.normal_(table.weight, std=std) if std else nn.init.zeros_(table.weight)
        self.register_buffer("global_mean", torch.zeros(()))  # mu
        self.register_buffer("user_mean_day", torch.zeros(n_users))  # t_u (U,)
        self.register_buffer("day_span", torch.zeros(2))  # first and last training day (bins)
        self._make_day_terms(0)
        # N(u) as CSR over users: training data, rebuilt by attach(), not stored in checkpoints
        self.register_buffer("implicit_offsets", torch.zeros(0, dtype=torch.long), persistent=False)
        self.register_buffer("implicit_items", torch.zeros(0, dtype=torch.long), persistent=False)
        # 1 / training ratings per user and item, for the per-entity bias penalty (training data, as N(u))
        self.register_buffer("inverse_user_count", torch.zeros(0), persistent=False)
        self.register_buffer("inverse_item_count", torch.zeros(0), persistent=False)

    def _make_day_terms(self, n_user_days: int) -> None:
        self.register_buffer("user_day_keys", torch.zeros(n_user_days, dtype=torch.long))  # (D,) sorted
        self.user_day_bias = scalar_table(max(n_user_days, 1))  # b_{u,t} (D, 1)
        self.user_day_scale = scalar_table(max(n_user_days, 1))  # c_{u,t} (D, 1)

    # ---------------------------------------------------------------- data-dependent structure
    def set_data_stats(self, rating_range, rating_mean) -> None:
        super().set_data_stats(rating_range, rating_mean)
        self.global_mean.fill_(rating_mean)

    def attach(self, data) -> None:
        """Reads N(u) from the training split; on a fresh model also t_u, the bins and the (user, day) index."""
        if len(self.implicit_offsets) == 0:
            matrix = data.rating_matrix("user")  # CSR (U, I), training ratings only
            self.implicit_offsets = matrix.crow_indices().to(self.global_mean.device)  # (U + 1,)
            self.implicit_items = matrix.col_indices().to(self.global_mean.device)  # (nnz,)
        if len(self.inverse_user_count) == 0:
            train = data.split.train
            for name, column, n in (("inverse_user_count", "user_idx", self.hparams.n_users),
                                    ("inverse_item_count", "item_idx", self.hparams.n_items)):
                counts = np.bincount(train[column].to_numpy(), minlength=n).clip(min=1)
                setattr(self, name, torch.as_tensor(1.0 / counts, dtype=torch.float32).to(self.global_mean.device))
        if len(self.user_day_keys) == 0:  # a fresh model, not one loaded from a checkpoint
            self._fit_time_structure(data.split.train)
            if self.hparams.baseline_init:
                self._init_baseline(data.split.train)

    def _fit_time_structure(self, train) -> None:
        user = train["user_idx"].to_numpy()
        day = train["timestamp"].to_numpy() // DAY  # (n,) integer days
        counts = np.bincount(user, minlength=self.hparams.n_users)
        mean_day = np.bincount(user, weights=day, minlength=self.hparams.n_users) / np.maximum(counts, 1)
        self.user_mean_day.copy_(torch.as_tensor(mean_day, dtype=torch.float32))
        self.day_span.copy_(torch.tensor([day.min(), day.max()], dtype=torch.float32))
        keys = np.unique(user.astype(np.int64) * DAY_KEY_STRIDE + day)  # sorted (D,)
        self._make_day_terms(len(keys))
        self.user_day_keys.copy_(torch.as_tensor(keys))

    @torch.no_grad()
    def _init_baseline(self, train) -> None:
        from rrnx.models.bias import Bias

        user = torch.as_tensor(train["user_idx"].to_numpy())
        item = torch.as_tensor(train["item_idx"].to_numpy())
        residual = torch.as_tensor(train["rating"].to_numpy(np.float32)) - self.global_mean  # (n,)
        reg_user, reg_item = self.hparams.bias_reg_user or 15.0, self.hparams.bias_reg_item or 10.0
        b_u, b_i = torch.zeros(self.hparams.n_users), torch.zeros(self.hparams.n_items)
        for _ in range(10):
            b_i = Bias._solve(item, residual - b_u[user], len(b_i), reg_item)
            b_u = Bias._solve(user, residual - b_i[item], len(b_u), reg_user)
        self.user_bias.weight.copy_(b_u[:, None])
        self.item_bias.weight.copy_(b_i[:, None])

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """The number of (user, day) pairs is known only from data: size the day terms to the checkpoint's."""
        n_user_days = checkpoint["state_dict"]["user_day_keys"].shape[0]
        if n_user_days != len(self.user_day_keys):
            self._make_day_terms(n_user_days)

    # ---------------------------------------------------------------- the model
    def deviation(self, user: torch.Tensor, day: torch.Tensor) -> torch.Tensor:
        gap = day - self.user_mean_day[user]  # (B,) days from the user's mean training day
        return torch.sign(gap) * gap.abs().pow(self.hparams.beta)  # (B,)

    def item_bin(self, item: torch.Tensor, day: torch.Tensor) -> torch.Tensor:
        first, last = self.day_span
        bin_days = (last - first + 1) / self.hparams.n_bins
        time_bin = torch.div(day - first, bin_days, rounding_mode="floor").long()  # (B,)
        return item * self.hparams.n_bins + time_bin.clamp(0, self.hparams.n_bins - 1)  # (B,) row of b_{i,Bin}

    def user_day_row(self, user: torch.Tensor, day: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        key = user * DAY_KEY_STRIDE + day.long()  # (B,)
        row = torch.searchsorted(self.user_day_keys, key).clamp(max=max(len(self.user_day_keys) - 1, 0))  # (B,)
        seen = self.user_day_keys[row] == key if len(self.user_day_keys) else torch.zeros_like(key, dtype=torch.bool)
        return row, seen.float()  # (B,), (B,) 1 where (user, day) was seen in training

    def implicit(self, user: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """|N(u)|^{-1/2} sum_{j in N(u)} y_j for each batch user, and the y_j rows it used (for L2)."""
        if len(self.implicit_offsets) == 0:
            raise RuntimeError("TimeSVDpp needs its training data: call model.attach(data) first "
                               "(rrnx's runner and predict_at do)")
        users, inverse = torch.unique(user, return_inverse=True)  # (Bu,), (B,)
        owner, position = csr_positions(self.implicit_offsets, users)  # (N,), (N,)
        y = self.implicit_factors(self.implicit_items[position])  # (N, k)
        counts = (self.implicit_offsets[users + 1] - self.implicit_offsets[users]).clamp(min=1)  # (Bu,)
        sums = torch.zeros(len(users), y.shape[1], dtype=y.dtype, device=y.device).index_add(0, owner, y)  # (Bu, k)
        return (sums * counts.float().rsqrt()[:, None])[inverse], y  # (B, k), (N, k)

    def forward(self, user: torch.Tensor, item: torch.Tensor, timestamp: torch.Tensor) -> tuple[torch.Tensor, dict]:
        day = torch.div(timestamp, DAY, rounding_mode="floor").float()  # (B,)
        dev = self.deviation(user, day)  # (B,)
        day_row, seen = self.user_day_row(user, day)  # (B,), (B,)
        terms = {
            "b_u": self.user_bias(user).squeeze(-1), "alpha_u": self.user_drift(user).squeeze(-1),
            "b_ut": self.user_day_bias(day_row).squeeze(-1) * seen, "c_ut": self.user_day_scale(day_row).squeeze(-1) * seen,
            "b_i": self.item_bias(item).squeeze(-1), "b_ibin": self.item_bin_bias(self.item_bin(item, day)).squeeze(-1),
            "c_u": self.user_scale(user).squeeze(-1),  # all (B,)
            "p_u": self.user_factors(user), "alpha_pu": self.user_factor_drift(user), "q_i": self.item_factors(item),
        }  # factors (B, k)
        implicit, terms["y_j"] = self.implicit(user)  # (B, k), (N, k)
        taste = terms["p_u"] + terms["alpha_pu"] * dev[:, None] + implicit  # (B, k)
        pred = (self.global_mean + terms["b_u"] + terms["alpha_u"] * dev + terms["b_ut"]
                + (terms["b_i"] + terms["b_ibin"]) * (terms["c_u"] + terms["c_ut"])
                + (terms["q_i"] * taste).sum(-1))  # (B,)
        return pred, terms

    def predict_ratings(self, batch: dict) -> torch.Tensor:
        return self(batch["user"], batch["item"], batch["timestamp"])[0]

    def penalty(self, terms: dict) -> torch.Tensor:
        """Koren's per-rating L2: every touched parameter, c_u pulled towards 1, time terms by time_reg."""
        hp = self.hparams
        static = ((terms["c_u"] - 1) ** 2 + (terms["p_u"] ** 2).sum(-1) + (terms["q_i"] ** 2).sum(-1))  # (B,)
        bias_reg = hp.reg if hp.bias_reg is None else hp.bias_reg
        biases = terms["b_u"] ** 2 + terms["b_i"] ** 2  # (B,)
        timed = (terms["alpha_u"] ** 2 + (terms["alpha_pu"] ** 2).sum(-1) + terms["b_ut"] ** 2
                 + terms["c_ut"] ** 2 + terms["b_ibin"] ** 2)  # (B,)
        return (hp.reg * (static.mean() + (terms["y_j"] ** 2).sum(-1).mean()) + bias_reg * biases.mean()
                + hp.time_reg * timed.mean())

    def baseline_penalty(self, user: torch.Tensor, item: torch.Tensor, terms: dict) -> torch.Tensor:
        """Each rating's share of bias_reg_user b_u^2 + bias_reg_item b_i^2: lambda / |R(u)|, lambda / |R(i)|."""
        hp = self.hparams
        return (hp.bias_reg_user * self.inverse_user_count[user] * terms["b_u"] ** 2
                + hp.bias_reg_item * self.inverse_item_count[item] * terms["b_i"] ** 2).mean()

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        pred, terms = self(batch["user"], batch["item"], batch["timestamp"])
        mse = ((pred - batch["rating"]) ** 2).mean()
        self.log(TRAIN_LOSS, mse, prog_bar=True, batch_size=len(pred))
        loss = mse + self.penalty(terms)
        if self.hparams.bias_reg_user or self.hparams.bias_reg_item:
            loss = loss + self.baseline_penalty(batch["user"], batch["item"], terms)
        return loss

    def configure_optimizers(self):
        return torch.optim.SparseAdam(self.parameters(), lr=self.hparams.lr)
