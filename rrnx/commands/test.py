"""rrnx test RUN_DIR: re-evaluate a finished run's best checkpoint on its test half."""

from pathlib import Path

from rrnx.commands import ALLOW_DATA_CHANGE_HELP

NAME = "test"
HELP = "re-evaluate a finished run's best checkpoint on its test half"


def add_arguments(parser) -> None:
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--allow-data-change", action="store_true", help=ALLOW_DATA_CHANGE_HELP)
    parser.add_argument("--accelerator", help="Lightning accelerator: cpu, gpu, auto (default: the run's own)")


def run(args, overrides) -> int:
    from rrnx.run import test

    test(args.run_dir, allow_data_change=args.allow_data_change, accelerator=args.accelerator)
    return 0
