"""Classify the whole cohort at once: results -> bands -> index test -> status -> actions.

Patient ids are factorised once into integer codes (the cohort sorted by id); every rule
then works on arrays indexed by those codes. Rule thresholds come from the rules profile,
with a performing lab's site profile used for its own results' bands (R1, R2, R5).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.config import ANALYTES, RulesProfile
from pipeline.ingest.harmonise import (
    CANONICAL_UNIT,
    CENSORS,
    categorical,
    joined_column,
    labels,
    lookup,
    sorted_categorical,
    text_of,
)
from pipeline.kernels.arrow import take_text, text_order, used_codes
from pipeline.kernels.memory import trim_heap
from pipeline.kernels.sort import stable_order
from pipeline.rules import actions, bands
from pipeline.rules import index as idx
from pipeline.rules.reasons import build_reasons

PATIENT_COLUMNS = (
    "patient_id", "practice_id", "age_years", "index_test", "index_value", "index_unit",
    "index_collected_at", "index_censor", "b12_total_ng_l", "b12_total_at",
    "b12_active_pmol_l", "b12_active_at", "mma_umol_l", "mma_at", "b12_status",
    "status_basis", "discordant", "censored_ambiguous", "needs_mma", "needs_supplementation",
    "supplementation_reason", "suggested_regimen", "metformin_monitoring_due",
    "metformin_risk", "retest_due", "urgent_review", "paediatric", "on_metformin",
    "on_b12_treatment", "reasons",
    # added after the SPEC's list (public from now on; add, don't rename)
    "rule_ids", "regimen_code", "b12_treatment_start", "last_b12_test_at",
    "untreated_too_long", "regimen_intent", "not_responding", "on_b12_combination",
)
#: Carried beside the patients table but not written to ``patients.parquet``: the patients
#: input's ``sex`` (the shareable measures' breakdowns, both engines), and ``index_row``, the
#: index test's position in the classified results (-1: none), so a worklist shows the
#: result as reported and its sample by position, with no join.
CARRIED_COLUMNS = ("sex", "index_row")
#: B12 *treatment* classes (R8, R11, R12); the low dose inside a metformin combination
#: product (class ``b12_combination``) is recorded but is not treatment.
MED_CLASSES_B12 = ("b12_oral", "b12_injection")
MED_CLASS_B12_COMBINATION = "b12_combination"
#: Threads for the per-patient rules, and the fewest patients worth a thread of their own.
THREADS = min(2, os.cpu_count() or 1)
MIN_PATIENTS_PER_PART = 250_000
#: At most this many patients per part: a part's intermediate tables take about a kilobyte
#: per patient, so a large cohort runs in more parts than threads, a few at a time.
MAX_PATIENTS_PER_PART = 400_000
#: ``results.band`` categories; severity codes (``rules.bands``) index into them below
BANDS = ("deficient", "indeterminate", "unlikely", "raised", "normal")
B12_BAND_CODES = np.array([BANDS.index(str(b)) for b in bands.B12_BANDS], dtype="int8")
MMA_BAND_CODES = np.array([BANDS.index(str(b)) for b in bands.MMA_BANDS], dtype="int8")


@dataclass
class Classified:
    patients: pd.DataFrame
    results: pd.DataFrame
    rows_after_as_of: int


def cohort_ids(*id_series: pd.Series) -> pd.Index:
    """Every non-empty patient id seen in any input row, sorted (stable output order).

    Arrow's hash and sort kernels: pandas' object-level unique/sort dominated large runs.
    """
    chunks = [pa.array(s.astype("str"), pa.string(), from_pandas=True) for s in id_series]
    ids = pc.unique(pa.chunked_array(chunks, pa.string()))
    ids = ids.filter(pc.and_(pc.is_valid(ids), pc.not_equal(ids, "")))
    ids = take_text(ids, text_order(ids))
    return pd.Index(pd.array(ids, dtype="str"))


def sorted_cohort(ids: pd.Series) -> tuple[pd.Index, np.ndarray]:
    """The cohort from one input's distinct ids (``""`` allowed), and each id's position in
    it (-1 for ``""``): one sort, and the positions are its inverse, with no hash lookup."""
    text = pa.array(ids.astype("str"), pa.string(), from_pandas=True)
    present = np.flatnonzero(pc.fill_null(pc.not_equal(text, ""), False).to_numpy(
        zero_copy_only=False))
    kept = text if len(present) == len(text) else take_text(text, present)
    order = text_order(kept)
    positions = np.full(len(text), -1, dtype=np.int64)
    positions[present[order]] = np.arange(len(order))
    return pd.Index(pd.array(take_text(kept, order), dtype="str")), positions


def cohort_positions(cohort: pd.Index, ids: pd.Series) -> np.ndarray:
    """Each id's position in the sorted cohort (-1 if absent), by Arrow hash lookup."""
    found = pc.index_in(pa.array(ids.astype("str"), pa.string(), from_pandas=True),
                        value_set=pa.array(cohort, pa.string()))
    return pc.fill_null(found, -1).to_numpy().astype("int64")


