"""`rrnx bench`, `rrnx predict` and `rrnx update` on tiny data made here."""

import json

import pandas as pd
import pytest
import torch

from rrnx.cli import main
from rrnx.run import fit
from test_rrn import one_thread, recipe, tiny_ratings  # noqa: F401  (one_thread: autouse fixture)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rrn_cli")
    torch.set_num_threads(1)
    fit(recipe(tmp, epochs=1), tmp / "run", quiet=True)
    return tmp / "run"


@pytest.mark.slow
def test_bench_small_prints_its_figures(capsys, tmp_path):
    assert main(["bench", "--preset", "small", "--threads", "1", "--json", str(tmp_path / "bench.json")]) == 0
    out = capsys.readouterr().out
    for figure in ("generation", "bucketing", "user phase", "item phase", "evaluation", "GFLOP per epoch",
                   "GFLOP/s measured", "memory floor", "peak memory"):
        assert figure in out, figure
    # the epoch as a multiple of the FLOP floor, as the targets read it: both phases over the floor
    result = json.loads((tmp_path / "bench.json").read_text())
    epoch = result["epochs"][0]
    floor_s = result["flops"]["epoch"] / result["matmul_flops_per_s"]
    multiple = (epoch["user_phase_s"] + epoch["item_phase_s"]) / floor_s
    floor_line = next(line for line in out.splitlines() if line.strip().startswith("floor"))
    assert f"epoch 0 {multiple:.2f}x it" in floor_line
    # the floor's rate is the fastest of the probes; the first probe's ratio (the single-probe floor) follows
    probes = result["matmul_probes_flops_per_s"]
    assert len(probes) == 5 and result["matmul_flops_per_s"] == max(probes)
    single = (epoch["user_phase_s"] + epoch["item_phase_s"]) / (result["flops"]["epoch"] / probes[0])
    assert f"at the first probe's rate, {single:.2f}x" in floor_line


def test_bench_builds_the_fused_cell_before_its_clock_starts(monkeypatch):
    """On a machine's first run the cell's build (about a minute) must not count in the user phase: the
    bench builds or loads it before training, and its prepare line says how long a build took."""
    import rrnx.bench
    from rrnx.errors import RrnxError
    from rrnx.models.rrn import fused, lstm

    events, real = [], fused.fused_cell
    monkeypatch.setattr(fused, "is_built", lambda: False)  # as on a new machine
    monkeypatch.setattr(lstm, "fused_cell", lambda required=False: events.append("cell") or real(required))

    def fit_model(*_):
        events.append("fit")
        raise RrnxError("stopped before training")

    monkeypatch.setattr(rrnx.bench, "fit_model", fit_model)
    assert main(["bench", "--preset", "small", "--threads", "1"]) == 2
    assert events == ["cell", "fit"]
    assert main(["bench", "--preset", "small", "--threads", "1", "--lstm-kernel", "torch"]) == 2
    assert events == ["cell", "fit", "fit"]  # the pure-torch LSTM: nothing to build
    line = rrnx.bench.prepare_line({"prepared_cache": "read", "prepared_read_s": 0.1, "cell_build_s": 61.23})
    assert line.endswith("; the fused LSTM cell built in 61.2 s (before the clock)")
    assert "cell" not in rrnx.bench.prepare_line({"prepared_cache": "read", "prepared_read_s": 0.1})


