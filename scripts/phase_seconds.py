"""Times two pieces of RRN's epoch in one process, without Lightning (docs/benchmarks.md, "Eq. (7) in one
compiled pass"): the no-grad pass over every user step that builds the user-state cache (the item phase
starts with it), and the forward + backward of the first 20 user batches of 4,096 users, each best of 3,
on the bench's 6-month data (read from rrnx's cache, or prepared and written there):

    python scripts/phase_seconds.py [--threads 2] [--batches 20]

For another commit, run it with the Python of `scripts/bench_at.sh COMMIT`'s environment
(${TMPDIR:-/tmp}/rrnx-bench-<commit>/venv/bin/python), which puts that commit's rrnx first on the path.
"""

from __future__ import annotations

import argparse
import time

import torch

from rrnx.bench import prepare
from rrnx.data.cache import default_cache_dir
from rrnx.models.rrn import RRN
from rrnx.models.rrn.sequences import length_sorted_batches
from rrnx.training import keep_freed_memory


def best_seconds(step, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batches", type=int, default=20)
    args = parser.parse_args()
    keep_freed_memory()  # as training runs (rrnx.training.fit_model)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    data, _ = prepare("netflix-6m", "1d", "7d", 0, lambda *_: None, default_cache_dir())
    model = RRN(data.n_users, data.n_items, pretrain_epochs=0)
    model.set_data_stats(data.rating_range, data.rating_mean)
    model.attach(data)

    def cache_pass():
        model._state_cache = {}
        model._cached_states("user")

    cache = best_seconds(cache_pass)
    item_states, _ = model._cached_states("item")
    batches = length_sorted_batches(model._sides["user"].lengths, 4096, torch.Generator().manual_seed(1))
    batches = batches[:args.batches]

    def user_batches():
        for entities in batches:
            pred, target, reg = model.phase_forward("user", entities, item_states)
            (((pred - target) ** 2).mean() + reg).backward()

    train = best_seconds(user_batches)
    print(f"{args.threads} threads: user-state cache pass {cache:.2f} s, {len(batches)} user batches "
          f"(forward + backward) {train:.2f} s")


if __name__ == "__main__":
    main()
