"""Shows why sparse-gradient models reduce dense gradients under DDP (rrnx.distributed.DenseGradientDDP,
docs/scaling.md):

    python scripts/gloo_sparse_race.py [--runs 6] [--steps 3000] [--modes ddp,serial,dense]

Each run trains a small PMF-shaped model (four embeddings: two factor tables, two bias tables) with
SparseAdam in 2 gloo processes under DistributedDataParallel, from the same seeds, in up to three ways:
`ddp`, sparse embeddings with DDP's own all-reduce (each bucket's starts as soon as its gradients are
ready, so gloo's worker threads run several sparse all-reduces at once); `serial`, the same with a
communication hook that waits for each all-reduce before the next (what rrnx used before CI saw a crash
there too); `dense`, what rrnx does now: dense embedding gradients averaged by DDP, cut back to their
touched rows (rows_touched) before SparseAdam's step. It prints, per run, how the run ended, a checksum of
rank 0's final weights and the seconds its training loop took. Runs from the same seeds must give the same
checksum; a run that aborts or gives another checksum is the race.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

from rrnx.distributed import rows_touched


def serial_all_reduce(process_group, bucket):
    """A DDP communication hook: DDP's default average of the bucket, waited for before it returns."""
    group = process_group or dist.group.WORLD
    tensor = bucket.buffer()
    tensor.div_(group.size())
    dist.all_reduce(tensor, group=group)
    done = torch.futures.Future()
    done.set_result(tensor)
    return done


class SparsePMF(torch.nn.Module):
    def __init__(self, users: int = 300, items: int = 200, dim: int = 8, sparse: bool = True) -> None:
        super().__init__()
        self.p = torch.nn.Embedding(users, dim, sparse=sparse)  # (U, k)
        self.q = torch.nn.Embedding(items, dim, sparse=sparse)  # (I, k)
        self.b_user = torch.nn.Embedding(users, 1, sparse=sparse)  # (U, 1)
        self.b_item = torch.nn.Embedding(items, 1, sparse=sparse)  # (I, 1)

    def forward(self, user: torch.Tensor, item: torch.Tensor) -> torch.Tensor:  # (B,), (B,) -> (B,)
        return (self.p(user) * self.q(item)).sum(1) + self.b_user(user)[:, 0] + self.b_item(item)[:, 0]


def train(rank: int, port: int, steps: int, mode: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.manual_seed(0)
    model = DistributedDataParallel(SparsePMF(sparse=mode != "dense"))
    if mode == "serial":
        model.register_comm_hook(None, serial_all_reduce)
    optimizer = torch.optim.SparseAdam(model.parameters(), lr=0.01)
    draw = torch.Generator().manual_seed(rank)
    start = time.perf_counter()
    for _ in range(steps):
        n = int(torch.randint(1, 40, (1,), generator=draw))  # ranks touch different numbers of rows
        user, item = torch.randint(0, 300, (n,), generator=draw), torch.randint(0, 200, (n,), generator=draw)
        loss = (model(user, item) - 1).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        if mode == "dense":  # as DenseGradientDDP: the averaged dense gradients back to their touched rows
            for p in model.parameters():
                p.grad = rows_touched(p.grad)
        optimizer.step()
    if rank == 0:
        weights = torch.cat([p.detach().flatten() for p in model.parameters()])
        with open(out, "w") as f:
            f.write(f"{weights.double().sum().item():.6f}, {time.perf_counter() - start:.1f} s of training")
    dist.barrier()
    dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def one_run(steps: int, mode: str, out: str) -> str:
    if os.path.exists(out):
        os.remove(out)
    try:
        mp.spawn(train, args=(free_port(), steps, mode, out), nprocs=2)
    except mp.ProcessExitedException as error:
        return f"died ({error})"
    except mp.ProcessRaisedException as error:
        return f"raised ({str(error).strip().splitlines()[-1]})"
    with open(out) as f:
        return f"checksum {f.read()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=6)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--modes", default="ddp,serial,dense")
    args = parser.parse_args()
    out = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"gloo_sparse_race-{os.getpid()}.txt")
    for mode in args.modes.split(","):
        for run in range(args.runs):
            print(f"{mode:6s} run {run + 1}: {one_run(args.steps, mode, out)}", flush=True)
    if os.path.exists(out):
        os.remove(out)


if __name__ == "__main__":
    sys.exit(main())
