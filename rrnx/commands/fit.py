"""rrnx fit RECIPE [--run-dir DIR] [--overwrite] [--resume RUN_DIR] [--allow-data-change] [--section.key=value ...]"""

from pathlib import Path

from rrnx.commands import ALLOW_DATA_CHANGE_HELP

NAME = "fit"
HELP = "train the recipe's model and write its run directory"
TAKES_OVERRIDES = True


def add_arguments(parser) -> None:
    parser.add_argument("recipe", nargs="?", help="recipe YAML (e.g. recipes/synthetic.yaml), or the name of a "
                        "packaged recipe (e.g. synthetic; `rrnx recipes` lists them)")
    parser.add_argument("--run-dir", type=Path, help="where to write the run (default runs/MODEL-TIMESTAMP)")
    parser.add_argument("--resume", type=Path, metavar="RUN_DIR",
                        help="continue a killed run from its last finished epoch (one killed before its first "
                             "checkpoint restarts from the start with its recorded recipe)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the run that --run-dir holds (finished or not) with this recipe's")
    parser.add_argument("--allow-data-change", action="store_true", help=f"with --resume: {ALLOW_DATA_CHANGE_HELP}")
    parser.epilog = "Override any recipe value with --section.key=value, e.g. --model.name=pmf --trainer.max_epochs=3"


def run(args, overrides) -> int:
    from rrnx.errors import RrnxError
    from rrnx.recipe import apply_overrides, load_recipe
    from rrnx.run import fit, require_finite

    if args.resume:
        if overrides or args.recipe or args.overwrite:
            raise RrnxError("--resume continues a run exactly as it was recorded; give no recipe, overrides "
                            "or --overwrite")
        require_finite(fit({}, args.resume, resume=True, allow_data_change=args.allow_data_change))
        return 0
    if not args.recipe:
        raise RrnxError("a recipe is required, e.g. rrnx fit recipes/synthetic.yaml")
    from rrnx.packaged import find

    recipe = apply_overrides(load_recipe(find(args.recipe)), overrides)
    require_finite(fit(recipe, args.run_dir, overwrite=args.overwrite))
    return 0
