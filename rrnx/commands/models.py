"""rrnx models: list registered models and the package each comes from."""

NAME = "models"
HELP = "list the registered models (built-in and plugins) with their packages"


def add_arguments(parser) -> None:
    pass


def run(args, overrides) -> int:
    from rrnx.registry import discover

    entries = discover()
    packages = {name: f"{e.package} {e.version}" for name, e in entries.items()}
    width = max([len(n) for n in entries] + [4])
    pwidth = max([len(p) for p in packages.values()] + [7])
    print(f"{'name':<{width}}  {'package':<{pwidth}}  target")
    for name in sorted(entries):
        e = entries[name]
        status = f"  [failed to import: {e.error}]" if e.error else ""
        print(f"{name:<{width}}  {packages[name]:<{pwidth}}  {e.target}{status}")
    return 0
