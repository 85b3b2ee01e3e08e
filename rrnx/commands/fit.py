"""rrnx fit RECIPE [--out DIR] [--overwrite] [--print-config] [--section.key=value ...]
rrnx fit --resume RUN_DIR [--allow-data-change]"""

from pathlib import Path

from rrnx.commands import ALLOW_DATA_CHANGE_HELP

NAME = "fit"
HELP = "train the recipe's model and write its run directory"
TAKES_OVERRIDES = True


def add_arguments(parser) -> None:
    import argparse

    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("recipe", nargs="?", help="recipe YAML (e.g. recipes/synthetic.yaml), or the name of a "
                        "packaged recipe (e.g. synthetic; `rrnx recipes` lists them)")
    parser.add_argument("--out", "--run-dir", dest="out", type=Path, metavar="DIR",
                        help="where to write the run (default runs/MODEL-TIME; --run-dir is the older spelling)")
    parser.add_argument("--resume", type=Path, metavar="RUN_DIR",
                        help="continue a killed run from its last finished epoch (one killed before its first "
                             "checkpoint restarts from the start with its recorded recipe)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the run that --out holds (finished, failed or interrupted) with this recipe's")
    parser.add_argument("--print-config", action="store_true",
                        help="print the recipe as it would run (every key, defaults filled in, types checked) and exit")
    parser.add_argument("--allow-data-change", action="store_true", help=f"with --resume: {ALLOW_DATA_CHANGE_HELP}")


def help_epilog() -> str:
    """Every key of the sections that do not depend on the model (built only for --help: it imports torch)."""
    from rrnx.config import fit_help

    return fit_help()


def run(args, overrides) -> int:
    from rrnx.errors import RrnxError
    from rrnx.recipe import apply_overrides, load_recipe

    if args.resume:
        if overrides or args.recipe or args.overwrite or args.print_config:
            raise RrnxError("--resume continues a run exactly as it was recorded; give no recipe, overrides, "
                            "--overwrite or --print-config")
        from rrnx.run import fit, require_finite
        require_finite(fit({}, args.resume, resume=True, allow_data_change=args.allow_data_change))
        return 0
    if not args.recipe:
        raise RrnxError("a recipe is required, e.g. rrnx fit recipes/synthetic.yaml")
    from rrnx.packaged import find

    recipe = apply_overrides(load_recipe(find(args.recipe)), overrides)
    if args.print_config:
        print_config(recipe)
        return 0
    from rrnx.run import fit, require_finite
    require_finite(fit(recipe, args.out, overwrite=args.overwrite))
    return 0


def print_config(recipe: dict) -> None:
    """The complete recipe as YAML on stdout (notes on stderr): what `rrnx fit` would train."""
    import sys

    from rrnx.config import complete_recipe
    from rrnx.recipe import dump_yaml
    from rrnx.run import resolve_recipe

    resolved, notes = resolve_recipe(recipe)  # as fit records it
    for note in notes:
        print(note, file=sys.stderr)
    print(dump_yaml(complete_recipe(resolved)[0]), end="")
