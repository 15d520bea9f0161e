"""Validate each input row by row: every row ends accepted, rejected, skipped or duplicate.

Checks are declared once as pandera checks whose *name is the reason code* written to
``rejected.parquet``; pandera's lazy validation collects every failure, so a row can carry
several reasons and one bad row never stops the run. Whole-input problems (a missing
required column, too many rejects) are ``UserError``s raised elsewhere.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime

import numpy as np
import pandas as pd
import pandera.pandas as pa

from pipeline.config import ExtractFormat, RulesProfile
from pipeline.ingest import harmonise as hz
from pipeline.ingest.read import (
    MALFORMED,
    MALFORMED_REASON,
    SOURCE_FILE,
    SOURCE_ROW,
    FileInfo,
    RawInput,
    canonical_view,
)
from pipeline.ingest.reason_codes import (
    LAB_REASONS,
    MEDICATION_REASONS,
    PATIENT_REASONS,
    per_reason,
)
from pipeline.kernels.memory import trim_heap

#: The units a number column may carry after its number (its own unit only).
AGE_UNIT = r"y|yr|yrs|year|years"
CM_UNIT = r"cm"
DOSE_UNIT = r"mg|mg\s*/\s*(?:d|day)|mg\s+(?:daily|a\s+day|per\s+day)"
YES_NO_COLUMNS = ("autoimmune_gastritis", "bariatric_surgery", "crohns_disease",
                  "neurological_symptoms", "pregnant")
DIETS = ("omnivore", "vegetarian", "vegan", "unknown")


@dataclass
class Validated:
    """One input after validation, with its row accounting."""

    kind: str
    accepted: pd.DataFrame
    rejected: pd.DataFrame
    counts: dict[str, int]
    ids: pd.Series
    files: list[FileInfo]
    warnings: list[str] = field(default_factory=list)
    original_columns: list[str] = field(default_factory=list)
    #: labs: the latest credible collection date of any row (for the default as-of date)
    latest_collected: pd.Timestamp | None = None
    #: labs: each accepted row's patient as a code into ``id_values`` (factorised once)
    id_codes: np.ndarray | None = None
    id_values: pd.Series | None = None
    #: labs: for each of ``id_values``, the practice named by its latest lab row naming one
    #: (missing where none does): the practice of last resort (``classify``)
    id_practice: pd.Categorical | None = None
    #: labs: rows per test code, for the warning that a format maps no code
    codes: CodeTally | None = None
    #: columns of the input that the format maps to nothing (reported in the manifest)
    unused_columns: list[str] = field(default_factory=list)


def _nonempty(s: pd.Series) -> pd.Series:
    return s.fillna("") != ""


def _present(uniques: pd.Series) -> np.ndarray:
    """Per distinct value, whether it is non-empty; indexed by a factorised code, where
    the code -1 (missing) reads the appended False."""
    return np.append(_nonempty(uniques).to_numpy(dtype=bool), False)


def _truthy(s: pd.Series) -> pd.Series:
    """Check for columns that already hold 'row is valid' booleans."""
    return s.astype(bool)


def _run_checks(frame: pd.DataFrame, checks: dict[str, tuple[str, Callable]],
                order: tuple[str, ...]) -> pd.DataFrame:
    """Run the pandera checks; return a boolean frame (row x reason) of failures.

    ``checks`` maps reason code -> (column, vectorised predicate that is True when valid).
    pandera validates the frame's schema (every column a check reads is there); each check,
    a ``pandera.Check`` named by its reason code, then runs once over its whole column as a
    vectorised mask. (Lazy schema validation would build a failure-case row per failing
    cell: on a large extract with a systematic unit slip, seconds and gigabytes.)
    """
    schema = pa.DataFrameSchema(
        {column: pa.Column(nullable=True, required=True) for column, _ in checks.values()},
        strict=False)
    schema.validate(frame.iloc[:0])  # the columns; the checks then run on every row
    failed = {code: np.zeros(len(frame), dtype=bool) for code in order}
    for code, (column, fn) in checks.items():
        result = pa.Check(fn, name=code, ignore_na=False)(frame[column])
        failed[code] = ~result.check_output.to_numpy(dtype=bool)
    return pd.DataFrame(failed, index=frame.index, copy=False)


def _load_checks() -> None:
    """pandera loads its checking backends on its first validation (and, where hypothesis
    is installed, its data-generation strategies: about 0.2 s). One validation of an empty
    frame when this module is imported loads them then: the command line imports this
    module on a thread while the input is read, so the first real check finds them ready."""
    _run_checks(pd.DataFrame({"x": pd.Series([], dtype=bool)}), {"warm": ("x", _truthy)},
                ("warm",))


_load_checks()


def _reasons_text(failed: pd.DataFrame) -> pd.Series:
    """Join the failing reason codes of each row with ';' in the declared order.

    A malformed record has no trustworthy fields, so it carries ``malformed_row`` or
    ``oversized_field`` alone.
    """
    whole = [c for c in ("malformed_row", "oversized_field") if c in failed]
    if whole:
        malformed = failed[whole].to_numpy().any(axis=1)
        failed = failed.copy()
        failed.loc[malformed, [c for c in failed.columns if c not in whole]] = False
    text = np.full(len(failed), "", dtype=object)
    for code in failed.columns:  # a handful of reason columns, each vectorised over rows
        hit = failed[code].to_numpy(dtype=bool)
        text = np.where(hit, np.where(text == "", code, text + ";" + code), text)
    return pd.Series(text, index=failed.index, dtype="str")


#: The product's own columns of ``rejected.parquet``, before the input's original fields.
REJECTED_COLUMNS = ("input", "source_file", "source_row", "reasons", "raw_line")


def rejected_field_names(original: list[str]) -> dict[str, str]:
    """Output name of each original field of a rejected row: its own name, unless that is
    one of the product's columns (an input column called ``reasons`` or ``source_row``),
    then ``original_<name>``, so no input column can replace the product's values."""
    taken = set(REJECTED_COLUMNS) | set(original)
    names: dict[str, str] = {}
    for column in original:
        name = column
        while name in REJECTED_COLUMNS or (name != column and name in taken):
            name = f"original_{name}"
        names[column] = name
        taken.add(name)
    return names


