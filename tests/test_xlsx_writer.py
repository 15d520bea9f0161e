"""pipeline.xlsx.write_workbook read back with openpyxl: text (escaped, control characters
removed, never a formula), numbers, booleans, ISO dates, empty cells for missing values that
keep later cells in their columns, long frames split over sheets, byte-identical reruns."""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

import numpy as np
import openpyxl
import pandas as pd
import pytest

import pipeline.xlsx as xlsx
from pipeline.xlsx import write_workbook

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


EXPECTED_TEXT = ["a<b & c>d", None, None, "xyz", "  lead", "tab\tin", "é ü → ✓", "=1+1",
                 "a<b & c>d", "same", "same", "last"]


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
    assert list(date) == [None if pd.isna(v) else v.strftime("%Y-%m-%d") for v in frame["date"]]
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
    assert ws.oddFooter.left.text == "a & <b>"
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
        for info in zf.infolist():  # deflated at level 1, streamed or not
            deflate = zlib.compressobj(1, zlib.DEFLATED, -15)
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
