"""Month-on-month worklist state: who is new, who is still listed, who has left.

A lab manager works a list once and then wants to see what changed, so each run compares
its worklists with the previous run's ``worklist_state.parquet`` (one row per patient per
list: when they were first listed, and when last) and marks every row ``new`` or
``persisting``. Patients on a previous list and not on it now are returned as *resolved*.

``first_listed`` is the start of the patient's current spell on that list: a patient who
leaves a list and later returns is ``new`` again, because that is a new piece of work.
``worklist_state.parquet`` holds patient ids: write it with the other patient-level files
(owner-only permissions), never with the shareable outputs.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.errors import UserError
from pipeline.kernels.arrow import merge_sorted, text_order
from pipeline.outputs.run_folder import is_temporary, read_manifest

__all__ = [
    "LIST_NAMES",
    "RESOLVED_COLUMNS",
    "ListState",
    "STATE_COLUMNS",
    "STATE_FILE",
    "apply_state",
    "find_previous_run",
    "previous_run",
    "read_state",
]

LIST_NAMES = ("urgent", "mma", "supplementation", "metformin_monitoring", "retest")
STATE_FILE = "worklist_state.parquet"
#: Columns of worklist_state.parquet. The first three are the state proper; practice_id and
#: last_listed let the next run say where a resolved patient was and when they were last seen.
STATE_COLUMNS = ("patient_id", "list", "first_listed", "practice_id", "last_listed")
RESOLVED_COLUMNS = ("patient_id", "practice_id", "list", "first_listed", "last_listed")

_MONTH = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")


def _empty_state() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="string") for c in STATE_COLUMNS})


def _previous_month(previous_dir: Path) -> str | None:
    """The previous run's as-of month from its manifest, for state files without last_listed."""
    manifest = read_manifest(previous_dir) or {}
    try:
        return f"{dt.date.fromisoformat(str(manifest['as_of'])[:10]):%Y-%m}"
    except (ValueError, KeyError, TypeError):
        return None


def read_state(previous_dir: Path | None) -> pd.DataFrame:
    """The previous run's worklist state (empty when there is no previous run or no state)."""
    path = _state_file(previous_dir)
    if path is None:
        return _empty_state()
    try:
        state = pd.read_parquet(path)
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read previous worklist state {path}: {exc}") from exc
    _check_columns(path, state.columns)
    if "practice_id" not in state.columns:
        state["practice_id"] = pd.NA
    if "last_listed" not in state.columns:
        state["last_listed"] = _previous_month(Path(previous_dir))
    state = state[list(STATE_COLUMNS)].astype("string")
    return state.drop_duplicates(["list", "patient_id"], keep="first").reset_index(drop=True)


def _state_file(previous_dir: Path | None) -> Path | None:
    """The previous run's state file, or None when there is no previous run or no state."""
    if previous_dir is None:
        return None
    path = Path(previous_dir) / STATE_FILE
    return path if path.is_file() else None


def _check_columns(path: Path, columns: Iterable[str]) -> None:
    """A previous state without the columns a run needs is an error, never a silent reset."""
    found = set(columns)
    missing = [c for c in ("patient_id", "list", "first_listed") if c not in found]
    if missing:
        raise UserError(f"previous worklist state {path} lacks column(s): {', '.join(missing)}")


def apply_state(
    worklists: dict[str, pd.DataFrame],
    *,
    as_of_month: str,
    previous_dir: Path | None,
) -> tuple[dict[str, pd.DataFrame], pd.DataFrame, pd.DataFrame]:
    """Mark each worklist row ``new``/``persisting`` against the previous run's state.

    Returns (worklists with ``first_listed`` and ``change`` added, rows kept in their order;
    resolved patients with ``RESOLVED_COLUMNS``; the new state with ``STATE_COLUMNS``, to be
    saved as ``worklist_state.parquet``). Without a previous state everyone is ``new``.
    """
    state = ListState(as_of_month=as_of_month, previous_dir=previous_dir)
    marked = {name: state.mark(name, worklist, record=True)
              for name, worklist in worklists.items()}
    resolved, new_state = state.finish()
    return marked, resolved, new_state


