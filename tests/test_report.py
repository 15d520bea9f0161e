"""report.html: self-contained, no patient ids, every count through disclosure control."""

from __future__ import annotations

import datetime as dt
import html as html_lib
import re

import numpy as np
import pandas as pd
import pytest

from pipeline.outputs.measures import MEASURES, build_measures
from pipeline.outputs.report import (
    CLINICAL_JUDGEMENT,
    binomial_limits,
    page_css,
    render_report,
    template_environment,
)

AS_OF = dt.date(2026, 3, 31)
CUTOFFS = {"b12_total": [180, 350], "b12_active": [25, 70], "mma": [0.45]}
STATUSES = ["deficient", "indeterminate", "unlikely", "not_tested"]


def synthetic(n: int, seed: int = 1, practices: int = 6) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A plausible patients table and results table, built vectorised."""
    rng = np.random.default_rng(seed)
    ids = pd.array([f"ID{seed}x{i:06d}Q" for i in range(n)], dtype="string")
    names = [f"PR{k:03d}" for k in range(practices)]
    weights = np.geomspace(1, 0.01, practices)
    practice = pd.array(rng.choice(names, n, p=weights / weights.sum()), dtype="string")
    practice[rng.random(n) < 0.01] = pd.NA
    tested = rng.random(n) < 0.7
    total = np.where(tested, rng.lognormal(np.log(380), 0.5, n), np.nan)
    status = np.select(
        [~tested, total < 180, total <= 350],
        ["not_tested", "deficient", "indeterminate"],
        "unlikely",
    )
    mma = np.where((status == "indeterminate") & (rng.random(n) < 0.4), 0.3, np.nan)
    collected = pd.Series(
        pd.Timestamp(AS_OF) - pd.to_timedelta(rng.integers(0, 365, n), unit="D")
    ).where(tested)
    on_metformin = rng.random(n) < 0.15
    on_treatment = rng.random(n) < 0.1
    patients = pd.DataFrame(
        {
            "patient_id": ids,
            "practice_id": practice,
            "index_collected_at": collected,
            "index_value": total,
            "mma_umol_l": mma,
            "b12_status": pd.Categorical(status, categories=STATUSES),
            "status_basis": np.where(tested, "b12_total", "none"),
            "needs_mma": status == "indeterminate",
            "needs_supplementation": (status == "deficient") & ~on_treatment,
            "metformin_monitoring_due": on_metformin & ~tested,
            "retest_due": on_treatment & (rng.random(n) < 0.3),
            "urgent_review": (status == "deficient") & (rng.random(n) < 0.2),
            "paediatric": rng.random(n) < 0.002,
            "on_metformin": on_metformin,
            "on_b12_treatment": on_treatment,
        }
    )
    m = 2 * n
    analyte = rng.choice(["b12_total", "b12_active", "mma"], m, p=[0.7, 0.2, 0.1])
    value = np.select(
        [analyte == "b12_total", analyte == "b12_active"],
        [rng.lognormal(np.log(380), 0.5, m), rng.lognormal(np.log(60), 0.5, m)],
        rng.lognormal(np.log(0.3), 0.5, m),
    )
    results = pd.DataFrame(
        {
            "patient_id": rng.choice(np.asarray(ids), m),
            "collected_at": pd.Timestamp(AS_OF) - pd.to_timedelta(rng.integers(0, 365, m), "D"),
            "analyte": analyte,
            "value": value,
            "unit": "x",
            "censor": "",
            "band": "",
        }
    )
    return patients, results


SUMMARY = {
    "as_of": "2026-03-31",
    "rules": {"name": "nice-ng239", "sha256": "ab" * 32},
    "accounting": {
        "labs": {
            "rows_read": 6213,
            "rows_accepted": 6000,
            "rows_rejected": 3,
            "rows_skipped_other_tests": 200,
            "rows_exact_duplicates": 10,
            "rows_after_as_of": 4,
        },
        "patients": {"rows_read": 3000, "rows_accepted": 3000, "rows_rejected": 0},
        "medications": {
            "rows_read": 900,
            "rows_accepted": 500,
            "rows_rejected": 0,
            "rows_skipped_other_medications": 400,
        },
    },
    "rejected_by_reason": {"bad_date": 2, "unknown_unit": 1, "implausible_value": 40},
    "worklists": {
        "urgent": {"rows": 40, "new": 36, "persisting": 4, "resolved": 2},
        "mma": {"rows": 500, "new": 300, "persisting": 200, "resolved": 120},
        "retest": {"rows": 0, "new": 0, "persisting": 0, "resolved": 0},
    },
}


def render(tmp_path, patients, results, summary=SUMMARY, **kwargs) -> str:
    measures = build_measures(patients, AS_OF, 7, 5)
    path = tmp_path / "report.html"
    render_report(
        path,
        summary=summary,
        patients=patients,
        results=results,
        measures=measures,
        definitions=MEASURES,
        rules_cutoffs=CUTOFFS,
        **kwargs,
    )
    return path.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def cohort():
    return synthetic(3000)


@pytest.fixture
def report(tmp_path, cohort):
    return render(tmp_path, *cohort)


def text_of(page: str) -> str:
    page = re.sub(r"<svg.*?</svg>", " ", page, flags=re.DOTALL)
    page = re.sub(r"<style>.*?</style>", " ", page, flags=re.DOTALL)
    return html_lib.unescape(re.sub(r"<[^>]+>", " ", page))


def test_loads_nothing_from_outside(report):
    assert "http://" not in report and "https://" not in report
    assert not re.search(r"(?i)\b(src|href)\s*=\s*[\"']?(?!#)[a-z]+:", report)
    assert not re.search(r"(?i)<(script|link|iframe|img|object|embed)\b", report)
    assert "@import" not in report and not re.search(r"url\((?!#)", report)
    assert report.startswith("<!DOCTYPE html>")
    assert report.count("<svg") == 5  # three distributions, two funnels


def test_no_patient_ids(report, cohort):
    patients, results = cohort
    for patient_id in pd.concat([patients["patient_id"], results["patient_id"]]).unique():
        assert patient_id not in report


def test_every_count_shown_is_publishable(report):
    cells = re.findall(r'<td class="num">([^<]*)</td>', report)
    assert cells
    counts = [c for c in cells if not c.endswith("%") and c != "–"]
    assert "≤7" in counts
    for cell in counts:
        if cell == "≤7":
            continue
        value = int(cell.replace(",", ""))
        assert value == 0 or value > 7, cell
        assert value % 5 == 0, cell
    for number in re.findall(r"\(([\d,≤]+) of ([\d,≤]+)\)", report):  # measure cards
        for cell in number:
            assert cell == "≤7" or int(cell.replace(",", "")) % 5 == 0


def test_content(report):
    text = " ".join(text_of(report).split())
    assert " ".join(CLINICAL_JUDGEMENT.split()) in text
    for heading in ("Cohort", "Worklists", "Data quality", "Result distributions"):
        assert heading in text
    for measure in MEASURES:
        assert measure.title in text and measure.why in text and measure.numerator in text
    assert text.count("✓ Every row is accounted for.") == 3
    assert "Skipped: other medications 400" in text
    # data quality: 3 rejected rows are hidden, and the next smallest part (10) with them
    labs = text[text.index("Labs") :]
    assert "Rejected (see reasons) ≤7" in labs and "Exact duplicates ≤7" in labs
    # worklists: 4 persisting would reveal 36 new by subtraction from 40, so both hidden
    assert re.search(r"Urgent review 40 ≤7 ≤7 ≤7", text)
    assert "MMA add-on 500 300 200 120" in text


def test_print_and_width_css(report):
    """Printed pages carry the run and as-of date in their running header; on screen the grid
    never asks for more than the viewport. (Checked in a browser by test_browser.py.)"""
    assert "@media print" in report and "size: A4" in report
    assert "max-width: 1200px" in report and "minmax(min(100%, 520px), 1fr)" in report
    assert '@top-left { content: "b12screen report, as of 2026-03-31"' in report
    assert 'counter(page) " of " counter(pages)' in report
    assert "break-after: avoid" in report


def test_running_header_text_cannot_escape_the_style_element():
    css = str(page_css('x"</style><script>alert(1)</script>', "2026-01-31"))
    assert css.count("</style>") == 1 and "<script>" not in css
    assert '@top-right { content: "As of 2026-01-31"' in css


def test_pages_that_extend_the_report_share_its_layout():
    """trend.html extends report.html.j2: it gets the same styles, and its running header
    the latest run's as-of date."""
    page = template_environment({"child.html.j2": (
        '{% extends "report.html.j2" %}{% block title %}b12screen trend, 2026-01 to 2026-02'
        '{% endblock %}{% block body %}<h1>Trend</h1>{% endblock %}')}).get_template(
        "child.html.j2").render(runs=[{"as_of": "2026-01-31"}, {"as_of": "2026-02-28"}])
    assert '@top-left { content: "b12screen trend, 2026-01 to 2026-02"' in page
    assert '@top-right { content: "As of 2026-02-28"' in page
    assert "<h1>Trend</h1>" in page and "Clinical judgement" not in page


