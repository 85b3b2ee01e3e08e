"""The report page: one self-contained HTML file (figures inlined as base64 PNG; the PNG, PDF, SVG
and CSV files also lie beside it), with the runs, every analysis and why any was skipped."""

from __future__ import annotations

import base64
import html
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.8em 0; }
th, td { border: 1px solid #ccc; padding: 2px 8px; text-align: right; } th { background: #f4f4f4; }
img { max-width: 100%; } .caption { color: #444; } .skipped { color: #8a5300; } code { background: #f4f4f4; }
"""


def table_html(frame: pd.DataFrame) -> str:
    return frame.to_html(index=False, border=0, float_format=lambda v: f"{v:.4g}", na_rep="")


def image_html(png: Path, files: list[Path]) -> str:
    """The PNG inlined, then links to it and to `files` (the same figure as PDF, SVG)."""
    encoded = base64.b64encode(png.read_bytes()).decode("ascii")
    links = " · ".join(f'<a href="{html.escape(path.name)}">{html.escape(path.name)}</a>' for path in [png, *files])
    return f'<p><img alt="{html.escape(png.stem)}" src="data:image/png;base64,{encoded}"></p>\n<p>{links}</p>'


def runs_table(runs) -> pd.DataFrame:
    return pd.DataFrame([{"run": run.label, "directory": str(run.run_dir), "model": run.model_name,
                          "granularity (user / item)": " / ".join(run.granularity),
                          "test RMSE": run.metrics.get("test_rmse"), "parameters": run.metrics.get("params"),
                          "synthetic truth": "yes" if run.truth else "no"} for run in runs])


def outcome_html(outcome) -> str:
    head = f'<h2 id="{outcome.key}">{html.escape(outcome.paper)}: {html.escape(outcome.title)}</h2>'
    if outcome.section is None:
        return f'{head}\n<p class="skipped">Skipped: {html.escape(outcome.reason)}</p>'
    section = outcome.section
    parts = [head, f'<p class="caption">{html.escape(section.caption)}</p>']
    parts += [image_html(png, [v for v in outcome.vectors if v.stem == png.stem]) for png in outcome.pngs]
    for name, table in section.tables.items():
        parts += [f"<h3>{html.escape(name)}</h3>", table_html(table)]
    parts += [f"<p>{html.escape(note)}</p>" for note in section.notes]
    if outcome.csv:
        parts.append(f'<p>Plotted data: <a href="{html.escape(outcome.csv.name)}">{html.escape(outcome.csv.name)}</a></p>')
    return "\n".join(parts)


def write_page(out: Path, runs, outcomes, command: str) -> Path:
    """out/index.html; returns its path."""
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    skipped = [o for o in outcomes if o.section is None]
    contents = "".join(f'<li><a href="#{o.key}">{html.escape(o.paper)}: {html.escape(o.title)}</a>'
                       f'{" (skipped)" if o.section is None else ""}</li>' for o in outcomes)
    body = ["<h1>rrnx report: the paper's analyses (Wu et al., WSDM 2017, Sections 4.2-4.6)</h1>",
            f"<p>Made {stamp} by <code>{html.escape(command)}</code></p>",
            "<h2>Runs</h2>", table_html(runs_table(runs)), f"<ul>{contents}</ul>"]
    if skipped:
        body.append("<p class='skipped'>Skipped: " + "; ".join(
            f"{html.escape(o.title)} ({html.escape(o.reason)})" for o in skipped) + "</p>")
    body += [outcome_html(o) for o in outcomes]
    page = (f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>rrnx report</title>"
            f"<style>{STYLE}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")
    path = out / "index.html"
    path.write_text(page)
    return path
