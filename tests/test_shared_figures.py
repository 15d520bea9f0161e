"""Shared figures: one suppression decision per published table, the same in every file.

Three monthly runs and a trend are built as a QI team builds them; then the shareable files
(``summary.json``, ``measures.csv``/``.parquet``, ``trend.csv``, ``report.html``) are read back
as an outsider would, every published value of a cell is collected from all of them at
once, and an attacker who knows every additive relation between the tables (statuses add
up to the cohort, a list's rows are new + persisting, each breakdown adds up to its
overall row, a count shown in two tables is one count) works out the tightest interval for
every withheld count. None may be narrower than what the withheld cells' own markers
(``≤7``, ``[c]``) say. The owner-only ``disclosure_log.csv`` is used as the attacker's
oracle for which cell is primary and which secondary: a stronger attacker than the files
allow.
"""

from __future__ import annotations

import json
import math
import re
import stat
from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from pipeline.sample_data import generate
from tests.conftest import invoke

SMALL, ROUNDING = 7, 5
OVERLAP = "rejected_by_reason/_overlap"  # never published: a reader knows only that it is >= 0
MONTHS = (date(2026, 8, 31), date(2026, 9, 30), date(2026, 10, 31))
STATUSES = ("deficient", "indeterminate", "unlikely", "not_tested", "no_status")
LIST_FLAGS = {"urgent": "urgent_review", "mma": "needs_mma",
              "supplementation": "needs_supplementation",
              "metformin_monitoring": "metformin_monitoring_due", "retest": "retest_due"}


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("shared")
    for as_of in MONTHS:
        data = generate(root / f"data-{as_of:%m}", n_patients=700, seed=21, messy=True,
                        as_of=as_of)
        result = invoke("run", data["labs"], "--patients", data["patients"], "--medications",
                        data["medications"], "--out", root / "reports" / f"{as_of:%Y-%m}",
                        "--quiet")
        assert result.exit_code == 0, result.output
    result = invoke("trend", root / "reports")
    assert result.exit_code == 0, result.output
    return root / "reports"


def run_folders(reports: Path) -> list[Path]:
    return [reports / f"{m:%Y-%m}" for m in MONTHS]


# ----------------------------------------------------------------------- what the files say


def _measure_rows(frame: pd.DataFrame) -> dict[str, object]:
    out: dict[str, object] = {}
    for row in frame.to_dict("records"):
        stem = f"measure/{row['measure']}/{row['group_by']}/{row['group']}/"
        for column in ("numerator", "denominator"):
            value = row[column]
            out[stem + column] = None if pd.isna(value) else int(value)
    return out


def published_values(folder: Path, trend: pd.DataFrame) -> dict[str, list[object]]:
    """Every value each shareable file publishes for each cell (None: withheld)."""
    seen: dict[str, list[object]] = {}

    def add(values: dict[str, object]) -> None:
        for key, value in values.items():
            seen.setdefault(key, []).append(value)

    summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
    add({"cohort/patients/patients": summary["cohort"]["patients"]})
    add({f"b12_status/{k}/patients": v for k, v in summary["cohort"]["by_status"].items()})
    add({f"flags/{k}/patients": v for k, v in summary["cohort"]["flags"].items()})
    for name, counts in summary["worklists"].items():
        add({f"worklists/{name}/{k}/": v for k, v in counts.items()})
    for name, counts in summary["accounting"].items():
        add({f"accounting/{name}/{k}/rows": v for k, v in counts.items() if k != "balanced"})
    add({f"rejected_by_reason/{k}/rows": v for k, v in summary["rejected_by_reason"].items()})
    for part in ("measures", "per_practice", "by_age_band", "by_sex"):
        add(_measure_rows(pd.DataFrame(summary[part])))
    csv = pd.read_csv(folder / "measures.csv", dtype={"group": str}, keep_default_na=False,
                      na_values=[""])
    add(_measure_rows(csv))
    add(_measure_rows(pd.read_parquet(folder / "measures.parquet")))
    add(_measure_rows(trend[trend["month"] == folder.name]))
    return {k.rstrip("/"): v for k, v in seen.items()}


# ----------------------------------------------------------------------- what a reader knows