def test_deterministic(tmp_path, cohort):
    first = render(tmp_path, *cohort)
    assert render(tmp_path, *cohort) == first


def test_small_cohort_draws_nothing_disclosive(tmp_path):
    patients, results = synthetic(40, seed=3, practices=12)
    page = render(tmp_path, patients, results.iloc[:5], summary={})
    text = " ".join(text_of(page).split())
    assert "too few to draw" in text.lower()
    assert "No worklist figures were supplied" in text
    assert page.count("<svg") <= 2
    for patient_id in patients["patient_id"]:
        assert patient_id not in page


def test_funnel_omits_suppressed_practices(tmp_path, cohort):
    patients, results = cohort
    measures = build_measures(patients, AS_OF, 7, 5)
    rows = measures[
        (measures["measure"] == "deficient_among_tested")
        & (measures["group_by"] == "practice")
        & (measures["group"] != "unknown")  # patients without a practice are not a practice
    ]
    drawn = int((rows["ratio"].notna() & rows["denominator"].fillna(0).gt(0)).sum())
    text = " ".join(text_of(render(tmp_path, patients, results)).split())
    plural = "s" if drawn != 1 else ""
    assert f"{drawn} practice{plural} drawn, {len(rows) - drawn} not drawn" in text
    assert len(rows) - drawn >= 1  # the synthetic cohort has small practices


