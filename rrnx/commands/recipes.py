"""rrnx recipes [copy NAME DEST [--force]]: the recipes and sweeps that ship with rrnx."""

from pathlib import Path

NAME = "recipes"
HELP = "list the recipes and sweeps that ship with rrnx (each runs by name from any folder), or copy one out"


def add_arguments(parser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    copy = actions.add_parser("copy", help="copy a packaged recipe or sweep to a file or folder, to edit it",
                              description="copy a packaged recipe or sweep to a file or folder, to edit it")
    copy.add_argument("name", help="a packaged recipe or sweep (rrnx recipes lists them)")
    copy.add_argument("dest", type=Path, help="file to write, or an existing folder to put NAME.yaml in")
    copy.add_argument("--force", action="store_true", help="replace DEST if it exists")
    parser.epilog = "Run one by name from any folder: rrnx fit synthetic, rrnx sweep pmf-grid"


def run(args, overrides) -> int:
    from rrnx.packaged import KINDS, copy, launch_line, shipped

    if args.action == "copy":
        kind, target = copy(args.name, args.dest, args.force)
        print(f"copied the packaged {kind} {args.name} to {target}")
        return 0
    headers = {"recipe": "recipes: rrnx fit NAME, from any folder (rrnx recipes copy NAME DEST to edit one)",
               "sweep": "sweeps: rrnx sweep NAME, from any folder"}
    listed = {kind: shipped(kind) for kind in KINDS}
    width = max([len(n) for files in listed.values() for n in files] + [4])
    for kind, files in listed.items():
        print(headers[kind])
        for name, path in files.items():
            print(f"  {name:<{width}}  {launch_line(kind, name, path)}")
    return 0
