"""RRN's LSTM kernels (rrnx/models/rrn/lstm.py, fused.py): the fused C++ cell's gradients, its
fallback when it cannot be built, its build cache, and the same training predictions whichever
kernel runs. Values against nn.LSTM: tests/test_rrn.py. CUDA: tests/test_gpu.py.

The fused cell is built once per machine (about 35 s here) into the build cache and loaded from it
afterwards (a few ms), so these tests share one build with every other RRN test of the session."""

import shutil

import pytest
import torch
from test_rrn import datamodule, one_thread, tiny_model, tiny_ratings  # noqa: F401 (one_thread: autouse)

from rrnx.errors import RrnxError
from rrnx.models.rrn import fused
from rrnx.models.rrn.lstm import FusedPackedLSTMFunction, packed_lstm
from rrnx.models.rrn.sequences import PairDots, RatingBag, RowBatch, SideTensors, gather, take_rows

needs_compiler = pytest.mark.skipif(not (shutil.which("c++") and shutil.which("ninja")),
                                    reason="the fused LSTM cell needs a C++ compiler and ninja")


@pytest.fixture
def failed_build(monkeypatch):
    """The extension's build fails as it does without a compiler; the real state comes back after."""
    saved = dict(fused._state)
    fused.reset()

    def no_compiler():
        raise RuntimeError("Error building extension 'rrnx_lstm': c++: command not found\nmore lines")

    monkeypatch.setattr(fused, "_build", no_compiler)
    yield
    fused._state.clear()
    fused._state.update(saved)


@needs_compiler
@pytest.mark.parametrize("batch_sizes", [[4, 3, 3, 1], [3], [2, 2, 2]])
def test_fused_cell_gradients_match_finite_differences(batch_sizes):
    cell = fused.fused_cell(required=True)
    torch.manual_seed(0)
    rows, E, H = sum(batch_sizes), 3, 2
    inputs = [torch.randn(*shape, dtype=torch.double, requires_grad=True)
              for shape in ((rows, E), (4 * H, E), (4 * H,), (4 * H, H))]
    sizes = torch.tensor(batch_sizes)
    assert torch.autograd.gradcheck(lambda *a: FusedPackedLSTMFunction.apply(*a, sizes, cell), inputs)


@needs_compiler
def test_fused_cell_without_gradients_gives_the_same_states():
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(5, 6)
    x, sizes = torch.randn(9, 5), torch.tensor([4, 3, 2])
    with_grad = packed_lstm(lstm, x, sizes, "fused")
    with torch.no_grad():
        without = packed_lstm(lstm, x, sizes, "fused")
    assert with_grad.requires_grad and torch.equal(with_grad.detach(), without)


@needs_compiler
@pytest.mark.parametrize("n_threads", [1, 2])
def test_no_grad_passes_skip_the_factors_and_keep_the_training_states(n_threads, monkeypatch):
    """Under no_grad (state caches, evaluation) the cell runs without the backward's factors and writes
    each step's input product to a scratch block, thread by thread, blocks of 1-3 rows included (steps of
    600 rows split across threads; the last steps hold 3 and 1): the states are the training forward's,
    bit for bit."""
    cell = fused.fused_cell(required=True)
    calls = []

    class Spy:  # the compiled cell, recording whether each forward computed the factors
        def forward(self, *args):
            calls.append(args[-1])
            return cell.forward(*args)

        def __getattr__(self, name):
            return getattr(cell, name)

    monkeypatch.setattr("rrnx.models.rrn.lstm.resolve_kernel", lambda kernel, device: ("fused", Spy()))
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(40, 40)
    sizes = torch.tensor([600, 600, 520, 300, 3, 1])
    x = torch.randn(int(sizes.sum()), 40)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(n_threads)
        trained = packed_lstm(lstm, x, sizes, "fused")
        with torch.no_grad():
            cached = packed_lstm(lstm, x, sizes, "fused")
        states, factors, forget, dc_factor = cell.forward(x, *fused_weights(lstm), sizes, False)
    finally:
        torch.set_num_threads(threads)
    assert calls == [True, False]
    assert torch.equal(trained.detach(), cached) and torch.equal(states, cached)
    assert factors.numel() == forget.numel() == dc_factor.numel() == 0


