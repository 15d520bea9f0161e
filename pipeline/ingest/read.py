"""Read extracts (CSV or Parquet; a file, a folder or a glob) into text columns.

Everything is read as text so that nothing is guessed before validation (patient ids keep
their leading zeros). Each row keeps its ``source_file`` and 1-based ``source_row``: the
line number in a CSV (header = line 1; exact with blank lines and quoted line breaks) or the
row number in a Parquet file, so a person can open the file at that line. Malformed CSV lines
are kept as rejected rows, never dropped.

Real exports are untidy, so the reader detects what it can: gzip, the encoding (UTF-8 or
UTF-16, each with or without BOM, else cp1252), the delimiter among ``,`` ``;`` tab ``|``,
CRLF, blank header cells, and Parquet whatever its physical types. Whole-input problems (nothing
to read, a required column missing) are ``UserError``s naming the file and column.
"""

from __future__ import annotations

import csv
import glob
import gzip
import hashlib
import io
import os
import re
import zlib
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from pipeline.config import CANONICAL_COLUMNS, REQUIRED_COLUMNS, InputSpec
from pipeline.errors import UserError
from pipeline.ingest.csv_records import MALFORMED_ROW, split_records
from pipeline.kernels.arrow import cell_edges
from pipeline.run_record import is_run_folder

#: The reader's own columns. Their names start with a control character that no column name
#: of an input can hold (header names are cleaned of control characters), so an input column
#: called ``source_row``, ``reasons`` or ``_malformed`` is just another input column: it can
#: neither break the run nor replace the product's values. Outputs name them in plain words.
INTERNAL = "\x1f"
SOURCE_FILE = f"{INTERNAL}source_file"
SOURCE_ROW = f"{INTERNAL}source_row"
MALFORMED = f"{INTERNAL}malformed"
#: Why a malformed record was rejected: ``malformed_row`` (wrong number of fields, or a quote
#: never closed) or ``oversized_field`` (a record over 1 MiB); null on good rows.
MALFORMED_REASON = f"{INTERNAL}malformed_reason"
#: The columns a malformed line brings: its text and why it was rejected.
MALFORMED_COLUMNS = (MALFORMED, MALFORMED_REASON)


def is_internal(name: str) -> bool:
    """Whether a column is one of the reader's own (no input column name can be)."""
    return name.startswith(INTERNAL)
#: Columns never given missing-value tokens: short words there are real codes (``NA`` sodium,
#: ``K`` potassium, ``CA`` calcium), so only an empty cell is missing (SPEC rev 2).
CODE_COLUMNS = frozenset({"test_code", "unit", "medication"})
#: Keys shared by several inputs: having one says nothing about which input a file is.
SHARED_KEYS = frozenset({"patient_id", "person_id", "practice_id"})
DATA_SUFFIXES = (".csv", ".csv.gz", ".tsv", ".tsv.gz", ".txt", ".txt.gz", ".parquet", ".pq")
_DELIMITERS = (",", ";", "\t", "|")
_PARQUET_MAGIC = b"PAR1"
_ZIP_MAGIC = b"PK\x03\x04"
_SNIFF_LINES = 50
#: Canonical columns whose values repeat heavily (codes, units, results, dates, sites): read
#: from Parquet as dictionaries (pandas categoricals), so they are decoded, cleaned and
#: converted once per distinct value and held as small codes; a third of the memory.
DICTIONARY_COLUMNS = {"labs": ("test_code", "result", "unit", "practice_id", "site_id",
                               "censor", "collected_at")}


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
    #: files whose text is taken as it is (Parquet): missing-value tokens never apply there
    parquet_files: frozenset[str] = frozenset()
    #: columns the format maps to nothing (reported in the manifest)
    unused_columns: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------- locating


def resolve_paths(spec_path: str | Path, kind: str, spec: InputSpec | None = None,
                  notes: list[str] | None = None) -> list[Path]:
    """A file, a folder (its extracts, recursively, sorted) or a glob pattern.

    In a folder or glob, files that are not extracts (``README.md``, ``notes.txt``: not a
    data file, or a text file whose first line names none of the input's columns) are
    skipped with a note appended to ``notes``; a file given by name is always read.
    """
    text = str(spec_path)
    path = Path(text)
    if path.is_file():
        return [path]
    runs: list[str] = []
    if path.is_dir():
        candidates = _folder_files(path, runs)
        where = f"folder {text}"
    elif any(ch in text for ch in "*?["):
        candidates = sorted(Path(p) for p in glob.glob(text, recursive=True) if Path(p).is_file())
        if not candidates:
            raise UserError(f"{kind}: no files match {text}")
        candidates = _outside_runs(candidates, _glob_base(text), runs)
        where = f"files matching {text}"
    else:
        raise UserError(f"{kind}: no such file or folder: {text}")
    if runs and notes is not None:
        notes.append(f"{kind}: {where} {'holds' if path.is_dir() else 'include'} b12screen "
                     f"run folder(s) "
                     f"{', '.join(runs[:5])}{' …' if len(runs) > 5 else ''}, whose outputs "
                     "are not read as input")
    found = [p for p in candidates if _is_data(p) and (spec is None or _is_extract(p, spec))]
    kept = set(found)
    skipped = [p for p in candidates if p not in kept]
    if not found:
        raise UserError(f"{kind}: {where} holds no .csv or .parquet files")
    if skipped and notes is not None:
        names = ", ".join(str(p.relative_to(path)) if path.is_dir() else p.name
                          for p in skipped[:5])
        more = f" and {len(skipped) - 5} more" if len(skipped) > 5 else ""
        notes.append(f"{kind}: {len(skipped)} file(s) in {where} are not extracts and were "
                     f"skipped: {names}{more}")
    return found


def _folder_files(folder: Path, runs: list[str]) -> list[Path]:
    """A folder's files, recursively and sorted, leaving out hidden ones (dot- and
    underscore-names: editor backups, ``_SUCCESS``, ``.DS_Store``) and b12screen's own run
    folders (appended to ``runs``): a run written beside its input (``--out`` inside
    the input's folder) must not be read back as next month's labs."""
    files: list[Path] = []
    for root, dirs, names in os.walk(folder):
        here = Path(root)
        dirs[:] = sorted(d for d in dirs if not d.startswith((".", "_")))
        for d in list(dirs):
            if is_run_folder(here / d):
                dirs.remove(d)
                runs.append((here / d).relative_to(folder).as_posix())
        files += [here / n for n in names if not n.startswith((".", "_"))
                  and (here / n).is_file()]
    return sorted(files)


def _glob_base(pattern: str) -> Path:
    """The folder a glob pattern starts from: its leading parts without a wildcard."""
    parts = []
    for part in Path(pattern).parts[:-1]:
        if any(ch in part for ch in "*?["):
            break
        parts.append(part)
    return Path(*parts) if parts else Path(".")