def test_funnel_labels_the_practices_outside_the_limits(tmp_path, cohort):
    """A practice whose tested patients are all deficient lies far above the cohort rate: it
    is drawn in red and labelled with its practice id, like the table under the plot."""
    patients, results = cohort
    patients = patients.copy()
    outlier = patients["practice_id"].eq("PR001").fillna(False) & patients["b12_status"].ne(
        "not_tested")
    patients["b12_status"] = patients["b12_status"].mask(outlier, "deficient")
    page = render(tmp_path, patients, results)
    figure = re.search(r'<figure id="funnel-deficient_among_tested">.*?</figure>', page,
                       flags=re.DOTALL).group(0)
    listed = re.findall(r"<tr><td>(PR\d+)</td>", figure)
    assert "PR001" in listed
    svg = re.search(r"<svg.*?</svg>", figure, flags=re.DOTALL).group(0)
    labels = {p for text in re.findall(r"<text[^>]*>([^<]*)</text>", svg)
              for p in text.split(", ")}
    assert set(listed) <= labels
    assert "outside 95% limits" in svg
    assert svg.count('fill="#c44e52"/>') >= len(listed) + 1  # red points and their key


@pytest.mark.parametrize(
    ("p0", "n", "coverage"),
    [(0.5, 100, 0.95), (0.1, 400, 0.95), (0.1, 400, 0.998), (0.7, 2000, 0.998)],
)
def test_binomial_limits_match_normal_approximation_for_large_n(p0, n, coverage):
    z = {0.95: 1.959964, 0.998: 3.090232}[coverage]
    lower, upper = binomial_limits(p0, np.array([n]), coverage)
    half = z * np.sqrt(p0 * (1 - p0) / n)
    assert lower[0] == pytest.approx(p0 - half, abs=0.012)
    assert upper[0] == pytest.approx(p0 + half, abs=0.012)


