"""rrnx bench [--preset netflix-6m] [--epochs 1] [--threads N] [--recipe R]: time an RRN epoch at the paper's scale."""

import inspect
import json
from pathlib import Path

NAME = "bench"
# (user, item) time steps where a preset's default is not Table 3's best 1d / 7d: the paper trains full
# Netflix (6 years) with 2-month steps on both sides
PRESET_GRANULARITY = {"netflix-full": ("2mo", "2mo")}
# A recipe's RRN settings that belong to the pre-train, which the bench does not run (it times joint epochs;
# stationary_epoch would make its epoch 0 train nothing)
PRETRAIN_KEYS = ("pretrain_epochs", "pretrain_patience", "pmf_run", "stationary_epoch")
HELP = "time RRN's user phase, item phase and evaluation on synthetic data at the paper's Netflix 6-month scale"


def add_arguments(parser) -> None:
    parser.add_argument("--preset", default="netflix-6m",
                        help="synthetic preset (small, netflix-6m, netflix-1y, netflix-full, imdb); default netflix-6m")
    parser.add_argument("--epochs", type=int, default=1, help="joint epochs to time (default 1)")
    parser.add_argument("--threads", type=int,
                        help="torch threads (default: one per core that other processes leave free, revisited "
                             "during the run; docs/benchmarks.md)")
    parser.add_argument("--user-granularity",
                        help="user time step (default 1d, as Table 3's best; 2mo for netflix-full, the paper's "
                             "setting for full Netflix)")
    parser.add_argument("--item-granularity", help="item time step (default 7d; 2mo for netflix-full)")
    # The batch sizes of docs/benchmarks.md: large batches keep the LSTM matmuls large;
    # RRN's own defaults (256 / 64) are chosen for accuracy on small data.
    parser.add_argument("--user-batch-size", type=int,
                        help="users per user-phase step (default 4096; with --recipe, the recipe's)")
    parser.add_argument("--item-batch-size", type=int,
                        help="items per item-phase step (default 512; with --recipe, the recipe's)")
    parser.add_argument("--recipe", type=Path,
                        help="time RRN with this recipe's settings (its model.rrn mapping and batch sizes, "
                             "without the pre-train) on the bench's synthetic data, e.g. recipes/netflix-6m.yaml")
    parser.add_argument("--accelerator", default="auto",
                        help="Lightning accelerator: auto (a GPU when there is one), cpu, gpu (default auto)")
    parser.add_argument("--lstm-kernel", default="auto", choices=["auto", "fused", "torch", "cudnn"],
                        help="RRN's lstm_kernel (docs/rrn.md); default auto: the fused cell on the CPU, cuDNN on CUDA")
    parser.add_argument("--no-cache", action="store_true",
                        help="generate, split and bucket the data even when rrnx's caches hold it ($RRNX_CACHE "
                             "or ~/.cache/rrnx; default: read the split and bucketed data, else the generated "
                             "table, from there, and write what was computed there for the next run)")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")


def run(args, overrides) -> int:
    from rrnx.bench import format_report, run_bench
    from rrnx.data.cache import default_cache_dir
    from rrnx.data.synthetic import PRESETS
    from rrnx.errors import RrnxError

    if args.preset not in PRESETS:
        raise RrnxError(f"--preset: unknown preset {args.preset!r}; valid: {', '.join(PRESETS)}")
    for flag, value in (("--epochs", args.epochs), ("--threads", args.threads),
                        ("--user-batch-size", args.user_batch_size), ("--item-batch-size", args.item_batch_size)):
        if value is not None and value < 1:  # 0 silently meant the default; a negative size reached the model
            raise RrnxError(f"{flag} must be at least 1, got {value}")
    model_args = recipe_settings(args.recipe) if args.recipe else {"user_batch_size": 4096, "item_batch_size": 512}
    model_args.update({k: v for k, v in (("user_batch_size", args.user_batch_size),
                                         ("item_batch_size", args.item_batch_size)) if v})
    model_args["lstm_kernel"] = args.lstm_kernel
    user_step, item_step = PRESET_GRANULARITY.get(args.preset, ("1d", "7d"))
    result = run_bench(args.preset, args.epochs, args.threads, args.user_granularity or user_step,
                       args.item_granularity or item_step, model_args=model_args, accelerator=args.accelerator,
                       cache_dir=None if args.no_cache else default_cache_dir())
    if args.recipe:
        print(f"RRN's settings from {args.recipe} (model.rrn, without the pre-train): "
              + " ".join(f"{k}={v}" for k, v in model_args.items()))
    print(format_report(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=str))
    return 0


def recipe_settings(path: Path) -> dict:
    """RRN's settings in a recipe (its `rrn:` mapping and flat model keys, checked as `rrnx fit` checks
    them), less the pre-train's; RRN's own batch-size defaults where the recipe sets none."""
    from rrnx.models.rrn import RRN
    from rrnx.recipe import apply_overrides, check_recipe, load_recipe, resolve_model

    recipe, _ = resolve_model(apply_overrides(load_recipe(path), [("model.name", "rrn")]))
    check_recipe(recipe)
    settings = {k: v for k, v in recipe["model"].items() if k != "name" and k not in PRETRAIN_KEYS}
    defaults = inspect.signature(RRN).parameters
    for key in ("user_batch_size", "item_batch_size"):
        settings.setdefault(key, defaults[key].default)
    return settings