def _outside_runs(files: list[Path], base: Path, runs: list[str]) -> list[Path]:
    """``files`` (a glob's matches) but those inside a b12screen run folder below ``base``
    (appended to ``runs``): ``'exports/**/*.csv'`` must not read a run's worklists."""
    verdict: dict[Path, bool] = {}

    def in_run(folder: Path) -> bool:  # each folder looked at once, however many files
        if folder not in verdict:
            if folder == base or folder.parent == folder:
                verdict[folder] = False
            elif in_run(folder.parent):
                verdict[folder] = True
            else:  # a link to a run folder (``latest``) is one too: the glob follows it
                verdict[folder] = is_run_folder(folder.resolve() if folder.is_symlink()
                                                else folder)
                if verdict[folder]:
                    runs.append(folder.as_posix())
        return verdict[folder]

    return [f for f in files if not in_run(f.parent)]


def _is_data(path: Path) -> bool:
    name = path.name.lower()
    return not name.startswith((".", "_")) and name.endswith(DATA_SUFFIXES)


def _is_extract(path: Path, spec: InputSpec) -> bool:
    """Whether a data file found in a folder is an extract of this input: any Parquet file,
    or a text file whose first line names at least one of the input's columns (so a file
    of notes is skipped, while a real extract with a misspelt column is still read, and
    stopped with a clear message)."""
    try:
        if _is_parquet(path):
            return True
        with path.open("rb") as fh:
            head = fh.read(1 << 16)
    except OSError:
        return True  # let the reader report it
    if head[:2] == b"\x1f\x8b":
        return True
    wide = _utf16(head)  # read as the reader will read it
    head = head[:len(head) - len(head) % 2] if wide else head
    text = head.decode(wide or "utf-8", "replace").lstrip("\ufeff\r\n \t")
    cells = set(_any_delimiter_cells(text.split("\n", 1)[0].lower()))
    known = {s.lower() for sources in spec.columns.values() for s in sources}
    known |= {c.lower() for c in CANONICAL_COLUMNS.get(spec.kind, ())}
    return bool(cells & known)


def _any_delimiter_cells(line: str) -> list[str]:
    """A line's cells split on any delimiter the reader knows, unquoted: for telling a
    header line apart before (or without) knowing its delimiter."""
    return [c.strip().strip('"').strip() for c in re.split(r"[,;\t|]", line)]


def _is_parquet(path: Path) -> bool:
    if path.name.lower().endswith((".parquet", ".pq")):
        return True
    with path.open("rb") as fh:
        return fh.read(4) == _PARQUET_MAGIC


def sha256_file(path: Path) -> str:
    """A file's sha256, read in blocks (hashlib releases the GIL on each, so files can be
    hashed on a thread while other work goes on)."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _file_info(path: Path) -> FileInfo:
    return FileInfo(path=str(path), sha256=sha256_file(path), rows=0, bytes=path.stat().st_size)


# ------------------------------------------------------------------------- decoding CSV


def _raw_bytes(path: Path, kind: str) -> bytes:
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise UserError(f"{kind}: cannot decompress {path}: not a valid gzip file, or "
                            "truncated") from exc
    elif path.name.lower().endswith(".gz"):
        raise UserError(f"{kind}: cannot decompress {path}: not a valid gzip file, or "
                        "truncated")
    if data[:4] == _ZIP_MAGIC or path.suffix.lower() in (".xlsx", ".xls", ".xlsm"):
        raise UserError(f"{kind}: {path} is a spreadsheet or zip archive, not CSV; save it "
                        "as CSV and read that")
    return data


def _decode(data: bytes, encoding: str, path: Path, kind: str) -> tuple[bytes, str, list[str]]:
    """Return UTF-8 bytes, the encoding used and any warning.

    ``auto``: a BOM decides (UTF-8 or UTF-16); so do NUL bytes in every second byte (UTF-16
    without a BOM); valid UTF-8 is UTF-8; text that is mostly UTF-8
    with a few stray bytes keeps its UTF-8 and the stray bytes become U+FFFD (with a warning);
    anything else is cp1252 (latin-1 for the five bytes cp1252 leaves undefined).
    """
    notes: list[str] = []
    if encoding == "auto":
        if data.startswith(b"\xef\xbb\xbf"):
            encoding = "utf-8-sig"
        elif (wide := _utf16(data)) is not None:
            encoding = wide
        else:
            try:
                data.decode("utf-8")
                return data, "utf-8", notes
            except UnicodeDecodeError:
                text = data.decode("utf-8", "replace")
                stray = text.count("\ufffd")
                multibyte = _utf8_sequences(data)
                if multibyte >= stray:
                    notes.append(f"{kind}: {stray} byte(s) in {path} are not valid UTF-8 and "
                                 "were replaced by U+FFFD; declare the encoding in the format's"
                                 " [read] table if this is wrong")
                    return text.encode("utf-8"), "utf-8 (invalid bytes replaced)", notes
                encoding = "cp1252"
    elif encoding.lower().replace("_", "-") in ("utf-8", "utf8"):
        try:
            data.decode("utf-8-sig")  # checked only: valid UTF-8 is used as it is
        except UnicodeDecodeError as exc:
            raise UserError(f"{kind}: {path} is not valid UTF-8 ({_where(data, exc.start)});"
                            " declare its encoding in the format's [read] table") from exc
        return data.removeprefix(b"\xef\xbb\xbf"), "utf-8", notes
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as exc:
        if encoding != "cp1252":
            raise UserError(f"{kind}: {path} cannot be decoded as {encoding} "
                            f"({_where(data, exc.start)})") from exc
        text, encoding = data.decode("latin-1"), "latin-1"
    except LookupError as exc:  # config checks names; kept for direct callers
        raise UserError(f"{kind}: unknown encoding '{encoding}'") from exc
    return text.lstrip("\ufeff").encode("utf-8"), encoding, notes


def _utf16(data: bytes) -> str | None:
    """The UTF-16 codec for ``data``, or None where it is not UTF-16: ``utf-16`` with a
    byte-order mark; ``utf-16-le`` or ``utf-16-be`` without one (SQL Server's ``bcp -w``
    writes it so): text never holds NUL bytes, and UTF-16 of the Latin letters, digits and
    punctuation an extract is made of has one in every second byte (the odd bytes
    little-endian, the even ones big-endian)."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "utf-16"
    sample = data[:4096]
    sample = sample[:len(sample) - len(sample) % 2]
    if len(sample) < 4:
        return None
    even, odd = sample[0::2].count(0), sample[1::2].count(0)
    half = len(sample) // 2
    if odd >= 0.9 * half and even <= 0.1 * half:
        return "utf-16-le"
    if even >= 0.9 * half and odd <= 0.1 * half:
        return "utf-16-be"
    return None


def _utf8_sequences(data: bytes) -> int:
    """About how many multi-byte UTF-8 characters ``data`` holds (lead + continuation byte)."""
    buf = np.frombuffer(data, dtype=np.uint8)
    lead = (buf[:-1] >= 0xC2) & (buf[:-1] <= 0xF4)
    follow = (buf[1:] >= 0x80) & (buf[1:] <= 0xBF)
    return int(np.count_nonzero(lead & follow))


