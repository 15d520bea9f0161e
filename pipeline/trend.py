"""``b12screen trend``: month-on-month measures from earlier runs, as p-charts.

Reads ``measures.parquet`` and ``manifest.json`` from every run folder under a reports
folder, keeps one run per month (the latest as-of date; a rerun of a month replaces it), and
writes ``trend.csv`` (every measure, overall and per practice, with the run's rules profile
and the overall rows' control limits) and ``trend.html`` (one p-chart per measure).

Measures are read as published: suppressed cells stay suppressed and are never re-derived.
Charts use matplotlib's object-oriented ``Figure`` API rather than ``pyplot`` (no global
backend, no figure left open), as inline SVG with a fixed hash salt and no date, so the
same runs give the same page. The centre line is the pooled rate of the months that used
the latest month's rules profile (other months are not comparable, and are marked on the
chart); the limits are 3-sigma binomial limits for each month's denominator.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import matplotlib
import numpy as np
import pandas as pd
from markupsafe import Markup
from matplotlib.figure import Figure

from pipeline.errors import UserError
from pipeline.measures import MEASURE_COLUMNS, MEASURES
from pipeline.report import CLINICAL_JUDGEMENT, template_environment
from pipeline.run_folder import is_temporary

__all__ = [
    "TREND_COLUMNS",
    "RunFolder",
    "TrendFiles",
    "build_trend",
    "figure_svg",
    "find_runs",
    "new_figure",
    "p_chart_limits",
]

SIGMA = 3.0

#: Columns of trend.csv, in order.
TREND_COLUMNS = (
    *MEASURE_COLUMNS,
    "as_of",
    "run",
    "rules_name",
    "rules_sha256",
    "rules_differ_from_latest",
    "centre",
    "lcl",
    "ucl",
    "special_cause",
)

_CSV_RISKY = re.compile(r"^[=+\-@\t\r]")

TREND_TEMPLATE = """\
{% extends "report.html.j2" %}
{% block title %}b12screen trend, {{ first }} to {{ last }}{% endblock %}
{% block body %}
<header>
  <h1>Vitamin B12 screening: month on month</h1>
  <p class="meta">{{ runs|length }} months, {{ first }} to {{ last }} · latest rules profile
  {{ latest_rules }}</p>
</header>
<p class="callout"><strong>Clinical judgement.</strong> {{ clinical_judgement }}</p>
<p class="note">Aggregate figures for sharing: no patient identifiers; counts too small to
publish stay suppressed and are not plotted, other counts are rounded (to the nearest 5 by
default) and rates are worked out from the rounded counts. Each chart is a p-chart: the solid
line is the pooled rate of the months that used the latest rules profile, the dashed lines are
3-sigma control limits for each month's denominator, and a red point lies outside them
(special-cause variation). Months that used a different rules profile are shaded and are not
part of the centre line.</p>
<section id="runs">
  <h2>Runs</h2>
  <table>
    <thead><tr><th>Month</th><th>As of</th><th>Run folder</th><th>Rules profile</th>
      <th>Rules hash</th></tr></thead>
    <tbody>
    {% for r in runs %}
      <tr><td>{{ r.month }}</td><td>{{ r.as_of }}</td><td>{{ r.run }}</td>
        <td>{{ r.rules_name }}{% if r.differs %} <span class="marked">(differs from
        latest)</span>{% endif %}</td><td><code>{{ r.rules_sha256[:12] }}</code></td></tr>
    {% endfor %}
    </tbody>
  </table>
</section>
<section id="charts">
  <h2>Measures</h2>
  <div class="grid">
  {% for c in charts %}
    <figure id="trend-{{ c.id }}">
      <h3>{{ c.title }}</h3>
      {% if c.svg %}{{ c.svg }}{% else %}<p>No month has a publishable rate.</p>{% endif %}
      <figcaption>{{ c.numerator }} ÷ {{ c.denominator }}. {{ c.direction }}.
        {% if c.suppressed %}Suppressed (not plotted): {{ c.suppressed|join(", ") }}.{% endif %}
        {% if c.signals %}Outside the limits: {{ c.signals|join(", ") }}.{% endif %}
      </figcaption>
    </figure>
  {% endfor %}
  </div>
