"""rrnx on several processes with Lightning's DDP (docs/scaling.md).

`rrnx fit RECIPE --trainer.strategy=ddp --trainer.devices=N` runs the whole of `rrnx fit` in N
processes: the one the user started and the N - 1 that Lightning's launcher starts when training
begins, by running the same command line again with LOCAL_RANK set (or, with torchrun or a cluster
scheduler, every process at once). Global rank 0 alone owns the run folder: it takes the lock,
writes every file and every checkpoint; the other ranks ("followers") load the same data, train,
validate and predict their share, and write nothing.

What a rank takes (`shard`): its part of every global batch of the model's loaders, so the ranks
together see each training batch and each validation/test row exactly once; validation and test RMSE
are torchmetrics states (sums of squared errors and counts) summed over the ranks; predictions are
gathered to every rank in the one-process order (`gather_predictions`). With one process none of
this runs: `shard` hands the loader back untouched.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import torch
from lightning.pytorch.strategies import DDPStrategy

from rrnx.errors import RrnxError

# Set by rank 0 before training for the processes Lightning's launcher starts: the run folder (its
# default name holds the time, which a second process would read differently) and whether it resumes.
SHARED_RUN_ENV = "RRNX_DDP_RUN"
# the DDP strategy names whose launcher reruns the command (the ones rrnx runs; check_launcher refuses the rest)
POPEN_DDP = ("ddp", "ddp_find_unused_parameters_false", "ddp_find_unused_parameters_true")


@dataclass(frozen=True)
class Role:
    """This process's global rank and the number of processes training together."""

    rank: int = 0
    world_size: int = 1

    @property
    def writes(self) -> bool:
        return self.rank == 0


@dataclass(frozen=True)
class SharedRun:
    """What rank 0 decided for the run, handed to the processes it launches."""

    path: str
    resume: bool


def role_of(trainer) -> Role:
    """The rank and world size Lightning assigns this process (known once a Trainer is built: from
    LOCAL_RANK/NODE_RANK set by its launcher, or RANK/WORLD_SIZE set by torchrun or a scheduler)."""
    return Role(int(trainer.global_rank), int(trainer.world_size))


def check_launcher(trainer) -> None:
    """Refuses strategies whose launcher would pickle rrnx's run into fresh processes (ddp_spawn,
    ddp_fork, ddp_notebook): rrnx's run folder, lock and data belong to processes that run `rrnx fit`
    themselves, which is what the `ddp` strategy's launcher starts."""
    launcher = getattr(trainer.strategy, "_launcher", None)
    if trainer.world_size > 1 and launcher is not None and type(launcher).__name__ == "_MultiProcessingLauncher":
        raise RrnxError("trainer.strategy: rrnx runs several processes with strategy 'ddp' (each process runs "
                        "rrnx fit itself); spawn, fork and notebook launchers are not supported: use --trainer.strategy=ddp")


def shared_run() -> SharedRun | None:
    """The run rank 0 started this process for (None: this process was started by a user or by torchrun)."""
    text = os.environ.get(SHARED_RUN_ENV)
    return SharedRun(**json.loads(text)) if text else None


def share_run(path, resume: bool) -> None:
    """Tells the processes about to be launched which run they train (read back by shared_run)."""
    os.environ[SHARED_RUN_ENV] = json.dumps({"path": str(path), "resume": bool(resume)})


def unshare_run() -> None:
    os.environ.pop(SHARED_RUN_ENV, None)


def shard(loader, role: Role, what: str):
    """`loader` itself with one process; else this rank's share of it (its `shard(rank, world_size)`:
    rrnx.data.batches.Batches and RRN's PhaseBatches have one). A loader without one cannot be split:
    one line saying so."""
    if role.world_size == 1:
        return loader
    split = getattr(loader, "shard", None)
    if split is None:
        raise RrnxError(f"{what}: its batches ({type(loader).__name__}) cannot be split across processes; "
                        "train it with one process (trainer.devices: 1)")
    return split(role.rank, role.world_size)


def process_group_share() -> Role:
    """This process's rank and the size of the running process group ((0, 1) without one): for model code
    that runs in and out of a trainer (RRN's state cache serves training, evaluation and `rrnx predict`)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return Role(torch.distributed.get_rank(), torch.distributed.get_world_size())
    return Role()


def all_reduce_sum_(tensor: torch.Tensor) -> torch.Tensor:
    """Sums `tensor` over every process in place (a no-op with one process or none started)."""
    if process_group_share().world_size > 1:
        torch.distributed.all_reduce(tensor)
    return tensor


def all_reduce_sparse_(param: torch.Tensor) -> None:
    """Sums `param`'s sparse gradient over every process, in place of it (a rank without one adds nothing),
    through a dense (n, k) buffer and back to the rows that are not all zero (rows_touched): NCCL reduces
    dense tensors only, and gloo's sparse all-reduce corrupts memory (DenseGradientDDP says when)."""
    grad = param.grad
    dense = torch.zeros_like(param) if grad is None else grad.to_dense()
    torch.distributed.all_reduce(dense)
    param.grad = rows_touched(dense)


def end_process_group() -> None:
    """Destroys the process group once a run's last exchange is done. Left to the interpreter's exit,
    gloo's worker threads are torn down with it and the process now and then aborts after its work is
    done (SIGABRT, 'terminate called without an active exception'; tests/test_ddp.py saw it, and
    pytorch/pytorch#190489 reports it)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def broadcast_from_rank0_(tensors: list[torch.Tensor]) -> None:
    """Rank 0's values of `tensors` on every rank, in place (a no-op with one process)."""
    if process_group_share().world_size > 1:
        for tensor in tensors:
            torch.distributed.broadcast(tensor.data, src=0)