def relations(keys: set[str]) -> list[tuple[list[str], list[str]]]:
    """(totals, parts) pairs: sum(parts) = sum(totals). Only relations whose cells are all
    published somewhere are kept; each is a fact about the tables, not about the code."""
    out: list[tuple[list[str], list[str]]] = []
    status = [f"b12_status/{s}/patients" for s in STATUSES]
    out.append((["cohort/patients/patients"], status))
    for name, flag in LIST_FLAGS.items():
        out.append(([f"worklists/{name}/rows"], [f"worklists/{name}/new",
                                                  f"worklists/{name}/persisting"]))
        out.append(([f"flags/{flag}/patients"], [f"worklists/{name}/rows"]))
    # the same patients counted in two tables (R7, the measures' definitions)
    out.append((["flags/needs_mma/patients"], ["b12_status/indeterminate/patients"]))
    deficient = "b12_status/deficient/patients"
    out.append(([deficient], ["measure/deficient_among_tested/overall/all/numerator"]))
    out.append(([deficient], ["measure/deficient_untreated_90d/overall/all/denominator"]))
    out.append((["measure/deficient_among_tested/overall/all/denominator"],
                [f"b12_status/{s}/patients" for s in STATUSES[:3]]))
    out.append((["flags/on_metformin/patients"],
                ["measure/metformin_testing/overall/all/denominator"]))
    out.append((["measure/metformin_testing/overall/all/denominator"],
                ["measure/metformin_testing/overall/all/numerator",
                 "flags/metformin_monitoring_due/patients"]))
    out.append((["flags/on_b12_treatment/patients"],
                ["measure/retest_overdue/overall/all/denominator"]))
    for name in {k.split("/")[1] for k in keys if k.startswith("accounting/")}:
        parts = [k for k in keys if k.startswith(f"accounting/{name}/")
                 and k != f"accounting/{name}/rows_read/rows"]
        out.append(([f"accounting/{name}/rows_read/rows"], parts))
    # rows with several reasons count once per reason: reasons = rejected + an unknown >= 0
    reasons = [k for k in keys if k.startswith("rejected_by_reason/") and k != OVERLAP]
    rejected = [k for k in keys if k.startswith("accounting/") and "/rows_rejected/" in k]
    out.append(([*rejected, OVERLAP], reasons))
    # measures: each breakdown adds up to the overall row
    measures = pd.Series([k for k in keys if k.startswith("measure/")])
    parts = measures.str.split("/", expand=True)
    for (measure, group_by, column), cells in parts.groupby([1, 2, 4]):
        if group_by == "overall":
            continue
        total = f"measure/{measure}/overall/all/{column}"
        out.append(([total], measures[cells.index].tolist()))
    # deficient patients, split by the same groups in two measures: the same count twice
    for key in measures[measures.str.startswith(DEFICIENT_NUMERATOR[0])]:
        if key.endswith(DEFICIENT_NUMERATOR[1]):
            out.append(([key], [key.replace(DEFICIENT_NUMERATOR[0], DEFICIENT_DENOMINATOR[0])
                                .replace(DEFICIENT_NUMERATOR[1], DEFICIENT_DENOMINATOR[1])]))
    return [(t, p) for t, p in out if all(k in keys for k in (*t, *p))]


#: (prefix, suffix) of the two measures' cells that count deficient patients.
DEFICIENT_NUMERATOR = ("measure/deficient_among_tested/", "/numerator")
DEFICIENT_DENOMINATOR = ("measure/deficient_untreated_90d/", "/denominator")


