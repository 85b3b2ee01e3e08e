"""Model registry: every model, rrnx's own included, is found through the `rrnx.models`
entry-point group, so a plugin package registers exactly as rrnx does (docs/plugins.md)."""

from __future__ import annotations

import inspect
import sys
from dataclasses import dataclass
from importlib.metadata import entry_points

from rrnx.errors import RecipeError

GROUP = "rrnx.models"


@dataclass
class ModelEntry:
    name: str
    target: str  # "module:Class"
    package: str  # distribution that declares it
    version: str
    error: str | None = None  # set when the plugin failed to import
    cls: type | None = None


def list_entries(group: str = GROUP) -> dict[str, ModelEntry]:
    """All registered models by name, from the entry points' metadata alone: nothing is imported."""
    found: dict[str, ModelEntry] = {}
    for ep in entry_points(group=group):
        dist = getattr(ep, "dist", None)
        found[ep.name] = ModelEntry(ep.name, ep.value, dist.name if dist else "?", dist.version if dist else "?")
    return found


def discover(group: str = GROUP) -> dict[str, ModelEntry]:
    """All registered models by name; raises RecipeError when two packages claim one name."""
    found: dict[str, ModelEntry] = {}
    for ep in entry_points(group=group):
        dist = getattr(ep, "dist", None)
        entry = ModelEntry(ep.name, ep.value, dist.name if dist else "?", dist.version if dist else "?")
        if ep.name in found and found[ep.name].target != entry.target:
            other = found[ep.name]
            raise RecipeError(f"two plugins claim the model name {ep.name!r}: {other.package} ({other.target}) "
                              f"and {entry.package} ({entry.target}); uninstall one of them")
        try:
            entry.cls = ep.load()
        except (Exception, SystemExit) as exc:  # a broken plugin, even one that calls sys.exit(), must not
            # take the others down
            entry.error = f"{type(exc).__name__}: {exc}"
        found[ep.name] = entry
    return found


_warned: set[str] = set()  # broken plugins already reported in this process


def warn_broken(entries: dict[str, ModelEntry]) -> None:
    """One warning per broken plugin (name, package, error) per process; the others keep working."""
    for entry in entries.values():
        if entry.error and entry.name not in _warned:
            _warned.add(entry.name)
            print(f"warning: plugin model {entry.name!r} from {entry.package} failed to import: {entry.error}",
                  file=sys.stderr)


def get_model_class(name: str) -> type:
    entries = discover()
    entry = entries.get(name)
    warn_broken({n: e for n, e in entries.items() if n != name})
    if entry is None:
        valid = ", ".join(sorted(n for n, e in entries.items() if not e.error))
        raise RecipeError(f"model.name: unknown model {name!r}; registered models: {valid}")
    if entry.error:
        raise RecipeError(f"model {name!r} (package {entry.package}) failed to import: {entry.error}")
    return entry.cls


def constructor_params(cls: type, skip: tuple[str, ...] = ("self", "n_users", "n_items")) -> dict:
    """The typed keyword arguments of a constructor: the model's config keys and their defaults."""
    params = {}
    for name, p in inspect.signature(cls.__init__).parameters.items():
        if name in skip or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        params[name] = p.default if p.default is not inspect.Parameter.empty else None
    return params


def check_keys(section: str, given: dict, valid: dict | list, owner: str) -> None:
    """An unknown key is an error that names it and lists the valid ones."""
    unknown = [k for k in given if k not in valid]
    if unknown:
        raise RecipeError(f"{section}.{unknown[0]}: unknown key for {owner}; valid keys: {', '.join(sorted(valid))}")
