"""Worklists as a lab manager opens and prints them: one row per patient per list, sorted by
practice, urgent first then oldest result first; each index result as the lab reported it;
the MMA list names the stored sample and says whether an add-on is still possible; CSVs that
Excel opens as UTF-8; the same rows in worklists.xlsx, laid out to print; and no cell that a
spreadsheet would run as a formula (OWASP CSV injection)."""

from __future__ import annotations

import csv
from datetime import datetime
from pathlib import Path

import openpyxl
import pandas as pd
import pytest

try:  # tests/ on sys.path (pytest's default rootdir-less import mode)
    from spec.helpers import read_patients, rows_of, run_cli
except ImportError:  # tests imported as a package
    from tests.spec.helpers import read_patients, rows_of, run_cli
from pipeline.outputs.worklists import (
    MMA_ADD_ON,
    MMA_NEW_SAMPLE,
    MMA_SPANS_LIMIT,
    URGENT_ACTIONS,
)
from tests.conftest import invoke

LISTS = ("urgent", "mma", "supplementation", "metformin_monitoring", "retest")
FLAGS = {"urgent": "urgent_review", "mma": "needs_mma", "supplementation":
         "needs_supplementation", "metformin_monitoring": "metformin_monitoring_due",
         "retest": "retest_due"}
HYPERLINK = '=HYPERLINK("http://example.invalid","x")'
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")

LABS = f"""
    patient_id          | collected_at | test_code | result | unit | practice_id
    WL_urgent_old       | 2026-06-01   | B12       | 150    | ng/L | B82002   # untreated > 90 days
    WL_urgent_neuro     | 2026-10-20   | B12       | 150    | ng/L | B82002
    WL_def_recent       | 2026-10-10   | B12       | 150    | ng/L | B82002
    WL_def_older        | 2026-09-01   | B12       | 160    | ng/L | B82002
    WL_two_results      | 2026-07-01   | B12       | 170    | ng/L | B82002
    WL_two_results      | 2026-10-12   | B12       | 155    | ng/L | B82002
    WL_mma_newer        | 2026-09-15   | B12       | 250    | ng/L | A81001
    WL_mma_older        | 2026-08-15   | B12       | 300    | ng/L | A81001
    WL_child            | 2026-10-01   | B12       | 150    | ng/L | A81001
    {HYPERLINK}         | 2026-10-05   | B12       | 150    | ng/L | A81001
    +12345              | 2026-10-06   | B12       | 150    | ng/L | A81001
    @SUM(1+1)           | 2026-10-07   | B12       | 150    | ng/L | A81001
    -2                  | 2026-10-08   | B12       | 150    | ng/L | A81001
    WL_metformin_old    | 2025-03-01   | B12       | 400    | ng/L | A81001
    WL_mma_spans        | 2026-09-20   | B12       | 250    | ng/L | B82002
    WL_mma_spans        | 2026-09-25   | MMA       | <0.6   | umol/L | B82002  # spans 0.45
"""
#: Results as labs report them: converted from pmol/L, with a trailing zero, censored.
LABS_REPORTED = """
    patient_id    | collected_at | test_code | result | unit   | practice_id | specimen_id | site_id
    WL_converted  | 2026-10-28   | B12       | 151    | pmol/L | A81001      | S-CONV      | RTH01
    WL_decimal    | 2026-10-10   | B12       | 231.0  | ng/L   | A81001      | S-DEC       | RTH02
    WL_censored   | 2026-10-09   | B12       | <150   | ng/L   | A81001      | S-CENS      | RTH01
"""
PATIENTS = """
    patient_id          | practice_id | age_years | neurological_symptoms
    WL_urgent_neuro     | B82002      | 60        | yes
    WL_child            | A81001      | 10        |
    WL_retest           | A81001      | 50        |
    WL_metformin        | A81001      | 70        |
    WL_metformin_old    | A81001      | 70        |
"""
MEDICATIONS = """
    patient_id       | medication                 | start_date | dose_mg_per_day
    WL_retest        | Cyanocobalamin 1mg tablets | 2026-05-01 |
    WL_metformin     | Metformin 500mg tablets    | 2024-01-01 | 1000
    WL_metformin     | Metformin 500mg tablets    | 2025-01-01 | 1000      # two scripts, one row
    WL_metformin_old | Metformin 500mg tablets    | 2020-01-01 | 2000
"""
#: Expected order of two lists: practice A81001 before B82002; urgent first; oldest first.
SUPPLEMENTATION_ORDER = [
    "WL_child", "'" + HYPERLINK, "'+12345", "'@SUM(1+1)", "'-2", "WL_censored",
    "WL_urgent_old", "WL_urgent_neuro", "WL_def_older", "WL_def_recent", "WL_two_results",
]
METFORMIN_ORDER = ["WL_metformin_old", "WL_metformin"]  # last test 2025-03-01, then never


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return run_cli(tmp_path_factory.mktemp("worklists"), rows_of(LABS, LABS_REPORTED),
                   rows_of(PATIENTS), rows_of(MEDICATIONS))


