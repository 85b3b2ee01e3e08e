"""rrnx sweep SWEEP.yaml [--recipe RECIPE] [--storage URL] [--workers N] [--n-trials N] [--timeout S]
[--out DIR | --resume DIR] [--study-name NAME] [--section.key=value ...]"""

from pathlib import Path

NAME = "sweep"
HELP = "search recipe values (granularity, dimensions...) with an Optuna study; report the best"
TAKES_OVERRIDES = True


def add_arguments(parser) -> None:
    parser.add_argument("sweep", type=Path, help="sweep file (e.g. sweeps/rrn-granularity.yaml), or a packaged "
                        "sweep's name (rrnx recipes)")
    parser.add_argument("--recipe", type=Path, help="run the sweep on this recipe (a file or a packaged recipe's "
                        "name) instead of the sweep file's")
    parser.add_argument("--storage", metavar="URL", help="database URL shared by many machines (postgresql://user:pw@host/db); "
                        "default: a journal file OUT/study.journal on this machine")
    parser.add_argument("--workers", type=int, default=1, metavar="N", help="worker processes on this machine (default 1)")
    parser.add_argument("--n-trials", type=int, metavar="N", help="budget: trials that ran to an answer "
                        "(complete, pruned, or failed with their own error); overrides the sweep file")
    parser.add_argument("--timeout", type=float, metavar="S", help="start no trial after S seconds")
    parser.add_argument("--resume", type=Path, metavar="DIR", help="continue the sweep whose output directory is DIR "
                        "(its study, in DIR or in --storage) until its budget; as fit --resume continues a run")
    parser.add_argument("--out", type=Path, metavar="DIR", help="output directory (default runs/sweep-STUDY_NAME)")
    parser.add_argument("--study-name", metavar="NAME", help="study name (default: the sweep file's study_name or file name)")
    parser.epilog = ("Override any recipe value with --section.key=value, as with rrnx fit, "
                     "e.g. --data.path=ratings.dat --trainer.max_epochs=2")


def run(args, overrides) -> int:
    from rrnx.errors import RrnxError
    from rrnx.packaged import find
    from rrnx.sweep import load_sweep, run_sweep

    for name in ("n_trials", "timeout"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            raise RrnxError(f"--{name.replace('_', '-')} must be positive (got {value:g})")
    if args.resume and args.out and args.out.resolve() != args.resume.resolve():
        raise RrnxError("--resume DIR continues the sweep written to DIR; give no other --out")
    sweep = load_sweep(find(args.sweep, "sweep"), overrides, recipe=find(args.recipe) if args.recipe else None)
    run_sweep(sweep, out=args.resume or args.out, storage=args.storage, workers=args.workers, n_trials=args.n_trials,
              timeout=args.timeout, resume=args.resume is not None, study_name=args.study_name)
    return 0
