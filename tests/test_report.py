"""rrnx report: the paper's analyses on tiny synthetic runs the tests train themselves.

The planted effects (docs/synthetic.md) are the ground truth: an RRN's traced predictions must
rise after the planted award bumps (not for their controls) and move at the planted scale
shift; PMF's must be exactly flat. RRN runs are marked slow.
"""

from __future__ import annotations

import importlib.util
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rrnx.cli import main
from rrnx.report import ReportOptions, load_runs, write_report
from rrnx.report import cold_start, exogenous, granularity, scale_shift, size_accuracy, update
from rrnx.report.runs import ReportRun, expand_run_dirs, name_runs

TINY_DATA = ["--data.synthetic.n_users=400", "--data.synthetic.n_items=150", "--data.synthetic.n_ratings=8000"]
TINY_OPTIONS = ReportOptions(n_users=60, n_active_users=60, items_per_group=20, min_period_ratings=3,
                             min_test_ratings=2, dpi=50)
HAS_RRN = importlib.util.find_spec("rrnx.models.rrn") is not None
needs_rrn = pytest.mark.skipif(not HAS_RRN, reason="rrnx.models.rrn is not written yet")


def fit_run(run_dir: Path, *overrides: str) -> Path:
    assert main(["fit", "recipes/synthetic.yaml", "--run-dir", str(run_dir), "--logger.name=none",
                 "--trainer.enable_progress_bar=false", *overrides]) == 0
    return run_dir


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("report-cache")


@pytest.fixture(scope="module")
def pmf_run(tmp_path_factory, cache):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RRNX_CACHE", str(cache))
        mp.chdir(Path(__file__).resolve().parents[1])
        return fit_run(tmp_path_factory.mktemp("runs") / "pmf", "--model.name=pmf", "--trainer.max_epochs=2",
                       *TINY_DATA)


@pytest.fixture
def same_cache(cache, monkeypatch):
    """Later tests load the runs' data from the cache the runs were made with."""
    monkeypatch.setenv("RRNX_CACHE", str(cache))


def test_pmf_traces_are_flat(pmf_run, same_cache):
    (run,) = load_runs([pmf_run])
    events = exogenous.events_from_truth(run.truth)
    exo = exogenous.exogenous_dynamics(run.model, run.data, events, n_users=50)
    assert set(exo["kind"]) == {"bumped", "control"}
    assert exo.groupby("item")["prediction"].agg(np.ptp).max() < 1e-5  # time-invariant
    groups = scale_shift.release_groups(run.data, run.truth)
    scale = scale_shift.rating_scale_trace(run.model, run.data, groups, n_users=50, items_per_group=20)
    assert scale_shift.CATALOGUE in set(scale["group"])
    assert scale.groupby("group")["prediction"].agg(np.ptp).max() < 1e-5


def test_report_on_pmf_skips_what_it_cannot_show(pmf_run, same_cache, tmp_path):
    lines = []
    page = write_report([pmf_run], tmp_path / "out", TINY_OPTIONS, use_wandb=False, say=lines.append)
    html = page.read_text()
    for name in ("exogenous", "endogenous", "scale_shift", "size_accuracy"):
        assert (tmp_path / "out" / f"{name}.png").stat().st_size > 5_000
        assert "data:image/png;base64," in html
    assert "Skipped: needs two runs on the same split" in html  # cold start
    assert "no advance(): pmf" in html  # update without re-training
    # Table 3 at one granularity: not drawn, a note with the command that would give it a second one
    assert "no trade-off to show" in html and "--data.user_granularity=14d" in html
    assert not (tmp_path / "out" / "granularity.png").exists()