def read_csv_cells(path: Path) -> list[list[str]]:
    with path.open(encoding="utf-8-sig", newline="") as fh:
        return list(csv.reader(fh))


def read_list(run: Path, name: str) -> pd.DataFrame:
    return pd.read_csv(run / "worklists" / f"{name}.csv", dtype="str", keep_default_na=False,
                       encoding="utf-8-sig")


@pytest.mark.parametrize("name", LISTS)
def test_one_row_per_patient_per_list(run: Path, name: str) -> None:
    rows = read_list(run, name)
    patients = read_patients(run)
    assert not rows["patient_id"].duplicated().any()
    assert len(rows) == int(patients[FLAGS[name]].sum()) > 0
    assert (rows["suggested_action"] != "").all()


@pytest.mark.parametrize("name", LISTS)
def test_sorted_by_practice_urgent_first_then_oldest_result(run: Path, name: str) -> None:
    rows = read_list(run, name)
    result = rows["index_date"].where(rows["index_date"] != "", rows["last_b12_test_date"])
    keys = list(zip(rows["practice_id"], rows["urgent_review"].str.lower() != "true",
                    result.replace("", "9999-12-31"), rows["patient_id"], strict=True))
    assert keys == sorted(keys)


def test_expected_order_of_supplementation_and_metformin_lists(run: Path) -> None:
    assert read_list(run, "supplementation")["patient_id"].tolist() == SUPPLEMENTATION_ORDER
    assert read_list(run, "urgent")["patient_id"].tolist() == ["WL_urgent_old",
                                                               "WL_urgent_neuro"]
    assert read_list(run, "mma")["patient_id"].tolist() == ["WL_mma_older", "WL_mma_newer",
                                                            "WL_decimal", "WL_converted",
                                                            "WL_mma_spans"]
    assert read_list(run, "metformin_monitoring")["patient_id"].tolist() == METFORMIN_ORDER
    assert read_list(run, "retest")["patient_id"].tolist() == ["WL_retest"]


def test_xlsx_sheets_match_csv_rows(run: Path) -> None:
    book = openpyxl.load_workbook(run / "worklists.xlsx")
    try:
        for name in LISTS:
            sheet = book[name]
            values = [list(r) for r in sheet.iter_rows(values_only=True)]
            csv_cells = read_csv_cells(run / "worklists" / f"{name}.csv")
            assert len(values) == len(csv_cells), name
            assert [str(v) for v in values[0]] == csv_cells[0]
            column = csv_cells[0].index("patient_id")
            assert [r[column] for r in values[1:]] == [r[column] for r in csv_cells[1:]]
    finally:
        book.close()


def test_no_csv_cell_starts_like_a_formula(run: Path) -> None:
    files = sorted((run / "worklists").glob("*.csv"))
    assert {p.stem for p in files} >= set(LISTS)
    for path in files:
        for row in read_csv_cells(path):
            risky = [cell for cell in row if cell.startswith(FORMULA_START)]
            assert not risky, (path.name, risky)
    ids = read_list(run, "supplementation")["patient_id"].tolist()
    assert {"'" + HYPERLINK, "'+12345", "'@SUM(1+1)", "'-2"} <= set(ids)


def test_no_xlsx_cell_starts_like_a_formula(run: Path) -> None:
    book = openpyxl.load_workbook(run / "worklists.xlsx")
    try:
        seen = set()
        for sheet in book.worksheets:
            for row in sheet.iter_rows():
                for cell in row:
                    assert cell.data_type != "f", (sheet.title, cell.coordinate)
                    if isinstance(cell.value, str):
                        assert not cell.value.startswith(FORMULA_START), (sheet.title,
                                                                          cell.value)
                        seen.add(cell.value)
        assert {"'" + HYPERLINK, "'+12345"} <= seen
    finally:
        book.close()