def _checked(raw: RawInput, check_frame: pd.DataFrame,
             checks: dict[str, tuple[str, Callable]], known: tuple[str, ...]
             ) -> tuple[pd.DataFrame, pd.Series, pd.DataFrame]:
    """Run ``checks``: the failures per reason, which rows failed any, and those rows as
    the rejected table (original fields and reason codes)."""
    failed = _run_checks(check_frame, checks, known)
    bad = failed.any(axis=1)
    reasons = _reasons_text(failed[bad]) if bad.any() else pd.Series([], dtype="str")
    return failed, bad, _rejected_table(raw, failed.index[bad], reasons)


def _rejected_table(raw: RawInput, rows: pd.Index, reasons: pd.Series) -> pd.DataFrame:
    """Rejected rows with every original field as text, source file and 1-based line."""
    frame = raw.frame.loc[rows]
    out = pd.DataFrame({
        "input": pd.Series(raw.kind, index=rows, dtype="str"),
        "source_file": frame[SOURCE_FILE].astype("str"),
        "source_row": frame[SOURCE_ROW].astype("int64"),
        "reasons": reasons.loc[rows].astype("str"),
    })
    for column, name in rejected_field_names(raw.original_columns).items():
        out[name] = frame[column].astype("str")
    if MALFORMED in frame.columns:
        out["raw_line"] = frame[MALFORMED].astype("str")
    return out


def _exact_duplicates(raw: RawInput, candidates: pd.Series,
                      keys: tuple[np.ndarray, ...] = ()) -> pd.Series:
    """Rows identical in every original field to an earlier row (among ``candidates``).

    ``keys`` are integer codes of canonical columns (functions of the original fields), so
    rows identical in every field share them: only rows whose keys repeat are compared in
    full, which is a small fraction of a real extract.
    """
    dup = pd.Series(False, index=raw.frame.index)
    mask = candidates.to_numpy(dtype=bool)
    if keys and mask.any():
        mask = _repeated(mask, keys)
    subset = raw.frame.loc[mask, raw.original_columns]
    if len(subset):
        dup.loc[subset.index] = subset.duplicated(keep="first").to_numpy()
    return dup


def _repeated(mask: np.ndarray, keys: tuple[np.ndarray, ...]) -> np.ndarray:
    """``mask`` narrowed to the rows whose combined key occurs more than once among it."""
    rows = np.flatnonzero(mask)
    key = _combined_key([k[rows] for k in keys])
    ordered = np.sort(key)  # a sort, then a lookup of the few repeated keys: no big hash
    repeated = pd.Series(key).isin(ordered[1:][ordered[1:] == ordered[:-1]]).to_numpy()
    out = np.zeros_like(mask)
    out[rows[repeated]] = True
    return out


def _combined_key(codes: list[np.ndarray]) -> np.ndarray:
    """One int64 per row, equal exactly when every code is equal (re-factorised before it
    could overflow)."""
    key = np.zeros(len(codes[0]), dtype=np.int64)
    size = 1
    for code in codes:
        card = int(code.max()) + 2 if len(code) else 1  # -1 (missing) becomes 0
        if size * card >= 2**62:
            key, uniques = pd.factorize(key)
            size = len(uniques)
        key = key * card + (code.astype(np.int64) + 1)
        size *= card
    return key


def _ids(canon: pd.DataFrame) -> pd.Series:
    ids = canon["patient_id"] if "patient_id" in canon else pd.Series([], dtype="str")
    return ids[ids != ""].drop_duplicates()


