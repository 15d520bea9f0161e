"""trend: measures from several run folders, p-chart limits, rules changes marked."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.errors import UserError
from pipeline.outputs.disclosure import protect
from pipeline.outputs.measures import measure_cells, publish_measures
from pipeline.outputs.trend import TREND_COLUMNS, build_trend, find_runs, p_chart_limits
from tests.conftest import invoke

NICE = {"name": "nice-ng239", "sha256": "a" * 64}
BSH = {"name": "bsh-2014", "sha256": "b" * 64}


def measures_table(month: str, cells: dict[str, dict[str, tuple[int, int]]]) -> pd.DataFrame:
    """{measure: {group: (numerator, denominator)}} -> a published measures table."""
    rows = []
    for measure, groups in cells.items():
        for group, (num, den) in groups.items():
            rows.append(
                {
                    "measure": measure,
                    "month": month,
                    "group_by": "overall" if group == "all" else "practice",
                    "group": group,
                    "numerator": num,
                    "denominator": den,
                }
            )
    table = pd.DataFrame(rows).assign(ratio=np.nan)
    for column in ("measure", "month", "group_by", "group"):
        table[column] = table[column].astype("string")
    values, relations, ties = measure_cells(table)
    return publish_measures(table, protect(values, relations, ties=ties))


def write_run(folder: Path, as_of: str, rules: dict, cells) -> Path:
    folder.mkdir(parents=True)
    measures_table(as_of[:7], cells).to_parquet(folder / "measures.parquet", index=False)
    manifest = {"as_of": as_of, "rules": rules, "version": "0.1.0"}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def cells(num: int, den: int, small: tuple[int, int] = (3, 20)):
    return {
        "deficient_among_tested": {
            "all": (num, den),
            "=EVIL": (num - small[0], den - small[1]),
            "P2": small,
        },
        "retest_overdue": {"all": (2, 40), "=EVIL": (1, 30), "P2": (1, 10)},
    }


@pytest.fixture
def reports(tmp_path) -> Path:
    write_run(tmp_path / "2026-01", "2026-01-31", BSH, cells(100, 1000))
    write_run(tmp_path / "2026-02", "2026-02-28", NICE, cells(110, 1000))
    write_run(tmp_path / "2026-03", "2026-03-31", NICE, cells(120, 1000))
    write_run(tmp_path / "2026-04", "2026-04-30", NICE, cells(300, 1000))
    (tmp_path / "2026-05-tmp").mkdir()  # an interrupted run: no manifest
    (tmp_path / "README.txt").write_text("not a run")
    return tmp_path


def read_trend(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype={"group": "string", "month": "string",
                                    "suppression": "string"},
                       keep_default_na=False, na_values=[""])


def test_trend_files(reports):
    html_path, csv_path = build_trend(reports)
    assert (html_path, csv_path) == (reports / "trend.html", reports / "trend.csv")
    assert build_trend(reports).csv == csv_path
    trend = read_trend(csv_path)
    assert tuple(trend.columns) == TREND_COLUMNS
    overall = trend[
        (trend["group_by"] == "overall") & (trend["measure"] == "deficient_among_tested")
    ]
    assert overall["month"].tolist() == ["2026-01", "2026-02", "2026-03", "2026-04"]
    assert overall["rules_differ_from_latest"].tolist() == [True, False, False, False]
    # the NICE stretch's own centre line: (110 + 120 + 300) / 3000; the BSH month has none
    assert overall["centre"].isna().tolist() == [True, False, False, False]
    assert overall["centre"].dropna().unique().tolist() == pytest.approx([530 / 3000])
    # the BSH month is neither in the limits nor flagged against them
    assert overall["special_cause"].isna().tolist() == [True, False, False, False]
    assert overall["special_cause"].dropna().astype(bool).tolist() == [True, True, True]
    # suppressed cells stay suppressed, with why: empty counts, no limits
    small = trend[(trend["group"] == "P2") & (trend["measure"] == "deficient_among_tested")]
    assert small["suppressed"].all() and small["numerator"].isna().all()
    assert set(small["suppression"]) == {"primary"}
    retest = trend[(trend["measure"] == "retest_overdue") & (trend["group_by"] == "overall")]
    assert retest["numerator"].isna().all() and retest["centre"].isna().all()
    assert retest["denominator"].tolist() == [40, 40, 40, 40]
    # practice ids that look like formulas are neutralised for spreadsheets
    assert "=EVIL" not in set(trend["group"]) and "'=EVIL" in set(trend["group"])


def test_each_profile_gets_its_own_centre_line_once_it_has_three_months(tmp_path):
    months = [("2026-01-31", BSH, 100), ("2026-02-28", BSH, 100), ("2026-03-31", BSH, 100),
              ("2026-04-30", NICE, 300), ("2026-05-31", NICE, 300), ("2026-06-30", NICE, 300),
              ("2026-07-31", NICE, 310)]
    for as_of, rules, num in months:
        write_run(tmp_path / as_of[:7], as_of, rules, cells(num, 1000))
    trend = read_trend(build_trend(tmp_path).csv)
    overall = trend[(trend["group_by"] == "overall")
                    & (trend["measure"] == "deficient_among_tested")]
    assert overall["centre"].tolist() == pytest.approx([0.1] * 3 + [1210 / 4000] * 4)
    # against one pooled line the BSH months would all be special causes: not here
    assert not overall["special_cause"].astype(bool).any()


def test_a_profile_with_fewer_than_three_months_gets_no_line(tmp_path):
    for as_of, rules in (("2026-01-31", BSH), ("2026-02-28", NICE), ("2026-03-31", NICE)):
        write_run(tmp_path / as_of[:7], as_of, rules, cells(100, 1000))
    trend = read_trend(build_trend(tmp_path).csv)
    assert trend["centre"].isna().all() and trend["special_cause"].isna().all()


def test_breakdowns_are_in_the_trend(tmp_path):
    for as_of in ("2026-01-31", "2026-02-28", "2026-03-31"):
        folder = write_run(tmp_path / as_of[:7], as_of, NICE, cells(100, 1000))
        table = pd.read_parquet(folder / "measures.parquet")
        extra = table[table["group_by"] == "practice"].assign(group_by="sex")
        extra["group"] = extra["group"].map({"=EVIL": "female", "P2": "male"})
        pd.concat([table, extra]).to_parquet(folder / "measures.parquet", index=False)
    html_path, csv_path = build_trend(tmp_path)
    trend = read_trend(csv_path)
    assert set(trend.loc[trend["group_by"] == "sex", "group"]) == {"female", "male"}
    page = " ".join(html_path.read_text(encoding="utf-8").split())
    assert "<caption>Sex</caption>" in page
    assert "<td>male</td><td class=\"num\">≤7</td>" in page


def test_trend_html_is_self_contained(reports):
    html_path = build_trend(reports).html
    page = html_path.read_text(encoding="utf-8")
    assert "http://" not in page and "https://" not in page
    assert not re.search(r"(?i)<(script|link|iframe|img)\b", page)
    assert page.count("<svg") == 1  # retest_overdue has no publishable month
    assert "differs from" in page and "No month has a publishable rate." in page
    assert "Deficient among tested" in page and "Retests overdue" in page
    assert "Outside the limits: 2026-02, 2026-03, 2026-04" in " ".join(page.split())


def test_two_folders_for_one_month_stop_the_trend(reports):
    write_run(reports / "2026-04-rerun", "2026-04-30", NICE, cells(200, 1000))
    write_run(reports / "2026-04-early", "2026-04-15", NICE, cells(50, 1000))
    result = invoke("trend", reports)
    assert result.exit_code == 1
    message = " ".join(result.output.split())
    for name in ("2026-04-rerun", "2026-04-early", "2026-04 "):
        assert name in message + " ", name
    assert "--month-folders latest" in message
    assert not (reports / "trend.csv").exists()


def test_month_folders_latest_picks_the_later_as_of(reports):
    write_run(reports / "2026-04-rerun", "2026-04-30", NICE, cells(200, 1000))
    write_run(reports / "2026-04-early", "2026-04-15", NICE, cells(50, 1000))
    runs = find_runs(reports, "latest")
    assert [r.path.name for r in runs] == ["2026-01", "2026-02", "2026-03", "2026-04-rerun"]
    result = invoke("trend", reports, "--month-folders", "latest")
    assert result.exit_code == 0, result.output
    trend = read_trend(reports / "trend.csv")
    assert set(trend.loc[trend["month"] == "2026-04", "run"]) == {"2026-04-rerun"}
    assert invoke("trend", reports, "--month-folders", "first").exit_code == 2


def test_run_folder_from_before_the_suppression_column(reports):
    path = reports / "2026-01" / "measures.parquet"
    pd.read_parquet(path).drop(columns="suppression").to_parquet(path, index=False)
    trend = read_trend(build_trend(reports).csv)
    old = trend[trend["month"] == "2026-01"]
    assert set(old.loc[old["suppressed"], "suppression"]) == {"primary"}


def test_single_run(tmp_path):
    write_run(tmp_path / "only", "2026-03-31", NICE, cells(300, 1000))
    html_path, csv_path = build_trend(tmp_path)
    assert html_path.is_file() and len(pd.read_csv(csv_path)) == 6
    assert pd.read_csv(csv_path)["centre"].isna().all()  # one month: no centre line


@pytest.mark.parametrize("layout", ["empty", "missing", "files only"])
def test_no_run_folders_is_a_user_error(tmp_path, layout):
    target = tmp_path / "reports"
    if layout != "missing":
        target.mkdir()
    if layout == "files only":
        (target / "measures.parquet").write_text("x")
        (target / "2026-01").mkdir()
        (target / "2026-01" / "manifest.json").write_text("{}")
    with pytest.raises(UserError) as excinfo:
        build_trend(target)
    assert str(target) in str(excinfo.value) and excinfo.value.exit_code == 1


@pytest.mark.parametrize(
    ("manifest", "measures", "message"),
    [
        ("{broken", None, "manifest"),
        (None, pd.DataFrame({"measure": ["x"]}), "lacks column"),
    ],
)
def test_bad_run_folder_is_a_user_error(tmp_path, manifest, measures, message):
    folder = write_run(tmp_path / "2026-01", "2026-01-31", NICE, cells(100, 1000))
    if manifest is not None:
        (folder / "manifest.json").write_text(manifest)
    if measures is not None:
        measures.to_parquet(folder / "measures.parquet")
    with pytest.raises(UserError, match=message):
        build_trend(tmp_path)


@pytest.mark.parametrize(
    ("numerators", "denominators", "baseline", "centre", "signals"),
    [
        ([10, 10, 10], [100, 100, 100], [True, True, True], 0.1, [False, False, False]),
        ([10, 10, 40], [100, 100, 100], [True, True, True], 0.2, [False, False, True]),
        ([10, 20, 30], [100, 100, 100], [False, True, True], 0.25, [True, False, False]),
        ([None, 20, 30], [100, 100, 100], [True, True, True], 0.25, [None, False, False]),
        ([0, 0], [0, 0], [True, True], None, [None, None]),
    ],
)
def test_p_chart_limits(numerators, denominators, baseline, centre, signals):
    out = p_chart_limits(
        pd.Series(numerators, dtype="Int64"),
        pd.Series(denominators, dtype="Int64"),
        pd.Series(baseline),
    )
    got_centre = out["centre"].dropna().unique().tolist()
    assert got_centre == ([] if centre is None else [pytest.approx(centre)])
    assert [None if pd.isna(v) else bool(v) for v in out["special_cause"]] == signals
    usable = out["centre"].notna()
    assert (out["lcl"][usable] <= out["centre"][usable]).all()
    assert (out["ucl"][usable] >= out["centre"][usable]).all()
