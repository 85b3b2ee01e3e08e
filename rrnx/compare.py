"""`rrnx compare`: the paper's Table 2 and Figure 1 for any registered models on one split.

Every model is an ordinary rrnx run (rrnx.run.fit) of the same recipe, data section untouched,
into OUT/<model>/; then OUT/comparison.{md,csv,png} hold the table (model, test RMSE, validation
RMSE, parameters, size in bytes, training time) and the RMSE-against-size figure, and a W&B
summary run (offline by default) holds both, grouped with the model runs.

A model's settings, lowest precedence first: its constructor defaults; the recipe's `model:` keys
that its signature accepts (the others are dropped for it, with a note); a per-model mapping in
the recipe or on the command line (`--model.timesvdpp.dim=20`); inline settings in --models
(`pmf:dim=160:reg=0.01`). A finished run already in OUT/<model>/ with the identical recipe is
reused, an unfinished one is resumed. See docs/results.md for the tables it produced.

`--tune N` first gives every model N Optuna trials over its declared search space on the
validation half (rrnx.tune, through rrnx.sweep), then trains the best setting; OUT/tuned.yaml
holds the settings. Every table has a mean-predictor row and, per model, the paired bootstrap 95%
interval of its test RMSE difference to the best other model (rrnx.intervals).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from rrnx.errors import RecipeError, RrnxError
from rrnx.loggers import summary_run
from rrnx.recipe import load_value
from rrnx.tune import tune_model, write_tuned

COLUMNS = ["model", "test_rmse", "val_rmse", "params", "size_bytes", "train_seconds", "best_epoch",
           "vs_best_other", "diff", "ci_low", "ci_high", "settings", "run_dir"]
HEADERS = {"model": "model", "test_rmse": "test RMSE", "val_rmse": "val RMSE", "params": "parameters",
           "size_bytes": "size (bytes)", "train_seconds": "training time (s)", "best_epoch": "best epoch",
           "diff": "vs best other (95% CI)"}
MEAN_ROW = "mean (training)"  # predicts the training mean for every rating
INTERVALS_NOTE = ("Last column: the model's test RMSE minus that of the best other model (the mean row "
                  "left out), with a paired bootstrap 95% interval (1,000 resamples of the test rows, "
                  "seed 0); an interval that excludes 0 is a difference the test rows support.")
TABLE_FILES = ("comparison.md", "comparison.csv", "comparison.png", "comparison.pdf", "comparison.svg")


@dataclass
class ModelPlan:
    """One model of a comparison: its recipe `model:` section and the recipe keys it did not accept."""

    name: str
    section: dict
    dropped: list[str] = field(default_factory=list)

    @property
    def settings(self) -> str:
        return " ".join(f"{k}={v}" for k, v in self.section.items() if k != "name") or "defaults"


def parse_models(spec: str) -> list[tuple[str, dict]]:
    """'pmf:dim=160:reg=0.01,timesvdpp' -> [('pmf', {'dim': 160, 'reg': 0.01}), ('timesvdpp', {})]."""
    models = []
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, *pairs = item.split(":")
        settings = {}
        for pair in pairs:
            key, sep, raw = pair.partition("=")
            if not sep or not key:
                raise RecipeError(f"--models: {item!r}: settings look like name:key=value[:key=value], "
                                  f"e.g. pmf:dim=160:reg=0.01")
            settings[key] = load_value(raw)
        models.append((name, settings))
    if not models:
        raise RecipeError("--models: no model named; e.g. --models pmf,timesvdpp,autorec-i,autorec-u")
    names = [n for n, _ in models]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise RecipeError(f"--models: {', '.join(repeated)} named twice; one run per model")
    return models


def plan_models(recipe: dict, models: list[tuple[str, dict]] | None) -> tuple[list[ModelPlan], list[str]]:
    """Each model's `model:` section (see the module docstring); also notes for the report."""
    from rrnx.registry import check_keys, constructor_params, discover, warn_broken

    entries, notes = discover(), []
    if models is None:
        models = [(n, {}) for n in sorted(entries) if not entries[n].error]
        notes += [f"{n}: skipped, failed to import ({entries[n].error})" for n in sorted(entries) if entries[n].error]
    else:
        warn_broken({n: e for n, e in entries.items() if n not in dict(models)})
    valid = ", ".join(sorted(n for n, e in entries.items() if not e.error))
    section = {k: v for k, v in recipe["model"].items() if k != "name"}
    per_model = {k: section.pop(k) for k in list(section) if k in entries and isinstance(section[k], dict)}
    plans = []
    for name, inline in models:
        if name not in entries:
            raise RecipeError(f"--models: unknown model {name!r}; registered models: {valid}")
        if entries[name].error:
            raise RecipeError(f"--models: model {name!r} (package {entries[name].package}) failed to import: "
                              f"{entries[name].error}")
        accepted = constructor_params(entries[name].cls)
        explicit = {**per_model.get(name, {}), **inline}
        check_keys("model", explicit, accepted, f"model {name!r}")
        shared = {k: v for k, v in section.items() if k in accepted}
        dropped = sorted(k for k in section if k not in accepted)
        if dropped:
            notes.append(f"{name}: recipe key(s) {', '.join(dropped)} not accepted by this model, dropped")
        plans.append(ModelPlan(name, {"name": name, **shared, **explicit}, dropped))
    return plans, notes