def with_lab_practice(patients: pd.DataFrame, at: np.ndarray,
                      practice: pd.Categorical | None) -> pd.DataFrame:
    """``patients`` (one row per cohort position) where a patient has no practice (none in
    the patients input, no B12/MMA result up to the as-of date naming one) takes
    ``practice``: the practice named by their latest lab row naming one, of any test
    (``Validated.id_practice``, one per distinct labs id, at cohort position ``at``; -1 for
    none).

    Applied by each engine once the cohort is classified, on codes: the practice column
    stays a categorical over the values it holds, in sorted order (``sorted_categorical``).
    """
    if practice is None or not len(patients):
        return patients
    current = patients["practice_id"].astype(pd.CategoricalDtype()) \
        if not isinstance(patients["practice_id"].dtype, pd.CategoricalDtype) \
        else patients["practice_id"]
    given = current.cat.codes.to_numpy()
    blank = np.append(current.cat.categories.astype("str") == "", True)[given]  # -1: missing
    fallback = np.full(len(patients), -1, dtype=np.int32)
    codes = np.asarray(practice.codes)
    unplaced = np.flatnonzero(at < 0)  # the empty id, if any: a few at most
    if len(unplaced):
        at, codes = np.delete(at, unplaced), np.delete(codes, unplaced)
    fallback[at] = codes
    fill = blank & (fallback >= 0)
    if not fill.any():
        return patients
    values = pd.Index(current.cat.categories.astype("str")).append(
        pd.Index(practice.categories.astype("str")))
    joined, used = used_codes(np.where(fill, fallback + len(current.cat.categories), given),
                              len(values))
    # the values held, sorted and merged (a practice in both lists is one category)
    names, rank = np.unique(values[used], return_inverse=True)
    sorted_codes = np.append(rank.reshape(-1).astype(np.int32), np.int32(-1))[joined]
    column = pd.Categorical.from_codes(sorted_codes, categories=pd.Index(names, dtype="str"))
    return patients.assign(practice_id=pd.Series(column, index=patients.index))


#: What a ``[sites]`` profile changes for its lab's results: the bands' cut-offs and the MMA
#: limit (an assay's own); every other setting is the main profile's.
SITE_SETTINGS = (("R1", "deficient_below"), ("R1", "unlikely_above"), ("R2", "deficient_below"),
                 ("R2", "unlikely_above"), ("R5", "mma_upper_umol_l"))


def _site_key(site: pd.Series) -> pd.Series:
    """Site ids as ``[sites]`` matches them, as codes and units are: trimmed, any case."""
    return site.astype("str").str.strip().str.upper()


def _site_thresholds(site: pd.Series, rules: RulesProfile, rule_id: str, key: str) -> np.ndarray:
    """Per-row threshold: the performing lab's profile if it has one, else the default.
    ``site``: the rows' site ids as ``_site_key`` gives them."""
    default = float(rules.rule(rule_id)[key])
    if not rules.sites:
        return np.full(len(site), default)
    mapping = {s.strip().upper(): float(p.rule(rule_id)[key]) for s, p in rules.sites.items()}
    return lookup(site, mapping, "float64").fillna(default).to_numpy()


def _censor_array(censor: pd.Series) -> np.ndarray:
    """Censor text as a fixed-width numpy array (fast comparisons; few distinct values);
    missing or unknown spellings read as '' (exact), as ``rules.bands`` treats them."""
    return np.asarray([*CENSORS, ""], dtype="U2")[categorical(censor, CENSORS).codes]


