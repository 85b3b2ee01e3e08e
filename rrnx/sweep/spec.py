"""Sweep files: a recipe, a search space over its dotted keys, a sampler, a pruner and a budget.

    recipe: ../recipes/movietweetings.yaml     # relative to the sweep file, else to the cwd
    fixed: {model.name: rrn}                    # overrides applied to every trial
    space:
      data.user_granularity: [1d, 7d, 14d]      # a list is a categorical choice
      model.dim: {low: 20, high: 160, step: 20} # int range (both bounds ints)
      model.lr: {low: 1.0e-4, high: 1.0e-1, log: true}  # float range
    sampler: tpe                                # or {name: tpe, seed: 0, ...}; grid, random, cmaes...
    pruner: median                              # or {name: median, n_startup_trials: 5, ...}
    n_trials: 20                                # COMPLETE + PRUNED trials to reach
    timeout: null                               # seconds per `rrnx sweep` invocation
    enqueue: [{model.lr: 0.01}]                 # trials to run first (new studies only)

Unknown keys anywhere in the file are errors that name them; recipe keys are checked against
the recipe's own validation (rrnx.recipe.check_recipe) with a sample point of the space.
"""

from __future__ import annotations

import inspect
import itertools
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path


from rrnx.data.sources import resolve_data
from rrnx.errors import RecipeError
from rrnx.models.base import VAL_RMSE
from rrnx.recipe import apply_overrides, load_recipe, read_yaml

SWEEP_KEYS = ("recipe", "study_name", "objective", "fixed", "space", "sampler", "pruner", "n_trials",
              "timeout", "enqueue")
RANGE_KEYS = ("type", "low", "high", "step", "log", "choices")
SAMPLERS = {"tpe": "TPESampler", "random": "RandomSampler", "grid": "RandomSampler", "cmaes": "CmaEsSampler",
            "qmc": "QMCSampler", "gp": "GPSampler"}
PRUNERS = {"median": "MedianPruner", "percentile": "PercentilePruner", "hyperband": "HyperbandPruner",
           "halving": "SuccessiveHalvingPruner", "threshold": "ThresholdPruner", "none": "NopPruner"}
# One objective for now: the metric every model logs and run.fit checkpoints on (minimised).
OBJECTIVES = {VAL_RMSE: "minimize"}
NUMBER = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


