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
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.errors import UserError
from pipeline.kernels.arrow import text_order
from pipeline.outputs.run_folder import is_temporary, read_manifest

__all__ = [
    "LIST_NAMES",
    "RESOLVED_COLUMNS",
    "ListState",
    "STATE_COLUMNS",
    "STATE_FILE",
    "apply_state",
    "find_previous_run",
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
    if previous_dir is None:
        return _empty_state()
    path = Path(previous_dir) / STATE_FILE
    if not path.is_file():
        return _empty_state()
    try:
        state = pd.read_parquet(path)
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read previous worklist state {path}: {exc}") from exc
    missing = [c for c in ("patient_id", "list", "first_listed") if c not in state.columns]
    if missing:
        raise UserError(f"previous worklist state {path} lacks column(s): {', '.join(missing)}")
    if "practice_id" not in state.columns:
        state["practice_id"] = pd.NA
    if "last_listed" not in state.columns:
        state["last_listed"] = _previous_month(Path(previous_dir))
    state = state[list(STATE_COLUMNS)].astype("string")
    return state.drop_duplicates(["list", "patient_id"], keep="first").reset_index(drop=True)


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
    ``finish``. What is kept between pieces is per patient id (the listed patients' ids,
    first month and practice, and which of the previous state's rows are listed again),
    never a list's rows.

    Lists are matched one at a time with Arrow hash look-ups and sorted per list, because
    pandas map/merge/sort over every list's string ids together dominated large runs.
    """

    def __init__(self, *, as_of_month: str, previous_dir: Path | None) -> None:
        if not _MONTH.match(as_of_month):
            raise ValueError(f"as_of_month must be YYYY-MM, got {as_of_month!r}")
        previous = read_state(previous_dir)
        later = previous["last_listed"].dropna()
        if len(later) and later.max() > as_of_month:
            raise UserError(
                f"previous run {previous_dir} is later ({later.max()}) than this run "
                f"({as_of_month}); pass an earlier run with --previous"
            )
        self.month = as_of_month
        self.before = _by_list(pa.Table.from_pandas(previous, preserve_index=False))
        #: per list: the previous rows listed again so far (a mask over ``before``'s rows)
        self.again = {name: np.zeros(len(rows), dtype=bool) for name, rows in self.before.items()}
        #: per list: the listed rows' id, first month and practice, piece by piece
        self.current: dict[str | None, list[pa.Table]] = {}

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
            first = earlier["first_listed"].take(at)
            if record:
                self.again[name][pc.drop_null(at).to_numpy()] = True
        listed = pc.fill_null(first, self.month)
        if record:
            self.current.setdefault(name, []).append(pa.table(
                {"patient_id": ids, "first_listed": listed,
                 "practice_id": _text(worklist["practice_id"])}))
        return worklist.assign(
            first_listed=_strings(listed),
            change=_strings(pc.if_else(pc.is_valid(first), "persisting", "new")),
        )

    def finish(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """(resolved patients with ``RESOLVED_COLUMNS``; the new state with
        ``STATE_COLUMNS``), from what the recorded pieces listed."""
        current = {name: _first_per_patient(pa.concat_tables(tables))
                   for name, tables in self.current.items()}
        state = _stack(current, ("patient_id", "first_listed", "practice_id"),
                       last_listed=self.month)[list(STATE_COLUMNS)]
        gone = {name: rows.filter(pa.array(~self.again[name])) if name in self.current
                else rows for name, rows in self.before.items()}
        gone = {name: rows.take(pc.sort_indices(  # stable; nulls last
                    rows, [("practice_id", "ascending"), ("patient_id", "ascending")]))
                for name, rows in gone.items()}
        resolved = _stack(gone, ("patient_id", "practice_id", "first_listed", "last_listed"))
        return resolved[list(RESOLVED_COLUMNS)], state


def _text(column: pd.Series) -> pa.ChunkedArray:
    """A column as the Arrow text that ``astype("string")`` holds."""
    return _chunked(pa.array(column.astype("string").array)).cast(pa.large_string())


def _strings(values: pa.Array | pa.ChunkedArray) -> pd.api.extensions.ExtensionArray:
    """Arrow text as a ``string`` column, without a copy."""
    return pd.array(_chunked(values), dtype="string")


def _chunked(values: pa.Array | pa.ChunkedArray) -> pa.ChunkedArray:
    return values if isinstance(values, pa.ChunkedArray) else pa.chunked_array([values])


def _by_list(state: pa.Table) -> dict[str | None, pa.Table]:
    """The state's rows per list name (missing names under ``None``), in file order."""
    state = state.cast(pa.schema([(c, pa.large_string()) for c in state.column_names]))
    names = state["list"].unique().to_pylist()
    return {name: state.filter(pc.is_null(state["list"]) if name is None
                               else pc.fill_null(pc.equal(state["list"], name), False))
            for name in names}


def _first_per_patient(rows: pa.Table) -> pa.Table:
    """``rows`` sorted by patient id, keeping each patient's first row (as drop_duplicates)."""
    order = pa.array(text_order(rows["patient_id"]))  # stable; nulls last
    ids = rows["patient_id"].take(order)
    if len(ids) > 1:
        head, tail = ids[:-1], ids[1:]
        repeat = pc.or_(pc.fill_null(pc.equal(head, tail), False),
                        pc.and_(pc.is_null(head), pc.is_null(tail)))
        if pc.any(repeat).as_py():
            order = order.filter(pa.concat_arrays([pa.array([True]),
                                                   pc.invert(repeat).combine_chunks()]))
    return rows.take(order)


def _stack(tables: dict[str | None, pa.Table], columns: tuple[str, ...],
           **constant: str) -> pd.DataFrame:
    """The per-list tables one after another in the standard list order (other names after,
    alphabetically; a missing name last) with a ``list`` column: same input, same bytes."""
    def rank(name: str | None) -> tuple[int, bool, str]:
        known = LIST_NAMES.index(name) if name in LIST_NAMES else len(LIST_NAMES)
        return known, name is None, name or ""

    names = sorted(tables, key=rank)
    sizes = np.array([len(tables[n]) for n in names], dtype=np.intp)
    frame = {c: _strings(pa.chunked_array([k for n in names for k in tables[n][c].chunks],
                                          pa.large_string()))
             for c in columns}
    frame["list"] = pd.array(names, dtype="string").take(np.repeat(np.arange(len(names)), sizes))
    for column, value in constant.items():
        frame[column] = pd.array([value], dtype="string").take(np.zeros(sizes.sum(), np.intp))
    return pd.DataFrame(frame, index=pd.RangeIndex(int(sizes.sum())), copy=False)


def find_previous_run(out_dir: Path, as_of: dt.date, rules_name: str) -> Path | None:
    """The latest run folder beside ``out_dir`` with an earlier as-of date and the same rules.

    Only b12screen run folders count: folders without b12screen's manifest (an interrupted
    or foreign folder), validate folders, and dot-folders (a run's temporary folder, or a
    previous run set aside while it is replaced) are skipped.
    """
    out_dir = Path(out_dir)
    parent = out_dir.parent
    if not parent.is_dir():
        return None
    best: tuple[dt.date, str] | None = None
    found: Path | None = None
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
        except (ValueError, KeyError, TypeError, AttributeError):
            continue
        if run_as_of >= as_of or name != rules_name:
            continue
        if best is None or (run_as_of, folder.name) > best:
            best, found = (run_as_of, folder.name), folder
    return found
