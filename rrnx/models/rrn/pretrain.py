"""RRN's stationary pre-train (paper, Section 4.1): "first train stationary states only, then jointly".

The stationary part of eq. (7), <u_i, m_j>, is PMF; RRN takes its factors either from a trained PMF
handed to it (`RRN.use_pmf`: rrnx's runner resolves the `pmf_run` setting, a finished `rrnx fit`
PMF run on the same data, into one; rrnx.run.load_pmf_run) or from `pretrain_epochs` of PMF
trained inline, with rrnx's own PMF model (same dim, reg and lr).
"""

from __future__ import annotations

import warnings

import torch

from rrnx.errors import RrnxError
from rrnx.models.pmf import PMF


def pretrain_stationary(model, data, pmf: PMF | None = None) -> None:
    """Fill model.user_factors / item_factors from `pmf`, or else from PMF trained inline for
    pretrain_epochs; a no-op with neither."""
    hp = model.hparams
    if pmf is None and hp.pmf_run:
        raise RrnxError(f"model.pmf_run={hp.pmf_run}: the PMF run's factors are handed to the model before training "
                        "(rrnx fit does it: rrnx.run.load_pmf_run, then model.use_pmf)")
    if pmf is None and hp.pretrain_epochs > 0:
        pmf = train_pmf(data, hp.dim, hp.reg, hp.lr, hp.init_std, hp.pretrain_epochs)
    if pmf is None:
        return
    with torch.no_grad():
        model.user_factors.weight.copy_(pmf.user_factors.weight)
        model.item_factors.weight.copy_(pmf.item_factors.weight)
        if not pmf.hparams.center and not hp.global_mean:  # PMF's factors already carry the mean
            model.user_net.project.bias.zero_()
            model.item_net.project.bias.zero_()


def train_pmf(data, dim: int, reg: float, lr: float, init_std: float, epochs: int) -> PMF:
    pmf = PMF(data.n_users, data.n_items, dim=dim, reg=reg, lr=lr, center=True, init_std=init_std)
    pmf.set_data_stats(data.rating_range, data.rating_mean)
    optimizer = pmf.configure_optimizers()
    loader = data.triples_loader("train", shuffle=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PMF.training_step logs; there is no trainer to log to here
        for _ in range(epochs):
            for i, batch in enumerate(loader):
                optimizer.zero_grad()
                pmf.training_step(batch, i).backward()
                optimizer.step()
    return pmf
