"""Time RRN's per-rating gather over one side's no-grad batches (docs/benchmarks.md, "The per-rating gather
in one compiled pass"): the torch ops, the compiled `gather_ratings` with and without the ratings' ids, rows
and entities (`ids=False`: the no-grad passes), and plain slices of the same number of ratings (what reading
them costs at least), each followed by the `input_norm` weights as the model makes them:

    python scripts/gather_cost.py [--preset netflix-full] [--side user] [--threads 2] [--repeats 2]

On the bench's data (from rrnx's cache as `rrnx bench`; 2-month steps for netflix-full, else 1 day / 7 days),
cut into the state cache's batches (RRN's eval_batch_rows and eval_batch_ratings)."""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the CLI (rrnx/threads.py), before torch loads

import torch  # noqa: E402

from state_cache import bench_model  # noqa: E402 (this folder's state_cache.py)

from rrnx.models.rrn.fused import fused_cell  # noqa: E402
from rrnx.models.rrn.sequences import entity_ratings, gather, row_budget_batches  # noqa: E402
from rrnx.training import keep_freed_memory  # noqa: E402


def slices(seqs, n_batches: int) -> None:
    """The side's ratings in n_batches consecutive entity ranges: slices, a widening, the row counts."""
    bounds = torch.linspace(0, seqs.n_entities, n_batches + 1).long().tolist()
    for first, end in zip(bounds[:-1], bounds[1:]):
        r0, r1 = int(seqs.offsets[first]), int(seqs.offsets[end])
        offsets = seqs.rating_offsets[r0:r1 + 1]
        n0, n1 = int(offsets[0]), int(offsets[-1])
        other, value, counts = seqs.other[n0:n1].long(), seqs.value[n0:n1], offsets[1:] - offsets[:-1]
        torch.repeat_interleave(counts, counts, output_size=n1 - n0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="netflix-full", choices=("netflix-6m", "netflix-full"))
    parser.add_argument("--side", default="user", choices=("user", "item"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    keep_freed_memory()
    _, model = bench_model(args.preset)
    seqs = model._sides[args.side]
    entities = torch.arange(seqs.n_entities)
    batches = row_budget_batches(seqs.lengths, model.hparams.eval_batch_rows, entity_ratings(seqs, entities),
                                 model.hparams.eval_batch_ratings)
    cell = fused_cell(required=True)
    print(f"{args.side} side ({args.preset}): {int(seqs.rating_offsets[-1]):,} ratings in {len(batches)} batches, "
          f"{args.threads} thread(s)")
    for _ in range(args.repeats):
        for name, kernel, ids in (("torch ops", None, True), ("compiled", cell, True), ("no ids", cell, False),
                                  ("slices", "slices", True)):
            start = time.perf_counter()
            if kernel == "slices":
                slices(seqs, len(batches))
            else:
                for batch in batches:  # each batch's arrays freed before the next, as in the state cache
                    model._input_weights(gather(seqs, batch, kernel, ids=ids))
            print(f"  {name:10s} {time.perf_counter() - start:.2f} s")


if __name__ == "__main__":
    main()