def _where(data: bytes, offset: int) -> str:
    """'line N, byte M' (both 1-based) so a person can find a bad byte."""
    line = data.count(b"\n", 0, offset) + 1
    return f"line {line}, byte {offset + 1}"


def _outside_quotes(line: str) -> str:
    return re.sub(r'"[^"]*"', "", line)


def _sniff_delimiter(data: bytes) -> str:
    """The candidate found in the header that splits the most sample lines the same way."""
    lines = [ln for ln in data[: 1 << 16].decode("utf-8", "replace").splitlines() if ln.strip()]
    sample = [_outside_quotes(ln) for ln in lines[:_SNIFF_LINES]]
    if not sample:
        return ","
    complete = sample[:-1] if len(sample) > 2 else sample  # the last line may be cut short
    best, best_score = ",", (-1.0, 0)
    for delim in _DELIMITERS:
        header = sample[0].count(delim)
        if header == 0:
            continue
        body = complete[1:] or complete
        agree = sum(ln.count(delim) == header for ln in body) / len(body)
        if (agree, header) > best_score:
            best, best_score = delim, (agree, header)
    return best


# ------------------------------------------------------------------------- parsing CSV


def _header(data: bytes, delimiter: str, path: Path, kind: str,
            mapped: frozenset[str] | None = None) -> tuple[list[str], list[str]]:
    """Header names, stripped; blank ones become ``column_<n>``; a repeated name is an
    error where the format maps it, else renamed (``_check_duplicates``); and notes."""
    first = data.split(b"\n", 1)[0].rstrip(b"\r") + b"\n"
    try:
        row = pacsv.read_csv(
            io.BytesIO(first),
            read_options=pacsv.ReadOptions(autogenerate_column_names=True),
            parse_options=pacsv.ParseOptions(delimiter=delimiter),
            convert_options=pacsv.ConvertOptions(column_types={}, strings_can_be_null=False),
        ).to_pylist()[0]
    except (pa.ArrowInvalid, IndexError) as exc:
        raise UserError(f"{kind}: cannot read the header line of {path}") from exc
    names = column_names(["" if v is None else str(v) for v in row.values()])
    return _check_duplicates(names, path, kind, mapped)


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def column_names(names: list[str]) -> list[str]:
    """Header names as the product uses them: control characters dropped (so none can
    take the reader's own column names), stripped, a blank one named ``column_<n>``."""
    cleaned = [_CONTROL.sub("", str(n)).strip() for n in names]
    return [n or f"column_{i + 1}" for i, n in enumerate(cleaned)]


#: Data lines looked at to tell a trailing delimiter on the data lines or the header alone
#: (a fixed sample: the loops below run over at most this many lines, never over rows).
_TRAILING_SAMPLE = 200


def _trailing_delimiter(data: bytes, delimiter: str, columns: list[str]) -> list[str]:
    """The header's columns, fitted to data lines that end with a delimiter the header does
    not end with, or the reverse (some exports write one or the other so): most of the
    first ``_TRAILING_SAMPLE`` data lines have one field more, and it is empty (an unused
    column ``column_<n>`` is added), or one field fewer than a header whose last cell is
    blank (that cell is dropped). Every row would otherwise be rejected as malformed; a
    stray quote or a bad line among them still costs only its own row."""
    fields = _sample_fields(data, delimiter)
    if not fields:
        return columns
    n = len(columns)
    more = sum(len(f) == n + 1 and not f[-1].strip() for f in fields)
    if more * 2 > len(fields):
        return [*columns, f"column_{n + 1}"]
    fewer = sum(len(f) == n - 1 for f in fields)
    if columns[-1] == f"column_{n}" and n > 1 and fewer * 2 > len(fields):
        return columns[:-1]
    return columns


def _sample_fields(data: bytes, delimiter: str) -> list[list[str]]:
    """The fields of each of the first non-blank data lines, each line parsed on its own
    (so a stray quote spoils only its line): at most ``_TRAILING_SAMPLE`` lines of the
    first MiB."""
    head = data[:1 << 20]  # not the whole file: splitting it would copy it
    lines = head.split(b"\n")[1:]
    if len(head) < len(data):
        lines = lines[:-1]  # complete lines only
    text = [line.decode("utf-8", "replace").rstrip("\r") for line in lines
            if line.strip(b"\r \t")][:_TRAILING_SAMPLE]
    return [_line_fields(line, delimiter) for line in text]


def _line_fields(line: str, delimiter: str) -> list[str]:
    """One line's fields, or none where it is not delimited text (NULs, a lone CR)."""
    try:
        return next(csv.reader([line], delimiter=delimiter), [])
    except csv.Error:
        return []


def _check_duplicates(names: list[str], path: Path | str, kind: str,
                      mapped: frozenset[str] | None = None) -> tuple[list[str], list[str]]:
    """(the names, each unique; a note per file that had repeats): a repeated name that
    the format maps (lower case, in ``mapped``; every name when None) stops the run, as
    either column could be meant; a repeated name the format does not use (two
    ``comment`` columns) is read as ``comment``, ``comment_2`` and reported as unused."""
    lowered = pd.Series([n.lower() for n in names])
    repeated = lowered.duplicated(keep=False).to_numpy()
    if not repeated.any():
        return names, []
    fatal = [r and (mapped is None or n.lower() in mapped)
             for n, r in zip(names, repeated, strict=True)]
    if any(fatal):
        shown = list(dict.fromkeys(n for n, f in zip(names, fatal, strict=True) if f))
        raise UserError(f"{kind}: {path} has duplicate column name(s): {', '.join(shown)}")
    taken = set(lowered)
    unique, seen = [], set()
    for name in names:  # a handful of header cells
        new, k = name, 1
        while new.lower() in seen or (k > 1 and new.lower() in taken):
            k += 1
            new = f"{name}_{k}"
        seen.add(new.lower())
        unique.append(new)
    renamed = [f"{n} -> {u}" for n, u in zip(names, unique, strict=True) if n != u]
    return unique, [f"{kind}: {path} has repeated column name(s) that the format does not "
                    f"use; read as {', '.join(renamed)}"]


def describe_file(path: str | Path, rows: int) -> FileInfo:
    """A file's size, hash and row count, for the manifest."""
    info = _file_info(Path(path))
    info.rows = rows
    return info