def fused_weights(lstm: torch.nn.LSTM) -> tuple:
    """w_ih, bias (b_ih + b_hh), w_hh of layer 0, detached, as the fused cell takes them."""
    with torch.no_grad():
        return lstm.weight_ih_l0, lstm.bias_ih_l0 + lstm.bias_hh_l0, lstm.weight_hh_l0


@needs_compiler
@pytest.mark.parametrize("n_threads", [1, 2, 3])
def test_fused_cell_splits_steps_across_threads_as_nn_lstm(n_threads):
    """Steps of several hundred rows: each thread takes a range of a step's rows and does its recurrent
    matmuls and the cell there (lstm_cell.cpp); values and every gradient are nn.LSTM's."""
    from torch.nn.utils.rnn import pack_sequence

    torch.manual_seed(0)
    lstm = torch.nn.LSTM(6, 8)
    lengths = torch.randint(1, 7, (900,)).sort(descending=True)[0].tolist()  # steps of 900 down to ~150 rows
    seqs = [torch.randn(n, 6, requires_grad=True) for n in lengths]
    reference, _ = lstm(pack_sequence(seqs))
    weights = torch.randn_like(reference.data)
    grads = torch.autograd.grad((reference.data * weights).sum(), [*lstm.parameters(), *seqs])
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(n_threads)
        packed = pack_sequence(seqs)
        ours = packed_lstm(lstm, packed.data, packed.batch_sizes, "fused")
        ours_grads = torch.autograd.grad((ours * weights).sum(), [*lstm.parameters(), *seqs])
    finally:
        torch.set_num_threads(threads)
    assert max(packed.batch_sizes) > 2 * 256  # more than one thread's chunk (kGrainRows) per step
    assert torch.allclose(ours, reference.data, atol=1e-6)
    assert all(torch.allclose(a, b, atol=1e-4) for a, b in zip(grads, ours_grads))