</section>
{% endblock %}
"""


class TrendFiles(NamedTuple):
    """What ``build_trend`` wrote (a tuple, so ``html, csv = build_trend(...)`` works)."""

    html: Path
    csv: Path


@dataclass(frozen=True)
class RunFolder:
    """A run folder's identity, from its manifest."""

    path: Path
    as_of: dt.date
    rules_name: str
    rules_sha256: str

    @property
    def month(self) -> str:
        return f"{self.as_of:%Y-%m}"


def figure_svg(fig: Figure, prefix: str) -> Markup:
    """A figure as inline SVG that references nothing outside the page.

    Drops the XML prolog, DOCTYPE (a URL), RDF metadata (URLs) and namespace declarations
    (the HTML parser supplies them), and prefixes every id so several plots can share a page.
    """
    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.hashsalt": "b12screen", "svg.fonttype": "path"}):
        fig.savefig(buffer, format="svg", metadata={"Date": None})
    svg = buffer.getvalue()
    svg = re.sub(r"<\?xml[^>]*\?>\s*", "", svg)
    svg = re.sub(r"<!DOCTYPE[^>]*>\s*", "", svg)
    svg = re.sub(r"<metadata>.*?</metadata>\s*", "", svg, flags=re.DOTALL)
    svg = re.sub(r'\s+xmlns(:\w+)?="[^"]*"', "", svg)
    ids = sorted(set(re.findall(r'\bid="([^"]+)"', svg)), key=len, reverse=True)
    if ids:
        pattern = re.compile(r'(id="|#)(' + "|".join(map(re.escape, ids)) + r')(?=["\)])')
        svg = pattern.sub(lambda m: f"{m.group(1)}{prefix}-{m.group(2)}", svg)
    if re.search(r"(?i)\b(?:href|src)\s*=\s*\"(?!#)", svg) or re.search(r"(?i)url\((?!#)", svg):
        raise RuntimeError("matplotlib SVG holds an external reference; refusing to embed it")
    return Markup(svg.strip())


def new_figure(width: float, height: float) -> Figure:
    """A pyplot-free figure (no global backend state, nothing left open)."""
    fig = Figure(figsize=(width, height), layout="constrained")
    fig.set_facecolor("white")
    return fig


def _read_manifest(path: Path) -> RunFolder:
    manifest_path = path / "manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        as_of = dt.date.fromisoformat(str(manifest["as_of"])[:10])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{manifest_path} is not a readable b12screen manifest ({exc})") from exc
    rules = manifest.get("rules") or {}
    if not isinstance(rules, dict):
        rules = {"name": str(rules)}
    return RunFolder(
        path=path,
        as_of=as_of,
        rules_name=str(rules.get("name") or ""),
        rules_sha256=str(rules.get("sha256") or ""),
    )


def find_runs(reports_dir: Path) -> list[RunFolder]:
    """Run folders directly under ``reports_dir``, one per month (latest as-of wins), by month.

    Dot-folders are a run's temporary folder or a previous run set aside: never runs."""
    reports_dir = Path(reports_dir)
    if not reports_dir.is_dir():
        raise UserError(f"reports folder not found: {reports_dir}")
    candidates = sorted(
        p
        for p in reports_dir.iterdir()
        if p.is_dir() and not is_temporary(p) and (p / "measures.parquet").is_file()
        and (p / "manifest.json").is_file()
    )
    runs = sorted((_read_manifest(p) for p in candidates), key=lambda r: (r.as_of, r.path.name))
    latest_per_month = {run.month: run for run in runs}
    return [latest_per_month[m] for m in sorted(latest_per_month)]


def _read_measures(run: RunFolder) -> pd.DataFrame:
    path = run.path / "measures.parquet"
    try:
        table = pd.read_parquet(path)
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read {path}: {exc}") from exc
    missing = [c for c in MEASURE_COLUMNS if c not in table.columns]
    if missing:
        found = ", ".join(map(str, table.columns))
        raise UserError(f"{path} lacks column(s) {', '.join(missing)}; found: {found}")
    table = table[list(MEASURE_COLUMNS)].copy()
    table["month"] = run.month
    table["as_of"] = run.as_of.isoformat()
    table["run"] = run.path.name
    table["rules_name"] = run.rules_name
    table["rules_sha256"] = run.rules_sha256
    return table


