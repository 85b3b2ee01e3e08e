"""The `rrnx` command line. Sub-commands live in rrnx/commands/, one module each."""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys

import rrnx.commands
from rrnx.errors import Interrupted, RrnxError
from rrnx.threads import prefer_passive_waits

# Commands that take recipe overrides (--section.key=value) after their own options.
TAKES_OVERRIDES_ATTR = "TAKES_OVERRIDES"
# Exit codes (docs/reliability.md): 0 done; 1 a bug in rrnx (the only case with a traceback);
# 2 a refused input (recipe, data, run folder); 3 the system refused (disk full, read-only, no
# permission); 130 interrupted. Every non-zero exit leaves nothing that a later run would trust.
EXIT_REFUSED, EXIT_SYSTEM, EXIT_INTERRUPTED = 2, 3, 130


def command_modules() -> list:
    names = sorted(m.name for m in pkgutil.iter_modules(rrnx.commands.__path__))
    return [importlib.import_module(f"rrnx.commands.{name}") for name in names]


def build_parser() -> tuple[argparse.ArgumentParser, dict]:
    parser = argparse.ArgumentParser(prog="rrnx", description="Recurrent Recommender Networks and baselines, "
                                     "trained on the past and tested on the future.")
    parser.add_argument("--version", action="version", version=f"rrnx {rrnx.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    modules = {}
    for module in command_modules():
        cmd = sub.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        module.add_arguments(cmd)
        modules[module.NAME] = module
    return parser, modules


def add_epilogs(parser: argparse.ArgumentParser, modules: dict) -> None:
    """Commands whose --help lists more than their options (e.g. fit: every recipe key) build that
    text only when --help is asked for, so that other commands start without importing torch."""
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, module in modules.items():
        if hasattr(module, "help_epilog"):
            sub.choices[name].epilog = module.help_epilog()


def quiet_known_warnings() -> None:
    """Silences the warnings rrnx knows to be noise (rrnx.loggers.NOISY_WARNINGS: torch's sparse-tensor
    beta notices, Lightning's tips); every other warning, deprecations
    of the APIs rrnx calls included, still shows."""
    import warnings

    from rrnx.loggers import NOISY_WARNINGS

    for pattern in NOISY_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)


def main(argv: list[str] | None = None) -> int:
    quiet_known_warnings()
    # idle OpenMP threads sleep instead of spinning (rrnx/threads.py); read once, when torch loads libgomp
    prefer_passive_waits()
    parser, modules = build_parser()
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        add_epilogs(parser, modules)
    args, extra = parser.parse_known_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    module = modules[args.command]
    try:
        if extra and not getattr(module, TAKES_OVERRIDES_ATTR, False):
            raise RrnxError(f"rrnx {args.command}: unrecognised arguments: {' '.join(extra)}")
        from rrnx.recipe import parse_overrides
        overrides = parse_overrides(extra)
        return int(module.run(args, overrides) or 0)
    except RrnxError as exc:
        print(f"rrnx {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except BrokenPipeError:  # the reader went away (`rrnx models rrn | head`): not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as exc:  # the file system, not rrnx: one line naming the path and the reason
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"rrnx {args.command}: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return EXIT_SYSTEM
    except KeyboardInterrupt as exc:
        print(f"rrnx {args.command}: {exc if isinstance(exc, Interrupted) else 'interrupted'}", file=sys.stderr)
        return EXIT_INTERRUPTED


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