def _read_csv(path: Path, spec: InputSpec, kind: str) -> tuple[pa.Table, FileInfo, list[str]]:
    info = _file_info(path)
    raw = _raw_bytes(path, kind)
    if not raw.strip():
        raise UserError(f"{kind}: {path} is empty")
    data, info.encoding, notes = _decode(raw, spec.read.encoding, path, kind)
    stripped = data.lstrip(b"\r\n \t")
    offset = data[: len(data) - len(stripped)].count(b"\n")  # blank lines above the header
    data = stripped
    if not data.strip():
        raise UserError(f"{kind}: {path} is empty")
    delimiter = spec.read.delimiter
    if delimiter == "auto":
        delimiter = _sniff_delimiter(data)
    info.delimiter = delimiter
    columns, renamed = _header(data, delimiter, path, kind, mapped_names(spec))
    notes += renamed
    columns = _trailing_delimiter(data, delimiter, columns)
    # records found before Arrow parses: a stray quote or an oversized field costs its own
    # record, and Arrow reads one row (or one invalid row) per record of ``records.data``
    records = split_records(data, delimiter, len(columns))
    del data
    invalid: list[tuple[int | None, str]] = []

    def on_invalid(row: pacsv.InvalidRow) -> str:  # records with the wrong number of fields
        invalid.append((row.number, row.text))
        return "skip"

    def parse(threads: bool) -> pa.Table:
        try:
            return pacsv.read_csv(
                io.BytesIO(records.data),
                read_options=pacsv.ReadOptions(column_names=columns, skip_rows=1,
                                               use_threads=threads, block_size=1 << 24),
                parse_options=pacsv.ParseOptions(delimiter=delimiter,
                                                 invalid_row_handler=on_invalid,
                                                 newlines_in_values=records.multiline),
                convert_options=pacsv.ConvertOptions(
                    column_types=dict.fromkeys(columns, pa.string()),
                    strings_can_be_null=False, quoted_strings_can_be_null=False),
            )
        except pa.ArrowInvalid as exc:  # not expected: records are split and size-capped
            raise UserError(f"{kind}: cannot parse {path} as delimited text") from exc

    table = parse(threads=True)
    if any(n is None for n, _ in invalid):
        invalid.clear()  # record numbers are only known when read in one thread
        table = parse(threads=False)
    rows = records.lines[1:] + offset  # Arrow's record n (header = 1) is rows[n - 2]
    numbers = np.array([n - 2 for n, _ in invalid], dtype=np.int64)
    numbers = numbers[(numbers >= 0) & (numbers < len(rows))]
    is_invalid = np.zeros(len(rows), dtype=bool)
    is_invalid[numbers] = True
    good = rows[~is_invalid]
    if len(good) != table.num_rows:  # cannot happen (property-tested); never fail on it
        good = np.arange(2, table.num_rows + 2, dtype=np.int64) + offset
    table = table.append_column(SOURCE_ROW, pa.array(good, pa.int64()))
    lines = np.concatenate((rows[numbers] if len(numbers) == len(invalid)
                            else np.full(len(invalid), -1, dtype=np.int64),
                            records.bad_lines + offset))
    if len(lines):
        texts = [t for _, t in invalid] + records.bad_texts
        reasons = [MALFORMED_ROW] * len(invalid) + records.bad_reasons
        bad = pa.table({c: pa.array([""] * len(texts), pa.string()) for c in columns})
        bad = bad.append_column(SOURCE_ROW, pa.array(lines, pa.int64()))
        bad = bad.append_column(MALFORMED, pa.array(texts, pa.string()))
        bad = bad.append_column(MALFORMED_REASON, pa.array(reasons, pa.string()))
        table = table.append_column(MALFORMED, pa.nulls(table.num_rows, pa.string()))
        table = table.append_column(MALFORMED_REASON, pa.nulls(table.num_rows, pa.string()))
        table = pa.concat_tables([table, bad])
        table = table.take(pc.sort_indices(table[SOURCE_ROW]))
        counts = Counter(reasons)
        if invalid:
            notes.append(f"{kind}: {len(invalid)} malformed line(s) in {path} (wrong number "
                         f"of fields; expected {len(columns)})")
        if counts[MALFORMED_ROW] > len(invalid):
            notes.append(f"{kind}: {counts[MALFORMED_ROW] - len(invalid)} line(s) in {path} "
                         "with a quote that is never closed (each rejected on its own)")
        if len(reasons) > counts[MALFORMED_ROW]:
            notes.append(f"{kind}: {len(reasons) - counts[MALFORMED_ROW]} record(s) in {path}"
                         " longer than 1 MiB (rejected as oversized_field)")
    info.rows = table.num_rows
    return table, info, notes


# ----------------------------------------------------------------------------- Parquet


def _unreadable(path: Path, kind: str) -> str:
    return f"{kind}: cannot read {path} as Parquet (not a Parquet file, or truncated)"


@dataclass(frozen=True)
class Piece:
    """A file of an input, or a run of row groups of a large Parquet file, read as one."""

    path: str
    file_index: int
    row_groups: tuple[int, ...] | None = None
    first_row: int = 1


def plan_pieces(spec_path: str | Path, kind: str, rows_per_piece: int,
                spec: InputSpec | None = None, notes: list[str] | None = None) -> list[Piece]:
    """The pieces to read an input in: one per CSV file, and runs of row groups of about
    ``rows_per_piece`` rows of each Parquet file, so a large file is read by several
    workers. Source rows stay those of the whole file."""
    pieces: list[Piece] = []
    for index, path in enumerate(resolve_paths(spec_path, kind, spec, notes)):
        if not _is_parquet(path):
            pieces.append(Piece(str(path), index))
            continue
        try:
            meta = pq.ParquetFile(path).metadata
        except (pa.ArrowException, OSError) as exc:
            raise UserError(_unreadable(path, kind)) from exc
        sizes = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
        if sum(sizes) <= rows_per_piece:
            pieces.append(Piece(str(path), index))
            continue
        start, first, rows = 0, 1, 0
        for i, size in enumerate(sizes):
            if i > start and rows + size > rows_per_piece:
                pieces.append(Piece(str(path), index, tuple(range(start, i)), first))
                start, first, rows = i, first + rows, 0
            rows += size
        pieces.append(Piece(str(path), index, tuple(range(start, len(sizes))), first))
    return pieces


def _read_parquet(path: Path, kind: str, row_groups: tuple[int, ...] | None = None,
                  first_row: int = 1, dictionary: frozenset[str] = frozenset(),
                  mapped: frozenset[str] | None = None
                  ) -> tuple[pa.Table, FileInfo, set[str], list[str]]:
    """Any Parquet file as text columns, the names of its integer columns, and notes.

    Nested columns (lists, structs) have no text form and are left out with a note; if one
    was a required column the missing-column check then names it. With ``row_groups`` only
    those groups are read (their first row being ``first_row`` of the file), and the file is
    not hashed: the caller describes the whole file once. Text columns named (lower case) in
    ``dictionary`` are read as dictionaries.
    """
    with ThreadPoolExecutor(max_workers=1) as pool:  # hashed while it is read
        digest = pool.submit(_file_info, path) if row_groups is None else None
        table, integers, notes = _parquet_text(path, kind, row_groups, first_row, dictionary,
                                               mapped)
    info = digest.result() if digest else FileInfo(str(path), "", 0, 0)
    info.rows = table.num_rows
    return table, info, integers, notes


