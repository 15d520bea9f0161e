"""pipeline.outputs.xlsx.write_workbook read back with openpyxl: text (escaped, characters XML
cannot hold shown as U+FFFD, never a formula), numbers, booleans, real dates, empty cells for
missing values that keep later cells in their columns, long frames split over sheets, byte-identical
reruns; and the printed layout a lab manager works from (widths, repeated header, autofilter,
fit to one page wide, wrapped long text, page header)."""

from __future__ import annotations

import zipfile
from datetime import datetime
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import openpyxl
import pandas as pd
import pytest
from isal import isal_zlib

import pipeline.outputs.xlsx as xlsx
from pipeline.outputs.xlsx import write_workbook

TEXT = ["a<b & c>d", None, "", "x\x01y\x0bz\x1f", "  lead", "tab\tin", "é ü → ✓", "=1+1",
        "a<b & c>d", "same", "same", "last"]


def _frame() -> pd.DataFrame:
    return pd.DataFrame({
        "text": pd.array(TEXT, dtype="str"),
        "number": [1.0, np.nan, 2.5, -3.0, 1e20, 1.5e-7, 3.0, np.inf, 123456789.125, 0.1, 7.0,
                   -5.0],
        "count": pd.array([1, None, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12], dtype="Int16"),
        "flag": [True, False] * 6,
        "maybe": pd.array([True, None, False] * 4, dtype="boolean"),
        "date": pd.to_datetime(["2025-01-02", None, "2026-10-31", "1999-12-31"] * 3),
        "mixed": pd.Series([1, "two", None, 3.5, "x&y", True, None, "", "z", "z", "z", "q"],
                           dtype=object),
        "empty": [None] * 12,
        "after": pd.array([f"row{i}" for i in range(12)], dtype="str"),
    })


EXPECTED_TEXT = ["a<b & c>d", None, None, "x\ufffdy\ufffdz\ufffd", "  lead", "tab\tin",
                 "é ü → ✓", "=1+1", "a<b & c>d", "same", "same", "last"]


def _values(path: Path) -> dict[str, list[tuple]]:
    book = openpyxl.load_workbook(path)
    try:
        return {ws.title: [tuple(row) for row in ws.iter_rows(values_only=True)]
                for ws in book.worksheets}
    finally:
        book.close()


def _check_rows(rows: list[tuple], frame: pd.DataFrame) -> None:
    assert rows[0] == tuple(frame.columns)
    body = rows[1:]
    assert len(body) == len(frame)
    columns = list(zip(*body, strict=True))
    text, number, count, flag, maybe, date, mixed, empty, after = columns
    assert list(text) == [EXPECTED_TEXT[i % 12] for i in frame.index]
    expected_numbers = [None if not np.isfinite(v) else v for v in frame["number"]]
    assert list(number) == expected_numbers
    assert list(count) == [None if pd.isna(v) else v for v in frame["count"]]
    assert list(flag) == list(frame["flag"])
    assert all(type(v) is bool for v in flag)
    assert list(maybe) == [None if pd.isna(v) else bool(v) for v in frame["maybe"]]
    assert list(date) == [None if pd.isna(v) else v.to_pydatetime() for v in frame["date"]]
    assert all(isinstance(v, datetime) for v in date if v is not None)
    assert list(mixed) == [None if v is None or v == "" else str(v) for v in frame["mixed"]]
    assert set(empty) == {None}
    assert list(after) == list(frame["after"])  # later columns did not shift


def test_round_trip_of_values(tmp_path: Path) -> None:
    frame = _frame()
    path = tmp_path / "w.xlsx"
    assert write_workbook({"first": frame, "none": frame.iloc[:0]}, path, footer="a & <b>") == []
    sheets = _values(path)
    assert list(sheets) == ["first", "none"]
    _check_rows(sheets["first"], frame)
    assert sheets["none"] == [tuple(frame.columns)]

    book = openpyxl.load_workbook(path)
    ws = book["first"]
    assert ws.freeze_panes == "A2"
    assert ws.page_setup.orientation == "landscape"
    assert ws.oddFooter.left.text == "a && <b>"  # Excel's code for a printed "&"
    assert all(cell.font.b for cell in ws[1])
    assert not any(cell.font.b for cell in ws[2])
    assert all(cell.data_type != "f" for row in ws.iter_rows() for cell in row)
    assert ws["B2"].data_type == "n" and ws["D2"].data_type == "b"
    book.close()


def test_repeated_text_is_shared_and_reads_the_same(tmp_path: Path) -> None:
    """A long frame repeats its values: text goes through the shared-strings table."""
    frame = pd.concat([_frame()] * 30, ignore_index=True)
    path = tmp_path / "w.xlsx"
    write_workbook({"long": frame, "short": _frame()}, path)
    with zipfile.ZipFile(path) as zf:
        assert "xl/sharedStrings.xml" in zf.namelist()
        assert "sharedStrings+xml" in zf.read("[Content_Types].xml").decode()
        assert 'Target="sharedStrings.xml"' in zf.read("xl/_rels/workbook.xml.rels").decode()
    sheets = _values(path)
    _check_rows(sheets["long"], frame)
    _check_rows(sheets["short"], _frame())

    book = openpyxl.load_workbook(path, read_only=True)  # as test_month_on_month reads it
    assert book["long"].max_row == len(frame) + 1
    assert book["long"].max_column == frame.shape[1]
    book.close()


