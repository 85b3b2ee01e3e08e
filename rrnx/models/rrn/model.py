"""RRN: Recurrent Recommender Networks (Wu, Ahmed, Beutel, Smola, Jing; WSDM 2017).

Each user and each item has an LSTM over its active time steps (Section 3.1):
  eq. (5)  y_t = W_embed [x_t, 1_newbie, tau_t, tau_{t-1}]   x_t: sparse ratings of step t, never densified
  eq. (6)  u_t = LSTM(u_{t-1}, y_t)                           (eqs. 1-4: torch's LSTM cell)
and ratings are emitted from dynamic and stationary states (Section 3.2):
  eq. (7)  r_hat_ij|t = <W_user u_it + b_user, W_movie m_jt + b_movie> + <u_i, m_j>
Causality (Section 3.3): a rating in step t is predicted from states that consumed only the steps
before t, each side at its own granularity; validation/test ratings from the states extrapolated
over all training steps. Training (Section 3.4, eq. 8) alternates a user phase (user LSTM and user
stationary factors learn, item states frozen and cached) and an item phase; Adam for the networks,
SGD for the stationary factors, which start from a PMF pre-train (Section 4.1).
States, predict_at and Section 4.5's update without re-training (`advance`): states.py.
Layout and packing: sequences.py.
"""

from __future__ import annotations

import time
from typing import Literal

import torch
from torch import nn

from rrnx.distributed import all_reduce_sum_, broadcast_from_rank0_
from rrnx.errors import RrnxError
from rrnx.models.base import TRAIN_LOSS, RatingModel
from rrnx.models.rrn.base_model import base_scores, build_base, side_base, train_base
from rrnx.models.rrn.lstm import LSTM_KERNELS, packed_lstm, resolve_kernel
from rrnx.models.rrn.sequences import (OTHER_SIDE, SIDES, Packing, PairDots, RatingBag, RowBatch, SideTensors,
                                       entity_ratings, gather, length_sorted_batches, pack, permute_rows,
                                       rating_bounded_parts, ratings_frame_arrays, sliced_ratings, take_rows,
                                       training_sides)
from rrnx.models.rrn.states import RRNStates

PHASE_SECONDS = {"user": "time/user_phase_s", "item": "time/item_phase_s"}
PRETRAIN_SECONDS = "time/pretrain_s"
BASE_VAL_RMSE = "base/val_rmse"
RATING_INPUTS = ("scaled", "raw")
INPUT_NORMS = ("sum", "sqrt", "mean")
STEP_STATS = (False, True, "mean", "residual")


class SideNetwork(nn.Module):
    """One side's dynamics: the input embedding of eq. (5), the LSTM of eq. (6) and the affine map
    of eq. (7) (W_user, b_user for users; W_movie, b_movie for items)."""

    def __init__(self, n_other: int, embed_dim: int, hidden: int, layers: int, dynamic_dim: int,
                 stats_dim: int = 0, dynamic_bias: bool = False, rating_embedding: bool = True,
                 forget_bias: float = 0.0, lstm_kernel: str = "auto", wallclock: bool = True):
        super().__init__()
        self.lstm_kernel = lstm_kernel  # how eq. (6) runs (lstm.py's packed_lstm); the weights are nn.LSTM's
        self.bag_into_grad = False  # set by RRN._backward_parts: RatingBag's gradient adds into .grad (sequences.py)
        self.wallclock = wallclock  # False: the context columns are [1_newbie] only (no tau_t, tau_{t-1})
        # W_embed's x_t columns (None: the LSTM reads only the context columns)
        self.embed_ratings = nn.EmbeddingBag(n_other, embed_dim, mode="sum") if rating_embedding else None
        # W_embed's [1_newbie, tau_t, tau_{t-1}] columns (+ the step statistics when RRN.step_stats)
        self.embed_context = nn.Linear((3 if wallclock else 1) + stats_dim, embed_dim)
        self.lstm = nn.LSTM(embed_dim, hidden, num_layers=layers)
        if forget_bias:  # a longer memory from the start (Jozefowicz et al. 2015); torch's gate order i, f, g, o
            with torch.no_grad():
                for name, bias in self.lstm.named_parameters():
                    if name.startswith("bias_ih"):
                        bias[hidden:2 * hidden] += forget_bias
        # W u_t + b of eq. (7), (D,); with dynamic_bias one more output: a scalar added to the rating
        self.project = nn.Linear(hidden, dynamic_dim + int(dynamic_bias))
        if rating_embedding:
            nn.init.normal_(self.embed_ratings.weight, std=0.1)
        nn.init.normal_(self.project.weight, std=0.01)  # start near the pre-train: dynamic part ~ b.b
        if dynamic_bias:
            nn.init.zeros_(self.project.bias[dynamic_dim:])  # the dynamic bias starts at 0

    def forward(self, side: SideTensors, batch: RowBatch, weights: torch.Tensor,
                stats: torch.Tensor | None = None,
                sliced_weights: torch.Tensor | None = None) -> tuple[torch.Tensor, Packing]:
        """Hidden state after each row of the batch, (R, H), in the LSTM's time-major packed order (local row
        r is at packing.packed_position[r]: the callers index it there instead of permuting it back);
        `stats` (R, 2): extra context columns; `sliced_weights` (N,): `weights` in batch.sliced's order, for
        RatingBag's backward."""
        if self.embed_ratings is not None:
            other = batch.other  # (N,)
            kernel, cell = resolve_kernel(self.lstm_kernel, other.device)
            if kernel == "fused" and not torch.is_grad_enabled():  # no backward: nothing for RatingBag to keep
                y = torch.nn.functional.embedding_bag(other, self.embed_ratings.weight, batch.bag_offsets, mode="sum",
                                                      per_sample_weights=weights)  # (R, E), RatingBag's forward
            elif kernel == "fused" and not weights.requires_grad:  # the compiled weight gradient (RatingBag)
                sliced = (None if sliced_weights is None
                          else (batch.sliced.other, batch.sliced.rating_row, sliced_weights))  # (N,) each
                y = RatingBag.apply(self.embed_ratings.weight, other, batch.bag_offsets, batch.rating_row,
                                    weights, cell, self.bag_into_grad, sliced)  # (R, E)
            else:
                y = self.embed_ratings(other, batch.bag_offsets, per_sample_weights=weights)  # (R, E)
        else:
            y = torch.zeros(len(batch.rows), self.embed_context.out_features, device=batch.rows.device)  # (R, E)
        # eq. (5), (R, E): + the context columns; the weight passed row-major so that its gradient is
        # features^T grad (3 x R x 40), not grad^T features, which MKL runs ~3x slower
        context = self.embed_context
        features = take_rows(side.features, batch.rows)  # (R, 3)
        if not self.wallclock:
            features = features[:, :1]  # (R, 1): 1_newbie
        if stats is not None:
            features = torch.cat([features, stats], 1)  # (R, 3 or 1 + 2)
        y = torch.addmm(y, features, context.weight.t().contiguous()).add_(context.bias)
        packing = pack(batch)
        y = permute_rows(y, packing.unpacked, packing.packed_position)  # (R, E) time-major
        return packed_lstm(self.lstm, y, packing.batch_sizes, self.lstm_kernel), packing  # eq. (6), (R, H) time-major

    def dynamic_before(self, batch: RowBatch, hidden: torch.Tensor,
                       packing: Packing) -> tuple[torch.Tensor, torch.Tensor]:
        """The projected states (R + 1, D): after each row in `hidden`'s packed order, then the initial state
        h_0 = 0 (W 0 + b = b); and the row of it BEFORE each local row (R,): where the entity's previous row
        was packed, or the initial state."""
        after = self.project(hidden)  # (R, D) packed order
        table = torch.cat([after, self.project.bias[None]])  # (R + 1, D): the last row is the initial state
        previous = torch.where(batch.position == 0, len(after), packing.packed_position.roll(1))  # (R,) same entity
        return table, previous


