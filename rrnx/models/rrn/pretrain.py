"""RRN's stationary pre-train (paper, Section 4.1): "first train stationary states only, then jointly".

The stationary part of eq. (7), <u_i, m_j>, is PMF; RRN takes its factors either from a trained PMF
handed to it (`RRN.use_pmf`: rrnx's runner resolves the `pmf_run` setting, a finished `rrnx fit`
PMF run on the same data, into one; rrnx.run.load_pmf_run) or from `pretrain_epochs` of PMF
trained inline, with rrnx's own PMF model (same dim, reg and lr).
"""

from __future__ import annotations

import warnings

import torch

from rrnx.distributed import all_reduce_sparse_, process_group_share
from rrnx.errors import RrnxError
from rrnx.models.rrn.base_model import base_scores
from rrnx.models.pmf import PMF


def pretrain_stationary(model, data, pmf: PMF | None = None) -> None:
    """Fill model.user_factors / item_factors from `pmf`, or else from PMF trained inline for
    pretrain_epochs; a no-op with neither. With `biases` (and no `pmf`), the pre-train is RRN's own
    stationary part (mean + b_u + b_j + <u_i, m_j>: biased MF), trained in place."""
    hp = model.hparams
    if pmf is None and hp.pmf_run:
        raise RrnxError(f"model.pmf_run={hp.pmf_run}: the PMF run's factors are handed to the model before training "
                        "(rrnx fit does it: rrnx.run.load_pmf_run, then model.use_pmf)")
    if pmf is None and hp.biases:
        if hp.pretrain_epochs > 0:
            train_biased(model, data, hp.lr, hp.reg, hp.pretrain_epochs, hp.pretrain_patience, hp.bias_reg)
        return
    if pmf is None and hp.pretrain_epochs > 0:
        pmf = train_pmf(data, hp.dim, hp.reg, hp.lr, hp.init_std, hp.pretrain_epochs, hp.pretrain_patience)
    if pmf is None:
        return
    with torch.no_grad():
        model.user_factors.weight.copy_(pmf.user_factors.weight)
        model.item_factors.weight.copy_(pmf.item_factors.weight)
        if not pmf.hparams.center and not hp.global_mean:  # PMF's factors already carry the mean
            model.user_net.project.bias.zero_()
            model.item_net.project.bias.zero_()


def train_pmf(data, dim: int, reg: float, lr: float, init_std: float, epochs: int, patience: int = 0) -> PMF:
    pmf = PMF(data.n_users, data.n_items, dim=dim, reg=reg, lr=lr, center=True, init_std=init_std)
    pmf.set_data_stats(data.rating_range, data.rating_mean)
    optimizer = pmf.configure_optimizers()

    def loss(batch):
        return pmf.training_step(batch, 0)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PMF.training_step logs; there is no trainer to log to here
        fit_epochs(list(pmf.parameters()), loss, pmf.predict_ratings, optimizer, data, epochs, patience,
                   pmf.rating_range)
    return pmf


def train_biased(model, data, lr: float, reg: float, epochs: int, patience: int = 0,
                 bias_reg: float | None = None) -> None:
    """Biased MF on RRN's own stationary part, in place: mean + b_u + b_j + <u_i, m_j> (Koren,
    Bell & Volinsky 2009; on a base model, base + b_u + b_j + <u_i, m_j>), SparseAdam on rating triples
    with PMF's per-rating L2 `reg` (and, with `bias_reg`, bias_reg * b^2 per entity: each rating carries
    bias_reg / its entity's count)."""
    params = model._stationary_params("user") + model._stationary_params("item")
    optimizer = torch.optim.SparseAdam(params, lr=lr)
    with torch.no_grad():  # every state starts at its initial value b: the dynamic part is a constant
        initial = model._dynamic_score(model.user_net.project.bias[None], model.item_net.project.bias[None])
        offset = model.mean_offset + initial[0]
    if bias_reg is not None:  # ratings per user and per item: each rating carries bias_reg / its count
        train = data.split.train
        device = model.mean_offset.device
        user_count = torch.bincount(torch.as_tensor(train["user_idx"].to_numpy(), device=device),
                                    minlength=data.n_users).clamp(min=1)
        item_count = torch.bincount(torch.as_tensor(train["item_idx"].to_numpy(), device=device),
                                    minlength=data.n_items).clamp(min=1)

    def base(batch):  # the frozen base model's prediction (RRN(base=...)), else 0
        if model.base_model is None:
            return 0.0
        return base_scores(model.base_model, batch["user"], batch["item"], batch["timestamp"])

    def loss(batch):
        users, items = batch["user"], batch["item"]
        u, m = model.user_factors(users), model.item_factors(items)  # (B, k) sparse gradients
        bu, bi = model.user_bias(users)[:, 0], model.item_bias(items)[:, 0]  # (B,)
        pred = (u * m).sum(-1) + bu + bi + offset + base(batch)
        penalty = reg * ((u ** 2).sum(-1) + (m ** 2).sum(-1))
        if bias_reg is None:
            penalty = penalty + reg * (bu ** 2 + bi ** 2)
        else:
            penalty = penalty + bias_reg * (bu ** 2 / user_count[users] + bi ** 2 / item_count[items])
        return ((pred - batch["rating"]) ** 2).mean() + penalty.mean()

    def predict(batch):
        return model._stationary_score(batch["user"], batch["item"]) + initial[0] + base(batch)

    fit_epochs(params, loss, predict, optimizer, data, epochs, patience, model.rating_range)


def fit_epochs(params: list, loss, predict, optimizer, data, epochs: int, patience: int, rating_range) -> None:
    """`epochs` passes over the shuffled training triples; with `patience` > 0, stop when the
    validation RMSE has not improved for that many epochs and restore `params` (the trained ones)
    as they were after the best epoch. Under DDP each rank takes its part of every global batch
    (Batches.shard) and the parts' gradients are summed (rrnx.distributed.all_reduce_sparse_), so every
    rank takes the one-process step; the validation RMSE is computed whole on every rank."""
    share = process_group_share()
    loader = data.triples_loader("train", shuffle=True)
    if share.world_size > 1:
        loader = loader.shard(share.rank, share.world_size)
    best, best_state, since, device = float("inf"), None, 0, params[0].device
    for _ in range(epochs):
        for k, batch in enumerate(loader):
            batch = {key: value.to(device) for key, value in batch.items()}  # the loader's are on the CPU
            optimizer.zero_grad()
            if share.world_size == 1:
                loss(batch).backward()
            else:  # this part's mean, weighed by its share of the global batch: the parts sum to its mean
                rows = len(batch["rating"])
                if rows:
                    (loss(batch) * (rows / loader.global_rows(k))).backward()
                for p in params:
                    all_reduce_sparse_(p)
            optimizer.step()
        if patience <= 0:
            continue
        rmse = validation_rmse(predict, data, rating_range)
        if rmse < best:
            best, since = rmse, 0
            best_state = [p.detach().clone() for p in params]
        else:
            since += 1
            if since >= patience:
                break
    if best_state is not None:
        with torch.no_grad():
            for p, kept in zip(params, best_state):
                p.copy_(kept)


@torch.no_grad()
def validation_rmse(predict, data, rating_range: torch.Tensor) -> float:
    total, count = 0.0, 0
    for batch in data.triples_loader("val"):
        batch = {key: value.to(rating_range.device) for key, value in batch.items()}
        pred = predict(batch).clamp(rating_range[0], rating_range[1])
        total += float(((pred - batch["rating"]) ** 2).sum())
        count += len(pred)
    return (total / max(count, 1)) ** 0.5

