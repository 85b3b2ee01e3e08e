"""`rrnx compare --tune N`: the same Optuna budget for every model, on the validation half.

Each model declares its search space once, as a `search_space` class attribute in its own file
(the `space:` format of a sweep file, rrnx/sweep/spec.py). For every model of a comparison this
module builds a sweep in memory (the comparison's recipe with that model's settings, the model's
space, TPE seeded 0, the median pruner) and runs it with rrnx.sweep's own runner into
OUT/tune/MODEL/ (study journal, trials, trials.md, best-recipe.yaml). N trials count as in
`rrnx sweep` (complete, pruned or failed). The model's current settings are trial 0 (those
that lie inside the space; Optuna samples the rest), so where all of them do, tuning never ends
worse on validation than where it started.
The best trial's settings become the model's settings for the comparison's final run; all of
them are written to OUT/tuned.yaml as a recipe `model:` section.
"""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

from rrnx.errors import RecipeError, RrnxError

SPACE_ATTR = "search_space"
TUNED_FILE = "tuned.yaml"


def search_space(name: str, cls: type) -> dict:
    space = getattr(cls, SPACE_ATTR, None)
    if not isinstance(space, dict) or not space:
        raise RecipeError(f"--tune: model {name!r} declares no search space (a `{SPACE_ATTR}` class attribute "
                          f"in its file, e.g. {{'model.dim': [20, 40]}}; docs/models.md)")
    return space


def make_sweep(name: str, cls: type, recipe: dict, n_trials: int):
    """The model's tuning study as an rrnx.sweep Sweep over `recipe` (model section already the model's)."""
    from rrnx.sweep.spec import Sweep, check_sweep, parse_space

    where = Path(f"{cls.__module__}.{cls.__name__}.{SPACE_ATTR}")
    space = parse_space(where, search_space(name, cls))
    startup = min(10, max(2, n_trials // 3))  # TPE's random start, scaled to small budgets
    # no pruning in the first half of training: a stronger regularisation starts slower and ends better
    from rrnx.config import TRAINER_DEFAULTS
    warmup = max(2, int(recipe["trainer"].get("max_epochs") or TRAINER_DEFAULTS["max_epochs"]) // 2)
    sweep = Sweep(path=where, recipe_path=Path("(rrnx compare)"), base_recipe=copy.deepcopy(recipe), space=space,
                  study_name=f"tune-{name}", sampler={"name": "tpe", "seed": 0, "n_startup_trials": startup},
                  pruner={"name": "median", "n_startup_trials": startup, "n_warmup_steps": warmup},
                  n_trials=n_trials, enqueue=[start] if (start := starting_point(recipe, cls, space)) else [])
    check_sweep(sweep)
    return sweep


def starting_point(recipe: dict, cls: type, space: list) -> dict | None:
    """The model's current value of every searched key that lies inside the space (Optuna samples
    the others); None when none does."""
    from rrnx.registry import constructor_params

    current = {**constructor_params(cls), **recipe["model"]}
    point = {}
    for param in space:
        value = current.get(param.key.split(".", 1)[1]) if param.key.startswith("model.") else None
        inside = (value in param.choices if param.kind == "categorical" else
                  isinstance(value, (int, float)) and not isinstance(value, bool) and param.low <= value <= param.high)
        if inside:
            point[param.key] = value
    return point or None


def tune_model(name: str, cls: type, recipe: dict, out: Path, n_trials: int, say=print) -> tuple[dict, float]:
    """Runs (or finishes) the model's study in out; returns (tuned model section, best val RMSE)."""
    from rrnx.sweep.study import run_sweep

    sweep = make_sweep(name, cls, recipe, n_trials)
    resume = (out / "study.journal").is_file()
    result = run_sweep(sweep, out=out, n_trials=n_trials, resume=resume, say=lambda *a: say(*a))
    if result.best_params is None:
        raise RrnxError(f"--tune: no trial of {name!r} completed (see {out / 'trials.md'}); nothing to retrain")
    section = dict(recipe["model"])
    for key, value in result.best_params.items():
        section[key.split(".", 1)[1]] = value
    return section, float(result.best_val_rmse)


def write_tuned(out: Path, sections: dict[str, dict], best_val: dict[str, float], n_trials: int, command: str) -> Path:
    """OUT/tuned.yaml: a recipe `model:` section holding every model's tuned settings."""
    model = {"name": next(iter(sections))}
    model.update({name: {k: v for k, v in section.items() if k != "name"} for name, section in sections.items()})
    header = [f"# tuned by: {command}" if command else "# tuned by rrnx compare --tune",
              f"# {n_trials} trials per model (TPE, median pruner) on the validation half; best val RMSE: "
              + ", ".join(f"{n} {v:.4f}" for n, v in best_val.items()),
              "# paste `model:` into a recipe, or run one model: rrnx fit RECIPE --model.name=NAME "
              "--model.NAME.KEY=VALUE ..."]
    path = out / TUNED_FILE
    path.write_text("\n".join(header) + "\n" + yaml.safe_dump({"model": model}, sort_keys=False))
    return path
