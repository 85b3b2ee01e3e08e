"""The prepared-data cache (rrnx.data.prepared): a rerun reads the split and buckets back instead of
recomputing them, gets exactly the same data, and never a stale or damaged entry."""

from __future__ import annotations

import dataclasses
import errno
import mmap
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import rrnx.data.prepared as prepared
from rrnx.data.datamodule import TemporalDataModule
from rrnx.data.synthetic import PRESET_SPLITS, load_synthetic
from conftest import ratings_frame

TINY = {"preset": "small", "n_users": 300, "n_items": 100, "n_ratings": 6000}
SYNTHETIC = dict(format="synthetic", synthetic=TINY, user_granularity="7d", item_granularity="14d",
                 **PRESET_SPLITS["small"])
CSV_TEST_START = "2010-03-20"


def synthetic_data(cache_dir: Path, **changes) -> TemporalDataModule:
    data = TemporalDataModule(**{**SYNTHETIC, "cache_dir": str(cache_dir), **changes})
    data.setup()
    return data


def string_id_csv(path: Path) -> Path:
    """ratings_frame with string ids: the ids come back through fixed-width unicode arrays."""
    frame = ratings_frame()
    frame["user"] = "u" + frame["user"].astype(str)
    frame["item"] = "i" + frame["item"].astype(str)
    frame.to_csv(path, index=False)
    return path


def csv_data(path: Path, cache_dir: Path, **changes) -> TemporalDataModule:
    data = TemporalDataModule(path=str(path), format="csv", test_start=CSV_TEST_START, user_granularity="7d",
                              item_granularity="7d", cache_dir=str(cache_dir), **changes)
    data.setup()
    return data


def assert_same_data(a: TemporalDataModule, b: TemporalDataModule, truth: bool = True) -> None:
    """Every frame, id, summary figure, sequence field and statistic equal, dtypes included."""
    for name in ("train", "val", "test"):
        pd.testing.assert_frame_equal(a.split.frame(name), b.split.frame(name))
    for mine, theirs in ((a.split.user_ids, b.split.user_ids), (a.split.item_ids, b.split.item_ids)):
        assert mine.dtype == theirs.dtype
        np.testing.assert_array_equal(mine, theirs)
    assert a.split.summary == b.split.summary
    for side in ("user", "item"):
        for field in dataclasses.fields(a.steps(side)):
            mine, theirs = getattr(a.steps(side), field.name), getattr(b.steps(side), field.name)
            if isinstance(mine, np.ndarray):
                assert mine.dtype == theirs.dtype, f"{side}.{field.name}"
                np.testing.assert_array_equal(mine, theirs, err_msg=f"{side}.{field.name}")
            else:
                assert mine == theirs and type(mine) is type(theirs), f"{side}.{field.name}"
    assert (a.user_granularity, a.item_granularity) == (b.user_granularity, b.item_granularity)
    assert a.rating_range == b.rating_range and a.rating_mean == b.rating_mean
    assert a.truth == b.truth or not truth


def mapped(array: np.ndarray) -> bool:
    """Whether the array's memory is a file mapping (np.load's mmap), not memory of the process's own."""
    while array is not None and not isinstance(array, mmap.mmap):
        array = getattr(array, "base", None) if isinstance(array, np.ndarray) else getattr(array, "_mmap", None)
    return isinstance(array, mmap.mmap)


def no_table(self, *args, **kwargs):
    raise AssertionError("a prepared-cache hit must not load the table")


def test_a_rerun_reads_the_same_data_back_without_loading_the_table(tmp_path, monkeypatch):
    first = synthetic_data(tmp_path)
    assert first.prepared_cache == "written" and {"table", "split", "bucketing", "write"} <= set(first.prepare_seconds)
    # the first run, too, works from the files it wrote: a column it never reads never becomes resident
    assert mapped(first.split.train["user"].to_numpy()) and mapped(first.user_steps.other_row)
    computed = TemporalDataModule.from_table(*load_synthetic(TINY, tmp_path), **SYNTHETIC)  # never cached
    assert not mapped(computed.user_steps.other_row)
    assert_same_data(computed, first)
    monkeypatch.setattr(TemporalDataModule, "load_table", no_table)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = synthetic_data(tmp_path)
    assert again.prepared_cache == "read" and set(again.prepare_seconds) == {"read"}
    assert_same_data(first, again)
    assert again.truth is not None  # the synthetic truth travels with the entry (rrnx fit writes it to the run)
    # the arrays are plain, writable ones: torch.from_numpy takes them without a warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        torch.from_numpy(again.user_steps.other_row)
        torch.from_numpy(again.split.train["rating"].to_numpy().copy())
    assert again.item_steps.value.flags.writeable


