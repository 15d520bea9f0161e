"""A small, column-wise XLSX writer for worklists.

Cell-by-cell writers (xlsxwriter, openpyxl) cost microseconds per cell in Python, which
dominates a run when a worklist has hundreds of thousands of rows. Here each column's cell
XML is built with vectorised string operations, rows are concatenated column-wise, and the
sheet is streamed into the zip. Text is written as inline strings (never formulas), numbers
as numbers, booleans as booleans; dates are ISO text so they sort and read the same
everywhere. Each sheet prints landscape with the clinical-judgement statement in its footer.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

MAX_ROWS = 1_048_576
_ILLEGAL_XML = r"[\x00-\x08\x0b\x0c\x0e-\x1f]"

_CONTENT_TYPES = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
    '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
    '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.'
    'relationships+xml"/><Default Extension="xml" ContentType="application/xml"/>'
    '<Override PartName="/xl/workbook.xml" ContentType="application/vnd.openxmlformats-'
    'officedocument.spreadsheetml.sheet.main+xml"/>'
    '<Override PartName="/xl/styles.xml" ContentType="application/vnd.openxmlformats-'
    'officedocument.spreadsheetml.styles+xml"/>{sheets}</Types>')
_SHEET_TYPE = ('<Override PartName="/xl/worksheets/sheet{n}.xml" ContentType="application/'
               'vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/>')
_ROOT_RELS = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
    '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
    '<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/'
    'relationships/officeDocument" Target="xl/workbook.xml"/></Relationships>')
_WORKBOOK = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
    '<workbook xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" '
    'xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships">'
    '<sheets>{sheets}</sheets></workbook>')
_WORKBOOK_RELS = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
    '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
    '{rels}<Relationship Id="rIdStyles" Type="http://schemas.openxmlformats.org/'
    'officeDocument/2006/relationships/styles" Target="styles.xml"/></Relationships>')
_STYLES = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
    '<styleSheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">'
    '<fonts count="2"><font><sz val="11"/><name val="Calibri"/></font>'
    '<font><b/><sz val="11"/><name val="Calibri"/></font></fonts>'
    '<fills count="2"><fill><patternFill patternType="none"/></fill>'
    '<fill><patternFill patternType="gray125"/></fill></fills>'
    '<borders count="1"><border><left/><right/><top/><bottom/><diagonal/></border></borders>'
    '<cellStyleXfs count="1"><xf numFmtId="0" fontId="0" fillId="0" borderId="0"/>'
    '</cellStyleXfs><cellXfs count="2"><xf numFmtId="0" fontId="0" fillId="0" borderId="0" '
    'xfId="0"/><xf numFmtId="0" fontId="1" fillId="0" borderId="0" xfId="0" '
    'applyFont="1"/></cellXfs><cellStyles count="1"><cellStyle name="Normal" xfId="0" '
    'builtinId="0"/></cellStyles></styleSheet>')
_SHEET_HEAD = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
    '<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">'
    '<dimension ref="A1:{last}"/><sheetViews><sheetView workbookViewId="0">'
    '<pane ySplit="1" topLeftCell="A2" '
    'activePane="bottomLeft" state="frozen"/></sheetView></sheetViews><sheetData>')
_SHEET_TAIL = ('</sheetData><pageMargins left="0.4" right="0.4" top="0.5" bottom="0.6" '
               'header="0.3" footer="0.3"/><pageSetup orientation="landscape" paperSize="9"/>'
               '<headerFooter><oddFooter>{footer}</oddFooter></headerFooter></worksheet>')


def _column_letter(i: int) -> str:
    letters = ""
    i += 1
    while i:
        i, rem = divmod(i - 1, 26)
        letters = chr(65 + rem) + letters
    return letters


def _join(*parts: pa.Array | str) -> pa.Array:
    """Element-wise concatenation of non-null string arrays (and literal strings)."""
    return pc.binary_join_element_wise(*parts, "")


def _text_cells(text: pa.Array, ref: pa.Array) -> pa.Array:
    present = pc.and_(pc.is_valid(text), pc.not_equal(pc.fill_null(text, ""), ""))
    text = pc.fill_null(text, "")
    text = pc.replace_substring_regex(text, _ILLEGAL_XML, "")
    for old, new in (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;")):
        text = pc.replace_substring(text, old, new)
    cell = _join('<c r="', ref, '" t="inlineStr"><is><t xml:space="preserve">', text,
                 "</t></is></c>")
    return pc.if_else(present, cell, "")


def _column_cells(values: pd.Series, ref: pa.Array) -> pa.Array:
    """XML for every cell of one column (empty string for a missing value)."""
    dtype = values.dtype
    if pd.api.types.is_bool_dtype(dtype):
        flags = pa.array(values, pa.bool_(), from_pandas=True)
        cell = _join('<c r="', ref, '" t="b"><v>', pc.if_else(pc.fill_null(flags, False),
                                                              "1", "0"), "</v></c>")
        return pc.if_else(pc.is_valid(flags), cell, "")
    if pd.api.types.is_numeric_dtype(dtype):
        number = pa.array(values.astype("float64"), pa.float64(), from_pandas=True)
        finite = pc.fill_null(pc.is_finite(number), False)
        text = pc.fill_null(pc.cast(pc.fill_null(number, 0.0), pa.string()), "")
        return pc.if_else(finite, _join('<c r="', ref, '"><v>', text, "</v></c>"), "")
    if pd.api.types.is_datetime64_any_dtype(dtype):
        stamps = pa.array(values.astype("datetime64[us]"), pa.timestamp("us"), from_pandas=True)
        return _text_cells(pc.strftime(stamps, "%Y-%m-%d"), ref)
    return _text_cells(pa.array(values.astype("str"), pa.string(), from_pandas=True), ref)


def _concat_bytes(rows: pa.Array) -> bytes:
    """All strings of a null-free string array, back to back (its data buffer)."""
    rows = pa.concat_arrays([rows]) if isinstance(rows, pa.ChunkedArray) else rows
    offsets = np.frombuffer(rows.buffers()[1], dtype=np.int32)[rows.offset:
                                                                 rows.offset + len(rows) + 1]
    data = rows.buffers()[2]
    if data is None or len(rows) == 0:
        return b""
    return data.to_pybytes()[offsets[0]:offsets[-1]]


def _sheet_xml(frame: pd.DataFrame, footer: str) -> bytes:
    n = len(frame)
    row_numbers = pc.cast(pa.array(np.arange(2, n + 2)), pa.string())
    header = "".join(
        f'<c r="{_column_letter(i)}1" t="inlineStr" s="1"><is><t>{escape(str(c))}</t></is></c>'
        for i, c in enumerate(frame.columns))
    cells = [_column_cells(frame[column], _join(_column_letter(i), row_numbers))
             for i, column in enumerate(frame.columns)]  # columns, not rows
    rows = _join('<row r="', row_numbers, '">', *cells, "</row>") if n else pa.array([],
                                                                                     pa.string())
    last = f"{_column_letter(max(len(frame.columns), 1) - 1)}{n + 1}"
    head = (_SHEET_HEAD.format(last=last) + f'<row r="1">{header}</row>').encode("utf-8")
    tail = _SHEET_TAIL.format(footer=escape(footer)).encode("utf-8")
    return head + _concat_bytes(rows) + tail


def write_workbook(sheets: dict[str, pd.DataFrame], path: Path, footer: str = "") -> list[str]:
    """Write one sheet per frame; a frame longer than a sheet continues on further sheets."""
    notes: list[str] = []
    parts: list[tuple[str, pd.DataFrame]] = []
    per_sheet = MAX_ROWS - 1
    for name, frame in sheets.items():
        count = max(1, int(np.ceil(len(frame) / per_sheet)))
        if count > 1:
            notes.append(f"worklist {name} has {len(frame)} rows; split over {count} sheets")
        parts += [(name if k == 0 else f"{name} ({k + 1})",
                   frame.iloc[k * per_sheet:(k + 1) * per_sheet]) for k in range(count)]
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        zf.writestr("[Content_Types].xml", _CONTENT_TYPES.format(
            sheets="".join(_SHEET_TYPE.format(n=i + 1) for i in range(len(parts)))))
        zf.writestr("_rels/.rels", _ROOT_RELS)
        zf.writestr("xl/workbook.xml", _WORKBOOK.format(sheets="".join(
            f'<sheet name="{escape(name[:31])}" sheetId="{i + 1}" r:id="rId{i + 1}"/>'
            for i, (name, _) in enumerate(parts))))
        zf.writestr("xl/_rels/workbook.xml.rels", _WORKBOOK_RELS.format(rels="".join(
            f'<Relationship Id="rId{i + 1}" Type="http://schemas.openxmlformats.org/'
            f'officeDocument/2006/relationships/worksheet" Target="worksheets/sheet{i + 1}.xml"/>'
            for i in range(len(parts)))))
        zf.writestr("xl/styles.xml", _STYLES)
        for i, (_, frame) in enumerate(parts):
            zf.writestr(f"xl/worksheets/sheet{i + 1}.xml",
                        _sheet_xml(frame, "&L&8" + footer))
    return notes
