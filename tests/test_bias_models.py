"""The baselines users try first (bias, biasedmf) and PMF's `biases` option: bias solves Koren's
baseline objective exactly, biasedmf fits a planted bias + low-rank structure, PMF without
`biases` stays the paper's model, and a recipe's `model:` section gives each model its own settings."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import tiny_csv_recipe
from rrnx.cli import main
from rrnx.models.bias import Bias
from rrnx.models.biasedmf import BiasedMF
from rrnx.models.pmf import PMF
from rrnx.recipe import load_recipe, resolve_model
from test_baselines import mean_predictor_rmse, planted_ratings, rmse_on_test, datamodule, train


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    return datamodule(tmp_path_factory.mktemp("planted"), planted_ratings())


def als_reference(data, reg_user: float, reg_item: float, sweeps: int) -> tuple[np.ndarray, np.ndarray]:
    """Surprise's baseline_als, written out with Python loops over ratings."""
    train = data.triples("train")
    user, item, rating = (train[k].numpy() for k in ("user", "item", "rating"))
    mu, b_u, b_i = rating.mean(), np.zeros(data.n_users), np.zeros(data.n_items)
    for _ in range(sweeps):
        for side, bias, other, reg in ((item, b_i, lambda: b_u[user], reg_item), (user, b_u, lambda: b_i[item], reg_user)):
            residual = rating - mu - other()
            sums, counts = np.zeros(len(bias)), np.zeros(len(bias))
            for owner, value in zip(side, residual):
                sums[owner] += value
                counts[owner] += 1
            bias[:] = sums / (reg + counts)
    return b_u, b_i


def test_bias_is_exact_alternating_least_squares(planted):
    model = train(Bias(planted.n_users, planted.n_items, reg_user=5.0, reg_item=3.0), planted, epochs=4)
    b_u, b_i = als_reference(planted, 5.0, 3.0, sweeps=4)
    assert np.allclose(model.user_bias.detach().numpy(), b_u, atol=1e-4)
    assert np.allclose(model.item_bias.detach().numpy(), b_i, atol=1e-4)
    assert rmse_on_test(model, planted) < 0.85 * mean_predictor_rmse(planted)


def test_biasedmf_fits_planted_structure(planted):
    bias_only = rmse_on_test(train(Bias(planted.n_users, planted.n_items), planted, 3), planted)
    for optimizer, lr, epochs in (("sgd", 0.05, 20), ("adam", 0.05, 15)):
        torch.manual_seed(0)
        model = train(BiasedMF(planted.n_users, planted.n_items, dim=4, lr=lr, optimizer=optimizer), planted, epochs)
        rmse = rmse_on_test(model, planted)
        assert rmse < 0.4 * bias_only, f"{optimizer}: {rmse:.3f} vs bias model {bias_only:.3f}"


def test_biasedmf_rejects_an_unknown_optimizer():
    with pytest.raises(ValueError, match="optimizer must be one of sgd, adam"):
        BiasedMF(3, 3, optimizer="lbfgs")


def test_pmf_is_the_paper_model_unless_biases_are_asked_for(planted):
    plain, biased = PMF(5, 4, dim=3), PMF(5, 4, dim=3, biases=True)
    assert plain.num_parameters() == 3 * 9 and biased.num_parameters() == 4 * 9
    torch.manual_seed(0)
    model = train(PMF(planted.n_users, planted.n_items, dim=4, lr=0.05, biases=True), planted, 20)
    assert model.user_bias.weight.abs().sum() > 0  # the biases learn
    assert rmse_on_test(model, planted) < 0.6 * mean_predictor_rmse(planted)


def test_each_model_declares_a_search_space_the_sweep_parser_reads():
    from pathlib import Path

    from rrnx.registry import constructor_params, discover
    from rrnx.sweep.spec import parse_space

    for name in ("bias", "biasedmf", "pmf", "timesvdpp", "autorec-i", "autorec-u"):
        cls = discover()[name].cls
        for param in parse_space(Path(name), cls.search_space):
            section, key = param.key.split(".")
            assert section == "model" and key in constructor_params(cls), (name, param.key)