def default_out_dir() -> Path:
    from rrnx.config import default_out

    return default_out("compare")


def compare(recipe: dict, models: list[tuple[str, dict]] | None = None, out_dir: Path | None = None,
            command: str = "", quiet: bool = False, tune: int | None = None) -> pd.DataFrame:
    """Runs every model on the recipe's split; writes and returns the comparison table. With
    `tune`, each model first gets `tune` Optuna trials over its search space (rrnx.tune)."""
    from rrnx.data.sources import resolve_data

    recipe, source = resolve_data(recipe)  # once, so every model's run records (and reuses) the same data
    plans, notes = plan_models(recipe, models)
    if tune is not None and tune < 1:
        raise RecipeError(f"--tune {tune}: the budget is a number of trials per model, at least 1")
    out = Path(out_dir) if out_dir else default_out_dir()
    check_settings(recipe, plans)
    if tune:
        check_tunable(plans)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        return compare_into(out, recipe, plans, notes, source, command, quiet, tune)
    except BaseException:
        if created and not any(out.iterdir()):  # refused before any model's run began: leave no empty folder
            out.rmdir()
        raise


def compare_into(out: Path, recipe: dict, plans: list, notes: list, source: str | None, command: str, quiet: bool,
                 tune: int | None) -> pd.DataFrame:
    group = recipe["logger"].get("group") or out.resolve().name
    say = (lambda *a: None) if quiet else print
    for note in [source] if source else []:
        say(note)
    for note in notes:
        say(f"note: {note}")
    rows, tuned, best_val = [], {}, {}
    for number, plan in enumerate(plans, 1):
        model_recipe = copy.deepcopy(recipe)
        model_recipe["model"] = plan.section
        model_recipe["logger"] = {**recipe["logger"], "group": group}
        if tune:
            say(f"[{number}/{len(plans)}] tuning {plan.name}: {tune} trials from ({plan.settings}) "
                f"-> {out / 'tune' / plan.name}")
            plan.section, best_val[plan.name] = tune_model(plan.name, model_class(plan.name), model_recipe,
                                                           out / "tune" / plan.name, tune, say)
            model_recipe["model"] = tuned[plan.name] = plan.section
        say(f"[{number}/{len(plans)}] {plan.name} ({plan.settings}) -> {out / plan.name}")
        metrics = run_model(model_recipe, out / plan.name, quiet)
        rows.append({**{k: metrics[k] for k in COLUMNS if k in metrics}, "model": plan.name,
                     "settings": plan.settings, "run_dir": str(out / plan.name)})
    check_same_split(out, [p.name for p in plans])
    if tune:
        path = write_tuned(out, tuned, best_val, tune, command)
        notes.append(f"tuned: {tune} trials per model (TPE, median pruner, validation RMSE); settings in {path.name}")
        say(f"tuned settings written to {path}")
    table = with_intervals(pd.DataFrame(rows, columns=COLUMNS), recipe)
    write_outputs(table, out, recipe, command, notes)
    log_to_wandb(table, out, recipe, group)
    say(markdown_table(table))
    say(f"comparison written to {out}/ ({', '.join(TABLE_FILES)})")
    return table


