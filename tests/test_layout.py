"""The layers: models are handed their data and never reach back up into the runner."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNNER = ("rrnx.run", "rrnx.training", "rrnx.commands", "rrnx.cli", "rrnx.sweep", "rrnx.report", "rrnx.compare")


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_models_do_not_import_the_runner():
    files = [*(ROOT / "rrnx" / "models").rglob("*.py"), *(ROOT / "plugins").rglob("rrnx_*/*.py")]
    assert len(files) > 8
    found = {f"{path.relative_to(ROOT)}: {name}" for path in files for name in imported_modules(path)
             if name.startswith(RUNNER)}
    assert not found


def test_models_do_not_reach_for_the_trainers_data():
    files = [*(ROOT / "rrnx" / "models").rglob("*.py"), *(ROOT / "plugins").rglob("rrnx_*/*.py")]
    found = [f"{path.relative_to(ROOT)}: {word}" for path in files for word in ("datamodule", "_trainer")
             if word in path.read_text()]
    assert not found
