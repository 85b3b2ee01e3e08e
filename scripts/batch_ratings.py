"""Ratings per batch of RRN's phases at a preset's scale, with the bench's batch sizes (docs/benchmarks.md,
"Netflix full in 10 GiB": why training batches run in rating-bounded parts):

    python scripts/batch_ratings.py netflix-full 2mo 2mo 4096 512

Prints, per side, the largest and the median training batch's rating count (the batches of the first epoch,
seed 0) and the largest no-grad batch's under `eval_batch_rows` alone and with `eval_batch_ratings`.
"""

import sys

import torch

from rrnx.bench import prepare
from rrnx.data.cache import default_cache_dir
from rrnx.models.rrn import RRN
from rrnx.models.rrn.sequences import entity_ratings, length_sorted_batches, row_budget_batches, side_tensors

preset, user_step, item_step, user_batch, item_batch = sys.argv[1:6]
data, _ = prepare(preset, user_step, item_step, 0, print, default_cache_dir())
rows, ratings_cap = (RRN(1, 1).hparams[k] for k in ("eval_batch_rows", "eval_batch_ratings"))
for side, size in (("user", int(user_batch)), ("item", int(item_batch))):
    seqs = side_tensors(data.steps(side))
    every = torch.arange(seqs.n_entities)
    counts = sorted(int(entity_ratings(seqs, b).sum())
                    for b in length_sorted_batches(seqs.lengths, size, torch.Generator().manual_seed(0)))
    per_entity = entity_ratings(seqs, every)
    no_grad = [max(int(per_entity[b].sum()) for b in row_budget_batches(seqs.lengths, rows, *cap))
               for cap in ((), (per_entity, ratings_cap))]
    print(f"{side}: {len(counts)} training batches of {size}, ratings per batch: largest {counts[-1]:,}, "
          f"median {counts[len(counts) // 2]:,}; largest no-grad batch ({rows:,} steps): {no_grad[0]:,} ratings, "
          f"{no_grad[1]:,} with eval_batch_ratings={ratings_cap:,}")
