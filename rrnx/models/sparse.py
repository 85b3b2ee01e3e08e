"""CSR helpers shared by rrnx's models (RRN's sequences, AutoRec's rating vectors, TimeSVD++'s
implicit feedback) and part of the public helper API for plugins (docs/plugins.md): the entries of a
batch of CSR rows, gathered with index arithmetic and no Python loop."""

from __future__ import annotations

import torch


def ranges(starts: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Concatenation of arange(s, s + n) for each (s, n), vectorised."""
    total = int(lengths.sum())
    first = torch.cumsum(lengths, 0) - lengths  # (K,) where each range begins in the output
    return torch.arange(total, device=lengths.device) + torch.repeat_interleave(starts - first, lengths,
                                                                                output_size=total)


def csr_positions(offsets: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For CSR `offsets` and a batch of `rows`: (index of the batch row, position in the CSR arrays)
    of every stored entry of those rows, without a Python loop."""
    start, counts = offsets[rows], offsets[rows + 1] - offsets[rows]  # (R,), (R,)
    owner = torch.repeat_interleave(torch.arange(len(rows), device=rows.device), counts)  # (N,)
    return owner, ranges(start, counts)  # (N,), (N,)
