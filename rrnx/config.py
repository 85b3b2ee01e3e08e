"""Typed recipe sections on jsonargparse (the library LightningCLI is built on).

Each section's keys, types, defaults and help come from the signature that consumes it: `data:`
from TemporalDataModule, `model:` from the named model's constructor, `trainer:` from
lightning.Trainer plus rrnx's own keys (`rrnx_trainer` below), `logger:` from `logger_section`.
`complete_recipe` checks every value against its type before any data loads and fills in every
default, so the recipe a run records reproduces it without relying on the defaults of the day.
"""

from __future__ import annotations

import functools
import math
import re
import types
import typing
from typing import Literal

from rrnx.errors import RecipeError

SECTIONS = ("data", "model", "trainer", "logger")
LOGGERS = ("wandb", "csv", "tensorboard", "none")
# Trainer arguments rrnx sets itself: a recipe cannot give them.
TRAINER_RESERVED = ("logger", "callbacks", "default_root_dir", "enable_checkpointing", "plugins")
# rrnx's defaults where they differ from Lightning's (the paper's 10 epochs; quiet; CPU unless asked).
TRAINER_DEFAULTS = {"max_epochs": 10, "num_sanity_val_steps": 0, "enable_model_summary": False,
                    "accelerator": "cpu", "devices": 1, "log_every_n_steps": 10}


def rrnx_trainer(seed: int = 0, num_threads: int | None = None, early_stopping_patience: int | None = None):
    """rrnx's own `trainer:` keys; every other key is a lightning.Trainer argument.

    Args:
        seed: seed of every random number generator (Lightning's seed_everything).
        num_threads: torch threads for training (null: rrnx's choice for this machine).
        early_stopping_patience: stop after this many epochs without a lower validation RMSE
            (null: train all max_epochs, the paper's protocol); the best epoch is kept either way.
    """


def logger_section(name: Literal[LOGGERS] = "wandb", project: str = "rrnx",
                   mode: Literal["offline", "online", "disabled"] | None = None,
                   entity: str | None = None, group: str | None = None, tags: list[str] | None = None,
                   job_type: str | None = None):
    """The experiment logger.

    Args:
        name: wandb (offline unless mode or WANDB_MODE says online), csv, tensorboard or none.
        project: W&B project.
        mode: W&B mode: offline (default), online or disabled.
        entity: W&B entity (team or user).
        group: W&B group (a comparison groups its runs).
        tags: W&B tags.
        job_type: W&B job type.
    """


LOGGER_KEYS = tuple(typing.get_type_hints(logger_section))


def _parser(target, nested_key: str | None = None, skip: tuple = ()):
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(exit_on_error=False, add_help=False)
    if isinstance(target, type):
        parser.add_class_arguments(target, nested_key, skip=set(skip), fail_untyped=False, sub_configs=False)
    else:
        parser.add_function_arguments(target, nested_key, skip=set(skip), fail_untyped=False)
    return parser


@functools.lru_cache(maxsize=None)
def section_parsers(section: str, target=None, nested: bool = False) -> tuple:
    """The jsonargparse parsers of a section (one per signature that consumes it)."""
    key = section if nested else None
    if section == "data":
        from rrnx.data.datamodule import TemporalDataModule
        return (_parser(TemporalDataModule, key),)
    if section == "model":
        return (_parser(target, key, ("n_users", "n_items")),)
    if section == "trainer":
        import lightning as L
        return _parser(rrnx_trainer, key), _parser(L.Trainer, key, TRAINER_RESERVED)
    return (_parser(logger_section, key),)


def section_keys(section: str, target=None) -> dict:
    """{key: annotation} of a section."""
    if section == "data":
        from rrnx.data.datamodule import TemporalDataModule
        return _hints(TemporalDataModule.__init__)
    if section == "model":
        return {k: v for k, v in _hints(target.__init__).items() if k not in ("n_users", "n_items")}
    if section == "trainer":
        import lightning as L
        return {**{k: v for k, v in _hints(L.Trainer.__init__).items() if k not in TRAINER_RESERVED},
                **_hints(rrnx_trainer)}
    return _hints(logger_section)


def _hints(function) -> dict:
    try:
        hints = typing.get_type_hints(function)
    except Exception:  # a plugin whose annotations do not resolve: its own code checks its values
        import inspect
        hints = {n: typing.Any for n in inspect.signature(function).parameters}
    return {k: v for k, v in hints.items() if k not in ("self", "return")}


def complete_section(section: str, given: dict, target=None) -> dict:
    """The section's values checked against their types, with every default filled in."""
    from jsonargparse import ArgumentError

    hints = section_keys(section, target)
    done = {}
    for parser in section_parsers(section, target):
        values = {k: v for k, v in given.items() if _has(parser, k)}
        try:
            done.update(parser.parse_object(values).as_dict())
        except ArgumentError as exc:
            raise RecipeError(one_line(section, exc, given, hints)) from None
    for key, value in done.items():
        if isinstance(value, float) and math.isnan(value):
            raise RecipeError(f"{section}.{key}: expected {type_name(hints.get(key, float))}, got nan")
    return done


