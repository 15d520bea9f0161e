"""The CSV record splitter: a stray quote costs one row, never the rest of the file.

Examples for each case SPEC "Malformed CSV" names, then properties: Arrow reads exactly one
row (or one invalid row) per record of ``data``, every physical line belongs to exactly one
record, and clean files round-trip value for value.
"""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.ingest import csv_records
from pipeline.ingest.csv_records import MALFORMED_ROW, OVERSIZED_FIELD, Records, split_records

HEADER = "patient_id,collected_at,test_code,result,unit"
BLANK = b" \t\r\v\f"


def _row(k: int) -> str:
    return f"P{k:04d},2026-01-01,B12,{100 + k},ng/L"


def _file(rows: list[str], newline: str = "\n") -> bytes:
    return (newline.join([HEADER, *rows]) + newline).encode()


def _arrow(records: Records, delimiter: str, n_fields: int) -> tuple[pa.Table, list[int]]:
    """``data`` read as the reader reads it: text columns, header skipped, bad rows skipped."""
    skipped: list[int] = []

    def skip(row: pacsv.InvalidRow) -> str:
        skipped.append(row.number)
        return "skip"

    names = [f"c{i}" for i in range(n_fields)]
    table = pacsv.read_csv(
        io.BytesIO(records.data),
        read_options=pacsv.ReadOptions(column_names=names, skip_rows=1, use_threads=False),
        parse_options=pacsv.ParseOptions(delimiter=delimiter, invalid_row_handler=skip,
                                         newlines_in_values=records.multiline),
        convert_options=pacsv.ConvertOptions(column_types=dict.fromkeys(names, pa.string()),
                                             strings_can_be_null=False))
    return table, skipped


def _blank(line: bytes, delimiter: str) -> bool:
    return not line.strip(bytes(b for b in BLANK if b != ord(delimiter)))


def _check_accounting(data: bytes, delimiter: str, n_fields: int, records: Records,
                      max_text: int = 1000) -> None:
    """Every non-blank line in exactly one record, line numbers exact, Arrow agrees."""
    physical = data.split(b"\n")
    if data.endswith(b"\n"):
        physical.pop()
    starts = np.concatenate((records.lines, records.bad_lines))
    assert len(np.unique(starts)) == len(starts)
    assert records.lines[0] == 1 and starts.min() == 1
    assert np.all(np.diff(records.lines) > 0) and np.all(np.diff(records.bad_lines) >= 0)
    assert len(records.bad_texts) == len(records.bad_reasons) == len(records.bad_lines)
    order = np.sort(starts)
    good = set(records.lines.tolist())
    kept: list[bytes] = []
    texts = iter(records.bad_texts)
    for i, first in enumerate(order.tolist()):
        assert not _blank(physical[first - 1], delimiter), first
        following = order[i + 1] if i + 1 < len(order) else len(physical) + 1
        last = max(k for k in range(first, following)
                   if not _blank(physical[k - 1], delimiter))
        # lines between a record and the next are blank: not lost, nothing to read
        assert all(_blank(physical[k - 1], delimiter) for k in range(last + 1, following))
        span = b"\n".join(physical[first - 1:last]) + b"\n"
        if first in good:
            kept.append(span)
        else:
            text = next(texts)
            assert len(text) <= max_text
            assert span.rstrip(b"\n").rstrip(b"\r").decode("utf-8", "replace").startswith(text)
    assert all(_blank(line, delimiter) for line in physical[:order[0] - 1])
    assert records.data == b"".join(kept)
    table, skipped = _arrow(records, delimiter, n_fields)
    assert table.num_rows + len(skipped) == len(records.lines) - 1
    assert all(2 <= n <= len(records.lines) for n in skipped)


# ------------------------------------------------------------------------------- examples


def test_unclosed_quote_costs_its_line_only() -> None:
    rows = [_row(k) for k in range(2, 924)]
    rows[51 - 2] = 'P0051,2026-01-01,B12,"150,ng/L'
    data = _file(rows)
    records = split_records(data, ",", 5)
    assert records.bad_lines.tolist() == [51]
    assert records.bad_reasons == [MALFORMED_ROW]
    assert records.bad_texts == ['P0051,2026-01-01,B12,"150,ng/L']
    assert records.lines.tolist() == [k for k in range(1, 924) if k != 51]
    table, skipped = _arrow(records, ",", 5)
    assert table.num_rows == 921 and skipped == []
    _check_accounting(data, ",", 5, records)