def bags(n_ratings: int, n_bags: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Each rating's bag, non-decreasing, every bag non-empty, and each bag's first rating (offsets)."""
    extra = torch.randint(0, n_bags, (n_ratings - n_bags,), generator=generator)
    bag = torch.cat([torch.arange(n_bags), extra]).sort()[0]
    counts = torch.bincount(bag, minlength=n_bags)
    return bag, torch.cumsum(counts, 0) - counts


@needs_compiler
def test_the_compiled_rating_embedding_gradient_is_embedding_bags():
    cell = fused.fused_cell(required=True)
    generator = torch.Generator().manual_seed(0)
    bag, offsets = bags(40, 9, generator)
    index = torch.randint(0, 6, (40,), generator=generator)  # repeated rows: their gradients add up
    weights = torch.rand(40, dtype=torch.double, generator=generator)
    table = torch.randn(6, 3, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(lambda w: RatingBag.apply(w, index, offsets, bag, weights, cell), (table,))
    grad = torch.randn(9, 3, generator=generator)
    single = table.detach().float().requires_grad_()
    expected = torch.autograd.grad(torch.nn.functional.embedding_bag(
        index, single, offsets, mode="sum", per_sample_weights=weights.float()), single, grad)
    threads, sums = torch.get_num_threads(), []
    try:
        for n_threads in (1, 2, 4):  # each thread owns a range of table rows: the sums do not depend on the count
            torch.set_num_threads(n_threads)
            sums.append(cell.bag_backward(grad, index, bag, weights.float(), 6))
    finally:
        torch.set_num_threads(threads)
    assert torch.allclose(sums[0], expected[0], atol=1e-6)
    assert all(torch.equal(sums[0], other) for other in sums[1:])


@needs_compiler
@pytest.mark.parametrize("bias", [False, True])
def test_the_compiled_eq7_products_and_their_gradients_are_torch_ops(bias):
    """bias: the states' last column is each side's dynamic bias (RRN's dynamic_bias), added."""
    cell = fused.fused_cell(required=True)
    generator = torch.Generator().manual_seed(0)
    n = 50
    ia = torch.randint(0, 7, (n,), generator=generator).sort()[0]  # this side's rows: sorted, repeated
    ic = torch.randint(0, 4, (n,), generator=generator)  # out of order too
    ib, id_ = torch.randint(0, 9, (n,), generator=generator), torch.randint(0, 11, (n,), generator=generator)
    a, c = (torch.randn(8, 5, dtype=torch.double, requires_grad=True),  # row 7 is never taken
            torch.randn(4, 3, dtype=torch.double, requires_grad=True))
    b, d = torch.randn(9, 5, dtype=torch.double), torch.randn(11, 3, dtype=torch.double)
    assert torch.autograd.gradcheck(lambda a, c: PairDots.apply(a, ia, b, ib, c, ic, d, id_, cell, bias), (a, c))
    grad = torch.randn(n, dtype=torch.double, generator=generator)
    ours = PairDots.apply(a, ia, b, ib, c, ic, d, id_, cell, bias)
    if bias:
        expected = (a[ia, :4] * b[ib, :4]).sum(-1) + a[ia, 4] + b[ib, 4] + (c[ic] * d[id_]).sum(-1)
    else:
        expected = (a[ia] * b[ib]).sum(-1) + (c[ic] * d[id_]).sum(-1)
    assert torch.allclose(ours, expected, atol=1e-12)
    ours_grads = torch.autograd.grad(ours, (a, c), grad)
    expected_grads = torch.autograd.grad(expected, (a, c), grad)
    assert all(torch.allclose(x, y, atol=1e-12) for x, y in zip(ours_grads, expected_grads))
    assert ours_grads[0][7].abs().sum() == 0
    threads, sums = torch.get_num_threads(), []
    try:
        for n_threads in (1, 2, 4):  # each thread owns a range of rows: the sums do not depend on the count
            torch.set_num_threads(n_threads)
            sums.append(cell.row_sums(b.float(), ib, grad.float(), ia, 8, bias))
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(sums[0], other) for other in sums[1:])


@needs_compiler
@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64])
def test_the_compiled_gather_writes_what_the_torch_ops_write(index_dtype):
    """gather's per-rating arrays from the extension's one pass equal the torch ops' (value and dtype), with
    entities out of order, entities without rows and rows of one or several ratings; an empty batch too."""
    cell = fused.fused_cell(required=True)
    generator = torch.Generator().manual_seed(0)
    lengths = torch.randint(0, 6, (60,), generator=generator)  # (K,) some entities have no row
    offsets = torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)])
    per_row = torch.randint(1, 9, (int(offsets[-1]),), generator=generator)  # (R,)
    rating_offsets = torch.cat([torch.zeros(1, dtype=torch.int64), per_row.cumsum(0)])
    n = int(rating_offsets[-1])
    other, other_row = (torch.randint(0, top, (n,), generator=generator).to(index_dtype) for top in (100, 300))
    side = SideTensors("user", None, 0.0, 1.0, offsets, torch.arange(len(per_row)), torch.zeros(len(per_row), 3),
                       rating_offsets, other, torch.rand(n, generator=generator), other_row)
    for entities in (torch.randperm(60, generator=generator)[:40], torch.arange(60), torch.zeros(0, dtype=torch.int64)):
        for other_rows in (False, True):
            ours, theirs = gather(side, entities, cell, other_rows), gather(side, entities, None, other_rows)
            assert torch.equal(ours.rating_count, take_rows(theirs.ratings_per_row, theirs.rating_row).float())
            # the torch path leaves rating_count to the model; gather never slices (the model does: sliced_ratings)
            for name in set(RowBatch.__dataclass_fields__) - {"rating_count", "sliced"}:
                mine, expected = getattr(ours, name), getattr(theirs, name)
                assert (mine is None) == (expected is None) == (name == "other_row" and not other_rows), name
                if expected is not None:
                    assert mine.dtype == expected.dtype and torch.equal(mine, expected), name
    assert len(ours.ratings) == 0 and len(gather(side, torch.arange(60), cell).ratings) == n
    slim, full = gather(side, torch.arange(60), cell, ids=False), gather(side, torch.arange(60), cell)
    for name in RowBatch.__dataclass_fields__:  # without ids: those three left out, the rest as before
        if name in ("ratings", "rating_row", "rating_entity", "other_row", "sliced"):
            assert getattr(slim, name) is None, name
        else:
            assert torch.equal(getattr(slim, name), getattr(full, name)), name