def _has(parser, key: str) -> bool:
    return any(getattr(action, "dest", None) == key for action in parser._actions)


def one_line(section: str, exc: Exception, given: dict, hints: dict) -> str:
    """jsonargparse's message as one line naming the key, the type it wants and the value it got."""
    text = str(exc)
    match = re.search(r'Parser key "([^"]+)"', text) or re.search(r"[Kk]ey '([^']+)'", text)
    if match and match.group(1) in hints:
        key = match.group(1)
        return f"{section}.{key}: expected {type_name(hints[key])}, got {given.get(key)!r}"
    return f"{section}: {' '.join(text.split())}"


def type_name(annotation) -> str:
    """int, float or null, one of 'a', 'b'... : a type as a user reads it."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(type_name(a) for a in typing.get_args(annotation))
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return "null"
    if isinstance(annotation, type) and origin is None:
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def complete_recipe(recipe: dict) -> tuple[dict, type]:
    """(the recipe with every section checked and complete, the model class). The recipe's model
    section must already be resolved to one model (rrnx.recipe.resolve_model). An unknown key, model
    or a value of the wrong type is one line naming it."""
    from rrnx.registry import check_keys, get_model_class

    check_keys("data", recipe["data"], section_keys("data"), "the TemporalDataModule")
    if "name" not in recipe["model"]:
        raise RecipeError("model.name is required: a registered model (see `rrnx models`)")
    cls = get_model_class(recipe["model"]["name"])
    model = {k: v for k, v in recipe["model"].items() if k != "name"}
    check_keys("model", model, section_keys("model", cls), f"model {recipe['model']['name']!r}")
    check_keys("trainer", recipe["trainer"], section_keys("trainer"), "the trainer")
    check_keys("logger", recipe["logger"], LOGGER_KEYS, "the logger")
    done = {"data": complete_section("data", recipe["data"]),
            "model": {"name": recipe["model"]["name"], **complete_section("model", model, cls)},
            "trainer": complete_section("trainer", {**TRAINER_DEFAULTS, **recipe["trainer"]}),
            "logger": complete_section("logger", recipe["logger"])}
    for key in ("max_epochs", "num_threads", "early_stopping_patience"):  # max_epochs 0 trained nothing, then failed
        value = done["trainer"][key]
        if value is not None and value < 1:
            raise RecipeError(f"trainer.{key}: must be at least 1 (or null), got {value}")
    if not 0 <= done["trainer"]["seed"] < 2**32:  # what seed_everything accepts: a traceback after the folder was made
        raise RecipeError(f"trainer.seed: must be in 0..{2**32 - 1}, got {done['trainer']['seed']}")
    if done["data"].get("seed") is not None and done["data"]["seed"] < 0:
        raise RecipeError(f"data.seed: must be at least 0, got {done['data']['seed']}")
    return done, cls



def section_help(section: str, target=None, own_only: bool = False) -> str:
    """`--section.key (TYPE, default D)` lines of a section with the signature's docstring help;
    `own_only`: the trainer's rrnx keys without lightning.Trainer's."""
    parsers = section_parsers(section, target, nested=True)[:1 if own_only else None]
    lines = []
    for parser in parsers:
        for action in parser._actions:
            dest = getattr(action, "dest", "")
            if not dest.startswith(f"{section}.") or dest.endswith(".help") or action.default == "==SUPPRESS==":
                continue
            key = dest.split(".", 1)[1]
            hint = section_keys(section, target).get(key)
            default = action.default
            default = TRAINER_DEFAULTS.get(key, default) if section == "trainer" else default
            doc = _doc(action)
            kind = type_name(hint)
            kind = kind if len(kind) <= 40 else kind[:37] + "..."
            lines.append(f"  --{dest}  ({kind}, default {_yaml(default)})" + (f"\n      {doc}" if doc else ""))
    return "\n".join(lines)


def _doc(action) -> str:
    text = action.help or ""
    return " ".join(re.sub(r"\(type: .*?\)$", "", text).split()) if text else ""


def _yaml(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


OUT_ENV = "RRNX_OUT"


def default_out(kind: str, name: str | None = None):
    """Where a command writes when not told: $RRNX_OUT (default `runs/`) / KIND-NAME, NAME a UTC
    timestamp unless given (fit: runs/MODEL-TIME, compare: runs/compare-TIME, sweep:
    runs/sweep-STUDY, report: runs/report-TIME)."""
    import os
    from datetime import datetime, timezone
    from pathlib import Path

    name = name or datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    return Path(os.environ.get(OUT_ENV) or "runs") / f"{kind}-{name}"


def fit_help() -> str:
    """The epilog of `rrnx fit --help`: every key of the sections that do not depend on the model."""
    return ("Recipe keys (override any with --section.key=value; a recipe's values: rrnx fit RECIPE --print-config):\n\n"
            f"data:\n{section_help('data')}\n\nlogger:\n{section_help('logger')}\n\n"
            f"trainer (rrnx's own keys; every other lightning.Trainer argument is accepted too):\n"
            f"{section_help('trainer', own_only=True)}\n\n"
            "model: the keys of the model that model.name names: rrnx models NAME")
