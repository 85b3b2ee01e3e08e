"""The prepared-data cache: a source's time split and bucketing, computed once, then read from
`<cache_dir>/prepared-<key>/` instead of being recomputed (issue 10, item 3: at Netflix-full scale
the split and the bucketing take about a minute; reading their result back is mostly I/O).

The key is the sha256 of the source table's own cache key (the synthetic generator's or the parse
cache's, each already covering the content and the reader or generator settings), of every setting
that changes the split or the bucketing (train_start, test_start, test_end, seed, both granularities)
and of the source of the code that computes them (split.py, steps.py, this file, datamodule.py): a
changed setting or an edited file is a miss, never a stale hit. A table handed over in memory
(`from_table`) has no key and is never cached.

Layout: one `.npy` file per array (no pickles) and `meta.json` (shapes, dtypes, column order, the
split summary, the granularities, the scalars), plus `truth.json` for synthetic data. String id
columns, which .npy cannot hold without pickling, are rebuilt as `user_ids[user_idx]` (the ids stored
as fixed-width unicode). Everything is written into a temp directory next to the final one and
renamed into place, so a killed run leaves at worst a `.tmp` directory that no run reads. An
unreadable or inconsistent entry is a miss with one warning and is rebuilt; a cache that cannot be
written costs speed, never the run (as in cache.py).

Reading maps the files copy-on-write (`np.load(mmap_mode="c")`) and asks the kernel to read them
ahead (`posix_fadvise(WILLNEED)`): the arrays are the page cache's pages, not fresh memory filled by a
copy (on the 2-core VM a fresh GiB costs 1-2.5 s of page faults, a mapped one about 0.03 s), and a
page enters the process's resident memory only when something reads it: at Netflix-full scale the
bench's epoch never reads the train frame's columns (4 GiB), which a copy, or touching every page,
would have made resident. They are still plain writable arrays: a write goes to a private copy of its
page, never to the file, and torch.from_numpy takes them without a warning. Entries are never
rewritten in place (a new one replaces a damaged one by rename), so a mapped file does not change
under a run.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from rrnx.data.split import SPLITS, Split, to_timestamp
from rrnx.data.steps import Granularity, StepSequences

FORMAT_VERSION = 1
_HERE = Path(__file__).resolve().parent
# the code whose output is cached: any change to it is a miss
SOURCE_HASH = hashlib.sha256(b"".join(
    (_HERE / name).read_bytes() for name in ("split.py", "steps.py", "ordering.py", "parallel.py", "prepared.py",
                                             "datamodule.py"))).hexdigest()[:16]
SIDES = ("user", "item")
ID_COLUMNS = {"user": "user_idx", "item": "item_idx"}  # a string id column -> the index column it is rebuilt from
SEQUENCE_ARRAYS = ("offsets", "step", "tau", "prev_tau", "newbie", "rating_offsets", "other", "value", "other_row")


@dataclass
class Prepared:
    """What the data module computes from a table: the split, both sides' sequences, the rating stats."""

    split: Split
    user_steps: StepSequences
    item_steps: StepSequences
    rating_range: tuple[float, float]
    rating_mean: float
    truth: dict | None = None


def prepared_key(source: str, settings: dict) -> str:
    """sha256 of the source table's key, the split and bucketing settings and the code's hash."""
    return _sha256({"version": FORMAT_VERSION, "code": SOURCE_HASH, **_what_is_prepared(source, settings)})


def lineage_key(source: str, settings: dict) -> str:
    """sha256 of the source and the settings alone: the entries of one lineage differ only by the code
    (or format version) that wrote them, and a new one makes the older ones unreachable (`_prune`)."""
    return _sha256(_what_is_prepared(source, settings))


def _what_is_prepared(source: str, settings: dict) -> dict:
    return {"source": source,
            "train_start": to_timestamp(settings.get("train_start"), "data.train_start"),
            "test_start": to_timestamp(settings.get("test_start"), "data.test_start"),
            "test_end": to_timestamp(settings.get("test_end"), "data.test_end"),
            "seed": settings.get("seed"),
            "user_granularity": str(settings.get("user_granularity")).strip(),
            "item_granularity": str(settings.get("item_granularity")).strip()}


def _sha256(fields: dict) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def entry_path(cache_dir, key: str) -> Path:
    return Path(cache_dir) / f"prepared-{key}"