def _malformed(canon: pd.DataFrame) -> pd.Series:
    if MALFORMED in canon:
        return canon[MALFORMED].astype(bool)
    return pd.Series(False, index=canon.index)


def _blank(index: pd.Index, coded: bool = False) -> pd.Series:
    """An input's missing optional column: every cell empty. ``coded``: as one category,
    for a column that is only factorised (hashing ten million empty texts took half a
    second)."""
    if coded:
        return pd.Series(pd.Categorical.from_codes(np.zeros(len(index), dtype=np.int8),
                                                   categories=pd.Index([""], dtype="str")),
                         index=index)
    return pd.Series("", index=index, dtype="str")


def _oversized(canon: pd.DataFrame) -> pd.Series:
    """Rejected records over the reader's size limit (a subset of the malformed ones)."""
    if MALFORMED_REASON in canon:
        return canon[MALFORMED_REASON] == "oversized_field"
    return pd.Series(False, index=canon.index)


# ---------------------------------------------------------------------------------- labs


def validate_labs(raw: RawInput, fmt: ExtractFormat, rules: RulesProfile,
                  today: date, *, practices: bool = True) -> Validated:
    """Labs: map codes (others skipped), drop exact duplicates, parse and check the rest.

    Each text column is factorised once and codes, units, results and dates are converted
    on their distinct values (a lab extract repeats them heavily); patient ids are
    factorised once here and the codes travel with the accepted rows to classification,
    with each id's practice of last resort (``practices``; validation alone needs none).
    """
    spec = fmt.labs
    canon = canonical_view(raw, spec, prefer={"test_code": set(spec.codes)})
    for column in ("unit", "practice_id", "site_id", "specimen_id", "censor"):
        if column not in canon:
            canon[column] = _blank(canon.index, coded=column in ("unit", "censor"))
    malformed = _malformed(canon)
    h = rules.harmonise
    factors = hz.unit_factors(h)
    analytes = list(factors)

    pool = ThreadPoolExecutor(max_workers=1)  # the ids hash while codes are mapped
    pid_future = pool.submit(hz.factorize, canon["patient_id"])
    pool.shutdown(wait=False)
    code_of, codes_u = hz.factorize(canon["test_code"])
    upper_u = codes_u.astype("str").str.strip().str.upper()
    analyte_u = pd.Series(pd.Categorical(upper_u.map(spec.codes), categories=analytes))
    a_code = np.asarray(analyte_u.cat.codes, dtype=np.int8)[code_of]
    a_code[code_of < 0] = -1
    has_code = _present(codes_u)[code_of]  # missing_test_code is its negation
    skipped = pd.Series((a_code < 0) & has_code, index=canon.index) & ~malformed
    tally_args = (code_of, codes_u, has_code, skipped.to_numpy())
    date_code, date_u = hz.factorize(canon["collected_at"])
    result_code, result_u = hz.factorize(canon["result"])
    # Results, censors, units and dates are parsed on their distinct values (while the ids
    # are still hashing); each row then reads its answers off by its code.
    parsed_u = hz.parse_results(result_u, decimal_comma=spec.read.decimal_comma)
    censor_code, censor_u = hz.factorize(canon["censor"])
    given_u, bad_censor_u = hz.parse_censor(censor_u)
    unit_code, unit_u = hz.factorize(canon["unit"])
    default_u = hz.lookup(upper_u, spec.default_units).fillna("")
    dates_u = hz.parse_dates(date_u, day_first=spec.read.day_first,
                             formats=spec.read.datetime_formats).to_numpy(dtype="datetime64[us]")
    earliest = np.datetime64(h["earliest_date"], "us")
    tomorrow = np.datetime64(today, "us") + np.timedelta64(1, "D")
    credible_u = (dates_u >= earliest) & (dates_u < tomorrow)
    practice_code, practice_u = hz.factorize(canon["practice_id"])
    pid_code, pid_u = pid_future.result()
    beside = ThreadPoolExecutor(max_workers=1)  # while the rows are checked (numpy kernels)
    id_practice = (beside.submit(_latest_practice, pid_code, len(pid_u),
                                 (~malformed).to_numpy(), practice_code, practice_u, date_code,
                                 dates_u, credible_u) if practices else None)
    beside.shutdown(wait=False)
    tally = _code_tally(*tally_args, pid_code)
    duplicate = _exact_duplicates(raw, ~skipped & ~malformed,
                                  (pid_code, date_code, code_of, result_code))
    todo = (~skipped & ~duplicate).to_numpy()
    rows = np.flatnonzero(todo)  # the text columns are taken once, for the accepted rows
    a_work = a_code[rows]

    # per row only numbers and small codes
    number = _per_row(parsed_u["number"].to_numpy(dtype="float64"), result_code[rows], np.nan)
    from_result = _per_row(_censor_codes(parsed_u["censor"]), result_code[rows], 0)
    given = _per_row(_censor_codes(given_u), censor_code[rows], 0)
    bad_censor = _per_row(bad_censor_u.to_numpy(dtype=bool), censor_code[rows], False)
    censor = np.where(given > 0, given, from_result)  # a censor column wins over the text
    del from_result, given
    # a row without a unit takes its test code's default unit: distinct pairs only
    pair_code, pairs = pd.factorize(pd.Series(unit_code[rows].astype(np.int64) * (len(codes_u) + 1)
                                              + code_of[rows]))
    pair_unit = unit_u.take(pairs // (len(codes_u) + 1)).reset_index(drop=True)
    pair_default = default_u.take(pairs % (len(codes_u) + 1)).reset_index(drop=True)
    pair_text = pair_unit.where(pair_unit != "", pair_default)
    read_code, read_u = pd.factorize(pair_text)  # the unit each pair's result is read in
    norm_u = hz.normalise_unit(pair_text)
    table = np.full((len(analytes) + 1, len(pairs) + 1), np.nan)
    for i, a in enumerate(analytes):
        table[i, :len(pairs)] = norm_u.map(factors[a]).to_numpy(dtype="float64",
                                                                 na_value=np.nan)
    a_row = np.where(a_work < 0, len(analytes), a_work)  # no analyte: the last row of NaN
    factor = table[a_row, pair_code]
    # each row's unit as read, as a narrow code: a byte per row, not 64-bit temporaries
    unit_read = read_code.astype(np.int8 if len(read_u) < 127 else np.int32)[pair_code]
    del pair_code
    value = np.round(number * factor, 6)
    collected = _per_row(dates_u, date_code[rows], np.datetime64("NaT", "us"))
    # the default as-of date: any row's date counts, so the distinct dates are enough
    credible = dates_u[credible_u]
    bounds = np.array([[h[f"{a}_plausible_min"], h[f"{a}_plausible_max"]] for a in analytes]
                      + [[np.nan, np.nan]])
    lo, hi = bounds[a_row, 0], bounds[a_row, 1]
    usable_value = np.where(number >= 0, value, np.nan)

    has_result = _present(result_u)[result_code[rows]]
    check_frame = pd.DataFrame({
        "row": (malformed & ~_oversized(canon)).to_numpy()[rows],
        "oversized": _oversized(canon).to_numpy()[rows],
        "patient_id": _present(pid_u)[pid_code[rows]],
        "test_code": has_code[rows], "collected_at": collected,
        "result": has_result,
        "number": np.where(has_result, number, 0.0),  # missing: missing_result alone
        "value": usable_value,
        "factor": np.where(a_work >= 0, factor, 1.0),  # no code: missing_test_code alone
        "censor_ok": ~bad_censor,
    }, index=canon.index[rows], copy=False)
    checks: dict[str, tuple[str, Callable]] = {
        "malformed_row": ("row", lambda s: ~s.astype(bool)),
        "oversized_field": ("oversized", lambda s: ~s.astype(bool)),
        "missing_patient_id": ("patient_id", _truthy),
        "missing_test_code": ("test_code", _truthy),
        "bad_date": ("collected_at", lambda s: s.notna() & (s >= earliest)),
        "future_date": ("collected_at", lambda s: ~(s >= tomorrow)),
        # an empty result, or a missing-value token (``NULL``, ``N/A``) in a CSV, is missing
        "missing_result": ("result", _truthy),
        "non_numeric_result": ("number", lambda s: s.notna()),
        "negative_result": ("number", lambda s: ~(s < 0)),
        "bad_censor": ("censor_ok", _truthy),
        "unknown_unit": ("factor", lambda s: s.notna()),
        "implausible_value": ("value", lambda s, lo=lo, hi=hi: ~((s < lo) | (s > hi))),
    }
    failed = _run_checks(check_frame, checks, LAB_REASONS)
    bad = failed.any(axis=1)
    reasons = _reasons_text(failed[bad]) if bad.any() else pd.Series([], dtype="str")
    rejected = _rejected_table(raw, failed.index[bad], reasons)
    del check_frame, checks, failed, number, usable_value, factor, lo, hi, bad_censor, has_result
    trim_heap()  # the accepted rows' text is taken by Arrow, which cannot reuse those pages

    ok = ~bad.to_numpy()
    a_ok = a_work[ok]
    take = rows[ok]
    # Low-cardinality text stays categorical (codes into the distinct values): a fraction
    # of the memory, and nothing to copy per row; ids and specimens are taken as text (a
    # categorical would check its millions of distinct ids for uniqueness: seconds).
    text = canon[["patient_id", "specimen_id", SOURCE_FILE, SOURCE_ROW]].iloc[take]
    accepted = pd.DataFrame({
        "patient_id": text["patient_id"],
        "collected_at": collected[ok],
        "analyte": pd.Categorical.from_codes(a_ok, categories=analytes),
        "value": value[ok],
        "unit": pd.Categorical.from_codes(
            a_ok, categories=[hz.CANONICAL_UNIT[a] for a in analytes]),
        "censor": pd.Categorical.from_codes(censor[ok], categories=hz.CENSORS),
        "result_text": _categorical(result_code[take], result_u),
        "source_unit": _categorical(unit_code[take], unit_u),
        # as reported, or the format's unit for the test code where the lab gave none:
        # what the worklists show beside the result as reported (not written to a file)
        hz.UNIT_READ: _categorical(unit_read[ok], read_u),
        "practice_id": _taken_codes(practice_code, practice_u, take),
        "site_id": _taken(canon["site_id"], take),
        "specimen_id": text["specimen_id"],
        "source_file": text[SOURCE_FILE],
        "source_row": text[SOURCE_ROW],
    }, index=text.index, copy=False)
    counts = {
        "rows_read": len(canon),
        "rows_accepted": len(accepted),
        "rows_rejected": len(rejected),
        "rows_skipped_other_tests": int(skipped.sum()),
        "rows_exact_duplicates": int(duplicate.sum()),
    }
    ids = pid_u[pid_u.fillna("") != ""].reset_index(drop=True)
    return Validated("labs", accepted, rejected, counts, ids, raw.files,
                     [*raw.warnings, *unmapped_warning(tally, fmt, small_count(rules))],
                     raw.original_columns,
                     pd.Timestamp(credible.max()) if len(credible) else None,
                     id_codes=pid_code[take], id_values=pid_u,
                     id_practice=id_practice.result() if id_practice else None,
                     codes=tally,
                     unused_columns=list(raw.unused_columns))


def small_count(rules: RulesProfile) -> int:
    """The profile's disclosure threshold: a code seen for fewer patients may be an id."""
    return int(rules.disclosure.get("small_count", 7))


def _per_row(answers: np.ndarray, codes: np.ndarray, missing: object) -> np.ndarray:
    """Per-distinct-value answers read off by each row's code (-1 reads ``missing``)."""
    return np.append(answers, np.array([missing], dtype=answers.dtype))[codes]


def _censor_codes(text: pd.Series) -> np.ndarray:
    """Censor texts (distinct values) as codes into ``CENSORS`` ('' is 0, unknown -1)."""
    return np.asarray(hz.categorical(text.fillna(""), hz.CENSORS).codes, dtype=np.int8)


def _taken(column: pd.Series, take: np.ndarray) -> pd.Categorical:
    """``column``'s rows at ``take`` as a categorical of the values they hold, in order of
    appearance among them, without copying their text (the codes are remapped)."""
    return _taken_codes(*hz.factorize(column), take)


def _taken_codes(codes: np.ndarray, uniques: pd.Series, take: np.ndarray) -> pd.Categorical:
    """``_taken`` of a column already factorised (``codes`` into ``uniques``)."""
    codes = codes[take]
    seen = pd.unique(codes)
    kept = seen[seen >= 0]
    remap = np.full(len(uniques) + 1, -1, dtype=np.int32)  # the last slot: code -1 stays
    remap[kept] = np.arange(len(kept), dtype=np.int32)
    return _categorical(remap[codes], uniques.take(kept))


def _latest_practice(pid_code: np.ndarray, n_ids: int, whole: np.ndarray,
                     practice_code: np.ndarray, practice_u: pd.Series, date_code: np.ndarray,
                     dates_u: np.ndarray, credible_u: np.ndarray) -> pd.Categorical:
    """For each distinct id (``pid_code``'s values), the practice named by its latest lab row
    that names one, of any test (``whole``: the rows read as records, i.e. not malformed),
    with a credible date (latest collection time; the later row at the same time). Missing
    where no row names one. Rows of other tests, results after the as-of date and results
    rejected for their value all count: a row's practice says where the patient is seen,
    whatever its result. ``rules.classify.with_lab_practice`` uses it last, after the
    patients input and the B12/MMA results up to the as-of date.

    Why: a patient seen only in other tests (a metformin user with HbA1c rows and no B12
    test) has no B12 result to name a practice, yet the metformin list is grouped by
    practice. One pass: each row's (date rank, row) packed in one integer, its maximum per
    id by ``np.maximum.at``, no sort of the rows.
    """
    named_u = _present(practice_u)  # code -1 (missing) reads the appended False
    dated_u = np.append(credible_u, False)
    rows = np.flatnonzero(whole & named_u[practice_code] & dated_u[date_code]
                          & (pid_code >= 0))
    codes = np.full(n_ids, -1, dtype=np.int32)
    if len(rows):
        # equal times spelt two ways rank alike (``2026-10-01`` and ``01/10/2026``)
        rank_u = np.unique(dates_u, return_inverse=True)[1].astype(np.int64).reshape(-1)
        bits = np.int64(max(int(len(whole)).bit_length(), 1))  # the row below the date rank
        key = (rank_u[date_code[rows]] << bits) | rows.astype(np.int64)
        best = np.full(n_ids, -1, dtype=np.int64)
        np.maximum.at(best, pid_code[rows], key)
        found = best >= 0
        codes[found] = practice_code[best[found] & ((np.int64(1) << bits) - 1)]
    return _categorical(codes, practice_u)


def _categorical(codes: np.ndarray, uniques: pd.Series) -> pd.Categorical:
    return pd.Categorical.from_codes(codes, categories=pd.Index(uniques, dtype="str"))


@dataclass
class CodeTally:
    """Labs: rows per non-empty test code, and how many rows with a code were kept (mapped,
    or malformed): enough to warn that a format maps nothing, also summed over partitions.
    ``patients`` counts distinct patients per code and ``ids`` distinct patients with a
    code, only where nothing was kept (the warning names a code only when it cannot be an
    id); partitions hold disjoint patients, so the counts add up."""

    counts: pd.Series
    kept: int
    patients: pd.Series | None = None
    ids: int = 0

    @classmethod
    def sum(cls, tallies: list[CodeTally]) -> CodeTally:
        counts = pd.concat([t.counts for t in tallies]).groupby(level=0, sort=False).sum()
        kept = sum(t.kept for t in tallies)
        patients = None
        if not kept and all(t.patients is not None for t in tallies):
            patients = pd.concat([t.patients for t in tallies]).groupby(
                level=0, sort=False).sum().astype("int64")
        return cls(counts.astype("int64"), kept, patients, sum(t.ids for t in tallies))


def _code_tally(code_of: np.ndarray, codes_u: pd.Series, has_code: np.ndarray,
                skipped: np.ndarray, pid_code: np.ndarray | None = None) -> CodeTally:
    counts = np.bincount(code_of[code_of >= 0], minlength=len(codes_u))
    keep = _present(codes_u)[:-1] & (counts > 0)
    index = pd.Index(codes_u[keep], dtype="str")
    tally = pd.Series(counts[keep], index=index, dtype="int64")
    kept = int((has_code & ~skipped).sum())
    patients, ids = None, 0
    if not kept and pid_code is not None:  # nothing maps: the warning will name codes
        rows = (code_of >= 0) & (pid_code >= 0)
        pairs = np.unique(code_of[rows].astype(np.int64) * (int(pid_code.max(initial=0)) + 1)
                          + pid_code[rows])
        per_code = np.bincount(pairs // (int(pid_code.max(initial=0)) + 1),
                               minlength=len(codes_u))
        patients = pd.Series(per_code[keep], index=index, dtype="int64")
        ids = int(np.count_nonzero(np.bincount(pid_code[rows])))
    return CodeTally(tally, kept, patients, ids)


#: How the warning for an extract without one mapped test code begins (a wrong format).
NO_CODE_MAPPED = "labs: none of the "
#: A code longer than this may be an id, and is never printed.
MAX_PRINTED_CODE = 8
#: Control and format characters (C0, C1, zero-width, bidirectional overrides, BOM): a code
#: holding one is never printed, as a terminal may act on it.
_UNPRINTABLE = "[\x00-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff]"
#: A code that reads as a number may be a result or a numeric id, and is never printed.
_NUMBER_LIKE = r"^\s*[<>=]*\s*[+-]?[0-9]*[.,]?[0-9]+\s*$"


def unmapped_warning(tally: CodeTally, fmt: ExtractFormat, small_count: int = 7) -> list[str]:
    """A labs input where no row has a mapped code is likely the wrong format: say so.

    The most common codes are named to help fix the format, but only codes that cannot be
    ids or results: at most 8 characters, not a number, no control character, seen for at
    least ``small_count`` distinct patients, and only when the column has fewer distinct
    codes than there are patients. With mislabelled columns the "codes" may be patient ids
    or results; with the id and code columns swapped, each "patient" is a test code, so an
    id is "seen" for as many of them as that patient had tests, and only the distinct
    counts give it away. At twice as many codes as patients the warning says the columns
    look swapped; between the two (a small extract of many tests) it shows no code.
    """
    total = int(tally.counts.sum())
    if not total or tally.kept:
        return []
    counts = tally.counts
    printable = ((counts.index.str.len() <= MAX_PRINTED_CODE)
                 & ~counts.index.str.match(_NUMBER_LIKE)
                 & ~counts.index.str.contains(_UNPRINTABLE))  # nothing a terminal runs
    many = tally.patients is not None and len(counts) >= tally.ids  # as many codes as ids
    swapped = many and len(counts) >= 2 * tally.ids  # clearly: say so
    if tally.patients is not None and not many:
        seen = tally.patients.reindex(counts.index, fill_value=0)
        printable &= (seen >= max(small_count, 1)).to_numpy()
    else:
        printable &= False
    shown = counts[printable].sort_values(ascending=False, kind="stable").index[:5]
    if len(shown):
        common = f"; most common codes: {', '.join(shown)}"
    elif swapped:
        common = (f"; no code is shown: the test code column has {len(counts)} distinct "
                  f"values for {tally.ids} patients, as patient ids would (check that the "
                  "patient id and test code columns are not swapped)")
    else:
        common = ("; no code is shown, as the column may hold ids or results (check that the"
                  " columns are labelled as the format expects)")
    return [f"{NO_CODE_MAPPED}{total} rows has a test code mapped by format "
            f"'{fmt.name}' ({fmt.path}){common}"]


# ------------------------------------------------------------------------------ patients


def validate_patients(raw: RawInput, fmt: ExtractFormat, as_of: date) -> Validated:
    """Patients: one row per patient; conflicting rows for one id are all rejected."""
    spec = fmt.patients
    canon = canonical_view(raw, spec)
    for column in ("birth_date", "birth_year", "birth_month", "birth_day", "age_years", "sex",
                   "practice_id", "diet",
                   *YES_NO_COLUMNS, "ileal_resection_cm"):
        if column not in canon:
            canon[column] = _blank(canon.index)
    malformed = _malformed(canon)
    parsed_birth = hz.parse_dates(canon["birth_date"], day_first=spec.read.day_first,
                                  formats=spec.read.datetime_formats)
    from_parts, bad_year = hz.birth_from_parts(canon["birth_year"], canon["birth_month"],
                                               canon["birth_day"])
    birth = parsed_birth.where(parsed_birth.notna(), from_parts)
    age, bad_age_text = hz.parse_number(canon["age_years"], decimal_comma=spec.read.decimal_comma,
                                        unit=AGE_UNIT)
    ileal, bad_ileal = hz.parse_number(canon["ileal_resection_cm"],
                                       decimal_comma=spec.read.decimal_comma, unit=CM_UNIT)
    flags, bad_flags = {}, pd.Series(False, index=canon.index)
    for column in YES_NO_COLUMNS:
        flags[column], bad = hz.parse_yes_no(canon[column], spec)
        bad_flags |= bad
    diet = canon["diet"].str.lower()
    normalised = pd.DataFrame({
        "patient_id": canon["patient_id"], "birth_date": birth, "age_input": age,
        "sex": hz.sex_words(canon["sex"]), "practice_id": canon["practice_id"],
        "diet": diet.where(diet != "", "unknown"), **flags, "ileal_resection_cm": ileal,
    })
    duplicate = normalised.duplicated(keep="first") & ~malformed
    live = ~duplicate
    conflicting = (canon["patient_id"] != "") & live & normalised["patient_id"].where(live) \
        .duplicated(keep=False)
    future = pd.Timestamp(as_of) + pd.Timedelta(days=1)
    birth_text = canon["birth_date"] != ""
    check_frame = pd.DataFrame({
        "row": malformed & ~_oversized(canon), "oversized": _oversized(canon),
        "patient_id": canon["patient_id"],
        "birth_ok": ~((birth_text & parsed_birth.isna()) | bad_year
                      | (birth < pd.Timestamp("1900-01-01"))),
        "birth_future": ~(birth >= future),
        "age_ok": ~(bad_age_text | (age < 0) | (age > 130)),
        "flags_ok": ~bad_flags, "diet_ok": diet.isin(("", *DIETS)),
        "number_ok": ~(bad_ileal | (ileal < 0)), "conflict": ~conflicting,
    })[live]
    identity = _truthy
    checks = {
        "malformed_row": ("row", lambda s: ~s.astype(bool)),
        "oversized_field": ("oversized", lambda s: ~s.astype(bool)),
        "missing_patient_id": ("patient_id", _nonempty),
        "bad_date": ("birth_ok", identity), "future_date": ("birth_future", identity),
        "bad_age": ("age_ok", identity), "bad_yes_no": ("flags_ok", identity),
        "bad_diet": ("diet_ok", identity), "bad_number": ("number_ok", identity),
        "conflicting_patient_rows": ("conflict", identity),
    }
    failed, bad, rejected = _checked(raw, check_frame, checks, PATIENT_REASONS)
    keep = failed.index[~bad]
    accepted = normalised.loc[keep].copy()
    # whole years completed: 15.9 is still under 16 (R13), so floor, never round
    age_from_birth = hz.age_at(accepted["birth_date"], as_of)
    accepted["age_years"] = age_from_birth.fillna(
        np.floor(accepted["age_input"]).astype("Int64")).astype("Int64")
    accepted = accepted.drop(columns=["age_input"])
    counts = {"rows_read": len(canon), "rows_accepted": len(accepted),
              "rows_rejected": len(rejected), "rows_skipped": 0,
              "rows_exact_duplicates": int(duplicate.sum())}
    return Validated("patients", accepted, rejected, counts, _ids(canon), raw.files,
                     list(raw.warnings), raw.original_columns,
                     unused_columns=list(raw.unused_columns))


# --------------------------------------------------------------------------- medications


def validate_medications(raw: RawInput, fmt: ExtractFormat) -> Validated:
    """Medications: classify by pattern (unclassified are skipped), check dates and dose."""
    spec = fmt.medications
    canon = canonical_view(raw, spec)
    for column in ("end_date", "dose_mg_per_day"):
        if column not in canon:
            canon[column] = _blank(canon.index)
    malformed = _malformed(canon)
    classes = hz.medication_classes(canon["medication"], None, spec)
    skipped = ~classes.any(axis=1) & _nonempty(canon["medication"]) & ~malformed
    duplicate = _exact_duplicates(raw, ~skipped & ~malformed)
    todo = ~skipped & ~duplicate
    work = canon[todo]
    start = hz.parse_dates(work["start_date"], day_first=spec.read.day_first,
                           formats=spec.read.datetime_formats)
    end = hz.parse_dates(work["end_date"], day_first=spec.read.day_first,
                         formats=spec.read.datetime_formats)
    dose, bad_dose = hz.parse_number(work["dose_mg_per_day"],
                                     decimal_comma=spec.read.decimal_comma, unit=DOSE_UNIT)
    old = pd.Timestamp("1900-01-01")
    check_frame = pd.DataFrame({
        "row": (malformed & ~_oversized(canon))[todo], "oversized": _oversized(canon)[todo],
        "patient_id": work["patient_id"],
        "medication": work["medication"],
        "dates_ok": start.notna() & (start >= old)
        & ~((work["end_date"] != "") & (end.isna() | (end < old))),
        "order_ok": ~(end < start), "dose_ok": ~(bad_dose | (dose < 0)),
    })
    identity = _truthy
    checks = {
        "malformed_row": ("row", lambda s: ~s.astype(bool)),
        "oversized_field": ("oversized", lambda s: ~s.astype(bool)),
        "missing_patient_id": ("patient_id", _nonempty),
        "missing_medication": ("medication", _nonempty),
        "bad_date": ("dates_ok", identity), "end_before_start": ("order_ok", identity),
        "bad_number": ("dose_ok", identity),
    }
    failed, bad, rejected = _checked(raw, check_frame, checks, MEDICATION_REASONS)
    ok = ~bad
    prescriptions = pd.DataFrame({
        "patient_id": work["patient_id"][ok], "medication": work["medication"][ok],
        "start_date": start[ok], "end_date": end[ok], "dose_mg_per_day": dose[ok],
    })
    # one row per prescription and class it belongs to, in input order (SPEC rev 2: a
    # metformin + methylcobalamin product is metformin, and its B12 is recorded apart)
    member = classes.loc[prescriptions.index].to_numpy(dtype=bool)
    at, which = np.nonzero(member)
    accepted = prescriptions.iloc[at].assign(
        med_class=pd.array(np.asarray(classes.columns, dtype=object)[which], dtype="str"))
    accepted = accepted[["patient_id", "medication", "med_class", "start_date", "end_date",
                         "dose_mg_per_day"]]
    counts = {"rows_read": len(canon), "rows_accepted": len(prescriptions),
              "rows_rejected": len(rejected),
              "rows_skipped_other_medications": int(skipped.sum()),
              "rows_exact_duplicates": int(duplicate.sum())}
    return Validated("medications", accepted, rejected, counts, _ids(canon), raw.files,
                     list(raw.warnings), raw.original_columns,
                     unused_columns=list(raw.unused_columns))


def today_date() -> date:
    """Today's date; results after it are rejected as ``future_date``."""
    return datetime.now().date()


#: What a rejected row of each optional input takes out of the rules.
_LOST = {"patients": "attributes (risk factors, age)", "medications": "prescriptions"}


def rejected_warning(validated: Validated) -> list[str]:
    """A patients or medications row rejected takes every field of it out of the rules (a
    pregnant patient's row with one bad number is not pregnant): say so, with the count per
    reason as ``rejected.csv`` lists them (the labs' rejections are in the printed
    accounting already). Worked out on the input as a whole, whichever engine split it."""
    rejected = validated.rejected
    if validated.kind not in _LOST or rejected is None or rejected.empty:
        return []
    counts = per_reason(rejected["reasons"])
    order = PATIENT_REASONS if validated.kind == "patients" else MEDICATION_REASONS
    reasons = ", ".join(f"{code} {counts[code]}" for code in
                        sorted(counts, key=lambda c: (order.index(c) if c in order
                                                      else len(order), c)))
    return [f"{validated.kind}: {len(rejected)} of {validated.counts['rows_read']} rows "
            f"rejected ({reasons}); those rows' {_LOST[validated.kind]} are not used "
            "(rejected.csv lists them)"]