def _parquet_text(path: Path, kind: str, row_groups: tuple[int, ...] | None, first_row: int,
                  dictionary: frozenset[str], mapped: frozenset[str] | None = None
                  ) -> tuple[pa.Table, set[str], list[str]]:
    unreadable = _unreadable(path, kind)
    try:
        schema = pq.read_schema(path)
    except (pa.ArrowException, OSError) as exc:
        raise UserError(unreadable) from exc
    names, renamed = _check_duplicates(column_names(schema.names), path, kind, mapped)
    as_dictionary = [f.name for n, f in zip(names, schema, strict=True)
                     if n.lower() in dictionary and _is_text(f.type)]
    try:
        parquet = pq.ParquetFile(path, read_dictionary=as_dictionary)
        table = (parquet.read() if row_groups is None
                 else parquet.read_row_groups(list(row_groups)))
    except (pa.ArrowException, OSError) as exc:
        raise UserError(unreadable) from exc
    integers = {n.lower() for n, f in zip(names, schema, strict=True)
                if pa.types.is_integer(f.type)}
    columns, kept, notes = [], [], renamed
    for name, column in zip(names, table.columns, strict=True):
        text = _as_text(column, encode=name.lower() in dictionary)
        if text is None:
            notes.append(f"{kind}: column {name} in {path} has type {column.type}, which has "
                         "no text form; it was not read")
            continue
        columns.append(text)
        kept.append(name)
    if not kept:
        raise UserError(f"{kind}: {path} has no column that can be read as text")
    table = pa.table(columns, names=kept)
    table = table.append_column(SOURCE_ROW, pa.array(
        np.arange(first_row, first_row + table.num_rows), pa.int64()))
    return table, integers, notes


def _as_text(column: pa.ChunkedArray, encode: bool = False) -> pa.ChunkedArray | None:
    """One Parquet column as text: numbers as written, timestamps as wall-clock ISO text.

    With ``encode`` a typed column (a typed extract's results and dates) is
    dictionary-encoded on its values first and only its distinct values are written as
    text: the same text per cell, without formatting and then hashing every row's (at
    10M rows about a second each for the results and the dates).
    """
    typ = column.type
    if pa.types.is_null(typ):  # every cell missing: how pandas writes an all-None column
        return pc.fill_null(column.cast(pa.string()), "")
    if pa.types.is_dictionary(typ) and _is_text(typ.value_type):
        typ = pa.dictionary(pa.int32(), typ.value_type)  # room for the '' of missing cells
        return pa.chunked_array([_blank_nulls(c) for c in column.cast(typ).chunks], typ)
    if pa.types.is_dictionary(typ):
        column, typ = column.cast(typ.value_type), typ.value_type
    if pa.types.is_timestamp(typ) and typ.tz is not None:
        column = pc.local_timestamp(column)
    if encode and not (_is_text(typ) or _is_binary(typ)):
        encoded = _encoded_text(column)
        if encoded is not None:
            return encoded
    try:
        if _is_binary(typ):
            column = column.cast(pa.string())
        elif not pa.types.is_string(typ):
            column = pc.cast(column, pa.string())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    return pc.fill_null(column, "")


def _encoded_text(column: pa.ChunkedArray) -> pa.ChunkedArray | None:
    """A typed column as a text dictionary (missing cells ''), or None where Arrow cannot
    encode or write its type. Arrow encodes floating point by its bits (0 and -0 apart),
    so each distinct value keeps the text its rows would have had."""
    try:
        encoded = column.dictionary_encode()
        text = [pa.DictionaryArray.from_arrays(c.indices, pc.cast(c.dictionary, pa.string()))
                for c in encoded.chunks]
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    typ = pa.dictionary(pa.int32(), pa.string())
    return pa.chunked_array([_blank_nulls(c) for c in text], typ)


def _is_text(typ: pa.DataType) -> bool:
    return pa.types.is_string(typ) or pa.types.is_large_string(typ)


def _is_binary(typ: pa.DataType) -> bool:
    return pa.types.is_binary(typ) or pa.types.is_large_binary(typ)


def _blank_nulls(chunk: pa.DictionaryArray) -> pa.DictionaryArray:
    """A text dictionary with missing cells as '' (as every other text column reads)."""
    if not chunk.null_count:
        return chunk
    dictionary = chunk.dictionary
    at = pc.index(dictionary, "").as_py()
    if at < 0:
        at = len(dictionary)
        dictionary = pa.concat_arrays([dictionary, pa.array([""], dictionary.type)])
    indices = pc.fill_null(chunk.indices, pa.scalar(at, chunk.indices.type))
    return pa.DictionaryArray.from_arrays(indices, dictionary)


def _decoded(tables: list[pa.Table]) -> list[pa.Table]:
    """Files whose column types differ (a dictionary in one file, plain text in another,
    e.g. a CSV beside a Parquet file) get plain text in that column, so they stack."""
    types: dict[str, set[pa.DataType]] = {}
    for table in tables:
        for f in table.schema:
            types.setdefault(f.name, set()).add(f.type)
    mixed = {n for n, ts in types.items() if len(ts) > 1}
    return [_plain_columns(table, mixed) for table in tables] if mixed else tables


def plain_text(table: pa.Table) -> pa.Table:
    """Every dictionary text column (but the source file's) decoded to plain text: for
    pieces of an input converted one by one, whose dictionaries differ."""
    return _plain_columns(table, set(table.column_names) - {SOURCE_FILE})


def _plain_columns(table: pa.Table, names: set[str]) -> pa.Table:
    """``table`` with its dictionary columns among ``names`` as plain text."""
    for i, f in enumerate(table.schema):
        if f.name in names and pa.types.is_dictionary(f.type):
            table = table.set_column(i, f.name, table.column(i).cast(pa.string()))
    return table


# ------------------------------------------------------------------------------- input


@dataclass
class FileTable:
    """One file (or a piece of a Parquet file) as text columns, before the files of an
    input are lined up with each other."""

    table: pa.Table
    info: FileInfo
    notes: list[str]
    integer_ids: list[tuple[str, str]]


def read_file(path: Path, spec: InputSpec, row_groups: tuple[int, ...] | None = None,
              first_row: int = 1) -> FileTable:
    """One file of an input as text columns with ``source_row`` and ``source_file``; its
    required columns checked. ``row_groups`` reads part of a Parquet file (see
    :func:`_read_parquet`)."""
    kind = spec.kind
    integer_ids: list[tuple[str, str]] = []
    if _is_parquet(path):
        dictionary = frozenset(source.lower() for canon in DICTIONARY_COLUMNS.get(kind, ())
                               for source in spec.columns.get(canon, ()))
        table, info, integers, notes = _read_parquet(path, kind, row_groups, first_row,
                                                     dictionary, mapped_names(spec))
        if not spec.read.integer_ids:
            id_sources = {s.lower() for s in spec.columns.get("patient_id", ())}
            integer_ids = [(c, str(path)) for c in sorted(integers & id_sources)]
    else:
        table, info, notes = _read_csv(path, spec, kind)
    names = [c for c in table.column_names if not is_internal(c)]
    _check_required(kind, spec, names, str(path))
    table = table.append_column(SOURCE_FILE, _repeat_encoded(str(path), table.num_rows))
    return FileTable(table, info, notes, integer_ids)