def band_results(results: pd.DataFrame, rules: RulesProfile) -> pd.DataFrame:
    """R1-R3 (and the MMA reading) for every accepted result: ``sev``, ``band``, ``ambiguous``.

    ``band`` is categorical over ``BANDS``: one code per row instead of a text per row.
    """
    analyte = pd.Categorical(results["analyte"], categories=ANALYTES).codes
    value = results["value"].to_numpy(dtype="float64")
    censor = _censor_array(results["censor"])
    site = _site_key(results["site_id"]) if rules.sites else results["site_id"]  # once
    sev = np.ones(len(results), dtype="int8")
    amb = np.zeros(len(results), dtype=bool)
    band = np.full(len(results), -1, dtype="int8")
    for a, rule_id in ((0, "R1"), (1, "R2")):
        m = analyte == a
        code, ambiguous = bands.b12_band(
            value[m], censor[m],
            _site_thresholds(site[m], rules, rule_id, "deficient_below"),
            _site_thresholds(site[m], rules, rule_id, "unlikely_above"))
        sev[m], amb[m], band[m] = code, ambiguous, B12_BAND_CODES[code]
    m = analyte == 2
    code, ambiguous = bands.mma_band(value[m], censor[m],
                                     _site_thresholds(site[m], rules, "R5", "mma_upper_umol_l"))
    sev[m], amb[m], band[m] = code, ambiguous, MMA_BAND_CODES[code]
    return results.assign(sev=sev, ambiguous=amb,
                          band=pd.Categorical.from_codes(band, categories=BANDS))


def _medication_features(meds: pd.DataFrame | None, n: int, as_of: date,
                         gap_days: int, index_day: pd.Series) -> pd.DataFrame:
    """Per-patient prescription facts on the as-of date, and the start of the B12 course
    the index test was taken in (``tested_course_start``; missing when it was taken off
    treatment), which R12's not-responding limb reads whether or not that course is still
    running, and the start of injections begun since the index test where none ran on its
    day and they run now (``switched_to_injection``: a change of route).

    A prescription may come as several rows, one per class it belongs to (a metformin
    combination product is a ``metformin`` row and a ``b12_combination`` row), so each fact
    reads the rows of its own classes: the metformin dose sums ``metformin`` rows only.
    """
    out = pd.DataFrame(index=pd.RangeIndex(n))
    empty_time = pd.Series(pd.NaT, index=out.index, dtype="datetime64[us]")
    if meds is None or meds.empty:
        for c in ("on_metformin", "on_b12", "on_b12_combination", "acid"):
            out[c] = False
        out["metformin_dose"] = np.nan
        out["first_metformin"] = empty_time
        out["treatment_start"] = empty_time
        out["tested_course_start"] = empty_time
        out["switched_to_injection"] = empty_time
        return out
    ts = pd.Timestamp(as_of)
    # by calendar day, as the as-of date is: a course started at 09:00 on the as-of date
    # is active on it (OMOP's drug_exposure_start_datetime carries a time)
    meds = meds.assign(start_date=meds["start_date"].dt.floor("D"),
                       end_date=meds["end_date"].dt.floor("D"))
    started = meds["start_date"] <= ts
    active = started & (meds["end_date"].isna() | (meds["end_date"] >= ts))
    cls = meds["med_class"]

    def any_active(*classes: str) -> pd.Series:
        hit = active & cls.isin(classes)
        return hit.groupby(meds["pid"]).any().reindex(out.index, fill_value=False)

    out["on_metformin"] = any_active("metformin")
    out["on_b12"] = any_active(*MED_CLASSES_B12)
    out["on_b12_combination"] = any_active(MED_CLASS_B12_COMBINATION)
    out["acid"] = any_active("acid_suppressant")
    met = meds[active & (cls == "metformin")]
    out["metformin_dose"] = met["dose_mg_per_day"].groupby(met["pid"]).sum(min_count=1)
    met_any = meds[started & (cls == "metformin")]
    out["first_metformin"] = met_any["start_date"].groupby(met_any["pid"]).min()
    out["first_metformin"] = out["first_metformin"].astype("datetime64[us]")
    # R11 course start: prescriptions that overlap or follow within gap_days are one course.
    b12 = meds[started & cls.isin(MED_CLASSES_B12)].sort_values(["pid", "start_date"],
                                                                kind="stable")
    end = b12["end_date"].fillna(pd.Timestamp.max.floor("D"))
    prev_end = end.groupby(b12["pid"]).cummax().groupby(b12["pid"]).shift()
    new_course = prev_end.isna() | (b12["start_date"] > prev_end + pd.Timedelta(days=gap_days))
    course_start = b12["start_date"].where(new_course).groupby(new_course.cumsum()) \
        .transform("first")
    current = course_start.groupby(b12["pid"]).last()
    out["treatment_start"] = current.reindex(out.index).astype("datetime64[us]")
    out.loc[~out["on_b12"], "treatment_start"] = pd.NaT
    # the course holding the index test's day (courses never overlap: at most one each)
    course = new_course.cumsum()
    spans = pd.DataFrame({"pid": b12["pid"], "start": course_start, "end": end}) \
        .groupby(course.to_numpy(), sort=False).agg(pid=("pid", "first"),
                                                    start=("start", "first"),
                                                    end=("end", "max"))
    test_day = index_day.dt.floor("D").to_numpy()
    day = test_day[spans["pid"].to_numpy(dtype=np.int64)]
    held = spans[(spans["start"].to_numpy() <= day) & (day <= spans["end"].to_numpy())]
    out["tested_course_start"] = pd.Series(held["start"].to_numpy(), index=held["pid"]) \
        .reindex(out.index).astype("datetime64[us]")
    # a change of route since the index test: the first injection started after it, where
    # no injection was running on the test's day and one is now (a repeat injection
    # prescription is no change, tablets to injections is: NICE's answer to non-response)
    inj = meds[started & (cls == "b12_injection")]
    inj_day = test_day[inj["pid"].to_numpy(dtype=np.int64)]
    running = (inj["start_date"].to_numpy() <= inj_day) & (
        inj["end_date"].isna().to_numpy() | (inj["end_date"].to_numpy() >= inj_day))
    on_at_test = pd.Series(running).groupby(inj["pid"].to_numpy()).any() \
        .reindex(out.index, fill_value=False).to_numpy(dtype=bool)
    later = inj[inj["start_date"].to_numpy() > inj_day]
    first_after = later["start_date"].groupby(later["pid"]).min().reindex(out.index)
    inj_now = any_active("b12_injection").to_numpy(dtype=bool)
    out["switched_to_injection"] = first_after.where(~on_at_test & inj_now) \
        .astype("datetime64[us]")
    return out


