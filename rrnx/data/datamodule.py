"""TemporalDataModule: the data every rrnx model is trained and evaluated on, and nothing else.

raw file (or synthetic generator, or a table in memory: `from_table`) -> canonical table -> strict
time split -> per-side time steps. Models read rating triples, per-user/per-item training rating
vectors and per-user/per-item step sequences from it (see docs/plugins.md for the contract). Data
flows one way: the runner hands it to the model (`model.attach(data)`, then the model's loaders);
it knows no trainer and no model.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from lightning.fabric.utilities.data import AttributeDict

from rrnx.data.batches import Batches
from rrnx.data.cache import release_heap_memory
from rrnx.data.prepared import Prepared, entry_path, lineage_key, prepared_key, read_prepared, write_prepared
from rrnx.data.readers import FORMATS
from rrnx.data.sources import resolve_source
from rrnx.data.split import Split, time_split, to_timestamp
from rrnx.data.steps import Granularity, StepSequences, build_sequences, link_sides
from rrnx.errors import RrnxError

BATCH_KEYS = ("user", "item", "rating", "timestamp")


def _check_settings(batch_size: int, scale: list | None, path, format: str) -> None:
    """Values whose types are right but whose meaning is not: refused before any data loads."""
    if format == "synthetic" and path is not None:  # the file would be ignored and the run trained on generated data
        raise RrnxError(f"data.path: {path} is set, but data.format is synthetic, which generates its ratings and "
                        f"reads no file; to train on the file set data.format (auto, {', '.join(FORMATS)}), or drop "
                        "data.path")
    if batch_size < 1:
        raise RrnxError(f"data.batch_size: must be at least 1, got {batch_size}")
    if scale is not None:
        numbers = list(scale) if isinstance(scale, (list, tuple)) else [scale]
        if len(numbers) != 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in numbers) \
                or not numbers[0] < numbers[1]:
            raise RrnxError(f"data.scale: expected [min, max] with min < max, e.g. [1, 5]; got {scale!r}")


class TemporalDataModule:
    """Loads ratings, splits them strictly by time (paper, Table 1) and buckets them into steps.

    Args:
        path: ratings file or directory (refused when format is `synthetic`); `rrnx:NAME` is a data set
            shipped with rrnx (`rrnx:movietweetings-100k`).
        format: reader name (netflix, movielens, movietweetings, csv, parquet), `auto`, or `synthetic`.
        synthetic: generator parameters when format is `synthetic`, e.g. {preset: small, seed: 0}.
        train_start: first training date (null: the first rating); train = [train_start, test_start).
        test_start: first date of the test period, split at random into validation and test halves.
        test_end: end of the test period, exclusive (null: after the last rating).
        user_granularity: length of a user's time step (1d, 7d, 14d, 1mo, 2mo...).
        item_granularity: length of an item's time step (1d, 7d, 14d, 1mo, 2mo...).
        columns: column mapping of generic csv/parquet files, {user: ..., item: ..., rating: ..., timestamp: ...}.
        sep: field separator of generic csv files (default: comma).
        scale: [min, max] rating scale; ratings outside it are an error (default: the format's).
        seed: seed of the random validation/test halving of the test period.
        batch_size: rating triples per batch for models that train on triples.
        cache_dir: where parsed files, generated data and prepared (split and bucketed) data are cached
            (default $RRNX_CACHE or ~/.cache/rrnx).
        synthetic_fallback: a synthetic preset (e.g. `imdb`) to generate when `path` is null, for recipes of
            data sets that cannot ship; with a path it does nothing (rrnx.data.sources).

    `setup()` loads, splits and buckets once, or reads all three back from the prepared-data cache;
    `from_table(table, ...)` builds one over a table already in memory (never cached).
    """

    def __init__(self, path: str | None = None, format: str = "auto", synthetic: dict | None = None,
                 train_start: str | None = None, test_start: str | None = None, test_end: str | None = None,
                 user_granularity: str = "7d", item_granularity: str = "7d",
                 columns: dict | None = None, sep: str | None = None, scale: list | None = None,
                 seed: int = 0, batch_size: int = 4096, cache_dir: str | None = None,
                 synthetic_fallback: str | None = None):
        given = {k: v for k, v in locals().items() if k != "self"}
        settings, _ = resolve_source(given)  # keys it removes default to None
        self.hparams = AttributeDict({key: settings.get(key) for key in given})  # the data: section, as it runs
        _check_settings(batch_size, scale, self.hparams.path, self.hparams.format)
        self.split: Split | None = None
        self.truth: dict | None = None
        # the prepared-data cache: "read" (split and buckets read back), "written", "not written", or
        # None where none applies (a table handed over in memory)
        self.prepared_cache: str | None = None

    @classmethod
    def from_table(cls, ratings: pd.DataFrame, truth: dict | None = None, **settings) -> "TemporalDataModule":
        """Set-up data over a canonical ratings table already in memory (user, item, rating, timestamp),
        e.g. generated by the caller; `settings` are the constructor's (nothing is read from a path)."""
        return cls.from_owned_table([ratings], truth, **settings)

    @classmethod
    def from_owned_table(cls, holder: list, truth: dict | None = None, **settings) -> "TemporalDataModule":
        """from_table for a table only `holder` ([table]) refers to: it is taken out of the list, so it
        is freed once split, before the bucketing (at Netflix full scale, 2.6 GiB less at the peak)."""
        data = cls(**settings)
        data.truth = truth
        data._build(holder.pop())
        return data

    # ---------------------------------------------------------------- loading
    def setup(self, stage: str | None = None) -> None:
        """Loads, splits and buckets the ratings, once (`stage` is ignored). A file or synthetic source
        goes through the prepared-data cache (rrnx.data.prepared): an earlier run's split and buckets
        are read back without loading the table at all, else they are computed and stored."""
        if self.split is not None:
            return
        parse_key, key, lineage = self._cache_keys()
        found = key is not None and entry_path(self.cache_dir, key).exists()
        if found and self._read_prepared(key):
            return
        start = time.perf_counter()
        holder = [self.load_table(parse_key)]  # the only reference: _build frees the table once split
        table_seconds = time.perf_counter() - start
        self._build(holder.pop())
        self.prepare_seconds["table"] = table_seconds
        if key is not None:
            self._write_prepared(key, replace=found, lineage=lineage)  # found but not read: damaged

    def _cache_keys(self) -> tuple[str | None, str | None, str | None]:
        """(the file's parse-cache key, the prepared-data key, its lineage key); None where there is none
        (no path: then load_table says what is missing)."""
        hp = self.hparams
        if hp.format == "synthetic":
            from rrnx.data.synthetic import _cache_key
            parse_key, source = None, "synthetic:" + _cache_key(self._synthetic_params())[0]
        elif hp.path is None:
            return None, None, None
        else:
            from rrnx.data.cache import source_key
            parse_key = source_key(hp.path, hp.format, hp.columns, hp.sep, self._scale())
            source = "file:" + parse_key
        return parse_key, prepared_key(source, hp), lineage_key(source, hp)

    def _read_prepared(self, key: str) -> bool:
        """Take the split and buckets from the prepared-data cache; False on a miss."""
        start = time.perf_counter()
        prepared = read_prepared(self.cache_dir, key)
        if prepared is None:
            return False
        self._adopt(prepared)
        self.prepare_seconds = {"read": time.perf_counter() - start}
        self.prepared_cache = "read"
        return True

    def _adopt(self, prepared: Prepared) -> None:
        self.split, self.user_steps, self.item_steps = prepared.split, prepared.user_steps, prepared.item_steps
        self.user_granularity, self.item_granularity = self.user_steps.granularity, self.item_steps.granularity
        self.rating_range, self.rating_mean, self.truth = prepared.rating_range, prepared.rating_mean, prepared.truth

    def _write_prepared(self, key: str, replace: bool, lineage: str | None = None) -> None:
        """Store what _build computed for the next run (a cache that cannot be written is a warning), then
        work from the stored files, as a rerun does: the arrays are mapped, so the columns this run never
        reads leave its resident memory (at Netflix-full scale the train frame's 4 GiB, which RRN's epoch
        does not read). The seconds include mapping them back."""
        start = time.perf_counter()
        prepared = Prepared(self.split, self.user_steps, self.item_steps, self.rating_range, self.rating_mean,
                            self.truth)
        written = write_prepared(self.cache_dir, key, prepared, replace, lineage)
        del prepared
        stored = read_prepared(self.cache_dir, key, "this run keeps its own copy") if written else None
        if stored is not None:  # the same arrays (read_prepared checks shapes and dtypes), now file pages
            self._adopt(stored)
        self.prepare_seconds["write"] = time.perf_counter() - start
        self.prepared_cache = "written" if written else "not written"

    def _build(self, ratings: pd.DataFrame) -> None:
        hp = self.hparams
        source = "synthetic data" if hp.format == "synthetic" else str(hp.path or "the ratings table")
        start = time.perf_counter()
        self.split = time_split(ratings, hp.test_start, hp.train_start, hp.test_end, hp.seed, source)
        del ratings  # the caller's table, freed here when nothing else holds it (setup, from_owned_table)
        release_heap_memory()  # the split's freed temporaries leave the process (glibc keeps them otherwise)
        split_seconds = time.perf_counter() - start
        train = self.split.train
        origin = to_timestamp(hp.train_start, "data.train_start") or int(train["timestamp"].min())
        self.user_granularity = Granularity.parse(hp.user_granularity, origin, "user_granularity")
        self.item_granularity = Granularity.parse(hp.item_granularity, origin, "item_granularity")
        u, i = train["user_idx"].to_numpy(), train["item_idx"].to_numpy()
        r, ts = train["rating"].to_numpy(np.float32), train["timestamp"].to_numpy(np.int64)
        bucketed = {}  # side -> (each rating's row, the sequences' order), int32 where they fit
        self.user_steps, *bucketed["user"] = build_sequences("user", u, i, r, ts, self.split.n_users,
                                                             self.user_granularity, return_order=True)
        self.item_steps, *bucketed["item"] = build_sequences("item", i, u, r, ts, self.split.n_items,
                                                             self.item_granularity, return_order=True)
        link_sides(self.user_steps, self.item_steps, bucketed)  # frees each array once spent
        release_heap_memory()
        self.rating_range = (float(r.min()), float(r.max()))
        self.rating_mean = float(r.mean())
        self.prepare_seconds = {"split": split_seconds, "bucketing": time.perf_counter() - start - split_seconds}

    def load_table(self, parse_key: str | None = None) -> pd.DataFrame:
        """The canonical table (through the parse cache or the synthetic-data cache); `parse_key`: the
        file's parse-cache key when the caller has computed it already."""
        hp = self.hparams
        if hp.format == "synthetic":
            from rrnx.data.synthetic import load_synthetic
            ratings, self.truth = load_synthetic(self._synthetic_params(), self.cache_dir)
            return ratings
        if hp.path is None:
            raise RrnxError("data.path is required (a ratings file or directory), or set data.format: synthetic")
        from rrnx.data.cache import load_ratings
        return load_ratings(hp.path, hp.format, hp.columns, hp.sep, self._scale(), self.cache_dir, key=parse_key)

    def _synthetic_params(self) -> dict:
        return dict(self.hparams.synthetic or {"preset": "small"})

    def _scale(self) -> tuple | None:
        return tuple(self.hparams.scale) if self.hparams.scale is not None else None

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
                       extra: tuple[str, ...] = ()) -> Batches:
        return Batches(self.triples(split, extra), batch_size or self.hparams.batch_size,
                             shuffle, self.hparams.seed)

    def rating_matrix(self, side: str = "user") -> torch.Tensor:
        """Training ratings as a sparse CSR matrix, (n_users, n_items) for side='user', transposed for 'item'."""
        train = self.split.train
        rows, cols = train["user_idx"].to_numpy(), train["item_idx"].to_numpy()
        shape = (self.n_users, self.n_items)
        if side == "item":
            rows, cols, shape = cols, rows, shape[::-1]
        coo = torch.sparse_coo_tensor(torch.as_tensor(np.stack([rows, cols])),
                                      torch.as_tensor(train["rating"].to_numpy(np.float32, copy=True)), shape)
        return coo.coalesce().to_sparse_csr()

    def steps(self, side: str) -> StepSequences:
        return self.user_steps if side == "user" else self.item_steps