def model_class(name: str) -> type:
    from rrnx.registry import discover

    return discover()[name].cls


def check_settings(recipe: dict, plans: list[ModelPlan]) -> None:
    """Every model's settings checked for their types before the first model trains: a bad value of the
    last model would otherwise be found after all the others had run."""
    from rrnx.config import complete_recipe
    from rrnx.recipe import normalize

    for plan in plans:
        complete_recipe(normalize({**recipe, "model": plan.section}))


def check_tunable(plans: list[ModelPlan]) -> None:
    """Every model must declare a search space, checked before any trial runs."""
    from rrnx.tune import search_space

    for plan in plans:
        search_space(plan.name, model_class(plan.name))


def run_model(recipe: dict, run_dir: Path, quiet: bool) -> dict:
    """fit() into run_dir; reuses a finished run of the identical recipe, resumes an unfinished one."""
    from rrnx.config import complete_recipe
    from rrnx.recipe import load_recipe, normalize
    from rrnx.run import fit, load_run
    from rrnx.rundir import RunDir

    run = RunDir(run_dir)
    wanted = complete_recipe(normalize(recipe))[0]  # runs record their recipe complete: compare like with like
    if run.is_finished():
        recorded, metrics = load_run(run_dir)
        if complete_recipe(recorded)[0] == wanted:
            print(f"  reusing the finished run in {run_dir}")
            return metrics
        raise RrnxError(f"{run_dir}: holds a finished run of a different recipe; choose another --out "
                        f"or remove that directory")
    if run.is_run() and complete_recipe(load_recipe(run.file(RunDir.RECIPE)))[0] == wanted:
        print(f"  resuming the unfinished run in {run_dir}")  # from its last checkpoint, or restarting it
        return fit({}, run_dir, resume=True, quiet=quiet, one_process="rrnx compare")
    return fit(recipe, run_dir, quiet=quiet, one_process="rrnx compare")


def check_same_split(out: Path, names: list[str]) -> None:
    """Every run's train/val/test fingerprints (manifest.json) must agree: one split, many models."""
    from rrnx.rundir import RunDir

    prints = {n: RunDir(out / n).read_json(RunDir.MANIFEST)["data_fingerprint"] for n in names}
    first = names[0]
    for name in names[1:]:
        if prints[name] != prints[first]:
            raise RrnxError(f"{out}: runs {first!r} and {name!r} saw different data splits "
                            f"({prints[first]} vs {prints[name]}); rerun into a fresh --out")


def with_intervals(table: pd.DataFrame, recipe: dict) -> pd.DataFrame:
    """Adds the mean-predictor row and, for every row, its test RMSE minus the best other model's
    with a paired bootstrap 95% interval (rrnx.intervals) over the runs' predictions.parquet."""
    from rrnx.intervals import paired_differences
    from rrnx.run import build_datamodule
    from rrnx.rundir import RunDir

    frames = {r["model"]: pd.read_parquet(RunDir(r["run_dir"]).file(RunDir.PREDICTIONS)) for _, r in table.iterrows()}
    first = next(iter(frames.values()))
    for name, frame in frames.items():
        if not frame[["user", "item", "timestamp"]].equals(first[["user", "item", "timestamp"]]):
            raise RrnxError(f"{name}: predictions.parquet holds other test rows than {table['model'].iloc[0]}'s")
    data = build_datamodule(recipe)  # the training mean and the validation half (cached parse)
    val = data.split.frame("val")["rating"].to_numpy()
    truth = first["rating"].to_numpy()
    predictions = {name: frame["prediction"].to_numpy() for name, frame in frames.items()}
    predictions[MEAN_ROW] = np.full(len(truth), data.rating_mean)
    mean_row = {"model": MEAN_ROW, "test_rmse": float(np.sqrt(((truth - data.rating_mean) ** 2).mean())),
                "val_rmse": float(np.sqrt(((val - data.rating_mean) ** 2).mean())), "params": 1, "size_bytes": 4,
                "train_seconds": 0.0, "best_epoch": 0, "settings": "the training mean", "run_dir": ""}
    table = pd.concat([table, pd.DataFrame([mean_row])], ignore_index=True)
    differences = paired_differences(truth, predictions, exclude_from_best=(MEAN_ROW,))
    for column in ("vs_best_other", "diff", "ci_low", "ci_high"):
        table[column] = [differences.get(m, {}).get("vs" if column == "vs_best_other" else column)
                         for m in table["model"]]
    return table[COLUMNS]