def classify(results: pd.DataFrame, patients: pd.DataFrame | None,
             meds: pd.DataFrame | None,
             cohort: pd.Index | Callable[[], tuple[pd.Index, np.ndarray]],
             rules: RulesProfile, as_of: date, parts: int | None = None,
             on_results: Callable[[pd.DataFrame], None] | None = None) -> Classified:
    """Apply R1-R13 to every patient in ``cohort``; returns patient and result tables.

    ``on_results`` is handed the result table (the very frame ``Classified.results`` will
    hold) as soon as it is complete, before the per-patient rules run: a caller can write it
    meanwhile, on a core the rules leave idle much of the time. ``cohort`` may be a function
    giving the cohort and each result's position in it, called only after that: the caller
    can sort the cohort meanwhile, beside the writing of the results.

    Row-level work (bands, the one sort) runs once; the per-patient rules then run on
    ``parts`` contiguous ranges of the cohort, one per thread at a time (default: one per
    core, at least ``MIN_PATIENTS_PER_PART`` and at most ``MAX_PATIENTS_PER_PART`` patients
    each, which bounds the memory the rules take). Every rule is per patient, so
    the table is the same however the cohort is cut (as with the Dask engine); the numpy
    and Arrow kernels release the GIL, so two ranges take about two thirds of the time.
    """
    if "sev" not in results.columns:  # else already banded by the caller
        results = band_results(results, rules)
    after = results["collected_at"].dt.floor("D") > pd.Timestamp(as_of)
    results = results.assign(after_as_of=after)
    results_out = results.drop(columns=[c for c in ("pid", "sev") if c in results.columns])
    if on_results is not None:  # as Classified.results holds it
        on_results(results_out)
    if callable(cohort):
        cohort, pid = cohort()
        results = results.assign(pid=pid)
    elif "pid" not in results.columns:  # else given: the patient's position in ``cohort``
        results = results.assign(pid=cohort_positions(cohort, results["patient_id"]))
    # The rules need only these columns (text as categoricals), sorted once by patient and
    # analyte: every per-patient pick below then runs over contiguous segments, no sort.
    analyte = pd.Categorical(results["analyte"], categories=ANALYTES)
    rows = np.flatnonzero(~after.to_numpy())
    key = results["pid"].to_numpy(dtype="int64")[rows] * len(ANALYTES) + analyte.codes[rows]
    rows = rows[stable_order(key)]
    usable = pd.DataFrame({
        "pid": results["pid"].to_numpy()[rows],
        "analyte": analyte[rows],
        "collected_at": results["collected_at"].to_numpy()[rows],
        "value": results["value"].to_numpy()[rows],
        "censor": categorical(results["censor"], CENSORS)[rows],
        "sev": results["sev"].to_numpy()[rows],
        "ambiguous": results["ambiguous"].to_numpy()[rows],
        "row": rows,
    })

    patients_at = (None if patients is None
                   else cohort_positions(cohort, patients["patient_id"]))
    carry_sex = patients is not None  # only with a patients input (the same in every part)
    if meds is not None:
        meds = meds.assign(pid=cohort_positions(cohort, meds["patient_id"]))
    shared = _bare_rows(len(cohort), usable["pid"].to_numpy(), patients_at,
                        None if meds is None else meds["pid"].to_numpy())
    rules_cohort = cohort
    if shared is not None:  # the rules run on the busy patients and one bare one, for all
        at, kept = shared
        rules_cohort = cohort[kept]
        # ``at`` rises over the busy patients, the only ones with results: still sorted
        usable = usable.assign(pid=at[usable["pid"].to_numpy()])
        if patients_at is not None:
            patients_at = np.where(patients_at >= 0, at[patients_at], -1)
        if meds is not None:
            meds = meds.assign(pid=at[meds["pid"].to_numpy()])
    attrs = _patient_attributes(patients, len(rules_cohort), patients_at)
    rows_in = {"usable": usable, "attrs": attrs}  # handed over: freed once the parts are done
    del usable, attrs
    table = _cohort_table(rows_in, meds, rules_cohort, results, rules, as_of, carry_sex, parts)
    if shared is not None:
        table = _with_bare(table, shared[0], cohort)
    return Classified(table, results_out, int(after.sum()))


