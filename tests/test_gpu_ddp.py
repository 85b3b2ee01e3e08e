"""DDP over NCCL on two CUDA devices: what tests/test_ddp.py checks on gloo, on GPUs (PMF through
DenseGradientDDP, RRN through its own exchanges). Skips without two devices; scripts/gpu-check.sh runs it
where a machine has them."""

import json

import pytest
import torch
from test_ddp import SETTINGS, TOLERANCE, ddp_fit, val_curve

from conftest import tiny_csv_recipe

pytestmark = [pytest.mark.gpu, pytest.mark.slow,
              pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")]

GPU = ["--trainer.accelerator=gpu"]
MODELS = {"pmf": [], "rrn": ["--model.pretrain_epochs=1", "--model.user_batch_size=29", "--model.item_batch_size=3",
                             "--model.biases=true"]}


@pytest.mark.parametrize("model", MODELS)
def test_two_gpus_train_what_one_gpu_trains(model, tmp_path):
    recipe = tiny_csv_recipe(tmp_path, model=model)
    overrides = [*SETTINGS, *MODELS[model], *GPU]
    one = ddp_fit([str(recipe), *overrides, "--trainer.devices=1"], tmp_path / "one")
    assert one.returncode == 0, one.stderr[-3000:]
    two = ddp_fit([str(recipe), *overrides, "--trainer.strategy=ddp", "--trainer.devices=2"], tmp_path / "two")
    assert two.returncode == 0, two.stderr[-3000:]
    alone, both = (json.loads(run.stdout.strip().splitlines()[-1]) for run in (one, two))
    # float32 on GPUs sums in other orders than the CPU: 1e-4, ten times the gloo tolerance
    assert val_curve(both) == pytest.approx(val_curve(alone), abs=10 * TOLERANCE)
    expected = "DenseGradientDDP" if model == "pmf" else "SelfSyncingDDP"
    assert (tmp_path / "two" / "weights-rank1.strategy").read_text() == expected
