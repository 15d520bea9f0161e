"""Text that could corrupt or execute never does: worklist ids and texts holding characters
XML 1.0 cannot hold (U+FFFE, U+FFFF, NUL and other control characters) leave worklists.xlsx
valid, and a formula behind leading control characters or spaces is neutralised in both the
CSV and the XLSX worklists (OWASP CSV injection)."""

from __future__ import annotations

import csv
import re
import zipfile
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import openpyxl
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.outputs.tables import neutralise, write_csv
from pipeline.outputs.xlsx import write_workbook

#: What a spreadsheet may run: tab or CR first, or = + - @ behind control characters or
#: spaces (which spreadsheets skip).
RUNNABLE = re.compile("[\t\r]|[\x00-\x20\x7f-\xa0\xad\u1680\u180e\u2000-\u200f\u2028-\u202f"
                      "\u205f-\u206f\u3000\ufeff\ufffe\uffff]*[=+\\-@]")
FORMULAS = ["\x00=1+1", "  =cmd", "\t=x", "\r=x", "\x01@SUM(1)", "\u00a0=HYPERLINK(1)",
            "\ufeff+1", "\u200b-2"]
UNHOLDABLE = ["a\uffffb", "c\ufffed", "e\x07\x1bf", "g\x00h"]
#: Characters XML 1.0 cannot hold, as the workbook shows them.
ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")


def runnable(cell: str) -> bool:
    return RUNNABLE.match(cell) is not None


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One run whose patient ids and practices are hostile text (given as Parquet, where
    text is taken as it is)."""
    folder = tmp_path_factory.mktemp("hostile")
    ids = [*FORMULAS, *UNHOLDABLE, "plain"]
    practices = ["\x01@SUM(1)", "P\uffff1", "  =cmd", "P1"]
    labs = pd.DataFrame({
        "patient_id": ids, "collected_at": "2026-10-20", "test_code": "B12",
        "result": "150", "unit": "ng/L",
        "practice_id": [practices[i % len(practices)] for i in range(len(ids))],
    })
    labs.to_parquet(folder / "labs.parquet")
    result = CliRunner().invoke(app, ["run", str(folder / "labs.parquet"), "--as-of",
                                      "2026-10-31", "--out", str(folder / "out"), "--quiet",
                                      "--max-reject-rate", "1"])
    assert result.exit_code == 0, result.output
    return folder / "out"


def test_workbook_is_valid_xml_whatever_the_ids_hold(run: Path) -> None:
    with zipfile.ZipFile(run / "worklists.xlsx") as zf:
        for name in zf.namelist():
            ElementTree.fromstring(zf.read(name))  # raises on what Excel would refuse
    book = openpyxl.load_workbook(run / "worklists.xlsx")
    try:
        ids = [c.value for c in book["supplementation"]["B"][1:]]
    finally:
        book.close()
    assert {"a\ufffdb", "c\ufffdd", "e\ufffd\ufffdf", "g\ufffdh", "plain"} <= set(ids)


def test_no_worklist_cell_can_run_as_a_formula(run: Path) -> None:
    seen = set()
    for path in sorted((run / "worklists").glob("*.csv")):
        with path.open(encoding="utf-8-sig", newline="") as fh:
            for row in csv.reader(fh):
                assert not [c for c in row if runnable(c)], path.name
                seen.update(row)
    assert {"'\x00=1+1", "'\x01@SUM(1)", "'\ufeff+1", "'\u200b-2"} <= seen
    book = openpyxl.load_workbook(run / "worklists.xlsx")
    try:
        cells = [c for ws in book.worksheets for row in ws.iter_rows() for c in row]
    finally:
        book.close()
    assert all(c.data_type != "f" for c in cells)
    text = {c.value for c in cells if isinstance(c.value, str)}
    assert not [t for t in text if runnable(t)]
    assert {"'\ufffd=1+1", "'\ufffd@SUM(1)"} <= text  # NUL, SOH shown as U+FFFD


@pytest.mark.parametrize("cell", FORMULAS)
def test_each_formula_is_neutralised_in_csv_and_xlsx(tmp_path: Path, cell: str) -> None:
    frame = pd.DataFrame({"id": pd.array([cell, "ok"], dtype="str"), "n": [1, 2]})
    write_csv(frame, tmp_path / "w.csv", bom=True)
    with (tmp_path / "w.csv").open(encoding="utf-8-sig", newline="") as fh:
        assert next(iter(list(csv.reader(fh))[1:]))[0] == "'" + cell
    write_workbook({"s": neutralise(frame)}, tmp_path / "w.xlsx")
    book = openpyxl.load_workbook(tmp_path / "w.xlsx")
    try:
        shown = book["s"]["A2"].value
    finally:
        book.close()
    assert shown.startswith("'") and not runnable(shown)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(st.text(max_size=8), st.sampled_from(FORMULAS)), min_size=1,
                max_size=12))
def test_neutralise_marks_exactly_the_runnable_cells(cells: list[str]) -> None:
    frame = pd.DataFrame({"t": pd.array(cells, dtype="str")})
    out = neutralise(frame)["t"].tolist()
    for before, after in zip(cells, out, strict=True):
        assert after == ("'" + before if runnable(before) else before)
        assert not runnable(after)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(st.lists(st.text(max_size=6), min_size=1, max_size=8))
def test_any_text_makes_a_valid_workbook_that_reads_back(tmp_path: Path,
                                                         texts: list[str]) -> None:
    """Python text of any code points (lone surrogates too): shared (repeated) and inline
    (unique) cells both parse, and read back as written with U+FFFD for what XML cannot
    hold."""
    repeated = np.array(texts * 3, dtype=object)
    frame = pd.DataFrame({"shared": pd.Series(repeated, dtype=object),
                          "unique": pd.Series([f"{t}|{i}" for i, t in enumerate(repeated)],
                                              dtype=object)})
    path = tmp_path / "w.xlsx"
    write_workbook({"s": frame}, path)
    with zipfile.ZipFile(path) as zf:
        for name in zf.namelist():
            ElementTree.fromstring(zf.read(name))
    book = openpyxl.load_workbook(path)
    try:
        rows = list(book["s"].iter_rows(min_row=2, values_only=True))
    finally:
        book.close()
    shown = [ILLEGAL.sub("\ufffd", t) for t in repeated]
    assert [r[0] for r in rows] == [t or None for t in shown]
    inline = [f"{t}|{i}" for i, t in enumerate(shown)]  # openpyxl keeps inline _xHHHH_ as is
    assert [r[1] for r in rows] == [re.sub("_(x[0-9A-Fa-f]{4}_)", r"_x005F_\1", t)
                                    for t in inline]


def test_neutralise_categorical_text_per_category() -> None:
    """Few long texts held as categoricals (regimens, actions) are neutralised once per
    category, exactly as the same cells as plain text are."""
    values = ["=cmd|' /C calc'!A0", "Start B12", None, "  @SUM(1)", "Start B12"]
    plain = neutralise(pd.DataFrame({"c": pd.Series(values, dtype="str")}))["c"]
    coded = neutralise(pd.DataFrame({"c": pd.Series(values, dtype="category")}))["c"]
    assert isinstance(coded.dtype, pd.CategoricalDtype)
    assert coded.astype("str").tolist() == plain.astype("str").tolist()
    assert plain.tolist()[0].startswith("'=") and plain.tolist()[3].startswith("'")
