"""RRN: causality, alternating phases, overfitting, resume, update without re-training, end to end.

Every test makes its own tiny data (a few hundred ratings) in tmp_path; each runs in seconds.
"""

import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from lightning.pytorch.callbacks import Callback

from conftest import assert_resume_is_exact
from rrnx.cli import main
from rrnx.data.datamodule import TemporalDataModule
from rrnx.errors import RrnxError
from rrnx.models.rrn import RRN
from rrnx.run import fit

DAY = 86_400
START = pd.Timestamp("2005-01-01", tz="UTC").timestamp()


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: one thread avoids OpenMP barrier stalls on busy shared cores (100x here)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_ratings(n_users=40, n_items=25, n=900, days=100, seed=0) -> pd.DataFrame:
    """Ratings with a little structure (user and item offsets, a drift) over `days` days."""
    rng = np.random.default_rng(seed)
    user, item = rng.integers(0, n_users, n), rng.integers(0, n_items, n)
    day = rng.integers(0, days, n)
    signal = 3 + 0.8 * np.sin(user) + 0.6 * np.cos(item) + 0.01 * day * np.sign(np.sin(3 * user))
    frame = pd.DataFrame({"user": 100 + user, "item": 500 + item,
                          "rating": np.clip(np.rint(signal + rng.normal(0, 0.3, n)), 1, 5).astype(np.float32),
                          "timestamp": (START + day * DAY + rng.integers(0, DAY, n)).astype(np.int64)})
    return frame.drop_duplicates(["user", "item"]).reset_index(drop=True)


def datamodule(tmp_path, ratings, name="ratings.parquet", **kwargs) -> TemporalDataModule:
    path = tmp_path / name
    ratings.to_parquet(path, index=False)
    settings = {"train_start": "2005-01-01", "test_start": "2005-03-22", "user_granularity": "3d",
                "item_granularity": "7d", "cache_dir": str(tmp_path / "cache"), **kwargs}
    data = TemporalDataModule(path=str(path), format="parquet", **settings)
    data.setup("fit")
    return data


def tiny_model(data, **kwargs) -> RRN:
    torch.manual_seed(0)
    settings = {"hidden": 8, "embed_dim": 6, "dynamic_dim": 4, "dim": 3, "pretrain_epochs": 0, **kwargs}
    model = RRN(data.n_users, data.n_items, **settings)
    model.set_data_stats(data.rating_range, data.rating_mean)
    with torch.no_grad():  # larger recurrent weights so every input visibly moves the states
        for net in (model.user_net, model.item_net):
            net.project.weight.normal_(std=0.5)
    model.attach(data)
    return model


def recipe(tmp_path, epochs=2, **model) -> dict:
    path = tmp_path / "ratings.parquet"
    if not path.exists():
        tiny_ratings().to_parquet(path, index=False)
    return {"data": {"path": str(path), "format": "parquet", "train_start": "2005-01-01",
                     "test_start": "2005-03-22", "user_granularity": "3d", "item_granularity": "7d",
                     "cache_dir": str(tmp_path / "cache")},
            "model": {"name": "rrn", "hidden": 8, "embed_dim": 6, "dynamic_dim": 4, "dim": 3, "pretrain_epochs": 1,
                      "user_batch_size": 16, "item_batch_size": 8, **model},
            "trainer": {"max_epochs": epochs, "seed": 0, "num_threads": 1, "enable_progress_bar": False}, "logger": {"name": "none"}}


def training_predictions(model) -> pd.DataFrame:
    """Every training rating's prediction, from the user phase and from the item phase."""
    out = {}
    with torch.no_grad():
        for side in ("user", "item"):
            seqs = model._sides[side]
            other_before, _ = model._cached_states("item" if side == "user" else "user")
            pred, target, _ = model.phase_forward(side, torch.arange(seqs.n_entities), other_before)
            out[side] = pred.numpy()
    return out


# ---------------------------------------------------------------------------- causality (Section 3.3)