def test_paediatric_rows_say_thresholds_are_for_over_16s(run: Path) -> None:
    rows = read_list(run, "supplementation").set_index("patient_id")
    assert "thresholds are for over-16s" in rows.loc["WL_child", "note"]
    assert (rows.drop(index="WL_child")["note"] == "").all()
    assert "over-16s" in rows.loc["WL_child", "suggested_regimen"]


#: Results without a unit, whose test code the format reads in pmol/L (LOINC 14685-2).
LABS_NO_UNIT = """
    patient_id    | collected_at | test_code | result | unit   | practice_id
    WL_no_unit    | 2026-10-20   | 14685-2   | 157    |        | A81001
    WL_no_unit_lt | 2026-10-21   | 14685-2   | <111   |        | A81001
    WL_unit_given | 2026-10-22   | 14685-2   | 160    | pmol/L | A81001
"""


def test_index_result_without_a_unit_shows_the_unit_it_was_read_in(tmp_path: Path) -> None:
    """157 read as pmol/L (212.7 ng/L, indeterminate) must not be shown as "157 ng/L",
    which a reader would take for deficient."""
    out = run_cli(tmp_path, rows_of(LABS_NO_UNIT))
    mma = read_list(out, "mma").set_index("patient_id")
    assert mma.loc["WL_no_unit", "index_result"] == "157 pmol/L"
    assert mma.loc["WL_no_unit", "index_value"] == "212.7"  # 157 x 1.355
    assert mma.loc["WL_unit_given", "index_result"] == "160 pmol/L"
    supplementation = read_list(out, "supplementation").set_index("patient_id")
    assert supplementation.loc["WL_no_unit_lt", "index_result"] == "<111 pmol/L"
    book = openpyxl.load_workbook(out / "worklists.xlsx", read_only=True)
    shown = [[cell.value for cell in row] for row in book["mma"].iter_rows()]
    book.close()  # read-only keeps the file open: unclosed, a later test's GC warns
    header = next(i for i, row in enumerate(shown) if "index_result" in row)
    column = shown[header].index("index_result")
    assert "157 pmol/L" in [row[column] for row in shown[header + 1:]]
    results = pd.read_parquet(out / "results.parquet").set_index("patient_id")
    assert results.loc["WL_no_unit", "source_unit"] == ""  # the file keeps what was given
    assert "unit_read" not in results.columns


def test_index_result_as_reported_and_value_rounded_as_reported(run: Path) -> None:
    mma = read_list(run, "mma").set_index("patient_id")
    assert mma.loc["WL_converted", "index_result"] == "151 pmol/L"
    assert mma.loc["WL_converted", "index_value"] == "204.6"  # 151 x 1.355 = 204.605
    assert mma.loc["WL_converted", "index_unit"] == "ng/L"
    assert mma.loc["WL_decimal", "index_result"] == "231.0 ng/L"
    assert float(mma.loc["WL_decimal", "index_value"]) == 231
    supplementation = read_list(run, "supplementation").set_index("patient_id")
    assert supplementation.loc["WL_censored", "index_result"] == "<150 ng/L"
    assert supplementation.loc["WL_censored", "index_date"] == "2026-10-09"
    assert (supplementation["index_result"] != "").all()
    patients = read_patients(run)  # bands were decided on the unrounded value
    assert patients.loc["WL_converted", "index_value"] == pytest.approx(204.605)


def test_mma_list_names_the_stored_sample_and_whether_it_can_take_an_add_on(run: Path) -> None:
    mma = read_list(run, "mma").set_index("patient_id")
    fresh = mma.loc["WL_converted"]  # collected 3 days before the as-of date
    assert (fresh["specimen_id"], fresh["site_id"], fresh["sample_age_days"]) == (
        "S-CONV", "RTH01", "3")
    assert fresh["mma_addon_possible"] == "true"
    assert fresh["suggested_action"] == MMA_ADD_ON
    old = mma.loc["WL_mma_newer"]  # 46 days: past the add-on window (7 days)
    assert (old["sample_age_days"], old["mma_addon_possible"]) == ("46", "false")
    assert old["suggested_action"] == MMA_NEW_SAMPLE
    assert mma.loc["WL_decimal", "specimen_id"] == "S-DEC"
    # an MMA was done, but its interval spans the limit: no add-on, a quantitative MMA
    assert mma.loc["WL_mma_spans", "suggested_action"] == MMA_SPANS_LIMIT


