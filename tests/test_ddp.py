"""Lightning DDP (rrnx.distributed, docs/scaling.md): 2 gloo processes on CPU train what one process
trains, rank 0 alone writes the run folder, every rank ends with the same weights, a killed 2-process run
resumes, and commands that train one process per run refuse several in one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from conftest import ROOT, tiny_csv_recipe
from rrnx.data.batches import Batches
from rrnx.errors import RrnxError
from rrnx.recipe import apply_overrides, load_recipe, parse_overrides

# One thread per process: the 2 processes share this machine's cores (tests/ddp_fit.py is the worker).
SETTINGS = ["--trainer.max_epochs=3", "--trainer.num_threads=1", "--data.batch_size=64"]
DDP = ["--trainer.strategy=ddp", "--trainer.devices=2"]
# float32 sums taken in another order (each rank sums its part, then the ranks' sums are added) move a
# 3-epoch validation RMSE on this data by ~1e-7; 1e-5 leaves room for other BLAS builds, and a real
# difference (a rank training on its half alone, an unreduced gradient) moves it by 1e-3 or more.
TOLERANCE = 1e-5
# One model per way of combining the ranks: DDP's reducer over sparse gradients (pmf; timesvdpp and biasedmf
# take the same path, measured in docs/scaling.md), sums reduced by the model (bias), RRN's phases. RRN's
# 29 users per batch leave a batch of 1 user of the tiny data's 30: rank 1's part of it is empty.
# rrn-parts: each rank runs its part of a batch in parts of about 25 ratings (RRN's part_ratings).
MODELS = {"pmf": [], "bias": [],
          "rrn": ["--model.pretrain_epochs=1", "--model.user_batch_size=29", "--model.item_batch_size=3",
                  "--model.biases=true"]}
MODELS["rrn-parts"] = [*MODELS["rrn"], "--model.part_ratings=25"]
# rrn-base: RRN on a TimeSVD++ base, which trains first on sharded triples (rrnx/models/rrn/base_model.py)
MODELS["rrn-base"] = [*MODELS["rrn"], "--model.base={name: timesvdpp, dim: 3, n_bins: 4}", "--model.base_epochs=2"]


def ddp_fit(args: list[str], out: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    """tests/ddp_fit.py in a fresh process (Lightning's launcher reruns that file for rank 1)."""
    return subprocess.run([sys.executable, str(ROOT / "tests" / "ddp_fit.py"), *args[:1], str(out), *args[1:]],
                          cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})


def why(done: subprocess.CompletedProcess) -> str:
    """A failed 2-process run's stderr for the assertion: its unindented lines other than rank 1's, then its
    end. A rank that dies of a signal prints one such line (CI once lost rank 0's behind rank 1's traceback)."""
    own = [line for line in done.stderr.splitlines() if line and not line.startswith(("[rank", " "))]
    return "\n".join(own[-20:]) + "\n...\n" + done.stderr[-3000:]


def one_process_fit(recipe_path: Path, overrides: list[str], out: Path) -> dict:
    from rrnx.run import fit

    torch.set_num_threads(1)
    return fit(apply_overrides(load_recipe(recipe_path), parse_overrides(overrides)), out, quiet=True)


def val_curve(metrics: dict) -> list[float]:
    return [e["val/rmse"] for e in metrics["epochs"]]


def test_shards_cut_each_global_batch_and_cover_every_row_once():
    tensors = {"x": torch.arange(11)}
    whole = [b["x"] for b in Batches(tensors, 4, shuffle=True, seed=3)]
    parts = [[b["x"] for b in Batches(tensors, 4, shuffle=True, seed=3).shard(r, 3)] for r in range(3)]
    assert [len(p) for p in parts] == [len(whole)] * 3  # every rank takes every step
    for k, batch in enumerate(whole):
        assert torch.equal(torch.cat([parts[r][k] for r in range(3)]), batch)
    assert [len(parts[r][-1]) for r in range(3)] == [1, 1, 1]  # the last batch (3 rows): one row each