class RRN(RRNStates, RatingModel):
    """RRN (Wu et al., WSDM 2017): user and item LSTMs over time steps plus a stationary MF, eq. (7).

    Args:
        dim: size of the stationary factors u_i, m_j (20 for Netflix, 160 for IMDb in Section 4.1).
        reg: L2 weight on the stationary factors, per rating (as PMF's lambda).
        lr: learning rate of the PMF pre-train (SparseAdam, as PMF's lr).
        hidden: LSTM size (Section 4.1: 40).
        embed_dim: eq. (5) embedding size (Section 4.1: 40).
        dynamic_dim: size of W u_t + b, the dynamic states' projection in eq. (7) (Section 4.1: 20).
        layers: LSTM layers (Section 4.1: 1).
        net_lr: Adam's learning rate for the networks (embeddings, LSTMs, projections).
        net_weight_decay: Adam's weight decay for the networks.
        stationary_lr: SGD for the stationary factors in the joint phases; each entity's step is
            its mean gradient over its ratings in the batch (a diagonal preconditioner).
        pretrain_epochs: PMF epochs on the stationary factors before the joint epochs (Section 4.1).
        pmf_run: a finished `rrnx fit` PMF run on the same data to take the stationary factors
            from instead (its dim must equal `dim`); rrnx fit loads it and hands it over (use_pmf).
        user_batch_size: users per step of the user phase.
        item_batch_size: items per step of the item phase.
        rating_input: x_t's values: "raw" ratings, or "scaled" (divided by the scale's maximum).
        input_norm: W_embed x_t as a "sum" (eq. 5 as written), or divided by "sqrt" or "mean" of
            the step's rating count.
        global_mean: add the training mean to eq. (7) (False: eq. 7 as written; b_user and
            b_movie then start with <b_user, b_movie> = the mean).
        biases: add stationary per-user and per-item biases to eq. (7).
        init_std: standard deviation of the stationary factors' initialisation.
        eval_batch_rows: active steps per batch in the no-grad passes (caches, evaluation).
        eval_batch_ratings: at most about this many ratings per batch of the no-grad passes (at Netflix-full
            scale 200k item steps hold ~42M ratings; docs/benchmarks.md).
        part_ratings: a training batch with more ratings than this runs its forward and backward in
            consecutive parts of about this many ratings, each loss divided by the whole batch's rating
            count, so that their gradients add up to the batch's: the same step (eq. 8 over the batch), up
            to float summation order, in bounded memory (the item phase's heaviest batches hold millions of
            ratings at full scale). None: always the whole batch at once.
        step_stats: beyond the paper, off by default: append to each row's context columns of
            eq. (5) two statistics of the step's own ratings (like x_t): their mean (True or "mean":
            the mean rating minus the training mean; "residual": the mean of rating minus the
            stationary part's prediction, i.e. how far the step departs from the static model),
            divided by the scale's maximum, and log(1 + the step's rating count).
        dynamic_bias: beyond the paper, off by default: each side's projection gets one more
            output, a scalar added to the rating (eq. 7 + b_u(t) + b_j(t)), so that a level change of
            a user or an item (a trend, an award bump, a rating-scale shift) needs no coordination of
            the two D-dimensional states; it starts at 0.
        rating_embedding: False drops eq. (5)'s x_t term (the n_other x embed_dim embedding of who
            rated what): the LSTMs then read only the context columns (and the step statistics).
        forget_bias: added to the LSTMs' forget-gate bias at initialisation (0: torch's default; 1-3
            give the states a memory of several steps from the start, Jozefowicz et al. 2015).
        bias_reg: with `biases`, an L2 of bias_reg * b^2 per user and per item whatever its rating
            count (Koren's baseline predictors, Surprise's BaselineOnly: sparse users and items are
            shrunk harder); None: `reg` per rating, as the factors.
        stationary_epoch: epoch 0 trains nothing after the pre-train, so its validation RMSE is the
            stationary part's alone and best-epoch selection keeps it when the joint epochs do not
            beat it on validation (RRN is then never worse on validation than its own static model).
        pretrain_patience: stop the pre-train when the validation RMSE has not improved for this many
            epochs and keep its best epoch (0: exactly `pretrain_epochs` epochs, as before).
        wallclock: eq. (5)'s wallclock columns tau_t, tau_{t-1}: True (as written) on both sides, False on
            neither, "user" or "item" on that side only. A network that reads the absolute time can fit
            time patterns of the training period that do not carry over to the test period, which lies
            after every training time (docs/rrn.md measures it); the step's newbie flag stays.
        base: beyond the paper, off by default: another registered model trained first, alone, and then
            frozen, its prediction added to eq. (7) (base_model.py): a mapping of its name and settings,
            e.g. {name: timesvdpp, dim: 40, ...}; RRN's stationary part and networks then fit its
            residuals. Needs `biases` (the stationary pre-train is biased MF on the residuals).
        base_epochs: epochs of the base's training; its best validation epoch is kept.
        lstm_kernel: how the LSTMs run, same values and gradients (docs/rrn.md): "auto" (the fused C++
            cell on the CPU, built at first use, or the pure-torch one with a warning where it cannot be
            built; cuDNN's packed LSTM on CUDA), "fused" (also eq. (5)'s rating-embedding gradient in C++),
            "torch" (the pure-torch cell), "cudnn" (nn.LSTM on the PackedSequence; on the CPU quadratic in
            the sequence length).
    """

    # under DDP each rank trains its part of each phase's entities and the gradients are exchanged by
    # _part_backward (rrnx.distributed.SelfSyncingDDP): a phase leaves the other side's network unused,
    # which DistributedDataParallel's reducer does not allow
    syncs_own_updates = True

    # `rrnx compare --tune`: the stationary part's size, L2s and pre-train step, the networks' step, weight
    # decay (0.03 is what lets the joint epochs beat the stationary part on MovieTweetings; docs/rrn.md) and
    # size, what x_t and the wallclock feed them; per-entity bias L2 as the other biased models search theirs
    search_space = {"model.dim": [10, 20, 50, 100],
                    "model.reg": {"low": 0.03, "high": 1.0, "log": True},
                    "model.lr": {"low": 3.0e-3, "high": 3.0e-2, "log": True},
                    "model.net_lr": {"low": 1.0e-3, "high": 1.0e-2, "log": True},
                    "model.net_weight_decay": [0.0, 0.01, 0.03],
                    "model.stationary_lr": {"low": 0.01, "high": 0.3, "log": True},
                    "model.item_batch_size": [16, 64],
                    "model.rating_embedding": [False, True],
                    "model.hidden": [20, 40],
                    "model.embed_dim": [20, 40],
                    "model.wallclock": [True, False, "user"],
                    "model.bias_reg": {"low": 0.1, "high": 100.0, "log": True}}

    def __init__(self, n_users: int, n_items: int, dim: int = 20, reg: float = 0.01, lr: float = 0.01,
                 hidden: int = 40, embed_dim: int = 40, dynamic_dim: int = 20, layers: int = 1,
                 net_lr: float = 3e-3, net_weight_decay: float = 0.0, stationary_lr: float = 0.1,
                 pretrain_epochs: int = 5, pmf_run: str | None = None,
                 user_batch_size: int = 256, item_batch_size: int = 64,
                 rating_input: Literal["scaled", "raw"] = "scaled", input_norm: Literal["sum", "sqrt", "mean"] = "sqrt",
                 global_mean: bool = False, biases: bool = False, init_std: float = 0.1,
                 eval_batch_rows: int = 200_000, eval_batch_ratings: int = 8_000_000,
                 part_ratings: int | None = 1_000_000, step_stats: bool | Literal["mean", "residual"] = False,
                 dynamic_bias: bool = False,
                 pretrain_patience: int = 0, rating_embedding: bool = True, stationary_epoch: bool = False,
                 forget_bias: float = 0.0, bias_reg: float | None = None, lstm_kernel: str = "auto",
                 wallclock: bool | Literal["user", "item"] = True, base: dict | None = None,
                 base_epochs: int = 10):
        super().__init__()
        if rating_input not in RATING_INPUTS:
            raise ValueError(f"rating_input must be one of {', '.join(RATING_INPUTS)}, got {rating_input!r}")
        if input_norm not in INPUT_NORMS:
            raise ValueError(f"input_norm must be one of {', '.join(INPUT_NORMS)}, got {input_norm!r}")
        if step_stats not in STEP_STATS:
            raise ValueError(f"step_stats must be one of false, true, mean, residual; got {step_stats!r}")
        if wallclock not in (True, False, "user", "item"):
            raise ValueError(f"wallclock must be true, false, user or item; got {wallclock!r}")
        if lstm_kernel not in LSTM_KERNELS:
            raise ValueError(f"lstm_kernel must be one of {', '.join(LSTM_KERNELS)}, got {lstm_kernel!r}")
        minimum = {"user_batch_size": (user_batch_size, 1), "item_batch_size": (item_batch_size, 1),
                   "eval_batch_rows": (eval_batch_rows, 1), "eval_batch_ratings": (eval_batch_ratings, 1),
                   "part_ratings": (part_ratings, 1), "pretrain_epochs": (pretrain_epochs, 0),
                   "pretrain_patience": (pretrain_patience, 0), "base_epochs": (base_epochs, 1)}
        for name, (value, least) in minimum.items():
            if value is not None and value < least:  # a batch size of 0 was a ZeroDivisionError mid-run
                raise ValueError(f"{name} must be at least {least}, got {value}")
        if base is not None and not biases:
            raise ValueError("base needs biases: true (the stationary part's pre-train is then biased MF on "
                             "the base's residuals)")
        self.save_hyperparameters()
        self.check_hparams(positive=("dim", "lr", "hidden", "embed_dim", "dynamic_dim", "layers", "net_lr"),
                           non_negative=("reg", "net_weight_decay", "stationary_lr", "init_std", "bias_reg"))
        self.automatic_optimization = False
        self.base_model = build_base(base, n_users, n_items)  # None: eq. (7) alone
        def network(n_other: int, side: str) -> SideNetwork:
            clock = wallclock is True or wallclock == side  # eq. (5)'s tau_t, tau_{t-1} on this side
            return SideNetwork(n_other, embed_dim, hidden, layers, dynamic_dim, 2 if step_stats else 0,
                               dynamic_bias, rating_embedding, forget_bias, lstm_kernel, clock)
        self.user_net = network(n_items, "user")
        self.item_net = network(n_users, "item")
        self.user_factors = nn.Embedding(n_users, dim, sparse=True)  # u_i of eq. (7)
        self.item_factors = nn.Embedding(n_items, dim, sparse=True)  # m_j of eq. (7)
        nn.init.normal_(self.user_factors.weight, std=init_std)
        nn.init.normal_(self.item_factors.weight, std=init_std)
        if biases:
            self.user_bias = nn.Embedding(n_users, 1, sparse=True)
            self.item_bias = nn.Embedding(n_items, 1, sparse=True)
            nn.init.zeros_(self.user_bias.weight)
            nn.init.zeros_(self.item_bias.weight)
        self.register_buffer("mean_offset", torch.zeros(()))
        self.register_buffer("stationary_ready", torch.zeros((), dtype=torch.bool))
        if step_stats:
            self.register_buffer("train_mean", torch.zeros(()))  # centres the step statistics' mean rating
        self._data = None
        self._sides: dict[str, SideTensors] = {}
        self._state_cache: dict = {}
        self._advanced: dict | None = None  # set by advance(): extended sequences and final states
        self._phase_seconds = {side: 0.0 for side in SIDES}
        self._pmf = None  # a trained PMF to pre-train from (use_pmf)
        self._base_values: dict = {}  # side -> (base weights' version, the base's prediction of each rating)

    # ------------------------------------------------------------------ data and parameters
    def set_data_stats(self, rating_range, rating_mean) -> None:
        super().set_data_stats(rating_range, rating_mean)
        if self.base_model is not None:
            self.base_model.set_data_stats(rating_range, rating_mean)
        carried = 0.0 if self.base_model is not None else rating_mean  # a base's prediction carries the mean
        with torch.no_grad():
            if self.hparams.step_stats:
                self.train_mean.fill_(rating_mean)
            if self.hparams.global_mean:
                self.mean_offset.fill_(carried)
            else:  # eq. (7) as written: the mean lives in <b_user, b_movie>
                level = (max(carried, 0.0) / self.hparams.dynamic_dim) ** 0.5
                self.user_net.project.bias[:self.hparams.dynamic_dim].fill_(level)
                self.item_net.project.bias[:self.hparams.dynamic_dim].fill_(level)

    def attach(self, data) -> None:
        """Use `data` (a set-up TemporalDataModule) for states; the same data the model was trained on."""
        if data is self._data:
            return
        if (data.n_users, data.n_items) != (self.hparams.n_users, self.hparams.n_items):
            raise RrnxError(f"the data has {data.n_users:,} users and {data.n_items:,} items; this RRN was "
                            f"trained on {self.hparams.n_users:,} and {self.hparams.n_items:,}")
        self._data = data
        self._sides = {side: seqs.to(self.mean_offset.device) for side, seqs in training_sides(data).items()}
        self._base_values = {}
        if self.base_model is not None:
            self.base_model.attach(data)
        from rrnx.data.split import to_timestamp
        self._test_start = to_timestamp(data.hparams.test_start, "data.test_start")
        self._clear_states()

    def _apply(self, fn, *args, **kwargs):
        """Module.to / .cuda / .cpu: the attached sequences and any advanced states follow the weights
        (Lightning moves the model to its accelerator after attach)."""
        module = super()._apply(fn, *args, **kwargs)
        device = self.mean_offset.device
        if self._sides and self._sides["user"].offsets.device != device:
            self._sides = {side: seqs.to(device) for side, seqs in self._sides.items()}
            self._state_cache, self._base_values = {}, {}
            if self._advanced is not None:
                self._advanced = {**self._advanced, "seqs": {s: q.to(device) for s, q in self._advanced["seqs"].items()},
                                  "final": {s: f.to(device) for s, f in self._advanced["final"].items()}}
        return module

    def use_pmf(self, pmf) -> None:
        """Pre-train the stationary factors from `pmf`, a trained PMF of the same data and dim (rrnx fit
        resolves `pmf_run` into one), when training starts; a resumed run keeps its own."""
        self._pmf = pmf

    def _attached(self):
        if self._data is None:
            raise RrnxError("RRN needs the training data for its states: call model.attach(data) first")
        return self._data

    def _net(self, side: str) -> SideNetwork:
        return self.user_net if side == "user" else self.item_net

    def _factors(self, side: str) -> nn.Embedding:
        return self.user_factors if side == "user" else self.item_factors

    def _bias(self, side: str) -> nn.Embedding | None:
        return getattr(self, f"{side}_bias", None)

    def _stationary_params(self, side: str) -> list:
        return [p for m in (self._factors(side), self._bias(side)) if m is not None for p in m.parameters()]

    def _rating_base(self, seqs: SideTensors) -> torch.Tensor | None:
        """The base model's prediction of every rating of `seqs` in its rating order, (N,); None without a base.
        Computed once per side of the training data and kept while the base's weights stay as they are."""
        if self.base_model is None:
            return None
        if seqs.base is not None:  # sequences extended by advance() carry their own
            return seqs.base
        version = tuple((t.data_ptr(), t._version) for t in self.base_model.state_dict().values())
        kept = self._base_values.get(seqs.side)
        if kept is None or kept[0] != version:
            user, item, _, timestamp = ratings_frame_arrays(self._attached().split.train)
            kept = self._base_values[seqs.side] = (version, side_base(self.base_model, seqs, user, item, timestamp))
        return kept[1]

    def _input_weights(self, batch: RowBatch) -> torch.Tensor:
        """x_t's nonzero values for EmbeddingBag's per_sample_weights, (N,)."""
        weights = batch.value  # (N,)
        if self.hparams.rating_input == "scaled":
            weights = weights / self.rating_range.abs().max().clamp(min=1e-6)
        if self.hparams.input_norm != "sum":
            count = batch.rating_count  # (N,) each rating's row's rating count
            if count is None:
                count = take_rows(batch.ratings_per_row, batch.rating_row).float()
            weights = weights / (count.sqrt() if self.hparams.input_norm == "sqrt" else count)
        return weights

    def _step_stats(self, side: SideTensors, batch: RowBatch) -> torch.Tensor | None:
        """Beyond the paper (`step_stats`): per row, [the step's mean rating minus the training mean, divided
        by the scale's maximum (True/"mean"), or its mean rating minus the stationary part's prediction, in
        quarters of the scale's span ("residual"); log(1 + ratings in the step)], (R, 2); None when off."""
        if not self.hparams.step_stats:
            return None
        count = batch.ratings_per_row.float()  # (R,) every active row has >= 1 rating
        value = batch.value  # (N,)
        if self.hparams.step_stats == "residual":
            entity = take_rows(batch.entities, batch.rating_entity)  # (N,)
            other = batch.other  # (N,)
            users, items = (entity, other) if side.side == "user" else (other, entity)
            with torch.no_grad():
                value = value - self._stationary_score(users, items)  # (N,) departure from the static part
                base = self._rating_base(side)
                if base is not None:  # ... and from the base under it
                    value = value - take_rows(base, batch.ratings)
            total = torch.zeros(len(count), device=count.device).index_add_(0, batch.rating_row, value)
            mean = total / count / ((self.rating_range[1] - self.rating_range[0]) / 4).clamp(min=1e-6)
        else:
            total = torch.zeros(len(count), device=count.device).index_add_(0, batch.rating_row, value)
            mean = (total / count - self.train_mean) / self.rating_range.abs().max().clamp(min=1e-6)
        return torch.stack([mean, torch.log1p(count)], 1)

    def _hidden(self, net: SideNetwork, side: SideTensors, batch: RowBatch) -> tuple[torch.Tensor, Packing]:
        """eqs. (5)-(6): the hidden state after each row of the batch, (R, H), packed time-major, and the packing."""
        sliced = None if batch.sliced is None else self._input_weights(batch.sliced)  # (N,) RatingBag's backward
        return net(side, batch, self._input_weights(batch), self._step_stats(side, batch), sliced)

    def _dynamic_score(self, user_state: torch.Tensor, item_state: torch.Tensor) -> torch.Tensor:
        """<W_user u_it + b_user, W_movie m_jt + b_movie> of eq. (7) (+ the two dynamic biases), (N,)."""
        if not self.hparams.dynamic_bias:
            return (user_state * item_state).sum(-1)
        d = self.hparams.dynamic_dim
        return (user_state[:, :d] * item_state[:, :d]).sum(-1) + user_state[:, d] + item_state[:, d]

    def _stationary_score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """<u_i, m_j> (+ biases) (+ mean) of eq. (7), (Q,)."""
        score = (take_rows(self.user_factors.weight, users) * take_rows(self.item_factors.weight, items)).sum(-1)
        score = score + self.mean_offset
        if self.hparams.biases:
            user_bias, item_bias = take_rows(self.user_bias.weight, users), take_rows(self.item_bias.weight, items)
            score = score + user_bias[:, 0] + item_bias[:, 0]
        return score

    # ------------------------------------------------------------------ evaluation (states and predict_at: states.py)
    @torch.no_grad()
    def predict_ratings(self, batch: dict) -> torch.Tensor:
        """Validation/test ratings from the final extrapolated states (Section 3.3), (B,); after advance(),
        causal in the batch's timestamps (states.py) when it has them."""
        if self._advanced is not None and "timestamp" in batch:
            return self._scores_at(batch["user"], batch["item"], batch["timestamp"])
        user_final, item_final = self._final_states()
        users, items = batch["user"], batch["item"]
        dynamic = self._dynamic_score(take_rows(user_final, users), take_rows(item_final, items))  # (B,)
        pred = dynamic + self._stationary_score(users, items)
        if self.base_model is not None:
            if "timestamp" not in batch:
                raise RrnxError("an RRN on a base model predicts at a time: the batch needs its `timestamp`s")
            pred = pred + base_scores(self.base_model, users, items, batch["timestamp"]).to(pred.device)
        return pred

    # ------------------------------------------------------------------ training (Section 3.4)
    def train_loader(self, data) -> "PhaseBatches":
        self.attach(data)
        return PhaseBatches(self)

    def configure_optimizers(self):
        hp = self.hparams
        def adam(net):
            # fused: one pass over each parameter (the item network's input embedding has n_users x E
            # entries, updated densely at every item step); same update, 8 vs 72 ms on 272k x 40
            return torch.optim.Adam(net.parameters(), lr=hp.net_lr, weight_decay=hp.net_weight_decay, fused=True)
        def sgd(side):
            return torch.optim.SGD(self._stationary_params(side), lr=hp.stationary_lr)
        return [adam(self.user_net), sgd("user"), adam(self.item_net), sgd("item")]

    def on_train_start(self) -> None:
        if not bool(self.stationary_ready):
            from rrnx.models.rrn.pretrain import pretrain_stationary
            start = time.perf_counter()
            if self.base_model is not None:  # the base first, alone; then the stationary part on its residuals
                self._base_val_rmse = train_base(self.base_model, self._attached(), self.hparams.base_epochs)
            pretrain_stationary(self, self._attached(), self._pmf)
            broadcast_from_rank0_(list(self.parameters()))  # under DDP every rank pre-trained alike; this makes sure
            self.stationary_ready.fill_(True)
            self._pretrain_seconds = time.perf_counter() - start

    def on_train_epoch_start(self) -> None:
        self._phase_seconds = {side: 0.0 for side in SIDES}

    def training_step(self, batch: dict, batch_idx: int) -> None:
        if self.hparams.stationary_epoch and self.current_epoch == 0:
            # epoch 0 validates the pre-trained stationary part alone; a step without gradients changes no
            # weight but counts as a step, so that Lightning checkpoints the epoch as a candidate best
            optimizer = self.optimizers()[0]
            optimizer.zero_grad(set_to_none=True)
            optimizer.step()
            return
        start = time.perf_counter()
        side = batch["side"]
        other_before, _ = self._cached_states(OTHER_SIDE[side])  # (n_other_active, D), frozen in this phase
        opts = self.optimizers()
        net_opt, stationary_opt = opts[0:2] if side == "user" else opts[2:4]
        net_opt.zero_grad()
        stationary_opt.zero_grad()
        if "global_entities" in batch:  # this rank's part of a global batch (PhaseBatches.shard, under DDP)
            mse = self._part_backward(side, batch, other_before)
        else:
            mse = self._batch_backward(side, batch["entities"], other_before)
        net_opt.step()
        stationary_opt.step()
        self.log(TRAIN_LOSS, mse, prog_bar=True, batch_size=len(batch["entities"]))
        if self.device.type == "cuda":  # CUDA queues kernels: the phase clock stops when they have run (one
            torch.cuda.synchronize(self.device)  # wait per optimizer step, not per LSTM step)
        self._phase_seconds[side] += time.perf_counter() - start

    def _batch_backward(self, side: str, entities: torch.Tensor, other_before: torch.Tensor) -> torch.Tensor:
        """Backward of eq. (8) over a batch of `entities`; returns its mean squared error. A batch of more
        than `part_ratings` ratings runs in parts (see _backward_parts); one part is the whole batch."""
        seqs = self._sides[side]
        n = int(entity_ratings(seqs, entities).sum())
        parts = rating_bounded_parts(seqs, entities, self.hparams.part_ratings)
        return self._backward_parts(side, parts, other_before, n) / n  # eq. (8)

    def _backward_parts(self, side: str, parts: list, other_before: torch.Tensor, n: int) -> torch.Tensor:
        """Backward of each part's squared errors and L2 terms divided by `n`, the rating count of the batch
        the parts make up: the gradients accumulate to those of eq. (8) over the whole batch, while only one
        part's per-rating tensors are alive at a time. Returns the parts' summed squared error."""
        squared_sum = torch.zeros((), device=other_before.device)
        net = self._net(side)
        net.bag_into_grad = True  # each part's embedding gradient adds into the first part's .grad in place
        try:
            for part in parts:
                pred, target, reg = self.phase_forward(side, part, other_before, n, locality=True)
                squared = ((pred - target) ** 2).sum()
                self.manual_backward(squared / n + reg)
                squared_sum += squared.detach()
        finally:
            net.bag_into_grad = False
        return squared_sum

    def _part_backward(self, side: str, batch: dict, other_before: torch.Tensor) -> torch.Tensor:
        """Backward of this rank's part of a global batch, leaving every rank the gradients of the whole
        batch's loss; returns this part's mean squared error. Eq. (8) over the global batch is the sum over
        the parts of their squared errors divided by the global rating count, so each part divides by it
        and the network gradients are summed over the ranks (all_reduce); a stationary row belongs to the
        one rank whose part holds its entity, and the rows' gradients are exchanged over the global batch's
        entities, so every rank takes the same SGD step on the same rows."""
        seqs, entities, everyone = self._sides[side], batch["entities"], batch["global_entities"]
        n_global = int(entity_ratings(seqs, everyone).sum())
        net = self._net(side)
        if len(entities):
            parts = rating_bounded_parts(seqs, entities, self.hparams.part_ratings)
            squared = self._backward_parts(side, parts, other_before, n_global)
            mse = squared / entity_ratings(seqs, entities).sum()
        else:  # a global batch with fewer entities than ranks: this rank adds nothing, but takes part
            self.manual_backward(sum(p.sum() for p in net.parameters()) * 0.0)
            mse = torch.zeros((), device=other_before.device)
        for p in net.parameters():
            all_reduce_sum_(p.grad)
        self._share_stationary_grads(side, entities, everyone, batch["part_start"])
        return mse

    def _share_stationary_grads(self, side: str, entities: torch.Tensor, everyone: torch.Tensor, part_start: int):
        """Every rank ends with the sparse gradient rows of all the global batch's entities: each rank writes
        its own entities' rows into a (B_g, k + biases) buffer at its part's place and the buffers are summed."""
        params = self._stationary_params(side)  # weights (n, k) and (n, 1)
        widths = [p.shape[1] for p in params]
        buffer = torch.zeros(len(everyone), sum(widths), device=params[0].device)  # (B_g, k [+ 1]); CUDA for NCCL
        if len(entities):
            order = torch.argsort(entities)  # a coalesced gradient holds its rows by increasing entity
            local = torch.cat([p.grad.coalesce().values() for p in params], 1)  # (B, k [+ 1]) by entity
            buffer[part_start + order] = local
        all_reduce_sum_(buffer)
        index = everyone.reshape(1, -1).clone()  # (1, B_g): owned indices, not a view into the epoch's batch list
        for p, rows in zip(params, buffer.split(widths, 1)):
            # a fresh copy: a one-row column slice counts as contiguous with the buffer's row stride, and
            # torch's sparse kernels (to_dense, SGD's add_) then corrupt the heap (torch 2.13, a batch of 1)
            p.grad = torch.sparse_coo_tensor(index, rows.clone(memory_format=torch.contiguous_format), p.shape)

    def phase_forward(self, side: str, entities: torch.Tensor, other_before: torch.Tensor, n_ratings: int | None = None,
                      locality: bool = False):
        """Predictions of every training rating of `entities` from states before its step: this side's
        with gradients, the other side's from the frozen cache. Returns (pred (N,), target (N,), reg).
        `n_ratings`: the rating count the loss is divided by, when `entities` are part of a larger batch
        (None: their own). `locality`: pred and target may come in slices of a large other_before
        (sequences.sliced_ratings) instead of in rating order (the training loss, which only sums them)."""
        seqs = self._sides[side]
        kernel, cell = resolve_kernel(self.hparams.lstm_kernel, entities.device)
        batch = gather(seqs, entities, cell, other_rows=True)
        if locality and kernel == "fused":
            batch.sliced = sliced_ratings(cell, batch, other_before, ratings=self.base_model is not None)
        net = self._net(side)
        hidden, packing = self._hidden(net, seqs, batch)  # (R, H) packed time-major
        states, previous = net.dynamic_before(batch, hidden, packing)  # (R + 1, D), (R,)
        ordered = batch if batch.sliced is None else batch.sliced  # the per-rating work's order
        if batch.sliced is None:  # (N,) this side's state before each rating: previous[rating_row], row-major
            own_row = torch.repeat_interleave(previous, batch.ratings_per_row, output_size=len(batch.ratings))
            rating_entity = batch.rating_entity  # (N,) local entity
        else:
            own_row = previous.index_select(0, ordered.rating_row)  # (N,)
            rating_entity = batch.row_entity.index_select(0, ordered.rating_row)  # (N,)
        other_row = ordered.other_row  # (N,) the other side's, in other_before
        per_entity = torch.zeros(len(entities), device=entities.device).index_add_(
            0, batch.row_entity, batch.ratings_per_row.float())  # (B,)
        n = len(batch.ratings) if n_ratings is None else n_ratings
        scale = n / per_entity  # SGD step = each entity's mean gradient
        own = self._factors(side)(entities)  # (B, k)
        if own.requires_grad:
            own.register_hook(lambda g: g * scale[:, None])
        other_idx = ordered.other  # (N,)
        other_factors = self._factors(OTHER_SIDE[side]).weight.detach()  # (n_other, k) frozen
        if kernel == "fused":  # the same sums in one compiled pass (PairDots)
            pred = PairDots.apply(states, own_row, other_before, other_row, own, rating_entity, other_factors,
                                  other_idx, cell, self.hparams.dynamic_bias) + self.mean_offset  # (N,)
        else:
            own_dynamic, other_dynamic = take_rows(states, own_row), take_rows(other_before, other_row)  # (N, D)
            user_dynamic, item_dynamic = ((own_dynamic, other_dynamic) if side == "user"
                                          else (other_dynamic, own_dynamic))
            stationary = (take_rows(own, rating_entity) * take_rows(other_factors, other_idx)).sum(-1)  # (N,)
            pred = self._dynamic_score(user_dynamic, item_dynamic) + stationary + self.mean_offset  # (N,)
        base = self._rating_base(seqs)
        if base is not None:
            pred = pred + take_rows(base, ordered.ratings)  # (N,) the frozen base under eq. (7)
        reg = (per_entity * own.pow(2).sum(-1)).sum()  # per rating, as PMF
        per_entity_reg = 0.0
        if self.hparams.biases:
            own_bias = self._bias(side)(entities)  # (B, 1)
            if own_bias.requires_grad:
                own_bias.register_hook(lambda g: g * scale[:, None])
            other_bias = self._bias(OTHER_SIDE[side]).weight.detach()  # (n_other, 1) frozen
            pred = pred + take_rows(own_bias, rating_entity)[:, 0] + take_rows(other_bias, other_idx)[:, 0]
            if self.hparams.bias_reg is None:  # per rating, as the factors
                reg = reg + (per_entity * own_bias[:, 0] ** 2).sum()
            else:  # per entity: bias_reg * b^2 whatever its rating count (Koren's baseline predictors)
                per_entity_reg = self.hparams.bias_reg * (own_bias[:, 0] ** 2).sum()
        return pred, ordered.value, (self.hparams.reg * reg + per_entity_reg) / n

    # ------------------------------------------------------------------ evaluation and checkpoints
    def on_validation_epoch_start(self) -> None:
        if self.trainer.state.fn == "fit" and not self.trainer.sanity_checking:
            # under DDP the slowest rank's seconds: what every step waits for (no-op with one process)
            for side in SIDES:
                self.log(PHASE_SECONDS[side], self._phase_seconds[side], sync_dist=True, reduce_fx="max")
            if hasattr(self, "_pretrain_seconds"):
                self.log(PRETRAIN_SECONDS, self._pretrain_seconds, sync_dist=True, reduce_fx="max")
            if hasattr(self, "_base_val_rmse"):  # the base alone, its best epoch (RRN(base=...))
                self.log(BASE_VAL_RMSE, self._base_val_rmse, sync_dist=True, reduce_fx="max")
        self._final_states()

    def on_test_epoch_start(self) -> None:
        self._state_cache = {}
        self._final_states()

    def on_predict_epoch_start(self) -> None:
        self._state_cache = {}
        self._final_states()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self._clear_states()  # (the runner restores the RNG states: rrnx.training.RngState)
        if self.base_model is not None and hasattr(self.base_model, "on_load_checkpoint"):  # data-sized tables
            prefix = "base_model."
            state = {k[len(prefix):]: v for k, v in checkpoint["state_dict"].items() if k.startswith(prefix)}
            self.base_model.on_load_checkpoint({"state_dict": state})
            self.base_model.requires_grad_(False)


