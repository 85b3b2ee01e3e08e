"""The report's figures and tables in W&B (offline unless WANDB_MODE says otherwise)."""

from __future__ import annotations

from pathlib import Path

from rrnx.loggers import summary_run

MAX_TABLE_ROWS = 20_000  # a W&B table beyond this is slow to sync and to view; the CSV has it all


def log_report(out: Path, runs, outcomes, project: str = "rrnx") -> str:
    """One `report` job in W&B: each figure as an image, each table and plotted frame as a table,
    skip reasons in the summary. Returns the W&B run's local folder."""
    import wandb

    config = {"runs": [str(run.run_dir) for run in runs]}
    with summary_run({"project": project}, out, "report", f"report-{out.resolve().name}", config=config) as run:
        for outcome in outcomes:
            if outcome.section is None:
                run.summary[f"{outcome.key}/skipped"] = outcome.reason
                continue
            logged = {f"{outcome.key}/{png.stem}": wandb.Image(str(png)) for png in outcome.pngs}
            for name, table in outcome.section.tables.items():
                logged[f"{outcome.key}/{name}"] = wandb.Table(dataframe=loggable(table))
            frame = outcome.section.frame
            if frame is not None:
                logged[f"{outcome.key}/data"] = wandb.Table(dataframe=loggable(frame.head(MAX_TABLE_ROWS)))
            run.log(logged)
        return run.dir


def loggable(frame):
    """Dates as text: W&B tables take numbers and strings."""
    frame = frame.copy()
    for column in frame.columns:
        if not (frame[column].dtype.kind in "biuf"):
            frame[column] = frame[column].astype(str)
    return frame
