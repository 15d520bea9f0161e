"""The five worklists a lab manager acts on: one row per patient per list.

Rows are grouped by practice, urgent first, then oldest result first, then patient id so
the order is stable. "Result" is the index test, or for patients without one in the
look-back window (everyone on the metformin list) their last total/active B12 test, so the
longest-unmonitored come first; patients never tested come last in their practice.

Each row shows the index result as the lab reported it (``<150 pmol/L``, found among the
classified results), with the harmonised value rounded to the decimal places it was reported
with (one decimal once converted; bands were decided on the unrounded value). The MMA list
says which stored sample to add the test to, how old it is, and whether it is too old for an
add-on (``mma_addon_max_days``), so the lab can act on it without looking anything up.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.ingest.harmonise import UNIT_READ
from pipeline.kernels.sort import stable_order

#: list name -> (patients column that puts a patient on it, what to do)
LISTS: dict[str, tuple[str, str]] = {
    "urgent": ("urgent_review", "Urgent clinical review of B12 deficiency; treat if not treated"),
    "mma": ("needs_mma", "Add on or request serum methylmalonic acid (MMA)"),
    "supplementation": ("needs_supplementation", "Start B12 supplementation: see regimen"),
    "metformin_monitoring": ("metformin_monitoring_due",
                             "Request serum B12 (on metformin, none in the last year)"),
    "retest": ("retest_due", "Request serum B12 (check test: 3 months after starting "
                             "treatment, 1 month in pregnancy)"),
}
#: The urgent list's action by R12 limb: deficient (neurological symptoms, pregnancy, or
#: untreated > 90 days); not responding on the check test; indeterminate with neurological
#: symptoms (treatment should not wait for the MMA, BSH 2014); not responding on a course
#: that has lapsed since (no B12 prescription now: restart it).
URGENT_ACTIONS = (
    LISTS["urgent"][1],
    "Urgent review: still deficient on the check test while on B12 treatment "
    "(adherence, absorption, route)",
    "Urgent review: neurological symptoms with an indeterminate result; "
    "start treatment without waiting for the MMA",
    "Urgent review: deficient on the check test of a B12 course that has since lapsed; "
    "restart treatment, reviewing route, adherence and absorption",
)
#: The MMA list's action once the stored sample's age is known.
MMA_ADD_ON = "Add on serum methylmalonic acid (MMA) to the stored sample"
MMA_NEW_SAMPLE = ("Request serum methylmalonic acid (MMA) on a new sample: the stored sample is "
                  "too old to add on")
#: The MMA list's action where an MMA was done but did not settle the status: its censored
#: result spans the profile's limit (e.g. ``>=0.45`` µmol/L at the default 0.45, R3/R5), and
#: adding one to the sample again tells nothing new.
MMA_SPANS_LIMIT = ("MMA done, but its result spans the limit (see reasons): ask the lab for "
                   "a quantitative MMA, or decide clinically")
#: Days after collection within which a lab can still add a test to a stored sample (the
#: rules profile's R7 ``mma_addon_max_days`` when given).
MMA_ADDON_MAX_DAYS = 7
WORKLIST_COLUMNS = (
    "practice_id", "patient_id", "age_years", "urgent_review", "b12_status", "index_result",
    "index_test", "index_value", "index_unit", "index_censor", "index_date",
    "last_b12_test_date", "suggested_action", "suggested_regimen", "metformin_risk", "note",
    "reasons",
)
#: The MMA list's extra columns (after index_date): the stored sample and whether an
#: add-on to it is still possible.
MMA_COLUMNS = ("specimen_id", "site_id", "sample_age_days", "mma_addon_possible")
#: Patient columns shown where the patients frame has them: column -> (the column it
#: follows, the lists that show it).
OPTIONAL_COLUMNS: dict[str, tuple[str, tuple[str, ...]]] = {
    "not_responding": ("urgent_review", ("urgent", "retest")),
    "regimen_intent": ("suggested_regimen", tuple(LISTS)),
    "on_b12_combination": ("metformin_risk", ("urgent", "supplementation",
                                              "metformin_monitoring")),
}
#: Columns that only order a list (``build_worklists(order_keys=True)``): 0 for urgent,
#: 1 otherwise; the result's time as int64 (the largest for none).
NOT_URGENT, RESULT_AT = "_not_urgent", "_result_at"
#: A list's order as Arrow sort keys (nulls last): practice, urgent first, oldest result,
#: then patient id (text in byte order, as the cohort's ids are sorted). It depends on each
#: row alone and patient ids are unique within a list, so sorted parts of a list merge into
#: the order ``build_worklists`` gives the whole list.
ORDER_KEYS = (("practice_id", "ascending"), (NOT_URGENT, "ascending"),
              (RESULT_AT, "ascending"), ("patient_id", "ascending"))
PAEDIATRIC_NOTE = "Under 16: thresholds are for over-16s; specialist review"
#: Worklist columns copied from the patients frame; the others are derived.
_TAKEN = ("practice_id", "patient_id", "age_years", "urgent_review", "b12_status",
          "index_test", "index_unit", "index_censor", "suggested_regimen", "metformin_risk",
          "reasons")
#: Text columns with a handful of distinct values (codes, statuses, the regimen text): taken
#: as codes into their distinct values, far cheaper than gathering the same text again.
_FEW_VALUES = ("practice_id", "b12_status", "index_test", "index_unit", "index_censor",
               "suggested_regimen")
#: Long per-patient text taken straight into each list (not first for every listed patient
#: and then again per list): the reasons sentence, the largest column of the lists.
_PER_LIST = ("reasons",)
#: Few-valued text columns that the lists hold as categoricals (long texts: the regimen).
_AS_CATEGORIES = ("suggested_regimen",)
#: Few-valued columns that the lists hold as text, however the patients table holds them:
#: the practice, which a list's readers (its state, merged parts) compare as text.
_AS_TEXT = ("practice_id",)


def worklist_columns(name: str, patients: pd.DataFrame) -> list[str]:
    """The columns of list ``name``, in order: the common ones, the MMA list's sample, and
    the optional patient columns the patients frame has."""
    columns = list(WORKLIST_COLUMNS)
    if name == "mma":
        at = columns.index("index_date") + 1
        columns[at:at] = MMA_COLUMNS
    for column, (after, lists) in OPTIONAL_COLUMNS.items():
        if column in patients.columns and name in lists:
            columns.insert(columns.index(after) + 1, column)
    return columns


def build_worklists(patients: pd.DataFrame, results: pd.DataFrame | None = None, *,
                    as_of: date | None = None,
                    mma_addon_max_days: int = MMA_ADDON_MAX_DAYS,
                    order_keys: bool = False) -> dict[str, pd.DataFrame]:
    """Select, annotate and sort each list from the classified patients.

    ``results`` (the classified results) give each index test as reported and its sample;
    without them the result is spelt from the harmonised value. ``as_of`` (default: the
    patients' ``as_of`` column, if any) dates the samples' age. ``order_keys`` adds the
    columns of ``ORDER_KEYS`` that only the order needs (``NOT_URGENT``, ``RESULT_AT``), so
    that lists built from parts of the cohort can be merged into the whole cohort's order.

    Only patients on some list are sorted, once, on integer keys; their columns are read
    once in row order and each list takes its rows from those. Sorting and copying the
    whole patients frame, and gathering text at random from it, dominated large runs.
    """
    flags = {name: _true(patients[flag].array) for name, (flag, _) in LISTS.items()}
    rows = _in_id_order(patients["patient_id"],
                        np.flatnonzero(np.logical_or.reduce(list(flags.values()))))
    optional = [c for c in OPTIONAL_COLUMNS if c in patients.columns]
    listed = {c: patients[c].array.take(rows)
              for c in (*_TAKEN, *optional, "index_value", "index_collected_at",
                        "last_b12_test_at", "paediatric")
              if c not in _FEW_VALUES and c not in _PER_LIST}
    few = {}
    for c in _FEW_VALUES:  # each taken and factorised in turn: its text is not kept
        values = patients[c].array.take(rows)
        if isinstance(values, pd.arrays.NumpyExtensionArray):  # object: as it is
            listed[c] = values
        else:
            codes, distinct = pd.factorize(values, sort=c == "practice_id")
            if c in _AS_TEXT and isinstance(distinct, pd.Categorical):
                # as text, in the text's order (a categorical sorts by its categories' order)
                text = pd.array(np.asarray(distinct, dtype=object), dtype="str")
                at, distinct = pd.factorize(text, sort=True)
                codes = np.append(at, -1)[codes]  # code -1 (missing) reads the last
            few[c] = codes, distinct
        del values
    not_urgent, result_at = _order_keys(listed)
    order = _list_order(not_urgent, result_at, few.get("practice_id")
                        or pd.factorize(listed["practice_id"].to_numpy(), sort=True))

    def over_rows(c: str) -> pd.api.extensions.ExtensionArray:
        if c in few:
            codes, values = few[c]
            return values.take(codes, allow_fill=True)
        return listed[c]

    index_day = pd.Series(listed["index_collected_at"]).dt.floor("D")
    reported = _reported(patients, rows, results)
    sample = _sample_age(index_day, as_of if as_of is not None else _as_of(patients),
                         mma_addon_max_days)
    derived = {
        "index_date": index_day.array,
        "last_b12_test_date": pd.Series(listed["last_b12_test_at"]).dt.floor("D").array,
        "note": _text([PAEDIATRIC_NOTE, ""], np.where(_true(listed["paediatric"]), 0, 1)),
        **_as_reported(listed["index_value"], reported, over_rows),
        **sample,
    }
    possible = sample["mma_addon_possible"]  # unknown, possible, too old: the action
    # an MMA that did not settle the status (R5): its interval spans the limit
    mma_done = (pd.Series(patients["mma_umol_l"].array.take(rows)).notna().to_numpy()
                & pd.Series(patients["status_basis"].array.take(rows)).ne("mma")
                .fillna(True).to_numpy(dtype=bool)
                if {"mma_umol_l", "status_basis"} <= set(patients.columns)
                else np.zeros(len(rows), dtype=bool))
    mma_action = _text([LISTS["mma"][1], MMA_ADD_ON, MMA_NEW_SAMPLE, MMA_SPANS_LIMIT],
                       np.where(mma_done, 3, np.where(possible.isna(), 0,
                                                      np.where(possible.fillna(False), 1, 2))))
    responding = (_true(patients["not_responding"].array.take(rows))
                  if "not_responding" in patients else np.zeros(len(rows), dtype=bool))
    indeterminate = pd.Series(over_rows("b12_status")).eq("indeterminate").fillna(False)
    treated = (_true(patients["on_b12_treatment"].array.take(rows))
               if "on_b12_treatment" in patients else np.ones(len(rows), dtype=bool))
    urgent_action = _text(list(URGENT_ACTIONS),
                          np.where(responding, np.where(treated, 1, 3),
                                   np.where(indeterminate.to_numpy(dtype=bool), 2, 0)))
    lists = {}
    for name, (_, action) in LISTS.items():  # five lists; the work per list is vectorised
        at = order[flags[name][rows[order]]]  # the list's rows, as positions in ``rows``
        shown = set(worklist_columns(name, patients))  # only what the list shows is taken
        columns = {c: listed[c].take(at) for c in (*_TAKEN, *optional)
                   if c not in few and c not in _PER_LIST and c in shown}
        columns.update((c, patients[c].array.take(rows[at])) for c in _PER_LIST if c in shown)
        for c, (codes, values) in few.items():
            if c in shown and c in _AS_CATEGORIES:  # long, few texts: codes, not copies
                columns[c] = pd.Categorical.from_codes(codes[at],
                                                       categories=pd.Index(values, dtype="str"))
            elif c in shown:
                columns[c] = values.take(codes[at], allow_fill=True)  # code -1: missing
        columns.update((c, values.take(at)) for c, values in derived.items() if c in shown)
        columns["suggested_action"] = (mma_action.take(at) if name == "mma" else
                                       urgent_action.take(at) if name == "urgent" else
                                       _text([action], np.zeros(len(at), dtype=np.intp)))
        if order_keys:
            columns.update({NOT_URGENT: not_urgent.take(at), RESULT_AT: result_at.take(at)})
        lists[name] = pd.DataFrame({c: pd.Series(columns[c], dtype=columns[c].dtype, copy=False)
                                    for c in (*worklist_columns(name, patients),
                                              *((NOT_URGENT, RESULT_AT) if order_keys else ()))})
    return lists


#: A listed patients' column over the listed rows (in ``rows`` order).
_OverRows = Callable[[str], pd.api.extensions.ExtensionArray]


def _reported(patients: pd.DataFrame, rows: np.ndarray,
              results: pd.DataFrame | None) -> dict[str, pa.Array]:
    """Each listed patient's index test as reported (``result_text``, and as ``source_unit``
    the unit it was read in: the reported one, or the format's unit for its test code where
    the lab gave none) and its sample (``specimen_id``, ``site_id``), taken by position from
    the classified results: classification carries each index test's row (``index_row``,
    -1 for none). Null where the patient has no index test, or no results are given."""
    columns = {"result_text": "result_text",
               "source_unit": UNIT_READ if results is not None and UNIT_READ in results
               else "source_unit", "specimen_id": "specimen_id", "site_id": "site_id"}
    if "index_row" not in patients.columns or results is None:
        return {c: pa.nulls(len(rows), pa.string()) for c in columns}
    found = patients["index_row"].to_numpy()[rows].astype(np.int64)
    found = np.where(found < len(results), found, -1)
    return {c: (_arrow_text(results[held].array.take(found, allow_fill=True))
                if held in results.columns else pa.nulls(len(rows), pa.string()))
            for c, held in columns.items()}


def _as_reported(values: pd.api.extensions.ExtensionArray, reported: dict[str, pa.Array],
                 over_rows: _OverRows) -> dict[str, pd.api.extensions.ExtensionArray]:
    """``index_result`` as reported (text and unit; where the lab gave no unit, the format's
    unit for the test code, which the value was read in; the canonical unit only where
    neither is known), ``index_value`` rounded to the decimal places it was reported with
    (a converted value to one), and the index sample's ``specimen_id`` and ``site_id``.

    A result's decimals are read per distinct result text; without a reported result the
    value is spelt from the harmonised value and censor and left unrounded.
    """
    value = np.asarray(values.to_numpy(dtype="float64", na_value=np.nan), dtype="float64")
    text = reported["result_text"]
    # every text step runs on distinct values: a result text, its unit as reported and the
    # canonical unit repeat heavily, so each row only reads its answers off by code
    t_codes, t_distinct = _codes(text)
    parts = pd.Series(pd.array(t_distinct, dtype="str")).str.extract(
        r"^[^0-9.,]*([0-9]*)(?:[.,]([0-9]*))?")
    number = pd.to_numeric(parts[0].fillna("0") + "." + parts[1].fillna("0"), errors="coerce")
    decimals = np.r_[parts[1].fillna("").str.len().to_numpy(dtype=np.int64), -1][t_codes]
    number = np.r_[number.to_numpy(dtype="float64"), np.nan][t_codes]
    converted = ~np.isclose(number, value, rtol=1e-9, atol=0) & ~np.isnan(number)
    decimals = np.where(converted & (decimals >= 0), 1, decimals)
    scale = 10.0 ** np.maximum(decimals, 0)
    rounded = np.where(decimals >= 0, np.floor(value * scale + 0.5) / scale, value)

    u_codes, u_distinct = _codes(reported["source_unit"])
    c_codes, c_distinct = _codes(_arrow_text(over_rows("index_unit")))
    u_trimmed = pc.utf8_trim_whitespace(u_distinct)
    has_unit = np.r_[np.asarray(pc.fill_null(pc.greater(pc.utf8_length(u_trimmed), 0), False)),
                     False][u_codes]
    # the unit shown: the one read (trimmed) where there is one, else the canonical one
    units = pa.concat_arrays([u_trimmed.cast(pa.string()),
                              c_distinct.cast(pa.string()), pa.nulls(1, pa.string())])
    unit_at = np.where(has_unit, u_codes, np.where(c_codes >= 0, len(u_distinct) + c_codes,
                                                   len(u_distinct) + len(c_distinct)))
    valid = t_codes >= 0
    key = t_codes.astype(np.int64) * (len(units) + 1) + unit_at
    pair_codes, pairs = pd.factorize(key[valid])
    shown = pc.take(pc.utf8_trim_whitespace(t_distinct).cast(pa.string()),
                    pa.array(pairs // (len(units) + 1)))
    per_pair = pc.binary_join_element_wise(shown, units.take(pa.array(pairs % (len(units) + 1))),
                                           " ")
    # no result as reported (rare): spelt from the harmonised value and censor, per row
    rest = np.flatnonzero(~valid)
    spelt = pc.binary_join_element_wise(
        pc.fill_null(_arrow_text(over_rows("index_censor")).take(pa.array(rest)), ""),
        pc.cast(pa.array(value[rest], from_pandas=True), pa.string()), "")
    spelt = pc.binary_join_element_wise(spelt, units.take(pa.array(unit_at[rest])), " ")
    at = np.empty(len(value), dtype=np.int64)
    at[valid] = pair_codes
    at[rest] = len(per_pair) + np.arange(len(rest))
    result = pa.concat_arrays([per_pair.cast(pa.string()), spelt.cast(pa.string())]).take(
        pa.array(at))
    return {
        "index_result": pd.array(result, dtype="str"),
        "index_value": pd.array(rounded, dtype="float64"),
        "specimen_id": pd.array(reported["specimen_id"], dtype="str"),
        "site_id": pd.array(reported["site_id"], dtype="str"),
    }


def _sample_age(index_day: pd.Series, as_of: date | None,
                max_days: int) -> dict[str, pd.api.extensions.ExtensionArray]:
    """Days from the index sample's collection to the as-of date, and whether an add-on to
    the stored sample is still possible (missing where either date is unknown)."""
    if as_of is None:
        age = pd.array([pd.NA] * len(index_day), dtype="Int64")
    else:
        age = ((pd.Timestamp(as_of) - index_day).dt.days).astype("Int64").array
    return {"sample_age_days": age,
            "mma_addon_possible": pd.array(age <= max_days, dtype="boolean")}


def _as_of(patients: pd.DataFrame) -> date | None:
    """The run's as-of date as the patients table records it (rev-2 ``as_of``), if it does."""
    if "as_of" not in patients.columns or not patients["as_of"].notna().any():
        return None
    return pd.Timestamp(patients["as_of"].dropna().iloc[0]).date()