# ---------------------------------------------------------------- writing
def write_prepared(cache_dir, key: str, prepared: Prepared, replace: bool = False, lineage: str | None = None) -> bool:
    """Store `prepared` under its key; False (with one warning, nothing left behind) when it cannot.
    `replace`: the entry there was found unreadable, so it goes; otherwise an entry found in place
    was published by another run meanwhile (same key, same data) and is kept. `lineage` (lineage_key):
    once this entry is in place, the entries of the same lineage that older code wrote are deleted."""
    final = entry_path(cache_dir, key)
    temp = None
    try:
        arrays, meta = _flatten(prepared)
        meta["key"], meta["lineage"] = key, lineage
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        temp = Path(tempfile.mkdtemp(dir=cache_dir, prefix=f".{final.name}.", suffix=".tmp"))
        for name, array in arrays.items():
            np.save(temp / f"{name}.npy", array, allow_pickle=False)
        if prepared.truth is not None:
            (temp / "truth.json").write_text(json.dumps(prepared.truth))
        (temp / "meta.json").write_text(json.dumps(meta))  # last: its presence says the rest is complete
        _publish(temp, final, replace)
        if lineage is not None:
            _prune(Path(cache_dir), final, lineage)
        return True
    except OSError:
        warnings.warn(f"cannot write the prepared-data cache in {cache_dir}; the next run splits and buckets "
                      "the data again", stacklevel=3)
        return False
    except (_Unstorable, TypeError, ValueError) as error:  # e.g. mixed-type ids, a truth that is not JSON
        warnings.warn(f"the prepared-data cache cannot store this data ({error}); the next run splits and "
                      "buckets it again", stacklevel=3)
        return False
    finally:
        if temp is not None and temp.exists():
            shutil.rmtree(temp, ignore_errors=True)


def _publish(temp: Path, final: Path, replace: bool) -> None:
    """Rename the finished directory into place, first moving aside the damaged entry it replaces;
    another run that published the same key in the meantime wins (its entry holds the same data)."""
    if replace and final.exists():
        trash = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.", suffix=".old"))
        os.replace(final, trash / "entry")
        shutil.rmtree(trash, ignore_errors=True)
    try:
        os.rename(temp, final)
    except OSError:
        if not (final / "meta.json").is_file():
            raise


def _prune(cache_dir: Path, kept: Path, lineage: str) -> None:
    """Delete the other entries of `lineage`: the same source and settings prepared by other code, which
    this code can never read (its key holds its own code's hash); at Netflix-full scale each is 7.1 GB.
    Each goes by a rename first, so no run sees half an entry; a run that mapped one keeps its pages."""
    for entry in cache_dir.glob("prepared-*"):
        if entry == kept:
            continue
        try:
            if json.loads((entry / "meta.json").read_text()).get("lineage") != lineage:
                continue
            trash = Path(tempfile.mkdtemp(dir=cache_dir, prefix=f".{entry.name}.", suffix=".old"))
            os.replace(entry, trash / "entry")
            shutil.rmtree(trash, ignore_errors=True)
        except (OSError, ValueError, AttributeError):  # unreadable, or gone already: not ours to judge
            continue


class _Unstorable(Exception):
    """The data holds something that plain .npy files cannot store exactly (e.g. ids of mixed types)."""


def _flatten(prepared: Prepared) -> tuple[dict[str, np.ndarray], dict]:
    """(name -> array, meta) of everything in `prepared` but the truth."""
    split = prepared.split
    arrays = {"user_ids": _storable_ids(split.user_ids), "item_ids": _storable_ids(split.item_ids)}
    frames = {}
    for name in SPLITS:
        frame = split.frame(name)
        frames[name] = {"columns": list(frame.columns), "rows": len(frame),
                        "dtypes": {c: str(frame[c].dtype) for c in frame.columns}, "rebuilt": []}
        for column in frame.columns:
            dtype = frame[column].dtype
            if isinstance(dtype, np.dtype) and dtype.kind in "biuf":
                arrays[f"{name}.{column}"] = frame[column].to_numpy()
            elif column in ID_COLUMNS and ID_COLUMNS[column] in frame.columns:
                _check_rebuildable(dtype, column)
                frames[name]["rebuilt"].append(column)
            else:
                raise _Unstorable(f"column {column!r} of dtype {dtype}")
    sides = {}
    for side, seq in (("user", prepared.user_steps), ("item", prepared.item_steps)):
        g = seq.granularity
        sides[side] = {"granularity": [g.count, g.unit, g.origin], "tau_mean": seq.tau_mean,
                       "tau_std": seq.tau_std, "linked": seq.other_row is not None}
        for field in SEQUENCE_ARRAYS:
            if getattr(seq, field) is not None:
                arrays[f"{side}.{field}"] = getattr(seq, field)
    meta = {"version": FORMAT_VERSION, "frames": frames, "sides": sides, "summary": split.summary,
            "rating_range": list(prepared.rating_range), "rating_mean": prepared.rating_mean,
            "truth": prepared.truth is not None,
            "arrays": {name: {"shape": list(a.shape), "dtype": a.dtype.str} for name, a in arrays.items()}}
    return arrays, meta


def _storable_ids(ids: np.ndarray) -> np.ndarray:
    """The ids as an array np.save writes without pickling: numbers as they are, strings as fixed-width
    unicode (turned back into str objects on reading)."""
    if ids.dtype.kind in "biuf":
        return ids
    if ids.dtype == object and all(type(v) is str for v in ids):
        return ids.astype(str) if len(ids) else np.array([], dtype="<U1")
    raise _Unstorable(f"ids of dtype {ids.dtype} that are not all strings")