def test_quote_closed_five_lines_later_costs_one_line() -> None:
    rows = [_row(k) for k in range(2, 100)]
    rows[51 - 2] = 'P0051,2026-01-01,B12,"150,ng/L'
    rows[56 - 2] = 'P0056,2026-01-01,B12,150",ng/L'  # Arrow reads this quote as text
    data = _file(rows)
    records = split_records(data, ",", 5)
    assert records.bad_lines.tolist() == [51]
    assert 52 in records.lines and 56 in records.lines
    table, _ = _arrow(records, ",", 5)
    assert table.num_rows == 98 - 1
    assert '150"' in table["c3"].to_pylist()
    _check_accounting(data, ",", 5, records)


def test_quote_reopened_lines_later_costs_both_lines() -> None:
    rows = [_row(k) for k in range(2, 30)]
    rows[10 - 2] = 'P0010,2026-01-01,B12,"150,ng/L'
    rows[15 - 2] = 'P0015,2026-01-01,B12,150,"ng/L'
    records = split_records(_file(rows), ",", 5)
    assert records.bad_lines.tolist() == [10, 15]
    assert len(records.lines) == 29 - 2


def test_comment_with_a_line_break_stays_one_record() -> None:
    header = HEADER + ",comment"
    data = (f"{header}\n{_row(2)},ok\n{_row(3)},\"two\nlines\"\n\n{_row(5)},\"a\n\nb\nc\"\n"
            f"{_row(9)},x\n").encode()
    records = split_records(data, ",", 6)
    assert records.lines.tolist() == [1, 2, 3, 6, 10]
    assert records.bad_lines.tolist() == []
    assert records.multiline
    table, skipped = _arrow(records, ",", 6)
    assert skipped == []
    assert table["c5"].to_pylist() == ["ok", "two\nlines", "a\n\nb\nc", "x"]
    _check_accounting(data, ",", 6, records)


def test_a_line_inside_quotes_that_is_a_record_itself_ends_the_quote() -> None:
    header = HEADER + ",comment"
    data = f'{header}\n{_row(2)},"starts\n{_row(3)},done"\n{_row(4)},x\n'.encode()
    records = split_records(data, ",", 6)
    assert records.bad_lines.tolist() == [2]
    assert records.lines.tolist() == [1, 3, 4]


def test_joined_record_with_the_wrong_number_of_fields_is_rejected() -> None:
    data = b'a,b,c\n1,"x\ny",3,4\n5,6,7\n'
    records = split_records(data, ",", 3)
    assert records.bad_lines.tolist() == [2]
    assert records.lines.tolist() == [1, 3, 4]
    _check_accounting(data, ",", 3, records)


def test_fifty_megabyte_field_costs_one_row() -> None:
    rows = [_row(2), 'P0003,2026-01-01,B12,"' + "9" * (50 << 20) + '",ng/L', _row(4)]
    data = _file(rows)
    records = split_records(data, ",", 5, max_text=200)
    assert records.bad_lines.tolist() == [3]
    assert records.bad_reasons == [OVERSIZED_FIELD]
    assert len(records.bad_texts[0]) == 200
    assert records.lines.tolist() == [1, 2, 4]
    table, skipped = _arrow(records, ",", 5)
    assert table.num_rows == 2 and skipped == []


def test_oversized_quoted_field_over_several_lines_is_one_rejected_record() -> None:
    big = "\n".join(["x" * 1000] * 3000)
    data = f'a,b,c\n1,"{big}",3\n4,5,6\n'.encode()
    records = split_records(data, ",", 3)
    assert records.bad_lines.tolist() == [2]
    assert records.bad_reasons == [OVERSIZED_FIELD]
    assert records.lines.tolist() == [1, 3002]
    _check_accounting(data, ",", 3, records)


def test_oversized_line_without_quotes_is_rejected() -> None:
    data = b"a,b,c\n1,2,3\n4," + b"5" * 5000 + b",6\n7,8,9"
    records = split_records(data, ",", 3, max_record_bytes=4096)
    assert records.bad_lines.tolist() == [3]
    assert records.bad_reasons == [OVERSIZED_FIELD]
    assert records.data == b"a,b,c\n1,2,3\n7,8,9\n"
    _check_accounting(data, ",", 3, records)


def test_escaped_quotes() -> None:
    data = b'a,b,c\n1,"say ""hi""",3\n2,"""",3\n3,"a,""b"",c",3\n4,"""x\n""",3\n'
    records = split_records(data, ",", 3)
    assert records.lines.tolist() == [1, 2, 3, 4, 5]
    assert records.bad_lines.tolist() == []
    table, skipped = _arrow(records, ",", 3)
    assert skipped == []
    assert table["c1"].to_pylist() == ['say "hi"', '"', 'a,"b",c', '"x\n"']