def p_chart_limits(
    numerator: pd.Series, denominator: pd.Series, in_baseline: pd.Series, sigma: float = SIGMA
) -> pd.DataFrame:
    """Centre line and ``sigma`` binomial limits for a series of monthly proportions.

    Months with a suppressed (NA) count or a zero denominator get no limits. The centre is
    the pooled rate over ``in_baseline`` months with publishable counts.
    """
    num = numerator.astype("Float64")
    den = denominator.astype("Float64")
    usable = num.notna() & den.notna() & den.gt(0).fillna(False)
    base = usable & in_baseline.astype(bool)
    pooled_den = float(den[base].sum())
    centre = float(num[base].sum()) / pooled_den if pooled_den > 0 else np.nan
    spread = sigma * np.sqrt(centre * (1.0 - centre) / den.where(usable).astype(float))
    frame = pd.DataFrame(index=numerator.index)
    frame["centre"] = pd.Series(np.where(usable, centre, np.nan), index=numerator.index)
    frame["lcl"] = (centre - spread).clip(lower=0.0).where(usable)
    frame["ucl"] = (centre + spread).clip(upper=1.0).where(usable)
    ratio = (num / den.where(usable)).astype(float)
    outside = (ratio < frame["lcl"]) | (ratio > frame["ucl"])
    frame["special_cause"] = outside.where(usable & frame["centre"].notna())
    return frame.astype(
        {"centre": "Float64", "lcl": "Float64", "ucl": "Float64", "special_cause": "boolean"}
    )


def _with_limits(table: pd.DataFrame) -> pd.DataFrame:
    overall = table["group_by"].astype("string").eq("overall").fillna(False)
    limits = pd.DataFrame(
        {"centre": np.nan, "lcl": np.nan, "ucl": np.nan, "special_cause": pd.NA},
        index=table.index,
    ).astype({"centre": "Float64", "lcl": "Float64", "ucl": "Float64", "special_cause": "boolean"})
    for _, rows in table[overall].groupby("measure", sort=False):  # one per measure
        chart = p_chart_limits(
            rows["numerator"], rows["denominator"], ~rows["rules_differ_from_latest"]
        )
        limits.loc[chart.index, list(chart.columns)] = chart
    return pd.concat([table, limits], axis=1)


def _neutralise(values: pd.Series) -> pd.Series:
    """OWASP CSV-injection advice: text starting with = + - @ tab CR is opened as text."""
    text = values.astype("string")
    return text.mask(text.str.match(_CSV_RISKY).fillna(False), "'" + text)