def reader_interval(value: object, kind: str, floor_zero: bool) -> tuple[float, float]:
    if kind == "primary":
        return 1.0, float(SMALL)
    if kind == "secondary":
        return (0.0 if floor_zero else SMALL + 1.0), math.inf
    if value is None:
        return 0.0, math.inf
    value = int(value)
    if value == 0:
        return 0.0, 0.0
    return max(value - ROUNDING // 2, SMALL + 1.0), value - ROUNDING // 2 + ROUNDING - 1.0


def tighten(bounds: dict[str, list[float]], rels) -> dict[str, list[float]]:
    """Interval propagation over every relation until nothing changes (the test's own)."""
    bounds = {k: list(v) for k, v in bounds.items()}
    for _ in range(200):
        changed = False
        for totals, parts in rels:
            terms = [(k, 1.0) for k in parts] + [(k, -1.0) for k in totals]
            for key, sign in terms:
                low = high = 0.0  # bounds of sum(other signed terms)
                for other, s in terms:
                    if other == key and s == sign:
                        continue
                    lo, hi = bounds[other]
                    low += s * lo if s > 0 else s * hi
                    high += s * hi if s > 0 else s * lo
                new = (-high, -low) if sign > 0 else (low, high)
                lo, hi = bounds[key]
                lo2, hi2 = max(lo, new[0], 0.0), min(hi, new[1])
                if (lo2, hi2) != (lo, hi):
                    bounds[key] = [lo2, hi2]
                    changed = True
        if not changed:
            break
    return bounds


# ----------------------------------------------------------------------------- the tests


def test_disclosure_log_is_owner_only_and_lists_every_withheld_cell(reports: Path) -> None:
    for folder in run_folders(reports):
        log_path = folder / "disclosure_log.csv"
        assert stat.S_IMODE(log_path.stat().st_mode) == 0o600
        manifest = json.loads((folder / "manifest.json").read_text())
        assert "disclosure_log.csv" in manifest["outputs"]
        log = pd.read_csv(log_path, keep_default_na=False)
        assert list(log.columns) == ["table", "row", "column", "cell", "value", "suppression",
                                     "why", "rule"]
        assert set(log["suppression"]) <= {"primary", "secondary"}
        assert (log["why"] != "").all() and (log["rule"] != "").all()
        primary = log[log["suppression"] == "primary"]
        assert primary["value"].between(1, SMALL).all()
        summary = json.loads((folder / "summary.json").read_text())
        assert summary["suppression"] == dict(zip(log["cell"], log["suppression"],
                                                  strict=True))


def test_every_file_publishes_one_value_per_cell(reports: Path) -> None:
    trend = pd.read_csv(reports / "trend.csv", dtype={"group": str, "month": str},
                        keep_default_na=False, na_values=[""])
    for folder in run_folders(reports):
        log = pd.read_csv(folder / "disclosure_log.csv", keep_default_na=False)
        hidden = set(log["cell"])
        for key, values in published_values(folder, trend).items():
            assert len(set(values)) == 1, (folder.name, key, values)
            if key in hidden:
                assert values[0] is None, key
            else:
                value = values[0]
                assert value is not None and (value == 0 or value > SMALL), key
                assert value % ROUNDING == 0, key


def test_secondary_cells_are_marked_as_such_in_the_data_files(reports: Path) -> None:
    trend = pd.read_csv(reports / "trend.csv", dtype={"group": str, "month": str},
                        keep_default_na=False)
    assert set(trend["suppression"]) <= {"", "primary", "secondary"}
    assert (trend["suppressed"] == trend["suppression"].ne("")).all()
    for folder in run_folders(reports):
        measures = pd.read_csv(folder / "measures.csv", keep_default_na=False,
                               dtype={"group": str})
        assert list(measures.columns)[-2:] == ["suppressed", "suppression"]
        assert (measures["suppressed"] == measures["suppression"].ne("")).all()
        log = pd.read_csv(folder / "disclosure_log.csv", keep_default_na=False)
        by_cell = dict(zip(log["cell"], log["suppression"], strict=True))
        for row in measures.to_dict("records"):
            stem = f"measure/{row['measure']}/{row['group_by']}/{row['group']}/"
            kinds = {by_cell.get(stem + c, "") for c in ("numerator", "denominator")}
            expected = "primary" if "primary" in kinds else (
                "secondary" if "secondary" in kinds else "")
            assert row["suppression"] == expected, stem


def test_breakdowns_by_age_band_and_sex_in_every_file(reports: Path) -> None:
    trend = pd.read_csv(reports / "trend.csv", dtype={"group": str}, keep_default_na=False)
    bands = ["<16", "16–39", "40–64", "65–79", "80+"]
    for folder in run_folders(reports):
        measures = pd.read_csv(folder / "measures.csv", keep_default_na=False,
                               dtype={"group": str})
        for measure, rows in measures.groupby("measure"):
            groups = rows.groupby("group_by")["group"].apply(list).to_dict()
            assert groups["age_band"][:5] == bands, measure
            assert set(groups["sex"]) <= {"female", "male", "other", "unknown"}
            assert {"female", "male"} <= set(groups["sex"])
        summary = json.loads((folder / "summary.json").read_text())
        assert {r["group"] for r in summary["by_age_band"]} >= set(bands)
    assert {"age_band", "sex"} <= set(trend["group_by"])


def test_no_withheld_count_can_be_recovered_from_the_shareable_files(reports: Path) -> None:
    trend = pd.read_csv(reports / "trend.csv", dtype={"group": str, "month": str},
                        keep_default_na=False, na_values=[""])
    checked = 0
    for folder in run_folders(reports):
        values = {k: v[0] for k, v in published_values(folder, trend).items()}
        values[OVERLAP] = None
        log = pd.read_csv(folder / "disclosure_log.csv", keep_default_na=False)
        kinds = dict(zip(log["cell"], log["suppression"], strict=True))
        exact = dict(zip(log["cell"], log["value"], strict=True))
        # a numerator withheld with its denominator may be anything from 0, and so may the
        # same count where another table shows it
        floor_zero = {k for k in kinds if k.endswith("/numerator")
                      and kinds.get(k[: -len("numerator")] + "denominator")}
        floor_zero |= set(log.loc[log["why"].str.startswith("the same count as"), "cell"])
        rels = relations(set(values))
        assert len(rels) > 30
        own = {k: list(reader_interval(values[k], kinds.get(k, ""), k in floor_zero))
               for k in values}
        known = tighten(own, rels)
        markers_only = tighten({k: (own[k] if k in kinds else [0.0, math.inf])
                                for k in values}, rels)
        for key, kind in kinds.items():
            lo, hi = known[key]
            assert lo <= exact[key] <= hi, (folder.name, key)  # the relations are true
            if exact[key] == 0 or (lo, hi) == tuple(markers_only[key]):
                continue
            if kind == "primary":
                assert lo <= 1 and hi >= SMALL, (folder.name, key, lo, hi)
            else:
                assert hi - lo >= SMALL - 1, (folder.name, key, lo, hi)
            checked += 1
    assert checked > 0


def _report_rows(page: str) -> dict[str, list[str]]:
    """Table rows of report.html as {first cell's text: the other cells' texts}."""
    rows = {}
    for row in re.findall(r"<tr>(.*?)</tr>", page, flags=re.S):
        cells = [re.sub(r"<[^>]+>", "", c).strip()
                 for c in re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", row, flags=re.S)]
        if cells:
            rows.setdefault(cells[0], cells[1:])
    return rows


def test_report_shows_the_same_decision(reports: Path) -> None:
    labels = {"urgent": "Urgent review", "mma": "MMA add-on"}
    for folder in run_folders(reports):
        page = (folder / "report.html").read_text(encoding="utf-8")
        summary = json.loads((folder / "summary.json").read_text())
        rows = _report_rows(page.split('id="worklists"', 1)[1].split("</section>", 1)[0])
        for name, label in labels.items():
            counts = summary["worklists"][name]
            texts = rows[label][:4]
            for column, text in zip(("rows", "new", "persisting", "resolved"), texts,
                                    strict=True):
                kind = summary["suppression"].get(f"worklists/{name}/{column}")
                expected = {"primary": f"≤{SMALL}", "secondary": "[c]"}.get(
                    kind, f"{counts[column]:,}" if counts[column] is not None else "")
                assert text == expected, (folder.name, name, column)
        assert "rounding is why" in page or "may not" in page


def test_a_count_in_two_measures_breakdowns_is_one_decision(reports: Path) -> None:
    """Deficient patients under 16 (or of one sex, or one practice) are the numerator of
    "deficient among tested" and the denominator of "deficient and untreated": withheld in
    both or published as the same value in both, in every file."""
    trend = pd.read_csv(reports / "trend.csv", dtype={"group": str}, keep_default_na=False,
                        na_values=[""])
    compared = 0
    for folder in run_folders(reports):
        values = published_values(folder, trend)
        for key, seen in values.items():
            if (key.startswith(DEFICIENT_NUMERATOR[0]) and key.endswith(DEFICIENT_NUMERATOR[1])
                    and "/overall/" not in key):
                twin = key.replace(DEFICIENT_NUMERATOR[0], DEFICIENT_DENOMINATOR[0]).replace(
                    DEFICIENT_NUMERATOR[1], DEFICIENT_DENOMINATOR[1])
                assert set(seen) | set(values[twin]) == set(seen), (key, seen, values[twin])
                compared += 1
    assert compared > 20


def test_the_distribution_plot_counts_results_under_the_same_decision(tmp_path: Path) -> None:
    """100 accepted B12 results and 3 rejected rows: the rejected count is withheld, and the
    accepted count with it (read - accepted would give it away); the distribution plot
    draws exactly the accepted results, so its caption withholds the same count."""
    rows = ["patient_id,collected_at,test_code,result,unit"]
    rows += [f"P{i:03d},2026-10-01,B12,{200 + i},ng/L" for i in range(100)]
    rows += [f"Q{i:03d},2026-13-01,B12,250,ng/L" for i in range(3)]
    (tmp_path / "labs.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    result = invoke("run", tmp_path / "labs.csv", "--out", tmp_path / "out", "--quiet",
                    "--max-reject-rate", "1")
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "out" / "summary.json").read_text(encoding="utf-8"))
    assert summary["accounting"]["labs"]["rows_rejected"] is None
    assert summary["accounting"]["labs"]["rows_accepted"] is None
    page = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    figures = dict(re.findall(r'<figure id="distribution-([a-z_0-9]+)">(.*?)</figure>', page,
                              flags=re.S))
    assert "[c] results: not drawn" in figures["b12_total"]
    assert "<svg" not in figures["b12_total"] and "100 results" not in page