@dataclass
class Layout:
    """How the files of one input line up: each column spelt as the first file spelt it,
    the union of their columns in first-seen order, and whether any had malformed lines."""

    spelling: dict[str, str]
    original: list[str]
    malformed: bool

    @classmethod
    def of(cls, column_names: list[list[str]]) -> Layout:
        spelling: dict[str, str] = {}
        for names in column_names:
            for n in names:
                spelling.setdefault(n.lower(), n)
        original = list(dict.fromkeys(
            spelling[n.lower()] for names in column_names for n in names
            if not is_internal(n)))
        return cls(spelling, original, any(MALFORMED in names for names in column_names))

    def conform(self, table: pa.Table) -> pa.Table:
        """``table`` with every column of the input, in one order ('' where a file lacked
        a column), so the files' tables can be stacked."""
        table = table.rename_columns([self.spelling.get(n.lower(), n)
                                      for n in table.column_names])
        for c in self.original:
            if c not in table.column_names:
                table = table.append_column(c, _repeat("", table.num_rows))
        for c in MALFORMED_COLUMNS if self.malformed else ():
            if c not in table.column_names:
                table = table.append_column(c, pa.nulls(table.num_rows, pa.string()))
        return table.select([*self.original, SOURCE_ROW, SOURCE_FILE]
                            + (list(MALFORMED_COLUMNS) if self.malformed else []))


def input_notes(kind: str, notes: list[str], integer_ids: list[tuple[str, str]]) -> list[str]:
    """The input's notes (each once: the pieces of one file repeat them), then one about
    integer patient ids, if any (``integer_ids``: column and file pairs)."""
    notes = list(dict.fromkeys(notes))
    if integer_ids:
        column, first = integer_ids[0]
        paths = list(dict.fromkeys(p for _, p in integer_ids))
        where = first if len(paths) == 1 else f"{len(paths)} files (first {first})"
        notes.append(f"{kind}: patient id column {column} is stored as integers in {where};"
                     " leading zeros of ids may have been lost before b12screen read it")
    return notes


def check_not_empty(kind: str, infos: list[FileInfo], rows: int) -> None:
    """A labs extract with no data rows cannot be screened; patients and medications may
    be empty (a month with no new prescriptions is a valid month)."""
    if rows == 0 and kind == "labs":
        where = infos[0].path if len(infos) == 1 else f"any of {len(infos)} files"
        raise UserError(f"{kind}: no data rows in {where} (only a header)")


def parquet_files(infos: list[FileInfo] | list[Path]) -> frozenset[str]:
    """The Parquet files among an input's files: their text is never reinterpreted."""
    paths = [Path(i.path) if isinstance(i, FileInfo) else Path(i) for i in infos]
    return frozenset(str(p) for p in paths if _is_parquet(p))


def read_input(spec_path: str | Path, spec: InputSpec) -> RawInput:
    """Read every file of one input; check each has the required columns."""
    kind = spec.kind
    located: list[str] = []
    files = [read_file(path, spec) for path in resolve_paths(spec_path, kind, spec, located)]
    infos = [f.info for f in files]
    check_not_empty(kind, infos, sum(f.table.num_rows for f in files))
    notes = input_notes(kind, located + [n for f in files for n in f.notes],
                        [pair for f in files for pair in f.integer_ids])
    layout = Layout.of([f.table.column_names for f in files])
    notes += column_notes(kind, spec, layout.original)
    tables = _decoded([layout.conform(f.table) for f in files])
    del files
    table = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
    del tables
    # column by column, freeing each Arrow column once converted: half the peak memory
    frame = table.to_pandas(self_destruct=True, split_blocks=True)
    del table
    return RawInput(kind=kind, frame=frame, files=infos, original_columns=layout.original,
                    warnings=notes, parquet_files=parquet_files(infos),
                    unused_columns=unused_columns(spec, layout.original))


# --------------------------------------------------------------------- columns reported


def mapped_names(spec: InputSpec) -> frozenset[str]:
    """The column names (lower case) the format maps to a canonical column."""
    return frozenset(s.lower() for sources in spec.columns.values() for s in sources)


def unused_columns(spec: InputSpec, original: list[str]) -> list[str]:
    """The input's columns that the format maps to no canonical column (SPEC rev 2: every
    column is used or reported)."""
    mapped = mapped_names(spec)
    return [c for c in original if c.lower() not in mapped]


def _letters(name: str) -> str:
    return re.sub(r"[^a-z]", "", name.lower())


def _edit_distance(a: str, b: str, limit: int = 2) -> int:
    """Levenshtein distance, stopped early once above ``limit`` (column names are short)."""
    if abs(len(a) - len(b)) > limit:
        return limit + 1
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1,
                               previous[j - 1] + (ca != cb)))
        if min(current) > limit:
            return limit + 1
        previous = current
    return previous[-1]


def near_miss(name: str, known: str, *, same_end: bool = False) -> bool:
    """Whether an unused column name is plausibly a misspelling of a known one: after
    lower-casing and dropping non-letters, equal, sharing their first 5 letters or more,
    or within edit distance 2 (``neuro_symptoms``, ``Pregnant?``, ``ileal_resection``).
    ``same_end``: a shared start counts only with the same last word too (``Neuro
    Symptoms`` and ``neurological_symptoms``, not ``birth_country`` and ``birth_year``)."""
    a, b = _letters(name), _letters(known)
    if not a or not b:
        return False
    if a == b:
        return True
    if len(a) >= 5 and len(b) >= 5 and a[:5] == b[:5] and (
            not same_end or re.findall(r"[a-z]+", name.lower())[-1]
            == re.findall(r"[a-z]+", known.lower())[-1]):
        return True
    return min(len(a), len(b)) > 3 and _edit_distance(a, b) <= 2


def column_notes(kind: str, spec: InputSpec, original: list[str]) -> list[str]:
    """One line listing the columns not used, and one per likely misspelling of a known
    column that the file lacks: a misspelt attribute silently turns a risk factor off for
    everyone, so it is named with the fix."""
    unused = unused_columns(spec, original)
    if not unused:
        return []
    lower = {c.lower() for c in original}
    missing = [canon for canon in CANONICAL_COLUMNS[kind]
               if not any(s.lower() in lower for s in spec.columns.get(canon, ()))]
    notes = [f"{kind}: {len(unused)} column(s) not used by the format: {', '.join(unused)}"]
    for column in unused:
        for canon in missing:
            sources = spec.columns.get(canon, ())
            # unmapped by the format: a shared start alone (birth_country, birth_year) is not
            if not any(near_miss(column, s, same_end=not sources) for s in (canon, *sources)):
                continue
            fix = (f"map it in a format file ([{kind}.columns] {canon} = [\"{column}\"], see "
                   "docs/formats.md)")
            notes.append(
                f"{kind}: column '{column}' is not used; did you mean '{sources[0]}'? Rename "
                f"the column, or {fix}" if sources else
                f"{kind}: column '{column}' is not used; it looks like '{canon}', which the "
                f"format does not map: {fix}")
            break
    return notes


