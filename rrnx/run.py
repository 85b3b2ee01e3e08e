"""`rrnx fit` / `rrnx test`: one recipe -> one run directory.

A run directory (rrnx.rundir.RunDir owns its layout, lock and lifecycle) holds: recipe.yaml
(resolved), split.json (Table 1 summary), manifest.json (data fingerprint and settings),
metrics.json (per-epoch validation RMSE, best epoch, val/test RMSE at the best epoch, parameters,
size), predictions.parquet (the test half), and checkpoints/ (best.ckpt, last.ckpt). A run that has
not finished carries the file INCOMPLETE, and nothing downstream (`rrnx test`, reports, compare)
trusts it.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping

from rrnx.data.datamodule import TemporalDataModule
from rrnx.data.sources import resolve_data
from rrnx.data.split import format_summary
from rrnx.distributed import (Role, check_launcher, end_process_group, role_of, share_run, shared_run,
                              trainer_arguments, unshare_run)
from rrnx.errors import Interrupted, RrnxError
from rrnx.loggers import check_logger, finish, log_summary, make_logger, quiet_lightning
from rrnx.models.base import VAL_RMSE
from rrnx.models.pmf import PMF
from rrnx.config import TRAINER_DEFAULTS, complete_recipe
from rrnx.recipe import check_recipe, describe_model, dump_recipe, load_recipe, resolve_model
from rrnx.rundir import AtomicCheckpointIO, RunCheckpoint, RunDir, replace_atomically
from rrnx.training import CpuThreads, RngState, StopOnDivergence, evaluate_model, fit_model, predict_model

INCOMPLETE = RunDir.INCOMPLETE


class EpochHistory(Callback):
    """Records every scalar metric after each validation epoch, and the training time; saved in
    checkpoints so a resumed run keeps the epochs it had finished and the seconds they took."""

    def __init__(self) -> None:
        self.epochs: list[dict] = []
        self._start = time.perf_counter()
        self._fit_start = time.perf_counter()
        self._seconds_before = 0.0  # training time of the processes before a resume

    def on_fit_start(self, trainer, pl_module) -> None:
        self._fit_start = time.perf_counter()

    def train_seconds(self) -> float:
        """Seconds spent in fit, over every process of the run (resumes included)."""
        return self._seconds_before + time.perf_counter() - self._fit_start

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._start = time.perf_counter()

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        row = {"epoch": trainer.current_epoch, "seconds": time.perf_counter() - self._start}
        row.update({k: float(v) for k, v in trainer.callback_metrics.items() if torch.is_tensor(v) and v.numel() == 1})
        self.epochs = [e for e in self.epochs if e["epoch"] != row["epoch"]] + [row]

    def state_dict(self) -> dict:
        return {"epochs": self.epochs, "train_seconds": self.train_seconds()}

    def load_state_dict(self, state_dict: dict) -> None:
        self.epochs = list(state_dict.get("epochs", []))
        self._seconds_before = float(state_dict.get("train_seconds", 0.0))
        self._fit_start = time.perf_counter()


def build_datamodule(recipe: dict) -> TemporalDataModule:
    data = TemporalDataModule(**recipe["data"])
    data.setup("fit")
    return data


def build_model(cls: type, recipe: dict, data: TemporalDataModule, resume: bool = False):
    kwargs = {k: v for k, v in recipe["model"].items() if k != "name"}
    try:
        model = cls(n_users=data.n_users, n_items=data.n_items, **kwargs)
    except (TypeError, ValueError, RuntimeError) as exc:  # RuntimeError: torch refusing a negative size
        raise RrnxError(f"model {recipe['model']['name']!r}: {exc}; check the model.* values") from None
    tensors = list(model.parameters())  # not num_parameters(): a model fitted outside torch counts 0 until fitted
    if tensors and all(p.numel() == 0 for p in tensors):
        raise RrnxError(f"model {recipe['model']['name']!r}: these settings give a model with no parameters "
                        f"({', '.join(f'{k}={v}' for k, v in kwargs.items())}); "
                        "sizes such as model.dim must be at least 1")
    model.set_data_stats(data.rating_range, data.rating_mean)
    if kwargs.get("pmf_run") and not resume:  # RRN's pre-train from a PMF run: the model gets factors, not a path
        model.use_pmf(load_pmf_run(Path(kwargs["pmf_run"]), data, model.hparams.dim))
    return model


def check_trainer(trainer_cfg: dict) -> Role:
    """Builds a throwaway Trainer so that settings this machine cannot honour (accelerator: gpu with
    no GPU, devices: 4 on one) are one line before any data loads or file is written; returns this
    process's rank and the number of processes (rrnx.distributed)."""
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    quiet_lightning()  # sweeps check their trial recipe here, before fit() has quietened Lightning
    try:
        trainer = L.Trainer(**{**trainer_cfg, "logger": False, "enable_checkpointing": False})
    # ImportError: an accelerator whose package is missing (tpu: torch_xla)
    except (MisconfigurationException, ValueError, TypeError, RuntimeError, ImportError) as exc:
        raise RrnxError(f"trainer: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    check_launcher(trainer)
    return role_of(trainer)


@dataclass
class Plan:
    """A complete recipe and what the runner takes from it before any data loads."""

    recipe: dict
    cls: type
    trainer: dict  # lightning.Trainer's arguments (rrnx's own trainer keys taken out)
    seed: int
    num_threads: int | None
    patience: int | None
    role: Role


def plan_run(recipe: dict) -> Plan:
    """Every value typed and every default filled in, the trainer checked, this process's rank known."""
    recipe, cls = complete_recipe(recipe)
    trainer_cfg = dict(recipe["trainer"])
    seed, num_threads = trainer_cfg.pop("seed"), trainer_cfg.pop("num_threads")
    patience = trainer_cfg.pop("early_stopping_patience")
    check_logger(recipe["logger"])
    return Plan(recipe, cls, trainer_cfg, seed, num_threads, patience, check_trainer(trainer_cfg))


def resolve_recipe(recipe: dict) -> tuple[dict, list[str]]:
    """The recipe as a run records it, and the lines to print: no data.path -> the synthetic section
    it stands for (rrnx.data.sources), the model section -> the named model's own settings."""
    recipe, source = resolve_data(recipe)
    recipe, notes = resolve_model(recipe)
    return recipe, ([source] if source else []) + [f"note: {note}" for note in notes]


def require_one_process(role: Role, command: str) -> None:
    if role.world_size > 1:
        raise RrnxError(f"{command} trains each run in one process; the trainer settings ask for {role.world_size} "
                        "(trainer.strategy, devices, num_nodes): train one recipe on several with rrnx fit, "
                        "or set --trainer.devices=1")


def default_run_dir(recipe: dict) -> Path:
    from rrnx.config import default_out

    return default_out(recipe["model"].get("name") or "run")  # no name: complete_recipe says so before any write


def fit(recipe: dict, run_dir: Path | None = None, resume: bool = False, quiet: bool = False,
        callbacks: list | None = None, overwrite: bool = False, allow_data_change: bool = False,
        one_process: str | None = None) -> dict:
    """Trains the recipe's model; returns metrics.json's content. `callbacks` are extra Lightning
    callbacks (sweeps add their pruning callback here). The run folder is locked for the whole run,
    before any data loads (docs/reliability.md). Under DDP only rank 0 locks and writes; the other
    ranks train the same run (rrnx.distributed). `one_process`: the command calling, when it trains in
    one process only (Lightning's DDP launcher would run that whole command again in each rank)."""
    quiet_lightning()
    shared = shared_run()  # this process was launched by rank 0 for its run
    if shared is not None:
        run_dir, quiet = Path(shared.path), True
    say = (lambda *a: None) if quiet else print
    if shared is None and not resume:
        recipe, notes = resolve_recipe(recipe)
        for note in notes:
            say(note)
    run = RunDir(run_dir if run_dir else default_run_dir(recipe))
    recorded = shared is not None or resume
    plan = plan_run(load_recipe(run.file(RunDir.RECIPE)) if recorded else recipe) \
        if not recorded or run.is_run() else None  # a resume of a non-run: claim says why, under the lock
    if one_process and plan is not None:
        require_one_process(plan.role, one_process)
    if plan is not None and not plan.role.writes:
        return follow(run, plan, shared, run_dir is not None, resume, callbacks or [])
    try:
        with run.lock():
            recipe, resume = claim(run, recipe, resume, overwrite, say)
            return _train(run, plan or plan_run(recipe), resume, say, callbacks or [], allow_data_change)
    except KeyboardInterrupt as exc:
        if isinstance(exc, Interrupted):
            raise
        raise Interrupted(where_interrupted(run)) from None


def follow(run: RunDir, plan: Plan, shared, out_given: bool, resume: bool, callbacks: list) -> dict:
    """A rank other than 0: trains the run rank 0 owns, takes no lock and writes nothing. Launched by
    rank 0, it takes rank 0's decision to resume; launched with the others (torchrun), it needs the
    run folder named (--out) and resumes what the folder holds, as rank 0 decides from the same files."""
    if shared is None and not out_given:
        raise RrnxError("several processes started at once (torchrun, a scheduler) must be told their run folder: "
                        "give every process the same --out")
    resume = shared.resume if shared is not None else resume and run.has_checkpoint()
    return _train(run, plan, resume, lambda *a: None, callbacks)


def where_interrupted(run: RunDir) -> str:
    """What a Ctrl-C left in the run folder and the command that continues from it."""
    if run.has_checkpoint():
        epoch = checkpoint_epoch(run)
        return (f"interrupted; {run} keeps its last finished epoch ({epoch}): `rrnx fit --resume {run}` "
                f"continues it, --overwrite with a recipe replaces it")
    if run.is_run():
        return (f"interrupted before the first epoch finished; `rrnx fit --resume {run}` restarts it with its "
                f"recorded recipe")
    if run.file(RunDir.INCOMPLETE).exists():
        return f"interrupted while starting; rerun with --out {run} --overwrite (nothing in it is kept)"
    return "interrupted before anything was written"


def checkpoint_epoch(run: RunDir) -> str:
    try:
        return str(torch.load(run.checkpoint("last"), map_location="cpu", weights_only=True)["epoch"])
    except Exception:  # the folder is what --resume checks; the message only names the epoch when it can
        return "?"


def claim(run: RunDir, recipe: dict, resume: bool, overwrite: bool, say) -> tuple[dict, bool]:
    """The recipe to train and whether to continue from last.ckpt, from what the folder holds and
    what was asked; a folder that cannot serve the request is one line saying what would."""
    if resume:
        if not run.is_run():
            hint = ("; it stopped before recording its recipe: rerun with the recipe and --overwrite"
                    if run.file(RunDir.INCOMPLETE).exists() else ": not a run directory")
            raise RrnxError(f"{run}: nothing to resume (no {RunDir.RECIPE}){hint}")
        recipe = load_recipe(run.file(RunDir.RECIPE))
        if run.has_checkpoint():
            run.check_checkpoint("last")
            return recipe, True
        say(f"{run}: the run stopped before its first checkpoint; restarting it from the start "
            f"with its recorded recipe")
        run.clear()
        return recipe, False
    if not run.contents():
        return recipe, False
    if overwrite:
        if not run.is_run() and not run.file(RunDir.INCOMPLETE).exists():
            raise RrnxError(f"{run}: --overwrite replaces run directories only, and this is not one "
                            f"(no {RunDir.RECIPE}); choose another --out")
        say(f"{run}: replacing the run it held (--overwrite)")
        run.clear()
        return recipe, False
    if run.is_finished():
        raise RrnxError(f"{run}: holds a finished run; choose another --out, or pass --overwrite to replace it")
    if run.is_run() and run.has_checkpoint():
        raise RrnxError(f"{run}: holds an unfinished run; `rrnx fit --resume {run}` continues it from its last "
                        f"checkpoint, --overwrite replaces it with this recipe")
    if run.is_run():
        raise RrnxError(f"{run}: holds a run that stopped before its first checkpoint; `rrnx fit --resume {run}` "
                        f"restarts it with its recorded recipe, --overwrite replaces it with this recipe")
    if run.file(RunDir.INCOMPLETE).exists():
        raise RrnxError(f"{run}: holds a run that stopped before it recorded its recipe; --overwrite replaces it "
                        f"with this recipe")
    raise RrnxError(f"{run}: run directory exists and is not empty; choose another --out")


def _train(run: RunDir, plan: Plan, resume: bool, say, callbacks: list, allow_data_change: bool = False) -> dict:
    """Loads the data, trains, tests and predicts; the writing rank (rank 0, or the only process) writes
    the run folder, the others (under DDP) take their share of the same work and write nothing."""
    recipe, writes = plan.recipe, plan.role.writes
    if plan.num_threads:
        torch.set_num_threads(int(plan.num_threads))
        if plan.role.world_size > 1:  # else Lightning's launcher sets cores / processes, overriding it
            os.environ["OMP_NUM_THREADS"] = str(plan.num_threads)
    elif plan.role.world_size == 1:  # one thread per core that other processes leave free, revisited in training
        callbacks = [*callbacks, CpuThreads()]  # (under DDP, Lightning's launcher divides the cores)
    L.seed_everything(plan.seed, workers=True, verbose=False)

    data = build_datamodule(recipe)  # user errors in the data surface here, before any file is written
    if resume and writes:
        run.check_data(data_fingerprint(data), data.split.summary, allow_data_change)
    say(format_summary(data.split.summary, f"Split ({recipe['model']['name']}):"))
    say(describe_model(recipe["model"]))
    model = build_model(plan.cls, recipe, data, resume)

    if writes:
        start_run_files(run, recipe, data)
    logger = make_logger(recipe["logger"], run.path, run.path.name, recipe) if writes else False
    if logger:
        logger.log_hyperparams({"split": data.split.summary, "params": model.num_parameters()})
    history, divergence = EpochHistory(), StopOnDivergence(say)
    best = RunCheckpoint(dirpath=run.checkpoints, filename=RunDir.BEST, monitor=VAL_RMSE, mode="min",
                         enable_version_counter=False)
    # every epoch, improving or not (Lightning's save_last writes last.ckpt only when best.ckpt changes)
    last = RunCheckpoint(dirpath=run.checkpoints, filename=RunDir.LAST, enable_version_counter=False)
    if plan.patience:  # off by default: the paper trains a fixed number of epochs and keeps the best
        callbacks = [*callbacks, EarlyStopping(monitor=VAL_RMSE, mode="min", patience=plan.patience)]
    trainer = L.Trainer(default_root_dir=str(run.path), logger=logger, plugins=[AtomicCheckpointIO()],
                        callbacks=[history, RngState(), best, last, divergence, *callbacks],
                        **trainer_arguments(plan.trainer, model, plan.role))
    if plan.role.world_size > 1 and writes:
        share_run(run.path, resume)  # for the processes Lightning's launcher starts in trainer.fit
    try:
        fit_model(trainer, model, data, ckpt_path=str(run.checkpoint("last")) if resume else None)
    finally:
        unshare_run()
    if not best.best_model_path:
        raise RrnxError(f"{run}: training produced no checkpoint (no validation epoch ran)")

    # testing best.ckpt restores the callbacks' state as of the best epoch: read the history first
    epochs, train_seconds = list(history.epochs), history.train_seconds()
    test_rmse = evaluate_model(trainer, model, data, best.best_model_path)
    frame = predictions(trainer, model, data, best.best_model_path)
    if plan.role.world_size > 1:
        end_process_group()  # the run's last exchange was the predictions' gather
    metrics = summarize(epochs, test_rmse, model, train_seconds, recipe)
    if divergence.diverged_epoch is not None:
        metrics["diverged_epoch"] = divergence.diverged_epoch
    if not writes:
        return metrics
    replace_atomically(run.file(RunDir.PREDICTIONS), lambda temp: frame.to_parquet(temp, index=False))
    log_summary(logger, {k: v for k, v in metrics.items() if k != "epochs"})
    finish(logger)
    run.finish(metrics)
    say(f"{recipe['model']['name']}: best epoch {metrics['best_epoch']}  val RMSE {metrics['val_rmse']:.4f}  "
        f"test RMSE {metrics['test_rmse']:.4f}  ({metrics['params']:,} parameters, {metrics['size_bytes']:,} bytes)")
    say(f"run directory: {run}")
    return metrics


def start_run_files(run: RunDir, recipe: dict, data: TemporalDataModule) -> None:
    """INCOMPLETE, then the complete recipe, the split summary, the manifest and the planted truth."""
    run.begin()
    replace_atomically(run.file(RunDir.RECIPE), lambda temp: dump_recipe(
        recipe, Path(temp), f"# resolved recipe; rerun with: rrnx fit {run}/{RunDir.RECIPE}"))
    run.write_json(RunDir.SPLIT, data.split.summary)
    run.write_json(RunDir.MANIFEST, manifest(recipe, data))
    if data.truth is not None:
        run.write_json(RunDir.TRUTH, data.truth)


def predictions(trainer, model, data, ckpt_path, split: str = "test") -> pd.DataFrame:
    """The split's ratings with original ids and the model's (clamped) predictions."""
    predicted = predict_model(trainer, model, data, split, ckpt_path)
    frame = data.split.frame(split)
    return pd.DataFrame({"user": frame["user"].to_numpy(), "item": frame["item"].to_numpy(),
                         "timestamp": frame["timestamp"].to_numpy(), "rating": frame["rating"].to_numpy(),
                         "prediction": predicted.numpy().astype(np.float32)})


def summarize(epochs: list[dict], test_rmse: float, model, train_seconds: float, recipe: dict) -> dict:
    scored = [e for e in epochs if VAL_RMSE in e]
    best = min(scored, key=lambda e: e[VAL_RMSE])
    return {"model": recipe["model"]["name"], "best_epoch": best["epoch"], "val_rmse": best[VAL_RMSE],
            "test_rmse": test_rmse, "params": model.num_parameters(), "size_bytes": model.size_bytes(),
            "train_seconds": train_seconds, "epochs": epochs,
            "checkpoint": f"{RunDir.CHECKPOINTS}/{RunDir.BEST}.ckpt"}  # relative to the run folder


def data_fingerprint(data: TemporalDataModule) -> dict:
    """A short hash of each half's (user, item, rating, timestamp) rows: equal halves, equal hashes."""
    return {name: hashlib.sha256(pd.util.hash_pandas_object(
        data.split.frame(name)[["user", "item", "rating", "timestamp"]], index=False).to_numpy().tobytes()
    ).hexdigest()[:16] for name in ("train", "val", "test")}


def manifest(recipe: dict, data: TemporalDataModule) -> dict:
    return {"created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "data": recipe["data"],
            "data_fingerprint": data_fingerprint(data), "rating_range": list(data.rating_range),
            "rrnx_version": __import__("rrnx").__version__, "torch": torch.__version__, "lightning": L.__version__}


def require_finite(metrics: dict) -> dict:
    """A run whose validation or test RMSE is not a number (training diverged) is a failure, not a
    result: the CLI says so and exits non-zero instead of printing NaN with exit 0. Sweeps call fit()
    and record such a trial as failed themselves."""
    bad = [key for key in ("val_rmse", "test_rmse") if not np.isfinite(metrics[key])]
    if bad:
        found = ", ".join(f"{key} is {metrics[key]}" for key in bad)
        raise RrnxError(f"model {metrics['model']!r}: training diverged: {found}; "
                        "lower the learning rate (model.lr) or check the data")
    return metrics


def load_run(run_dir: Path) -> tuple[dict, dict]:
    """A finished run's recipe and metrics; refuses unfinished runs."""
    run = RunDir(run_dir)
    run.require_finished()
    return load_recipe(run.file(RunDir.RECIPE)), run.read_json(RunDir.METRICS)


def load_trained(run_dir: Path, allow_data_change: bool = False):
    """(recipe, metrics, data, model) of a finished run, the model at its best checkpoint, after
    checking that the data is still what the run was trained on."""
    recipe, metrics = load_run(run_dir)
    cls = check_recipe(recipe)
    run = RunDir(run_dir)
    model = run.load_model(cls)  # a damaged checkpoint is refused before the data loads
    data = build_datamodule(recipe)
    run.check_data(data_fingerprint(data), data.split.summary, allow_data_change)
    return recipe, metrics, data, model


def load_pmf_run(run_dir: Path, data: TemporalDataModule, dim: int):
    """A finished PMF run's model (`model.pmf_run` of RRN), checked against this data (same training
    ratings) and this dim."""
    recipe, _ = load_run(run_dir)
    if recipe["model"]["name"] != "pmf":
        raise RrnxError(f"model.pmf_run: {run_dir} is a {recipe['model']['name']!r} run; it must be a pmf run")
    run = RunDir(run_dir)
    recorded = run.read_json(RunDir.MANIFEST)["data_fingerprint"]["train"]
    current = data_fingerprint(data)["train"]
    if recorded != current:
        raise RrnxError(f"model.pmf_run: {run_dir} was trained on other training ratings (fingerprint {recorded} "
                        f"vs {current}); train PMF on this recipe's data and split first")
    pmf = run.load_model(PMF)
    found = tuple(pmf.user_factors.weight.shape), tuple(pmf.item_factors.weight.shape)
    wanted = (data.n_users, dim), (data.n_items, dim)
    if found != wanted:
        raise RrnxError(f"model.pmf_run: {run_dir} has factors of shape {found[0]} (users) and {found[1]} (items); "
                        f"this RRN needs {wanted[0]} and {wanted[1]}: set model.dim={found[0][1]} or re-run PMF "
                        f"with --model.dim={dim}")
    return pmf


def test(run_dir: Path, quiet: bool = False, allow_data_change: bool = False, accelerator: str | None = None) -> float:
    """Re-evaluates a finished run's best checkpoint on its test half, on `accelerator` (default: the
    one the run's recipe trained on). The checkpoint loads on the CPU, as anywhere (a GPU run's
    checkpoint loads on a laptop); the trainer moves the model to its accelerator."""
    quiet_lightning()
    recipe, metrics, data, model = load_trained(run_dir, allow_data_change)
    accelerator = accelerator or recipe["trainer"].get("accelerator", TRAINER_DEFAULTS["accelerator"])
    check_trainer({"accelerator": accelerator, "devices": 1})
    trainer = L.Trainer(logger=False, accelerator=accelerator, devices=1, enable_progress_bar=not quiet,
                        enable_model_summary=False)
    rmse = evaluate_model(trainer, model, data)
    if not quiet:
        print(format_summary(data.split.summary, "Split:"))
        print(f"{recipe['model']['name']}: test RMSE {rmse:.4f} (recorded at fit time: {metrics['test_rmse']:.4f})")
    return rmse

