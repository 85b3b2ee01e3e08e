"""The runs a report reads: finished run directories, or a sweep's trials, loaded lazily.

Loading a run's data and model is what costs time, so both are loaded on first use, and runs
whose recipes name the same data share one TemporalDataModule.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from rrnx.checkpoints import load_model
from rrnx.errors import RrnxError
from rrnx.run import INCOMPLETE, build_datamodule, load_run


@dataclass
class ReportRun:
    """One finished run: its files, and its data and best-checkpoint model on demand."""

    run_dir: Path
    recipe: dict
    metrics: dict
    manifest: dict
    truth: dict | None
    data_cache: dict = field(default_factory=dict, repr=False)
    _model: object = field(default=None, repr=False)

    @property
    def model_name(self) -> str:
        return self.recipe["model"]["name"]

    @property
    def label(self) -> str:
        """How figures name the run: model, and the folder when that says more."""
        name = self.run_dir.name
        return self.model_name if name == self.model_name else f"{self.model_name} ({name})"

    @property
    def fingerprint(self) -> dict:
        return self.manifest.get("data_fingerprint", {})

    @property
    def granularity(self) -> tuple[str, str]:
        data = self.recipe["data"]
        return str(data.get("user_granularity", "7d")), str(data.get("item_granularity", "7d"))

    @property
    def data(self):
        key = json.dumps(self.recipe["data"], sort_keys=True, default=str)
        if key not in self.data_cache:
            self.data_cache[key] = build_datamodule(self.recipe)
        return self.data_cache[key]

    @property
    def model(self):
        if self._model is None:
            from rrnx.recipe import check_recipe
            self._model = load_model(check_recipe(self.recipe), self.run_dir / "checkpoints" / "best.ckpt")
        return self._model

    def predictions(self) -> pd.DataFrame:
        path = self.run_dir / "predictions.parquet"
        if not path.is_file():
            raise RrnxError(f"{self.run_dir}: no predictions.parquet (re-run `rrnx fit` to write it)")
        return pd.read_parquet(path)


def expand_run_dirs(paths: list[Path]) -> list[Path]:
    """Run directories from the arguments: a run directory as is, a sweep output folder as its
    finished trials (trials/*); anything else is a user error naming the path."""
    found: list[Path] = []
    for path in map(Path, paths):
        if (path / "recipe.yaml").is_file():
            found.append(path)
        elif (path / "trials").is_dir():
            trials = [t for t in sorted((path / "trials").iterdir())
                      if (t / "metrics.json").is_file() and not (t / INCOMPLETE).exists()]
            if not trials:
                raise RrnxError(f"{path}: a sweep folder with no finished trial under trials/")
            found.extend(trials)
        elif not path.exists():
            raise RrnxError(f"{path}: no such run directory")
        else:
            raise RrnxError(f"{path}: not a run directory (no recipe.yaml) nor a sweep folder (no trials/)")
    unique = {p.resolve(): p for p in found}
    return list(unique.values())


def load_runs(paths: list[Path]) -> list[ReportRun]:
    """Every given run (sweeps expanded), sharing one data cache."""
    if not paths:
        raise RrnxError("give at least one run directory, e.g. rrnx report runs/rrn-... runs/pmf-...")
    cache: dict = {}
    runs = []
    for run_dir in expand_run_dirs(paths):
        recipe, metrics = load_run(run_dir)
        manifest = _read_json(run_dir / "manifest.json") or {}
        truth = _read_json(run_dir / "truth.json")
        runs.append(ReportRun(run_dir, recipe, metrics, manifest, truth, cache))
    return runs


def _read_json(path: Path):
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise RrnxError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
