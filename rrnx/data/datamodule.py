"""TemporalDataModule: one DataModule that serves every rrnx model what it needs.

raw file (or synthetic generator) -> canonical table -> strict time split -> per-side time steps.
Models receive rating triples, per-user/per-item training rating vectors, and per-user/per-item
step sequences (see docs/plugins.md for the contract).
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import torch

from rrnx.data.split import Split, time_split, to_timestamp
from rrnx.data.steps import Granularity, StepSequences, build_sequences
from rrnx.errors import RrnxError

BATCH_KEYS = ("user", "item", "rating", "timestamp")


class TripleBatches:
    """Mini-batches of rating triples as dicts of tensors, sliced in bulk (no per-sample collate).

    Each batch: user (B,) int64 user_idx, item (B,) int64 item_idx, rating (B,) float32,
    timestamp (B,) int64, plus any extra columns given (e.g. user_row/item_row step rows).
    """

    def __init__(self, tensors: dict[str, torch.Tensor], batch_size: int, shuffle: bool = False, seed: int = 0):
        self.tensors, self.batch_size, self.shuffle = tensors, int(batch_size), shuffle
        self.n = len(next(iter(tensors.values())))
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return (self.n + self.batch_size - 1) // self.batch_size

    def __iter__(self):
        order = torch.randperm(self.n, generator=self.generator) if self.shuffle else None
        for start in range(0, self.n, self.batch_size):
            if order is None:
                yield {k: v[start:start + self.batch_size] for k, v in self.tensors.items()}
            else:
                idx = order[start:start + self.batch_size]
                yield {k: v[idx] for k, v in self.tensors.items()}


def _check_settings(batch_size: int, scale: list | None) -> None:
    """Values whose types are right but whose meaning is not: refused before any data loads."""
    if batch_size < 1:
        raise RrnxError(f"data.batch_size: must be at least 1, got {batch_size}")
    if scale is not None:
        numbers = list(scale) if isinstance(scale, (list, tuple)) else [scale]
        if len(numbers) != 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in numbers) \
                or not numbers[0] < numbers[1]:
            raise RrnxError(f"data.scale: expected [min, max] with min < max, e.g. [1, 5]; got {scale!r}")


class TemporalDataModule(L.LightningDataModule):
    """Loads ratings, splits them strictly by time (paper, Table 1) and buckets them into steps.

    Args:
        path: ratings file or directory (not used when format is `synthetic`).
        format: reader name (netflix, movielens, movietweetings, csv, parquet), `auto`, or `synthetic`.
        synthetic: generator parameters when format is `synthetic`, e.g. {preset: small, seed: 0}.
        train_start, test_start, test_end: dates; train = [train_start, test_start), test = [test_start, test_end).
        user_granularity, item_granularity: time-step length per side (1d, 7d, 14d, 1mo, 2mo...).
        columns, sep: column mapping and separator for generic csv/parquet files.
        scale: [min, max] rating scale; ratings outside it are an error (default: the format's).
        seed: seed of the random validation/test halving of the test period.
        batch_size: rating triples per batch for models that train on triples.
        cache_dir: where parsed files and generated data are cached (default $RRNX_CACHE or ~/.cache/rrnx).
    """

    def __init__(self, path: str | None = None, format: str = "auto", synthetic: dict | None = None,
                 train_start: str | None = None, test_start: str | None = None, test_end: str | None = None,
                 user_granularity: str = "7d", item_granularity: str = "7d",
                 columns: dict | None = None, sep: str | None = None, scale: list | None = None,
                 seed: int = 0, batch_size: int = 4096, cache_dir: str | None = None):
        super().__init__()
        self.save_hyperparameters()
        _check_settings(batch_size, scale)
        self.split: Split | None = None
        self.truth: dict | None = None

    # ---------------------------------------------------------------- loading
    def setup(self, stage: str | None = None) -> None:
        if self.split is not None:
            return
        ratings = self.load_table()
        hp = self.hparams
        source = "synthetic data" if hp.format == "synthetic" else str(hp.path)
        self.split = time_split(ratings, hp.test_start, hp.train_start, hp.test_end, hp.seed, source)
        train = self.split.train
        origin = to_timestamp(hp.train_start, "train_start") or int(train["timestamp"].min())
        self.user_granularity = Granularity.parse(hp.user_granularity, origin, "user_granularity")
        self.item_granularity = Granularity.parse(hp.item_granularity, origin, "item_granularity")
        u, i = train["user_idx"].to_numpy(), train["item_idx"].to_numpy()
        r, ts = train["rating"].to_numpy(np.float32), train["timestamp"].to_numpy(np.int64)
        self.user_steps, user_row = build_sequences("user", u, i, r, ts, self.split.n_users, self.user_granularity)
        self.item_steps, item_row = build_sequences("item", i, u, r, ts, self.split.n_items, self.item_granularity)
        train["user_row"], train["item_row"] = user_row, item_row
        self.rating_range = (float(r.min()), float(r.max()))
        self.rating_mean = float(r.mean())

    def load_table(self) -> pd.DataFrame:
        hp = self.hparams
        if hp.format == "synthetic":
            from rrnx.data.synthetic import load_synthetic
            ratings, self.truth = load_synthetic(dict(hp.synthetic or {"preset": "small"}), self.cache_dir)
            return ratings
        if hp.path is None:
            raise RrnxError("data.path is required (a ratings file or directory), or set data.format: synthetic")
        from rrnx.data.cache import load_ratings
        scale = tuple(hp.scale) if hp.scale is not None else None
        return load_ratings(hp.path, hp.format, hp.columns, hp.sep, scale, self.cache_dir)

    @property
    def cache_dir(self) -> Path:
        from rrnx.data.cache import default_cache_dir
        return Path(self.hparams.cache_dir) if self.hparams.cache_dir else default_cache_dir()

    # ---------------------------------------------------------------- what models use
    @property
    def n_users(self) -> int:
        return self.split.n_users

    @property
    def n_items(self) -> int:
        return self.split.n_items

    def triples(self, split: str, extra: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
        """All ratings of one split as tensors (user/item are contiguous indices)."""
        frame = self.split.frame(split)
        cols = {"user": "user_idx", "item": "item_idx", "rating": "rating", "timestamp": "timestamp"}
        cols.update({k: k for k in extra})
        return {k: torch.from_numpy(frame[c].to_numpy().copy()) for k, c in cols.items()}

    def triples_loader(self, split: str, batch_size: int | None = None, shuffle: bool = False,
                       extra: tuple[str, ...] = ()) -> TripleBatches:
        return TripleBatches(self.triples(split, extra), batch_size or self.hparams.batch_size,
                             shuffle, self.hparams.seed)

    def rating_matrix(self, side: str = "user") -> torch.Tensor:
        """Training ratings as a sparse CSR matrix, (n_users, n_items) for side='user', transposed for 'item'."""
        train = self.split.train
        rows, cols = train["user_idx"].to_numpy(), train["item_idx"].to_numpy()
        shape = (self.n_users, self.n_items)
        if side == "item":
            rows, cols, shape = cols, rows, shape[::-1]
        coo = torch.sparse_coo_tensor(torch.as_tensor(np.stack([rows, cols])),
                                      torch.as_tensor(train["rating"].to_numpy(np.float32)), shape)
        return coo.coalesce().to_sparse_csr()

    def steps(self, side: str) -> StepSequences:
        return self.user_steps if side == "user" else self.item_steps

    # ---------------------------------------------------------------- Lightning hooks
    def _model(self):
        return self.trainer.lightning_module if self.trainer is not None else None

    def train_dataloader(self):
        model = self._model()
        if model is not None and hasattr(model, "train_loader"):
            return model.train_loader(self)
        return self.triples_loader("train", shuffle=True)

    def eval_loader(self, split: str):
        """The model's own evaluation loader if it has one, else the split's triples in order."""
        model = self._model()
        if model is not None and hasattr(model, "eval_loader"):
            return model.eval_loader(self, split)
        return self.triples_loader(split)

    def val_dataloader(self):
        return self.eval_loader("val")

    def test_dataloader(self):
        return self.eval_loader("test")