def test_crlf_file() -> None:
    data = (b'a;b;c\r\n1;2;3\r\n\r\n4;"x\r\ny";6\r\n7;"open;9\r\n10;11;12\r\n')
    records = split_records(data, ";", 3)
    assert records.lines.tolist() == [1, 2, 4, 7]
    assert records.bad_lines.tolist() == [6]
    assert records.bad_texts == ['7;"open;9']
    table, skipped = _arrow(records, ";", 3)
    assert skipped == [] and table["c1"].to_pylist() == ["2", "x\r\ny", "11"]
    _check_accounting(data, ";", 3, records)


def test_literal_quote_inside_an_unquoted_field_is_text() -> None:
    rows = [_row(2), 'P0003,2026-01-01,B12,5"00,ng/L', 'P0004,2026-01-01,B12,"1"2"3,ng/L',
            _row(5)]
    data = _file(rows)
    records = split_records(data, ",", 5)
    assert records.lines.tolist() == [1, 2, 3, 4, 5]
    assert records.bad_lines.tolist() == []
    table, skipped = _arrow(records, ",", 5)
    assert skipped == [] and table["c3"].to_pylist() == ["102", '5"00', '12"3', "105"]


def test_lone_carriage_return_would_split_a_row_so_it_is_rejected() -> None:
    data = b"a,b,c\n1,2,3\r4,5,6\n7,8,9\n10,11,12\r\r\n"
    records = split_records(data, ",", 3)
    assert records.bad_lines.tolist() == [2]
    assert records.lines.tolist() == [1, 3, 4]
    _check_accounting(data, ",", 3, records)


def test_wrong_number_of_fields_is_left_to_arrow() -> None:
    data = b"a,b,c\n1,2\n3,4,5,6\n7,8,9\n"
    records = split_records(data, ",", 3)
    assert records.data == data and records.bad_lines.tolist() == []
    table, skipped = _arrow(records, ",", 3)
    assert table.num_rows == 1 and skipped == [2, 3]


def test_no_quotes_goes_through_the_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    def walk(*args: object) -> None:
        raise AssertionError("a clean file is split without walking any line")

    monkeypatch.setattr(csv_records._Splitter, "_walk", walk)
    data = b"a|b|c\n1|2|3\n\n   \n4|5|6\r\n\r\n7|8|9"
    records = split_records(data, "|", 3)
    assert records.lines.tolist() == [1, 2, 5, 7]
    assert records.data == b"a|b|c\n1|2|3\n4|5|6\r\n7|8|9\n"
    clean = _file([_row(k) for k in range(2, 50)])
    records = split_records(clean, ",", 5)
    assert records.data is clean and records.lines.tolist() == list(range(1, 50))
    quoted = b'"a","b"\n"1","x, y"\n"2",""""\n'  # every field quoted: still vectorised
    records = split_records(quoted, ",", 2)
    assert records.data is quoted and records.lines.tolist() == [1, 2, 3]


def test_tab_lines_are_records_in_a_tab_separated_file() -> None:
    data = b"a\tb\tc\n\t\t\n1\t2\t3\n"
    records = split_records(data, "\t", 3)
    assert records.lines.tolist() == [1, 2, 3]


def test_header_only_and_no_final_newline() -> None:
    assert split_records(b"a,b", ",", 2).data == b"a,b\n"
    records = split_records(b"a,b\n", ",", 2)
    assert records.lines.tolist() == [1] and records.data == b"a,b\n"


def test_messages_carry_no_values() -> None:
    with pytest.raises(ValueError, match="delimiter"):
        split_records(b"a,b\n", '"', 2)


# ----------------------------------------------------------------------------- properties

DELIMITERS = st.sampled_from([",", ";", "\t", "|"])
PLAIN = st.text(alphabet="abcXYZ019 .-/", max_size=6)
QUOTED = st.text(alphabet='ab1 ,;|\t"', max_size=6)
#: No example database: the tests write nothing outside pytest's own folders.
SETTINGS = {"deadline": None, "database": None, "suppress_health_check": [HealthCheck.too_slow]}


