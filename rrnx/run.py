"""`rrnx fit` / `rrnx test`: one recipe -> one run directory.

A run directory holds: recipe.yaml (resolved), split.json (Table 1 summary), manifest.json
(data fingerprint and settings), metrics.json (per-epoch validation RMSE, best epoch, val/test
RMSE at the best epoch, parameters, size), predictions.parquet (the test half), and
checkpoints/ (best.ckpt, last.ckpt). A run that has not finished carries the file INCOMPLETE,
and nothing downstream (`rrnx test`, reports, compare) trusts it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from rrnx.data.datamodule import TemporalDataModule
from rrnx.data.split import format_summary
from rrnx.errors import RrnxError
from rrnx.loggers import finish, log_summary, make_logger, quiet_lightning
from rrnx.models.base import VAL_RMSE
from rrnx.models.pmf import PMF
from rrnx.recipe import check_recipe, describe_model, dump_recipe, load_recipe, resolve_model
from rrnx.training import evaluate_model, fit_model, predict_model

INCOMPLETE = "INCOMPLETE"
TRAINER_DEFAULTS = {"max_epochs": 10, "num_sanity_val_steps": 0, "enable_model_summary": False,
                    "accelerator": "cpu", "devices": 1, "log_every_n_steps": 10}


class EpochHistory(Callback):
    """Records every scalar metric after each validation epoch; saved in checkpoints so a
    resumed run keeps the epochs it had finished."""

    def __init__(self) -> None:
        self.epochs: list[dict] = []
        self._start = time.perf_counter()

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._start = time.perf_counter()

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        row = {"epoch": trainer.current_epoch, "seconds": time.perf_counter() - self._start}
        row.update({k: float(v) for k, v in trainer.callback_metrics.items() if torch.is_tensor(v) and v.numel() == 1})
        self.epochs = [e for e in self.epochs if e["epoch"] != row["epoch"]] + [row]

    def state_dict(self) -> dict:
        return {"epochs": self.epochs}

    def load_state_dict(self, state_dict: dict) -> None:
        self.epochs = list(state_dict.get("epochs", []))


def build_datamodule(recipe: dict) -> TemporalDataModule:
    data = TemporalDataModule(**recipe["data"])
    data.setup("fit")
    return data


def build_model(cls: type, recipe: dict, data: TemporalDataModule, resume: bool = False):
    kwargs = {k: v for k, v in recipe["model"].items() if k != "name"}
    try:
        model = cls(n_users=data.n_users, n_items=data.n_items, **kwargs)
    except (TypeError, ValueError) as exc:
        raise RrnxError(f"model {recipe['model']['name']!r}: {exc}") from None
    model.set_data_stats(data.rating_range, data.rating_mean)
    if kwargs.get("pmf_run") and not resume:  # RRN's pre-train from a PMF run: the model gets factors, not a path
        model.use_pmf(load_pmf_run(Path(kwargs["pmf_run"]), data, model.hparams.dim))
    return model


def default_run_dir(recipe: dict) -> Path:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{recipe['model']['name']}-{stamp}"


def fit(recipe: dict, run_dir: Path | None = None, resume: bool = False, quiet: bool = False,
        callbacks: list | None = None) -> dict:
    """Trains the recipe's model; returns metrics.json's content. `callbacks` are extra Lightning
    callbacks (sweeps add their pruning callback here)."""
    quiet_lightning()
    say = (lambda *a: None) if quiet else print
    if not resume:
        recipe, notes = resolve_model(recipe)
        for note in notes:
            say(f"note: {note}")
    cls = check_recipe(recipe) if not resume else None
    run_dir = Path(run_dir) if run_dir else default_run_dir(recipe)
    last_ckpt = run_dir / "checkpoints" / "last.ckpt"
    if resume:
        if not last_ckpt.is_file():
            raise RrnxError(f"{run_dir}: nothing to resume (no checkpoints/last.ckpt)")
        recipe = load_recipe(run_dir / "recipe.yaml")
        cls = check_recipe(recipe)
    elif run_dir.exists() and any(run_dir.iterdir()):
        raise RrnxError(f"{run_dir}: run directory exists and is not empty; choose another --run-dir or pass --resume")
    trainer_cfg = {**TRAINER_DEFAULTS, **recipe["trainer"]}
    seed = trainer_cfg.pop("seed", 0)
    if trainer_cfg.get("num_threads"):
        torch.set_num_threads(int(trainer_cfg["num_threads"]))
    trainer_cfg.pop("num_threads", None)
    L.seed_everything(seed, workers=True, verbose=False)

    data = build_datamodule(recipe)  # user errors in the data surface here, before any file is written
    say(format_summary(data.split.summary, f"Split ({recipe['model']['name']}):"))
    say(describe_model(recipe["model"]))
    model = build_model(cls, recipe, data, resume)

    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / INCOMPLETE).write_text("this run has not finished; do not trust its files\n")
    (run_dir / "metrics.json").unlink(missing_ok=True)
    dump_recipe(recipe, run_dir / "recipe.yaml", f"# resolved recipe; rerun with: rrnx fit {run_dir}/recipe.yaml")
    write_json(run_dir / "split.json", data.split.summary)
    write_json(run_dir / "manifest.json", manifest(recipe, data))
    if data.truth is not None:
        write_json(run_dir / "truth.json", data.truth)

    logger = make_logger(recipe["logger"], run_dir, run_dir.name, recipe)
    if logger:
        logger.log_hyperparams({"split": data.split.summary, "params": model.num_parameters()})
    history = EpochHistory()
    best = ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="best", monitor=VAL_RMSE, mode="min",
                           enable_version_counter=False)
    # every epoch, improving or not (Lightning's save_last writes last.ckpt only when best.ckpt changes)
    last = ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="last", enable_version_counter=False)
    trainer = L.Trainer(default_root_dir=str(run_dir), logger=logger,
                        callbacks=[history, best, last, *(callbacks or [])], **trainer_cfg)
    start = time.perf_counter()
    fit_model(trainer, model, data, ckpt_path=str(last_ckpt) if resume else None)
    train_seconds = time.perf_counter() - start
    if not best.best_model_path:
        raise RrnxError(f"{run_dir}: training produced no checkpoint (no validation epoch ran)")

    epochs = list(history.epochs)  # testing best.ckpt restores the callbacks' state as of the best epoch
    test_rmse = evaluate_model(trainer, model, data, best.best_model_path)
    predictions(trainer, model, data, best.best_model_path).to_parquet(run_dir / "predictions.parquet", index=False)
    metrics = summarize(epochs, test_rmse, model, train_seconds, recipe, run_dir)
    write_json(run_dir / "metrics.json", metrics)
    log_summary(logger, {k: v for k, v in metrics.items() if k != "epochs"})
    finish(logger)
    (run_dir / INCOMPLETE).unlink()
    say(f"{recipe['model']['name']}: best epoch {metrics['best_epoch']}  val RMSE {metrics['val_rmse']:.4f}  "
        f"test RMSE {metrics['test_rmse']:.4f}  ({metrics['params']:,} parameters, {metrics['size_bytes']:,} bytes)")
    say(f"run directory: {run_dir}")
    return metrics


def predictions(trainer, model, data, ckpt_path, split: str = "test") -> pd.DataFrame:
    """The split's ratings with original ids and the model's (clamped) predictions."""
    predicted = predict_model(trainer, model, data, split, ckpt_path)
    frame = data.split.frame(split)
    return pd.DataFrame({"user": frame["user"].to_numpy(), "item": frame["item"].to_numpy(),
                         "timestamp": frame["timestamp"].to_numpy(), "rating": frame["rating"].to_numpy(),
                         "prediction": predicted.numpy().astype(np.float32)})


def summarize(epochs: list[dict], test_rmse: float, model, train_seconds: float, recipe: dict, run_dir: Path) -> dict:
    scored = [e for e in epochs if VAL_RMSE in e]
    best = min(scored, key=lambda e: e[VAL_RMSE])
    return {"model": recipe["model"]["name"], "best_epoch": best["epoch"], "val_rmse": best[VAL_RMSE],
            "test_rmse": test_rmse, "params": model.num_parameters(), "size_bytes": model.size_bytes(),
            "train_seconds": train_seconds, "epochs": epochs, "checkpoint": str(run_dir / "checkpoints" / "best.ckpt")}


def manifest(recipe: dict, data: TemporalDataModule) -> dict:
    fingerprint = {name: hashlib.sha256(pd.util.hash_pandas_object(
        data.split.frame(name)[["user", "item", "rating", "timestamp"]], index=False).to_numpy().tobytes()
    ).hexdigest()[:16] for name in ("train", "val", "test")}
    return {"created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "data": recipe["data"],
            "data_fingerprint": fingerprint, "rating_range": list(data.rating_range),
            "rrnx_version": __import__("rrnx").__version__, "torch": torch.__version__, "lightning": L.__version__}


def write_json(path: Path, content) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(content, indent=2, default=str))
    tmp.replace(path)


def load_run(run_dir: Path) -> tuple[dict, dict]:
    """A finished run's recipe and metrics; refuses unfinished runs."""
    run_dir = Path(run_dir)
    if not (run_dir / "recipe.yaml").is_file():
        raise RrnxError(f"{run_dir}: not a run directory (no recipe.yaml)")
    if (run_dir / INCOMPLETE).exists() or not (run_dir / "metrics.json").is_file():
        raise RrnxError(f"{run_dir}: this run did not finish; resume it with `rrnx fit --resume {run_dir}`")
    return load_recipe(run_dir / "recipe.yaml"), json.loads((run_dir / "metrics.json").read_text())