#: From this share of the cohort on, patients seen in no usable result, patients row or
#: prescription (other tests only, rejected rows, results after the as-of date) are not run
#: through the rules one by one: see ``_bare_rows``.
BARE_SHARE = 0.5


def _bare_rows(n: int, *seen: np.ndarray | None) -> tuple[np.ndarray, np.ndarray] | None:
    """(each patient's row in a table where every *bare* patient shares one row; the
    patients the rows stand for), or None when fewer than ``BARE_SHARE`` of the cohort are
    bare (``seen``: cohort positions, -1 for none, of the usable results, patients rows and
    prescriptions).

    A bare patient has nothing the rules read (no usable result, no patients row, no
    prescription), so every column but ``patient_id`` is the same for all of them: the rules
    run on the other patients and on the first bare one, whose row every bare patient then
    takes with their own id (``_with_bare``). In a chemistry extract most of the cohort is
    bare (patients seen only in other tests): the per-patient rules, and their attributes
    (a row per patient even without a patients input), dominated classification.
    The rows keep the cohort's order, the shared row being the first bare patient's place.
    """
    busy = np.zeros(n, dtype=bool)
    for positions in seen:
        if positions is not None:
            busy[positions[positions >= 0]] = True
    bare = np.flatnonzero(~busy)
    if len(bare) < max(1, BARE_SHARE * n):
        return None
    busy[bare[0]] = True  # the one bare patient the rules run on
    rows = np.cumsum(busy) - 1
    rows[~busy] = rows[bare[0]]
    return rows, np.flatnonzero(busy)


def _with_bare(table: pd.DataFrame, rows: np.ndarray, cohort: pd.Index) -> pd.DataFrame:
    """The whole cohort's table from the rules' table (``_bare_rows``), which it empties:
    each column taken by row as a plain array, and let go of once taken (a column apiece,
    as ``joined_parts`` built it), so the two tables are never both held in full; and the
    cohort's own ids (taking the rules' ids, then replacing them, cost a copy of the
    column and half a second at 8M patients). The columns are taken on the threads (the
    takes release the GIL): at 8M patients the new table's gigabyte of fresh pages is most
    of the time, and the system clears pages for both threads at once."""
    names = list(table.columns)
    columns = {"patient_id": pd.Series(cohort, dtype="str")}
    del table["patient_id"]
    arrays = {name: table.pop(name).array for name in names if name != "patient_id"}

    def taken(name: str) -> pd.Series:
        return pd.Series(arrays.pop(name).take(rows), copy=False)

    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        columns.update(zip(list(arrays), pool.map(taken, list(arrays)), strict=True))
    return pd.DataFrame(columns, copy=False)[names]