# the paper's eq. (5); + the step's mean rating; the recipes' form (docs/rrn.md, "Beyond the paper")
CONFIGS = {"paper": {}, "step-mean": {"step_stats": True},
           "recipe": {"step_stats": "residual", "dynamic_bias": True, "rating_embedding": False, "biases": True,
                      "global_mean": True, "bias_reg": 1.0}}


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("which", [0, 1, 2])
def test_changing_a_rating_in_step_t_leaves_predictions_up_to_t_unchanged(tmp_path, which, config):
    ratings = tiny_ratings()
    train = ratings[ratings["timestamp"] < pd.Timestamp("2005-03-22", tz="UTC").timestamp()]
    victim = train.index[[len(train) // 4, len(train) // 2, 3 * len(train) // 4][which]]
    changed = ratings.copy()
    changed.loc[victim, "rating"] = 1.0 if ratings.loc[victim, "rating"] > 2 else 5.0
    data_a = datamodule(tmp_path, ratings, "a.parquet")
    data_b = datamodule(tmp_path, changed, "b.parquet")
    model = tiny_model(data_a, **CONFIGS[config])
    if "biases" in CONFIGS[config]:  # non-zero biases, so that residual inputs depend on them
        with torch.no_grad():
            model.user_bias.weight.normal_(std=0.3)
            model.item_bias.weight.normal_(std=0.3)
    ts = int(ratings.loc[victim, "timestamp"])
    user_step = int(data_a.user_granularity.step_of(ts))
    item_step = int(data_a.item_granularity.step_of(ts))

    # predict_at: every (user, item) pair at every day of the training period
    users, items, days = np.meshgrid(np.arange(data_a.n_users), np.arange(data_a.n_items), np.arange(0, 80))
    times = (START + days.ravel() * DAY + 3600).astype(np.int64)
    args = (torch.as_tensor(users.ravel()), torch.as_tensor(items.ravel()), torch.as_tensor(times))
    pred_a = model.predict_at(data_a, *args)
    pred_b = model.predict_at(data_b, *args)
    up_to_t = torch.as_tensor((data_a.user_granularity.step_of(times) <= user_step)
                              & (data_a.item_granularity.step_of(times) <= item_step))
    assert torch.equal(pred_a[up_to_t], pred_b[up_to_t])
    assert not torch.equal(pred_a[~up_to_t], pred_b[~up_to_t])  # the change does reach later steps

    # the training path: each phase's prediction of every training rating
    train_b = training_predictions(model)  # the model is attached to data_b now
    model.attach(data_a)
    train_a, sides = training_predictions(model), model._sides
    for side in ("user", "item"):
        seqs = sides[side]
        row_of_rating = np.repeat(np.arange(seqs.n_active), np.diff(seqs.rating_offsets.numpy()))
        step = seqs.step.numpy()[row_of_rating]
        other = sides["item" if side == "user" else "user"]
        other_step = other.step.numpy()[seqs.other_row.numpy()]
        user_s, item_s = (step, other_step) if side == "user" else (other_step, step)
        early = (user_s <= user_step) & (item_s <= item_step)
        np.testing.assert_array_equal(train_a[side][early], train_b[side][early])
        assert early.sum() > 0 and not np.array_equal(train_a[side], train_b[side])


@pytest.mark.parametrize("wallclock", [True, False, "user", "item"])
def test_wallclock_setting_takes_the_time_columns_off_the_chosen_sides(tmp_path, wallclock):
    """`wallclock`: a side without eq. (5)'s tau_t, tau_{t-1} has states that do not move when every time
    column moves; a side with them does."""
    data = datamodule(tmp_path, tiny_ratings())
    model = tiny_model(data, wallclock=wallclock)
    before = {side: model._cached_states(side)[0].clone() for side in ("user", "item")}
    for side in ("user", "item"):
        model._sides[side].features[:, 1:] += 3.0  # every tau_t and tau_{t-1}, 3 standard deviations later
    model._clear_states()
    for side in ("user", "item"):
        reads_time = wallclock is True or wallclock == side
        assert torch.equal(model._cached_states(side)[0], before[side]) is not reads_time, side
    with pytest.raises(ValueError, match="wallclock must be"):
        RRN(4, 3, wallclock="both")


# ---------------------------------------------------------------------------- alternating subspace descent

class PhaseWatch(Callback):
    """Snapshots of each side's parameters at the phase boundaries of the first epoch."""

    def __init__(self):
        self.snapshots, self.previous = {}, None

    @staticmethod
    def side_state(model, side):
        net = model.user_net if side == "user" else model.item_net
        factors = model.user_factors if side == "user" else model.item_factors
        return [p.detach().clone() for p in [*net.parameters(), *factors.parameters()]]

    def on_train_batch_start(self, trainer, model, batch, batch_idx):
        if trainer.current_epoch == 0 and batch["side"] != self.previous:
            self.snapshots[f"{batch['side']}_start"] = {s: self.side_state(model, s) for s in ("user", "item")}
            self.previous = batch["side"]

    def on_train_epoch_end(self, trainer, model):
        if trainer.current_epoch == 0:
            self.snapshots["end"] = {s: self.side_state(model, s) for s in ("user", "item")}


def same(a, b):
    return all(torch.equal(x, y) for x, y in zip(a, b))


def test_each_phase_leaves_the_other_side_bit_identical(tmp_path):
    watch = PhaseWatch()
    fit(recipe(tmp_path, epochs=1), tmp_path / "run", quiet=True, callbacks=[watch])
    s = watch.snapshots
    assert same(s["user_start"]["item"], s["item_start"]["item"])  # user phase: items frozen
    assert not same(s["user_start"]["user"], s["item_start"]["user"])  # ... users learned
    assert same(s["item_start"]["user"], s["end"]["user"])  # item phase: users frozen
    assert not same(s["item_start"]["item"], s["end"]["item"])


def test_a_tiny_rrn_overfits_a_tiny_set(tmp_path):
    ratings = tiny_ratings(n_users=20, n_items=12, n=300)
    ratings.to_parquet(tmp_path / "ratings.parquet", index=False)
    grabbed = {}

    class Grab(Callback):
        def on_train_end(self, trainer, model):
            grabbed["model"] = model

    fit(recipe(tmp_path, epochs=40, net_lr=0.01, stationary_lr=0.5, reg=0.0, pretrain_epochs=0,
               user_batch_size=4, item_batch_size=2, hidden=16, dim=6),
        tmp_path / "run", quiet=True, callbacks=[Grab()])
    model = grabbed["model"]
    target = model._sides["user"].value.numpy()
    pred = training_predictions(model)["user"]
    rmse = float(np.sqrt(np.mean((pred - target) ** 2)))
    mean_rmse = float(target.std())
    assert rmse < 0.5 * mean_rmse, (rmse, mean_rmse)


# ---------------------------------------------------------------------------- pre-train from a PMF run

def test_pmf_run_is_resolved_by_the_runner_and_its_factors_start_the_training(tmp_path):
    pmf = {**recipe(tmp_path, epochs=1), "model": {"name": "pmf", "dim": 3}}
    fit(pmf, tmp_path / "pmf", quiet=True)
    first = {}

    class First(Callback):
        def on_train_batch_start(self, trainer, model, batch, batch_idx):
            first.setdefault("user", model.user_factors.weight.detach().clone())

    fit(recipe(tmp_path, epochs=1, pmf_run=str(tmp_path / "pmf")), tmp_path / "rrn", quiet=True, callbacks=[First()])
    pmf_factors = torch.load(tmp_path / "pmf" / "checkpoints" / "best.ckpt", weights_only=True)["state_dict"]
    assert torch.equal(first["user"], pmf_factors["user_factors.weight"])
    with pytest.raises(RrnxError, match="must be a pmf run"):  # refused before the run writes anything
        fit(recipe(tmp_path, epochs=1, pmf_run=str(tmp_path / "rrn")), tmp_path / "again", quiet=True)
    assert not (tmp_path / "again").exists()
    data = datamodule(tmp_path, tiny_ratings())
    with pytest.raises(RrnxError, match="pmf_run"):  # outside rrnx fit, nobody handed the factors over
        tiny_model(data, pmf_run=str(tmp_path / "pmf")).on_train_start()


# ---------------------------------------------------------------------------- resume

@pytest.mark.slow
def test_resumed_run_equals_uninterrupted_run(tmp_path):
    assert_resume_is_exact(recipe(tmp_path, epochs=2), tmp_path)


# ---------------------------------------------------------------------------- update without re-training

@pytest.mark.parametrize("config", CONFIGS)
def test_advance_changes_states_only_through_new_ratings(tmp_path, config):
    data = datamodule(tmp_path, tiny_ratings())
    model = tiny_model(data, **CONFIGS[config])
    user_final, item_final = (f.clone() for f in model._final_states())
    val = data.split.val
    batch = {"user": torch.as_tensor(val["user_idx"].to_numpy()), "item": torch.as_tensor(val["item_idx"].to_numpy())}
    before = model.predict_ratings(batch)

    model.advance(data, val.iloc[:0])
    assert torch.equal(model.predict_ratings(batch), before)
    new = val.iloc[:5]
    counts = model.advance(data, new)
    assert counts == {"ratings": 5, "users": new["user_idx"].nunique(), "items": new["item_idx"].nunique()}
    user_after, item_after = model._final_states()
    for final, after, touched in ((user_final, user_after, new["user_idx"]), (item_final, item_after, new["item_idx"])):
        moved = torch.as_tensor(sorted(set(touched)))
        untouched = torch.ones(len(final), dtype=torch.bool)
        untouched[moved] = False
        assert torch.equal(final[untouched], after[untouched])
        assert not torch.equal(final[moved], after[moved])
    later = torch.full((len(val),), int(val["timestamp"].max()) + 30 * DAY)
    assert torch.allclose(model.predict_at(data, batch["user"], batch["item"], later),
                          model.predict_clamped(batch))
    model.reset_states()
    assert torch.equal(model.predict_ratings(batch), before)


# ---------------------------------------------------------------------------- the stationary part (beyond the paper)

class NetworkWatch(Callback):
    """The networks' parameters when training starts (after the pre-train) and after each epoch."""

    def __init__(self):
        self.snapshots = []

    def on_train_start(self, trainer, model):
        self.snapshots.append([p.detach().clone() for p in [*model.user_net.parameters(), *model.item_net.parameters()]])

    def on_train_epoch_end(self, trainer, model):
        self.on_train_start(trainer, model)


def test_stationary_epoch_trains_nothing_and_can_be_the_best_epoch(tmp_path):
    from rrnx.run import fit

    watch = NetworkWatch()
    settings = {"biases": True, "global_mean": True, "stationary_epoch": True}
    metrics = fit(recipe(tmp_path, epochs=2, **settings), tmp_path / "run", quiet=True, callbacks=[watch])
    start, after_0, after_1 = watch.snapshots
    assert same(start, after_0) and not same(after_0, after_1)  # epoch 0 changes no network weight
    one = fit(recipe(tmp_path, epochs=1, **settings), tmp_path / "run-1", quiet=True)
    assert one["best_epoch"] == 0 and (tmp_path / "run-1" / "checkpoints" / "best.ckpt").is_file()
    assert one["val_rmse"] == pytest.approx(metrics["epochs"][0]["val/rmse"])


def test_pretrain_patience_keeps_the_best_validation_epoch(tmp_path):
    from rrnx.models.rrn.pretrain import train_biased, validation_rmse

    data = datamodule(tmp_path, tiny_ratings(n_users=60, n_items=30, n=1500))

    def pretrained(epochs, patience):
        model = tiny_model(data, biases=True, global_mean=True, dim=8)
        train_biased(model, data, lr=0.3, reg=0.0, epochs=epochs, patience=patience)
        return model, validation_rmse(lambda b: model._stationary_score(b["user"], b["item"]), data, model.rating_range)

    curve = [pretrained(e, 0)[1] for e in range(1, 13)]  # validation RMSE after 1..12 epochs, deterministic
    best, since, stop = float("inf"), 0, len(curve)
    for epoch, rmse in enumerate(curve):
        best, since = (rmse, 0) if rmse < best else (best, since + 1)
        if since >= 2:
            stop = epoch + 1
            break
    assert stop < len(curve), curve  # without L2 the factors overfit: the curve turns up within 12 epochs
    _, kept = pretrained(12, 2)
    assert kept == pytest.approx(min(curve[:stop]), abs=1e-6)


def test_bias_reg_shrinks_the_biases_per_entity(tmp_path):
    from rrnx.models.rrn.pretrain import train_biased

    data = datamodule(tmp_path, tiny_ratings())
    spread = {}
    for bias_reg in (None, 1e4):
        model = tiny_model(data, biases=True, global_mean=True, bias_reg=bias_reg)
        train_biased(model, data, lr=0.05, reg=0.01, epochs=20, bias_reg=bias_reg)
        spread[bias_reg] = float(model.item_bias.weight.detach().abs().mean())
    assert spread[None] > 0.05 and spread[1e4] < 0.1 * spread[None], spread


# ---------------------------------------------------------------------------- memory-bounded batches

def batch_gradients(model, side, entities, other_before) -> tuple[torch.Tensor, list]:
    """The mean squared error _batch_backward returns and every gradient it leaves, dense."""
    model.zero_grad(set_to_none=True)
    mse = model._batch_backward(side, entities, other_before)
    grads = [p.grad.to_dense() if p.grad is not None and p.grad.is_sparse else p.grad for p in model.parameters()]
    return mse.detach(), grads


@pytest.mark.parametrize("config", ["paper", "recipe"])
def test_a_batch_run_in_rating_bounded_parts_has_the_whole_batchs_gradients(tmp_path, config):
    from rrnx.models.rrn.sequences import entity_ratings, rating_bounded_parts

    data = datamodule(tmp_path, tiny_ratings())
    for side in ("user", "item"):
        whole, split = (tiny_model(data, part_ratings=budget, **CONFIGS[config]) for budget in (None, 40))
        for model in (whole, split):
            model.manual_backward = lambda loss: loss.backward()  # outside a trainer
        seqs = whole._sides[side]
        entities = torch.randperm(seqs.n_entities, generator=torch.Generator().manual_seed(1))
        parts = rating_bounded_parts(seqs, entities, 40)
        counts = [int(entity_ratings(seqs, part).sum()) for part in parts]
        assert len(parts) > 3 and torch.equal(torch.cat(parts), entities)
        assert all(c <= 40 + int(entity_ratings(seqs, part).max()) for c, part in zip(counts, parts))
        other_before, _ = whole._cached_states("item" if side == "user" else "user")
        mse, grads = batch_gradients(whole, side, entities, other_before)
        mse_parts, grads_parts = batch_gradients(split, side, entities, other_before)
        assert torch.allclose(mse, mse_parts, rtol=1e-5)
        trained = [(a, b) for a, b in zip(grads, grads_parts) if a is not None]
        assert len(trained) >= 8 and all(b is not None for a, b in zip(grads, grads_parts) if a is not None)
        assert all(torch.allclose(a, b, rtol=1e-4, atol=1e-7) for a, b in trained)


@pytest.mark.parametrize("config", ["paper", "recipe", "base"])
def test_a_batch_read_in_slices_of_the_other_sides_states_has_the_same_loss_and_gradients(tmp_path, monkeypatch,
                                                                                           config):
    import rrnx.models.rrn.model as model_module
    import rrnx.models.rrn.sequences as sequences
    from rrnx.models.rrn.base_model import train_base

    settings = ({"biases": True, "base": {"name": "timesvdpp", "dim": 3, "n_bins": 4}} if config == "base"
                else CONFIGS[config])  # base: the rating ids travel with the slices (each rating's base)

    data = datamodule(tmp_path, tiny_ratings())
    seen = []  # each part's ratings in the order its per-rating work read them
    def spy(cell, batch, table, **kwargs):
        sliced = sequences.sliced_ratings(cell, batch, table, **kwargs)
        blocks = -(-table.numel() * 4 // 64)  # slices of 64 bytes of the table
        seen.append(None if sliced is None else sliced.other_row * blocks // len(table))  # (N,) each rating's slice
        return sliced
    monkeypatch.setattr(model_module, "sliced_ratings", spy)
    monkeypatch.setattr(sequences, "SLICE_BYTES", 64)  # slices of 4 rows of the tiny tables
    for side in ("user", "item"):
        results = {}
        for limit in (1 << 40, 0):  # the tiny tables read in rating order, then in slices
            monkeypatch.setattr(sequences, "LOCALITY_BYTES", limit)
            model = tiny_model(data, lstm_kernel="fused", part_ratings=60, **settings)
            if config == "base":
                train_base(model.base_model, data, 2)
            model.manual_backward = lambda loss: loss.backward()  # outside a trainer
            other_before, _ = model._cached_states("item" if side == "user" else "user")
            entities = torch.randperm(model._sides[side].n_entities, generator=torch.Generator().manual_seed(1))
            results[limit] = batch_gradients(model, side, entities, other_before)
        sliced = [s for s in seen if s is not None]
        assert len(sliced) > 3 and len(sliced) == len(seen) / 2
        assert all(torch.equal(s, s.sort()[0]) for s in sliced) and any(len(s.unique()) > 1 for s in sliced)
        seen.clear()
        (mse, grads), (mse_sliced, grads_sliced) = results.values()
        assert torch.allclose(mse, mse_sliced, rtol=1e-5)
        trained = [(a, b) for a, b in zip(grads, grads_sliced) if a is not None]
        assert len(trained) >= 8 and all(torch.allclose(a, b, rtol=1e-4, atol=1e-7) for a, b in trained)


def test_no_grad_passes_bounded_by_ratings_give_the_same_states(tmp_path, monkeypatch):
    import rrnx.models.rrn.states as states
    from rrnx.models.rrn.sequences import entity_ratings, row_budget_batches

    cut = []  # the ratings of each no-grad batch the states were computed in
    def spy(lengths, max_rows, ratings=None, max_ratings=None):
        batches = row_budget_batches(lengths, max_rows, ratings, max_ratings)
        cut.append([int(ratings[b].sum()) for b in batches])
        return batches
    monkeypatch.setattr(states, "row_budget_batches", spy)
    data = datamodule(tmp_path, tiny_ratings())
    model = tiny_model(data)
    for side in ("user", "item"):
        seqs = model._sides[side]
        model.hparams.eval_batch_ratings = 10**9
        whole, _ = model._states_after_rows(side, seqs, torch.arange(seqs.n_entities))
        assert len(cut[-1]) == 1
        model.hparams.eval_batch_ratings = 30  # a batch per entity or two
        bounded, _ = model._states_after_rows(side, seqs, torch.arange(seqs.n_entities))
        most = int(entity_ratings(seqs, torch.arange(seqs.n_entities)).max())
        assert len(cut[-1]) > 3 and max(cut[-1]) <= 30 + most
        assert torch.allclose(whole, bounded, atol=1e-6)


# ---------------------------------------------------------------------------- end to end

@pytest.mark.slow
def test_synthetic_recipe_end_to_end(tmp_path, capsys):
    code = main(["fit", "recipes/synthetic.yaml", "--model.name=rrn", "--logger.name=none",
                 "--trainer.max_epochs=1", "--trainer.enable_progress_bar=false", "--trainer.num_threads=1",
                 "--data.synthetic.n_users=300", "--data.synthetic.n_items=120", "--data.synthetic.n_ratings=6000",
                 f"--data.cache_dir={tmp_path / 'cache'}", "--run-dir", str(tmp_path / "run")])
    assert code == 0
    out = capsys.readouterr().out
    assert "rrn: best epoch 0" in out and (tmp_path / "run" / "metrics.json").is_file()


@pytest.mark.parametrize("kernel", ["torch", pytest.param("fused", marks=pytest.mark.skipif(
    not (shutil.which("c++") and shutil.which("ninja")), reason="the fused LSTM cell needs a C++ compiler and ninja"))])
def test_packed_lstm_matches_torch_lstm_values_and_gradients(kernel):
    from torch.nn.utils.rnn import pack_sequence

    from rrnx.models.rrn.lstm import packed_lstm

    torch.manual_seed(0)
    for layers, lengths in ((1, (6, 4, 4, 1)), (2, (6, 4, 4, 1)), (1, (1, 1, 1))):  # one step only: a batch of newbies
        lstm = torch.nn.LSTM(5, 7, num_layers=layers)
        seqs = [torch.randn(n, 5, requires_grad=True) for n in lengths]
        reference, _ = lstm(pack_sequence(seqs))
        weights = torch.randn_like(reference.data)
        grads = torch.autograd.grad((reference.data * weights).sum(), [*lstm.parameters(), *seqs])
        packed = pack_sequence(seqs)
        ours = packed_lstm(lstm, packed.data, packed.batch_sizes, kernel)
        ours_grads = torch.autograd.grad((ours * weights).sum(), [*lstm.parameters(), *seqs])
        assert torch.allclose(ours, reference.data, atol=1e-6)
        assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(grads, ours_grads))


@pytest.mark.parametrize("n, chunk", [(0, 3), (1, 3), (2, 1), (7, 3), (9, 3), (9, 100)])
def test_shift_rows_down_in_place_matches_a_copy(n, chunk):
    from rrnx.models.rrn.states import shift_rows_down_

    table = torch.arange(n * 2, dtype=torch.float32).reshape(n, 2)
    expected = table.clone()
    expected[1:] = table[:-1].clone()
    shifted = shift_rows_down_(table, chunk)
    assert shifted.data_ptr() == table.data_ptr() and torch.equal(shifted, expected)
