"""One `rrnx bench` epoch with a recipe's RRN settings, for commits before `rrnx bench --recipe` existed
(docs/benchmarks.md): run it with the Python of `scripts/bench_at.sh COMMIT`'s environment
(${TMPDIR:-/tmp}/rrnx-bench-<commit>/venv/bin/python), and `rrnx bench --recipe RECIPE` here.

    python scripts/recipe_epoch.py recipes/netflix-6m.yaml [--threads 2] [--eq7-torch [--bias-sum-first]]

The recipe's `model.rrn` mapping less the pre-train settings, RRN's batch-size defaults (256 users, 64
items) where it sets none, on the bench's netflix-6m data (1-day / 7-day steps) from rrnx's cache.
`--eq7-torch`: eq. (7) by torch ops even with the fused cell (as before 7586c79 with `dynamic_bias`);
`--bias-sum-first`: and its two dynamic biases added to each other before the product's sum, a change
of float rounding only: how much the epoch's validation RMSE moves with rounding alone.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the CLI (rrnx/threads.py), before torch loads

import yaml  # noqa: E402

import rrnx.models.rrn.model as rrn_model  # noqa: E402
from rrnx.bench import format_report, run_bench  # noqa: E402
from rrnx.data.cache import default_cache_dir  # noqa: E402

PRETRAIN_KEYS = ("pretrain_epochs", "pretrain_patience", "pmf_run", "stationary_epoch")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--eq7-torch", action="store_true")
    parser.add_argument("--bias-sum-first", action="store_true")
    args = parser.parse_args()
    if args.eq7_torch:  # phase_forward's kernel choice only: the LSTM resolves its own (lstm.py)
        rrn_model.resolve_kernel = lambda kernel, device: ("torch", None)
    if args.bias_sum_first:
        def dynamic_score(self, user_state, item_state):
            d = self.hparams.dynamic_dim
            return (user_state[:, :d] * item_state[:, :d]).sum(-1) + (user_state[:, d] + item_state[:, d])

        rrn_model.RRN._dynamic_score = dynamic_score
    with open(args.recipe) as f:
        rrn = dict((yaml.safe_load(f).get("model") or {}).get("rrn") or {})
    settings = {"user_batch_size": 256, "item_batch_size": 64,
                **{k: v for k, v in rrn.items() if k not in PRETRAIN_KEYS}}
    result = run_bench("netflix-6m", 1, args.threads, "1d", "7d", model_args=settings,
                       cache_dir=default_cache_dir(), say=lambda *_: None)
    print(format_report(result))


if __name__ == "__main__":
    main()
