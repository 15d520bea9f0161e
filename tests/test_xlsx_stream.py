"""pipeline.outputs.xlsx.write_workbook given a sheet as a source of pieces (``SheetSource``):
the workbook is byte for byte the one the whole frame gives, however the rows are cut into
pieces (one row each, empty ones, pieces that run over a sheet's last row), and the first
pass over the pieces keeps no mostly-unique column's values (its memory does not grow with
the rows)."""

from __future__ import annotations

import contextlib
import tracemalloc
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from unittest import mock

import numpy as np
import openpyxl
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pipeline.outputs.xlsx as xlsx
from pipeline.kernels import ziparchive
from pipeline.outputs.xlsx import SheetSource, write_workbook

#: Text that repeats, needs escaping, is empty or missing, or XML cannot hold.
WORDS = ["a<b & c>d", "", None, "x\x01y\x0b", "_x0041_", "tab\tcr\r", "é → ✓", "=1+1",
         "same", "lang " * 9, "\uffff", "1"]


def _source(frame: pd.DataFrame, cuts: list[int]) -> SheetSource:
    """The frame's rows as pieces ending at ``cuts`` (in any order, repeats give empty
    pieces), a fresh iterator each call."""
    ends = [*sorted(min(max(c, 0), len(frame)) for c in cuts), len(frame)]

    def pieces() -> Iterator[pd.DataFrame]:
        start = 0
        for end in ends:
            yield frame.iloc[start:end]
            start = end

    return pieces


@contextlib.contextmanager
def _parts() -> Iterator[dict[str, list[int]]]:
    """Each zip member the writer deflates, with the lengths of the parts it gives the
    compressor: the compressor's stream depends on how its input is cut, so a streamed sheet
    must come in the very parts its whole frame does."""
    fed: dict[str, list[int]] = {}  # members deflate side by side: by name
    deflate = ziparchive.deflate

    def recording(name: str, content: object, **options: object) -> ziparchive.Member:
        parts = [content] if isinstance(content, str | bytes) else list(content)  # type: ignore[call-overload]
        fed[name] = [len(p) for p in parts]
        return deflate(name, iter(parts) if len(parts) > 1 else parts[0], **options)

    with mock.patch.object(xlsx, "deflate", recording):
        yield fed


@contextlib.contextmanager
def _limits(**values: int) -> Iterator[None]:
    """The writer's size limits made small, so that small frames cross them: shared
    strings counted only so far, fusing stopped early, rows in many slices, and parts fed to
    the compressor one by one (its stream depends on how its input is cut)."""
    with contextlib.ExitStack() as stack:
        for name, value in values.items():
            module = ziparchive if name == "GATHER_BYTES" else xlsx
            stack.enter_context(mock.patch.object(module, name, value))
        yield


@st.composite
def _frames(draw: st.DrawFn) -> pd.DataFrame:
    n = draw(st.integers(0, 40))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    pool = np.array(WORDS, dtype=object)[:draw(st.integers(1, len(WORDS)))]
    pick = rng.integers(0, len(pool), n)
    stamps = pd.to_datetime("1899-12-25") + pd.to_timedelta(
        rng.integers(0, 60, n) * draw(st.sampled_from([1, 400])), unit="D")
    if draw(st.booleans()):
        stamps = stamps + pd.to_timedelta(rng.integers(0, 3, n) * 90, unit="min")
    numbers = rng.choice([0.0, -0.0, np.nan, 1.5, -3.0, 1e20, np.inf, 12.25], n)
    frame = pd.DataFrame({
        "text": pd.array(pool[pick], dtype="str"),
        "id": pd.array(np.char.add("P", rng.permutation(n).astype(str)), dtype="str"),
        "flag": rng.random(n) < 0.5,
        "maybe": pd.array(np.array([True, False, None], dtype=object)[pick % 3],
                          dtype="boolean"),
        "number": numbers,
        "count": pd.array(np.where(pick % 4 == 0, None, pick).tolist(), dtype="Int16"),
        "date": pd.Series(stamps.where(pick % 5 != 1), dtype="datetime64[us]"),
        "category": pd.Categorical(pool[pick], categories=["unused", *(
            w for w in dict.fromkeys(WORDS) if w is not None)]),
        "mixed": pd.Series(pool[pick[::-1]], dtype=object),
        "runs": pd.array(np.sort(pick).astype(str), dtype="str"),
        "nothing": pd.Series([None] * n, dtype=object),
    })
    if draw(st.booleans()):  # Python text Arrow cannot hold (a lone surrogate)
        frame["mixed"] = frame["mixed"].where(pick % 7 != 3, "a\ud800b")
    order = draw(st.permutations(list(frame.columns)))
    return frame[order[:draw(st.integers(1, len(order)))]]