@dataclass
class Param:
    """One searched recipe key: a categorical choice or an int/float range."""
    key: str
    kind: str  # categorical | int | float
    choices: list | None = None
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False

    def suggest(self, trial):
        if self.kind == "categorical":
            return trial.suggest_categorical(self.key, self.choices)
        if self.kind == "int":
            return trial.suggest_int(self.key, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(self.key, self.low, self.high, step=self.step, log=self.log)

    def grid_values(self, where: str) -> list:
        if self.kind == "categorical":
            return list(self.choices)
        if self.kind == "int" and not self.log:
            return list(range(int(self.low), int(self.high) + 1, int(self.step or 1)))
        raise RecipeError(f"{where}: space.{self.key}: the grid sampler needs a list of values "
                          f"(or an int range without log); got a {self.kind} range")

    def admits(self, value) -> bool:
        """Whether an enqueued value lies in this key's space (Optuna fails such a trial without saying why)."""
        if self.kind == "categorical":
            return value in self.choices
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (self.kind == "int" and
                                                                              not isinstance(value, int)):
            return False
        return self.low <= value <= self.high

    def sample_value(self):
        return self.choices[0] if self.kind == "categorical" else (int(self.low) if self.kind == "int" else self.low)

    def describe(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v is not None and k != "key"}


@dataclass
class Sweep:
    """A parsed sweep file; `base_recipe` already carries `fixed` and command-line overrides."""
    path: Path
    recipe_path: Path
    base_recipe: dict
    space: list[Param]
    study_name: str
    objective: str = VAL_RMSE
    sampler: dict = field(default_factory=lambda: {"name": "tpe"})
    pruner: dict = field(default_factory=lambda: {"name": "median"})
    n_trials: int | None = None
    timeout: float | None = None
    enqueue: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # printed before the study starts

    @property
    def direction(self) -> str:
        return OBJECTIVES[self.objective]

    def trial_recipe(self, params: dict) -> dict:
        """The base recipe with one trial's parameter values set."""
        return apply_overrides(self.base_recipe, list(params.items()))

    def grid(self) -> dict[str, list]:
        return {p.key: p.grid_values(str(self.path)) for p in self.space}

    def grid_size(self) -> int:
        return math.prod(len(v) for v in self.grid().values())

    def space_signature(self) -> dict:
        """What must match for two processes to share a study (stored in the study)."""
        return {"space": {p.key: p.describe() for p in self.space}, "sampler": self.sampler["name"],
                "objective": self.objective}


def load_sweep(path: str | Path, overrides: list[tuple[str, object]] | None = None,
               recipe: str | Path | None = None) -> Sweep:
    """Reads and validates a sweep file; `overrides` are command-line recipe overrides and
    `recipe` replaces the sweep file's recipe (the same search on another data set)."""
    path = Path(path)
    raw = read_yaml(path, "sweep file")
    unknown = [k for k in raw if k not in SWEEP_KEYS]
    if unknown:
        raise RecipeError(f"{path}: unknown key {unknown[0]!r} in sweep file; valid keys: {', '.join(SWEEP_KEYS)}")
    if "recipe" not in raw or "space" not in raw:
        raise RecipeError(f"{path}: a sweep file needs `recipe:` (a recipe file) and `space:` (the searched keys)")
    recipe_path = Path(recipe) if recipe else resolve_recipe_path(path, raw["recipe"])
    space = parse_space(path, raw["space"])
    searched = {p.key for p in space}
    overrides = list(overrides or [])
    for key, _ in overrides:
        if key in searched:
            raise RecipeError(f"--{key}: this key is searched by {path} (space.{key}); "
                              f"remove it from the command line or from the sweep's space")
    fixed = raw.get("fixed") or {}
    if not isinstance(fixed, dict):
        raise RecipeError(f"{path}: `fixed:` maps dotted recipe keys to values, e.g. {{model.name: rrn}}")
    base, source = resolve_data(apply_overrides(load_recipe(recipe_path), list(fixed.items()) + overrides))
    sweep = Sweep(path=path, recipe_path=recipe_path, base_recipe=base, space=space,
                  study_name=str(raw.get("study_name") or path.stem),
                  objective=raw.get("objective") or VAL_RMSE,
                  sampler=_named(path, "sampler", raw.get("sampler") or "tpe", SAMPLERS),
                  pruner=_named(path, "pruner", raw.get("pruner") or "median", PRUNERS),
                  n_trials=_positive(path, "n_trials", raw.get("n_trials"), int),
                  timeout=_positive(path, "timeout", raw.get("timeout"), float),
                  enqueue=_enqueue(path, raw.get("enqueue") or [], searched), notes=[source] if source else [])
    if sweep.objective not in OBJECTIVES:
        raise RecipeError(f"{path}: objective {sweep.objective!r} is not supported; valid: {', '.join(OBJECTIVES)}")
    try:
        check_sweep(sweep)
    except RecipeError as exc:
        where = f"{path} (recipe {recipe_path})"
        raise RecipeError(str(exc) if str(exc).startswith(str(path)) else f"{where}: {exc}") from None
    return sweep


def resolve_recipe_path(sweep_path: Path, recipe: str) -> Path:
    """Next to the sweep file, else in the current folder, else the packaged recipe of that file name
    (so a sweep copied out with `rrnx recipes copy` still finds `../recipes/X.yaml`)."""
    from rrnx.packaged import shipped

    for candidate in (sweep_path.parent / recipe, Path(recipe)):
        if candidate.is_file():
            return candidate
    packaged = shipped("recipe").get(Path(str(recipe)).stem)
    if packaged is not None and Path(str(recipe)).suffix in (".yaml", ""):
        return packaged
    raise RecipeError(f"{sweep_path}: recipe {recipe!r} not found next to the sweep file ({sweep_path.parent}), "
                      f"in the current directory, nor among the packaged recipes")


def parse_space(path: Path, space) -> list[Param]:
    if not isinstance(space, dict) or not space:
        raise RecipeError(f"{path}: `space:` maps dotted recipe keys (data.user_granularity, model.dim...) "
                          f"to a list of values or a {{low, high}} range")
    return [parse_param(path, key, spec) for key, spec in space.items()]


def parse_param(path: Path, key: str, spec) -> Param:
    where = f"{path}: space.{key}"
    if "." not in str(key):
        raise RecipeError(f"{where}: searched keys are dotted recipe keys such as model.dim")
    if isinstance(spec, list):
        spec = {"choices": spec}
    if not isinstance(spec, dict):
        raise RecipeError(f"{where}: expected a list of values or a mapping with low/high (got {spec!r})")
    unknown = [k for k in spec if k not in RANGE_KEYS]
    if unknown:
        raise RecipeError(f"{where}: unknown key {unknown[0]!r}; valid keys: {', '.join(RANGE_KEYS)}")
    if "choices" in spec:
        choices = [_number(v) for v in spec["choices"] or []]
        if not choices:
            raise RecipeError(f"{where}: empty list of values")
        return Param(key, "categorical", choices=choices)
    if "low" not in spec or "high" not in spec:
        raise RecipeError(f"{where}: a range needs both low and high")
    low, high, step = _number(spec["low"]), _number(spec["high"]), _number(spec.get("step"))
    if not all(isinstance(v, (int, float)) for v in (low, high)) or low > high:
        raise RecipeError(f"{where}: low and high must be numbers with low <= high (got {low!r}, {high!r})")
    kind = spec.get("type") or ("int" if all(isinstance(v, int) for v in (low, high, step or 1)) else "float")
    if kind not in ("int", "float"):
        raise RecipeError(f"{where}: type must be int or float for a range (a list is categorical)")
    if step is not None and (isinstance(step, bool) or not isinstance(step, (int, float)) or step <= 0):
        raise RecipeError(f"{where}: step must be a number > 0 (got {step!r})")  # 0 silently meant 1
    log = bool(spec.get("log", False))
    if log and (low <= 0 or step is not None):
        raise RecipeError(f"{where}: a log range needs low > 0 and no step")
    return Param(key, kind, low=float(low) if kind == "float" else int(low),
                 high=float(high) if kind == "float" else int(high), step=step, log=log)


def _number(value):
    """YAML 1.1 reads 1e-4 as a string; sweep values that look like numbers are numbers."""
    if isinstance(value, str) and NUMBER.match(value.strip()):
        return float(value)
    return value


def _named(path: Path, what: str, spec, known: dict) -> dict:
    spec = {"name": spec} if isinstance(spec, str) else dict(spec or {})
    if spec.get("name") not in known:
        raise RecipeError(f"{path}: {what}.name: unknown {what} {spec.get('name')!r}; valid: {', '.join(known)}")
    return spec


def _positive(path: Path, key: str, value, kind):
    if value is None:
        return None
    try:
        value = kind(value)
    except (TypeError, ValueError):
        raise RecipeError(f"{path}: {key}: expected a number (got {value!r})") from None
    if value <= 0:
        raise RecipeError(f"{path}: {key}: must be positive (got {value})")
    return value


def _enqueue(path: Path, enqueue, searched: set) -> list[dict]:
    if not isinstance(enqueue, list) or not all(isinstance(e, dict) for e in enqueue):
        raise RecipeError(f"{path}: `enqueue:` is a list of {{dotted key: value}} mappings")
    for entry in enqueue:
        for key in entry:
            if key not in searched:
                raise RecipeError(f"{path}: enqueue: {key!r} is not a searched key; searched: {', '.join(sorted(searched))}")
    return [{k: _number(v) for k, v in entry.items()} for entry in enqueue]


def check_sweep(sweep: Sweep) -> type:
    """Validates the recipe keys (sample trial), sampler/pruner options; returns the model class."""
    from rrnx.recipe import resolve_model
    from rrnx.run import plan_run, require_one_process

    sample = sweep.trial_recipe({p.key: p.sample_value() for p in sweep.space})
    plan = plan_run(resolve_model(sample)[0])  # complete and typed, the trainer checked
    require_one_process(plan.role, "rrnx sweep")  # a trial is one process; sweeps scale out with --workers
    cls = plan.cls
    make_sampler(sweep)
    make_pruner(sweep)
    params = {p.key: p for p in sweep.space}
    for entry in sweep.enqueue:
        for key, value in entry.items():
            if not params[key].admits(value):
                param = params[key]
                space = (f"one of {param.choices}" if param.kind == "categorical"
                         else f"{param.kind} {param.low}..{param.high}")
                raise RecipeError(f"{sweep.path}: enqueue: {key}={value!r} lies outside space.{key} ({space})")
    if sweep.sampler["name"] == "grid":
        grid = sweep.grid()  # raises for ranges the grid cannot enumerate
        for entry in sweep.enqueue:
            off = [k for k in grid if entry.get(k) not in grid[k]]
            if off:
                raise RecipeError(f"{sweep.path}: enqueue: {entry} is not a point of the grid ({off[0]})")
    return cls


def _construct(path: Path, what: str, cls: type, options: dict):
    params = inspect.signature(cls.__init__).parameters
    for key in options:
        if key not in params or key == "self":
            valid = ", ".join(k for k in params if k != "self")
            raise RecipeError(f"{path}: {what}.{key}: unknown option for optuna's {cls.__name__}; valid: {valid}")
    try:
        return cls(**options)
    except (TypeError, ValueError) as exc:
        raise RecipeError(f"{path}: {what}: {exc}") from None


def make_sampler(sweep: Sweep, seed_shift: int = 0):
    """The sweep's Optuna sampler; `seed_shift` keeps workers (and resumed runs) that share a
    seed from drawing the same points. A grid sweep enqueues its points when the study is
    created (initial_trials), so its sampler only fills in if the queue ever runs dry."""
    import optuna

    options = {k: v for k, v in sweep.sampler.items() if k != "name"}
    if options.get("seed") is not None:
        if isinstance(options["seed"], bool) or not isinstance(options["seed"], int):
            raise RecipeError(f"{sweep.path}: sampler.seed: expected an integer, got {options['seed']!r}")
        options["seed"] = options["seed"] + seed_shift
    name = "random" if sweep.sampler["name"] == "grid" else sweep.sampler["name"]
    return _construct(sweep.path, "sampler", getattr(optuna.samplers, SAMPLERS[name]), options)


def initial_trials(sweep: Sweep) -> list[dict]:
    """Trials enqueued when a study is created: `enqueue:` first, then (grid) every other point
    of the grid in order. Queued trials are taken by one worker each, so no point runs twice."""
    points = [dict(e) for e in sweep.enqueue]
    if sweep.sampler["name"] != "grid":
        return points
    grid = sweep.grid()
    seen = {json.dumps(p, sort_keys=True) for p in points}
    for values in itertools.product(*grid.values()):
        point = dict(zip(grid, values))
        if json.dumps(point, sort_keys=True) not in seen:
            points.append(point)
    return points


def make_pruner(sweep: Sweep):
    import optuna

    options = {k: v for k, v in sweep.pruner.items() if k != "name"}
    return _construct(sweep.path, "pruner", getattr(optuna.pruners, PRUNERS[sweep.pruner["name"]]), options)


