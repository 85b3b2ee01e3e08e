"""RunDir: the one owner of a run folder's layout and lifecycle (docs/reliability.md).

A run folder holds recipe.yaml (resolved), split.json (Table 1), manifest.json (data fingerprint),
metrics.json, predictions.parquet, truth.json (synthetic data), checkpoints/best.ckpt and
checkpoints/last.ckpt, wandb-run.json (the W&B run id, with the W&B logger) and the logger's
folder (wandb/, tensorboard/ or csv/), and while a run has not finished, the marker INCOMPLETE. What it promises:

- one writer: `lock()` holds an exclusive flock on `.lock` for the whole run, taken before any data
  loads, so a second `rrnx fit` into the folder is refused in one line;
- position independence: nothing inside refers to the folder's own path (checkpoint callbacks store
  file names, metrics.json a relative path), so a moved or copied folder resumes and tests as itself;
- atomic files: every JSON file and checkpoint is written to a temp file in its own folder, then
  renamed over its final name, so a crash or a full disk leaves the old file or the new one, never half;
- checked reuse: `check_data` compares the data a command is about to use with the fingerprint the run
  recorded, for test, predict, update, report and --resume.
"""

from __future__ import annotations

import fcntl
import io
import json
import os
import pickle
import shutil
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path

import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from rrnx.errors import RrnxError