def _cuts(n: int) -> st.SearchStrategy[list[int]]:
    return st.one_of(st.lists(st.integers(0, n), max_size=8),
                     st.just(list(range(n))))  # a row a piece


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), frame=_frames(), other=_frames(),
       limits=st.fixed_dictionaries({
           "_SHARED_MOST": st.sampled_from([2, 5, 1 << 16]),
           "_FUSED": st.sampled_from([2, 8, 32, 4096]),
           "_FUSED_BYTES": st.sampled_from([64, 1 << 22]),
           "_WRAP_ABOVE": st.sampled_from([3, 4096]),
           "_CHUNK_BYTES": st.sampled_from([64, 400, 1000, 3000, 1 << 25]),
           "_PAIRS_TABLE": st.sampled_from([1, 1 << 20]),
           "GATHER_BYTES": st.sampled_from([1, 1 << 16])}))
def test_pieces_write_the_whole_frames_bytes(tmp_path_factory: pytest.TempPathFactory,
                                             data: st.DataObject, frame: pd.DataFrame,
                                             other: pd.DataFrame,
                                             limits: dict[str, int]) -> None:
    """Any cut of the rows into pieces, beside whole frames sharing the strings table, gives
    the same bytes. The widest row, and so the parts fed to the compressor, are alike where
    _SHARED_MOST >= _FUSED, as in the writer: below that a streamed sheet stops counting a
    column it could fuse, and may cut its XML elsewhere (the same bytes all the same)."""
    tmp = tmp_path_factory.mktemp("w")
    cuts = data.draw(_cuts(len(frame)))
    later = data.draw(_cuts(len(other)))
    with _limits(**limits), _parts() as whole:
        write_workbook({"a": frame, "b": other, "c": frame.iloc[::-1]}, tmp / "whole.xlsx",
                       footer="f", subtitle="s")
    with _limits(**limits), _parts() as streamed:
        write_workbook({"a": _source(frame, cuts), "b": other,
                        "c": _source(frame.iloc[::-1], later)}, tmp / "stream.xlsx",
                       footer="f", subtitle="s")
    assert (tmp / "stream.xlsx").read_bytes() == (tmp / "whole.xlsx").read_bytes()
    if limits["_SHARED_MOST"] >= limits["_FUSED"]:  # as the writer's limits are set
        assert streamed == whole
        with _limits(**limits):  # the widest row, which sets the slices, measured alike
            assert _widest_row(_source(frame, cuts)) == _widest_row(frame)


def test_fused_columns_measured_from_the_rows_that_occur(tmp_path: Path) -> None:
    """Columns fused by the combinations of values that occur (more combinations could
    than _FUSED): their widest row is that of the longest combination that occurs, not the
    longest values of each, and the streamed sheet is cut into the same slices."""
    frame = pd.DataFrame({"a": [1.0, 123456789.5] * 20, "b": [987654321.25, 2.0] * 20,
                          "c": ["x", "y"] * 20})
    limits = {"_FUSED": 3, "_CHUNK_BYTES": 500, "GATHER_BYTES": 1}
    with _limits(**limits):
        widest = _widest_row(frame)
        assert _widest_row(_source(frame, [3, 3, 17])) == widest
        columns = [xlsx._encode(frame[c]) for c in frame]
        xlsx._shared_strings(columns)
        assert widest < sum(xlsx._widest(c) for c in columns)  # fused: what occurs
        with _parts() as whole:
            write_workbook({"s": frame}, tmp_path / "w.xlsx")
        with _parts() as streamed:
            write_workbook({"s": _source(frame, [3, 3, 17])}, tmp_path / "s.xlsx")
    assert streamed == whole
    assert (tmp_path / "s.xlsx").read_bytes() == (tmp_path / "w.xlsx").read_bytes()


