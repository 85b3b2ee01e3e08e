"""`rrnx report`: the paper's analyses (Wu et al., WSDM 2017, Sections 4.2-4.6) of finished runs.

Each analysis is a module with a Python API (a function returning the DataFrame it plots, and
one drawing it) and `section(runs, options)`, which the report calls; it raises Skip when the
runs given do not support it. `write_report` runs them all and writes the page.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from rrnx.report import (cold_start, endogenous, exogenous, granularity, scale_shift, size_accuracy,
                         update)
from rrnx.report.plotting import save_figure
from rrnx.report.runs import ReportRun, load_runs
from rrnx.report.section import ReportOptions, Section, Skip

ANALYSES = (exogenous, endogenous, scale_shift, cold_start, update, granularity, size_accuracy)
__all__ = ["ANALYSES", "Outcome", "ReportOptions", "ReportRun", "Section", "Skip", "load_runs",
           "run_analyses", "write_report"]


@dataclass
class Outcome:
    """One analysis in the report: its section (with the files written for it), or why not."""

    key: str
    title: str
    paper: str
    section: Section | None = None
    reason: str = ""
    pngs: list[Path] = field(default_factory=list)  # shown on the page and in W&B
    vectors: list[Path] = field(default_factory=list)  # the same figures as PDF and SVG, for papers
    csv: Path | None = None


def run_analyses(runs: list[ReportRun], options: ReportOptions, out: Path, only: list[str] | None = None,
                 say=print) -> list[Outcome]:
    """Every analysis (or those named in `only`) on `runs`; figures and plotted data go to `out`."""
    outcomes = []
    for module in ANALYSES:
        if only and module.KEY not in only:
            continue
        outcome = Outcome(module.KEY, module.TITLE, module.PAPER)
        start = time.perf_counter()
        try:
            outcome.section = module.section(runs, options)
        except Skip as skip:
            outcome.reason = str(skip)
            say(f"  {module.KEY}: skipped: {skip}")
        else:
            save_files(outcome, out, options.dpi)
            say(f"  {module.KEY}: {len(outcome.pngs)} figure(s) in {time.perf_counter() - start:.1f} s")
        outcomes.append(outcome)
    return outcomes


def save_files(outcome: Outcome, out: Path, dpi: int) -> None:
    for stem, fig in outcome.section.figures.items():
        png, *vectors = save_figure(fig, out / stem, dpi)
        outcome.pngs.append(png)
        outcome.vectors += vectors
    if outcome.section.frame is not None:
        outcome.csv = out / f"{outcome.key}.csv"
        outcome.section.frame.to_csv(outcome.csv, index=False)


def write_report(run_dirs: list[Path], out: Path, options: ReportOptions | None = None, use_wandb: bool = True,
                 only: list[str] | None = None, command: str = "rrnx report", say=print,
                 allow_data_change: bool = False, labels: dict[str, str] | None = None) -> Path:
    """Loads the runs, runs the analyses, writes out/index.html (and logs to W&B); returns the page.
    `labels` maps model or run folder names to the names figures show (`--labels rrn=RRN`)."""
    from rrnx.report.html import write_page

    options = options or ReportOptions()
    runs = load_runs(run_dirs, allow_data_change, labels)
    for run in runs:  # every run's data against its fingerprint before any figure is drawn (runs share loads)
        run.data
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    say(f"rrnx report: {len(runs)} run(s) -> {out}")
    outcomes = run_analyses(runs, options, out, only, say)
    page = write_page(out, runs, outcomes, command)
    if use_wandb:
        from rrnx.report.tracking import log_report
        say(f"  W&B: {log_report(out, runs, outcomes)}")
    say(f"report: {page}")
    return page
