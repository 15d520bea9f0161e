"""Write a run's outputs: typed Parquet, injection-safe CSV/XLSX, JSON; atomically.

The run folder itself (a temporary sibling swapped into place, owner-only permissions) is
``pipeline.outputs.run_folder``'s; this module writes the files in it. Shareable aggregates carry
no patient id.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Collection, Iterable, Iterator, Mapping
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from pipeline.ingest.reason_codes import per_reason
from pipeline.kernels.arrow import cell_edges
from pipeline.outputs.xlsx import SheetSource, as_text, write_workbook
from pipeline.state import RunState

_DANGEROUS = ("=", "+", "-", "@", "\t", "\r")
#: A cell a spreadsheet may run (RE2 syntax): one starting with tab or CR, or with = + - @
#: behind any run of control characters or spaces (C0, DEL, C1, no-break and other Unicode
#: spaces, zero-width and direction marks, BOM), which spreadsheets skip or drop.
_RISKY = (r"^(?:[\t\r]|[\x00-\x20\x7f-\x{a0}\x{ad}\x{1680}\x{180e}\x{2000}-\x{200f}"
          r"\x{2028}-\x{202f}\x{205f}-\x{206f}\x{3000}\x{feff}\x{fffe}\x{ffff}]*[=+\-@])")
#: The UTF-8 byte-order mark: Excel reads a CSV file without one as the local code page.
BOM = b"\xef\xbb\xbf"
DISCLAIMER = ("b12screen supports, and does not replace, clinical judgement: treatment is "
              "based on symptoms, not on biomarkers alone, and up to half of patients need "
              "individualised injection schedules.")

PATIENTS_SCHEMA = pa.schema([
    ("patient_id", pa.string()), ("practice_id", pa.string()), ("age_years", pa.int16()),
    ("index_test", pa.dictionary(pa.int8(), pa.string())), ("index_value", pa.float64()),
    ("index_unit", pa.dictionary(pa.int8(), pa.string())),
    ("index_collected_at", pa.timestamp("us")),
    ("index_censor", pa.dictionary(pa.int8(), pa.string())),
    ("b12_total_ng_l", pa.float64()), ("b12_total_at", pa.timestamp("us")),
    ("b12_active_pmol_l", pa.float64()), ("b12_active_at", pa.timestamp("us")),
    ("mma_umol_l", pa.float64()), ("mma_at", pa.timestamp("us")),
    ("b12_status", pa.dictionary(pa.int8(), pa.string())),
    ("status_basis", pa.dictionary(pa.int8(), pa.string())),
    ("discordant", pa.bool_()), ("censored_ambiguous", pa.bool_()), ("needs_mma", pa.bool_()),
    ("needs_supplementation", pa.bool_()),
    ("supplementation_reason", pa.dictionary(pa.int8(), pa.string())),
    ("suggested_regimen", pa.string()), ("metformin_monitoring_due", pa.bool_()),
    ("metformin_risk", pa.int8()), ("retest_due", pa.bool_()), ("urgent_review", pa.bool_()),
    ("paediatric", pa.bool_()), ("on_metformin", pa.bool_()), ("on_b12_treatment", pa.bool_()),
    ("reasons", pa.string()), ("rule_ids", pa.string()),
    ("regimen_code", pa.dictionary(pa.int8(), pa.string())),
    ("b12_treatment_start", pa.date32()), ("last_b12_test_at", pa.timestamp("us")),
    ("untreated_too_long", pa.bool_()),
    ("regimen_intent", pa.dictionary(pa.int8(), pa.string())), ("not_responding", pa.bool_()),
    ("on_b12_combination", pa.bool_()), ("as_of", pa.date32()),
])
RESULTS_SCHEMA = pa.schema([
    ("patient_id", pa.string()), ("collected_at", pa.timestamp("us")),
    ("analyte", pa.dictionary(pa.int8(), pa.string())), ("value", pa.float64()),
    ("unit", pa.dictionary(pa.int8(), pa.string())),
    ("censor", pa.dictionary(pa.int8(), pa.string())),
    ("band", pa.dictionary(pa.int8(), pa.string())), ("censored_ambiguous", pa.bool_()),
    ("after_as_of", pa.bool_()), ("result_text", pa.string()), ("source_unit", pa.string()),
    ("practice_id", pa.string()), ("site_id", pa.string()), ("specimen_id", pa.string()),
    ("source_file", pa.string()), ("source_row", pa.int64()), ("as_of", pa.date32()),
])
#: Fixed dictionaries so categorical codes are stable from run to run.
CATEGORIES = {
    "index_test": ("b12_total", "b12_active"),
    "analyte": ("b12_total", "b12_active", "mma"),
    "index_unit": ("ng/L", "pmol/L"),
    "unit": ("ng/L", "pmol/L", "µmol/L"),
    "index_censor": ("", "<", "<=", ">", ">="),
    "censor": ("", "<", "<=", ">", ">="),
    "b12_status": ("deficient", "indeterminate", "unlikely", "not_tested"),
    "status_basis": ("b12_total", "b12_active", "mma", "none"),
    "supplementation_reason": ("deficiency", "bariatric_surgery", "ileal_resection", "diet"),
    "regimen_code": ("paediatric", "neurological", "ileal_resection", "bariatric_surgery",
                     "deficiency", "diet"),
    "band": ("deficient", "indeterminate", "unlikely", "raised", "normal"),
    "regimen_intent": ("treatment", "prevention"),
}


def _arrow_column(column: pd.Series, typ: pa.DataType, name: str) -> pa.Array:
    """One typed Arrow column; dictionary columns use the fixed categories of ``name``."""
    if isinstance(column.dtype, pd.CategoricalDtype):  # codes in, no text per row
        return _from_categorical(column, typ, name)
    if pa.types.is_dictionary(typ):
        cats = pa.array(CATEGORIES[name], pa.string())
        text = pa.array(column.astype("str"), pa.string(), from_pandas=True)
        codes = pc.index_in(text, value_set=cats).cast(pa.int8())
        if isinstance(codes, pa.ChunkedArray):
            codes = codes.combine_chunks()
        return pa.DictionaryArray.from_arrays(codes, cats)
    if pa.types.is_date32(typ):
        stamps = pa.array(column.astype("datetime64[us]"), pa.timestamp("us"), from_pandas=True)
        return stamps.cast(pa.date32())
    if pa.types.is_string(typ):
        return pa.array(column.astype("str"), pa.string(), from_pandas=True)
    return pa.array(column, typ, from_pandas=True)


def _from_categorical(column: pd.Series, typ: pa.DataType, name: str) -> pa.Array:
    """A categorical column through its codes: recoded to the fixed categories for a
    dictionary column, or its distinct values spelt out per row for a text column.

    The codes are widened to int32 first: Arrow's take and dictionary decode with pandas'
    narrow (int8) codes ran ten times slower, a tenth of a second per million rows of a
    one-value column such as ``source_file``.
    """
    codes = column.cat.codes.to_numpy()
    missing = codes < 0
    values = pa.array(column.cat.categories.astype("str"), pa.string())
    if pa.types.is_dictionary(typ):
        cats = pa.array(CATEGORIES[name], pa.string())
        recode = pc.fill_null(pc.index_in(values, value_set=cats), -1).to_numpy()
        if np.array_equal(recode, np.arange(len(recode))):  # the fixed categories already
            recoded = codes  # (how the rules build them): the codes as they are
        else:
            recoded = np.append(recode, -1)[codes]  # code -1 (missing) reads the last entry
        indices = pa.array(recoded.astype(np.int8, copy=False), mask=recoded < 0)
        return pa.DictionaryArray.from_arrays(indices, cats)
    indices = pa.array(codes.astype(np.int32), mask=missing)
    return pa.DictionaryArray.from_arrays(indices, values).cast(typ)


#: Columns that hold one value for the whole run, filled from the run's metadata: ``as_of``
#: lets an analyst stack months without reading it from the file name.
RUN_COLUMNS = ("as_of",)


def _run_column(field: pa.Field, metadata: dict[str, str], n: int) -> pa.Array:
    value = date.fromisoformat(metadata[field.name]) if field.type == pa.date32() \
        else metadata[field.name]
    return pa.repeat(pa.scalar(value, field.type), n)


def to_arrow(frame: pd.DataFrame, schema: pa.Schema, metadata: dict[str, str]) -> pa.Table:
    """A typed Arrow table: fixed dictionaries for statuses, dates as dates.

    Each column is one contiguous array, so the file's pages (and bytes) do not depend on
    how the frame was assembled (e.g. from the cohort's parts, one per thread).
    """
    arrays = [_run_column(f, metadata, len(frame)) if f.name in RUN_COLUMNS
              and f.name not in frame.columns else _arrow_column(frame[f.name], f.type, f.name)
              for f in schema]
    arrays = [a.combine_chunks() if isinstance(a, pa.ChunkedArray) else a for a in arrays]
    meta = {f"b12screen.{k}": str(v) for k, v in metadata.items()}
    return pa.Table.from_arrays(arrays, schema=schema.with_metadata(meta))


#: Rows per Parquet row group (pyarrow's default), and per slice converted at a time.
ROW_GROUP = 1024 * 1024


#: Free-text columns written without min/max statistics: no reader filters on them, and
#: working them out was a fifth of the time to write results.parquet. Ids, codes, dates,
#: numbers and flags keep theirs (a reader may skip row groups by patient, practice or day).
NO_STATISTICS = frozenset({"result_text", "source_unit", "source_file", "reasons", "rule_ids",
                           "suggested_regimen"})
_PARQUET = {"compression": "zstd"}


def _statistics(schema: pa.Schema) -> list[str]:
    return [name for name in schema.names if name not in NO_STATISTICS]


def write_parquet(table: pa.Table, path: Path) -> None:
    pq.write_table(table, path, row_group_size=ROW_GROUP,
                   write_statistics=_statistics(table.schema), **_PARQUET)


def write_parquet_groups(groups: Iterator[pa.Table], schema: pa.Schema,
                         path: Path | pa.NativeFile) -> None:
    """``write_parquet`` of the table whose row groups (of ``ROW_GROUP`` rows, the last
    shorter; at least one) ``groups`` gives one at a time: the same file, without the
    whole table in memory."""
    with pq.ParquetWriter(path, schema, write_statistics=_statistics(schema),
                          **_PARQUET) as writer:
        for group in groups:
            writer.write_table(group, row_group_size=ROW_GROUP)


def write_frame(frame: pd.DataFrame, schema: pa.Schema, metadata: dict[str, str],
                path: Path | pa.NativeFile) -> None:
    """A typed table written one row group at a time: only one slice of the frame is
    held as Arrow at once (the same file as converting it whole). ``path`` may be an open
    Arrow sink (see ``encode_frame``)."""
    first = to_arrow(frame.iloc[:ROW_GROUP], schema, metadata)
    rest = (to_arrow(frame.iloc[start:start + ROW_GROUP], schema, metadata)
            for start in range(ROW_GROUP, len(frame), ROW_GROUP))
    write_parquet_groups(itertools.chain([first], rest), first.schema, path)


def results_file(results: pd.DataFrame) -> pd.DataFrame:
    """A classified result table under ``results.parquet``'s column names."""
    return results.rename(columns={"ambiguous": "censored_ambiguous"})


def encode_frame(frame: pd.DataFrame, schema: pa.Schema, metadata: dict[str, str]
                 ) -> pa.Buffer:
    """The bytes ``write_frame`` would write, in memory: a table can be encoded before its
    run folder exists (a compressed table is a small fraction of its frame)."""
    sink = pa.BufferOutputStream()
    write_frame(frame, schema, metadata, sink)
    return sink.getvalue()


def write_rejected(rejected: pd.DataFrame, folder: Path,
                   metadata: dict[str, str] | None = None) -> None:
    """rejected.parquet and rejected.csv: every rejected row, its reasons and source line."""
    table = pa.Table.from_pandas(rejected, preserve_index=False)
    if metadata:
        table = table.replace_schema_metadata({f"b12screen.{k}": v for k, v in metadata.items()})
    write_parquet(table, folder / "rejected.parquet")
    write_csv(rejected, folder / "rejected.csv")


def neutralise(frame: pd.DataFrame) -> pd.DataFrame:
    """OWASP CSV-injection advice: a text cell starting = + - @ tab CR, or = + - @ behind
    leading control characters or spaces (``\\x00=1+1``, ``  =cmd``), gets a leading '.

    Each text column is first screened on the first byte of its cells, and only a column
    with a possibly risky cell is matched and rewritten: checking and copying every cell of
    big worklists was slow.
    """
    out = frame.copy(deep=False)  # copy-on-write: replacing a column leaves frame alone
    for column in out.columns:
        series = out[column]
        if isinstance(series.dtype, pd.CategoricalDtype) and _is_text(series.dtype):
            # few distinct texts (regimens, actions): neutralised once per category
            categories = pd.Series(series.cat.categories.astype("str"))
            safe = neutralise(categories.to_frame("c"))["c"]
            if not safe.equals(categories) and safe.is_unique:
                out[column] = series.cat.rename_categories(pd.Index(safe, dtype="str"))
                continue
            if safe.equals(categories):
                continue
        if _is_text(series.dtype):
            text = as_text(series)
            if not _may_be_risky(text):
                continue
            risky = pc.fill_null(pc.match_substring_regex(pa.array(text.array), _RISKY), False)
            if pc.any(risky).as_py():
                out[column] = text.mask(np.asarray(risky), "'" + text)
    return out


def _is_text(dtype: object) -> bool:
    """Text of any pandas flavour: str, string, object, or categorical with text categories
    (worklist state read back from Parquet is ``string``; ids may be categorical)."""
    if isinstance(dtype, pd.CategoricalDtype):
        return _is_text(dtype.categories.dtype)
    return isinstance(dtype, pd.StringDtype) or pd.api.types.is_object_dtype(dtype)


#: Bytes a risky cell may start with: = + - @, any control or space byte, and the lead bytes
#: of the Unicode spaces and marks in _RISKY (C2, E1, E2, E3, EF); never a continuation byte.
_RISKY_BYTE = np.isin(np.arange(256), [*(ord(c) for c in _DANGEROUS), *range(0x21), 0x7F,
                                       0xC2, 0xE1, 0xE2, 0xE3, 0xEF])


def _may_be_risky(text: pd.Series) -> bool:
    """False only if no cell of the text column can be risky (from each cell's first byte;
    True also when unsure)."""
    edges = cell_edges(pa.array(text.array))
    return edges is None or bool(_RISKY_BYTE[edges[0]].any())


def write_csv(frame: pd.DataFrame, path: Path, *, bom: bool = False,
              neutralised: bool = False) -> None:
    """UTF-8, with a byte-order mark if ``bom`` (worklists, which lab managers open in Excel:
    without it Excel shows µg as Âµg); plain otherwise, so that data tools read clean header
    names. Dates as ISO text (date and time in a column with a time of day); cells
    neutralised (``neutralised``: the caller did it already, as for worklists written both
    as CSV and in the workbook).

    Written by Arrow's C++ CSV writer: pandas' writer dominated large runs.
    """
    safe = frame if neutralised else neutralise(frame)
    table = _csv_table(safe, None)  # each date column's time of day decided from its rows
    with pa.OSFile(str(path), "wb") as sink:  # Arrow's own file: no copy through Python
        if bom:
            sink.write(BOM)
        pacsv.write_csv(table, sink, write_options=_CSV_OPTIONS)


def write_csv_pieces(pieces: Iterable[pd.DataFrame], path: Path, *, timed: Collection[str],
                     bom: bool = False, neutralised: bool = False) -> None:
    """``write_csv`` of the frame that ``pieces`` make one after another (at least one, all
    with the same columns), holding one piece at a time: the same bytes. Whether a date
    column is written with its time of day depends on all of its rows, so the caller says
    which are (``timed``, as ``timed_columns`` of the whole frame). Each cell's text
    depends on its value and its column's type alone, which is why pieces give the whole
    frame's bytes; dictionaries are written as their text, as Arrow's writer does."""
    with pa.OSFile(str(path), "wb") as sink:
        if bom:
            sink.write(BOM)
        writer: pacsv.CSVWriter | None = None
        for piece in pieces:
            table = _csv_table(piece if neutralised else neutralise(piece), timed)
            table = table.cast(pa.schema([
                (f.name, f.type.value_type if pa.types.is_dictionary(f.type) else f.type)
                for f in table.schema]))
            if writer is None:
                writer = pacsv.CSVWriter(sink, table.schema, write_options=_CSV_OPTIONS)
                schema = table.schema
            writer.write_table(table.cast(schema))
        if writer is None:
            raise ValueError(f"no piece of {Path(path).name} to write, not even an empty one")
        writer.close()


_CSV_OPTIONS = pacsv.WriteOptions(quoting_style="needed")


def timed_columns(frame: pd.DataFrame) -> set[str]:
    """The date columns with a time of day other than midnight in some row: ``write_csv``
    writes those with their time, the others as dates."""
    return {str(name) for name in frame.columns
            if pd.api.types.is_datetime64_any_dtype(frame[name].dtype)
            and _has_time(_stamps(frame[name]))}


def _stamps(column: pd.Series) -> pa.Array:
    return pa.array(column.astype("datetime64[us]"), pa.timestamp("us"), from_pandas=True)


def _has_time(stamps: pa.Array) -> bool:
    midnight = pc.equal(stamps.cast(pa.date32()).cast(pa.timestamp("us")), stamps)
    return not pc.fill_null(pc.all(midnight), True).as_py()


def _csv_table(safe: pd.DataFrame, timed: Collection[str] | None) -> pa.Table:
    """A frame's columns as Arrow arrays for the CSV writer: dates as ISO text (``timed``
    columns with their time of day; None: those of this frame that have one), text as
    Arrow text."""
    arrays, names = [], []
    for name in safe.columns:
        column = safe[name]
        if pd.api.types.is_datetime64_any_dtype(column.dtype):
            stamps = _stamps(column)
            if str(name) in timed if timed is not None else _has_time(stamps):
                arrays.append(pc.strftime(stamps, "%Y-%m-%dT%H:%M:%S"))
            else:  # as strftime "%Y-%m-%d", ~20x faster
                arrays.append(stamps.cast(pa.date32()).cast(pa.string()))
        elif column.dtype == "str" or column.dtype == object:
            arrays.append(pa.array(as_text(column), pa.string(), from_pandas=True))
        else:
            try:
                arrays.append(pa.array(column, from_pandas=True))
            except UnicodeEncodeError:  # Python text UTF-8 cannot hold (lone surrogates)
                arrays.append(pa.array(as_text(column), pa.string(), from_pandas=True))
        names.append(str(name))
    return pa.Table.from_arrays(arrays, names=names) if arrays else pa.table({})


def write_xlsx(sheets: Mapping[str, pd.DataFrame | SheetSource], path: Path,
               as_of: date | None = None, *, neutralised: bool = False,
               release: bool = False) -> list[str]:
    """One sheet per list, neutralised (unless ``neutralised`` says the caller did it: a
    sheet given as a source of pieces must be); long lists continue on further sheets. Each
    printed page is headed by its list's name and the run's as-of date, so a printed page
    says which list and which month it belongs to. ``release``: ``sheets`` is a dict the
    caller hands over, emptied of its frames as they are encoded (``write_workbook``)."""
    if not neutralised:
        sheets = {name: neutralise(frame) if isinstance(frame, pd.DataFrame) else frame
                  for name, frame in sheets.items()}
    titles = {name: f"b12screen worklist: {name}" for name in sheets}
    return write_workbook(sheets, path, footer=DISCLAIMER[:200], titles=titles,
                          subtitle=f"As of {as_of:%Y-%m-%d}" if as_of else "",
                          release=release)


def write_json(data: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n",
                    encoding="utf-8")


def run_configuration(state: RunState) -> dict[str, Any]:
    """What a run or validate read and by which settings, for its manifest: each input's
    files (hashed), the format and the rules profile (hashed), so an audit can tell what a
    month's folder was made from."""
    return {
        "inputs": {kind: [{"path": f.path, "sha256": f.sha256, "rows": f.rows,
                           "bytes": f.bytes, "encoding": f.encoding,
                           "delimiter": f.delimiter} for f in v.files]
                   for kind, v in state.inputs.items()},
        "unused_columns": {kind: list(getattr(v, "unused_columns", []))
                           for kind, v in state.inputs.items()},
        "format": {"name": state.fmt.name, "path": str(state.fmt.path),
                   "sha256": state.fmt.sha256},
        "rules": {"name": state.rules.name, "path": str(state.rules.path),
                  "sha256": state.rules.sha256,
                  "sites": {s: p.name for s, p in state.rules.sites.items()}},
    }


TOTAL_KEYS = ("rows_read", "rows_accepted", "rows_rejected", "rows_skipped_other_tests",
              "rows_exact_duplicates")


def _count(counts: dict[str, Any], key: str) -> int:
    """One input's count for a total; every input's skipped rows count as skipped."""
    if key == "rows_skipped_other_tests":
        return sum(n for k, n in counts.items() if k.startswith("rows_skipped"))
    return counts[key]


def accounting_record(state: RunState, rows_after_as_of: int | None = None
                      ) -> tuple[dict[str, Any], dict[str, int]]:
    """A manifest's ``accounting`` and its totals (repeated at its top level), the same for
    a run and a validate folder, so one audit script reads both: the SPEC's equation over
    *every* input row (labs, patients and medications: other tests and unclassified
    medicines are both "skipped"), each input's own counts under ``by_input``.
    ``rows_after_as_of``: a run's results dated after the as-of date (validate: none)."""
    by_input = state.accounting()
    totals = {key: sum(_count(c, key) for c in by_input.values()) for key in TOTAL_KEYS}
    after = {} if rows_after_as_of is None else {"rows_after_as_of": rows_after_as_of}
    return {
        "equation": "rows_read = rows_accepted + rows_rejected"
                    " + rows_skipped_other_tests + rows_exact_duplicates",
        **totals,
        **after,
        "balanced": all(c["balanced"] for c in by_input.values()),
        "by_input": by_input,
    }, totals


def rejected_frame(state: RunState) -> pd.DataFrame:
    """Every input's rejected rows in one table (each with its input, source row and
    reasons), or an empty table with the labs' columns when nothing was rejected."""
    frames = [v.rejected for v in state.inputs.values() if len(v.rejected)]
    if not frames:
        base = ["input", "source_file", "source_row", "reasons"]
        cols = base + [c for c in state.inputs["labs"].original_columns if c not in base]
        return pd.DataFrame({c: pd.Series([], dtype="int64" if c == "source_row" else "str")
                             for c in cols})
    out = pd.concat(frames, ignore_index=True)
    text_cols = [c for c in out.columns if c != "source_row"]
    out[text_cols] = out[text_cols].astype("str")
    return out


def rejected_by_reason(rejected: pd.DataFrame) -> dict[str, int]:
    """Rejected rows per reason code (a row with several reasons counts under each)."""
    if rejected.empty:
        return {}
    counts = per_reason(rejected["reasons"])
    return {code: counts[code] for code in sorted(counts)}