def test_a_withheld_zero_is_withheld_where_it_is_the_same_count(tmp_path: Path) -> None:
    """Five patients tested, none deficient: "deficient among tested" withholds its
    numerator with its small denominator, so the status table must not show the same
    count, 0 deficient, either (nor the other measure's denominator of deficient patients)."""
    rows = ["patient_id,collected_at,test_code,result,unit"]
    rows += [f"T{i:03d},2026-10-01,B12,400,ng/L" for i in range(5)]
    rows += [f"N{i:03d},2026-10-01,NA,140,mmol/L" for i in range(40)]
    (tmp_path / "labs.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    result = invoke("run", tmp_path / "labs.csv", "--out", tmp_path / "out", "--quiet")
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "out" / "summary.json").read_text(encoding="utf-8"))
    measures = {m["measure"]: m for m in summary["measures"]}
    assert measures["deficient_among_tested"]["denominator"] is None  # 5 tested: withheld
    assert measures["deficient_among_tested"]["numerator"] is None
    assert summary["cohort"]["by_status"]["deficient"] is None
    assert measures["deficient_untreated_90d"]["denominator"] is None
    log = pd.read_csv(tmp_path / "out" / "disclosure_log.csv", keep_default_na=False)
    why = dict(zip(log["cell"], log["why"], strict=True))
    assert why["b12_status/deficient/patients"].startswith("the same count as a withheld cell")