def replace_atomically(path: Path, write) -> None:
    """`write(temp_path)` into a temp file next to `path`, flushed to disk, then renamed over `path`:
    a reader sees the old file or the new one, never a part. On any error the temp file is removed and
    the error (an OSError with the path for a full or read-only disk) propagates."""
    path = Path(path)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(temp)
        with open(temp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except OSError as error:
        _remove_quietly(temp)
        if error.filename is None or Path(str(error.filename)) == temp:  # name the file the user asked for
            raise OSError(error.errno, error.strerror or str(error), str(path)) from None
        raise
    except BaseException:
        _remove_quietly(temp)
        raise


def _remove_quietly(path: Path) -> None:
    """Removes a temp file if it is there; a read-only file system refuses even that (EROFS)."""
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass


def write_json(path: Path, content) -> None:
    replace_atomically(path, lambda temp: Path(temp).write_text(json.dumps(content, indent=2, default=str)))


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's default writes a checkpoint to a temp file on /tmp and copies it into place, so a
    full disk leaves a truncated last.ckpt. This writes next to the final name and renames."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()  # serialised in memory: torch.save on a full disk raises RuntimeError, not OSError
        torch.save(checkpoint, buffer)
        replace_atomically(Path(path), lambda temp: Path(temp).write_bytes(buffer.getbuffer()))


class RunCheckpoint(ModelCheckpoint):
    """ModelCheckpoint whose saved state names files relative to its folder: Lightning's stores
    absolute paths and, in a moved folder, drops the best score ("dirpath has changed") so best.ckpt
    is then overwritten by a worse epoch."""

    @property
    def state_key(self) -> str:  # the same key as ModelCheckpoint's: checkpoints of older runs still load
        return super().state_key.replace(type(self).__qualname__, ModelCheckpoint.__qualname__, 1)

    def state_dict(self) -> dict:
        state = super().state_dict()
        name = lambda p: Path(p).name if p else p  # noqa: E731
        state.update(dirpath=".", best_model_path=name(state["best_model_path"]),
                     kth_best_model_path=name(state["kth_best_model_path"]),
                     last_model_path=name(state["last_model_path"]),
                     best_k_models={name(k): v for k, v in state["best_k_models"].items()})
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        here = lambda p: str(Path(self.dirpath) / Path(p).name) if p else p  # noqa: E731
        state = dict(state_dict, dirpath=self.dirpath, best_model_path=here(state_dict["best_model_path"]),
                     kth_best_model_path=here(state_dict.get("kth_best_model_path", "")),
                     last_model_path=here(state_dict.get("last_model_path", "")),
                     best_k_models={here(k): v for k, v in state_dict.get("best_k_models", {}).items()})
        super().load_state_dict(state)


class RunDir:
    """A run folder: its files by name, its lock, and its states (absent, empty, unfinished without
    a checkpoint, unfinished with one, finished)."""

    RECIPE, SPLIT, MANIFEST, METRICS = "recipe.yaml", "split.json", "manifest.json", "metrics.json"
    PREDICTIONS, TRUTH, INCOMPLETE, LOCK = "predictions.parquet", "truth.json", "INCOMPLETE", ".lock"
    CHECKPOINTS, BEST, LAST = "checkpoints", "best", "last"
    WANDB_RUN = "wandb-run.json"  # the W&B run id, kept so that --resume logs to the same W&B run

    def __init__(self, path) -> None:
        self.path = Path(path)

    def __str__(self) -> str:
        return str(self.path)

    def file(self, name: str) -> Path:
        return self.path / name

    @property
    def checkpoints(self) -> Path:
        return self.path / self.CHECKPOINTS

    def checkpoint(self, which: str = "best") -> Path:
        return self.checkpoints / f"{which}.ckpt"

    # ---------------------------------------------------------------- state
    def is_run(self) -> bool:
        return self.file(self.RECIPE).is_file()

    def is_finished(self) -> bool:
        return self.file(self.METRICS).is_file() and not self.file(self.INCOMPLETE).exists()

    def has_checkpoint(self) -> bool:
        return self.checkpoint("last").is_file()

    def contents(self) -> list[Path]:
        return [p for p in self.path.iterdir() if p.name != self.LOCK] if self.path.is_dir() else []

    # ---------------------------------------------------------------- lock
    @contextmanager
    def lock(self):
        """Exclusive ownership for a whole run; created folders that stay empty are removed again."""
        created = not self.path.exists()
        if self.path.exists() and not self.path.is_dir():
            raise RrnxError(f"{self.path}: exists and is not a directory; choose another --out")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            handle = open(self.file(self.LOCK), "a+")
        except OSError as error:
            raise RrnxError(f"{self.path}: cannot write the run folder ({error.strerror or error}); "
                            "choose a writable --out") from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "?"
            handle.close()
            raise RrnxError(f"{self.path}: another rrnx process (pid {holder}) is writing this run folder; "
                            "wait for it to end or choose another --out") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        try:
            yield self
        finally:
            if created and not self.contents():
                self.file(self.LOCK).unlink(missing_ok=True)
                self.path.rmdir()
            handle.close()  # closing releases the flock

    def clear(self) -> None:
        """Removes everything but the lock: for --overwrite and for a restart from scratch."""
        for entry in self.contents():
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()

    # ---------------------------------------------------------------- lifecycle
    def begin(self) -> None:
        self.file(self.INCOMPLETE).write_text("this run has not finished; do not trust its files\n")
        self.file(self.METRICS).unlink(missing_ok=True)

    def finish(self, metrics: dict) -> None:
        write_json(self.file(self.METRICS), metrics)
        self.file(self.INCOMPLETE).unlink()

    def write_json(self, name: str, content) -> None:
        write_json(self.file(name), content)

    def read_json(self, name: str):
        path = self.file(name)
        if not path.is_file():
            raise RrnxError(f"{self.path}: no {name}; this folder is not a complete run")
        try:
            return json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise RrnxError(f"{path}: not valid JSON ({error}); the run folder is damaged") from None

    # ---------------------------------------------------------------- reuse
    def require_finished(self) -> None:
        if not self.path.is_dir():
            raise RrnxError(f"{self.path}: no such run directory")
        if not self.is_run():
            raise RrnxError(f"{self.path}: not a run directory (no {self.RECIPE})")
        if not self.is_finished():
            raise RrnxError(f"{self.path}: this run did not finish; resume it with `rrnx fit --resume {self.path}`")

    def check_data(self, fingerprint: dict, summary: dict, allow_change: bool = False) -> None:
        """Refuses data whose train/val/test fingerprint differs from the recorded one, naming the halves
        that changed; with `allow_change` says so and goes on, unless the users or items differ in
        number (the model's rows would then belong to other people)."""
        manifest = self.read_json(self.MANIFEST)
        recorded = manifest.get("data_fingerprint", {})
        source = (manifest.get("data") or {}).get("path") or (manifest.get("data") or {}).get("format", "data")
        changed = [name for name in ("train", "val", "test") if recorded.get(name) != fingerprint.get(name)]
        if not changed:
            return
        split = self.read_json(self.SPLIT) if self.file(self.SPLIT).is_file() else {}
        sizes = {"train": "train_size", "val": "val_size", "test": "test_half_size"}
        detail = ", ".join(f"{name} ({split.get(sizes[name], '?'):,} ratings recorded, {summary[sizes[name]]:,} now)"
                           if isinstance(split.get(sizes[name]), int) else name for name in changed)
        what = f"{self.path}: the data ({source}) differs from what this run was trained on: {detail}"
        shape = [(side, split.get(side), summary[side]) for side in ("users", "items")
                 if split.get(side) is not None and split.get(side) != summary[side]]
        if shape:
            counts = ", ".join(f"{now:,} {side} now, {then:,} recorded" for side, then, now in shape)
            raise RrnxError(f"{what}; {counts}: the model cannot be used on this data; retrain with `rrnx fit`")
        if not allow_change:
            raise RrnxError(f"{what}; retrain with `rrnx fit`, or pass --allow-data-change to use the new data")
        print(f"warning: {what}; going on (--allow-data-change)", file=sys.stderr)

    def check_checkpoint(self, which: str = "last") -> None:
        """Refuses, in one line, a checkpoint that does not load as weights (truncated, foreign, pickled
        code) before Lightning tries to resume from it."""
        path = self.checkpoint(which)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:
            raise RrnxError(f"{path}: refused: holds pickled objects other than weights; the run folder is "
                            f"damaged or was tampered with: `rrnx fit RECIPE --out {self.path} --overwrite` "
                            "restarts it") from None
        except Exception as error:  # torch and zipfile raise many types for a damaged file
            first = str(error).strip().splitlines()[0][:160] if str(error).strip() else type(error).__name__
            raise RrnxError(f"{path}: damaged ({first}); the run cannot continue from it: "
                            f"`rrnx fit RECIPE --out {self.path} --overwrite` restarts it") from None

    def load_model(self, cls: type, which: str = "best"):
        """The model at a checkpoint through rrnx.checkpoints.load_model (weights_only=True: no pickled
        code runs); a missing, damaged or foreign file is one line, without torch's warnings."""
        from rrnx.checkpoints import load_model

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about what the refusal reports
            return load_model(cls, self.checkpoint(which))