def markdown_table(table: pd.DataFrame) -> str:
    cells = [[str(r["model"]), f"{r['test_rmse']:.4f}", f"{r['val_rmse']:.4f}", f"{int(r['params']):,}",
              f"{int(r['size_bytes']):,}", f"{r['train_seconds']:.1f}", str(int(r["best_epoch"])), difference(r)]
             for _, r in table.iterrows()]
    header = [HEADERS[c] for c in COLUMNS[:7]] + [HEADERS["diff"]]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * 7) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in cells])


def difference(row) -> str:
    """'+0.0123 [+0.0050, +0.0190] vs pmf', or '' when there is no other model."""
    if row.get("vs_best_other") is None or pd.isna(row.get("diff")):
        return ""
    return f"{row['diff']:+.4f} [{row['ci_low']:+.4f}, {row['ci_high']:+.4f}] vs {row['vs_best_other']}"


def write_outputs(table: pd.DataFrame, out: Path, recipe: dict, command: str, notes: list[str]) -> None:
    from rrnx.data.split import format_summary
    from rrnx.rundir import RunDir

    split = RunDir(table["run_dir"].iloc[0]).read_json(RunDir.SPLIT)
    settings = [f"- {r['model']}: {r['settings']}" for _, r in table.iterrows()]
    text = [f"# Comparison {out.resolve().name}", "", f"Command: `{command}`" if command else "",
            "", "Split (the same for every model):", "", "```", format_summary(split), "```", "",
            markdown_table(table), "", INTERVALS_NOTE, "", "Settings:", "", *settings]
    text += ["", "Notes:", "", *[f"- {n}" for n in notes]] if notes else []
    (out / "comparison.md").write_text("\n".join(text) + "\n")
    table.to_csv(out / "comparison.csv", index=False)
    plot(table[table["model"] != MEAN_ROW], out / "comparison.png",
         recipe["data"].get("path") or recipe["data"].get("format", ""))


def plot(table: pd.DataFrame, path: Path, title: str) -> None:
    """Figure 1's analogue: test RMSE against model size (float32 bytes), log x."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from rrnx.report.plotting import bytes_axis

    fig, ax = plt.subplots(figsize=(5.5, 4))
    ax.scatter(table["size_bytes"], table["test_rmse"], s=36)
    for _, row in table.iterrows():
        ax.annotate(row["model"], (row["size_bytes"], row["test_rmse"]), textcoords="offset points", xytext=(5, 4))
    ax.set_xscale("log")
    ax.margins(x=0.2, y=0.1)  # room for the labels
    bytes_axis(ax)  # a few readable size labels (as the report's Fig. 1), whatever the span
    ax.set_xlabel("model size (bytes, 4 per parameter)")
    ax.set_ylabel("test RMSE")
    ax.set_title(f"Accuracy and size: {'/'.join(Path(str(title)).parts[-2:])}", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    for suffix in (".png", ".pdf", ".svg"):  # PNG for the page and W&B; PDF and SVG for a paper
        fig.savefig(path.with_suffix(suffix), dpi=120)
    plt.close(fig)


def log_to_wandb(table: pd.DataFrame, out: Path, recipe: dict, group: str) -> None:
    """One summary run, grouped with the model runs: the table as a wandb.Table, the figure as an Image."""
    run = summary_run(recipe["logger"], out, "compare", f"{group}-summary", group,
                      config={"data": recipe["data"], "models": table["model"].tolist()})
    if run is None:
        return
    import wandb

    table = table.astype({"settings": str, "run_dir": str, "vs_best_other": str})
    run.log({"comparison": wandb.Table(dataframe=table),
             "rmse_vs_size": wandb.Image(str(out / "comparison.png"))})
    for _, row in table.iterrows():
        run.summary[f"{row['model']}/test_rmse"] = float(row["test_rmse"])
    run.finish()