def _cohort_table(rows_in: dict[str, pd.DataFrame], meds: pd.DataFrame | None,
                  cohort: pd.Index, results: pd.DataFrame, rules: RulesProfile, as_of: date,
                  carry_sex: bool, parts: int | None) -> pd.DataFrame:
    """R4-R13 over ``cohort`` (``rows_in``: the ``usable`` results, sorted, and ``meds`` by
    position in it; ``attrs`` aligned to it), in contiguous parts of the cohort, on the
    threads. ``rows_in`` is emptied once the parts are done, before they are joined."""
    n = len(cohort)
    k = parts or max(1, min(THREADS, n // MIN_PATIENTS_PER_PART),
                     math.ceil(n / MAX_PATIENTS_PER_PART))
    cuts = np.linspace(0, n, k + 1).round().astype(np.int64)
    starts = np.searchsorted(rows_in["usable"]["pid"].to_numpy(), cuts)  # sorted by pid

    def part(i: int) -> pd.DataFrame:
        lo, hi = int(cuts[i]), int(cuts[i + 1])
        rows_i = rows_in["usable"].iloc[starts[i]:starts[i + 1]]
        meds_i = None
        if meds is not None:
            meds_i = meds[(meds["pid"] >= lo) & (meds["pid"] < hi)]
            meds_i = meds_i.assign(pid=meds_i["pid"] - lo)
        table = _patients_table(rows_i.assign(pid=rows_i["pid"] - lo),
                                rows_in["attrs"].iloc[lo:hi].reset_index(drop=True), meds_i,
                                cohort[lo:hi], results, rules, as_of)
        return table if carry_sex else table.drop(columns="sex")

    if k == 1:
        return part(0)
    with ThreadPoolExecutor(max_workers=min(k, THREADS)) as pool:
        tables = list(pool.map(part, range(k)))
    rows_in.clear()  # before the parts are joined: memory (the parts read them till now)
    trim_heap()  # and the pages the parts' intermediates held (half a gigabyte at 8M patients)
    return joined_parts(tables)


def joined_parts(parts: list[pd.DataFrame]) -> pd.DataFrame:
    """The parts' rows (the threads' ranges of the cohort, or the Dask engine's
    partitions) as one frame, built column by column: each text column as one
    contiguous Arrow array (a chunked column would be joined again by every later ``take``),
    and each part's column let go once copied, so the parts and the whole table are never
    both held in full (a 3M-patient table is about a gigabyte)."""
    columns: dict[str, pd.Series] = {}
    for name in list(parts[0].columns):
        if parts[0][name].dtype == "str":  # its own block: popped whole, nothing copied
            pieces = [part.pop(name) for part in parts]
            chunks = [c for s in pieces for c in _chunks(pa.array(s.array))]
            columns[name] = pd.Series(pd.array(pa.concat_arrays(chunks), dtype="str"))
            del pieces, chunks
        else:
            columns[name] = joined_column([part[name] for part in parts])
    return pd.DataFrame(columns, copy=False)


def _chunks(array: pa.Array | pa.ChunkedArray) -> list[pa.Array]:
    return list(array.chunks) if isinstance(array, pa.ChunkedArray) else [array]


def _patients_table(usable: pd.DataFrame, attrs: pd.DataFrame, meds: pd.DataFrame | None,
                    cohort: pd.Index, results: pd.DataFrame, rules: RulesProfile,
                    as_of: date) -> pd.DataFrame:
    """R4-R13 for one contiguous range of the cohort: ``usable`` holds its results (``pid``
    counted from the range's start, sorted), ``attrs`` and ``meds`` its patients."""
    n = len(cohort)
    r4 = rules.rule("R4")["lookback_days"]
    index = idx.select_index(usable, as_of, r4, n)
    codes = np.asarray(usable["analyte"].cat.codes)
    latest = idx.latest_per_analyte(usable, as_of, r4, among=codes != 2)
    latest_codes = np.asarray(latest["analyte"].cat.codes)
    total = idx.spread(latest[latest_codes == 0].set_index("pid"), n)
    active = idx.spread(latest[latest_codes == 1].set_index("pid"), n)
    mma = idx.select_mma(usable, index["collected_at"], as_of)
    status, by_mma = idx.resolve_status(index["sev"], mma["sev"])
    # only report the MMA that R5 considered
    has_index = index["analyte"].notna()

    med = _medication_features(meds, n, as_of, rules.rule("R11")["treatment_gap_days"],
                               index["collected_at"])
    b12_rows = codes != 2
    tested, last_at = idx.group_max(usable["pid"].to_numpy()[b12_rows],
                                    idx.times(usable["collected_at"])[b12_rows])
    last = np.full(n, np.datetime64("NaT"), dtype="datetime64[us]")
    last[tested] = last_at.view("datetime64[us]")
    last_test = pd.Series(last, index=index.index)

    r8, r9, r10 = rules.rule("R8"), rules.rule("R9"), rules.rule("R10")
    r11, r12, r13 = rules.rule("R11"), rules.rule("R12"), rules.rule("R13")
    age = attrs["age_years"]
    ileal = actions.ileal_resection(attrs["ileal_resection_cm"], r8["ileal_resection_cm_above"])
    supp_conditions = actions.supplementation_conditions(status, attrs["bariatric_surgery"],
                                                         ileal, attrs["diet"])
    needs_supp, supp_reason = actions.needs_supplementation(supp_conditions, med["on_b12"])
    paediatric = actions.paediatric(age, r13["paediatric_age_below"])
    branch = actions.regimen(needs_supp, status, age, attrs["neurological_symptoms"], ileal,
                             attrs["bariatric_surgery"], attrs["diet"],
                             r13["paediatric_age_below"])
    regimen_code, regimen_intent = actions.regimen_code(branch)
    monitoring = actions.metformin_monitoring_due(med["on_metformin"], last_test, as_of,
                                                  r10["metformin_test_interval_days"])
    risk_factors = actions.metformin_risk_factors(
        med["on_metformin"], age, med["metformin_dose"], med["first_metformin"], med["acid"],
        attrs["diet"], attrs["autoimmune_gastritis"], attrs["bariatric_surgery"], as_of,
        age_years=r10["risk_age_years"], dose_mg=r10["risk_dose_mg_per_day"],
        years=r10["risk_years_on_metformin"])
    risk = actions.metformin_risk(risk_factors)
    check_settings = {"after_days": r11["retest_after_days"],
                      "after_days_pregnant": r11["retest_after_days_pregnant"],
                      "early_days": r11["retest_early_days"],
                      "early_days_pregnant": r11["retest_early_days_pregnant"]}
    untreated = actions.untreated_too_long(status, index["collected_at"], med["on_b12"], as_of,
                                           r12["untreated_days"])
    checked_from = med["treatment_start"]
    if med["tested_course_start"].notna().any():
        failed = actions.failed_check(
            status, index["collected_at"],
            actions.check_from(med["tested_course_start"], attrs["pregnant"], **check_settings))
        # injections begun after a failed check answer it, and have their own check (R11)
        answered = failed & med["switched_to_injection"].notna().to_numpy()
        not_responding = failed & ~answered
        checked_from = med["treatment_start"].mask(answered, med["switched_to_injection"])
    else:  # no index test taken on a course (no prescriptions at all): no column-wide work
        not_responding = pd.Series(False, index=status.index)
    check_day = actions.check_from(checked_from, attrs["pregnant"], **check_settings)
    retest = actions.retest_due(med["on_b12"], checked_from, check_day, last_test,
                                attrs["pregnant"], as_of, after_days=r11["retest_after_days"],
                                after_days_pregnant=r11["retest_after_days_pregnant"])
    limbs = actions.urgent_limbs(status, attrs["neurological_symptoms"], attrs["pregnant"],
                                 untreated, not_responding)
    urgent = actions.urgent_review(limbs)

    practice = attrs["practice_id"]
    # else the practice of the latest result that names one (same time: the later row)
    row = usable["row"].to_numpy()
    named = np.flatnonzero((results["practice_id"] != "").to_numpy()[row])
    pids = usable["pid"].to_numpy()[named]
    chosen = idx.first_positions(pids, (-idx.times(usable["collected_at"])[named], -row[named]))
    lab_practice = text_of(results["practice_id"].iloc[row[named[chosen]]])
    lab_practice.index = pids[chosen]
    lab_practice = lab_practice.reindex(index.index)
    practice = practice.where(practice.fillna("") != "", lab_practice)

    analyte_code = np.asarray(pd.Categorical(index["analyte"], categories=ANALYTES).codes)
    basis = labels(np.where(by_mma.to_numpy(), 2, np.where(analyte_code < 0, 3, analyte_code)),
                  (*ANALYTES, "none"), index.index)
    out = pd.DataFrame({
        "patient_id": pd.Series(cohort, dtype="str"),
        "practice_id": sorted_categorical(text_of(practice)),
        "age_years": age.astype("Int16"),
        "index_test": labels(analyte_code, idx.B12_ANALYTES, index.index),
        "index_value": index["value"].astype("float64"),
        "index_unit": labels(analyte_code, [CANONICAL_UNIT[a] for a in idx.B12_ANALYTES],
                             index.index),
        "index_collected_at": index["collected_at"].astype("datetime64[us]"),
        "index_censor": pd.Series(categorical(index["censor"], CENSORS), index=index.index),
        "b12_total_ng_l": total["value"].astype("float64"),
        "b12_total_at": total["collected_at"].astype("datetime64[us]"),
        "b12_active_pmol_l": active["value"].astype("float64"),
        "b12_active_at": active["collected_at"].astype("datetime64[us]"),
        "mma_umol_l": mma["value"].where(has_index).astype("float64"),
        "mma_at": mma["collected_at"].where(has_index).astype("datetime64[us]"),
        "b12_status": status,
        "status_basis": basis,
        "discordant": index["discordant"],
        "censored_ambiguous": index["ambiguous"],
        "needs_mma": idx.needs_mma(status),
        "needs_supplementation": needs_supp,
        "supplementation_reason": supp_reason,
        "suggested_regimen": actions.regimen_text(branch, attrs["autoimmune_gastritis"],
                                                  paediatric, attrs["pregnant"], r9),
        "metformin_monitoring_due": monitoring,
        "metformin_risk": risk,
        "retest_due": retest,
        "urgent_review": urgent,
        "paediatric": paediatric,
        "on_metformin": med["on_metformin"].astype(bool),
        "on_b12_treatment": med["on_b12"].astype(bool),
        "rule_ids": "",
        "regimen_code": regimen_code,
        "b12_treatment_start": med["treatment_start"].astype("datetime64[us]"),
        "last_b12_test_at": last_test,
    })
    out["index_sev"] = index["sev"]
    out["mma_sev"] = mma["sev"].where(has_index)
    out["mma_censor"] = text_of(mma["censor"])
    out["total_censor"] = total["censor"]  # R4's same-day pair as reported (read where
    out["active_censor"] = active["censor"]  # discordant only, so kept as the codes)
    out["metformin_interval"] = r10["metformin_test_interval_days"]
    out["untreated_too_long"] = untreated.astype(bool)
    out["untreated_days"] = r12["untreated_days"]
    out["regimen_intent"] = regimen_intent
    out["not_responding"] = not_responding.astype(bool)
    out["on_b12_combination"] = med["on_b12_combination"].astype(bool)
    out["regimen_branch"] = branch
    out["check_from"] = check_day.astype("datetime64[us]")
    out["reasons"], rule_ids = build_reasons(out, attrs, supp_conditions, risk_factors, limbs,
                                             r9, r10)
    out["rule_ids"] = sorted_categorical(rule_ids)
    out["sex"] = attrs["sex"]
    out["index_row"] = index["row"].fillna(-1).to_numpy(dtype=row_type(len(results)))
    return out[[*PATIENT_COLUMNS, *CARRIED_COLUMNS]]


def row_type(rows: int) -> type[np.signedinteger]:
    """``index_row``'s type for a result table of ``rows`` rows: 32 bits for any extract one
    machine holds (half the column's memory), else 64."""
    return np.int32 if rows < 2**31 else np.int64


def _patient_attributes(patients: pd.DataFrame | None, n: int,
                        patients_at: np.ndarray | None) -> pd.DataFrame:
    """Accepted patient rows aligned to the ``n`` patients the rules run on (absent
    patients: all unknown); ``patients_at``: each patients row's position among them."""
    columns = {
        "practice_id": "str", "age_years": "Int64", "diet": "str", "sex": "str",
        "autoimmune_gastritis": "boolean", "bariatric_surgery": "boolean",
        "crohns_disease": "boolean", "neurological_symptoms": "boolean",
        "pregnant": "boolean", "ileal_resection_cm": "float64",
    }
    if patients is None or patients.empty:
        return pd.DataFrame({c: pd.Series(pd.NA if t != "float64" else np.nan,
                                          index=pd.RangeIndex(n), dtype=t)
                             for c, t in columns.items()})
    frame = patients.set_axis(patients_at).reindex(pd.RangeIndex(n))
    return pd.DataFrame({c: frame[c].astype(t) for c, t in columns.items()})