def test_binomial_limits_narrow_and_stay_in_range():
    n = np.array([10, 50, 200, 1000])
    lower, upper = binomial_limits(0.05, n, 0.998)
    assert (np.diff(upper) < 0).all() and (lower >= 0).all() and (upper <= 1).all()
    assert (lower <= 0.05).all() and (upper >= 0.05).all()
    flat_lo, flat_hi = binomial_limits(0.0, n, 0.95)
    assert (flat_lo == 0).all() and (flat_hi == 0).all()


def test_report_charts_are_plain_inline_svg(report):
    """The report's charts are written as SVG text: no ids, links or namespaces to clash
    or leak, a title each, the cut-offs drawn dashed and labelled with their values."""
    svgs = re.findall(r"<svg.*?</svg>", report, flags=re.DOTALL)
    assert len(svgs) == 5
    for svg in svgs:
        assert not re.search(r"\b(id|href|xmlns)=", svg)
        assert re.search(r"<title>[^<]+</title>", svg)
    histograms = [svg for svg in svgs if 'aria-label="Distribution of' in svg]
    funnels = [svg for svg in svgs if 'aria-label="Funnel plot' in svg]
    assert len(histograms) == 3 and len(funnels) == 2
    for svg, cuts in zip(histograms, CUTOFFS.values(), strict=True):
        assert svg.count("stroke-dasharray") == len(cuts)
        for cut in cuts:
            assert f">{cut:g}</text>" in svg
        assert "<rect x=" in svg  # bars
    assert all("<circle" in svg and "<polyline" in svg for svg in funnels)


@pytest.mark.parametrize(("low", "high", "count", "ticks"), [
    (0, 1400, 6, [0, 250, 500, 750, 1000, 1250]),
    (0, 1.8, 6, [0, 0.5, 1.0, 1.5]),
    (12.5, 37.2, 5, [15, 20, 25, 30, 35]),
    (0, 280, 6, [0, 50, 100, 150, 200, 250]),
    (3, 3, 6, [3]),
])
def test_nice_ticks(low, high, count, ticks):
    from pipeline.outputs.svg import nice_ticks

    assert nice_ticks(low, high, count) == pytest.approx(ticks)


def test_trend_figure_svg_is_inline_safe():
    from pipeline.outputs.trend import figure_svg, new_figure

    fig = new_figure(3, 2)
    fig.add_subplot().plot([0, 1], [0, 1])
    svg = str(figure_svg(fig, "demo"))
    assert svg.startswith("<svg") and "xmlns" not in svg and "DOCTYPE" not in svg
    ids = re.findall(r'\bid="([^"]+)"', svg)
    assert ids and all(i.startswith("demo-") for i in ids)
    for ref in re.findall(r'(?:href="#|url\(#)([^")]+)', svg):
        assert ref in ids


@pytest.mark.parametrize(
    ("counts", "verdict"),
    [
        ({"rows_read": 100, "rows_accepted": 90, "rows_skipped": 10}, "✓"),
        ({"rows_read": 100, "rows_accepted": 90, "rows_rejected": 5}, "✗"),
        ({"rows_read": 100, "rows_accepted": 90, "balanced": True}, "✓"),  # stated by the run
        ({"rows_accepted": 90}, None),  # nothing to check against
    ],
)
def test_accounting_balance(tmp_path, cohort, counts, verdict):
    summary = {**SUMMARY, "accounting": {"labs": counts}}
    text = text_of(render(tmp_path, *cohort, summary=summary))
    for mark in ("✓", "✗"):
        assert (mark in text) == (mark == verdict)
