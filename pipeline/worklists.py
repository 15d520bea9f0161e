"""The five worklists a lab manager acts on: one row per patient per list.

Rows are grouped by practice, urgent first, then oldest result first, then patient id so
the order is stable. "Result" is the index test, or for patients without one in the
look-back window (everyone on the metformin list) their last total/active B12 test, so the
longest-unmonitored come first; patients never tested come last in their practice.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

#: list name -> (patients column that puts a patient on it, what to do)
LISTS: dict[str, tuple[str, str]] = {
    "urgent": ("urgent_review", "Urgent clinical review of B12 deficiency; treat if not treated"),
    "mma": ("needs_mma", "Add on or request serum methylmalonic acid (MMA)"),
    "supplementation": ("needs_supplementation", "Start B12 supplementation: see regimen"),
    "metformin_monitoring": ("metformin_monitoring_due",
                             "Request serum B12 (on metformin, none in the last year)"),
    "retest": ("retest_due", "Request serum B12 (3-month check after starting treatment)"),
}
WORKLIST_COLUMNS = (
    "practice_id", "patient_id", "age_years", "urgent_review", "b12_status", "index_test",
    "index_value", "index_unit", "index_censor", "index_date", "last_b12_test_date",
    "suggested_action", "suggested_regimen", "metformin_risk", "note", "reasons",
)
PAEDIATRIC_NOTE = "Under 16: thresholds are for over-16s; specialist review"
#: Worklist columns copied from the patients frame; the others are derived.
_TAKEN = tuple(c for c in WORKLIST_COLUMNS
               if c not in ("index_date", "last_b12_test_date", "suggested_action", "note"))
#: Text columns with a handful of distinct values (codes, statuses, the regimen text): taken
#: as codes into their distinct values, far cheaper than gathering the same text again.
_FEW_VALUES = ("practice_id", "b12_status", "index_test", "index_unit", "index_censor",
               "suggested_regimen")


def build_worklists(patients: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Select, annotate and sort each list from the classified patients.

    Only patients on some list are sorted, once, on integer keys; their columns are read
    once in row order and each list takes its rows from those. Sorting and copying the
    whole patients frame, and gathering text at random from it, dominated large runs.
    """
    flags = {name: _true(patients[flag].array) for name, (flag, _) in LISTS.items()}
    rows = _in_id_order(patients["patient_id"],
                        np.flatnonzero(np.logical_or.reduce(list(flags.values()))))
    listed = {c: patients[c].array.take(rows)
              for c in (*_TAKEN, "index_collected_at", "last_b12_test_at", "paediatric")
              if c not in _FEW_VALUES}
    few = {}
    for c in _FEW_VALUES:  # each taken and factorised in turn: its text is not kept
        values = patients[c].array.take(rows)
        if isinstance(values, pd.arrays.NumpyExtensionArray):  # object: as it is
            listed[c] = values
        else:
            few[c] = pd.factorize(values, sort=c == "practice_id")
        del values
    order = _list_order(listed, few.get("practice_id")
                        or pd.factorize(listed["practice_id"].to_numpy(), sort=True))
    derived = {
        "index_date": pd.Series(listed["index_collected_at"]).dt.floor("D").array,
        "last_b12_test_date": pd.Series(listed["last_b12_test_at"]).dt.floor("D").array,
        "note": _text([PAEDIATRIC_NOTE, ""], np.where(_true(listed["paediatric"]), 0, 1)),
    }
    lists = {}
    for name, (_, action) in LISTS.items():  # five lists; the work per list is vectorised
        at = order[flags[name][rows[order]]]  # the list's rows, as positions in ``rows``
        columns = {c: listed[c].take(at) for c in _TAKEN if c not in few}
        for c, (codes, values) in few.items():
            columns[c] = values.take(codes[at], allow_fill=True)  # code -1: missing
        columns.update((c, values.take(at)) for c, values in derived.items())
        columns["suggested_action"] = _text([action], np.zeros(len(at), dtype=np.intp))
        lists[name] = pd.DataFrame({c: pd.Series(columns[c], dtype=columns[c].dtype, copy=False)
                                    for c in WORKLIST_COLUMNS})  # dtype: no text inference
    return lists


def _in_id_order(ids: pd.Series, rows: np.ndarray) -> np.ndarray:
    """``rows`` ordered by patient id as pandas sorts them (missing last; ties as they come).

    Patients come in cohort order (ascending, unique text ids), which is checked rather than
    re-sorted; the row position then stands in for the id as the last sort key.
    """
    values = ids.array.take(rows)
    if isinstance(values.dtype, pd.StringDtype):  # Arrow compares UTF-8 bytes: text order
        text = pa.array(values)
        if not text.null_count and pc.all(pc.less(text[:-1], text[1:])).as_py() is not False:
            return rows
    codes, uniques = pd.factorize(pd.Series(values, copy=False), sort=True)
    return rows[np.argsort(np.where(codes < 0, len(uniques), codes), kind="stable")]


def _list_order(listed: dict[str, pd.api.extensions.ExtensionArray],
                practices: tuple[np.ndarray, pd.api.extensions.ExtensionArray]) -> np.ndarray:
    """Positions of the listed patients (in id order) sorted by practice (missing last),
    urgent first, then oldest result (none last); the sort is stable, so ties stay in id
    order."""
    codes, values = practices  # sorted codes; missing is -1
    group = np.where(codes < 0, len(values), codes) * 2 + ~_true(listed["urgent_review"])
    index_at = np.asarray(listed["index_collected_at"])
    result_at = np.where(np.isnat(index_at), np.asarray(listed["last_b12_test_at"]),
                         index_at).view(np.int64)
    result_at = np.where(result_at == np.iinfo(np.int64).min, np.iinfo(np.int64).max, result_at)
    return np.lexsort((result_at, group))  # the last key sorts first; two keys beat three


def _true(flags: pd.api.extensions.ExtensionArray) -> np.ndarray:
    return flags.to_numpy(dtype=bool, na_value=False)


def _text(values: list[str], codes: np.ndarray) -> pd.api.extensions.ExtensionArray:
    """``values[codes]`` as a text column, taken in Arrow rather than built from Python str."""
    return pd.array(values, dtype="str").take(codes)
