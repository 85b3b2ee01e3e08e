"""Where a recipe's ratings come from when it names no file on this machine.

A recipe's `data:` section can say two things instead of a path to the user's own file:

- `path: rrnx:NAME`, a data set shipped inside the rrnx package (`rrnx/datasets/NAME/`), so the
  recipe runs from any folder on any install: `rrnx:movietweetings-100k` (MIT; its LICENSE and
  citation travel with it).
- `synthetic_fallback: PRESET`, used only when `path` is null: train on the synthetic generator
  at that preset's size (the paper's Table 1 size for the Netflix and IMDb recipes), since those
  sets cannot be shipped. With a path, the user's file is read and the key does nothing.

`resolve_source` turns the second into the explicit synthetic section it stands for, so a run's
recorded recipe says what ran (`format: synthetic, synthetic: {preset: imdb, seed: 0}`) and
rerunning it needs no rule.
"""

from __future__ import annotations

import copy
from pathlib import Path

from rrnx.errors import DataError, RecipeError

PACKAGE_SCHEME = "rrnx:"
DATASETS_DIR = Path(__file__).resolve().parents[1] / "datasets"
FALLBACK_KEY = "synthetic_fallback"
# Keys that describe the layout of a user's file; no file is read on the synthetic generator.
FILE_KEYS = ("columns", "sep")


def packaged_datasets() -> list[str]:
    """Names of the data sets shipped inside the package (`rrnx:NAME`)."""
    if not DATASETS_DIR.is_dir():
        return []
    return sorted(p.name for p in DATASETS_DIR.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))


def resolve_path(path) -> Path:
    """A ratings path on this machine: `rrnx:NAME` (or `rrnx:NAME/FILE`) is the packaged copy."""
    text = str(path)
    if not text.startswith(PACKAGE_SCHEME):
        return Path(path)
    name, _, rest = text[len(PACKAGE_SCHEME):].strip("/").partition("/")
    if name not in packaged_datasets():
        raise DataError(f"{text}: no data set {name!r} ships with rrnx; packaged data sets: "
                        f"{', '.join(packaged_datasets()) or 'none'}")
    return DATASETS_DIR / name / rest if rest else DATASETS_DIR / name


def resolve_source(data: dict) -> tuple[dict, str | None]:
    """The data section with `synthetic_fallback` resolved (the key removed), and the one line to
    print when the fallback applies (None otherwise)."""
    from rrnx.data.synthetic import PRESET_SIZED_AS, PRESETS

    if FALLBACK_KEY not in data:
        return data, None
    data = copy.deepcopy(dict(data))
    preset = data.pop(FALLBACK_KEY)
    if preset is None:
        return data, None
    if not isinstance(preset, str) or preset not in PRESETS:
        raise RecipeError(f"data.{FALLBACK_KEY}: unknown synthetic preset {preset!r}; valid: {', '.join(PRESETS)}")
    if data.get("path") is not None or data.get("format") == "synthetic":
        return data, None
    data["format"] = "synthetic"
    data["synthetic"] = {"preset": preset, "seed": 0}
    for key in FILE_KEYS:
        data.pop(key, None)
    size = PRESETS[preset]
    low, high = size.get("rating_scale", (1, 5))
    note = (f"data: no data.path: using the synthetic {preset} preset at {PRESET_SIZED_AS[preset]} size "
            f"({size['n_users']:,} users, {size['n_items']:,} items, {size['n_ratings']:,} ratings, {low}..{high}); "
            f"set data.path to train on your file")
    return data, note


def resolve_data(recipe: dict) -> tuple[dict, str | None]:
    """The recipe with its data section resolved by resolve_source, and the note to print."""
    data, note = resolve_source(recipe.get("data") or {})
    if data is recipe.get("data"):
        return recipe, None
    return {**recipe, "data": data}, note