@pytest.mark.slow
@pytest.mark.parametrize("model", MODELS)
def test_two_processes_train_what_one_trains(model, tmp_path):
    recipe = tiny_csv_recipe(tmp_path, model=model.split("-")[0])
    overrides = [*SETTINGS, *MODELS[model]]
    alone = one_process_fit(recipe, overrides, tmp_path / "one")
    done = ddp_fit([str(recipe), *overrides, *DDP], tmp_path / "two")
    assert done.returncode == 0, why(done)
    two = json.loads(done.stdout.strip().splitlines()[-1])
    assert val_curve(two) == pytest.approx(val_curve(alone), abs=TOLERANCE)
    assert two["test_rmse"] == pytest.approx(alone["test_rmse"], abs=TOLERANCE)
    # one writer: the files of a finished run, once; every test row once, in the one-process order
    run = tmp_path / "two"
    assert sorted(p.name for p in run.iterdir() if not p.name.startswith("weights-")) == sorted(
        p.name for p in (tmp_path / "one").iterdir())
    ours, theirs = pd.read_parquet(run / "predictions.parquet"), pd.read_parquet(tmp_path / "one" / "predictions.parquet")
    columns = ["user", "item", "timestamp", "rating"]
    assert ours[columns].equals(theirs[columns])
    assert (ours["prediction"] - theirs["prediction"]).abs().max() < 100 * TOLERANCE
    # both ranks end with the same weights (reduced gradients, shared stationary rows)
    rank0 = torch.load(run / "weights-rank0.pt", weights_only=True)
    rank1 = torch.load(run / "weights-rank1.pt", weights_only=True)
    assert rank0.keys() == rank1.keys() and all(torch.equal(rank0[k], rank1[k]) for k in rank0)
    if model == "pmf":  # sparse gradients: reduced densely, gloo's sparse all-reduce corrupts memory
        assert (run / "weights-rank0.strategy").read_text() == "DenseGradientDDP"


@pytest.mark.slow
def test_a_killed_two_process_run_resumes(tmp_path):
    recipe = tiny_csv_recipe(tmp_path, model="pmf")
    alone = one_process_fit(recipe, SETTINGS, tmp_path / "one")
    killed = ddp_fit([str(recipe), *SETTINGS, *DDP], tmp_path / "two", env={"RRNX_TEST_KILL_AT_EPOCH": "2"})
    assert killed.returncode != 0 and "killed as epoch 2 began" in killed.stderr
    assert (tmp_path / "two" / "INCOMPLETE").exists() and (tmp_path / "two" / "checkpoints" / "last.ckpt").exists()
    resumed = ddp_fit(["--resume"], tmp_path / "two")
    assert resumed.returncode == 0, why(resumed)
    metrics = json.loads(resumed.stdout.strip().splitlines()[-1])
    assert [e["epoch"] for e in metrics["epochs"]] == [0, 1, 2]
    assert val_curve(metrics) == pytest.approx(val_curve(alone), abs=TOLERANCE)
    assert not (tmp_path / "two" / "INCOMPLETE").exists()


def test_commands_that_train_one_process_per_run_refuse_several(tmp_path):
    from rrnx.run import fit

    recipe = apply_overrides(load_recipe(tiny_csv_recipe(tmp_path)), parse_overrides(DDP))
    with pytest.raises(RrnxError, match=r"rrnx sweep trains each run in one process; the trainer settings ask for 2"):
        fit(recipe, tmp_path / "run", quiet=True, one_process="rrnx sweep")
    assert not (tmp_path / "run").exists()


def test_spawn_launchers_are_refused_before_any_file(tmp_path):
    from rrnx.run import fit

    recipe = apply_overrides(load_recipe(tiny_csv_recipe(tmp_path)),
                             parse_overrides(["--trainer.strategy=ddp_spawn", "--trainer.devices=2"]))
    with pytest.raises(RrnxError, match="use --trainer.strategy=ddp"):
        fit(recipe, tmp_path / "run", quiet=True)
    assert not (tmp_path / "run").exists()