def _chart(rows: pd.DataFrame, definition: dict[str, Any]) -> dict[str, Any]:
    rows = rows.sort_values("month", kind="mergesort").reset_index(drop=True)
    months = rows["month"].astype(str).tolist()
    x = np.arange(len(rows))
    ratio = rows["ratio"].astype("Float64").to_numpy(dtype=float, na_value=np.nan)
    lcl = rows["lcl"].to_numpy(dtype=float, na_value=np.nan)
    ucl = rows["ucl"].to_numpy(dtype=float, na_value=np.nan)
    centre = rows["centre"].to_numpy(dtype=float, na_value=np.nan)
    signal = rows["special_cause"].fillna(False).to_numpy(dtype=bool)
    differs = rows["rules_differ_from_latest"].to_numpy(dtype=bool)
    suppressed = rows["suppressed"].to_numpy(dtype=bool)
    low = definition.get("low_is_good")
    chart: dict[str, Any] = {
        "id": definition["id"],
        "title": definition.get("title", definition["id"]),
        "numerator": definition.get("numerator", "numerator"),
        "denominator": definition.get("denominator", "denominator"),
        "direction": {True: "Lower is better", False: "Higher is better"}.get(
            low, "Neither direction is better in itself"
        ),
        "suppressed": [m for m, s in zip(months, suppressed, strict=True) if s],
        "signals": [m for m, s in zip(months, signal, strict=True) if s],
        "svg": None,
    }
    if np.isnan(ratio).all():
        return chart
    fig = new_figure(6.4, 3.2)
    ax = fig.add_subplot()
    for position in x[differs]:
        ax.axvspan(position - 0.5, position + 0.5, color="#f3d9a4", alpha=0.6, linewidth=0)
    ax.plot(x, 100 * centre, color="#333333", linewidth=1.2, label="centre")
    ax.step(
        x,
        100 * ucl,
        where="mid",
        color="#777777",
        linestyle="--",
        linewidth=1,
        label="3-sigma limits",
    )
    ax.step(x, 100 * lcl, where="mid", color="#777777", linestyle="--", linewidth=1)
    ax.plot(x, 100 * ratio, color="#4c72b0", marker="o", markersize=4, linewidth=1.2, label="rate")
    if signal.any():
        ax.scatter(
            x[signal], 100 * ratio[signal], color="#c44e52", s=36, zorder=4, label="outside limits"
        )
    if differs.any():
        ax.scatter([], [], marker="s", color="#f3d9a4", label="different rules profile")
    ax.set_xticks(
        x,
        months,
        rotation=45 if len(months) > 6 else 0,
        ha="right" if len(months) > 6 else "center",
    )
    ax.set_xlim(-0.6, len(months) - 0.4)
    ax.set_ylabel("rate, %")
    fig.legend(fontsize=7, frameon=False, loc="outside right upper")
    ax.spines[["top", "right"]].set_visible(False)
    chart["svg"] = figure_svg(fig, f"trend-{definition['id']}")
    return chart


def build_trend(reports_dir: Path) -> TrendFiles:
    """Write ``trend.html`` and ``trend.csv`` in ``reports_dir``; return their paths."""
    reports_dir = Path(reports_dir)
    runs = find_runs(reports_dir)
    if not runs:
        raise UserError(
            f"no run folders found in {reports_dir}: expected subfolders holding "
            "measures.parquet and manifest.json (written by 'b12screen run')"
        )
    latest = runs[-1]
    table = pd.concat([_read_measures(run) for run in runs], ignore_index=True)
    latest_key = latest.rules_sha256 or latest.rules_name
    run_key = table["rules_sha256"].mask(table["rules_sha256"].eq(""), table["rules_name"])
    table["rules_differ_from_latest"] = run_key.ne(latest_key).astype(bool)
    order = {m.id: i for i, m in enumerate(MEASURES)}
    table["_order"] = table["measure"].map(order).fillna(len(order))
    table["_level"] = table["group_by"].astype("string").ne("overall").astype("int64")
    table = table.sort_values(
        ["_order", "measure", "_level", "group", "month"], kind="mergesort"
    ).reset_index(drop=True)
    table = _with_limits(table)[list(TREND_COLUMNS)]

    csv_path = reports_dir / "trend.csv"
    csv_table = table.copy()
    for column in ("group", "run", "rules_name"):
        csv_table[column] = _neutralise(csv_table[column])
    csv_table.to_csv(csv_path, index=False, lineterminator="\n")

    definitions = {m.id: m.words() for m in MEASURES}
    overall = table[table["group_by"].astype("string") == "overall"]
    charts = [
        _chart(rows, definitions.get(str(measure), {"id": str(measure)}))
        for measure, rows in overall.groupby("measure", sort=False)  # one per measure
    ]
    environment = template_environment({"trend.html.j2": TREND_TEMPLATE})
    html = environment.get_template("trend.html.j2").render(
        runs=[
            {
                "month": run.month,
                "as_of": run.as_of.isoformat(),
                "run": run.path.name,
                "rules_name": run.rules_name,
                "rules_sha256": run.rules_sha256,
                "differs": (run.rules_sha256 or run.rules_name) != latest_key,
            }
            for run in runs
        ],
        first=runs[0].month,
        last=latest.month,
        latest_rules=latest.rules_name,
        clinical_judgement=CLINICAL_JUDGEMENT,
        charts=charts,
    )
    html_path = reports_dir / "trend.html"
    html_path.write_text(html, encoding="utf-8")
    return TrendFiles(html=html_path, csv=csv_path)
