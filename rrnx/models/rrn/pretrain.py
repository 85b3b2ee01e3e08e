"""RRN's stationary pre-train (paper, Section 4.1): "first train stationary states only, then jointly".

The stationary part of eq. (7), <u_i, m_j>, is PMF; RRN takes its factors either from a finished
`rrnx fit` PMF run on the same data (`pmf_run`) or from `pretrain_epochs` of PMF trained inline,
with rrnx's own PMF model (same dim, reg and lr).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch

from rrnx.errors import RrnxError
from rrnx.models.pmf import PMF


def pretrain_stationary(model, data) -> None:
    """Fill model.user_factors / item_factors from PMF; a no-op with neither pmf_run nor pretrain_epochs."""
    hp = model.hparams
    if hp.pmf_run:
        pmf = load_pmf_run(Path(hp.pmf_run), data, hp.dim)
    elif hp.pretrain_epochs > 0:
        pmf = train_pmf(data, hp.dim, hp.reg, hp.lr, hp.init_std, hp.pretrain_epochs)
    else:
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


def load_pmf_run(run_dir: Path, data, dim: int) -> PMF:
    """A finished PMF run's model, checked against this data (same training ratings) and this dim."""
    from rrnx.run import load_run, manifest

    recipe, _ = load_run(run_dir)
    if recipe["model"]["name"] != "pmf":
        raise RrnxError(f"model.pmf_run: {run_dir} is a {recipe['model']['name']!r} run; it must be a pmf run")
    recorded = json.loads((run_dir / "manifest.json").read_text())["data_fingerprint"]["train"]
    current = manifest({"data": {}}, data)["data_fingerprint"]["train"]
    if recorded != current:
        raise RrnxError(f"model.pmf_run: {run_dir} was trained on other training ratings (fingerprint {recorded} "
                        f"vs {current}); train PMF on this recipe's data and split first")
    pmf = PMF.load_from_checkpoint(str(run_dir / "checkpoints" / "best.ckpt"), map_location="cpu", weights_only=True)
    found = tuple(pmf.user_factors.weight.shape), tuple(pmf.item_factors.weight.shape)
    wanted = (data.n_users, dim), (data.n_items, dim)
    if found != wanted:
        raise RrnxError(f"model.pmf_run: {run_dir} has factors of shape {found[0]} (users) and {found[1]} (items); "
                        f"this RRN needs {wanted[0]} and {wanted[1]}: set model.dim={found[0][1]} or re-run PMF "
                        f"with --model.dim={dim}")
    return pmf