def _check_rebuildable(dtype, column: str) -> None:
    """An id column is rebuilt by its dtype's name: that name must give the same dtype back."""
    try:
        same = pd.api.types.pandas_dtype(str(dtype)) == dtype
    except TypeError:
        same = False
    if not same:
        raise _Unstorable(f"column {column!r} of dtype {dtype!r}")


# ---------------------------------------------------------------- reading
def read_prepared(cache_dir, key: str, fallback: str = "preparing the data again") -> Prepared | None:
    """The entry stored under `key`, or None when there is none or it is unreadable (one warning, which
    ends with what the caller does instead, `fallback`)."""
    path = entry_path(cache_dir, key)
    if not (path / "meta.json").is_file():
        return None
    try:
        return _read(path, key)
    except Exception as error:  # any unreadable or inconsistent entry is only a miss
        warnings.warn(f"ignoring unreadable prepared-data cache {path} ({type(error).__name__}: {error}); "
                      f"{fallback}", stacklevel=3)
        return None


def _read(path: Path, key: str) -> Prepared:
    meta = json.loads((path / "meta.json").read_text())
    if meta.get("version") != FORMAT_VERSION or meta.get("key") != key:
        raise ValueError("written by another version or for another key")
    arrays = {name: _load(path / f"{name}.npy", spec) for name, spec in meta["arrays"].items()}
    ids = {side: _ids(arrays.pop(f"{side}_ids")) for side in SIDES}
    frames = {name: _frame(name, meta["frames"][name], arrays, ids) for name in SPLITS}
    split = Split(frames["train"], frames["val"], frames["test"], ids["user"], ids["item"], meta["summary"])
    steps = {side: _sequences(side, meta["sides"][side], arrays) for side in SIDES}
    for side, n in (("user", split.n_users), ("item", split.n_items)):
        _check_sequences(steps[side], n, len(split.train))
    truth = json.loads((path / "truth.json").read_text()) if meta["truth"] else None
    return Prepared(split, steps["user"], steps["item"], tuple(meta["rating_range"]), meta["rating_mean"], truth)


def _load(file: Path, spec: dict) -> np.ndarray:
    """The file mapped copy-on-write (see the module docstring), checked against the shape and dtype
    meta.json recorded, its pages read ahead into the page cache but mapped into the process only when
    used; a plain ndarray view (no np.memmap subclass downstream)."""
    array = np.load(file, mmap_mode="c", allow_pickle=False)
    if list(array.shape) != spec["shape"] or array.dtype.str != spec["dtype"]:
        raise ValueError(f"{file.name}: shape {array.shape} {array.dtype.str}, expected {spec['shape']} {spec['dtype']}")
    if array.size and hasattr(os, "posix_fadvise"):
        with open(file, "rb") as handle:  # asynchronous: a file evicted since it was written is read back early
            os.posix_fadvise(handle.fileno(), 0, 0, os.POSIX_FADV_WILLNEED)
    return array.view(np.ndarray)


def _ids(stored: np.ndarray) -> np.ndarray:
    return stored.astype(object) if stored.dtype.kind == "U" else stored


def _frame(name: str, spec: dict, arrays: dict, ids: dict) -> pd.DataFrame:
    """One split frame, columns in their order and of their dtypes, without copying the stored arrays."""
    columns = {}
    for column in spec["columns"]:
        if column in spec["rebuilt"]:
            values = ids[column][arrays[f"{name}.{ID_COLUMNS[column]}"]]  # (rows,) original ids, str objects
            columns[column] = pd.array(values, dtype=pd.api.types.pandas_dtype(spec["dtypes"][column]))
        else:
            columns[column] = arrays[f"{name}.{column}"]
    frame = pd.DataFrame(columns, copy=False)
    if len(frame) != spec["rows"] or {c: str(frame[c].dtype) for c in frame.columns} != spec["dtypes"]:
        raise ValueError(f"the {name} frame does not come back as written")
    return frame


def _sequences(side: str, spec: dict, arrays: dict) -> StepSequences:
    count, unit, origin = spec["granularity"]
    values = {field: arrays.get(f"{side}.{field}") for field in SEQUENCE_ARRAYS}
    if spec["linked"] and values["other_row"] is None:
        raise ValueError(f"{side}.other_row is missing")
    return StepSequences(side, Granularity(int(count), unit, int(origin)), tau_mean=spec["tau_mean"],
                         tau_std=spec["tau_std"], **values)


def _check_sequences(seq: StepSequences, n_entities: int, n_ratings: int) -> None:
    """The CSR's ends agree with each other and with the split: a cheap guard against a mixed-up entry."""
    n_active = seq.n_active
    ok = (seq.n_entities == n_entities and seq.offsets[-1] == n_active
          and all(len(getattr(seq, f)) == n_active for f in ("tau", "prev_tau", "newbie"))
          and len(seq.rating_offsets) == n_active + 1 and seq.rating_offsets[-1] == n_ratings
          and len(seq.other) == len(seq.value) == n_ratings
          and (seq.other_row is None or len(seq.other_row) == n_ratings))
    if not ok:
        raise ValueError(f"the {seq.side} sequences do not match the split")
