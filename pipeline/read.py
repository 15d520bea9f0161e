"""Read extracts (CSV or Parquet; a file, a folder or a glob) into text columns.

Everything is read as text so that nothing is guessed before validation (patient ids keep
their leading zeros). Each row keeps its ``source_file`` and 1-based ``source_row``: the
line number in a CSV (header = line 1) or the row number in a Parquet file, so a person can
open the file at that line. Malformed CSV lines are kept as rejected rows, never dropped.
"""

from __future__ import annotations

import glob
import gzip
import hashlib
import io
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from pipeline.config import REQUIRED_COLUMNS, InputSpec
from pipeline.errors import UserError

SOURCE_FILE = "source_file"
SOURCE_ROW = "source_row"
MALFORMED = "_malformed"
DATA_SUFFIXES = (".csv", ".csv.gz", ".tsv", ".tsv.gz", ".txt", ".txt.gz", ".parquet", ".pq")
_DELIMITERS = (",", ";", "\t", "|")


@dataclass
class FileInfo:
    path: str
    sha256: str
    rows: int
    bytes: int
    encoding: str = ""
    delimiter: str = ""


@dataclass
class RawInput:
    """One input read as text: canonical columns + source columns, plus what was read."""

    kind: str
    frame: pd.DataFrame
    files: list[FileInfo]
    original_columns: list[str]
    warnings: list[str] = field(default_factory=list)


def resolve_paths(spec: str | Path, kind: str) -> list[Path]:
    """A file, a folder (its data files, sorted) or a glob pattern."""
    text = str(spec)
    path = Path(text)
    if path.is_file():
        return [path]
    if path.is_dir():
        found = sorted(p for p in path.rglob("*") if p.is_file() and _is_data(p))
        if not found:
            raise UserError(f"{kind}: folder {text} holds no .csv or .parquet files")
        return found
    if any(ch in text for ch in "*?["):
        found = sorted(Path(p) for p in glob.glob(text, recursive=True) if Path(p).is_file())
        if not found:
            raise UserError(f"{kind}: no files match {text}")
        return found
    raise UserError(f"{kind}: no such file or folder: {text}")


def _is_data(path: Path) -> bool:
    name = path.name.lower()
    return not name.startswith(".") and name.endswith(DATA_SUFFIXES)


def _is_parquet(path: Path) -> bool:
    return path.name.lower().endswith((".parquet", ".pq"))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _raw_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    if path.name.lower().endswith(".gz"):
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise UserError(f"cannot decompress {path}: not a valid gzip file") from exc
    return data