class ListState:
    """``apply_state`` a piece of a list at a time, for lists too big to hold whole (sorted
    parts merged as they are written): ``mark`` each piece, in its list's order, then
    ``finish`` (or ``finish_groups``). What is kept between pieces is per patient id (the
    listed patients' ids, first month and practice, and which of the previous state's rows
    are listed again), never a list's rows.

    With ``spill`` (a folder of the run's staging area) the listed patients are not kept
    in memory: every ``SPILL_ROWS`` recorded rows of a list are sorted by patient id and
    written to the list's Arrow file there, and ``finish_groups`` merges those sorted runs
    into the state a row group at a time, so that memory follows the runs' count, not the
    lists. The previous state is held compactly (its ids, the rest as dictionary codes).

    Lists are matched one at a time with Arrow hash look-ups and sorted per list, because
    pandas map/merge/sort over every list's string ids together dominated large runs.
    """

    def __init__(self, *, as_of_month: str, previous_dir: Path | None,
                 spill: Path | None = None) -> None:
        if not _MONTH.match(as_of_month):
            raise ValueError(f"as_of_month must be YYYY-MM, got {as_of_month!r}")
        previous = _read_state_table(previous_dir)
        later = pc.max(previous["last_listed"].unique().cast(pa.large_string())).as_py()
        if later is not None and later > as_of_month:
            raise UserError(
                f"previous run {previous_dir} is later ({later}) than this run "
                f"({as_of_month}); pass an earlier run with --previous"
            )
        self.month = as_of_month
        self.before = _by_list(previous)
        del previous
        #: per list: the previous rows listed again so far (a mask over ``before``'s rows)
        self.again = {name: np.zeros(len(rows), dtype=bool) for name, rows in self.before.items()}
        #: per list: the listed rows' id, first month and practice, piece by piece (with
        #: ``spill``: those not yet written to the list's runs)
        self.current: dict[str | None, list[pa.Table]] = {}
        self.spill = spill
        self.recorded: set[str | None] = set()  # the lists whose rows were recorded
        #: per list (``spill``): the runs' file, each run's (first block, blocks), rows so far
        self._runs: dict[str | None, _Runs] = {}

    def mark(self, name: str, worklist: pd.DataFrame, *, record: bool) -> pd.DataFrame:
        """A list's piece (or the whole list) with ``first_listed`` and ``change``; with
        ``record`` its patients count as listed now (each row recorded once: a piece marked
        again, as a workbook's second pass does, is not recorded)."""
        missing = [c for c in ("patient_id", "practice_id") if c not in worklist.columns]
        if missing:
            raise ValueError(f"worklist {name!r} lacks column(s): {', '.join(missing)}")
        ids = _text(worklist["patient_id"])
        first = pa.nulls(len(ids), pa.large_string())
        if name in self.before:
            earlier = self.before[name]
            at = pc.index_in(ids, value_set=earlier["patient_id"])  # null: not listed before
            first = earlier["first_listed"].take(at).cast(pa.large_string())
            if record:
                self.again[name][pc.drop_null(at).to_numpy()] = True
        listed = pc.fill_null(first, self.month)
        if record:
            self.recorded.add(name)
            self.current.setdefault(name, []).append(pa.table(
                {"patient_id": ids, "first_listed": listed,
                 "practice_id": _text(worklist["practice_id"])}))
            if self.spill is not None and sum(len(t) for t in self.current[name]) >= SPILL_ROWS:
                self._spill(name)
        return worklist.assign(
            first_listed=_strings(listed),
            change=_strings(pc.if_else(pc.is_valid(first), "persisting", "new")),
        )

    def finish(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """(resolved patients with ``RESOLVED_COLUMNS``; the new state with
        ``STATE_COLUMNS``), from what the recorded pieces listed."""
        if self.spill is not None:
            _, groups = self.finish_groups()
            return self.resolved(), _state_frame(pa.concat_tables(groups))
        current = {name: _first_per_patient(pa.concat_tables(tables))
                   for name, tables in self.current.items()}
        state = _stack(current, ("patient_id", "first_listed", "practice_id"),
                       last_listed=self.month)[list(STATE_COLUMNS)]
        return self.resolved(), state

    def resolved(self) -> pd.DataFrame:
        """The previous state's patients not listed again (``RESOLVED_COLUMNS``), per list
        by practice and patient id."""
        gone = {name: _decoded(rows.filter(pa.array(~self.again[name]))
                               if name in self.recorded else rows)
                for name, rows in self.before.items()}
        gone = {name: rows.take(pc.sort_indices(  # stable; nulls last
                    rows, [("practice_id", "ascending"), ("patient_id", "ascending")]))
                for name, rows in gone.items()}
        resolved = _stack(gone, ("patient_id", "practice_id", "first_listed", "last_listed"))
        return resolved[list(RESOLVED_COLUMNS)]

    def finish_groups(self, rows: int = 1 << 20) -> tuple[pa.Schema, Iterator[pa.Table]]:
        """The new state as ``finish`` gives it, converted to Arrow (``Table.from_pandas``,
        without the index), but as tables of ``rows`` rows (the last shorter; one empty
        table for an empty state): the row groups ``pq.write_table(..., row_group_size=
        rows)`` cuts that table into, each column chunked where that table's is (at each
        list's end), so that writing them one by one gives the same file. Returns the
        state's schema and the tables, made as they are read."""
        schema = pa.Table.from_pandas(_state_frame(None), preserve_index=False).schema
        if self.spill is not None:
            for name in list(self.current):
                self._spill(name)
        names = sorted({*self.current, *self._runs}, key=_rank)
        return schema, _row_groups(((name, self._listed(name)) for name in names), rows,
                                   self.month, schema)

    def _listed(self, name: str | None) -> Iterator[pa.Table]:
        """List ``name``'s recorded patients in id order, each patient's first row only."""
        if name not in self._runs:
            yield _first_per_patient(pa.concat_tables(self.current.pop(name)))
            return
        runs = self._runs.pop(name)
        runs.writer.close()
        runs.sink.close()
        with pa.OSFile(str(runs.path)) as source:
            file = pa.ipc.open_file(source)

            def blocks(first: int, count: int) -> Iterator[pa.Table]:
                for k in range(first, first + count):  # blocks, not rows
                    yield pa.Table.from_batches([file.get_batch(k)])

            last: pa.Array | None = None  # the id before this table's first row
            merged = merge_sorted([blocks(*run) for run in runs.runs],
                                  (("patient_id", "ascending"), (_SEQ, "ascending")),
                                  max(SPILL_BLOCK_ROWS, SPILL_ROWS // max(len(runs.runs), 1)))
            for table in merged:
                ids = table["patient_id"].combine_chunks()
                if not len(ids):
                    continue
                first = _repeats(last, ids[:1]) if last is not None else pa.array([False])
                keep = pc.invert(pa.concat_arrays([first, _repeats(ids[:-1], ids[1:])]))
                last = ids[-1:]
                yield table.filter(keep).drop_columns([_SEQ])
        runs.path.unlink()

    def _spill(self, name: str | None) -> None:
        """The list's recorded rows not yet written, sorted by patient id (ties in list
        order), appended to its runs' file as one run."""
        tables = self.current.pop(name, [])
        runs = self._runs.get(name)
        if runs is None:
            self.spill.mkdir(mode=0o700, parents=True, exist_ok=True)
            path = self.spill / f"list-{len(self._runs)}.arrow"
            sink = pa.OSFile(str(path), "wb")
            schema = pa.schema([(c, pa.large_string()) for c in
                                ("patient_id", "first_listed", "practice_id")]
                               + [(_SEQ, pa.int64())])
            runs = self._runs[name] = _Runs(path, sink, pa.ipc.new_file(sink, schema,
                                                                         options=_IPC))
        rows = pa.concat_tables(tables) if tables else None
        if rows is None or not rows.num_rows:
            return
        rows = rows.append_column(_SEQ, pa.array(np.arange(runs.rows, runs.rows + len(rows))))
        runs.rows += len(rows)
        rows = rows.take(pa.array(text_order(rows["patient_id"])))  # stable; nulls last
        batches = rows.to_batches(max_chunksize=SPILL_BLOCK_ROWS)
        runs.runs.append((runs.blocks, len(batches)))
        runs.blocks += len(batches)
        for batch in batches:
            runs.writer.write_batch(batch)


#: Rows of a list recorded before they are sorted and written as one run (``spill``): what
#: a list's tracking holds at most; a list of n rows makes n / SPILL_ROWS runs.
SPILL_ROWS = 1 << 18
#: Rows per block of a run: what the state's merge reads of a run at a time.
SPILL_BLOCK_ROWS = 1 << 13
_SEQ = "_listed_at"  # a recorded row's place in its list: ties of one id keep list order
_IPC = pa.ipc.IpcWriteOptions(compression="lz4")


class _Runs:
    """A list's sorted runs of recorded rows in one Arrow file (``ListState`` with spill)."""

    def __init__(self, path: Path, sink: pa.NativeFile,
                 writer: pa.ipc.RecordBatchFileWriter) -> None:
        self.path, self.sink, self.writer = path, sink, writer
        self.runs: list[tuple[int, int]] = []  # each run's first block and its blocks
        self.blocks = 0
        self.rows = 0


def _rank(name: str | None) -> tuple[int, bool, str]:
    """The standard list order: known lists first, others alphabetically, a missing name
    last."""
    known = LIST_NAMES.index(name) if name in LIST_NAMES else len(LIST_NAMES)
    return known, name is None, name or ""


def _repeats(head: pa.ChunkedArray, tail: pa.ChunkedArray) -> pa.ChunkedArray:
    """Where ``tail`` equals ``head`` (missing equal to missing)."""
    return pc.or_(pc.fill_null(pc.equal(head, tail), False),
                  pc.and_(pc.is_null(head), pc.is_null(tail)))


def _row_groups(lists: Iterator[tuple[str | None, Iterator[pa.Table]]], rows: int,
                month: str, schema: pa.Schema) -> Iterator[pa.Table]:
    """The state's rows (each list's listed patients, lists in order) as tables of
    ``rows`` rows, each column's chunks where the whole table's are."""
    held: list[tuple[str | None, pa.Table]] = []
    count, given = 0, False
    for name, blocks in lists:
        for block in blocks:  # blocks of a list, not rows
            while block.num_rows:
                take = min(rows - count, block.num_rows)
                held.append((name, block.slice(0, take)))
                count += take
                block = block.slice(take)
                if count == rows:
                    yield _group(held, month, schema)
                    held, count, given = [], 0, True
    if held or not given:
        yield _group(held, month, schema)


def _group(held: list[tuple[str | None, pa.Table]], month: str,
           schema: pa.Schema) -> pa.Table:
    """One row group of the state from its lists' pieces: a chunk per list."""
    names: list[str | None] = []
    segments: list[list[pa.Table]] = []
    for name, table in held:  # pieces, not rows
        if not names or names[-1] != name:
            names.append(name)
            segments.append([])
        segments[-1].append(table)
    parts = [pa.concat_tables(s).combine_chunks() for s in segments]
    sizes = np.array([p.num_rows for p in parts], dtype=np.intp)
    columns = {c: pa.chunked_array([p[c].combine_chunks() for p in parts], pa.large_string())
               for c in ("patient_id", "first_listed", "practice_id")}
    columns["list"] = pa.chunked_array([pa.array(names, pa.large_string()).take(
        pa.array(np.repeat(np.arange(len(names)), sizes)))], pa.large_string())
    columns["last_listed"] = pa.chunked_array([pa.array([month], pa.large_string()).take(
        pa.array(np.zeros(int(sizes.sum()), np.intp)))], pa.large_string())
    return pa.table([columns[c] for c in STATE_COLUMNS], schema=schema)


def _state_frame(state: pa.Table | None) -> pd.DataFrame:
    """The state as ``finish`` gives it (``string`` columns), from its Arrow table (None:
    an empty state)."""
    if state is None:
        return _empty_state()
    return pd.DataFrame({c: _strings(state[c]) for c in STATE_COLUMNS},
                        index=pd.RangeIndex(state.num_rows), copy=False)


def _text(column: pd.Series) -> pa.ChunkedArray:
    """A column as the Arrow text that ``astype("string")`` holds."""
    return _chunked(pa.array(column.astype("string").array)).cast(pa.large_string())


def _strings(values: pa.Array | pa.ChunkedArray) -> pd.api.extensions.ExtensionArray:
    """Arrow text as a ``string`` column, without a copy."""
    return pd.array(_chunked(values), dtype="string")


def _chunked(values: pa.Array | pa.ChunkedArray) -> pa.ChunkedArray:
    return values if isinstance(values, pa.ChunkedArray) else pa.chunked_array([values])


def _read_state_table(previous_dir: Path | None) -> pa.Table:
    """``read_state`` as Arrow, holding little: the file's text columns read as dictionaries
    (``list``, months, practices repeat), duplicates dropped per list, ids in id order
    within each list (``resolved`` sorts what it gives, so the order is not kept)."""
    path = _state_file(previous_dir)
    if path is None:
        return _arrow_state(_empty_state())
    try:
        schema = pq.read_schema(path)
        names = [c for c in STATE_COLUMNS if c in schema.names]
        coded = [c for c in names if c != "patient_id" and _is_text(schema.field(c).type)]
        table = pq.read_table(path, columns=names, read_dictionary=coded)
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise UserError(f"cannot read previous worklist state {path}: {exc}") from exc
    _check_columns(path, table.column_names)
    columns = {}
    for c in STATE_COLUMNS:
        if c in table.column_names:
            columns[c] = _coded_text(table[c], c != "patient_id")
        elif c == "practice_id":
            columns[c] = pa.nulls(table.num_rows, pa.large_string()).dictionary_encode()
        else:  # last_listed: the previous run's month
            month = _previous_month(Path(previous_dir))
            columns[c] = pa.array([month], pa.large_string()).dictionary_encode().take(
                pa.array(np.zeros(table.num_rows, np.intp)))
    return pa.table(columns)


def _is_text(kind: pa.DataType) -> bool:
    return pa.types.is_string(kind) or pa.types.is_large_string(kind)


def _coded_text(column: pa.ChunkedArray, coded: bool) -> pa.ChunkedArray:
    """A state column as ``astype("string")`` gives it, as Arrow: large text (``coded``: a
    dictionary of it); other types through pandas, as ``read_state`` converts them."""
    kind = column.type.value_type if pa.types.is_dictionary(column.type) else column.type
    if not (_is_text(kind) or pa.types.is_null(kind)):
        column = _text(column.to_pandas())
    if not coded:
        return column.cast(pa.large_string())
    if not pa.types.is_dictionary(column.type):
        column = column.cast(pa.large_string()).dictionary_encode()
    return column.cast(pa.dictionary(pa.int32(), pa.large_string()))


def _arrow_state(state: pd.DataFrame) -> pa.Table:
    return pa.table({c: _coded_text(_text(state[c]), c != "patient_id") for c in STATE_COLUMNS})


def _decoded(rows: pa.Table) -> pa.Table:
    """A state table's dictionary columns as text."""
    return rows.cast(pa.schema([(c, pa.large_string()) for c in rows.column_names]))


def _by_list(state: pa.Table) -> dict[str | None, pa.Table]:
    """The state's rows per list name (missing names under ``None``), each list's ids
    once (its first row in file order, as ``read_state`` keeps), in id order."""
    lists = state["list"]
    names = lists.unique().cast(pa.large_string()).to_pylist()
    state = state.drop_columns(["list"])
    return {name: _first_per_patient(state.filter(_is_name(lists, name))) for name in names}


def _is_name(lists: pa.ChunkedArray, name: str | None) -> pa.ChunkedArray:
    """Which rows of a dictionary column of list names hold ``name`` (None: missing), read
    off each chunk's dictionary rather than its decoded text."""
    masks = []
    for chunk in lists.chunks:  # row groups, not rows
        if name is None:
            masks.append(chunk.is_null())
            continue
        hit = pc.fill_null(pc.equal(chunk.dictionary, name), False)
        masks.append(pc.fill_null(hit.take(chunk.indices), False))
    return pa.chunked_array(masks, pa.bool_())


def _first_per_patient(rows: pa.Table) -> pa.Table:
    """``rows`` sorted by patient id, keeping each patient's first row (as drop_duplicates)."""
    order = pa.array(text_order(rows["patient_id"]))  # stable; nulls last
    ids = rows["patient_id"].take(order)
    if len(ids) > 1:
        repeat = _repeats(ids[:-1], ids[1:])
        if pc.any(repeat).as_py():
            order = order.filter(pa.concat_arrays([pa.array([True]),
                                                   pc.invert(repeat).combine_chunks()]))
    return rows.take(order)


def _stack(tables: dict[str | None, pa.Table], columns: tuple[str, ...],
           **constant: str) -> pd.DataFrame:
    """The per-list tables one after another in the standard list order (other names after,
    alphabetically; a missing name last) with a ``list`` column: same input, same bytes."""
    names = sorted(tables, key=_rank)
    sizes = np.array([len(tables[n]) for n in names], dtype=np.intp)
    frame = {c: _strings(pa.chunked_array([k for n in names for k in tables[n][c].chunks],
                                          pa.large_string()))
             for c in columns}
    frame["list"] = pd.array(names, dtype="string").take(np.repeat(np.arange(len(names)), sizes))
    for column, value in constant.items():
        frame[column] = pd.array([value], dtype="string").take(np.zeros(sizes.sum(), np.intp))
    return pd.DataFrame(frame, index=pd.RangeIndex(int(sizes.sum())), copy=False)


def _earlier_runs(out_dir: Path, as_of: dt.date
                  ) -> list[tuple[dt.date, str, str, str, Path, str]]:
    """The run folders beside ``out_dir`` with an earlier as-of date: (as-of, folder name,
    rules name, rules sha256 or '' where the manifest has none, folder, rules file path or
    ''), latest last.

    Only b12screen run folders count: folders without b12screen's manifest (an interrupted
    or foreign folder), validate folders, and dot-folders (a run's temporary folder, or a
    previous run set aside while it is replaced) are skipped.
    """
    out_dir = Path(out_dir)
    parent = out_dir.parent
    if not parent.is_dir():
        return []
    runs = []
    for folder in sorted(parent.iterdir()):  # sibling run folders, one per month
        if (not folder.is_dir() or is_temporary(folder)
                or folder.resolve() == out_dir.resolve()):
            continue
        manifest = read_manifest(folder)
        if manifest is None or manifest.get("kind", "run") != "run":
            continue
        try:
            run_as_of = dt.date.fromisoformat(str(manifest["as_of"])[:10])
            rules = manifest.get("rules") or {}
            name = rules.get("name") if isinstance(rules, dict) else rules
            sha = str(rules.get("sha256") or "") if isinstance(rules, dict) else ""
            path = str(rules.get("path") or "") if isinstance(rules, dict) else ""
        except (ValueError, KeyError, TypeError, AttributeError):
            continue
        if run_as_of < as_of:
            runs.append((run_as_of, folder.name, name, sha, folder, path))
    return sorted(runs, key=lambda run: run[:2])


def find_previous_run(out_dir: Path, as_of: dt.date, rules_name: str,
                      rules_sha256: str | None = None) -> Path | None:
    """The latest run folder beside ``out_dir`` with an earlier as-of date and the same
    rules profile: the same name and, given ``rules_sha256``, the same settings (as
    ``trend`` compares months), so that new and persisting compare lists drawn with the same
    cut-offs. A manifest without the profile's hash is matched by name."""
    return previous_run(out_dir, as_of, rules_name, rules_sha256)[0]


def previous_run(out_dir: Path, as_of: dt.date, rules_name: str,
                 rules_sha256: str | None = None, rules_path: str | Path | None = None
                 ) -> tuple[Path | None, str | None]:
    """``find_previous_run``, and a warning when a later run than the one found used a
    profile of the same name with other settings (an edited copy), or the same profile
    file under another name (an unnamed profile was named after its parent before it was
    named after its file): its lists are not what this month's are compared with. The
    sibling folders are read once for both."""
    runs = _earlier_runs(out_dir, as_of)
    named = [(i, run) for i, run in enumerate(runs) if run[2] == rules_name]
    same = [(i, run) for i, run in named if rules_sha256 is None or run[3] in ("", rules_sha256)]
    found = same[-1] if same else None
    skipped = [run for i, run in named
               if run[3] not in ("", rules_sha256) and (found is None or i > found[0])]
    why = f"used rules profile '{rules_name}' with other settings"
    if rules_sha256 is not None and rules_path is not None and not skipped:
        renamed = [run for i, run in enumerate(runs)
                   if run[2] != rules_name and run[5] == str(rules_path)
                   and (found is None or i > found[0])]
        if renamed:
            skipped = renamed
            why = (f"used this rules profile file under the name '{renamed[-1][2]}' (now "
                   f"'{rules_name}')")
    if rules_sha256 is None or not skipped:
        return (found[1][4] if found else None), None
    compared = (f"compared with {found[1][1]} instead" if found is not None
                else "every listed patient is new")
    return (found[1][4] if found else None), (
        f"worklist changes: run folder {skipped[-1][1]} {why}, so its lists are not "
        f"compared ({compared}); pass --previous {skipped[-1][4]} to compare with it anyway")
