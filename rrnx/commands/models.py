"""rrnx models: list registered models and the package each comes from."""

NAME = "models"
HELP = "list the registered models (built-in and plugins) with their packages"


def add_arguments(parser) -> None:
    pass


def run(args, overrides) -> int:
    from rrnx.registry import discover

    entries = discover()
    width = max([len(n) for n in entries] + [4])
    print(f"{'name':<{width}}  package          target")
    for name in sorted(entries):
        e = entries[name]
        status = f"  [failed to import: {e.error}]" if e.error else ""
        print(f"{name:<{width}}  {e.package + ' ' + e.version:<15}  {e.target}{status}")
    return 0
