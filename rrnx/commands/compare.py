"""rrnx compare RECIPE [--models a,b:key=value,...] [--tune N] [--out DIR] [--section.key=value ...]"""

import shlex
import sys
from pathlib import Path

NAME = "compare"
HELP = "run several models on one recipe's split; write the Table 2 / Figure 1 analogue"
TAKES_OVERRIDES = True


def add_arguments(parser) -> None:
    parser.add_argument("recipe", help="recipe YAML whose data section every model shares, or a packaged "
                        "recipe's name (rrnx recipes)")
    parser.add_argument("--models", help="comma-separated registered models, each optionally with settings: "
                        "pmf:dim=160:reg=0.01,timesvdpp,autorec-i,autorec-u (default: every importable model)")
    parser.add_argument("--out", type=Path, help="output directory (default runs/compare-TIMESTAMP); "
                        "one run per model in OUT/MODEL/")
    parser.add_argument("--tune", type=int, metavar="N", help="first give every model the same budget of N "
                        "Optuna trials (TPE, median pruning) over its declared search space on the validation "
                        "half; the best setting is then retrained and tested; settings in OUT/tuned.yaml")
    parser.epilog = ("Override any recipe value with --section.key=value, as with rrnx fit; "
                     "--model.MODEL.key=value sets a key for one model only. See docs/results.md.")


def run(args, overrides) -> int:
    from rrnx.compare import compare, parse_models
    from rrnx.packaged import find
    from rrnx.recipe import apply_overrides, load_recipe

    recipe = apply_overrides(load_recipe(find(args.recipe)), overrides)
    models = parse_models(args.models) if args.models is not None else None
    command = "rrnx " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:2] == [NAME] else ""
    compare(recipe, models, args.out, command=command, tune=args.tune)
    return 0