def test_a_file_source_with_string_ids_is_cached_too(tmp_path, monkeypatch):
    path = string_id_csv(tmp_path / "ratings.csv")
    first = csv_data(path, tmp_path / "cache")
    assert first.prepared_cache == "written" and first.split.train["user"].dtype == "str"
    real_load_table = TemporalDataModule.load_table
    monkeypatch.setattr(TemporalDataModule, "load_table", no_table)
    again = csv_data(path, tmp_path / "cache")
    assert again.prepared_cache == "read"
    assert_same_data(first, again)
    monkeypatch.setattr(TemporalDataModule, "load_table", real_load_table)
    with open(path, "a") as handle:  # an edited file is a new source: a miss
        handle.write("u100,i5000,5,1262400000\n")
    assert csv_data(path, tmp_path / "cache").prepared_cache == "written"


@pytest.mark.parametrize("change", [{"user_granularity": "1d"}, {"item_granularity": "1mo"},
                                    {"test_start": "2005-12-01"}, {"train_start": "2005-02-01"}, {"seed": 1},
                                    {"test_end": "2005-12-15"}, {"synthetic": {**TINY, "seed": 1}}])
def test_a_changed_setting_is_a_miss(tmp_path, change):
    synthetic_data(tmp_path)
    changed = synthetic_data(tmp_path, **change)
    assert changed.prepared_cache == "written"
    table, truth = load_synthetic(dict(changed.hparams.synthetic), tmp_path)
    settings = {**SYNTHETIC, **change}
    assert_same_data(changed, TemporalDataModule.from_table(table, truth, **settings))
    assert synthetic_data(tmp_path, **change).prepared_cache == "read"  # and that entry is its own


def test_settings_that_do_not_change_the_split_share_the_entry(tmp_path):
    synthetic_data(tmp_path)
    assert synthetic_data(tmp_path, batch_size=64).prepared_cache == "read"
    assert synthetic_data(tmp_path, user_granularity="1w").prepared_cache == "written"  # another spelling


def test_a_code_change_is_a_miss_and_its_entry_replaces_the_unreachable_one(tmp_path, monkeypatch):
    old = synthetic_data(tmp_path)
    other_entry = entry_of(synthetic_data(tmp_path, user_granularity="1d"))  # another lineage: kept
    old_entry = entry_of(old)
    monkeypatch.setattr(prepared, "SOURCE_HASH", "edited")
    new = synthetic_data(tmp_path)
    assert new.prepared_cache == "written"
    assert not old_entry.exists()  # written by other code for the same source and settings: never read again
    assert sorted(tmp_path.glob("prepared-*")) == sorted([entry_of(new), other_entry])
    assert not list(tmp_path.glob(".prepared-*"))  # nothing left half-deleted
    assert_same_data(old, new)  # the old run's arrays, mapped from the deleted files, are still intact
    assert synthetic_data(tmp_path).prepared_cache == "read"


def entry_of(data: TemporalDataModule) -> Path:
    return prepared.entry_path(data.hparams.cache_dir, data._cache_keys()[1])


def entry(cache_dir: Path) -> Path:
    (found,) = Path(cache_dir).glob("prepared-*")
    return found


@pytest.mark.parametrize("damage", ["truncated array", "garbage array", "missing array", "garbage meta",
                                    "wrong shape"])
def test_a_damaged_entry_is_a_miss_with_one_warning_and_is_rebuilt(tmp_path, damage):
    first = synthetic_data(tmp_path / "reference")  # its own entry: the one damaged below maps nothing of it
    synthetic_data(tmp_path)
    target = entry(tmp_path) / "user.other_row.npy"
    if damage == "truncated array":
        target.write_bytes(target.read_bytes()[:-100])
    elif damage == "garbage array":
        target.write_bytes(b"not an array at all")
    elif damage == "missing array":
        target.unlink()
    elif damage == "garbage meta":
        (entry(tmp_path) / "meta.json").write_text("{half")
    else:  # a well-formed array of the wrong length
        np.save(target, np.zeros(3, dtype=np.int64))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again = synthetic_data(tmp_path)
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1 and "unreadable prepared-data cache" in messages[0], messages
    assert again.prepared_cache == "written"
    assert_same_data(first, again)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert synthetic_data(tmp_path).prepared_cache == "read"  # the damaged entry was replaced


def test_a_leftover_temp_directory_is_never_read(tmp_path):
    first = synthetic_data(tmp_path)
    path = entry(tmp_path)
    path.rename(path.with_name(f".{path.name}.abc.tmp"))  # what a run killed before the rename leaves
    again = synthetic_data(tmp_path)
    assert again.prepared_cache == "written"
    assert_same_data(first, again)