def test_long_frame_continues_on_further_sheets(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(xlsx, "MAX_ROWS", 6)  # 5 data rows a sheet
    frame = _frame()
    path = tmp_path / "w.xlsx"
    notes = write_workbook({"list": frame, "other": frame.iloc[:3]}, path)
    assert notes == ["worklist list has 12 rows; split over 3 sheets"]
    sheets = _values(path)
    assert list(sheets) == ["list", "list (2)", "list (3)", "other"]
    assert [len(rows) - 1 for rows in sheets.values()] == [5, 5, 2, 3]
    together = [sheets["list"][0]] + [row for name in ("list", "list (2)", "list (3)")
                                      for row in sheets[name][1:]]
    _check_rows(together, frame)
    _check_rows(sheets["other"], frame.iloc[:3])


def test_frames_handed_over_are_let_go_and_write_the_same_workbook(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(xlsx, "MAX_ROWS", 6)  # a frame continued on further sheets too
    frame = _frame()
    kept, handed = tmp_path / "kept.xlsx", tmp_path / "handed.xlsx"
    notes = write_workbook({"list": frame, "other": frame.iloc[:3]}, kept, footer="f")
    sheets = {"list": frame.copy(), "other": frame.iloc[:3].copy()}
    assert write_workbook(sheets, handed, footer="f", release=True) == notes
    assert sheets == {}  # each frame taken out once encoded: its memory can go
    assert handed.read_bytes() == kept.read_bytes()


def test_rerun_is_byte_identical(tmp_path: Path) -> None:
    frame = pd.concat([_frame()] * 5, ignore_index=True)
    first, second = tmp_path / "a.xlsx", tmp_path / "b.xlsx"
    write_workbook({"x": frame, "y": frame.iloc[::-1]}, first, footer="f")
    write_workbook({"x": frame, "y": frame.iloc[::-1]}, second, footer="f")
    assert first.read_bytes() == second.read_bytes()
    with zipfile.ZipFile(first) as zf:
        assert zf.testzip() is None
        assert {i.compress_type for i in zf.infolist()} == {zipfile.ZIP_DEFLATED}
        assert {i.date_time for i in zf.infolist()} == {(1980, 1, 1, 0, 0, 0)}
        for info in zf.infolist():  # deflated by ISA-L at level 1, streamed or not
            deflate = isal_zlib.compressobj(1, isal_zlib.DEFLATED, -15)
            data = zf.read(info)
            assert info.compress_size == len(deflate.compress(data) + deflate.flush())


def test_no_columns_and_no_text(tmp_path: Path) -> None:
    path = tmp_path / "w.xlsx"
    write_workbook({"numbers": pd.DataFrame({"n": [1, 2]}), "bare": pd.DataFrame()}, path)
    with zipfile.ZipFile(path) as zf:
        assert "xl/sharedStrings.xml" not in zf.namelist()
    sheets = _values(path)
    assert sheets["numbers"] == [("n",), (1,), (2,)]
    assert list(sheets) == ["numbers", "bare"]


def _parse_every_part(path: Path) -> None:
    """Every XML part of the workbook parses: what Excel refuses to open does not."""
    with zipfile.ZipFile(path) as zf:
        for name in zf.namelist():
            ElementTree.fromstring(zf.read(name))


def test_printed_layout(tmp_path: Path) -> None:
    long = "hydroxocobalamin 1000 micrograms intramuscularly on alternate days " * 2
    frame = pd.DataFrame({
        "patient_id": pd.array([f"P{i:04d}" for i in range(30)], dtype="str"),
        "index_date": pd.Series(pd.date_range("2025-11-01", periods=30), dtype="datetime64[us]"),
        "suggested_action": pd.array(["Urgent clinical review"] * 30, dtype="str"),
        "suggested_regimen": pd.array([long, "oral"] * 15, dtype="str"),
        "urgent_review": [True, False] * 15,
    })
    path = tmp_path / "w.xlsx"
    write_workbook({"urgent": frame}, path, footer="statement",
                   titles={"urgent": "b12screen worklist: urgent"}, subtitle="As of 2026-10-31")
    _parse_every_part(path)
    book = openpyxl.load_workbook(path)
    ws = book["urgent"]
    widths = {c: ws.column_dimensions[c].width for c in "ABCDE"}
    assert widths["A"] >= len("P0000") and widths["B"] >= len("2025-11-01")
    assert widths["C"] >= len("Urgent clinical review")  # no "Urgent clin"
    assert widths["D"] <= 35  # long text wraps in a capped column instead
    assert ws["D2"].alignment.wrap_text and not ws["C2"].alignment.wrap_text
    assert ws.print_title_rows == "$1:$1"
    assert ws.auto_filter.ref == "A1:E31"
    assert ws.freeze_panes == "A2"
    assert ws.page_setup.orientation == "landscape"
    assert ws.page_setup.fitToWidth == 1 and ws.page_setup.fitToHeight == 0
    assert ws.sheet_properties.pageSetUpPr.fitToPage
    assert "b12screen worklist: urgent" in ws.oddHeader.left.text
    assert "As of 2026-10-31" in ws.oddHeader.center.text
    assert ws.oddFooter.left.text == "statement"
    assert ws["B2"].value == datetime(2025, 11, 1) and ws["B2"].is_date
    assert ws["B2"].number_format == "yyyy-mm-dd"
    assert ws["E2"].value is True and ws["E3"].value is False
    assert ws["E2"].number_format == '"TRUE";"TRUE";"FALSE"'  # LibreOffice shows TRUE, not 1
    book.close()


def test_text_xml_cannot_hold_never_corrupts_the_file(tmp_path: Path) -> None:
    nasty = ["a\uffffb", "c\ufffed", "\x00=1", "e\x07\x1bf", "tab\tnew\nline", "_x0041_",
             "ok"]
    frame = pd.DataFrame({"shared": pd.array(nasty * 3, dtype="str"),  # shared strings
                          "unique": pd.array([f"{t}{i}" for i, t in enumerate(nasty * 3)],
                                             dtype="str")})  # inline strings
    path = tmp_path / "w.xlsx"
    write_workbook({"s": frame}, path, titles={"s": "a\uffff & b"}, subtitle="\x00")
    _parse_every_part(path)
    rows = _values(path)["s"][1:]
    shown = ["a\ufffdb", "c\ufffdd", "\ufffd=1", "e\ufffd\ufffdf", "tab\tnew\nline", "_x0041_",
             "ok"]
    assert [r[0] for r in rows] == shown * 3
    # inline text: openpyxl does not decode Excel's escape there, so it reads it as written
    inline = [t.replace("_x0041_", "_x005F_x0041_") for t in shown]
    assert [r[1] for r in rows] == [f"{inline[i % 7]}{i}" for i in range(21)]
    with zipfile.ZipFile(path) as zf:  # a literal _xHHHH_ is escaped, as Excel does
        assert b"_x005F_x0041_" in zf.read("xl/sharedStrings.xml")


def test_lone_surrogates_in_python_text_are_replaced(tmp_path: Path) -> None:
    frame = pd.DataFrame({"t": pd.Series(["a\ud800b", "ok", None], dtype=object)})
    path = tmp_path / "w.xlsx"
    write_workbook({"s": frame}, path)
    _parse_every_part(path)
    assert _values(path)["s"][1:] == [("a\ufffdb",), ("ok",), (None,)]


def test_old_dates_and_times_of_day(tmp_path: Path) -> None:
    frame = pd.DataFrame({"at": pd.Series(pd.to_datetime(
        ["2026-10-31 08:30", None, "1899-06-01 00:00"]), dtype="datetime64[us]")})
    path = tmp_path / "w.xlsx"
    write_workbook({"s": frame}, path)
    book = openpyxl.load_workbook(path)
    ws = book["s"]
    assert ws["A2"].value == datetime(2026, 10, 31, 8, 30)
    assert ws["A2"].number_format == "yyyy-mm-dd hh:mm"
    assert ws["A3"].value is None
    assert ws["A4"].value == "1899-06-01 00:00"  # before Excel's calendar: ISO text
    book.close()


def test_shortcuts_write_what_the_plain_text_path_writes(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Categorical text (encoded from its codes), text in runs (encoded from the head of each
    run) and bytes to escape found a slice at a time give the bytes the text itself gives."""
    monkeypatch.setattr(xlsx, "_SCAN_BYTES", 7)  # escapes fall across scan slices
    monkeypatch.setattr(xlsx, "_RUNS_TRIAL", 4)
    values = np.array(["b<", None, "a&", "b<", "_x0041_", "", "c\r", None, "é→"], dtype=object)
    picks = np.random.default_rng(3).integers(0, len(values), 400)
    frame = pd.DataFrame({
        "cat": pd.Categorical(values[picks], categories=["unused", "é→", "a&", "b<", "c\r", "",
                                                         "_x0041_"]),
        "runs": pd.Series(values[np.sort(picks)], dtype="str"),  # sorted: in runs
        "few": pd.Series(values[picks], dtype="str")})
    short, plain = tmp_path / "short.xlsx", tmp_path / "plain.xlsx"
    write_workbook({"s": frame}, short)
    monkeypatch.setattr(xlsx, "_categories", lambda values: None)
    monkeypatch.setattr(xlsx, "_runs", lambda array: False)
    write_workbook({"s": frame}, plain)
    assert short.read_bytes() == plain.read_bytes()
    _parse_every_part(short)
    rows = _values(short)["s"][1:]
    assert [r[0] for r in rows] == [r[2] for r in rows]
