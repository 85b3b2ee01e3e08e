"""rrnx models [NAME] [--check]: the registered models, or one model's settings."""

NAME = "models"
HELP = "list the registered models (built-in and plugins), or show one model's settings"


def add_arguments(parser) -> None:
    parser.add_argument("name", nargs="?", help="a model: print its settings (types, defaults, help) and its "
                                                "search space for rrnx compare --tune")
    parser.add_argument("--check", action="store_true",
                        help="import every model and report the ones that fail (slower: imports torch)")


def run(args, overrides) -> int:
    if args.name:
        return show_model(args.name)
    from rrnx.registry import discover, list_entries

    # listing reads the entry points' metadata only, so it answers without importing torch
    entries = discover() if args.check else list_entries()
    packages = {name: f"{e.package} {e.version}" for name, e in entries.items()}
    width = max([len(n) for n in entries] + [4])
    pwidth = max([len(p) for p in packages.values()] + [7])
    print(f"{'name':<{width}}  {'package':<{pwidth}}  target")
    for name in sorted(entries):
        e = entries[name]
        status = f"  [failed to import: {e.error}]" if e.error else ""
        print(f"{name:<{width}}  {packages[name]:<{pwidth}}  {e.target}{status}")
    if not args.check:
        print("\nrrnx models NAME shows a model's settings; rrnx models --check imports every model")
    return 0


def show_model(name: str) -> int:
    import inspect

    from rrnx.config import section_help
    from rrnx.registry import get_model_class, list_entries

    cls = get_model_class(name)
    entry = list_entries()[name]
    summary = (inspect.getdoc(cls) or "").split("\n\n")[0].replace("\n", " ")
    print(f"{name}: {summary}\n  {entry.target} ({entry.package} {entry.version})\n")
    print(f"settings (recipe section model:, or --model.KEY=VALUE):\n{section_help('model', cls)}")
    space = getattr(cls, "search_space", None)
    if space:
        print("\nsearch space (rrnx compare --tune):")
        for key, values in space.items():
            print(f"  {key}: {values}")
    return 0