def _repeat(text: str, n: int) -> pa.Array:
    """``n`` copies of one string, built in Arrow rather than as a Python list."""
    return _repeat_encoded(text, n).cast(pa.string())


def _repeat_encoded(text: str, n: int) -> pa.DictionaryArray:
    """``n`` copies of one string, dictionary-encoded (a categorical in pandas): the
    source-file column of a 10M-row extract would otherwise hold 10M copies of the name."""
    indices = pa.array(np.zeros(n, dtype=np.int32))
    return pa.DictionaryArray.from_arrays(indices, pa.array([text], pa.string()))


def _check_required(kind: str, spec: InputSpec, found: list[str], where: str) -> None:
    """Stop, naming the missing column and the columns found; but say that the file seems
    to have no header row when its first line looks like data (its cells are then data,
    never printed), and what input a file looks like when it has none of this input's own
    columns but another input's (medications given as ``--patients``)."""
    lower = {c.lower() for c in found}

    def has(canon: str) -> bool:  # the column as named by the format, or by its own name
        return mapped(canon) or canon.lower() in lower

    def mapped(canon: str) -> bool:  # what the reader will read: the format's names only
        return any(s.lower() in lower for s in spec.columns.get(canon, (canon,)))

    missing = []
    for canon in REQUIRED_COLUMNS[kind]:
        if not mapped(canon):
            sources = spec.columns.get(canon, (canon,))
            missing.append(sources[0] if len(sources) == 1 else " or ".join(sources))
    own = [c for c in CANONICAL_COLUMNS[kind] if c not in SHARED_KEYS]
    if not any(has(c) for c in own):
        for other in REQUIRED_COLUMNS:
            signature, needed = _signature(other)
            names = spec.others.get(other, {})  # what this format calls that input's columns
            named_as = [next((n for n in (*names.get(c, ()), c) if n.lower() in lower), None)
                        for c in signature]  # the name each is found under, if any
            theirs = [n for n in named_as if n is not None]
            if other != kind and len(theirs) >= needed:
                raise UserError(f"{kind}: {where} looks like a {other} file (it has "
                                f"{', '.join(theirs)}), not {kind}; give it as the "
                                f"{other} input" + ("" if other == "labs" else
                                                    f" (--{other})"))
    if not missing:
        return
    # a line read as one cell (the format's delimiter is not the file's) is judged cell by cell
    cells = [c for name in found for c in _any_delimiter_cells(name)]
    if looks_like_data(cells):
        raise UserError(f"{kind}: {where} seems to have no header row (its first line looks "
                        f"like data: a number, date, id, or a value such as yes, F or vegan; "
                        f"it is not shown); add a first line naming the columns, e.g. "
                        f"{', '.join(REQUIRED_COLUMNS[kind])}")
    shown = ", ".join(found) if found else "(none)"
    hint = ("; its columns are those of the canonical format (--format canonical, the "
            "default)") if all(c.lower() in lower for c in REQUIRED_COLUMNS[kind]) \
        else ""
    split = [d for d in (",", ";", "|") if len(found) == 1 and d in found[0]
             and spec.read.delimiter not in ("auto", d)]
    if split:  # one column holding the whole header: the format reads another delimiter
        read_d = {"\t": "tab"}.get(spec.read.delimiter, spec.read.delimiter)
        hint = (f"; the header is one column holding '{split[0]}': the file seems "
                f"'{split[0]}'-delimited, and the format reads '{read_d}' ([read] delimiter)")
    raise UserError(f"{kind}: required column {', '.join(missing)} missing in {where};"
                    f" columns found: {shown}{hint}")


def _signature(kind: str) -> tuple[list[str], int]:
    """The columns that say a file is of ``kind``, and how many it needs: all its required
    columns besides the shared keys, or, for patients (whose only required column is the
    shared id), two of its attributes."""
    required = [c for c in REQUIRED_COLUMNS[kind] if c not in SHARED_KEYS]
    if required:
        return required, len(required)
    return [c for c in CANONICAL_COLUMNS[kind] if c not in SHARED_KEYS], 2


_DATA_LIKE = re.compile(
    r"^[<>=\s]*[+-]?\d"  # a number, a date, a result
    r"|^[A-Za-z]{0,4}[_-]?\d{3,}"  # an id: letters then digits (P000123, PT_000123)
    r"|^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-"  # a UUID pseudonym
    # a long token of letters and digits (pseudonyms; names keep their underscores)
    r"|^(?=[A-Za-z0-9-]{8,}$)(?=(?:\D*\d){3})[A-Za-z0-9-]*[A-Za-z]"
    # a yes/no, sex or diet value
    r"|^(?:y|n|u|x|yes|no|true|false|m|f|male|female|other|unknown|not known|vegan"
    r"|vegetarian|omnivore)$",
    re.IGNORECASE)


def looks_like_data(names: list[str]) -> bool:
    """Whether a header line holds data rather than names: a cell that is a number, a date,
    an id-like code (letters then digits, a UUID, a long mix of letters and digits) or a
    yes/no, sex or diet value. Column names rarely are; printing a data line would print a
    patient's id."""
    return any(_DATA_LIKE.search(n.strip()) for n in names)


# ------------------------------------------------------------------------ canonical view