def test_processes_started_together_need_their_run_folder(tmp_path, monkeypatch):
    """Under torchrun every rank starts at once: a rank other than 0 cannot guess rank 0's default folder."""
    from lightning.fabric.utilities import rank_zero as fabric_rank_zero
    from lightning.pytorch.utilities import rank_zero

    from rrnx.run import fit

    # the Trainer this rank 1 builds sets Lightning's process-wide rank; later tests in this process
    # are rank 0 again (their loggers would otherwise write nothing)
    for module in (rank_zero, fabric_rank_zero):
        monkeypatch.setattr(module.rank_zero_only, "rank", getattr(module.rank_zero_only, "rank", 0))

    for key, value in {"RANK": "1", "LOCAL_RANK": "1", "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2", "GROUP_RANK": "0",
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29999", "TORCHELASTIC_RUN_ID": "t"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("RRNX_OUT", str(tmp_path / "runs"))
    recipe = apply_overrides(load_recipe(tiny_csv_recipe(tmp_path)), parse_overrides(DDP))
    with pytest.raises(RrnxError, match="give every process the same --out"):
        fit(recipe, quiet=True)
    assert not (tmp_path / "runs").exists()


def test_models_that_sync_themselves_never_get_the_ddp_wrapper():
    """strategy ddp with one device wrapped RRN in DistributedDataParallel, whose reducer refused the unused
    network of each phase; a model with `syncs_own_updates` gets SelfSyncingDDP for any ddp strategy."""
    from rrnx.distributed import Role, SelfSyncingDDP, trainer_arguments
    from rrnx.models.bias import Bias
    from rrnx.models.pmf import PMF
    from rrnx.models.rrn import RRN

    for model, role in ((RRN(5, 4), Role()), (Bias(5, 4), Role(1, 2))):
        assert isinstance(trainer_arguments({"strategy": "ddp"}, model, role)["strategy"], SelfSyncingDDP)
    assert trainer_arguments({"strategy": "auto"}, RRN(5, 4), Role()) == {"strategy": "auto"}
    assert trainer_arguments({"strategy": "auto"}, PMF(5, 4), Role(0, 2)) == {"strategy": "auto"}
    with pytest.raises(RrnxError, match="with strategy 'ddp' only"):
        trainer_arguments({"strategy": "fsdp"}, RRN(5, 4), Role(0, 2))


def test_sparse_gradient_models_on_several_processes_reduce_dense_gradients():
    """NCCL cannot all-reduce sparse gradients and gloo's sparse all-reduce corrupts memory: pmf on 2 GPUs
    or 2 CPU processes gets DenseGradientDDP; a dense model and a single process keep the recipe's strategy."""
    from rrnx.distributed import DenseGradientDDP, Role, trainer_arguments
    from rrnx.models.autorec import IAutoRec
    from rrnx.models.pmf import PMF

    for accelerator in ("gpu", "cpu"):
        chosen = trainer_arguments({"strategy": "ddp", "accelerator": accelerator}, PMF(5, 4), Role(0, 2))
        assert isinstance(chosen["strategy"], DenseGradientDDP)
        dense = {"strategy": "ddp", "accelerator": accelerator}
        assert trainer_arguments(dense, IAutoRec(5, 4), Role(0, 2)) == dense  # dense weights: DDP reduces them
    assert trainer_arguments({"strategy": "ddp", "accelerator": "gpu"}, PMF(5, 4), Role(0, 1))["strategy"] == "ddp"
    spawn = {"strategy": "ddp_spawn", "accelerator": "gpu"}
    assert trainer_arguments(spawn, PMF(5, 4), Role(0, 2)) == spawn  # left for check_launcher to refuse


def test_rows_touched_keeps_the_rows_a_sparse_gradient_holds():
    from rrnx.distributed import rows_touched

    weight = torch.nn.Embedding(6, 3, sparse=True)
    weight(torch.tensor([4, 1, 4])).pow(2).sum().backward()
    sparse = weight.weight.grad.coalesce()
    again = rows_touched(sparse.to_dense()).coalesce()
    assert torch.equal(again.indices(), sparse.indices()) and torch.equal(again.values(), sparse.values())
    assert rows_touched(None) is None


@pytest.mark.slow
def test_timesvdpp_on_two_processes_reduces_densely_and_keeps_its_ranks_equal(tmp_path):
    """TimeSVD++ takes pmf's path (DenseGradientDDP), but under DDP it differs from one process by its
    batch-mean weighting (docs/scaling.md): checked here is that it trains, reduces densely on both ranks
    and leaves them with the same weights."""
    recipe = tiny_csv_recipe(tmp_path, model="timesvdpp")
    done = ddp_fit([str(recipe), *SETTINGS, *DDP], tmp_path / "two")
    assert done.returncode == 0, why(done)
    for rank in (0, 1):
        assert (tmp_path / "two" / f"weights-rank{rank}.strategy").read_text() == "DenseGradientDDP"
    curve = val_curve(json.loads(done.stdout.strip().splitlines()[-1]))
    assert len(curve) == 3 and all(0 < rmse < 2 for rmse in curve)
    rank0 = torch.load(tmp_path / "two" / "weights-rank0.pt", weights_only=True)
    rank1 = torch.load(tmp_path / "two" / "weights-rank1.pt", weights_only=True)
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0)