def _codes(text: pa.Array) -> tuple[np.ndarray, pa.Array]:
    """(code per value, -1 where null; the distinct values), by Arrow's hash kernel."""
    text = text.combine_chunks() if isinstance(text, pa.ChunkedArray) else text
    encoded = text.dictionary_encode()
    codes = pc.fill_null(encoded.indices, -1).to_numpy(zero_copy_only=False)
    return codes.astype(np.int64), encoded.dictionary






def _arrow_text(values: pd.api.extensions.ExtensionArray) -> pa.Array:
    """Any text column (str, string, object, categorical) as an Arrow string array; a
    categorical through its codes, so its text is converted once per category."""
    if isinstance(values.dtype, pd.CategoricalDtype):
        codes = np.asarray(values.codes)
        return _arrow_text(values.categories.array).take(pa.array(codes, mask=codes < 0))
    array = pa.array(pd.Series(values, copy=False).astype("str").array)
    array = array.combine_chunks() if isinstance(array, pa.ChunkedArray) else array
    return array.cast(pa.string())  # one type for the kernels that join text




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
    return rows[stable_order(np.where(codes < 0, len(uniques), codes))]


def _order_keys(listed: dict[str, pd.api.extensions.ExtensionArray]
                ) -> tuple[np.ndarray, np.ndarray]:
    """Each listed patient's urgency (0 urgent, 1 not; unknown is not urgent) and the time
    of the result the lists order by: the index test's, else the last B12 test's, as int64
    in the columns' own unit (none: the largest int64, so last). Both depend on the row
    alone."""
    not_urgent = (~_true(listed["urgent_review"])).astype(np.uint8)
    index_at = np.asarray(listed["index_collected_at"])
    result_at = np.where(np.isnat(index_at), np.asarray(listed["last_b12_test_at"]),
                         index_at).view(np.int64)
    result_at = np.where(result_at == np.iinfo(np.int64).min, np.iinfo(np.int64).max, result_at)
    return not_urgent, result_at


def _list_order(not_urgent: np.ndarray, result_at: np.ndarray,
                practices: tuple[np.ndarray, pd.api.extensions.ExtensionArray]) -> np.ndarray:
    """Positions of the listed patients (in id order) sorted by practice (missing last),
    urgent first, then oldest result (none last); the sort is stable, so ties stay in id
    order: the order ``ORDER_KEYS`` give to Arrow's sort."""
    codes, values = practices  # sorted codes; missing is -1
    group = np.where(codes < 0, len(values), codes) * 2 + not_urgent
    return stable_order(group, result_at)  # two keys beat three


def _true(flags: pd.api.extensions.ExtensionArray) -> np.ndarray:
    return flags.to_numpy(dtype=bool, na_value=False)


def _text(values: list[str], codes: np.ndarray) -> pd.api.extensions.ExtensionArray:
    """``values[codes]`` as a text column: a categorical (the few action texts are held
    once, each row a code; the CSV and XLSX writers write them as text)."""
    return pd.Categorical.from_codes(np.asarray(codes), categories=pd.Index(values, dtype="str"))