def _widest_row(sheet: pd.DataFrame | SheetSource) -> int:
    """A sheet's widest row of cells as the writer measures it: from its fused columns for a
    frame, from its first pass for a source."""
    if isinstance(sheet, pd.DataFrame):
        columns = [xlsx._encode(sheet.iloc[:, i]) for i in range(sheet.shape[1])]
        xlsx._shared_strings(columns)
        return sum(xlsx._widest(group) for group in xlsx._fuse(columns))
    with ThreadPoolExecutor(max_workers=2) as threads:
        survey = xlsx._survey("s", sheet, threads)
    xlsx._shared_strings(survey.tallies)
    for tally in survey.tallies:
        tally.shared()
    return survey.widest_row()


def _worklist(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "practice_id": pd.array(np.array(["A1", "B2", "C3"])[rng.integers(0, 3, n)],
                                dtype="str"),
        "patient_id": pd.array(np.char.add("P", np.arange(n).astype(str)), dtype="str"),
        "index_date": pd.Series(pd.Timestamp("2026-01-01")
                                + pd.to_timedelta(rng.integers(0, 300, n), unit="D"),
                                dtype="datetime64[us]"),
        "index_value": rng.integers(50, 400, n).astype(float),
        "urgent_review": rng.random(n) < 0.3,
        "reasons": pd.array(np.char.add("R1 total B12 ", rng.integers(0, n, n).astype(str)),
                            dtype="str"),
    })