def test_metformin_list_shows_the_last_b12_test_date(run: Path) -> None:
    rows = read_list(run, "metformin_monitoring").set_index("patient_id")
    assert rows.loc["WL_metformin_old", "last_b12_test_date"] == "2025-03-01"
    assert rows.loc["WL_metformin", "last_b12_test_date"] == ""


def test_worklist_csvs_carry_a_byte_order_mark_for_excel(run: Path) -> None:
    for path in sorted((run / "worklists").glob("*.csv")):
        assert path.read_bytes()[:3] == b"\xef\xbb\xbf", path.name
    for plain in ("measures.csv", "rejected.csv"):  # data files stay plain
        assert not (run / plain).read_bytes().startswith(b"\xef\xbb\xbf"), plain


def test_xlsx_prints_as_a_worklist(run: Path) -> None:
    book = openpyxl.load_workbook(run / "worklists.xlsx")
    dates = []
    try:
        for name in LISTS:
            ws = book[name]
            header = [c.value for c in ws[1]]
            last = openpyxl.utils.get_column_letter(len(header))
            assert ws.auto_filter.ref == f"A1:{last}{ws.max_row}"
            assert ws.print_title_rows == "$1:$1"
            assert ws.page_setup.orientation == "landscape"
            assert ws.page_setup.fitToWidth == 1 and ws.sheet_properties.pageSetUpPr.fitToPage
            assert name in ws.oddHeader.left.text and "2026-10-31" in ws.oddHeader.center.text
            for i, column in enumerate(header, start=1):  # every column as wide as needed
                width = ws.column_dimensions[openpyxl.utils.get_column_letter(i)].width
                cells = [c.value for c in ws[openpyxl.utils.get_column_letter(i)][1:]]
                shown = [f"{v:%Y-%m-%d}" if isinstance(v, datetime) else str(v)
                         for v in cells if v is not None]  # dates show as yyyy-mm-dd
                longest = max(map(len, shown), default=0)
                assert width >= min(longest, 30), (name, column)
                if longest > 30:  # long text wraps within the column
                    assert all(c.alignment.wrap_text for c in
                               ws[openpyxl.utils.get_column_letter(i)][1:]
                               if c.value is not None), (name, column)
            rows = list(ws.iter_rows(min_row=2, values_only=True))
            flags = [r[header.index("urgent_review")] for r in rows]
            assert flags and all(type(v) is bool for v in flags)
            dates += [r[header.index(c)] for r in rows for c in ("index_date",
                                                                 "last_b12_test_date")]
        assert dates and all(v is None or type(v) is datetime for v in dates)
        assert any(isinstance(v, datetime) for v in dates)
        mma = book["mma"]
        header = [c.value for c in mma[1]]
        assert {"specimen_id", "site_id", "sample_age_days", "mma_addon_possible"} <= set(header)
        assert any(len(str(c.value or "")) > 30 for c in
                   mma[openpyxl.utils.get_column_letter(header.index("reasons") + 1)])
    finally:
        book.close()


def test_not_responding_action_says_restart_when_the_course_has_lapsed(tmp_path: Path) -> None:
    """Deficient on the check test: review the route on the course, restart it once it has
    lapsed (the reasons say both that it was taken on treatment and that none is active)."""
    labs = tmp_path / "labs.csv"
    meds = tmp_path / "meds.csv"
    labs.write_text("patient_id,collected_at,test_code,result,unit\n"
                    "ON1,2026-05-01,B12,150,ng/L\nLAPSED1,2026-05-01,B12,150,ng/L\n",
                    encoding="utf-8")
    meds.write_text("patient_id,medication,start_date,end_date,dose_mg_per_day\n"
                    "ON1,Cyanocobalamin 1mg tablets,2026-01-01,,\n"
                    "LAPSED1,Cyanocobalamin 1mg tablets,2026-01-01,2026-06-30,\n",
                    encoding="utf-8")
    out = tmp_path / "out"
    result = invoke("run", labs, "--medications", meds, "--as-of", "2026-08-15", "--out", out,
                    "--quiet")
    assert result.exit_code == 0, result.output
    urgent = read_list(out, "urgent").set_index("patient_id")
    assert urgent.loc["ON1", "suggested_action"] == URGENT_ACTIONS[1]
    assert urgent.loc["LAPSED1", "suggested_action"] == (
        "Urgent review: deficient on the check test of a B12 course that has since lapsed; "
        "restart treatment, reviewing route, adherence and absorption")
    assert urgent.loc["LAPSED1", "reasons"].endswith(
        "no B12 prescription active, not responding: deficient on the check test taken on "
        "B12 treatment)")
