"""Recipes: one flat YAML per experiment with the sections data, model, trainer, logger.

Any value can be overridden on the command line with a dotted key (`--model.dim=80`,
`--data.path ratings.dat`). Unknown sections, keys and models are errors that name them.
"""

from __future__ import annotations

import copy
import datetime as dt
import inspect
import types
import typing
from pathlib import Path

import yaml

from rrnx.errors import RecipeError

SECTIONS = ("data", "model", "trainer", "logger")
LOGGER_KEYS = ("name", "project", "mode", "entity", "group", "tags", "job_type")
LOGGERS = ("wandb", "tensorboard", "csv", "none")
# Trainer keys rrnx itself handles; all other keys go to lightning.Trainer as they are.
TRAINER_OWN_KEYS = ("seed", "num_threads")
TRAINER_RESERVED = ("logger", "callbacks", "default_root_dir", "enable_checkpointing")
TRAINER_OWN_TYPES = {"seed": int, "num_threads": int | None}


def read_yaml(path: str | Path, kind: str = "recipe") -> dict:
    """A YAML mapping from a file; a missing file or a YAML error is one line naming file and line."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"{path}: {kind} file not found")
    try:
        content = yaml.safe_load(path.read_text()) or {}
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
        try:
            value = yaml.safe_load(raw) if raw != "" else None
        except yaml.YAMLError:
            value = raw
        pairs.append((key, value))
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
    """Validates every key against the signatures that consume it; returns the model class."""
    from rrnx.data.datamodule import TemporalDataModule
    from rrnx.registry import check_keys, constructor_params, get_model_class

    check_keys("data", recipe["data"], constructor_params(TemporalDataModule, ("self",)), "the TemporalDataModule")
    check_types("data", recipe["data"], type_hints(TemporalDataModule.__init__))
    model = dict(recipe["model"])
    if "name" not in model:
        raise RecipeError("model.name is required: a registered model (see `rrnx models`)")
    cls = get_model_class(model.pop("name"))
    check_keys("model", model, constructor_params(cls), f"model {recipe['model']['name']!r}")
    check_types("model", recipe["model"], type_hints(cls.__init__))
    check_keys("trainer", recipe["trainer"], trainer_keys(), "the trainer")
    check_types("trainer", recipe["trainer"], trainer_types())
    threads = recipe["trainer"].get("num_threads")
    if threads is not None and threads < 1:
        raise RecipeError(f"trainer.num_threads: must be at least 1, got {threads}")
    check_keys("logger", recipe["logger"], LOGGER_KEYS, "the logger")
    if recipe["logger"].get("name", "wandb") not in LOGGERS:
        raise RecipeError(f"logger.name: unknown logger {recipe['logger']['name']!r}; valid: {', '.join(LOGGERS)}")
    return cls


def type_hints(function) -> dict:
    """The annotations of a signature; a plugin whose annotations do not resolve is not type-checked."""
    try:
        return typing.get_type_hints(function)
    except Exception:  # unresolvable forward references in a plugin: its own code checks its values
        return {}


def check_types(section: str, given: dict, hints: dict) -> None:
    """Values of keys annotated with int, float or bool (or an optional/union of them) must be of that
    type: 'abc' for a learning rate is an error naming the key, not a traceback from deep inside.
    A float written as YAML reads '1e-3' (a string: YAML 1.1 wants '1.0e-3') becomes that float."""
    for key, value in list(given.items()):
        allowed = _scalar_types(hints.get(key))
        if allowed is None or (value is None and type(None) in allowed):
            continue
        if float in allowed and isinstance(value, str):
            try:
                given[key] = value = float(value)
            except ValueError:
                pass
        if not any(_is_a(value, t) for t in allowed if t is not type(None)) or value != value:  # NaN != NaN
            names = " or ".join("null" if t is type(None) else t.__name__ for t in allowed)
            raise RecipeError(f"{section}.{key}: expected {names}, got {value!r}")


def _scalar_types(annotation) -> tuple | None:
    members = typing.get_args(annotation) if typing.get_origin(annotation) in (typing.Union, types.UnionType) \
        else (annotation,)
    if members and all(t in (int, float, bool, type(None)) for t in members) and any(t is not type(None)
                                                                                     for t in members):
        return tuple(members)
    return None


def _is_a(value, expected: type) -> bool:
    if isinstance(value, bool) or expected is bool:
        return isinstance(value, bool) and expected is bool
    return isinstance(value, (int, float) if expected is float else expected)


def trainer_types() -> dict:
    import lightning as L

    return {**type_hints(L.Trainer.__init__), **TRAINER_OWN_TYPES}


def trainer_keys() -> list[str]:
    import lightning as L

    names = [n for n in inspect.signature(L.Trainer.__init__).parameters if n != "self"]
    return [n for n in names if n not in TRAINER_RESERVED] + list(TRAINER_OWN_KEYS)


def dump_recipe(recipe: dict, path: Path, header: str = "") -> None:
    text = yaml.safe_dump(recipe, sort_keys=False)
    path.write_text((header + "\n" if header else "") + text)