def test_predict_top_n_and_items(run_dir, capsys):
    assert main(["predict", str(run_dir), "--user", "103", "--top", "3", "--at", "2005-04-01"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert "user 103 at 2005-04-01" in out[0] and len(out) == 2 + 3
    assert main(["predict", str(run_dir), "--user", "103", "--item", "500", "501"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split()[0] for line in lines[2:]] == ["500", "501"]


def test_predict_unknown_ids_are_errors(run_dir, capsys):
    assert main(["predict", str(run_dir), "--user", "999999"]) == 2
    assert "no such user" in capsys.readouterr().err
    assert main(["predict", str(run_dir), "--user", "103", "--item", "42"]) == 2
    assert "unknown item id(s) 42" in capsys.readouterr().err
    assert main(["predict", str(run_dir), "--user", "103", "--item", "abc", "500"]) == 2
    assert "unknown item id(s) abc (" in capsys.readouterr().err  # was reported as -1


def test_update_with_nothing_to_feed_is_one_line(run_dir, tmp_path, capsys):
    """Every user unknown (an empty remainder was a TypeError traceback), string ids against a model with
    integer ids (a ValueError traceback), every rating before the end of training (fed 0, exit 0)."""
    new = tiny_ratings()
    late = new["timestamp"] >= pd.Timestamp("2005-03-22", tz="UTC").timestamp()
    files = {"unknown": new[late].assign(user=new["user"] + 10**7),
             "strings": new[late].assign(user="u" + new["user"].astype(str)),
             "early": new[~late]}
    for name, frame in files.items():
        frame.to_csv(tmp_path / f"{name}.csv", index=False)
        assert main(["update", str(run_dir), str(tmp_path / f"{name}.csv")]) == 2, name
        captured = capsys.readouterr()
        assert "no rating left to feed or predict" in captured.err and "Traceback" not in captured.err
        assert len(captured.err.strip().splitlines()) == 1
        assert "fed " not in captured.out
        skipped = {"unknown": "users unknown to the model: 1000", "strings": "users unknown to the model: u",
                   "early": "from before the end of training"}[name]
        assert skipped in captured.out, captured.out  # the string ids were listed as -1


def test_update_feeds_new_ratings_and_scores_the_rest(run_dir, tmp_path, capsys):
    ratings = tiny_ratings()
    new = ratings[ratings["timestamp"] >= pd.Timestamp("2005-03-22", tz="UTC").timestamp()].copy()
    new = pd.concat([new, pd.DataFrame({"user": [777777], "item": [500], "rating": [3.0],
                                        "timestamp": [int(new["timestamp"].max())]})])
    path = tmp_path / "new.csv"
    new.to_csv(path, index=False)
    out = tmp_path / "scored.parquet"
    assert main(["update", str(run_dir), str(path), "--until", "2005-03-29", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "skipped 1 ratings of 1 users unknown to the model: 777777" in text
    assert "fed " in text and "after the update" in text
    scored = pd.read_parquet(out)
    assert {"before_update", "after_update"} <= set(scored.columns) and len(scored) > 0
    assert main(["update", str(run_dir), str(path), "--out", str(tmp_path / "states.parquet")]) == 0
    states = pd.read_parquet(tmp_path / "states.parquet")
    assert set(states["side"]) == {"user", "item"}


def test_update_refuses_a_static_model(tmp_path, capsys):
    fit(recipe(tmp_path, epochs=1) | {"model": {"name": "pmf", "dim": 3}}, tmp_path / "pmf", quiet=True)
    tiny_ratings().to_csv(tmp_path / "new.csv", index=False)
    assert main(["update", str(tmp_path / "pmf"), str(tmp_path / "new.csv")]) == 2
    assert "only RRN" in capsys.readouterr().err


@pytest.mark.parametrize("preset, steps", [("netflix-full", ("2mo", "2mo")), ("netflix-6m", ("1d", "7d"))])
def test_bench_time_steps_default_per_preset(monkeypatch, preset, steps):
    """The paper trains full Netflix with 2-month steps on both sides, the 6-month set with Table 3's best."""
    import rrnx.bench
    from rrnx.errors import RrnxError

    seen = []

    def record(preset, epochs, threads, user_granularity, item_granularity, **_):
        seen.append((user_granularity, item_granularity))
        raise RrnxError("recorded")  # stop before any data is generated

    monkeypatch.setattr(rrnx.bench, "run_bench", record)
    assert main(["bench", "--preset", preset]) == 2
    assert main(["bench", "--preset", preset, "--user-granularity", "14d"]) == 2
    assert seen == [steps, ("14d", steps[1])]


def test_bench_recipe_times_the_recipes_rrn_settings(monkeypatch, tmp_path, capsys):
    """--recipe: the recipe's model.rrn mapping and batch sizes (RRN's defaults where it sets none),
    without the pre-train; an explicit batch size wins; a key RRN does not know is refused in one line."""
    import rrnx.bench
    from rrnx.errors import RrnxError

    seen = []

    def record(preset, epochs, threads, user_granularity, item_granularity, model_args=None, **_):
        seen.append(model_args)
        raise RrnxError("recorded")  # stop before any data is generated

    monkeypatch.setattr(rrnx.bench, "run_bench", record)
    path = tmp_path / "r.yaml"
    path.write_text("model:\n  name: pmf\n  rrn:\n    dim: 7\n    dynamic_bias: true\n    pretrain_epochs: 40\n"
                    "    stationary_epoch: true\n    item_batch_size: 16\n  pmf:\n    dim: 3\n")
    assert main(["bench", "--recipe", str(path)]) == 2
    assert main(["bench", "--recipe", str(path), "--user-batch-size", "1024"]) == 2
    assert main(["bench"]) == 2
    assert seen[0] == {"dim": 7, "dynamic_bias": True, "item_batch_size": 16, "user_batch_size": 256,
                       "lstm_kernel": "auto"}
    assert seen[1]["user_batch_size"] == 1024 and seen[1]["item_batch_size"] == 16
    assert seen[2] == {"user_batch_size": 4096, "item_batch_size": 512, "lstm_kernel": "auto"}
    capsys.readouterr()
    path.write_text("model:\n  rrn:\n    dimm: 3\n")
    assert main(["bench", "--recipe", str(path)]) == 2
    err = capsys.readouterr().err
    assert "model.dimm: unknown key for model 'rrn'" in err and "Traceback" not in err and len(seen) == 3



@pytest.mark.parametrize("flag", ["--epochs", "--threads", "--user-batch-size", "--item-batch-size"])
def test_bench_refuses_counts_below_one(monkeypatch, capsys, flag):
    """--threads 0 used to mean the default silently, a batch size of -1 a crash in the middle of the run."""
    import rrnx.bench

    monkeypatch.setattr(rrnx.bench, "run_bench", lambda *a, **k: pytest.fail("the bench ran"))
    assert main(["bench", "--preset", "small", flag, "0"]) == 2
    err = capsys.readouterr().err
    assert f"{flag} must be at least 1, got 0" in err and len(err.strip().splitlines()) == 1

@pytest.mark.slow
def test_bench_reads_the_generated_data_from_the_cache_on_a_rerun(capsys):
    """conftest gives each test its own $RRNX_CACHE: the first run generates, the second reads."""
    runs = []
    for args in ([], [], ["--no-cache"]):
        assert main(["bench", "--preset", "small", "--threads", "1", *args]) == 0
        runs.append([line for line in capsys.readouterr().out.splitlines() if "prepare" in line or "val RMSE" in line])
    assert "read from the cache" not in runs[0][0] and "read from the cache" in runs[1][0]
    assert "read from the cache" not in runs[2][0]
    rmse = [run[1].split("val RMSE ")[1].split(")")[0] for run in runs]
    assert rmse[0] == rmse[1] == rmse[2]


def test_update_on_another_rating_scale_warns_or_is_refused_by_a_declared_scale(run_dir, tmp_path, capsys):
    new = tiny_ratings()
    new = new[new["timestamp"] >= pd.Timestamp("2005-03-22", tz="UTC").timestamp()].assign(rating=10.0)
    new.to_csv(tmp_path / "ten.csv", index=False)
    assert main(["update", str(run_dir), str(tmp_path / "ten.csv")]) == 0
    err = capsys.readouterr().err
    assert f"of {len(new):,} ratings lie outside the training ratings' range" in err and "(e.g. 10)" in err
    declared = recipe(tmp_path, epochs=1)
    declared["data"]["scale"] = [1, 5]
    fit(declared, tmp_path / "declared", quiet=True)
    assert main(["update", str(tmp_path / "declared"), str(tmp_path / "ten.csv")]) == 2
    err = capsys.readouterr().err
    assert "outside the declared scale 1..5" in err and len(err.strip().splitlines()) == 1