def test_take_rows_gradient_is_the_embedding_gradient():
    generator = torch.Generator().manual_seed(0)
    table = torch.randn(5, 4, requires_grad=True)
    index = torch.tensor([0, 0, 1, 3, 3, 3, 4, 0])  # sorted runs and a repeat out of order
    grad = torch.randn(8, 4, generator=generator)
    (ours,) = torch.autograd.grad(take_rows(table, index), table, grad)
    (embedding,) = torch.autograd.grad(torch.nn.functional.embedding(index, table), table, grad)
    assert torch.allclose(ours, embedding, atol=1e-6) and ours[2].abs().sum() == 0  # row 2 is never taken


def test_a_failed_build_falls_back_to_the_torch_cell_with_one_warning_line(failed_build, capfd):
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(5, 6)
    x, sizes = torch.randn(9, 5), torch.tensor([4, 3, 2])
    first = packed_lstm(lstm, x, sizes, "auto")
    second = packed_lstm(lstm, x, sizes, "auto")
    assert torch.equal(first, packed_lstm(lstm, x, sizes, "torch")) and torch.equal(first, second)
    lines = capfd.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning: the fused LSTM cell could not be built")
    assert "command not found" in lines[0]
    with pytest.raises(RrnxError, match="lstm_kernel 'fused'.*install gcc"):
        packed_lstm(lstm, x, sizes, "fused")


def test_without_a_compiler_the_only_output_is_the_warning_line(tmp_path, monkeypatch, capfd):
    saved = dict(fused._state)
    fused.reset()
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    monkeypatch.setattr(fused.shutil, "which", lambda tool: None)
    monkeypatch.delenv("CXX", raising=False)
    try:
        assert fused.fused_cell() is None
    finally:
        fused._state.clear()
        fused._state.update(saved)
    lines = capfd.readouterr().err.strip().splitlines()
    assert lines == ["warning: the fused LSTM cell could not be built (RuntimeError: no c++ and no ninja on PATH); "
                     "using the pure-torch LSTM, up to 1.6x slower per epoch (docs/benchmarks.md)"]


def test_a_lock_left_by_a_killed_build_is_removed_and_a_fresh_one_kept(tmp_path, monkeypatch):
    import os
    import time

    import torch.utils.cpp_extension

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    monkeypatch.setattr(fused.shutil, "which", lambda tool: f"/usr/bin/{tool}")  # a compiler, as far as _build asks
    seen = []

    def load(name, build_directory, **_):
        seen.append((tmp_path / name / "lock").exists())

    monkeypatch.setattr(torch.utils.cpp_extension, "load", load)
    lock = tmp_path / fused.build_name() / "lock"
    lock.parent.mkdir(parents=True)
    lock.touch()
    fused._build()  # a lock as fresh as this one belongs to a build under way: torch's load waits on it
    old = time.time() - fused.STALE_LOCK_S - 60
    os.utime(lock, (old, old))
    fused._build()
    assert seen == [True, False]


