"""The runner's side of a Lightning run: data flows one way, from the runner into the model.

    model.attach(data)
    trainer.fit(model, train_dataloaders=model.train_loader(data), val_dataloaders=model.eval_loader(data, "val"))

and likewise for test and predict with `model.eval_loader(data, split)`. The data (a set-up
TemporalDataModule) knows no trainer and no model; a model never reaches for the trainer's data.
`rrnx fit`, `rrnx test`, `rrnx bench` and the tests all train and evaluate through these functions;
a checkpoint they resume or evaluate is read with weights_only=True, as rrnx.checkpoints reads one.

Process-wide concerns are the runner's too, the same for every model: the allocator tuning
(`keep_freed_memory`, applied before training), the CPU thread count (`CpuThreads`, rrnx.threads)
and the RNG states in checkpoints (`RngState`), so that a resumed run draws what an uninterrupted
one draws.
"""

from __future__ import annotations

import ctypes
import random

import numpy as np
import torch
from lightning.pytorch.callbacks import Callback

from rrnx.data.batches import Batches
from rrnx.distributed import gather_predictions, role_of, shard
from rrnx.models.base import TEST_RMSE
from rrnx.threads import ThreadPolicy

RNG_KEY = "rng"
LEGACY_RNG_KEYS = ("rrn_rng",)  # RRN checkpoints kept the RNG states themselves before the runner did


def keep_freed_memory() -> bool:
    """Serve large allocations from glibc's heap and keep freed memory for reuse (mallopt M_MMAP_MAX = 0,
    M_TRIM_THRESHOLD = 2 GiB). An RRN batch allocates and frees buffers of hundreds of MB (gates,
    gradients); by default glibc maps each with a fresh mmap and every 4 KiB page's first touch is a page
    fault: a quarter of a training run was kernel time; this takes a Netflix-scale RRN epoch (1 thread)
    from 62 to 41 s. Process-wide (what PyTorch's CPU tuning guide gets from jemalloc/tcmalloc), so the
    runner applies it before training any model; a no-op without glibc. Returns whether it was applied."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(-4, 0)) and bool(libc.mallopt(-1, 2**31 - 1))  # M_MMAP_MAX, M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        return False


class CpuThreads(Callback):
    """Torch's thread count follows the cores other processes leave free (rrnx.threads.ThreadPolicy):
    chosen when fitting starts, revisited at batch boundaries. Only on the CPU accelerator."""

    def __init__(self) -> None:
        self.policy = ThreadPolicy()

    def on_fit_start(self, trainer, pl_module) -> None:
        if pl_module.device.type == "cpu":
            self.policy.start()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.policy.adjust()

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self.policy.adjust()


class StopOnDivergence(Callback):
    """Ends training after the first epoch whose weights are no longer finite (a diverged optimizer: every
    later epoch would validate NaN), saying so in one line; the run keeps its best finite epoch (a NaN
    validation RMSE is never a best). `diverged_epoch` is that epoch, or None."""

    def __init__(self, say=print) -> None:
        self.say, self.diverged_epoch = say, None

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        finite = torch.stack([torch.isfinite(p).all() for p in pl_module.parameters()]).all()
        if not bool(finite):  # one host read per epoch
            self.diverged_epoch = trainer.current_epoch
            trainer.should_stop = True
            self.say(f"training diverged in epoch {trainer.current_epoch} (weights are no longer finite): stopped "
                     "there; the run keeps its best earlier epoch (lower a learning rate to train further)")


class RngState(Callback):
    """Saves the torch, numpy and python RNG states in every checkpoint and restores them when one is
    loaded, for every model (dropout, sampling in hooks: what a resumed run must draw again), and the
    training batches' shuffling generator with them (Lightning restores a loader's state only inside
    an unfinished epoch; rrnx checkpoints between epochs). Plain types and tensors only: checkpoints
    load with torch.load(weights_only=True)."""

    def __init__(self) -> None:
        self._loader_state: dict | None = None

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        kind, keys, pos, has_gauss, cached = np.random.get_state()
        numpy_state = (kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached))
        rng = {"torch": torch.get_rng_state(), "numpy": numpy_state, "python": random.getstate()}
        if isinstance(trainer.train_dataloader, Batches):
            rng["train_loader"] = trainer.train_dataloader.state_dict()
        checkpoint[RNG_KEY] = rng

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        rng = next((checkpoint[k] for k in (RNG_KEY, *LEGACY_RNG_KEYS) if k in checkpoint), None)
        if rng is not None:
            torch.set_rng_state(rng["torch"])
            kind, keys, pos, has_gauss, cached = rng["numpy"]
            np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
            random.setstate(rng["python"])
            self._loader_state = rng.get("train_loader")

    def on_train_start(self, trainer, pl_module) -> None:
        """The training loader exists from here on, before its first batch is drawn."""
        if self._loader_state is not None and isinstance(trainer.train_dataloader, Batches):
            trainer.train_dataloader.load_state_dict(self._loader_state)
        self._loader_state = None


def fit_model(trainer, model, data, ckpt_path: str | None = None) -> None:
    """Trains `model` on `data`'s training split, validating on its validation half; `ckpt_path`
    resumes from a checkpoint."""
    keep_freed_memory()
    model.attach(data)
    role, name = role_of(trainer), type(model).__name__
    try:
        trainer.fit(model, train_dataloaders=shard(model.train_loader(data), role, name),
                    val_dataloaders=shard(model.eval_loader(data, "val"), role, name),
                    ckpt_path=ckpt_path, weights_only=True)
    except SystemExit:
        # Lightning turns Ctrl-C into sys.exit(1) after its graceful shutdown; the runner says what stands
        if trainer.interrupted:
            raise KeyboardInterrupt from None
        raise


def evaluate_model(trainer, model, data, ckpt_path: str | None = None) -> float:
    """Test RMSE of `model` (at `ckpt_path` when given) on `data`'s test half."""
    model.attach(data)
    loader = shard(model.eval_loader(data, "test"), role_of(trainer), type(model).__name__)
    results = trainer.test(model, dataloaders=loader, ckpt_path=ckpt_path, verbose=False, weights_only=True)
    return float(results[0][TEST_RMSE])


def predict_model(trainer, model, data, split: str = "test", ckpt_path: str | None = None) -> torch.Tensor:
    """The model's clamped predictions of every rating of the split, in the split's order, (N,); under
    DDP each rank predicts its share and every rank gets them all."""
    model.attach(data)
    role = role_of(trainer)
    loader = shard(model.eval_loader(data, split), role, type(model).__name__)
    batches = trainer.predict(model, dataloaders=loader, ckpt_path=ckpt_path, weights_only=True)
    return gather_predictions(batches, role)
