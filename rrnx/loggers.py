"""Experiment loggers: W&B in offline mode by default (no account, no network), TensorBoard, CSV, or none."""

from __future__ import annotations

import logging
import os
import secrets
import warnings
from pathlib import Path

from rrnx.errors import RrnxError

# Lightning's informational chatter (GPU/TPU availability, tips, checkpoint restores) and known
# upstream deprecation warnings hide what rrnx prints; warnings and errors still come through.
NOISY_WARNINGS = (r".*LeafSpec.*", r".*does not have many workers.*", r".*smaller than the logging interval.*",
                  r".*The given NumPy array is not writable.*", r".*anonymous setting has no effect.*",
                  r".*[Ss]parse (CSR|CSC|BSR|BSC|COO)? ?tensor support is in beta.*",
                  r".*Sparse invariant checks are implicitly disabled.*",
                  r".*Checkpoint directory .* exists and is not empty.*")  # rrnx's RunDir owns that folder


def quiet_lightning() -> None:
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    for pattern in NOISY_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)


def make_logger(spec: dict, run_dir: Path, run_name: str, config: dict):
    """The recipe's `logger:` section as a Lightning logger (or False for none), writing under the
    run folder: RUN/csv/metrics.csv, RUN/tensorboard/events.out.tfevents.*, RUN/wandb/."""
    name = spec.get("name", "wandb")
    if name == "none":
        return False
    if name == "csv":
        from lightning.pytorch.loggers import CSVLogger
        return CSVLogger(save_dir=str(run_dir), name="csv", version="")
    if name == "tensorboard":  # a resumed run appends a new events file to the same folder; steps go on
        from lightning.pytorch.loggers import TensorBoardLogger
        return TensorBoardLogger(save_dir=str(run_dir), name="tensorboard", version="", default_hp_metric=False)
    from lightning.pytorch.loggers import WandbLogger
    os.environ.setdefault("WANDB_SILENT", "true")
    # the same W&B run id for every process of a run folder (WandbLogger passes resume="allow"), so
    # `rrnx fit --resume` continues the run's W&B run instead of starting a second one
    return WandbLogger(project=spec.get("project") or "rrnx", entity=spec.get("entity"), group=spec.get("group"),
                       tags=spec.get("tags"), job_type=spec.get("job_type"), name=run_name, id=wandb_run_id(run_dir),
                       save_dir=str(run_dir), mode=wandb_mode(spec), config=config)


def wandb_run_id(run_dir: Path) -> str:
    """The W&B run id recorded in the run folder (RunDir.WANDB_RUN), recorded now if there is none:
    a fresh run folder gets a new id, a resumed one keeps its first process's."""
    from rrnx.rundir import RunDir

    run = RunDir(run_dir)
    recorded = run.read_json(RunDir.WANDB_RUN).get("id") if run.file(RunDir.WANDB_RUN).is_file() else None
    if recorded:
        return str(recorded)
    run_id = secrets.token_hex(4)  # 8 characters, as W&B's own ids
    run.write_json(RunDir.WANDB_RUN, {"id": run_id})
    return run_id


def wandb_mode(spec: dict) -> str:
    """Offline unless the user asks for online in the recipe's `logger:` section or through WANDB_MODE."""
    return spec.get("mode") or os.environ.get("WANDB_MODE") or "offline"


def check_logger(spec: dict) -> None:
    """W&B asked to go online without credentials is one line before any data loads or file is written
    (W&B raised its UsageError, a traceback, once the run folder had been made)."""
    if spec.get("name", "wandb") != "wandb" or wandb_mode(spec) != "online":
        return
    import wandb

    os.environ.setdefault("WANDB_SILENT", "true")
    try:
        found = wandb.login(prompt=False)  # reads WANDB_API_KEY, the settings files, ~/.netrc; never prompts
    except TypeError:  # a wandb without login(prompt=...): it says what is missing when the run starts
        return
    except wandb.errors.Error as exc:  # e.g. a WANDB_API_KEY of the wrong form
        raise RrnxError(f"logger: W&B online: {str(exc).splitlines()[0]}") from None
    if not found:
        raise RrnxError("logger: W&B mode online needs an API key (`wandb login`, or WANDB_API_KEY); without one "
                        "leave logger.mode unset: runs log offline, and `wandb sync` uploads them later")


def summary_run(spec: dict, out: Path, job_type: str, name: str, group: str | None = None,
                config: dict | None = None):
    """One W&B run that holds a summary (a comparison, a sweep, a report), its files under `out`, for a
    recipe's `logger:` section `spec`; None when that logger is not W&B. The caller logs to it and
    finishes it (`run.finish()`, or use it as a context manager)."""
    if spec.get("name", "wandb") != "wandb":
        return None
    import wandb

    os.environ.setdefault("WANDB_SILENT", "true")
    return wandb.init(project=spec.get("project") or "rrnx", entity=spec.get("entity"), group=group,
                      job_type=job_type, name=name, dir=str(out), mode=wandb_mode(spec), config=config)


def log_summary(logger, values: dict) -> None:
    """Final numbers (test RMSE, size...) into the logger's run summary."""
    if not logger:
        return
    from lightning.pytorch.loggers import WandbLogger
    if isinstance(logger, WandbLogger):
        for key, value in values.items():
            logger.experiment.summary[key] = value
    else:
        logger.log_metrics({k: v for k, v in values.items() if isinstance(v, (int, float))})
        logger.save()


def finish(logger) -> None:
    from lightning.pytorch.loggers import WandbLogger
    if isinstance(logger, WandbLogger):
        import wandb
        wandb.finish()
