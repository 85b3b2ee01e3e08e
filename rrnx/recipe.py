"""Recipes: one flat YAML per experiment with the sections data, model, trainer, logger.

Any value can be overridden on the command line with a dotted key (`--model.dim=80`,
`--data.path ratings.dat`). Unknown sections, keys and models are errors that name them.
"""

from __future__ import annotations

import copy
import datetime as dt
from pathlib import Path

import yaml

from rrnx.errors import RecipeError

from rrnx.config import SECTIONS


class _Loader(yaml.SafeLoader):
    """yaml's safe loader, except that a date-shaped value that is no date (2005-13-01) stays a string for
    the key's own check to name, where the safe loader raised a bare ValueError (a traceback)."""


def _timestamp(loader, node):
    try:
        return yaml.SafeLoader.construct_yaml_timestamp(loader, node)
    except ValueError:
        return loader.construct_scalar(node)


_Loader.add_constructor("tag:yaml.org,2002:timestamp", _timestamp)


def load_value(raw: str):
    """A command-line value read as YAML (`80`, `true`, `[1, 5]`, `2013-08-01`);
    the text itself where it is not valid YAML; None for an empty value."""
    if raw == "":
        return None
    try:
        return yaml.load(raw, Loader=_Loader)
    except yaml.YAMLError:
        return raw


def read_yaml(path: str | Path, kind: str = "recipe") -> dict:
    """A YAML mapping from a file; a missing file or a YAML error is one line naming file and line."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"{path}: {kind} file not found")
    try:
        content = yaml.load(path.read_text(), Loader=_Loader) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        raise RecipeError(f"{path}{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if not isinstance(content, dict):
        raise RecipeError(f"{path}: a {kind} is a mapping of sections to values")
    return content


def load_recipe(path: str | Path) -> dict:
    return normalize(read_yaml(path, "recipe"), str(path))


def normalize(recipe: dict, where: str = "recipe") -> dict:
    recipe = copy.deepcopy(recipe)
    for section in recipe:
        if section not in SECTIONS:
            raise RecipeError(f"{where}: unknown section {section!r}; valid sections: {', '.join(SECTIONS)}")
    logger = recipe.get("logger", "wandb")
    if logger is None or isinstance(logger, str):
        logger = {"name": logger or "none"}
    recipe["logger"] = logger
    for section in ("data", "model", "trainer"):
        recipe.setdefault(section, {})
        if not isinstance(recipe[section], dict):
            raise RecipeError(f"{where}: section {section!r} must be a mapping of keys to values")
    recipe["data"] = {k: _plain(v) for k, v in recipe["data"].items()}
    return recipe


def _plain(value):
    """YAML turns 2013-08-01 into a date; recipes keep dates as ISO strings."""
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    return value


def parse_overrides(args: list[str]) -> list[tuple[str, object]]:
    """`--section.key=value` or `--section.key value` pairs; values are read as YAML scalars."""
    pairs, i = [], 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--") or "." not in arg.split("=", 1)[0]:
            raise RecipeError(f"unrecognised argument {arg!r}; overrides look like --section.key=value "
                              f"with a section among {', '.join(SECTIONS)}")
        if "=" in arg:
            key, raw = arg[2:].split("=", 1)
        else:
            if i + 1 >= len(args):
                raise RecipeError(f"{arg}: missing value")
            key, raw = arg[2:], args[i + 1]
            i += 1
        pairs.append((key, load_value(raw)))
        i += 1
    return pairs


def apply_overrides(recipe: dict, pairs: list[tuple[str, object]]) -> dict:
    recipe = copy.deepcopy(recipe)
    for key, value in pairs:
        parts = key.split(".")
        if parts[0] not in SECTIONS:
            raise RecipeError(f"--{key}: unknown section {parts[0]!r}; valid sections: {', '.join(SECTIONS)}")
        node = recipe.setdefault(parts[0], {})
        if parts[0] == "logger" and not isinstance(node, dict):
            node = recipe["logger"] = {"name": node}
        for part in parts[1:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise RecipeError(f"--{key}: {part!r} is not a mapping")
        node[parts[-1]] = _plain(value)
    return normalize(recipe, "command line")


def resolve_model(recipe: dict) -> tuple[dict, list[str]]:
    """The recipe with its `model:` section reduced to the named model's own settings, and notes.

    A `model:` section holds `name:` plus per-model mappings keyed by model name
    (`timesvdpp: {dim: 20}`), and may hold flat keys (`--model.dim=80` on the command line).
    The named model gets its own mapping, then the flat keys it accepts on top; flat keys that
    only another model accepts are dropped with a note (never carried silently); a key no
    registered model knows is left in, for check_recipe to report."""
    from rrnx.registry import constructor_params, discover

    model = dict(recipe["model"])
    name = model.get("name")
    entries = discover()
    if name not in entries or entries[name].error:
        return recipe, []  # check_recipe names the problem
    mappings = {k: model.pop(k) for k in list(model) if k in entries and isinstance(model[k], dict)}
    model.pop("name")
    accepted = constructor_params(entries[name].cls)
    known = {key for entry in entries.values() if entry.cls is not None for key in constructor_params(entry.cls)}
    dropped = sorted(k for k in model if k not in accepted and k in known)
    notes = [f"model.{k}: not a setting of model {name!r} (another model's key), dropped" for k in dropped]
    flat = {k: v for k, v in model.items() if k not in dropped}
    resolved = copy.deepcopy(recipe)
    resolved["model"] = {"name": name, **mappings.get(name, {}), **flat}
    return resolved, notes


def describe_model(section: dict) -> str:
    """`name: key=value ...` of a resolved model section, for the log before training."""
    settings = " ".join(f"{k}={v}" for k, v in section.items() if k != "name") or "its defaults"
    return f"model {section['name']}: {settings}"


def check_recipe(recipe: dict) -> type:
    """Validates every key and value against the signatures that consume them (rrnx.config);
    returns the model class. The recipe's model section must name one model (resolve_model)."""
    from rrnx.config import complete_recipe

    return complete_recipe(recipe)[1]


def dump_yaml(recipe: dict) -> str:
    return yaml.safe_dump(recipe, sort_keys=False)


def dump_recipe(recipe: dict, path: Path, header: str = "") -> None:
    path.write_text((header + "\n" if header else "") + dump_yaml(recipe))