def _decode(data: bytes, encoding: str, path: Path, kind: str) -> tuple[bytes, str]:
    """Return UTF-8 bytes; 'auto' accepts UTF-8 (BOM or not), else falls back to cp1252."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
        if encoding == "auto":
            return data, "utf-8-sig"
    if encoding in ("auto", "utf-8", "utf8"):
        try:
            data.decode("utf-8")
            return data, "utf-8"
        except UnicodeDecodeError as exc:
            if encoding != "auto":
                raise UserError(f"{kind}: {path} is not valid UTF-8 (byte {exc.start});"
                                " declare its encoding in the format's [read] table") from exc
        encoding = "cp1252"
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError:
        text = data.decode("latin-1")
        encoding = "latin-1"
    except LookupError as exc:
        raise UserError(f"{kind}: unknown encoding '{encoding}' in the format") from exc
    return text.encode("utf-8"), encoding


def _sniff_delimiter(data: bytes) -> str:
    header = data.split(b"\n", 1)[0].decode("utf-8", "replace")
    counts = {d: header.count(d) for d in _DELIMITERS}
    best = max(_DELIMITERS, key=lambda d: counts[d])
    return best if counts[best] else ","


def _read_csv(path: Path, spec: InputSpec, kind: str) -> tuple[pa.Table, FileInfo, list[str]]:
    raw = _raw_bytes(path)
    info = FileInfo(path=str(path), sha256=_sha256(path), rows=0, bytes=path.stat().st_size)
    if not raw.strip():
        raise UserError(f"{kind}: {path} is empty")
    data, info.encoding = _decode(raw, spec.read.encoding, path, kind)
    delimiter = spec.read.delimiter
    if delimiter == "auto":
        delimiter = _sniff_delimiter(data)
    info.delimiter = delimiter
    header_line = data.split(b"\n", 1)[0].rstrip(b"\r").decode("utf-8")
    names = next(iter(pacsv.read_csv(
        io.BytesIO(header_line.encode() + b"\n"),
        read_options=pacsv.ReadOptions(autogenerate_column_names=True),
        parse_options=pacsv.ParseOptions(delimiter=delimiter),
        convert_options=pacsv.ConvertOptions(
            column_types={}, strings_can_be_null=False),
    ).to_pylist()), {})
    columns = [str(v).strip() for v in names.values()]
    dupes = sorted({c for c in columns if columns.count(c) > 1})
    if dupes:
        raise UserError(f"{kind}: {path} has duplicate column name(s): {', '.join(dupes)}")
    bad_lines: list[tuple[int | None, str]] = []

    def on_invalid(row: pacsv.InvalidRow) -> str:  # called only for malformed lines
        bad_lines.append((row.number, row.text))
        return "skip"

    def parse(threads: bool) -> pa.Table:
        try:
            return pacsv.read_csv(
                io.BytesIO(data),
                read_options=pacsv.ReadOptions(column_names=columns, skip_rows=1,
                                               use_threads=threads, block_size=1 << 24),
                parse_options=pacsv.ParseOptions(delimiter=delimiter,
                                                 invalid_row_handler=on_invalid),
                convert_options=pacsv.ConvertOptions(
                    column_types=dict.fromkeys(columns, pa.string()),
                    strings_can_be_null=False, quoted_strings_can_be_null=False),
            )
        except pa.ArrowInvalid as exc:
            raise UserError(f"{kind}: cannot parse {path} as delimited text"
                            f" ({_short(exc)})") from exc

    table = parse(threads=True)
    if bad_lines and any(n is None for n, _ in bad_lines):
        bad_lines.clear()  # line numbers are only known when read in one thread
        table = parse(threads=False)
    rows = table.num_rows
    line_no = pa.array(range(2, rows + 2), pa.int64()) if not bad_lines else \
        _line_numbers(data, rows, bad_lines)
    table = table.append_column(SOURCE_ROW, line_no)
    extra: list[str] = []
    if bad_lines:
        numbers = [n if n is not None else -1 for n, _ in bad_lines]
        texts = [t for _, t in bad_lines]
        bad = pa.table({c: pa.array([""] * len(texts), pa.string()) for c in columns})
        bad = bad.append_column(SOURCE_ROW, pa.array(numbers, pa.int64()))
        bad = bad.append_column(MALFORMED, pa.array(texts, pa.string()))
        table = table.append_column(MALFORMED, pa.nulls(rows, pa.string()))
        table = pa.concat_tables([table, bad])
        extra.append(f"{kind}: {len(texts)} malformed line(s) in {path} (wrong number of fields)")
    info.rows = table.num_rows
    return table, info, extra


def _line_numbers(data: bytes, rows: int, bad: list[tuple[int | None, str]]) -> pa.Array:
    """Line numbers of good rows when malformed lines were skipped (single-line records)."""
    skipped = {n for n, _ in bad if n is not None}
    total_lines = data.count(b"\n") + (0 if data.endswith(b"\n") else 1)
    good = [n for n in range(2, total_lines + 1) if n not in skipped]
    good = good[:rows] + list(range(total_lines + 1, total_lines + 1 + rows - len(good)))
    return pa.array(good, pa.int64())


def _read_parquet(path: Path, kind: str) -> tuple[pa.Table, FileInfo, list[str]]:
    info = FileInfo(path=str(path), sha256=_sha256(path), rows=0, bytes=path.stat().st_size)
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise UserError(f"{kind}: cannot read {path} as Parquet (not a Parquet file, or"
                        " truncated)") from exc
    notes = []
    columns = []
    for name, column in zip(table.column_names, table.columns, strict=True):
        typ = column.type
        if pa.types.is_integer(typ) and "id" in name.lower():
            notes.append(f"{kind}: column {name} in {path} is stored as integers; leading"
                         " zeros of ids may have been lost before b12screen read it")
        if pa.types.is_dictionary(typ):
            column = column.cast(typ.value_type)
            typ = typ.value_type
        if pa.types.is_timestamp(typ) and typ.tz is not None:
            column = pc.local_timestamp(column)
        if not (pa.types.is_string(typ) or pa.types.is_large_string(typ)):
            column = pc.cast(column, pa.string())
        elif pa.types.is_large_string(typ):
            column = column.cast(pa.string())
        columns.append(pc.fill_null(column, ""))
    table = pa.table(columns, names=[str(n).strip() for n in table.column_names])
    table = table.append_column(SOURCE_ROW, pa.array(range(1, table.num_rows + 1), pa.int64()))
    info.rows = table.num_rows
    return table, info, notes


def _short(exc: Exception) -> str:
    return str(exc).splitlines()[0][:200]


def read_input(spec_path: str | Path, spec: InputSpec) -> RawInput:
    """Read every file of one input and map source columns onto canonical names."""
    kind = spec.kind
    tables, infos, notes = [], [], []
    for path in resolve_paths(spec_path, kind):
        table, info, extra = (_read_parquet(path, kind) if _is_parquet(path)
                              else _read_csv(path, spec, kind))
        table = table.append_column(SOURCE_FILE, pa.array([str(path)] * table.num_rows,
                                                          pa.string()))
        tables.append(table)
        infos.append(info)
        notes += extra
    original = _union_columns(tables)
    for i, table in enumerate(tables):
        missing = [c for c in original if c not in table.column_names]
        for c in missing:
            table = table.append_column(c, pa.array([""] * table.num_rows, pa.string()))
        tables[i] = table.select([*original, SOURCE_ROW, SOURCE_FILE]
                                 + ([MALFORMED] if MALFORMED in table.column_names else []))
    _check_required(kind, spec, original, infos)
    if any(MALFORMED in t.column_names for t in tables):
        tables = [t if MALFORMED in t.column_names
                  else t.append_column(MALFORMED, pa.nulls(t.num_rows, pa.string()))
                  for t in tables]
    table = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
    frame = table.to_pandas()
    return RawInput(kind=kind, frame=frame, files=infos, original_columns=original,
                    warnings=notes)


def _union_columns(tables: list[pa.Table]) -> list[str]:
    seen: dict[str, None] = {}
    for table in tables:
        for name in table.column_names:
            if name not in (SOURCE_ROW, SOURCE_FILE, MALFORMED):
                seen.setdefault(name, None)
    return list(seen)


def _check_required(kind: str, spec: InputSpec, found: list[str], infos: list[FileInfo]) -> None:
    lower = {c.lower(): c for c in found}
    missing = []
    for canon in REQUIRED_COLUMNS[kind]:
        sources = spec.columns.get(canon, (canon,))
        if not any(s in found or s.lower() in lower for s in sources):
            missing.append(sources[0] if len(sources) == 1 else " or ".join(sources))
    if missing:
        where = infos[0].path if len(infos) == 1 else f"{len(infos)} files"
        shown = ", ".join(found) if found else "(none)"
        raise UserError(f"{kind}: required column {', '.join(missing)} missing in {where};"
                        f" columns found: {shown}")


def canonical_view(raw: RawInput, spec: InputSpec,
                   prefer: dict[str, set[str]] | None = None) -> pd.DataFrame:
    """Canonical columns (text, stripped, missing tokens -> empty) in a new frame.

    A canonical column mapped to several source columns takes the first non-empty one.
    With ``prefer`` (e.g. mapped test codes), the first source whose value is in the set
    wins, so an OMOP row with an unmapped source value but a mapped concept id is kept.
    Column names match case-insensitively so 'Patient_ID' works for 'patient_id'.
    """
    frame = raw.frame
    lower = {c.lower(): c for c in frame.columns}
    tokens = {t.strip().lower() for t in spec.read.missing_values}
    out: dict[str, pd.Series] = {}
    for canon, sources in spec.columns.items():
        series: pd.Series | None = None
        for source in sources:
            name = source if source in frame.columns else lower.get(source.lower())
            if name is None:
                continue
            col = _clean_text(frame[name], tokens)
            if series is None:
                series = col
            elif prefer and canon in prefer:
                wanted = prefer[canon]
                known = series.str.upper().isin(wanted)
                series = series.mask(~known & (col.str.upper().isin(wanted) | (series == "")),
                                     col)
            else:
                series = series.mask(series == "", col)
        if series is not None:
            mapping = spec.values.get(canon)
            if mapping:
                series = _remap(series, mapping)
            out[canon] = series
    result = pd.DataFrame(out, index=frame.index)
    result[SOURCE_FILE] = frame[SOURCE_FILE]
    result[SOURCE_ROW] = frame[SOURCE_ROW]
    if MALFORMED in frame.columns:
        result[MALFORMED] = frame[MALFORMED].notna()
    return result


def _clean_text(series: pd.Series, tokens: set[str]) -> pd.Series:
    """Strip whitespace and blank out missing-value tokens, working on unique values."""
    codes, uniques = pd.factorize(series, use_na_sentinel=True)
    cleaned = pd.Series(uniques, dtype="str").str.strip()
    cleaned = cleaned.mask(cleaned.str.lower().isin(tokens), "")
    values = cleaned.to_numpy(dtype=object)
    out = pd.array(values, dtype="str").take(codes, allow_fill=True) if len(values) \
        else pd.array([""] * len(series), dtype="str")
    return pd.Series(out, index=series.index, dtype="str").fillna("")


def _remap(series: pd.Series, mapping: dict[str, str]) -> pd.Series:
    lowered = {k.strip().lower(): v for k, v in mapping.items()}
    mapped = series.str.lower().map(lowered)
    return mapped.fillna(series).astype("str")

