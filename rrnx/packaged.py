"""The recipes and sweeps that ship with rrnx: list them, find one by name, copy one out.

The top-level `recipes/` and `sweeps/` folders are the only copy in the repository. A wheel
carries them as `rrnx/_shipped/recipes/` and `rrnx/_shipped/sweeps/` (setup.py maps those package
names onto the two folders); an editable install or a checkout reads the folders themselves. Either
way they stay siblings, so a sweep's `recipe: ../recipes/X.yaml` resolves in both.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from rrnx.errors import RecipeError

PACKAGE_DIR = Path(__file__).resolve().parent
KINDS = {"recipe": "recipes", "sweep": "sweeps"}  # kind -> folder
SUFFIX = ".yaml"


def shipped_dir(kind: str) -> Path | None:
    """The folder of the packaged recipes or sweeps: a wheel's copy, else the checkout's own folder."""
    for folder in (PACKAGE_DIR / "_shipped" / KINDS[kind], PACKAGE_DIR.parent / KINDS[kind]):
        if folder.is_dir():
            return folder
    return None


def shipped(kind: str) -> dict[str, Path]:
    """Name (file stem) -> file of every packaged recipe or sweep, sorted by name."""
    folder = shipped_dir(kind)
    return {p.stem: p for p in sorted(folder.glob(f"*{SUFFIX}"))} if folder else {}


def launch_line(kind: str, name: str, path: Path) -> str:
    """The file's first line, its launch command, written to run from any folder (by name)."""
    first = path.read_text().split("\n", 1)[0].lstrip("#").strip()
    return first.replace(f"{KINDS[kind]}/{name}{SUFFIX}", name)


def _name(arg) -> str | None:
    """`synthetic` or `synthetic.yaml` names a packaged file; anything with a folder in it is a path."""
    text = str(arg)
    if not text or "/" in text or "\\" in text:
        return None
    return text[:-len(SUFFIX)] if text.endswith(SUFFIX) else text


def find(arg, kind: str = "recipe") -> Path:
    """The file `arg` names: an existing file wins; else a packaged recipe (sweep) of that name; else
    one line saying what was looked for and listing the packaged names."""
    path = Path(arg)
    if path.is_file():
        return path
    names = shipped(kind)
    name = _name(arg)
    if name in names:
        return names[name]
    listed = ", ".join(names) or "none"
    if name is None:
        raise RecipeError(f"{arg}: {kind} file not found; packaged {KINDS[kind]} run by name from any folder "
                          f"({listed})")
    raise RecipeError(f"{arg}: no such {kind} file here and no packaged {kind} of that name; "
                      f"packaged {KINDS[kind]}: {listed}")


def copy(name: str, dest: Path, force: bool = False) -> tuple[str, Path]:
    """Copies the packaged recipe or sweep `name` to `dest` (a file, or a folder to put NAME.yaml in);
    returns (kind, the file written). An existing file is replaced only with `force`."""
    found = [(kind, files[_name(name)]) for kind in KINDS if _name(name) in (files := shipped(kind))]
    if not found:
        listed = "; ".join(f"{KINDS[k]}: {', '.join(shipped(k)) or 'none'}" for k in KINDS)
        raise RecipeError(f"{name}: no packaged recipe or sweep of that name ({listed})")
    kind, source = found[0]
    dest = Path(dest)
    target = dest / source.name if dest.is_dir() else dest
    if target.exists() and not force:
        raise RecipeError(f"{target}: already exists; pass --force to replace it")
    if not target.parent.is_dir():
        raise RecipeError(f"{target.parent}: no such folder; create it first, or copy into an existing one")
    from rrnx.rundir import replace_atomically

    replace_atomically(target, lambda temp: shutil.copyfile(source, temp))
    return kind, target