def test_a_plot_whose_count_is_withheld_is_not_drawn(tmp_path: Path) -> None:
    """Ten MMA results beside three active B12 results (withheld): the MMA plot's count is
    withheld to protect them, so its bars, which would add up to it, are not drawn."""
    rows = ["patient_id,collected_at,test_code,result,unit"]
    rows += [f"P{i:03d},2026-10-01,B12,{200 + i % 300},ng/L" for i in range(500)]
    rows += [f"A{i:03d},2026-10-01,HOLOTC,50,pmol/L" for i in range(3)]
    rows += [f"M{i:03d},2026-10-01,MMA,0.30,umol/L" for i in range(10)]
    (tmp_path / "labs.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    result = invoke("run", tmp_path / "labs.csv", "--out", tmp_path / "out", "--quiet")
    assert result.exit_code == 0, result.output
    log = pd.read_csv(tmp_path / "out" / "disclosure_log.csv", keep_default_na=False)
    kinds = dict(zip(log["cell"], log["suppression"], strict=True))
    assert kinds.get("distributions/mma/results") == "secondary"
    page = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    figures = dict(re.findall(r'<figure id="distribution-([a-z_0-9]+)">(.*?)</figure>', page,
                              flags=re.S))
    assert "<svg" not in figures["mma"] and "[c] results: not drawn" in figures["mma"]
    assert "<svg" not in figures["b12_active"] and "too few to draw" in figures["b12_active"]
    assert "<svg" in figures["b12_total"]


def test_the_log_says_a_withheld_zero_follows_another_cell(reports: Path) -> None:
    """A 0 is never withheld to protect a relation (hiding it hides nothing): the log names
    the denominator or the twin it follows, which is what a reviewer signs off."""
    zeros = 0
    for folder in run_folders(reports):
        log = pd.read_csv(folder / "disclosure_log.csv", keep_default_na=False)
        for cell, reason in zip(log.loc[log["value"] == 0, "cell"],
                                log.loc[log["value"] == 0, "why"], strict=True):
            assert reason.startswith(("numerator of a withheld denominator",
                                      "the same count as a withheld cell")), (cell, reason)
            zeros += 1
    assert zeros > 0