@pytest.mark.parametrize("sizes", [[1], [7, 0, 3], [23]])
def test_a_long_sheet_splits_as_the_whole_frame_does(tmp_path: Path, sizes: list[int],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(xlsx, "MAX_ROWS", 6)  # 5 rows a sheet
    monkeypatch.setattr(xlsx, "_CHUNK_BYTES", 300)  # a few rows a slice
    monkeypatch.setattr(ziparchive, "GATHER_BYTES", 1)
    monkeypatch.setattr(ziparchive, "SPOOL_BYTES", 1)  # streamed XML kept in temporary files
    frame = _worklist(23)
    cuts = list(np.cumsum(sizes * 23)[:40])
    with _parts() as whole_parts:
        whole = write_workbook({"list": frame, "other": frame.iloc[:3]}, tmp_path / "w.xlsx")
    with _parts() as streamed_parts:
        streamed = write_workbook({"list": _source(frame, cuts), "other": frame.iloc[:3]},
                                  tmp_path / "s.xlsx")
    assert streamed == whole == ["worklist list has 23 rows; split over 5 sheets"]
    assert streamed_parts == whole_parts
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.xlsx", "w.xlsx"]  # none left
    assert (tmp_path / "s.xlsx").read_bytes() == (tmp_path / "w.xlsx").read_bytes()


def test_a_streamed_workbook_reads_back(tmp_path: Path) -> None:
    frame = _worklist(40)
    frame.loc[3, "reasons"] = "hydroxocobalamin 1000 micrograms intramuscularly " * 2
    path = tmp_path / "s.xlsx"
    write_workbook({"urgent": _source(frame, [10, 10, 25])}, path, footer="statement",
                   titles={"urgent": "worklist: urgent"}, subtitle="As of 2026-10-31")
    book = openpyxl.load_workbook(path)
    ws = book["urgent"]
    rows = list(ws.iter_rows(values_only=True))
    assert rows[0] == tuple(frame.columns)
    assert [r[1] for r in rows[1:]] == list(frame["patient_id"])
    assert [r[2] for r in rows[1:]] == [datetime.fromisoformat(str(d)) for d in
                                        frame["index_date"]]
    assert [r[3] for r in rows[1:]] == list(frame["index_value"])
    assert [r[4] for r in rows[1:]] == list(frame["urgent_review"])
    assert [r[5] for r in rows[1:]] == list(frame["reasons"])
    assert ws.auto_filter.ref == "A1:F41"
    assert ws.print_title_rows == "$1:$1"
    assert ws.column_dimensions["B"].width >= len("P39")
    assert ws.column_dimensions["C"].width >= len("2026-01-01")
    assert ws["F5"].alignment.wrap_text  # long text wraps in its capped column
    assert ws.column_dimensions["F"].width <= 35
    assert "worklist: urgent" in ws.oddHeader.left.text
    assert ws.oddFooter.left.text == "statement"
    book.close()


def _ids(start: int, stop: int) -> pd.DataFrame:
    """Rows of unique ids and unique reasons, made as they are asked for."""
    numbers = np.arange(start, stop).astype(str)
    return pd.DataFrame({"patient_id": pd.array(np.char.add("P", numbers), dtype="str"),
                         "reasons": pd.array(np.char.add("R1 total B12 ", numbers),
                                             dtype="str"),
                         "practice_id": pd.array(np.where(np.arange(start, stop) % 2, "A", "B"),
                                                 dtype="str")})


def _pieces_of(rows: int, size: int) -> SheetSource:
    return lambda: (_ids(a, min(rows, a + size)) for a in range(0, rows, size))


#: Arrow memory pools that counted a first pass: kept, as arrays they allocated outlive it.
_POOLS: list[pa.MemoryPool] = []


def _first_pass(source: SheetSource) -> tuple[xlsx._Survey, int]:
    """The first pass over ``source``, and its peak memory (Python's and Arrow's)."""
    pool = pa.proxy_memory_pool(pa.default_memory_pool())
    _POOLS.append(pool)
    before = pa.default_memory_pool()
    pa.set_memory_pool(pool)
    tracemalloc.start()
    try:
        with ThreadPoolExecutor(max_workers=2) as threads:
            survey = xlsx._survey("s", source, threads)
        python = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        pa.set_memory_pool(before)
    return survey, python + pool.max_memory()


def test_the_first_pass_keeps_no_mostly_unique_column(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ids and reasons beyond _SHARED_MOST distinct values are dropped by the first pass: its
    memory grows with the piece, not with the rows (ten times the rows cost far less than
    ten times the ids' text), while a column of few values keeps them for the shared strings."""
    monkeypatch.setattr(xlsx, "_SHARED_MOST", 500)
    piece = 2_000
    small, small_peak = _first_pass(_pieces_of(4 * piece, piece))
    large, large_peak = _first_pass(_pieces_of(40 * piece, piece))
    assert large.rows == 40 * piece
    ids, reasons, practices = large.tallies
    assert ids.distinct is None and reasons.distinct is None  # written inline
    assert ids.text is None and reasons.text is None
    assert practices.text is not None and len(practices.distinct) == 2  # shared
    text = _ids(4 * piece, 40 * piece)
    extra = int(text["patient_id"].str.len().sum() + text["reasons"].str.len().sum())
    assert large_peak - small_peak < extra / 4


def test_the_second_pass_must_give_the_first_ones_rows(tmp_path: Path) -> None:
    frame = _worklist(10)
    calls = iter([[5], [5, 9]])

    def changing() -> Iterator[pd.DataFrame]:
        cuts = next(calls)
        return _source(frame if len(cuts) == 1 else pd.concat([frame, frame]), cuts)()

    with pytest.raises(ValueError, match="more rows than the first"):
        write_workbook({"s": changing}, tmp_path / "w.xlsx")
    with pytest.raises(ValueError, match="no piece"):
        write_workbook({"s": lambda: iter([])}, tmp_path / "w.xlsx")
    renamed = _source(frame.rename(columns={"reasons": "why"}), [5])
    with pytest.raises(ValueError, match="different columns"):
        write_workbook({"s": lambda: iter([frame.iloc[:5], *renamed()][:2])},
                       tmp_path / "w.xlsx")
