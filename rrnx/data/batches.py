"""The one batcher every rrnx loader is made of, and part of the public helper API for plugins
(docs/plugins.md): rating triples (TemporalDataModule.triples_loader), rows of a training matrix
(AutoRec, the example plugin: `row_batches`), a whole split at once (Bias, the Surprise plugin:
`one_batch`), anything held as equally long tensors."""

from __future__ import annotations

import torch


class Batches:
    """Mini-batches of a dict of equally long tensors, sliced in bulk (no per-sample collate), in
    order or in a shuffled order drawn afresh each epoch from its own generator, seeded with `seed`.

    Rating triples, for example: user (B,) int64 user_idx, item (B,) int64 item_idx, rating (B,)
    float32, timestamp (B,) int64, plus any extra columns of the frame given (`extra`).
    """

    def __init__(self, tensors: dict[str, torch.Tensor], batch_size: int, shuffle: bool = False, seed: int = 0):
        self.tensors, self.batch_size, self.shuffle = tensors, int(batch_size), shuffle
        self.n = len(next(iter(tensors.values())))
        self.generator = torch.Generator().manual_seed(seed)
        self.rank, self.world_size = 0, 1

    def shard(self, rank: int, world_size: int) -> "Batches":
        """This process's share under data parallelism (rrnx.distributed): each batch of the one-process
        order is cut into `world_size` near-equal parts and rank `rank` yields its part, so the ranks
        together see the same global batches, each row exactly once, and all ranks yield the same number
        of batches (DDP needs every rank at every step). Every rank draws the same shuffled order: the
        generator is seeded alike and stepped alike. A part may be empty when a batch has fewer rows than
        ranks."""
        shard = Batches(self.tensors, self.batch_size, self.shuffle)
        shard.generator, shard.rank, shard.world_size = self.generator, rank, world_size
        return shard

    def __len__(self) -> int:
        return (self.n + self.batch_size - 1) // self.batch_size

    def state_dict(self) -> dict:
        """The shuffling generator's state: checkpoints keep it (rrnx.training.RngState), so a resumed
        run draws the orders an uninterrupted one would."""
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])

    def __iter__(self):
        order = torch.randperm(self.n, generator=self.generator) if self.shuffle else None
        for start in range(0, self.n, self.batch_size):
            if self.world_size > 1:
                start, end = self._part(start, min(start + self.batch_size, self.n))
            else:
                end = start + self.batch_size
            if order is None:
                yield {k: v[start:end] for k, v in self.tensors.items()}
            else:
                idx = order[start:end]
                yield {k: v[idx] for k, v in self.tensors.items()}

    def global_rows(self, k: int) -> int:
        """Rows of global batch k, all ranks' parts together (what one process's batch k holds)."""
        return min(self.batch_size, self.n - k * self.batch_size)

    def _part(self, start: int, end: int) -> tuple[int, int]:
        """[start, end) of this rank's part of the batch [start, end): torch.tensor_split's cut."""
        size, extra = divmod(end - start, self.world_size)
        first = start + self.rank * size + min(self.rank, extra)
        return first, first + size + (self.rank < extra)


def row_batches(n_rows: int, batch_size: int, seed: int = 0) -> Batches:
    """Shuffled mini-batches of the row indices 0..n_rows-1, {"rows": (B,) int64}: a train loader over
    the rows of a training matrix (users or items), resumable like every Batches."""
    return Batches({"rows": torch.arange(n_rows)}, batch_size, shuffle=True, seed=seed)


def one_batch(tensors: dict[str, torch.Tensor]) -> Batches:
    """All rows in a single batch per epoch, in order: a train loader for a model that fits on the
    whole set at once (closed-form sweeps, an external library's fit)."""
    return Batches(tensors, max(len(next(iter(tensors.values()))), 1))