@st.composite
def csv_files(draw: st.DrawFn, clean: bool) -> tuple[bytes, str, int, list[list[str]],
                                                        list[int]]:
    """A file of good records: plain and quoted fields (``""`` escapes, line breaks inside
    quotes, delimiters inside quotes), CRLF or LF, blank lines. With ``clean`` the line
    breaks in quoted fields stay out of the first column and away from delimiters, so no
    line inside a record is a record itself; returns the rows and their first lines."""
    delimiter = draw(DELIMITERS)
    n_fields = draw(st.integers(2, 5))
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    header = delimiter.join(f"c{i}" for i in range(n_fields))
    out, rows, firsts = [header + newline], [], []
    line = 2
    for _ in range(draw(st.integers(0, 12))):
        for _ in range(draw(st.integers(0, 2)) if draw(st.booleans()) else 0):
            out.append(draw(st.sampled_from(["", " ", "\r", " \r"])) + newline)
            line += 1
        values, cells = [], []
        for col in range(n_fields):
            kind = draw(st.sampled_from(["plain", "quoted", "multi"]))
            if kind == "plain":
                value = draw(PLAIN).replace(delimiter, "")
                if value[1:] and draw(st.booleans()):
                    value = value[0] + '"' + value[1:]  # a literal quote, as Arrow reads it
                cells.append(value)
            else:
                value = draw(QUOTED)
                if kind == "multi" and (not clean or col > 0):
                    parts = [value, *draw(st.lists(QUOTED, min_size=1, max_size=2))]
                    if clean:  # the closing line must not read as a record on its own
                        parts = [p.replace(delimiter, "") for p in parts]
                        parts[-1] = "z" + parts[-1]
                    value = newline.join(parts)
                cells.append('"' + value.replace('"', '""') + '"')
            values.append(value)
        firsts.append(line)
        rows.append(values)
        text = delimiter.join(cells)
        out.append(text + newline)
        line += text.count("\n") + 1
    body = "".join(out)
    if draw(st.booleans()):
        body = body[: -len(newline)]
    if delimiter in (" ",) or body.strip() == "":
        body = header
    return body.encode(), delimiter, n_fields, rows, firsts


@settings(max_examples=300, **SETTINGS)
@given(csv_files(clean=True))
def test_clean_files_round_trip(case: tuple[bytes, str, int, list[list[str]], list[int]]
                                ) -> None:
    data, delimiter, n_fields, rows, firsts = case
    records = split_records(data, delimiter, n_fields)
    assert records.bad_lines.tolist() == []
    assert records.lines.tolist() == [1, *firsts]
    _check_accounting(data, delimiter, n_fields, records)
    table, skipped = _arrow(records, delimiter, n_fields)
    assert skipped == []
    assert [list(r.values()) for r in table.to_pylist()] == rows


@st.composite
def mutated_files(draw: st.DrawFn) -> tuple[bytes, str, int]:
    """A good file, then quotes inserted or deleted anywhere after the header (and now and
    then a stray carriage return or a delimiter)."""
    data, delimiter, n_fields, _, _ = draw(csv_files(clean=False))
    text = bytearray(data)
    body = text.index(b"\n") + 1 if b"\n" in text else len(text)
    for _ in range(draw(st.integers(0, 4))):
        if len(text) <= body:
            break
        at = draw(st.integers(body, len(text)))
        kind = draw(st.sampled_from(["insert", "insert", "delete", "cr", "delimiter"]))
        if kind == "delete":
            quotes = [i for i in range(body, len(text)) if text[i] == 0x22]
            if quotes:
                del text[quotes[draw(st.integers(0, len(quotes) - 1))]]
        else:
            text[at:at] = {"insert": b'"', "cr": b"\r", "delimiter": delimiter.encode()}[kind]
    return bytes(text), delimiter, n_fields


@settings(max_examples=600, **SETTINGS)
@given(mutated_files(), st.sampled_from([1 << 20, 24]))
def test_every_line_is_accounted_for_whatever_the_quoting(case: tuple[bytes, str, int],
                                                          max_record_bytes: int) -> None:
    data, delimiter, n_fields = case
    records = split_records(data, delimiter, n_fields, max_record_bytes=max_record_bytes,
                            max_text=10)
    _check_accounting(data, delimiter, n_fields, records, max_text=10)


@settings(max_examples=200, **SETTINGS)
@given(DELIMITERS, st.integers(3, 6), st.integers(1, 40), st.data())
def test_one_stray_quote_costs_exactly_its_line(delimiter: str, n_fields: int, n_rows: int,
                                                data: st.DataObject) -> None:
    rows = [[data.draw(PLAIN).replace(delimiter, "") for _ in range(n_fields)]
            for _ in range(n_rows)]
    rows = [[c.replace('"', "") for c in r] for r in rows]
    line = data.draw(st.integers(0, n_rows - 1))
    col = data.draw(st.integers(0, n_fields - 1))
    rows[line][col] = '"' + rows[line][col]
    header = delimiter.join(f"c{i}" for i in range(n_fields))
    text = "\n".join([header, *(delimiter.join(r) for r in rows)]).encode()
    records = split_records(text, delimiter, n_fields)
    assert records.bad_lines.tolist() == [line + 2]
    assert records.lines.tolist() == [k for k in range(1, n_rows + 2) if k != line + 2]
    _check_accounting(text, delimiter, n_fields, records)