def test_an_entry_another_run_published_meanwhile_is_kept(tmp_path):
    data = synthetic_data(tmp_path)
    theirs = entry(tmp_path)
    (theirs / "marker").write_text("")
    stored = prepared.Prepared(data.split, data.user_steps, data.item_steps, data.rating_range,
                               data.rating_mean, data.truth)
    key = theirs.name.removeprefix("prepared-")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert prepared.write_prepared(tmp_path, key, stored)  # lost the race: theirs stays, ours goes
    assert (entry(tmp_path) / "marker").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


@pytest.mark.filterwarnings("ignore:cannot write the parse cache")
def test_an_unwritable_cache_dir_costs_speed_not_the_run(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")  # a cache dir below a file cannot be created, even by root
    path = string_id_csv(tmp_path / "ratings.csv")
    with pytest.warns(UserWarning, match="cannot write the prepared-data cache"):
        data = csv_data(path, blocker / "cache")
    assert data.prepared_cache == "not written"
    with pytest.warns(UserWarning, match="cannot write the prepared-data cache"):
        again = csv_data(path, blocker / "cache")
    assert_same_data(data, again)
    assert_same_data(data, csv_data(path, tmp_path / "cache"))


def test_a_full_disk_leaves_no_partial_entry(tmp_path, monkeypatch):
    real_save = np.save
    saved = []

    def full_disk(file, array, **kwargs):
        if saved:
            raise OSError(errno.ENOSPC, "No space left on device")
        saved.append(file)
        real_save(file, array, **kwargs)

    monkeypatch.setattr(prepared.np, "save", full_disk)
    with pytest.warns(UserWarning, match="cannot write the prepared-data cache"):
        data = synthetic_data(tmp_path)
    assert data.prepared_cache == "not written" and saved
    assert sorted(p.name for p in tmp_path.iterdir() if "prepared" in p.name) == []  # no entry, no temp dir
    monkeypatch.setattr(prepared.np, "save", real_save)
    assert_same_data(data, synthetic_data(tmp_path))


def test_data_the_cache_cannot_hold_is_prepared_anyway(tmp_path, monkeypatch):
    real_flatten = prepared._flatten

    def mixed_ids(stored):
        stored.split.user_ids = stored.split.user_ids.astype(object)
        stored.split.user_ids[0] = 1.5  # ids of mixed types: .npy would need a pickle
        return real_flatten(stored)

    monkeypatch.setattr(prepared, "_flatten", mixed_ids)
    with pytest.warns(UserWarning, match="cannot store this data"):
        assert synthetic_data(tmp_path).prepared_cache == "not written"
    monkeypatch.setattr(prepared, "_flatten", real_flatten)
    with pytest.warns(UserWarning, match="cannot store this data"):  # a truth that is not JSON
        data = TemporalDataModule.from_table(ratings_frame(), {"when": object()}, test_start=CSV_TEST_START)
        stored = prepared.Prepared(data.split, data.user_steps, data.item_steps, data.rating_range,
                                   data.rating_mean, data.truth)
        assert not prepared.write_prepared(tmp_path, "k", stored)
    assert [p.name for p in tmp_path.iterdir() if "prepared-k" in p.name] == []


def test_a_table_in_memory_is_never_cached(tmp_path):
    data = TemporalDataModule.from_table(ratings_frame(), test_start=CSV_TEST_START, cache_dir=str(tmp_path))
    assert data.prepared_cache is None and list(tmp_path.iterdir()) == []


def test_setup_frees_the_table_before_the_bucketing(tmp_path, monkeypatch):
    import gc
    import weakref

    import rrnx.data.datamodule as datamodule

    seen, alive = [], []
    real_load, real_build = TemporalDataModule.load_table, datamodule.build_sequences

    def load(self, *args, **kwargs):
        table = real_load(self, *args, **kwargs)
        alive.append(weakref.ref(table))
        return table

    def bucketing(*args, **kwargs):
        gc.collect()
        seen.append(alive[0]() is not None)
        return real_build(*args, **kwargs)

    monkeypatch.setattr(TemporalDataModule, "load_table", load)
    monkeypatch.setattr(datamodule, "build_sequences", bucketing)
    synthetic_data(tmp_path)
    assert seen == [False, False]


def test_the_bench_reads_the_prepared_data_on_a_rerun(tmp_path):
    from rrnx.bench import prepare, prepare_line

    said = []
    first, timings = prepare("small", "7d", "14d", 0, said.append, tmp_path)
    assert timings["prepared_cache"] == "written" and not timings["generation_cached"]
    assert "prepared data written to the cache" in prepare_line(timings)
    again, timings = prepare("small", "7d", "14d", 0, said.append, tmp_path)
    assert timings["prepared_cache"] == "read" and "read from the cache" in prepare_line(timings)
    assert_same_data(first, again)
    uncached, timings = prepare("small", "7d", "14d", 0, said.append)  # --no-cache
    assert "cache" not in prepare_line(timings)
    assert_same_data(first, uncached, truth=False)  # the uncached bench keeps no truth