def canonical_view(raw: RawInput, spec: InputSpec,
                   prefer: dict[str, set[str]] | None = None) -> pd.DataFrame:
    """Canonical columns (text, stripped, missing tokens -> empty) in a new frame.

    A canonical column mapped to several source columns takes the first non-empty one.
    With ``prefer`` (e.g. mapped test codes), the first source whose value is in the set
    wins, so an OMOP row with an unmapped source value but a mapped concept id is kept.
    For ``result`` a censored text (``<150``) in a later source wins over a bare number in
    an earlier one, so OMOP's value_source_value keeps the '<' that value_as_number lost.
    Column names match case-insensitively so 'Patient_ID' works for 'patient_id'.
    """
    frame = raw.frame
    lower = {c.lower(): c for c in frame.columns}
    tokens = {t.strip().lower() for t in spec.read.missing_values} - {""}
    sources_of = {canon: [name for source in sources
                          if (name := source if source in frame.columns
                              else lower.get(source.lower())) is not None
                          and not is_internal(name)]
                  for canon, sources in spec.columns.items()}
    # (source column, whether missing-value tokens apply): never to codes, nor to any text
    # read from Parquet, where a missing value is a null (SPEC rev 2)
    text_rows = _text_rows(raw)
    wanted = list(dict.fromkeys((n, canon not in CODE_COLUMNS and bool(tokens)
                                 and text_rows is not False)
                                for canon, used in sources_of.items() for n in used))

    def clean(key: tuple[str, bool]) -> pd.Series:
        name, with_tokens = key
        if not with_tokens:
            return _clean_text(frame[name], set())
        series = _clean_text(frame[name], tokens)
        if text_rows is True:
            return series
        plain = _clean_text(frame[name], set())  # rows from Parquet keep their text
        return _as_str(plain).mask(text_rows, _as_str(series))

    with ThreadPoolExecutor(max_workers=2) as pool:  # Arrow kernels release the GIL
        cleaned = dict(zip(wanted, pool.map(clean, wanted), strict=True))
    out: dict[str, pd.Series] = {}
    numeric = _numeric_keyed(spec)
    for canon, names_used in sources_of.items():
        series: pd.Series | None = None
        several = len(names_used) > 1 or bool(spec.values.get(canon))
        for name in names_used:
            col = cleaned[(name, canon not in CODE_COLUMNS and bool(tokens)
                           and text_rows is not False)]
            col = _as_str(col) if several else col
            if canon in numeric:  # a concept id written as a float: 3000593.0 is 3000593
                col = _as_str(col)
                if col.str.contains(".0", regex=False).any():
                    col = col.str.replace(r"^\s*(\d+)\.0+\s*$", r"\1", regex=True)
            if series is None:
                series = col
            elif prefer and canon in prefer:
                wanted = prefer[canon]
                known = series.str.upper().isin(wanted)
                series = series.mask(~known & (col.str.upper().isin(wanted) | (series == "")),
                                     col)
            elif canon == "result":
                censored = col.str.match(r"^\s*[<>]=?\s*[0-9.]")
                bare = ~series.str.match(r"^\s*[<>]")
                series = series.mask((series == "") | (censored & bare), col)
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
        result[MALFORMED_REASON] = frame[MALFORMED_REASON].fillna("").astype("str")
    return result


def _numeric_keyed(spec: InputSpec) -> set[str]:
    """Canonical columns the format looks up by whole-number keys (OMOP concept ids), and
    the patient id where the format declares ids whole numbers (``integer_ids``): they may
    come as floats in a CSV (pandas writes an id column holding a gap as ``3000593.0``),
    and are read as the number, as a Parquet double column is."""
    keys = {canon: list(mapping) for canon, mapping in spec.values.items()}
    keys.setdefault("test_code", []).extend(spec.codes)
    keys.setdefault("medication", []).extend(spec.class_codes)
    found = {canon for canon, given in keys.items() if any(k.strip().isdigit() for k in given)}
    if spec.read.integer_ids:  # ids declared whole numbers (OMOP's person_id): 1.0 is 1
        found.add("patient_id")
    return found


def _text_rows(raw: RawInput) -> bool | np.ndarray:
    """Which rows came from delimited text, where missing-value tokens apply: True for all
    (no Parquet file), False for none, else a mask from each row's source file."""
    if not raw.parquet_files:
        return True
    source = raw.frame[SOURCE_FILE]
    if isinstance(source.dtype, pd.CategoricalDtype):  # per file, then per row by code
        per_file = np.isin(np.asarray(source.cat.categories, dtype=object),
                           list(raw.parquet_files))
        from_parquet = np.append(per_file, False)[source.cat.codes.to_numpy()]
    else:
        from_parquet = source.astype("str").isin(raw.parquet_files).to_numpy(dtype=bool)
    if from_parquet.all():
        return False
    return ~from_parquet


def _clean_text(series: pd.Series, tokens: set[str]) -> pd.Series:
    """Strip whitespace and blank out missing-value tokens (Arrow kernels, whole column).

    Clean columns (the usual case) are returned unchanged, sharing the reader's buffers:
    trimming runs only when some value starts or ends with whitespace, and tokens are
    matched case-insensitively by looking up every case spelling of them (no lower-cased
    copy of the column).
    """
    if isinstance(series.dtype, pd.CategoricalDtype):
        return _clean_categories(series, tokens)
    text = pa.array(series.astype("str"), pa.string(), from_pandas=True)
    text = pc.fill_null(text, "") if text.null_count else text
    changed = False
    if _maybe_padded(text):
        text, changed = pc.utf8_trim_whitespace(text), True
    spellings = _spellings(tokens) if tokens else []
    if not tokens:
        missing = pa.scalar(False)
    elif spellings is not None:  # one hash lookup per row, no lower-cased copy of the column
        missing = pc.is_in(text, value_set=pa.array(spellings, pa.string()))
    else:
        missing = pc.is_in(pc.utf8_lower(text), value_set=pa.array(sorted(tokens), pa.string()))
    if tokens and pc.any(missing).as_py():
        text, changed = pc.if_else(missing, "", text), True
    if not changed and series.dtype == "str" and not series.hasnans:
        return series
    return pd.Series(pd.array(text, dtype="str"), index=series.index)


def _clean_categories(series: pd.Series, tokens: set[str]) -> pd.Series:
    """A categorical column cleaned on its categories: values that become equal once
    cleaned (' A' and 'A') share one category, and a missing cell reads ''."""
    categories = pd.Series(series.cat.categories.astype("str"))
    cleaned = _clean_text(categories, tokens)
    if cleaned is categories and not series.hasnans:  # clean already: shared as it is
        return series
    codes, values = pd.factorize(pd.concat([cleaned, pd.Series([""], dtype="str")],
                                           ignore_index=True))
    at = codes.astype(np.int32)[series.cat.codes.to_numpy()]  # code -1 reads the '' added
    return pd.Series(pd.Categorical.from_codes(at, categories=pd.Index(values, dtype="str")),
                     index=series.index)


def _as_str(series: pd.Series) -> pd.Series:
    return series.astype("str") if isinstance(series.dtype, pd.CategoricalDtype) else series


_ASCII_SPACE = np.zeros(256, dtype=bool)
_ASCII_SPACE[[9, 10, 11, 12, 13, 32]] = True
_ASCII_SPACE[128:] = True  # a non-ASCII byte might start or end a Unicode space: trim to see


def _maybe_padded(text: pa.Array | pa.ChunkedArray) -> bool:
    """Whether any value may start or end with whitespace (from each cell's edge bytes)."""
    edges = cell_edges(text)
    return edges is None or bool(_ASCII_SPACE[edges[0]].any() or _ASCII_SPACE[edges[1]].any())


def _spellings(tokens: set[str], limit: int = 4096) -> list[str] | None:
    """Every upper/lower-case spelling of the (lower-case) tokens, so that a case-sensitive
    lookup matches case-insensitively; None if a token is not ASCII or has too many."""
    out: set[str] = set()
    for token in tokens:
        if not token.isascii() or 2 ** sum(c.isalpha() for c in token) > limit:
            return None
        spellings = [""]
        for c in token:
            spellings = [s + v for s in spellings for v in {c.lower(), c.upper()}]
        out.update(spellings)
    return sorted(out)


def _remap(series: pd.Series, mapping: dict[str, str]) -> pd.Series:
    """Replace whole values (case-insensitive, stripped); others pass unchanged."""
    lowered = {k.strip().lower(): v for k, v in mapping.items()}
    mapped = series.str.lower().map(lowered)
    return mapped.fillna(series).astype("str")
