"""rrnx report RUN_DIR [RUN_DIR ...] [--out DIR]: the paper's analyses of finished runs as one page."""

from pathlib import Path

from rrnx.commands import ALLOW_DATA_CHANGE_HELP

NAME = "report"
HELP = "the paper's analyses (Figs. 1, 5-11, Table 3) of finished runs: an HTML page, PNGs, W&B"

ANALYSIS_KEYS = ("exogenous", "endogenous", "scale_shift", "cold_start", "update", "granularity", "size_accuracy")


def add_arguments(parser) -> None:
    parser.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR",
                        help="finished run directories, or a sweep's output folder (its trials)")
    parser.add_argument("--out", type=Path, help="where index.html goes (default runs/report-TIME)")
    parser.add_argument("--no-wandb", action="store_true", help="do not log the figures and tables to W&B")
    parser.add_argument("--only", help=f"comma-separated analyses to run, of: {', '.join(ANALYSIS_KEYS)}")
    parser.add_argument("--labels", metavar="NAME=LABEL,...",
                        help="names for the figures: model or run folder names mapped to panel and legend labels, "
                        "e.g. rrn=RRN,pmf=PMF (default: the model's name)")
    parser.add_argument("--items", help="comma-separated item ids to trace (Figs. 5-7), e.g. award winners")
    parser.add_argument("--event-date", help="the date of the event the --items are measured against (Fig. 5)")
    parser.add_argument("--shift-date", help="a known rating-scale change to mark (Fig. 8); synthetic truth has one")
    parser.add_argument("--users", type=int, default=1000, help="fixed random users per trace (Figs. 5, 8; paper: 1000)")
    parser.add_argument("--active-users", type=int, default=5000,
                        help="active users sampled per step (Figs. 6-7; paper: 5000)")
    parser.add_argument("--items-per-group", type=int, default=256, help="items traced per group at most (Figs. 6-8)")
    parser.add_argument("--fluctuation", type=float, default=0.5,
                        help="select items whose rating fluctuation exceeds this (Fig. 6, footnote 2)")
    parser.add_argument("--min-period-ratings", type=int, default=20,
                        help="ratings a period needs to count in an item's fluctuation (footnote 2: 1000 on Netflix)")
    parser.add_argument("--min-test-ratings", type=int, default=20,
                        help="ratings an item needs in the second test step (Fig. 11; footnote 3: 100 on Netflix)")
    parser.add_argument("--min-bucket-ratings", type=int, default=20,
                        help="test ratings a bucket of the cold start and update figures needs to be shown "
                        "(smaller buckets are noise; every bucket has a bootstrap 95%% interval)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every sample")
    parser.add_argument("--dpi", type=int, default=100, help="resolution of the PNG figures")
    parser.add_argument("--allow-data-change", action="store_true", help=ALLOW_DATA_CHANGE_HELP)


def run(args, overrides) -> int:
    import shlex
    import sys

    from rrnx.errors import RrnxError
    from rrnx.report import ReportOptions, write_report
    from rrnx.report.runs import parse_labels

    labels = parse_labels(args.labels)
    only = [k.strip() for k in args.only.split(",")] if args.only else None
    unknown = sorted(set(only or ()) - set(ANALYSIS_KEYS))
    if unknown:
        raise RrnxError(f"--only: unknown analysis {', '.join(unknown)}; choose from {', '.join(ANALYSIS_KEYS)}")
    items = None
    if args.items:
        try:
            items = [int(x) for x in args.items.split(",") if x.strip()]
        except ValueError:
            raise RrnxError(f"--items: {args.items!r} is not a comma-separated list of integer item ids") from None
    for name in ("users", "active_users", "items_per_group", "min_period_ratings", "min_test_ratings",
                 "min_bucket_ratings", "dpi"):
        if getattr(args, name) < 1:
            raise RrnxError(f"--{name.replace('_', '-')}: must be at least 1, got {getattr(args, name)}")
    if args.fluctuation < 0:  # a fluctuation is a spread: a negative threshold selected every item silently
        raise RrnxError(f"--fluctuation: must be at least 0, got {args.fluctuation}")
    from rrnx.data.split import to_timestamp
    for flag, value in (("--event-date", args.event_date), ("--shift-date", args.shift_date)):
        to_timestamp(value, flag)  # a date it cannot read is refused before the report folder is made
    options = ReportOptions(n_users=args.users, n_active_users=args.active_users, items=items,
                            event_date=args.event_date, shift_date=args.shift_date,
                            items_per_group=args.items_per_group, fluctuation_threshold=args.fluctuation,
                            min_period_ratings=args.min_period_ratings, min_test_ratings=args.min_test_ratings,
                            min_bucket_ratings=args.min_bucket_ratings,
                            seed=args.seed, dpi=args.dpi)
    command = "rrnx " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:2] == ["report"] else "rrnx report"
    from rrnx.config import default_out

    write_report(args.run_dirs, args.out or default_out("report"), options, use_wandb=not args.no_wandb, only=only,
                 command=command, allow_data_change=args.allow_data_change, labels=labels)
    return 0
