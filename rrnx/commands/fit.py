"""rrnx fit RECIPE [--run-dir DIR] [--resume RUN_DIR] [--section.key=value ...]"""

from pathlib import Path

NAME = "fit"
HELP = "train the recipe's model and write its run directory"
TAKES_OVERRIDES = True


def add_arguments(parser) -> None:
    parser.add_argument("recipe", nargs="?", help="recipe YAML (e.g. recipes/synthetic.yaml)")
    parser.add_argument("--run-dir", type=Path, help="where to write the run (default runs/MODEL-TIMESTAMP)")
    parser.add_argument("--resume", type=Path, metavar="RUN_DIR",
                        help="continue a killed run from its last finished epoch")
    parser.epilog = "Override any recipe value with --section.key=value, e.g. --model.name=pmf --trainer.max_epochs=3"


def run(args, overrides) -> int:
    from rrnx.errors import RrnxError
    from rrnx.recipe import apply_overrides, load_recipe
    from rrnx.run import fit

    if args.resume:
        if overrides or args.recipe:
            raise RrnxError("--resume continues a run exactly as it was recorded; give no recipe or overrides")
        fit({}, args.resume, resume=True)
        return 0
    if not args.recipe:
        raise RrnxError("a recipe is required, e.g. rrnx fit recipes/synthetic.yaml")
    recipe = apply_overrides(load_recipe(args.recipe), overrides)
    fit(recipe, args.run_dir)
    return 0