@pytest.fixture(scope="module")
def pmf_14d_run(pmf_run, cache):
    """pmf_run's data and model at 14-day steps: a second granularity for Table 3."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RRNX_CACHE", str(cache))
        mp.chdir(Path(__file__).resolve().parents[1])
        return fit_run(pmf_run.parent / "pmf-14d", "--model.name=pmf", "--trainer.max_epochs=2", *TINY_DATA,
                       "--data.user_granularity=14d", "--data.item_granularity=14d")


def fake_run(folder: str, model: str) -> ReportRun:
    return ReportRun(Path("runs") / folder, {"model": {"name": model}}, {}, {}, None)


def test_runs_are_named_by_model_unless_labelled():
    runs = [fake_run("rrn-20261126-200000", "rrn"), fake_run("pmf-20261126-200000", "pmf")]
    name_runs(runs)
    assert [r.label for r in runs] == ["rrn", "pmf"]  # the model, not the folder
    name_runs(runs, {"rrn": "RRN", "pmf": "PMF"})
    assert [(r.label, r.model_label) for r in runs] == [("RRN", "RRN"), ("PMF", "PMF")]
    twins = [fake_run("rrn-7d", "rrn"), fake_run("rrn-14d", "rrn"), fake_run("pmf", "pmf")]
    name_runs(twins, {"rrn": "RRN"})  # one model twice: the folder tells the panels apart
    assert [r.label for r in twins] == ["RRN (rrn-7d)", "RRN (rrn-14d)", "pmf"]
    name_runs(twins, {"rrn-7d": "RRN weekly", "rrn": "RRN"})  # a folder's label wins over its model's
    assert [r.label for r in twins] == ["RRN weekly", "RRN", "pmf"]
    with pytest.raises(Exception, match="'rnn' is no model or run folder given here"):
        name_runs(twins, {"rnn": "RNN"})
    with pytest.raises(Exception, match="several run folders are labelled 'RRN'"):
        name_runs(twins, {"rrn-7d": "RRN", "rrn-14d": "RRN"})


def test_labels_reach_panels_legends_and_saved_figures(pmf_run, pmf_14d_run, same_cache, tmp_path):
    labels = {"pmf": "PMF", "pmf-14d": "PMF 14 days"}
    runs = load_runs([pmf_run, pmf_14d_run], labels=labels)
    fig = scale_shift.section(runs, TINY_OPTIONS).figures["scale_shift"]
    assert [ax.get_title() for ax in fig.axes] == ["PMF", "PMF 14 days"]
    fig = size_accuracy.section(runs, TINY_OPTIONS).figures["size_accuracy"]
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["PMF"]  # the model's label
    out = tmp_path / "report"
    assert main(["report", str(pmf_run), str(pmf_14d_run), "--labels", "pmf=PMF,pmf-14d=PMF 14 days", "--no-wandb",
                 "--only", "scale_shift,granularity", "--users", "60", "--items-per-group", "20",
                 "--out", str(out), "--dpi", "50"]) == 0
    svg = (out / "scale_shift.svg").read_text()
    assert "<!-- PMF -->" in svg and "<!-- PMF 14 days -->" in svg and "<!-- pmf -->" not in svg
    # two granularities: Table 3 is drawn; every figure is PNG (on the page), PDF and SVG
    html = (out / "index.html").read_text()
    assert "Skipped" not in html and html.count("data:image/png;base64,") == 2
    for name in ("scale_shift", "granularity"):
        assert (out / f"{name}.png").read_bytes().startswith(b"\x89PNG")
        assert (out / f"{name}.pdf").read_bytes().startswith(b"%PDF-")
        assert (out / f"{name}.pdf").stat().st_size > 5_000
        assert ElementTree.parse(out / f"{name}.svg").getroot().tag.endswith("svg")
        assert f'href="{name}.pdf"' in html and f'href="{name}.svg"' in html


@pytest.mark.parametrize("value", ["rrn", "rrn=", "=RRN", "rrn=RRN,pmf", "rrn=A,rrn=B"])
def test_malformed_labels_are_one_line(tmp_path, capsys, value):
    assert main(["report", str(tmp_path / "nope"), "--no-wandb", "--labels", value]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--labels" in err and "Traceback" not in err, err



@pytest.mark.parametrize("args, message", [
    (["--event-date", "2005-13-01"], "--event-date: cannot read '2005-13-01' as a date"),  # was ignored, exit 0
    (["--shift-date", "nope"], "--shift-date: cannot read 'nope' as a date"),  # was found after the folder was made
    (["--fluctuation", "-1"], "--fluctuation: must be at least 0"),  # selected every item
])
def test_report_options_are_checked_before_anything_is_written(tmp_path, capsys, args, message):
    out = tmp_path / "report"
    assert main(["report", str(tmp_path / "nope"), "--no-wandb", "--out", str(out), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and err.count("\n") == 0 and not out.exists()

@pytest.mark.parametrize("sizes", [(2.7e5, 9.2e5), (3.7e6, 7.5e6), (1.2e4, 3e7), (5e5,)])
def test_size_axis_labels_do_not_collide(sizes):
    """Fig. 1: matplotlib labelled minor log ticks (3x10^5, 4x10^5...) on spans under a decade, overlapping."""
    frame = pd.DataFrame({"run": [f"run {k}" for k in range(len(sizes))], "model": "pmf",
                          "size_bytes": sizes, "test_rmse": 0.9})
    fig = size_accuracy.plot_size_accuracy(frame)
    fig.canvas.draw()
    ax = fig.axes[0]
    low, high = ax.get_xlim()
    shown = [t for t, x in zip(ax.get_xticklabels(), ax.get_xticks()) if low <= x <= high and t.get_text()]
    assert 2 <= len(shown) <= 7 and all(t.get_text().endswith("B") for t in shown)
    assert not any(t.get_text() for t in ax.get_xticklabels(minor=True))
    boxes = sorted((t.get_window_extent() for t in shown), key=lambda b: b.x0)
    assert all(a.x1 < b.x0 for a, b in zip(boxes, boxes[1:])), [t.get_text() for t in shown]


def test_cold_start_buckets_and_split_check(pmf_run, same_cache, tmp_path):
    (run,) = load_runs([pmf_run])
    pred = run.predictions()
    worse = pred.assign(prediction=pred["prediction"] + 0.5)
    table = cold_start.cold_start_gain(pred, worse, run.data.split.train, "user")
    assert (table["gain"] > 0).all() and table["ratings"].sum() == len(pred)
    assert (table["low"] <= table["high"]).all() and (table["low"].iloc[1:] == table["high"].shift().iloc[1:] + 1).all()
    other = load_runs([pmf_run])[0]
    other.manifest = {"data_fingerprint": {"train": "something else"}}
    with pytest.raises(Exception, match="not trained on the same split"):
        cold_start.check_same_split(run, other)


def test_granularity_table_reads_phase_seconds():
    epochs = [{"epoch": 0, "seconds": 3.0, "time/user_phase_s": 1.0, "time/item_phase_s": 2.0},
              {"epoch": 1, "seconds": 5.0, "time/user_phase_s": 3.0, "time/item_phase_s": 2.0}]
    assert granularity.phase_seconds(epochs) == {"epoch": 4.0, "user": 2.0, "item": 2.0}
    assert granularity.phase_seconds([{"epoch": 0, "seconds": 2.0}]) == {"epoch": 2.0}


def test_bad_run_dir_is_one_clear_error(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nope"), "--no-wandb"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no such run directory" in err and "Traceback" not in err
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty"), "--no-wandb"]) == 2
    assert "not a run directory" in capsys.readouterr().err


def test_sweep_folder_expands_to_finished_trials(tmp_path):
    for name, finished in (("trial-0000", True), ("trial-0001", False)):
        trial = tmp_path / "sweep" / "trials" / name
        trial.mkdir(parents=True)
        (trial / "recipe.yaml").write_text("model: {name: pmf}\n")
        if finished:
            (trial / "metrics.json").write_text("{}")
    assert expand_run_dirs([tmp_path / "sweep"]) == [tmp_path / "sweep" / "trials" / "trial-0000"]


# ---------------------------------------------------------------- RRN against PMF on the planted effects
# The smallest data tried on which a default RRN shows both planted effects (docs/analyses.md):
# 1,000 users, 100 items, 15k ratings, 20% of the items bumped (+2 stars, half-life 30 days) or
# their controls, a +0.6 star scale shift on a 3.0 mean (headroom below 5 for the bump), and
# monthly item steps as in the paper's Fig. 5. With weekly item steps an item has ~3 ratings a
# step and the RRN's bumped items rise only ~0.04 more than their controls; at the 400 x 150 x 8k
# size of the tiny runs an item has about one rating a week.
EFFECT_DATA = ["--data.synthetic.n_users=1000", "--data.synthetic.n_items=100", "--data.synthetic.n_ratings=15000",
               "--data.synthetic.bump_item_frac=0.2", "--data.synthetic.bump_size=2.0",
               "--data.synthetic.scale_shift_delta=0.6", "--data.synthetic.global_mean=3.0",
               "--data.item_granularity=1mo"]


@pytest.fixture(scope="module")
def effect_runs(tmp_path_factory, cache):
    """(rrn, pmf, pmf at another granularity) run directories on EFFECT_DATA."""
    if not HAS_RRN:
        pytest.skip("rrnx.models.rrn is not importable")
    root = tmp_path_factory.mktemp("effect-runs")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RRNX_CACHE", str(cache))
        mp.chdir(Path(__file__).resolve().parents[1])
        # eq. (5)'s x_t on: without it (the synthetic recipe's tuned RRN) bumped items rise only as much as
        # their controls on this set (docs/rrn.md, "Beyond the paper", has the commands and figures)
        rrn = fit_run(root / "rrn", "--model.name=rrn", "--model.rating_embedding=true", *EFFECT_DATA)
        pmf = fit_run(root / "pmf", "--model.name=pmf", *EFFECT_DATA)
        pmf_daily = fit_run(root / "pmf-1d", "--model.name=pmf", "--trainer.max_epochs=2", *EFFECT_DATA,
                            "--data.user_granularity=1d", "--data.item_granularity=1d")  # the last value wins
    return rrn, pmf, pmf_daily


@pytest.mark.slow
def test_rrn_moves_at_the_scale_shift_and_pmf_does_not(effect_runs, same_cache):
    rrn, pmf = load_runs(effect_runs[:2])
    shift = rrn.truth["scale_shift"]
    changes = {}
    for run in (rrn, pmf):
        groups = scale_shift.release_groups(run.data, run.truth)
        trace = scale_shift.rating_scale_trace(run.model, run.data, groups, n_users=200).assign(run=run.label)
        summary = scale_shift.shift_summary(trace, run.data, shift["date"]).set_index("group")
        changes[run.model_name] = summary.loc[scale_shift.CATALOGUE, "change"]
        if run.model_name == "pmf":
            assert trace.groupby("group")["prediction"].agg(np.ptp).max() < 1e-5  # exactly flat
    assert changes["rrn"] > 0.3 * shift["delta"], changes
    assert abs(changes["pmf"]) < 1e-4


@pytest.mark.slow
def test_rrn_rises_after_the_bump_and_not_for_controls(effect_runs, same_cache):
    rrn, pmf = load_runs(effect_runs[:2])
    first_date = min(b["date"] for b in rrn.truth["bumps"])  # the second has no full month after it in training
    summaries = {}
    for run in (rrn, pmf):
        frame = exogenous.exogenous_dynamics(run.model, run.data, exogenous.events_from_truth(run.truth), n_users=200)
        summary = exogenous.event_summary(frame.assign(run=run.label))
        summaries[run.model_name] = summary[summary["date"] == first_date].set_index("kind")["mean_change"]
    rrn_change, pmf_change = summaries["rrn"], summaries["pmf"]
    assert rrn_change["bumped"] > 0.1 and rrn_change["bumped"] > rrn_change["control"] + 0.05, rrn_change
    assert pmf_change.abs().max() < 1e-4


@pytest.mark.slow
def test_report_on_rrn_and_pmf_has_every_figure(effect_runs, same_cache, tmp_path):
    out = tmp_path / "report"
    assert main(["report", *map(str, effect_runs), "--out", str(out), "--users", "100", "--active-users", "100",
                 "--min-period-ratings", "3", "--min-test-ratings", "2", "--min-bucket-ratings", "1",
                 "--dpi", "50"]) == 0
    html = (out / "index.html").read_text()
    assert "Skipped" not in html
    for name in ("exogenous", "endogenous", "scale_shift", "cold_start", "update", "granularity", "size_accuracy"):
        png = out / f"{name}.png"
        assert png.stat().st_size > 5_000, name
        assert (out / f"{name}.csv").stat().st_size > 100, name
    assert html.count("data:image/png;base64,") == 7
    assert list(out.glob("wandb/offline-run-*")), "the report was not logged to W&B (offline)"


@pytest.mark.slow
def test_update_without_retraining_feeds_the_first_test_step(effect_runs, same_cache):
    (rrn,) = load_runs(effect_runs[:1])
    per_item = update.update_without_retraining(rrn.model, rrn.data, min_test_ratings=2, min_period_ratings=3)
    assert len(per_item) and np.isfinite(per_item[["rmse_static", "rmse_updated"]].to_numpy()).all()
    assert (per_item["rmse_static"] != per_item["rmse_updated"]).any()  # advance() changed the states
    static_again = update.update_without_retraining(rrn.model, rrn.data, 2, 3)
    pd.testing.assert_frame_equal(per_item, static_again)  # reset_states() restored the training states


def test_command_lists_every_analysis():
    from rrnx.commands.report import ANALYSIS_KEYS
    from rrnx.report import ANALYSES

    assert ANALYSIS_KEYS == tuple(module.KEY for module in ANALYSES)


def test_cold_start_intervals_and_minimum_bucket(pmf_run, same_cache):
    (run,) = load_runs([pmf_run])
    pred = run.predictions()
    worse = pred.assign(prediction=pred["prediction"] + 0.5)
    table = cold_start.cold_start_gain(pred, worse, run.data.split.train, "user")
    assert ((table["gain_low"] <= table["gain"]) & (table["gain"] <= table["gain_high"])).all()
    far = cold_start.cold_start_gain(pred, pred.assign(prediction=pred["prediction"] + 3.0), run.data.split.train, "user")
    assert (far["gain_low"] > 0).all()  # a 3-star shift is a real difference in every bucket
    same = cold_start.cold_start_gain(pred, pred.assign(prediction=pred["prediction"] + 1e-9), run.data.split.train, "user")
    assert (same["gain_low"] <= 1e-6).all() and (same["gain_high"] >= -1e-6).all()
    big = int(table["ratings"].median())
    kept = cold_start.cold_start_gain(pred, worse, run.data.split.train, "user", min_bucket_ratings=big)
    assert (kept["ratings"] >= big).all() and len(kept) < len(table)


def test_update_buckets_have_item_bootstrap_intervals():
    rng = np.random.default_rng(0)
    per_item = pd.DataFrame({"item": range(40), "ratings": rng.integers(5, 30, 40),
                             "fluctuation": rng.uniform(0, 2, 40), "rmse_static": rng.uniform(0.8, 1.2, 40)})
    per_item["rmse_updated"] = per_item["rmse_static"] - 0.1
    table = update.by_fluctuation(per_item)
    assert len(table) == 4 and (table["improvement_low"] > 0).all()
    assert ((table["improvement_low"] <= table["improvement"]) & (table["improvement"] <= table["improvement_high"])).all()
    small = int(table["ratings"].min()) + 1
    assert (update.by_fluctuation(per_item, min_bucket_ratings=small)["ratings"] >= small).all()
    assert len(update.by_fluctuation(per_item, min_bucket_ratings=small)) == len(table) - (table["ratings"] < small).sum()
