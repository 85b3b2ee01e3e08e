"""Shared by scripts/recency_oracle.py and scripts/bump_ceiling.py: a trained RRN run's item-side training
ratings and their residuals (rating minus RRN's stationary part, or minus the whole RRN)."""
import torch

from rrnx.run import load_trained


def item_residuals(run: str, full: bool = False):
    """(data, model, seqs, count (rows,), row_of (N,), item_of (N,), residual (N,) numpy) of the run's item
    side; `full`: residuals of the whole RRN (what its dynamics left) instead of its stationary part."""
    recipe, metrics, data, model = load_trained(run)
    model.attach(data)
    seqs = model._sides["item"]
    with torch.no_grad():
        count = seqs.rating_offsets[1:] - seqs.rating_offsets[:-1]  # (rows,)
        row_of = torch.repeat_interleave(torch.arange(seqs.n_active), count)  # (N,)
        item_of = torch.repeat_interleave(torch.arange(seqs.n_entities), seqs.lengths)[row_of]  # (N,)
        if full:
            predicted = model.phase_forward("item", torch.arange(seqs.n_entities), model._cached_states("user")[0])[0]
        else:
            predicted = model._stationary_score(seqs.other.long(), item_of)
        residual = (seqs.value - predicted).numpy()
    return data, model, seqs, count, row_of, item_of, residual