class PhaseBatches:
    """One epoch of alternating subspace descent: the user phase's batches, then the item phase's.

    Batches hold entities of similar sequence length; their order and membership are drawn from
    (seed, epoch), so a resumed run sees the same batches as an uninterrupted one."""

    def __init__(self, model: RRN):
        self.model, self.seed = model, torch.initial_seed()
        self.sizes = {"user": model.hparams.user_batch_size, "item": model.hparams.item_batch_size}

    rank, world_size = 0, 1

    def __len__(self) -> int:
        return sum(-(-self.model._sides[s].n_entities // self.sizes[s]) for s in SIDES)

    def shard(self, rank: int, world_size: int) -> "PhaseBatches":
        """This rank's share under DDP: every global batch of entities is cut into `world_size` near-equal
        parts (torch.tensor_split) and rank `rank` yields its part, with the whole batch and where the part
        starts in it (RRN._part_backward needs both). Every rank draws the same batches from (seed, epoch)."""
        shard = PhaseBatches(self.model)
        shard.seed, shard.rank, shard.world_size = self.seed, rank, world_size
        return shard

    def __iter__(self):
        epoch = self.model.current_epoch  # 0 outside a trainer
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        for side in SIDES:
            for entities in length_sorted_batches(self.model._sides[side].lengths, self.sizes[side], generator):
                if self.world_size == 1:
                    yield {"side": side, "entities": entities}
                    continue
                parts = torch.tensor_split(entities, self.world_size)
                start = sum(len(part) for part in parts[:self.rank])
                yield {"side": side, "entities": parts[self.rank], "global_entities": entities, "part_start": start}