def load_trained(run_dir: Path):
    """(recipe, metrics, data, model) of a finished run, the model at its best checkpoint."""
    recipe, metrics = load_run(run_dir)
    cls = check_recipe(recipe)
    data = build_datamodule(recipe)
    ckpt = Path(run_dir) / "checkpoints" / "best.ckpt"
    model = cls.load_from_checkpoint(str(ckpt), map_location="cpu")
    model.eval()
    return recipe, metrics, data, model


def load_pmf_run(run_dir: Path, data: TemporalDataModule, dim: int):
    """A finished PMF run's model (`model.pmf_run` of RRN), checked against this data (same training
    ratings) and this dim."""
    recipe, _ = load_run(run_dir)
    if recipe["model"]["name"] != "pmf":
        raise RrnxError(f"model.pmf_run: {run_dir} is a {recipe['model']['name']!r} run; it must be a pmf run")
    recorded = json.loads((run_dir / "manifest.json").read_text())["data_fingerprint"]["train"]
    current = manifest({"data": {}}, data)["data_fingerprint"]["train"]
    if recorded != current:
        raise RrnxError(f"model.pmf_run: {run_dir} was trained on other training ratings (fingerprint {recorded} "
                        f"vs {current}); train PMF on this recipe's data and split first")
    pmf = PMF.load_from_checkpoint(str(run_dir / "checkpoints" / "best.ckpt"), map_location="cpu")
    found = tuple(pmf.user_factors.weight.shape), tuple(pmf.item_factors.weight.shape)
    wanted = (data.n_users, dim), (data.n_items, dim)
    if found != wanted:
        raise RrnxError(f"model.pmf_run: {run_dir} has factors of shape {found[0]} (users) and {found[1]} (items); "
                        f"this RRN needs {wanted[0]} and {wanted[1]}: set model.dim={found[0][1]} or re-run PMF "
                        f"with --model.dim={dim}")
    return pmf


def test(run_dir: Path, quiet: bool = False) -> float:
    """Re-evaluates a finished run's best checkpoint on its test half."""
    quiet_lightning()
    recipe, metrics, data, model = load_trained(run_dir)
    trainer = L.Trainer(logger=False, accelerator="cpu", devices=1, enable_progress_bar=not quiet,
                        enable_model_summary=False)
    rmse = evaluate_model(trainer, model, data)
    if not quiet:
        print(format_summary(data.split.summary, "Split:"))
        print(f"{recipe['model']['name']}: test RMSE {rmse:.4f} (recorded at fit time: {metrics['test_rmse']:.4f})")
    return rmse


def remove_run_dir(run_dir: Path) -> None:
    if run_dir.exists():
        shutil.rmtree(run_dir)