def test_per_model_settings_and_dropped_keys(tmp_path, capsys):
    recipe = load_recipe(tiny_csv_recipe(tmp_path, model="pmf", dim=8, lr=0.01))
    recipe["model"]["bias"] = {"reg_user": 2.0}
    recipe["model"]["pmf"] = {"dim": 3, "reg": 0.5}
    resolved, notes = resolve_model(recipe)
    assert resolved["model"] == {"name": "pmf", "dim": 8, "reg": 0.5, "lr": 0.01}  # flat keys on top
    recipe["model"]["name"] = "bias"
    resolved, notes = resolve_model(recipe)
    assert resolved["model"] == {"name": "bias", "reg_user": 2.0}
    assert notes == ["model.dim: not a setting of model 'bias' (another model's key), dropped",
                     "model.lr: not a setting of model 'bias' (another model's key), dropped"]
    path = tmp_path / "per-model.yaml"
    path.write_text(tiny_csv_recipe(tmp_path).read_text().replace("  name: pmf\n", "  name: pmf\n  bias:\n    reg_item: 4.0\n"))
    assert main(["fit", str(path), "--model.name=bias", "--run-dir", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "model bias: reg_user=15.0 reg_item=4.0" in out  # every setting, the mapping's and the defaults
    assert "reg_item: 4.0" in (tmp_path / "run" / "recipe.yaml").read_text()


def test_a_key_no_model_knows_is_still_an_error(tmp_path, capsys):
    assert main(["fit", str(tiny_csv_recipe(tmp_path)), "--model.name=bias", "--model.regg=1",
                 "--run-dir", str(tmp_path / "run")]) == 2
    assert "model.regg: unknown key for model 'bias'" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_timesvdpp_baseline_init_starts_at_the_bias_model(planted):
    from rrnx.models.timesvdpp import TimeSVDpp

    bias = train(Bias(planted.n_users, planted.n_items, reg_user=4.0, reg_item=2.0), planted, epochs=10)
    model = TimeSVDpp(planted.n_users, planted.n_items, dim=4, baseline_init=True, bias_reg_user=4.0, bias_reg_item=2.0)
    model.set_data_stats(planted.rating_range, planted.rating_mean)
    model.attach(planted)
    assert torch.allclose(model.user_bias.weight[:, 0], bias.user_bias, atol=1e-5)
    assert torch.allclose(model.item_bias.weight[:, 0], bias.item_bias, atol=1e-5)
    plain = TimeSVDpp(planted.n_users, planted.n_items, dim=4)
    plain.set_data_stats(planted.rating_range, planted.rating_mean)
    plain.attach(planted)
    assert plain.user_bias.weight.abs().sum() == 0  # the paper's form starts at zero


def test_timesvdpp_per_entity_bias_penalty_weighs_sparse_users_more(planted):
    from rrnx.models.timesvdpp import TimeSVDpp

    model = TimeSVDpp(planted.n_users, planted.n_items, dim=2, bias_reg_user=10.0)
    model.set_data_stats(planted.rating_range, planted.rating_mean)
    model.attach(planted)
    counts = np.bincount(planted.split.train["user_idx"], minlength=planted.n_users)
    sparse, dense = int(np.argmin(np.where(counts > 0, counts, 10**9))), int(np.argmax(counts))
    terms = {"b_u": torch.ones(1), "b_i": torch.zeros(1)}
    per_rating = [float(model.baseline_penalty(torch.tensor([u]), torch.tensor([0]), terms)) for u in (sparse, dense)]
    assert per_rating[0] == pytest.approx(10.0 / counts[sparse]) and per_rating[1] == pytest.approx(10.0 / counts[dense])
