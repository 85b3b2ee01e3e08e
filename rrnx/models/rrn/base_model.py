"""RRN on a base model (`RRN(base=...)`, beyond the paper; off by default).

Eq. (7) predicts r_hat_ij|t = <W_user u_it + b_user, W_movie m_jt + b_movie> + <u_i, m_j> (+ biases).
With `base` it predicts

    r_hat_ij|t = base(i, j, t) + eq. (7)

where `base` is another registered rrnx model (a mapping: its name and its settings, e.g. the recipe's
tuned TimeSVD++) trained first, alone, on the same training ratings, and then frozen: RRN's stationary
part and its networks learn the base's residuals. This extends Section 4.1's "first train stationary
states only, then jointly" (which initialises the stationary factors from PMF or a U-AutoRec) to a base
that is kept, not copied. The base's prediction of every training rating is computed once and laid out
in each side's rating order (`side_base`), so the training passes add it with one gather.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from rrnx.data.steps import build_sequences
from rrnx.errors import RrnxError


def build_base(section: dict | None, n_users: int, n_items: int):
    """The base model named by `section` ({name: ..., its settings}), untrained, its weights frozen; None without."""
    if section is None:
        return None
    from rrnx.registry import get_model_class

    settings = dict(section)
    name = settings.pop("name", None)
    if not name:
        raise ValueError("base must name a registered model: base: {name: timesvdpp, ...its settings}")
    if name == "rrn":
        raise ValueError("base: an RRN cannot be the base of an RRN")
    cls = get_model_class(name)
    from rrnx.models.base import RatingModel
    try:
        model = cls(n_users=n_users, n_items=n_items, **settings)
    except TypeError as exc:
        raise ValueError(f"base {name!r}: {exc}") from None
    if cls.train_loader is not RatingModel.train_loader or not model.automatic_optimization:
        raise ValueError(f"base {name!r}: a base must train by gradient steps on shuffled rating triples "
                         "(biasedmf, pmf, timesvdpp, or a plugin that keeps RatingModel's train_loader)")
    model.requires_grad_(False)
    return model


def train_base(base, data, epochs: int) -> float:
    """`epochs` passes of the base's own training step and optimizer over the shuffled training triples; keeps
    the epoch with the lowest validation RMSE (as `rrnx fit` keeps its best epoch). Returns that RMSE."""
    from rrnx.models.rrn.pretrain import fit_epochs, validation_rmse

    base.requires_grad_(True)
    base.attach(data)
    params = [p for p in base.parameters() if p.requires_grad]
    optimizer = base.configure_optimizers()
    base.log = lambda *args, **kwargs: None  # its training_step logs; RRN's trainer does not run this loop
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit_epochs(params, lambda batch: base.training_step(batch, 0), base.predict_ratings, optimizer, data,
                       epochs, max(epochs, 1), base.rating_range)
    finally:
        del base.log
    base.requires_grad_(False)
    return validation_rmse(base.predict_ratings, data, base.rating_range)


@torch.no_grad()
def base_scores(base, users, items, timestamps, chunk: int = 1 << 18) -> torch.Tensor:
    """The base's unclamped predictions of (user, item, unix time) triples, (Q,), on the base's device."""
    device = base.rating_range.device
    users, items, timestamps = (x.long() if torch.is_tensor(x) else torch.from_numpy(np.array(x, dtype=np.int64))
                                for x in (users, items, timestamps))
    parts = [base.predict_ratings({"user": users[s:s + chunk].to(device), "item": items[s:s + chunk].to(device),
                                   "timestamp": timestamps[s:s + chunk].to(device)})
             for s in range(0, len(users), chunk)]
    return torch.cat(parts).float() if parts else torch.zeros(0, device=device)


def side_base(base, seqs, user: np.ndarray, item: np.ndarray, timestamp: np.ndarray) -> torch.Tensor:
    """The base's prediction of every rating of one side's sequences `seqs`, in their rating order, (N,):
    the ratings (user, item, timestamp) are bucketed as `seqs` was built from them (the same stable sort),
    and the result is checked against `seqs`' own other-side indices."""
    scores = base_scores(base, user, item, timestamp).cpu().numpy()  # (N,) input order
    entity, other = (user, item) if seqs.side == "user" else (item, user)
    bucketed, _ = build_sequences(seqs.side, entity, other, scores, timestamp, seqs.n_entities, seqs.granularity)
    if len(bucketed.other) != len(seqs.other) or not np.array_equal(bucketed.other, seqs.other.cpu().numpy()):
        raise RrnxError(f"base: the {seqs.side} side's ratings are not in the order they were bucketed in; "
                        "cannot place the base's predictions")
    return torch.as_tensor(bucketed.value).to(seqs.value.device)  # (N,)
