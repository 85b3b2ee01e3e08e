"""The runs a report reads: finished run directories, or a sweep's trials, loaded lazily.

Loading a run's data and model is what costs time, so both are loaded on first use, and runs
whose recipes name the same data share one TemporalDataModule.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from rrnx.errors import RrnxError
from rrnx.run import build_datamodule, data_fingerprint, load_run
from rrnx.rundir import RunDir


@dataclass
class ReportRun:
    """One finished run: its files, and its data and best-checkpoint model on demand."""

    run_dir: Path
    recipe: dict
    metrics: dict
    manifest: dict
    truth: dict | None
    data_cache: dict = field(default_factory=dict, repr=False)
    allow_data_change: bool = False
    label: str = ""  # how panels, legends and tables name the run (name_runs)
    model_label: str = ""  # how legends name its model
    _model: object = field(default=None, repr=False)
    _data_checked: bool = field(default=False, repr=False)

    def __post_init__(self) -> None:
        self.model_label = self.model_label or self.model_name
        self.label = self.label or self.model_label

    @property
    def model_name(self) -> str:
        return self.recipe["model"]["name"]

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
        data = self.data_cache[key]
        if not self._data_checked:  # each run against its own manifest, even when runs share the data
            RunDir(self.run_dir).check_data(data_fingerprint(data), data.split.summary, self.allow_data_change)
            self._data_checked = True
        return data

    @property
    def model(self):
        if self._model is None:
            from rrnx.recipe import check_recipe
            self._model = RunDir(self.run_dir).load_model(check_recipe(self.recipe))
        return self._model

    def predictions(self) -> pd.DataFrame:
        path = self.run_dir / RunDir.PREDICTIONS
        if not path.is_file():
            raise RrnxError(f"{self.run_dir}: no predictions.parquet (re-run `rrnx fit` to write it)")
        return pd.read_parquet(path)


def expand_run_dirs(paths: list[Path]) -> list[Path]:
    """Run directories from the arguments: a run directory as is, a sweep output folder as its
    finished trials (trials/*); anything else is a user error naming the path."""
    found: list[Path] = []
    for path in map(Path, paths):
        if RunDir(path).is_run():
            found.append(path)
        elif (path / "trials").is_dir():
            trials = [t for t in sorted((path / "trials").iterdir()) if RunDir(t).is_finished()]
            if not trials:
                raise RrnxError(f"{path}: a sweep folder with no finished trial under trials/")
            found.extend(trials)
        elif not path.exists():
            raise RrnxError(f"{path}: no such run directory")
        else:
            raise RrnxError(f"{path}: not a run directory (no recipe.yaml) nor a sweep folder (no trials/)")
    unique = {p.resolve(): p for p in found}
    return list(unique.values())


def parse_labels(text: str | None) -> dict[str, str]:
    """`rrn=RRN,pmf=PMF` (`--labels`) as {name: label}; a malformed value is one error line."""
    labels: dict[str, str] = {}
    for pair in filter(str.strip, (text or "").split(",")):
        name, sep, label = (part.strip() for part in pair.partition("="))
        if not (sep and name and label):
            raise RrnxError(f"--labels: {pair.strip()!r} is not NAME=LABEL; give comma-separated pairs of a model "
                            "or run folder name and its label, e.g. --labels rrn=RRN,pmf=PMF")
        if name in labels:
            raise RrnxError(f"--labels: {name!r} is given twice")
        labels[name] = label
    return labels


def name_runs(runs: list[ReportRun], labels: dict[str, str] | None = None) -> None:
    """Sets each run's `label` (panel titles, legends) and `model_label`: a label given for the run's
    folder name, else for its model, else the model's name. Runs that would share a label get
    their folder name after it (`rrn (rrn-14d)`); a name in `labels` that matches no run folder or
    model here is an error (a typo would otherwise go unnoticed)."""
    labels = labels or {}
    known = {run.run_dir.name for run in runs} | {run.model_name for run in runs}
    unknown = [name for name in labels if name not in known]
    if unknown:
        raise RrnxError(f"--labels: {', '.join(map(repr, unknown))} is no model or run folder given here; "
                        f"known: {', '.join(sorted(known))}")
    for run in runs:
        run.model_label = labels.get(run.model_name, run.model_name)
        run.label = labels.get(run.run_dir.name, run.model_label)
    chosen = Counter(run.label for run in runs if run.run_dir.name in labels)
    clash = [label for label, n in chosen.items() if n > 1]
    if clash:
        raise RrnxError(f"--labels: several run folders are labelled {clash[0]!r}; their panels would merge")
    for describe in (lambda run: run.run_dir.name, lambda run: str(run.run_dir)):
        counts = Counter(run.label for run in runs)
        for run in runs:
            if counts[run.label] > 1 and run.run_dir.name not in labels:
                run.label = f"{run.model_label} ({describe(run)})"


def load_runs(paths: list[Path], allow_data_change: bool = False,
              labels: dict[str, str] | None = None) -> list[ReportRun]:
    """Every given run (sweeps expanded), sharing one data cache, named for the figures by
    `name_runs`; each run's data is checked against its recorded fingerprint when first used."""
    if not paths:
        raise RrnxError("give at least one run directory, e.g. rrnx report runs/rrn-... runs/pmf-...")
    cache: dict = {}
    runs = []
    for run_dir in expand_run_dirs(paths):
        recipe, metrics = load_run(run_dir)
        manifest = _read_json(run_dir / RunDir.MANIFEST) or {}
        truth = _read_json(run_dir / RunDir.TRUTH)
        runs.append(ReportRun(run_dir, recipe, metrics, manifest, truth, cache, allow_data_change))
    name_runs(runs, labels)
    return runs


def _read_json(path: Path):
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise RrnxError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
