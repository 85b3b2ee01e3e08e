"""Optuna sweeps over any recipe key (granularity, dimensions, learning rates...): sweep files
(spec), where studies live (storage), the trial workers (runner) and the report (report).
See docs/sweeps.md."""

from rrnx.sweep.spec import Param, Sweep, load_sweep
from rrnx.sweep.study import SweepResult, run_sweep

__all__ = ["Param", "Sweep", "SweepResult", "load_sweep", "run_sweep"]