def test_every_checkout_compiles_the_copy_in_the_build_folder(tmp_path, monkeypatch):
    """ninja rebuilds when the source path changes: two checkouts of one source must share a path."""
    import torch.utils.cpp_extension

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    monkeypatch.setattr(fused.shutil, "which", lambda tool: f"/usr/bin/{tool}")
    compiled = []
    monkeypatch.setattr(torch.utils.cpp_extension, "load", lambda name, sources, **_: compiled.extend(sources))
    fused._build()
    assert compiled == [str(tmp_path / fused.build_name() / "lstm_cell.cpp")]
    assert (tmp_path / fused.build_name() / "lstm_cell.cpp").read_bytes() == fused.SOURCE.read_bytes()


def test_the_build_folder_changes_with_the_source(tmp_path, monkeypatch):
    before = fused.build_name()
    changed = tmp_path / "lstm_cell.cpp"
    changed.write_bytes(fused.SOURCE.read_bytes() + b"\n// changed\n")
    monkeypatch.setattr(fused, "SOURCE", changed)
    assert fused.build_name() != before and fused.build_name().startswith("rrnx_lstm_")



def test_each_torch_installation_has_its_own_build_folder(monkeypatch):
    """torch's build.ninja names torch's header folder: a second virtual environment sharing the build folder
    rewrote it, and ninja rebuilt the cell (a silent minute) every time the other environment had run."""
    before = fused.build_name()
    monkeypatch.setattr(torch, "__file__", "/elsewhere/venv/lib/python3.11/site-packages/torch/__init__.py")
    assert fused.build_name() != before

@needs_compiler
@pytest.mark.parametrize("side", ["user", "item"])
@pytest.mark.parametrize("dynamic_bias", [False, True])
def test_training_predictions_and_gradients_agree_across_kernels(tmp_path, side, dynamic_bias):
    data = datamodule(tmp_path, tiny_ratings())
    results = {}
    for kernel in ("torch", "fused"):
        model = tiny_model(data, lstm_kernel=kernel, dynamic_bias=dynamic_bias)
        other_before, _ = model._cached_states("item" if side == "user" else "user")
        pred, _, _ = model.phase_forward(side, torch.arange(model._sides[side].n_entities), other_before)
        pred.square().mean().backward()
        # the LSTM's, eq. (5)'s embedding (RatingBag with "fused") and eq. (7)'s (PairDots) gradients
        params = [*model._net(side).parameters(), *model._stationary_params(side)]
        results[kernel] = (pred.detach(), [p.grad.to_dense() for p in params])
    (pred_t, grads_t), (pred_f, grads_f) = results["torch"], results["fused"]
    assert torch.allclose(pred_t, pred_f, atol=1e-5)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(grads_t, grads_f))


def test_an_unknown_lstm_kernel_is_refused(tmp_path):
    data = datamodule(tmp_path, tiny_ratings())
    with pytest.raises(ValueError, match="lstm_kernel must be one of auto, fused, torch, cudnn"):
        tiny_model(data, lstm_kernel="mkl")


@pytest.mark.parametrize("blocks", [1, 3, 64])
def test_partition_order_lists_the_ratings_slice_by_slice_keeping_their_order(blocks):
    cell = fused.fused_cell(required=True)
    keys = torch.randint(0, 1000, (5000,), generator=torch.Generator().manual_seed(0))
    order = cell.partition_order(keys, 1000, blocks)  # (N,)
    assert torch.equal(order, torch.sort(keys * blocks // 1000, stable=True)[1])  # by slice, then as given
    with pytest.raises(RuntimeError, match="outside"):
        cell.partition_order(torch.tensor([0, 1000]), 1000, blocks)


def test_take_in_order_takes_every_tensor_in_the_order():
    cell = fused.fused_cell(required=True)
    generator = torch.Generator().manual_seed(0)
    order = torch.randperm(10_000, generator=generator)
    tensors = [torch.randint(0, 99, (10_000,), generator=generator), torch.rand(10_000, generator=generator)]
    taken = cell.take_in_order(order, tensors)
    assert len(taken) == 2 and all(torch.equal(t, s[order]) and t.dtype == s.dtype for t, s in zip(taken, tensors))
    with pytest.raises(RuntimeError, match="outside"):
        cell.take_in_order(torch.tensor([0, 2]), [torch.zeros(2)])
