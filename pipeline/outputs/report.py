"""``report.html``: one self-contained, shareable page for the QI team.

The page is built for sharing, so it holds no patient id and every count on it has been
through ``pipeline.outputs.disclosure`` (suppressed counts read ``≤7``, the rest are rounded to 5;
plots are drawn from the same published numbers). It loads nothing from outside: plots are
inline SVG written by ``pipeline.outputs.svg`` (no ids, links or fonts), and the styles are inline.
Output is deterministic, so the same run writes the same bytes.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from markupsafe import Markup

from pipeline import __version__
from pipeline.outputs.disclosure import (
    ROUNDING_MULTIPLE,
    SECONDARY,
    SUPPRESSION_THRESHOLD,
    format_count,
    format_ratio,
    suppress_counts,
)
from pipeline.outputs.measures import UNKNOWN_PRACTICE
from pipeline.outputs.svg import Chart

__all__ = [
    "ANALYTE_LABELS",
    "CLINICAL_JUDGEMENT",
    "binomial_limits",
    "page_css",
    "render_report",
    "template_environment",
]

TEMPLATES_DIR = Path(__file__).with_name("templates")

#: Shown at the top of the report (and of the worklists): the seed guidance's caveats.
CLINICAL_JUDGEMENT = (
    "b12screen supports clinical judgement; it does not replace it. Treatment should be based "
    "on clinical symptoms, not on biomarker levels alone, and up to half of patients need an "
    "individualised injection schedule (from daily or twice weekly to every 2–4 weeks) to "
    "remain symptom-free."
)

ANALYTE_LABELS: dict[str, tuple[str, str]] = {
    "b12_total": ("Total B12 (serum cobalamin)", "ng/L"),
    "b12_active": ("Active B12 (holotranscobalamin)", "pmol/L"),
    "mma": ("Methylmalonic acid (MMA)", "µmol/L"),
}

STATUS_LABELS = {
    "deficient": "Deficient",
    "indeterminate": "Indeterminate",
    "unlikely": "Deficiency unlikely",
    "not_tested": "Not tested in the look-back window",
}

FLAG_LABELS = {
    "urgent_review": "Urgent review",
    "needs_mma": "MMA test needed",
    "needs_supplementation": "Supplementation suggested",
    "on_metformin": "On metformin",
    "metformin_monitoring_due": "Metformin B12 monitoring due",
    "on_b12_treatment": "On B12 treatment",
    "retest_due": "Retest due after starting treatment",
    "discordant": "Discordant same-day total and active B12",
    "censored_ambiguous": "Censored result spanning a cut-off",
    "paediatric": "Under 16 (adult thresholds applied)",
}

WORKLIST_LABELS = {
    "urgent": "Urgent review",
    "mma": "MMA add-on",
    "supplementation": "Supplementation",
    "metformin_monitoring": "Metformin monitoring",
    "retest": "Retest after treatment",
}

#: Accounting keys that partition ``rows_read`` (the "nothing is lost" identity), with any
#: ``rows_skipped*`` key (labs skip other tests, medications other medications).
ACCOUNTING_PARTS = (
    "rows_accepted",
    "rows_rejected",
    "rows_skipped_other_tests",
    "rows_exact_duplicates",
)

ACCOUNTING_LABELS = {
    "rows_read": "Rows read",
    "rows_accepted": "Accepted",
    "rows_rejected": "Rejected (see reasons)",
    "rows_skipped": "Skipped",
    "rows_skipped_other_tests": "Skipped: other tests",
    "rows_skipped_other_medications": "Skipped: other medications",
    "rows_exact_duplicates": "Exact duplicates",
    "rows_after_as_of": "Accepted, dated after the as-of date (not classified)",
}

#: Measures drawn as funnel plots, in page order.
FUNNEL_MEASURES = ("deficient_among_tested", "metformin_testing")

#: Two-sided coverage of the funnel limits and their line styles.
FUNNEL_LIMITS = ((0.95, "--"), (0.998, ":"))

HISTOGRAM_BINS = 40
#: The histogram's x-axis runs to this multiple of the analyte's highest cut-off.
HISTOGRAM_SPAN = 4.0

_COLOURS = {"bar": "#4c72b0", "cut": "#c44e52", "centre": "#333333", "limit": "#777777",
            "outlier": "#c44e52"}


# --------------------------------------------------------------------------- page layout

#: The page's styles, shared by report.html and trend.html (which extends the report template).
#: Screen: one column below ~1100 px, nothing wider than the viewport (charts scale, grid
#: columns shrink, tables scroll in their own box or wrap their text). Print (A4): running
#: header and footer in @page margin boxes, headings kept with what follows them.
_PAGE_CSS = """
  :root { --ink: #1d1d1f; --muted: #5f6368; --rule: #d9dce1; --accent: #2f5d8a;
          --warn-bg: #fff6e0; --warn: #8a5a00; }
  * { box-sizing: border-box; }
  html { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial,
         sans-serif; font-size: 15px; color: var(--ink); background: #fff;
         -webkit-text-size-adjust: 100%; text-size-adjust: 100%; }
  body { margin: 0 auto; padding: 24px 32px 48px; max-width: 1200px; line-height: 1.45;
         overflow-wrap: break-word; }
  h1 { font-size: 1.7rem; line-height: 1.2; margin: 0 0 4px; }
  h2 { font-size: 1.25rem; margin: 32px 0 8px; padding-bottom: 4px;
       border-bottom: 2px solid var(--accent); }
  h3 { font-size: 1.05rem; margin: 16px 0 6px; }
  p, li { max-width: 80ch; }
  .meta { color: var(--muted); margin: 0 0 16px; }
  .callout { background: var(--warn-bg); border-left: 4px solid var(--warn); padding: 10px 14px;
             margin: 16px 0; }
  .note { color: var(--muted); font-size: 0.9rem; }
  .table-scroll { max-width: 100%; overflow-x: auto; }
  table { border-collapse: collapse; margin: 6px 0 12px; font-size: 0.93rem; max-width: 100%; }
  th, td { padding: 4px 12px 4px 0; border-bottom: 1px solid var(--rule); text-align: left;
           vertical-align: top; }
  th { font-weight: 600; }
  .nowrap, time { white-space: nowrap; }
  td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; padding-left: 12px; }
  td.num { white-space: nowrap; }
  code { overflow-wrap: anywhere; }
  .grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(min(100%, 520px), 1fr));
          gap: 16px 32px; align-items: start; }
  .grid > * { min-width: 0; }
  figure { margin: 0; break-inside: avoid; page-break-inside: avoid; }
  figure svg { display: block; width: 100%; max-width: 100%; height: auto; }
  figcaption { font-size: 0.88rem; color: var(--muted); margin-top: 4px; }
  .card { border: 1px solid var(--rule); border-radius: 6px; padding: 10px 14px;
          break-inside: avoid; page-break-inside: avoid; }
  .card dl { display: grid; grid-template-columns: 9.5em 1fr; gap: 2px 10px; margin: 6px 0 0;
             font-size: 0.92rem; }
  .card dt { color: var(--muted); }
  .card dd { margin: 0; min-width: 0; }
  .figure-value { font-size: 1.5rem; font-weight: 600; }
  .ok { color: #1e7b34; } .bad { color: #b3261e; }
  .marked { color: var(--warn); font-weight: 600; }
  @media (max-width: 640px) {
    html { font-size: 14px; }
    body { padding: 14px 14px 32px; }
    h2 { margin-top: 24px; }
    th, td { padding-right: 8px; }
    td.num, th.num { padding-left: 8px; }
    .card dl { grid-template-columns: 1fr; gap: 0; }
    .card dd { margin-bottom: 6px; }
    table:not(.table-scroll > table) { display: block; overflow-x: auto; }
  }
  @page {
    size: A4; margin: 18mm 12mm 16mm;
    @top-left { content: RUNNING_TITLE; font: 8pt system-ui, sans-serif; color: #5f6368; }
    @top-right { content: RUNNING_DATE; font: 8pt system-ui, sans-serif; color: #1d1d1f; }
    @bottom-right { content: "Page " counter(page) " of " counter(pages);
                    font: 8pt system-ui, sans-serif; color: #5f6368; }
  }
  @media print {
    html { font-size: 10.5pt; }
    body { padding: 0; max-width: none; }
    .grid { display: block; }
    .grid > * { margin-bottom: 10pt; }
    h1, h2, h3 { break-after: avoid; page-break-after: avoid; break-inside: avoid; }
    h2 + p { break-after: avoid; page-break-after: avoid; break-inside: avoid; }
    h2 { margin-top: 18pt; }
    tr, dl > * { break-inside: avoid; page-break-inside: avoid; }
    thead { display: table-header-group; }
    .table-scroll { overflow: visible; }
    figure svg { max-height: 110mm; width: auto; max-width: 100%; }
    .callout { border-left-color: #000; background: none; }
  }
"""


def _css_string(text: str) -> str:
    """``text`` as a quoted CSS string that cannot end the string or the <style> element."""
    escaped = (text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\A ")
               .replace("<", "\\3C ").replace(">", "\\3E "))
    return f'"{escaped}"'


def page_css(title: str = "b12screen", as_of: str | None = None) -> Markup:
    """The ``<style>`` element of report.html and trend.html.

    ``title`` and ``as_of`` fill the printed pages' running header (A4 ``@page`` margin boxes),
    so every printed page says which run and which as-of date it belongs to; the as-of date is
    not repeated when the title already holds it.
    """
    title = " ".join(str(title).split())
    date = "" if not as_of or str(as_of) in title else f"As of {as_of}"
    css = (_PAGE_CSS.replace("RUNNING_TITLE", _css_string(title))
           .replace("RUNNING_DATE", _css_string(date)))
    return Markup(f"<style>{css}</style>")


def template_environment(extra: Mapping[str, str] | None = None) -> jinja2.Environment:
    """The Jinja2 environment for b12screen's HTML (autoescaped; templates in the package).

    ``extra`` maps names to template sources that may extend ``report.html.j2``; they inherit
    its ``<head>``, so ``page_css`` (a template global) styles them too.
    """
    loader: jinja2.BaseLoader = jinja2.FileSystemLoader(TEMPLATES_DIR)
    if extra:
        loader = jinja2.ChoiceLoader([jinja2.DictLoader(dict(extra)), loader])
    environment = jinja2.Environment(
        loader=loader,
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    environment.globals["page_css"] = page_css
    return environment


# --------------------------------------------------------------------------- funnel limits


def binomial_limits(p0: float, n: np.ndarray, coverage: float) -> tuple[np.ndarray, np.ndarray]:
    """Exact binomial funnel limits for a proportion, interpolated (Spiegelhalter 2005).

    For each denominator ``n``, the lower and upper limits between which an observed proportion
    falls with probability ``coverage`` when the true rate is ``p0``.
    """
    return funnel_limits(p0, n, (coverage,))[0]


def funnel_limits(p0: float, n: np.ndarray, coverages: Sequence[float]
                  ) -> list[tuple[np.ndarray, np.ndarray]]:
    """``binomial_limits`` for several coverages at once: each denominator's distribution is
    worked out once and read at every coverage's tails (a funnel plot draws two pairs)."""
    n = np.asarray(n, dtype="int64")
    if p0 <= 0.0 or p0 >= 1.0:
        flat = np.full(n.shape, float(np.clip(p0, 0.0, 1.0)))
        return [(flat, flat.copy()) for _ in coverages]
    tails = [(1.0 - coverage) / 2.0 for coverage in coverages]
    limits = [(np.empty(n.shape), np.empty(n.shape)) for _ in coverages]
    for i, size in enumerate(n):  # one pass per plotted denominator, vectorised within
        # Only k within 40 standard deviations of the mean carry probability a double can
        # hold, so large denominators cost O(sqrt(n)), not O(n).
        reach = int(40 * math.sqrt(size * p0 * (1 - p0))) + 50
        first = max(0, int(size * p0) - reach)
        k = np.arange(first, min(size, int(size * p0) + reach) + 1)
        log_first = (math.lgamma(size + 1) - math.lgamma(first + 1)
                     - math.lgamma(size - first + 1))
        log_choose = log_first + np.concatenate(
            ([0.0], np.cumsum(np.log(size - k[1:] + 1) - np.log(k[1:]))))
        pmf = np.exp(log_choose + k * math.log(p0) + (size - k) * math.log1p(-p0))
        cdf = np.minimum(np.cumsum(pmf), 1.0)
        for tail, (lower, upper) in zip(tails, limits, strict=True):
            for target, out in ((tail, lower), (1.0 - tail, upper)):
                j = min(int(np.searchsorted(cdf, target)), len(k) - 1)
                below = cdf[j - 1] if j > 0 else 0.0
                alpha = (cdf[j] - target) / (cdf[j] - below) if cdf[j] > below else 0.0
                out[i] = float(np.clip((k[j] - alpha) / size, 0.0, 1.0))
    return limits


# --------------------------------------------------------------------------- sections


def _counts_rows(
    labels: Sequence[str],
    counts: Sequence[int],
    *,
    partition: bool,
    total: int | None,
    small_count: int,
    rounding: int,
) -> list[dict[str, str]]:
    """Table rows of label / published count / share of a published total."""
    if not labels:
        return []
    published = suppress_counts(
        pd.Series(list(counts), dtype="int64"),
        secondary=partition,
        small_count=small_count,
        rounding=rounding,
    )
    total_published = None
    if total is not None:
        total_published = suppress_counts(
            pd.Series([total], dtype="int64"), small_count=small_count, rounding=rounding
        )["count"].iloc[0]
    rows = []
    for label, value in zip(labels, published["count"], strict=True):
        share = ""
        if total_published is not None and not pd.isna(total_published) and total_published:
            share = format_ratio(value / total_published if not pd.isna(value) else pd.NA)
        rows.append(
            {"label": label, "count": format_count(value, small_count=small_count), "share": share}
        )
    return rows


def _published_total(count: int, small_count: int, rounding: int) -> str:
    value = suppress_counts(
        pd.Series([count], dtype="int64"), small_count=small_count, rounding=rounding
    )["count"].iloc[0]
    return format_count(value, small_count=small_count)


def value_counts(column: pd.Series) -> dict[str | None, int]:
    """Rows per value (``None``: missing) by Arrow's hash kernel: no Python object per row,
    where pandas' ``value_counts`` on a text column of a large cohort made one each."""
    counted = pc.value_counts(pa.array(column.astype("str").array))  # str: no copy
    return dict(zip(counted.field("values").to_pylist(), counted.field("counts").to_pylist(),
                    strict=True))


def _cohort_section(patients: pd.DataFrame, small_count: int, rounding: int) -> dict[str, Any]:
    total = len(patients)
    by_status = value_counts(patients["b12_status"])
    labels = list(STATUS_LABELS.values())
    counts = [int(by_status.get(key, 0)) for key in STATUS_LABELS]
    unknown = int(by_status.get(None, 0))
    if unknown:
        labels.append("No status")
        counts.append(unknown)
    flags = [name for name in FLAG_LABELS if name in patients.columns]
    flag_counts = [int(patients[name].fillna(False).astype(bool).sum()) for name in flags]
    return {
        "total": _published_total(total, small_count, rounding),
        "status_rows": _counts_rows(
            labels, counts, partition=True, total=total, small_count=small_count, rounding=rounding
        ),
        "flag_rows": _counts_rows(
            [FLAG_LABELS[name] for name in flags],
            flag_counts,
            partition=False,
            total=total,
            small_count=small_count,
            rounding=rounding,
        ),
    }


def _label(key: str) -> str:
    text = key.removeprefix("rows_").replace("_", " ")
    return text[:1].upper() + text[1:]


def _is_count(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _quality_section(summary: Mapping[str, Any], small_count: int, rounding: int) -> dict[str, Any]:
    """Row accounting per input, and rejected rows by reason (rows, not patients)."""
    sections = []
    for name, counts in (summary.get("accounting") or {}).items():
        if not isinstance(counts, Mapping):
            continue
        keys = [k for k, v in counts.items() if _is_count(v)]
        parts = [k for k in keys if k in ACCOUNTING_PARTS or k.startswith("rows_skipped")]
        read = [k for k in keys if k == "rows_read"]
        others = [k for k in keys if k not in parts and k != "rows_read"]
        rows = []
        for group, partition in ((read, False), (parts, True), (others, False)):
            rows += _counts_rows(
                [ACCOUNTING_LABELS.get(k, _label(k)) for k in group],
                [int(counts[k]) for k in group],
                partition=partition,
                total=None,
                small_count=small_count,
                rounding=rounding,
            )
        balances = counts.get("balanced")
        if not isinstance(balances, bool) and "rows_read" in keys and parts:
            balances = int(counts["rows_read"]) == sum(int(counts[k]) for k in parts)
        sections.append({"name": _label(str(name)), "rows": rows, "balances": balances})
    reasons = summary.get("rejected_by_reason") or {}
    names = sorted(str(k) for k, v in reasons.items() if _is_count(v))
    reason_rows = _counts_rows(
        names,
        [int(reasons[k]) for k in names],
        partition=True,  # most rows have one reason, so reasons nearly add up to the total
        total=None,
        small_count=small_count,
        rounding=rounding,
    )
    return {"inputs": sections, "reasons": reason_rows}


def _bins(values: np.ndarray, cutoffs: Sequence[float]) -> tuple[float, np.ndarray]:
    """The histogram's upper end and its counts: ``HISTOGRAM_BINS`` equal bins from 0, then
    the values at or beyond the end."""
    if cutoffs:
        upper = HISTOGRAM_SPAN * max(cutoffs)
    else:
        upper = float(np.nanquantile(values, 0.95)) * 2 or 1.0
    # equal-width bins: numpy bins by arithmetic (corrected against the edges), no sort
    in_range, _ = np.histogram(values[values < upper], bins=HISTOGRAM_BINS, range=(0.0, upper))
    return upper, np.append(in_range, int((values >= upper).sum()))


def _histogram(
    analyte: str,
    cutoffs: Sequence[float],
    total: int,
    bins: tuple[float, np.ndarray] | None,
    small_count: int,
    rounding: int,
) -> dict[str, Any]:
    """One analyte's distribution from published bin counts; small bins are not drawn."""
    title, unit = ANALYTE_LABELS.get(analyte, (analyte, ""))
    section: dict[str, Any] = {
        "analyte": analyte,
        "title": title,
        "unit": unit,
        "total": _published_total(total, small_count, rounding),
        "cutoffs": ", ".join(f"{c:g}" for c in cutoffs),
        "svg": None,
        "withheld": False,  # the count withheld to protect another ([c]): nothing drawn
    }
    if total <= small_count or bins is None:
        return section
    upper, cells = bins
    edges = np.linspace(0.0, upper, HISTOGRAM_BINS + 1)
    published = suppress_counts(
        pd.Series(cells, dtype="int64"), small_count=small_count, rounding=rounding
    )
    heights = published["count"].iloc[:-1].astype("Float64").fillna(0.0).to_numpy(float)
    hidden = int(published["suppressed"].iloc[:-1].sum())

    ymax = max(float(heights.max()), 1.0)
    chart = Chart((0.0, upper), (0.0, ymax * 1.08))
    chart.bars(edges[:-1], edges[1:], heights, _COLOURS["bar"])
    for cut in cutoffs:
        chart.line([cut, cut], [0.0, ymax * 1.08], _COLOURS["cut"], "--", 1.2)
        chart.text(cut, ymax * 1.08, f"{cut:g}", _COLOURS["cut"])
    chart.axes(f"{title}, {unit}" if unit else title, "results (rounded to 5)")
    section["svg"] = chart.svg(f"Distribution of {title}")
    section["hidden_bins"] = hidden
    section["upper"] = f"{upper:g}"
    section["overflow"] = format_count(published["count"].iloc[-1], small_count=small_count)
    return section


#: Per analyte: its results counted, and its histogram (upper end, bin counts) or None.
Histograms = dict[str, tuple[int, tuple[float, np.ndarray] | None]]


def histogram_counts(results: pd.DataFrame, rules_cutoffs: Mapping[str, Sequence[float]],
                     additive: bool = False) -> Histograms:
    """The report's distribution counts per analyte (``results``: the classified results'
    ``analyte`` and ``value``). ``additive``: only bins that add up over parts of the
    results (an analyte without cut-offs, whose axis follows its own values, gets none)."""
    analytes = list(ANALYTE_LABELS)
    labels = results["analyte"].astype("category")  # a code per row: cheap masks below
    present = [str(a) for a in labels.cat.categories[np.unique(labels.cat.codes[
        labels.cat.codes >= 0])]]
    analytes += sorted(a for a in {*rules_cutoffs, *present} if a not in ANALYTE_LABELS)
    counts: Histograms = {}
    value = pd.to_numeric(results["value"], errors="coerce").to_numpy(dtype=float)
    codes = labels.cat.codes.to_numpy()
    usable = value >= 0  # not missing, not negative
    for analyte in analytes:
        at = labels.cat.categories.get_indexer([analyte])[0]  # -1: no such category
        values = value[(codes == at) & usable] if at >= 0 else value[:0]
        cuts = sorted(float(c) for c in rules_cutoffs.get(analyte, []))
        counts[analyte] = (len(values), _bins(values, cuts) if len(values) and (
            cuts or not additive) else None)
    return counts


def classified_histograms(results: pd.DataFrame, rules_cutoffs: Mapping[str, Sequence[float]],
                          additive: bool = False) -> Histograms:
    """``histogram_counts`` of the results classified (not after the as-of date) among a
    run's classified results (``Classified.results``), of the whole run or a partition."""
    classified = ~results["after_as_of"].to_numpy(dtype=bool)
    return histogram_counts(results.loc[classified, ["analyte", "value"]], rules_cutoffs,
                            additive=additive)


def combine_histograms(parts: Sequence[Histograms]) -> Histograms:
    """Parts' distribution counts added up (``histogram_counts(..., additive=True)``)."""
    names = list(dict.fromkeys(a for p in parts for a in p))
    out: Histograms = {}
    for analyte in names:  # three analytes
        got = [p[analyte] for p in parts if analyte in p]
        bins = [b for _, b in got if b is not None]
        out[analyte] = (sum(n for n, _ in got),
                        (bins[0][0], np.sum([c for _, c in bins], axis=0)) if bins else None)
    return out


def _distribution_section(
    counts: Histograms,
    rules_cutoffs: Mapping[str, Sequence[float]],
    small_count: int,
    rounding: int,
    totals: Mapping[str, tuple[str, str]] | None = None,
) -> list[dict[str, Any]]:
    """One plot per analyte; ``totals``: each plot's count of results as published and its
    suppression ('', primary, secondary: the run's one disclosure decision), else
    suppressed here."""
    order = list(ANALYTE_LABELS)
    order += sorted(a for a in counts if a not in ANALYTE_LABELS)
    sections = [_histogram(analyte, sorted(float(c) for c in rules_cutoffs.get(analyte, [])),
                           *counts.get(analyte, (0, None)), small_count, rounding)
                for analyte in order]
    for section in sections:
        if totals and section["analyte"] in totals:
            section["total"], suppression = totals[section["analyte"]]
            if suppression:  # withheld: its bars would add up to it, so none are drawn
                section["svg"] = None
                section["withheld"] = suppression == SECONDARY  # else too few to draw
    return sections


def _funnel(
    measures: pd.DataFrame, measure: Mapping[str, Any], small_count: int, rounding: int
) -> dict[str, Any]:
    """Practice rates against the cohort rate, from published (rounded) counts only."""
    rows = measures[measures["measure"].astype("string") == measure["id"]]
    overall = rows[rows["group_by"].astype("string") == "overall"]
    practices = rows[
        rows["group_by"].astype("string").eq("practice")
        & rows["group"].astype("string").ne(UNKNOWN_PRACTICE)  # not a practice to compare
    ]
    shown = practices[practices["ratio"].notna() & practices["denominator"].fillna(0).gt(0)]
    section: dict[str, Any] = {
        "id": measure["id"],
        "title": measure["title"],
        "svg": None,
        "shown": len(shown),
        "omitted": len(practices) - len(shown),
        "outliers": [],
        "centre": "–",
    }
    if overall.empty or pd.isna(overall["ratio"].iloc[0]) or shown.empty:
        return section
    p0 = float(overall["ratio"].iloc[0])
    section["centre"] = format_ratio(p0)
    den = shown["denominator"].astype("int64").to_numpy()
    rate = shown["ratio"].astype(float).to_numpy()

    start = max(small_count + 1, int(den.min()) // 2)
    curve = np.geomspace(start, max(den.max() * 1.1, start + 1), 120).astype("int64")
    grid = np.unique(np.concatenate([curve, den]))  # practices' own n: limits computed once
    at = np.searchsorted(grid, den)
    position = np.full(len(shown), "", dtype=object)
    widest_lo = widest_hi = np.array([p0])
    limits = []
    pairs = funnel_limits(p0, grid, [coverage for coverage, _ in FUNNEL_LIMITS])
    for (coverage, style), (lo, hi) in zip(FUNNEL_LIMITS, pairs, strict=True):
        limits.append((lo, hi, style, f"{100 * coverage:g}% limits"))
        position = np.where(rate > hi[at], f"above {100 * coverage:g}%", position)
        position = np.where(rate < lo[at], f"below {100 * coverage:g}%", position)
        widest_lo, widest_hi = lo, hi
    low = min(float(widest_lo.min()), float(rate.min()))
    high = max(float(widest_hi.max()), float(rate.max()))
    margin = max(0.02, 0.08 * (high - low))
    chart = Chart((0.0, float(grid[-1])),
                  (100 * max(0.0, low - margin), 100 * min(1.0, high + margin)),
                  height=380, legend_width=150)
    chart.line([0.0, float(grid[-1])], [100 * p0, 100 * p0], _COLOURS["centre"], "-", 1.2,
               f"cohort {100 * p0:.1f}%")
    for lo, hi, style, label in limits:
        chart.line(grid, 100 * lo, _COLOURS["limit"], style, 1.0, label)
        chart.line(grid, 100 * hi, _COLOURS["limit"], style, 1.0)
    outside = position != ""
    chart.points(den[~outside], 100 * rate[~outside], _COLOURS["bar"], "practice")
    if outside.any():
        chart.points(den[outside], 100 * rate[outside], _COLOURS["outlier"],
                     "outside 95% limits", radius=3.5)
        # Practice ids are not patient data, and the table below names them already. Practices
        # at the same point share one label, so none hides another.
        spots = pd.DataFrame({"den": den[outside], "rate": rate[outside],
                              "practice": shown["group"].astype("string").to_numpy()[outside]})
        spots = (spots.sort_values("practice", kind="mergesort")
                 .groupby(["den", "rate"], sort=True)["practice"].agg(", ".join).reset_index())
        chart.labels(spots["den"].to_numpy(), 100 * spots["rate"].to_numpy(),
                     spots["practice"].tolist(), _COLOURS["outlier"])
    chart.axes(f"denominator (patients, rounded to {rounding})", "rate, %")
    section["svg"] = chart.svg(f"Funnel plot: {measure['title']}")

    flagged = shown.assign(position=position)
    flagged = flagged[flagged["position"] != ""].sort_values("group", kind="mergesort")
    section["outliers"] = [
        {
            "practice": str(row["group"]),
            "numerator": format_count(row["numerator"], small_count=small_count),
            "denominator": format_count(row["denominator"], small_count=small_count),
            "rate": format_ratio(row["ratio"]),
            "position": row["position"],
        }
        for row in flagged.to_dict("records")  # the few practices outside the limits
    ]
    return section


def _definition_dict(definition: Any) -> dict[str, Any]:
    if isinstance(definition, Mapping):
        return dict(definition)
    if hasattr(definition, "words"):
        return definition.words()
    return dict(vars(definition))


def _measures_section(
    measures: pd.DataFrame, definitions: Iterable[Any], small_count: int,
    texts: Mapping[str, Mapping[str, str]] | None = None,
) -> list[dict[str, Any]]:
    """One card per measure; ``texts`` (the published cells as display text) when given,
    so the card shows the decision every other file shows."""
    overall = measures[measures["group_by"].astype("string") == "overall"]
    cards = []
    for definition in map(_definition_dict, definitions):
        low = definition.get("low_is_good")
        direction = {True: "Lower is better", False: "Higher is better"}.get(
            low, "Neither higher nor lower is better in itself")
        if texts is not None:
            cards.append({**definition, "direction": direction,
                          **texts.get(definition["id"], {"ratio": "–", "numerator_count": "–",
                                                         "denominator_count": "–"})})
            continue
        row = overall[overall["measure"].astype("string") == definition["id"]]
        cards.append(
            {
                **definition,
                "direction": direction,
                "ratio": format_ratio(row["ratio"].iloc[0]) if len(row) else "–",
                "numerator_count": (
                    format_count(row["numerator"].iloc[0], small_count=small_count)
                    if len(row)
                    else "–"
                ),
                "denominator_count": (
                    format_count(row["denominator"].iloc[0], small_count=small_count)
                    if len(row)
                    else "–"
                ),
            }
        )
    return cards


def _worklist_section(
    summary: Mapping[str, Any], small_count: int, rounding: int
) -> list[dict[str, str]]:
    lists = summary.get("worklists") or {}
    names = [n for n in WORKLIST_LABELS if n in lists] + sorted(
        n for n in lists if n not in WORKLIST_LABELS
    )
    if not names:
        return []
    stats = pd.DataFrame(
        [
            {k: int(lists[n].get(k, 0)) for k in ("rows", "new", "persisting", "resolved")}
            for n in names
        ]
    )

    def single(column: str) -> pd.Series:
        return suppress_counts(
            stats[column], secondary=False, small_count=small_count, rounding=rounding
        )["count"]

    # new + persisting = rows, which is published, so each list's pair is suppressed together
    pair = pd.concat([stats["new"], stats["persisting"]], ignore_index=True)
    owner = pd.Series(np.tile(np.arange(len(names)), 2))
    change = suppress_counts(pair, by=owner, small_count=small_count, rounding=rounding)["count"]
    rows, resolved = single("rows"), single("resolved")
    count = len(names)
    return [
        {
            "name": name,
            "label": WORKLIST_LABELS.get(name, name),
            "rows": format_count(rows.iloc[i], small_count=small_count),
            "new": format_count(change.iloc[i], small_count=small_count),
            "persisting": format_count(change.iloc[count + i], small_count=small_count),
            "resolved": format_count(resolved.iloc[i], small_count=small_count),
        }
        for i, name in enumerate(names)  # five worklists
    ]


def _run_details(summary: Mapping[str, Any]) -> dict[str, str]:
    rules = summary.get("rules")
    if isinstance(rules, Mapping):
        rules = rules.get("name")
    return {
        "as_of": str(summary.get("as_of") or "–"),
        "rules": str(rules or "–"),
        "version": str(summary.get("version") or summary.get("package_version") or __version__),
    }


# --------------------------------------------------------------------------- entry point


def render_report(
    path: Path,
    *,
    summary: Mapping[str, Any],
    patients: pd.DataFrame,
    results: pd.DataFrame | None = None,
    measures: pd.DataFrame,
    definitions: Iterable[Any],
    histograms: Histograms | None = None,
    rules_cutoffs: Mapping[str, Sequence[float]],
    small_count: int = SUPPRESSION_THRESHOLD,
    rounding: int = ROUNDING_MULTIPLE,
) -> None:
    """Write ``report.html``: cohort, data quality, distributions, funnels, worklists, measures.

    ``measures`` must already be disclosure-controlled (``build_measures`` output);
    ``definitions`` are ``Measure`` objects or mappings with their words. Pass
    ``small_count``/``rounding`` from the rules profile's ``[disclosure]`` table. The
    distributions come from ``results`` (``analyte``, ``value``), or from their counts
    (``histograms``, for results held in parts).
    """
    if isinstance(definitions, pd.DataFrame):  # definitions_table()
        definitions = definitions.to_dict("records")
    definitions = [_definition_dict(d) for d in definitions]
    by_id = {d["id"]: d for d in definitions}
    published = summary.get("published")
    context = {
        "run": _run_details(summary),
        "clinical_judgement": CLINICAL_JUDGEMENT,
        "small_count": small_count,
        "rounding": rounding,
        # one disclosure decision for every shareable file (pipeline.outputs.published): the report
        # shows the decided cells, display text included
        "cohort": published["cohort"] if published else _cohort_section(
            patients, small_count, rounding),
        "quality": published["quality"] if published else _quality_section(
            summary, small_count, rounding),
        "distributions": _distribution_section(
            histograms if histograms is not None else histogram_counts(results, rules_cutoffs),
            rules_cutoffs, small_count, rounding,
            published.get("distribution_totals") if published else None),
        "funnels": [
            _funnel(measures, by_id[m], small_count, rounding)
            for m in FUNNEL_MEASURES
            if m in by_id
        ],
        "worklists": published["worklists"] if published else _worklist_section(
            summary, small_count, rounding),
        "measures": _measures_section(measures, definitions, small_count,
                                      published["measure_counts"] if published else None),
        "breakdowns": published["breakdowns"] if published else [],
    }
    html = template_environment().get_template("report.html.j2").render(**context)
    Path(path).write_text(html, encoding="utf-8")
