"""Times a phase's training batches with the other side's state table read slice by slice against in rating
order (sequences.sliced_ratings; docs/benchmarks.md, "Reading the other side's tables slice by slice"),
alternating in one process on the bench's data (read from rrnx's cache, or prepared and written there):

    python scripts/slice_order.py [--preset netflix-full] [--side item] [--batches 12] [--rounds 3]

Each round runs the first `--batches` batches of the phase (the bench's batch sizes: 4,096 users, 512 items;
forward and backward of eq. (8) as training runs them, in rating-bounded parts) in rating order, then in
slices; the other side's state cache is computed once. `--locality-bytes`: the table size above which
"slices" slices (default: RRN's own LOCALITY_BYTES; 0 slices any table, e.g. the user phase's 41 MB
item-state table at Netflix-full scale).
For another commit (which has no slices), use `scripts/bench_at.sh` and compare whole epochs instead.
"""

from __future__ import annotations

import argparse
import time

import torch

import rrnx.models.rrn.sequences as sequences
from rrnx.bench import prepare
from rrnx.commands.bench import PRESET_GRANULARITY
from rrnx.data.cache import default_cache_dir
from rrnx.models.rrn import RRN
from rrnx.models.rrn.sequences import OTHER_SIDE, length_sorted_batches
from rrnx.training import keep_freed_memory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="netflix-full")
    parser.add_argument("--side", choices=("user", "item"), default="item")
    parser.add_argument("--batches", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--locality-bytes", type=int, default=sequences.LOCALITY_BYTES)
    args = parser.parse_args()
    keep_freed_memory()  # as training runs (rrnx.training.fit_model)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    data, _ = prepare(args.preset, *PRESET_GRANULARITY.get(args.preset, ("1d", "7d")), 0, lambda *_: None,
                      default_cache_dir())
    model = RRN(data.n_users, data.n_items, pretrain_epochs=0, user_batch_size=4096, item_batch_size=512)  # the bench's
    model.set_data_stats(data.rating_range, data.rating_mean)
    model.attach(data)
    model.manual_backward = lambda loss: loss.backward()  # outside a trainer
    other_before, _ = model._cached_states(OTHER_SIDE[args.side])
    size = model.hparams.user_batch_size if args.side == "user" else model.hparams.item_batch_size
    batches = length_sorted_batches(model._sides[args.side].lengths, size, torch.Generator().manual_seed(1))
    batches = batches[:args.batches]
    ratings = sum(int(sequences.entity_ratings(model._sides[args.side], b).sum()) for b in batches)

    def run(sliced: bool) -> float:
        sequences.LOCALITY_BYTES = args.locality_bytes if sliced else 1 << 62
        start = time.perf_counter()
        for entities in batches:
            model.zero_grad(set_to_none=True)
            model._batch_backward(args.side, entities, other_before)
        return time.perf_counter() - start

    run(True), run(False)  # warm-up: first touches of the batches' buffers
    times = {False: [], True: []}
    for _ in range(args.rounds):
        for sliced in (False, True):
            times[sliced].append(run(sliced))
    table_mb = other_before.numel() * other_before.element_size() / 1e6
    print(f"{args.preset}, {args.side} phase, {len(batches)} batches ({ratings:,} ratings), {args.threads} threads; "
          f"the other side's table {tuple(other_before.shape)}, {table_mb:,.0f} MB")
    for sliced, label in ((False, "rating order"), (True, "in slices")):
        print(f"  {label:13} " + ", ".join(f"{t:.2f} s" for t in times[sliced]))


if __name__ == "__main__":
    main()
