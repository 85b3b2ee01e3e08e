"""RRN on CUDA: the same values as on the CPU, and no host-device round trip per LSTM step. Every test
here needs a CUDA device and skips without one; scripts/gpu-check.sh runs them (`pytest -m gpu`)
with `rrnx bench --accelerator gpu` on a machine that has one."""

import warnings

import pytest
import torch
from test_rrn import datamodule, recipe, tiny_model, tiny_ratings

from rrnx.models.rrn.lstm import packed_lstm

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


@pytest.fixture(autouse=True)
def full_float32():
    """cuDNN's LSTM runs its matmuls in TF32 by default (torch.backends.cudnn.allow_tf32): ~1e-4 off the
    CPU's float32 on an H200, where these tests compare to 1e-5. Training keeps TF32; the bench's val RMSE is
    the same to 4 decimals with and without it (docs/benchmarks.md, "RRN on a GPU")."""
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before


def packed_inputs(lengths, E=5):
    from torch.nn.utils.rnn import pack_sequence

    torch.manual_seed(0)
    return pack_sequence([torch.randn(n, E) for n in sorted(lengths, reverse=True)])


@pytest.mark.parametrize("kernel", ["torch", "cudnn", "auto"])
def test_packed_lstm_on_cuda_matches_the_cpu(kernel):
    packed = packed_inputs((30, 17, 17, 4, 1))
    lstm = torch.nn.LSTM(5, 7)
    x = packed.data.clone().requires_grad_()
    reference = packed_lstm(lstm, x, packed.batch_sizes, "torch")
    weights = torch.randn_like(reference)
    grads = torch.autograd.grad((reference * weights).sum(), [*lstm.parameters(), x])
    lstm_gpu = torch.nn.LSTM(5, 7).cuda()
    lstm_gpu.load_state_dict(lstm.state_dict())
    x_gpu = packed.data.cuda().requires_grad_()
    ours = packed_lstm(lstm_gpu, x_gpu, packed.batch_sizes.cuda(), kernel)
    ours_grads = torch.autograd.grad((ours * weights.cuda()).sum(), [*lstm_gpu.parameters(), x_gpu])
    assert torch.allclose(ours.cpu(), reference, atol=1e-5)
    assert all(torch.allclose(a, b.cpu(), atol=1e-4) for a, b in zip(grads, ours_grads))


@pytest.mark.parametrize("kernel", ["torch", "cudnn"])
def test_host_reads_do_not_grow_with_the_number_of_steps(kernel):
    """A sync per LSTM step would make a 200-step batch read the device 10x as often as a 20-step one."""
    lstm = torch.nn.LSTM(5, 7).cuda()

    def syncs(longest):
        packed = packed_inputs((longest, longest // 2, 3, 1))
        x = packed.data.cuda().requires_grad_()
        batch_sizes = packed.batch_sizes.cuda()
        torch.cuda.synchronize()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                packed_lstm(lstm, x, batch_sizes, kernel).sum().backward()
            finally:
                torch.cuda.set_sync_debug_mode("default")
        return sum("synchroniz" in str(w.message).lower() for w in caught)

    assert syncs(200) <= syncs(20) + 1


def test_rrn_phase_on_cuda_matches_the_cpu(tmp_path):
    data = datamodule(tmp_path, tiny_ratings())
    results = {}
    for device in ("cpu", "cuda"):
        model = tiny_model(data).to(device)
        other_before, _ = model._cached_states("item")
        entities = torch.arange(model._sides["user"].n_entities, device=device)
        pred, target, reg = model.phase_forward("user", entities, other_before)
        (((pred - target) ** 2).mean() + reg).backward()
        results[device] = (pred.detach().cpu(), [p.grad.cpu() for p in model.user_net.lstm.parameters()])
    assert torch.allclose(results["cpu"][0], results["cuda"][0], atol=1e-5)
    assert all(torch.allclose(a, b, atol=1e-4) for a, b in zip(results["cpu"][1], results["cuda"][1]))


# eq. (7) alone, and RRN on a TimeSVD++ base (trained first, on the same device: rrnx/models/rrn/base_model.py)
FIT_SETTINGS = {"eq7": {}, "base": {"biases": True, "global_mean": True, "base_epochs": 2,
                                    "base": {"name": "timesvdpp", "dim": 3, "n_bins": 4}}}


@pytest.mark.parametrize("settings", FIT_SETTINGS)
def test_fit_and_test_on_gpu_give_the_cpu_figures(tmp_path, settings):
    from rrnx.run import fit, test

    on_cpu = fit(recipe(tmp_path, epochs=1, **FIT_SETTINGS[settings]), tmp_path / "cpu", quiet=True)
    gpu_recipe = recipe(tmp_path, epochs=1, **FIT_SETTINGS[settings])
    gpu_recipe["trainer"]["accelerator"] = "gpu"
    on_gpu = fit(gpu_recipe, tmp_path / "gpu", quiet=True)
    assert on_gpu["val_rmse"] == pytest.approx(on_cpu["val_rmse"], abs=2e-3)
    assert test(tmp_path / "gpu", quiet=True, accelerator="cpu") == pytest.approx(on_gpu["test_rmse"], abs=1e-4)
