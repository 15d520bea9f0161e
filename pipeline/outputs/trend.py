"""``b12screen trend``: month-on-month measures from earlier runs, as p-charts.

Reads ``measures.parquet`` and ``manifest.json`` from every run folder under a reports
folder, keeps one run per month, and writes ``trend.csv`` (every measure, overall and per
group (practice, age band, sex), with the run's rules profile and every row's control
limits) and ``trend.html`` (one p-chart per measure, with its age-band and sex rows month by
month). Two run folders for one month stop the trend (exit 1, naming
both) unless ``month_folders="latest"`` picks the later as-of date.

Measures are read as published: suppressed cells stay suppressed and are never re-derived.
Charts use matplotlib's object-oriented ``Figure`` API rather than ``pyplot`` (no global
backend, no figure left open), as inline SVG with a fixed hash salt and no date, so the
same runs give the same page. Each stretch of months on one rules profile gets its own centre
line (the pooled rate, once the stretch has 3 months): months under another profile are not
comparable, so they are neither in a profile's centre line and limits nor flagged against
them; the limits are 3-sigma binomial limits for each month's denominator.
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

from pipeline.errors import EXIT_USAGE, UserError
from pipeline.outputs.disclosure import PRIMARY, SECONDARY, SUPPRESSION_THRESHOLD
from pipeline.outputs.measures import MEASURE_COLUMNS, MEASURES
from pipeline.outputs.report import CLINICAL_JUDGEMENT, template_environment
from pipeline.outputs.run_folder import is_temporary

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
#: Months with a publishable rate a rules profile's stretch needs before it gets a centre line.
MIN_BASELINE_MONTHS = 3
#: ``--month-folders``: two run folders for one month stop the trend, or the later as-of wins.
MONTH_FOLDERS = ("stop", "latest")

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

#: The breakdowns shown under each chart (practices are many: they are in trend.csv).
BREAKDOWN_LABELS = {"age_band": "Age band", "sex": "Sex"}
SMALL_TEXT = SUPPRESSION_THRESHOLD
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
default) and rates are worked out from the rounded counts; in the tables “≤{{ small }}” marks a
small count and “[c]” a count withheld so that a small one cannot be worked out. Each chart is
a p-chart: the solid line is the pooled rate of a stretch of months that used one rules
profile (drawn once the stretch has {{ min_months }} months), the dashed lines are 3-sigma
control limits for each month's denominator, and a red point lies outside its own profile's
limits (special-cause variation). Months that used a rules profile other than the latest are
shaded; they are never part of another profile's centre line or flagged against its
limits.</p>
<section id="runs">
  <h2>Runs</h2>
  <div class="table-scroll"><table>
    <thead><tr><th>Month</th><th>As of</th><th>Run folder</th><th>Rules profile</th>
      <th>Rules hash</th></tr></thead>
    <tbody>
    {% for r in runs %}
      <tr><td><time>{{ r.month }}</time></td><td><time>{{ r.as_of }}</time></td><td>{{ r.run }}</td>
        <td>{{ r.rules_name }}{% if r.differs %} <span class="marked">(differs from
        latest)</span>{% endif %}</td><td><code>{{ r.rules_sha256[:12] }}</code></td></tr>
    {% endfor %}
    </tbody>
  </table></div>
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
      {% for b in c.breakdowns %}
      <div class="table-scroll">
      <table>
        <caption>{{ b.label }}</caption>
        <thead><tr><th>{{ b.label }}</th>
          {%- for m in months %}<th class="num">{{ m }}</th>{% endfor %}</tr></thead>
        <tbody>
        {% for r in b.rows %}
          <tr><td>{{ r.group }}</td>
            {%- for v in r.cells %}<td class="num">{{ v }}</td>{% endfor %}</tr>
        {% endfor %}
        </tbody>
      </table>
      </div>
      {% endfor %}
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


def find_runs(reports_dir: Path, month_folders: str = "stop") -> list[RunFolder]:
    """Run folders directly under ``reports_dir``, one per month, by month.

    Two folders for one month are never merged silently: with ``month_folders="stop"`` that
    is a UserError naming both; with ``"latest"`` the later as-of date wins (then the later
    folder name). Dot-folders are a run's temporary folder or a previous run set aside:
    never runs."""
    if month_folders not in MONTH_FOLDERS:
        raise UserError(f"--month-folders must be one of {', '.join(MONTH_FOLDERS)}",
                        EXIT_USAGE)
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
    by_month: dict[str, list[RunFolder]] = {}
    for run in runs:  # one per run folder
        by_month.setdefault(run.month, []).append(run)
    twice = {m: found for m, found in by_month.items() if len(found) > 1}
    if twice and month_folders == "stop":
        month, found = min(twice.items())
        names = " and ".join(f"{r.path} (as of {r.as_of})" for r in found)
        raise UserError(
            f"{len(found)} run folders for {month}: {names}; move one away, or pass "
            "--month-folders latest to use the one with the later as-of date"
        )
    return [by_month[m][-1] for m in sorted(by_month)]


def _read_measures(run: RunFolder) -> pd.DataFrame:
    path = run.path / "measures.parquet"
    try:
        table = pd.read_parquet(path)
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read {path}: {exc}") from exc
    if "suppression" not in table.columns and "suppressed" in table.columns:
        # a run from before the column: everything it withheld read as small counts
        table["suppression"] = np.where(table["suppressed"].astype(bool), "primary", "")
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


def _stretches(table: pd.DataFrame) -> pd.Series:
    """A number per stretch of consecutive months that used one rules profile."""
    months = table[["month", "rules_key"]].drop_duplicates().sort_values("month")
    stretch = months["rules_key"].ne(months["rules_key"].shift()).cumsum()
    return table["month"].map(dict(zip(months["month"], stretch, strict=True)))


def _with_limits(table: pd.DataFrame) -> pd.DataFrame:
    """Centre line and 3-sigma limits for every row (overall and each group), per stretch of
    months on one rules profile: a stretch gets its own centre line once it has
    ``MIN_BASELINE_MONTHS`` months with a publishable rate, and a month is only ever compared
    with its own profile's line, never flagged against another's."""
    num = table["numerator"].astype("Float64").to_numpy(dtype=float, na_value=np.nan)
    den = table["denominator"].astype("Float64").to_numpy(dtype=float, na_value=np.nan)
    usable = ~np.isnan(num) & ~np.isnan(den) & (np.nan_to_num(den) > 0)
    key = pd.MultiIndex.from_arrays([table["measure"], table["group_by"], table["group"],
                                     _stretches(table)])
    code = pd.factorize(key)[0]
    n_keys = int(code.max()) + 1 if len(code) else 0
    pooled_num = np.bincount(code, weights=np.where(usable, num, 0.0), minlength=n_keys)
    pooled_den = np.bincount(code, weights=np.where(usable, den, 0.0), minlength=n_keys)
    months = np.bincount(code, weights=usable, minlength=n_keys)
    with np.errstate(invalid="ignore", divide="ignore"):
        centre = np.where((months >= MIN_BASELINE_MONTHS) & (pooled_den > 0),
                          pooled_num / pooled_den, np.nan)[code]
        spread = SIGMA * np.sqrt(centre * (1.0 - centre) / np.where(usable, den, np.nan))
        ratio = np.where(usable, num / np.where(usable, den, 1.0), np.nan)
    charted = usable & ~np.isnan(centre)
    lcl = np.where(charted, np.clip(centre - spread, 0.0, None), np.nan)
    ucl = np.where(charted, np.clip(centre + spread, None, 1.0), np.nan)
    outside = (ratio < lcl) | (ratio > ucl)
    limits = pd.DataFrame({
        "centre": pd.array(np.where(charted, centre, np.nan), dtype="Float64"),
        "lcl": pd.array(lcl, dtype="Float64"), "ucl": pd.array(ucl, dtype="Float64"),
        "special_cause": pd.array(np.where(charted, outside, None), dtype="boolean"),
    }, index=table.index)
    limits.loc[~charted, ["centre", "lcl", "ucl"]] = pd.NA
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
    profile = rows["rules_sha256"].mask(rows["rules_sha256"].eq(""), rows["rules_name"])
    stretch = profile.ne(profile.shift()).cumsum().to_numpy()
    for number in np.unique(stretch):  # one centre line per rules profile's stretch
        at = stretch == number
        first = number == stretch[0]
        ax.plot(x[at], 100 * centre[at], color="#333333", linewidth=1.2,
                label="centre (per rules profile)" if first else None)
        ax.step(x[at], 100 * ucl[at], where="mid", color="#777777", linestyle="--",
                linewidth=1, label="3-sigma limits" if first else None)
        ax.step(x[at], 100 * lcl[at], where="mid", color="#777777", linestyle="--",
                linewidth=1)
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


def _cell_text(table: pd.DataFrame) -> pd.Series:
    """A row's rate as the trend page shows it: ``≤7`` where a count is small, ``[c]`` where
    withheld to protect another, else the percentage from the published counts."""
    ratio = table["ratio"].astype("Float64")
    text = (100 * ratio).round(1).astype("string") + "%"
    kind = table["suppression"].astype("string").fillna("")
    text = text.mask(kind.eq(SECONDARY), "[c]").mask(kind.eq(PRIMARY), f"≤{SMALL_TEXT}")
    return text.fillna("–")


def _breakdowns(table: pd.DataFrame, months: list[str]) -> dict[str, list[dict[str, Any]]]:
    """Per measure, its age-band and sex rows month by month (as text), for the page."""
    rows = table[table["group_by"].isin(list(BREAKDOWN_LABELS))].assign(text=_cell_text)
    out: dict[str, list[dict[str, Any]]] = {}
    for (measure, group_by), part in rows.groupby(["measure", "group_by"], sort=False):
        grid = part.pivot_table(index="group", columns="month", values="text",
                                aggfunc="first", sort=False).reindex(columns=months)
        out.setdefault(str(measure), []).append({
            "label": BREAKDOWN_LABELS[str(group_by)],
            "rows": [{"group": str(g), "cells": [("–" if pd.isna(v) else str(v)) for v in vs]}
                     for g, vs in zip(grid.index, grid.to_numpy(), strict=True)],
        })
    return out


def build_trend(reports_dir: Path, month_folders: str = "stop") -> TrendFiles:
    """Write ``trend.html`` and ``trend.csv`` in ``reports_dir``; return their paths.

    ``month_folders``: what two run folders for one month do (``stop``: a UserError naming
    both; ``latest``: the later as-of date is used)."""
    reports_dir = Path(reports_dir)
    runs = find_runs(reports_dir, month_folders)
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
    table["rules_key"] = run_key
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
    months = [run.month for run in runs]
    breakdowns = _breakdowns(table, months)
    for chart in charts:
        chart["breakdowns"] = breakdowns.get(chart["id"], [])
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
        months=months,
        small=SMALL_TEXT,
        min_months=MIN_BASELINE_MONTHS,
        as_of=latest.as_of.isoformat(),
    )
    html_path = reports_dir / "trend.html"
    html_path.write_text(html, encoding="utf-8")
    return TrendFiles(html=html_path, csv=csv_path)
