"""rrnx test RUN_DIR: re-evaluate a finished run's best checkpoint on its test half."""

from pathlib import Path

NAME = "test"
HELP = "re-evaluate a finished run's best checkpoint on its test half"


def add_arguments(parser) -> None:
    parser.add_argument("run_dir", type=Path)


def run(args, overrides) -> int:
    from rrnx.run import test

    test(args.run_dir)
    return 0