def all_gather_rows(local: torch.Tensor, world_size: int) -> torch.Tensor:
    """Every rank's `local` rows (n_r, D), concatenated in rank order, on every rank. all_gather wants
    equal sizes: each rank's rows are padded to the largest share and trimmed after."""
    device = local.device  # NCCL exchanges CUDA tensors only: every buffer lives where the rows do
    sizes = [torch.zeros(1, dtype=torch.int64, device=device) for _ in range(world_size)]
    torch.distributed.all_gather(sizes, torch.tensor([len(local)], device=device))
    largest = int(max(sizes))
    padded = torch.zeros(largest, *local.shape[1:], dtype=local.dtype, device=device)
    padded[:len(local)] = local
    parts = [torch.empty_like(padded) for _ in range(world_size)]
    torch.distributed.all_gather(parts, padded)
    return torch.cat([part[:int(size)] for part, size in zip(parts, sizes)])


def gather_predictions(parts: list[torch.Tensor], role: Role) -> torch.Tensor:
    """The predictions of every row in the one-process order, on every rank, from each rank's per-batch
    parts (`Batches.shard` cuts batch k of the one-process order into parts 0..world_size-1)."""
    if role.world_size == 1:
        return torch.cat(parts)
    gathered: list = [None] * role.world_size
    torch.distributed.all_gather_object(gathered, parts)
    return torch.cat([gathered[rank][k] for k in range(len(parts)) for rank in range(role.world_size)])


class SelfSyncingDDP(DDPStrategy):
    """Lightning's DDP for a model that combines the processes' work itself (`syncs_own_updates`: Bias's
    closed-form sums, RRN's alternating phases): the module is not wrapped in DistributedDataParallel,
    whose reducer expects one backward over every trainable parameter per step, which neither does
    (Bias has no backward; an RRN phase trains one side's network and leaves the other unused).
    Lightning's launcher, process group, checkpointing and metric syncing are unchanged."""

    def configure_ddp(self) -> None:
        # DistributedDataParallel would broadcast rank 0's weights; every rank is seeded alike, this makes sure
        broadcast_from_rank0_([*self.model.parameters(), *self.model.buffers()])


class DenseGradientDDP(DDPStrategy):
    """Lightning's DDP for a model whose embeddings give sparse gradients (PMF, BiasedMF, TimeSVD++), on every
    backend: its embeddings give dense gradients, which DistributedDataParallel averages over the ranks as
    usual; before each optimizer step each one is cut back to the rows that are not all zero, a sparse
    gradient, so that SparseAdam (or sparse SGD) takes the step it takes on one process. NCCL (GPUs)
    all-reduces dense tensors only; gloo (CPUs) has a sparse all-reduce, but it corrupts memory (torch 2.13:
    SIGABRT after 'malloc(): unaligned tcache chunk detected', or SIGSEGV) when two run at once, as DDP's
    reducer starts them, and a run of the test suite saw it once more with them run one at a time
    (scripts/gloo_sparse_race.py, docs/scaling.md). A table of U x k floats then crosses between the processes at every step:
    docs/scaling.md says when that is affordable. (A row whose gradient is exactly zero in every column is
    left out, so SparseAdam does not decay its moments there; with any L2 on the row that does not occur.)"""

    def configure_ddp(self) -> None:
        self._densified = [m for m in self.lightning_module.modules() if isinstance(m, torch.nn.Embedding) and m.sparse]
        for module in self._densified:
            module.sparse = False
        super().configure_ddp()

    def optimizer_step(self, optimizer, closure, model=None, **kwargs):
        def closure_with_sparse_gradients():
            result = closure()
            for module in self._densified:
                module.weight.grad = rows_touched(module.weight.grad)
            return result
        return super().optimizer_step(optimizer, closure_with_sparse_gradients, model, **kwargs)


def rows_touched(grad: torch.Tensor | None) -> torch.Tensor | None:
    """A dense (n, k) gradient as a sparse one holding its rows that are not all zero (None stays None)."""
    if grad is None or grad.is_sparse:
        return grad
    rows = torch.nonzero(grad.ne(0).any(1)).squeeze(1)  # (B,)
    return torch.sparse_coo_tensor(rows[None], grad[rows], grad.shape, check_invariants=False)


def trainer_arguments(trainer: dict, model, role: Role) -> dict:
    """The Trainer's arguments for this model: a model that syncs its own updates gets SelfSyncingDDP
    in place of the recipe's DDP strategy name; a model with sparse gradients on several processes gets
    DenseGradientDDP (NCCL cannot all-reduce sparse tensors, gloo's sparse all-reduce corrupts memory);
    every other case is left as the recipe says."""
    strategy = trainer.get("strategy")
    ddp = isinstance(strategy, str) and strategy.startswith("ddp")
    if not getattr(model, "syncs_own_updates", False):
        if role.world_size > 1 and strategy in POPEN_DDP and sparse_embeddings(model):
            return {**trainer, "strategy": DenseGradientDDP(find_unused_parameters=strategy.endswith("_true"))}
        return trainer
    if role.world_size == 1 and not ddp:
        return trainer
    if not ddp:
        raise RrnxError(f"trainer.strategy: {type(model).__name__} combines its processes' work itself and "
                        f"runs on several processes with strategy 'ddp' only (got {strategy!r})")
    if strategy not in POPEN_DDP:
        return trainer  # ddp_spawn, ddp_fork, ...: check_launcher refuses them in one line
    return {**trainer, "strategy": SelfSyncingDDP()}


def sparse_embeddings(model) -> list[str]:
    """Names of the model's embeddings that produce sparse gradients."""
    return [name for name, module in model.named_modules() if isinstance(module, torch.nn.Embedding) and module.sparse]
