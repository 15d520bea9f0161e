"""Monthly quality measures, defined as data (as OpenPrescribing defines its measures).

Each ``Measure`` carries the words a QI team reads in the report (title, numerator and
denominator, why it matters, whether low is good, source) beside a vectorised function that
turns the patients table into boolean numerator and denominator masks. ``build_measures``
counts them overall, per practice, per age band and per sex (where the inputs have them, as
OpenSAFELY measures do with ``group_by``) and applies disclosure control, giving the long
table written as ``measures.parquet`` / ``measures.csv`` and read back by ``b12screen trend``.

Measure definitions deliberately do not read the rules profile (the 90-day window is fixed
here): a measure must mean the same thing every month for its trend to mean anything.
Changes of rules profile are marked on the trend charts instead.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipeline.kernels.arrow import used_codes
from pipeline.outputs.disclosure import (
    PRIMARY,
    ROUNDING_MULTIPLE,
    SECONDARY,
    SUPPRESSION_THRESHOLD,
    protect,
)

__all__ = [
    "AGE_BANDS",
    "MEASURES",
    "MEASURE_COLUMNS",
    "SEX_GROUPS",
    "UNKNOWN_GROUP",
    "UNKNOWN_PRACTICE",
    "UNTREATED_DAYS",
    "Measure",
    "breakdowns",
    "breakdown_values",
    "build_measures",
    "combine_counts",
    "count_measures",
    "definitions_table",
    "is_flagged",
    "measure_by_id",
    "measure_cells",
    "publish_measures",
]

#: Columns of the measures table, in order (a public interface: add, don't rename).
MEASURE_COLUMNS = (
    "measure",
    "month",
    "group_by",
    "group",
    "numerator",
    "denominator",
    "ratio",
    "suppressed",
    "suppression",
)
#: Group label for patients whose practice (age, sex) is not known.
UNKNOWN_PRACTICE = UNKNOWN_GROUP = "unknown"
#: Age bands at the as-of date (``group_by = age_band``): ages below each edge, then 80+.
AGE_BANDS = ("<16", "16–39", "40–64", "65–79", "80+")
AGE_BAND_EDGES = (16, 40, 65, 80)
#: Sex groups (``group_by = sex``), in this order.
SEX_GROUPS = ("female", "male", "other", UNKNOWN_GROUP)
#: Days a deficient result may stand untreated before the measure counts it (seed: permanent
#: spinal cord lesions after 3 months untreated; the same window as rule R12).
UNTREATED_DAYS = 90

Masks = tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True)
class Measure:
    """One measure: its words for readers and its numerator/denominator masks.

    ``low_is_good`` is ``None`` for descriptive measures where neither direction is better.
    ``masks(patients, as_of)`` returns (numerator, denominator) bool arrays, one per patient;
    the numerator is always a subset of the denominator.
    """

    id: str
    title: str
    numerator: str
    denominator: str
    why: str
    low_is_good: bool | None
    source: str
    masks: Callable[[pd.DataFrame, dt.date], Masks]

    def words(self) -> dict[str, object]:
        """The measure's definition without its function, for reports and tables."""
        return {
            "id": self.id,
            "title": self.title,
            "numerator": self.numerator,
            "denominator": self.denominator,
            "why": self.why,
            "low_is_good": self.low_is_good,
            "source": self.source,
        }


def is_flagged(patients: pd.DataFrame, column: str) -> np.ndarray:
    """A yes/no column as a plain bool array; a missing value counts as no."""
    return patients[column].fillna(False).to_numpy(dtype=bool)


def _status(patients: pd.DataFrame, value: str) -> np.ndarray:
    return is_value(patients["b12_status"], value)


def is_value(column: pd.Series, value: str) -> np.ndarray:
    """Rows holding ``value`` (missing: no) as a plain bool array. Compared as the column is
    held: a categorical by its codes, as spelling every row out as text took seconds at
    millions of patients."""
    return column.eq(value).fillna(False).to_numpy(dtype=bool)


def _metformin_testing(patients: pd.DataFrame, as_of: dt.date) -> Masks:
    den = is_flagged(patients, "on_metformin")
    return den & ~is_flagged(patients, "metformin_monitoring_due"), den


def _deficient_among_tested(patients: pd.DataFrame, as_of: dt.date) -> Masks:
    tested = ~_status(patients, "not_tested") & patients["b12_status"].notna().to_numpy()
    return tested & _status(patients, "deficient"), tested


def _indeterminate_mma_done(patients: pd.DataFrame, as_of: dt.date) -> Masks:
    basis_mma = is_value(patients["status_basis"], "mma")
    den = _status(patients, "indeterminate") | basis_mma
    return den & patients["mma_umol_l"].notna().to_numpy(), den


def _deficient_untreated(patients: pd.DataFrame, as_of: dt.date) -> Masks:
    """Deficient patients left untreated too long, exactly as R12 defines it when the
    classified ``untreated_too_long`` column is there (deficient, index test older than the
    profile's ``untreated_days``, no B12 treatment prescription active on the as-of date);
    otherwise approximated from the other columns."""
    den = _status(patients, "deficient")
    if "untreated_too_long" in patients.columns:
        return den & is_flagged(patients, "untreated_too_long"), den
    collected = pd.to_datetime(patients["index_collected_at"])
    if collected.dt.tz is not None:
        collected = collected.dt.tz_localize(None)
    age = pd.Timestamp(as_of) - collected
    old = (age > pd.Timedelta(days=UNTREATED_DAYS)).fillna(False).to_numpy(dtype=bool)
    return den & old & ~is_flagged(patients, "on_b12_treatment"), den


def _retest_overdue(patients: pd.DataFrame, as_of: dt.date) -> Masks:
    den = is_flagged(patients, "on_b12_treatment")
    return den & is_flagged(patients, "retest_due"), den


MEASURES: tuple[Measure, ...] = (
    Measure(
        id="metformin_testing",
        title="B12 testing among metformin users",
        numerator="patients on metformin with a total or active B12 result in the last year",
        denominator="patients with an active metformin prescription on the as-of date",
        why=(
            "Metformin lowers B12 absorption; the MHRA advises testing B12 in patients on "
            "metformin with symptoms or risk factors, and periodic monitoring in long-term use."
        ),
        low_is_good=False,
        source="MHRA Drug Safety Update, June 2022 (metformin and reduced vitamin B12 levels); "
               "docs/clinical-basis.md §5",
        masks=_metformin_testing,
    ),
    Measure(
        id="deficient_among_tested",
        title="Deficient among tested",
        numerator="tested patients whose index B12 test (after any MMA) shows deficiency",
        denominator="patients with a total or active B12 result in the look-back window",
        why=(
            "How much confirmed deficiency testing finds. Neither high nor low is good in "
            "itself: it depends on who is tested, so read it beside the testing rate."
        ),
        low_is_good=None,
        source="the run's rules profile, R1-R5 (NICE NG239 section 1.3 by default: total B12 < "
               "180 ng/L, active B12 < 25 pmol/L); docs/clinical-basis.md §1-§2",
        masks=_deficient_among_tested,
    ),
    Measure(
        id="indeterminate_mma_done",
        title="Indeterminate results followed by an MMA",
        numerator=(
            "of those, patients with a methylmalonic acid (MMA) result on or after the index test"
        ),
        denominator=(
            "patients whose index B12 test was indeterminate (whether or not an MMA later "
            "resolved it)"
        ),
        why=(
            "An indeterminate B12 result cannot confirm or exclude deficiency; the guidance is "
            "to measure MMA. A low rate means deficiencies left undiagnosed."
        ),
        low_is_good=False,
        source="NICE NG239 section 1.3 (MMA after an indeterminate result); BSH 2014; "
               "docs/clinical-basis.md §2",
        masks=_indeterminate_mma_done,
    ),
    Measure(
        id="deficient_untreated_90d",
        title=f"Deficient and untreated for more than {UNTREATED_DAYS} days",
        numerator=(
            f"deficient patients whose index test is more than {UNTREATED_DAYS} days old and "
            "who are not on B12 treatment"
        ),
        denominator="patients whose index B12 test shows deficiency",
        why=(
            "Untreated B12 deficiency for more than 3 months may cause permanent degenerative "
            "lesions of the spinal cord."
        ),
        low_is_good=True,
        source="cyanocobalamin injection prescribing information (untreated > 3 months: "
               "permanent spinal cord lesions); docs/clinical-basis.md §7 (R12)",
        masks=_deficient_untreated,
    ),
    Measure(
        id="retest_overdue",
        title="Retests overdue after starting treatment",
        numerator=(
            "patients on treatment for 3 months or more (1 month if pregnant) with no B12 "
            "test since it started"
        ),
        denominator="patients on B12 treatment (oral or injection) on the as-of date",
        why="The guidance is to check B12 after 3 months of supplementation to confirm response.",
        low_is_good=True,
        source="NICE NG239 recommendations on follow-up (check after 3 months); "
               "docs/clinical-basis.md §6 (R11)",
        masks=_retest_overdue,
    ),
)


def measure_by_id(measure_id: str) -> Measure:
    """The shipped definition with this id (KeyError if there is none)."""
    for measure in MEASURES:
        if measure.id == measure_id:
            return measure
    raise KeyError(measure_id)


def definitions_table(measures: Sequence[Measure] = MEASURES) -> pd.DataFrame:
    """The measures' words as a table, one row per measure (for docs and data users)."""
    return pd.DataFrame([m.words() for m in measures])


def _practice_labels(patients: pd.DataFrame) -> pd.Series:
    if "practice_id" not in patients.columns:
        return pd.Series(UNKNOWN_PRACTICE, index=patients.index, dtype="string")
    practice = patients["practice_id"].astype("string").str.strip()
    return practice.mask(practice.eq("").fillna(False)).fillna(UNKNOWN_PRACTICE)


def _practice_codes(patients: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """``pd.factorize(_practice_labels(patients), sort=True)``, with the labels cleaned once
    per distinct practice id rather than once per patient."""
    if "practice_id" not in patients.columns:
        codes, groups = pd.factorize(_practice_labels(patients), sort=True)
        return codes, np.asarray(groups, dtype=object)
    practice = patients["practice_id"]
    if isinstance(practice.dtype, pd.CategoricalDtype):  # its codes as they are held
        raw_codes, used = used_codes(practice.cat.codes.to_numpy(),  # a part may lack some
                                     len(practice.cat.categories))
        raw = practice.cat.categories[used]
    else:
        raw_codes, raw = pd.factorize(practice)  # missing: -1
    distinct = pd.DataFrame({"practice_id": pd.Series(raw, dtype="string")})
    labels = _practice_labels(distinct)
    if (raw_codes < 0).any():
        labels = pd.concat([labels, pd.Series([UNKNOWN_PRACTICE], dtype="string")],
                           ignore_index=True)  # code -1 reads the last label
    codes, groups = pd.factorize(labels, sort=True)
    return codes.astype(np.int32)[raw_codes], np.asarray(groups, dtype=object)


def _age_band_codes(patients: pd.DataFrame, every: bool = False
                    ) -> tuple[np.ndarray, np.ndarray] | None:
    """Age bands in their natural order (``unknown`` last), or None when no patient has an
    age: a breakdown of everyone into ``unknown`` tells a reader nothing (``every``: the
    bands all the same, for a part of a cohort whose other parts may have ages)."""
    if "age_years" not in patients.columns:
        return None
    age = patients["age_years"]
    if not pd.api.types.is_numeric_dtype(age.dtype):  # numbers as text: read them
        age = pd.to_numeric(age, errors="coerce")
    known = age.to_numpy(dtype="float64", na_value=np.nan)
    missing = np.isnan(known)
    if not every and missing.all():
        return None
    edges = np.asarray(AGE_BAND_EDGES, float)
    codes = np.empty(len(known), dtype=np.int8)
    for start in range(0, len(known), _CHUNK):  # a million patients at a time: small temporaries
        codes[start:start + _CHUNK] = np.searchsorted(edges, known[start:start + _CHUNK],
                                                      side="right")
    codes[missing] = len(AGE_BANDS)
    return codes, np.asarray([*AGE_BANDS, UNKNOWN_GROUP], dtype=object)


#: Patients per slice where a per-patient temporary would otherwise span the cohort.
_CHUNK = 1 << 20


def _sex_codes(sex: pd.Series | None, every: bool = False
               ) -> tuple[np.ndarray, np.ndarray] | None:
    """``female``, ``male``, ``other``, ``unknown`` from the patients input's sex (``f``,
    ``female``, ``m``, ``male`` in any case); None when the input has no sex at all
    (``every``: the groups all the same, where a sex column is given)."""
    if sex is None:
        return None
    raw, distinct = pd.factorize(sex)  # each distinct spelling read once; missing: -1
    text = pd.Series(distinct, dtype="string").str.strip().str.lower().fillna("")
    group = np.select([text.isin(("f", "female")).to_numpy(bool),
                       text.isin(("m", "male")).to_numpy(bool),
                       text.eq("").to_numpy(bool)], [0, 1, 3], default=2)
    codes = np.append(group, 3).astype(np.int8)[raw]  # code -1 reads the last: unknown
    if not every and (codes == 3).all():
        return None
    return codes, np.asarray(SEX_GROUPS, dtype=object)


def breakdowns(patients: pd.DataFrame, sex: pd.Series | None = None, every: bool = False
               ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each ``group_by`` the inputs support: a group code per patient and the groups' labels.
    ``sex`` defaults to the patients frame's own ``sex`` column if it has one. ``every``:
    also the age bands and sexes where no patient has a value (a part of a cohort)."""
    if sex is None and "sex" in patients.columns:
        sex = patients["sex"]
    found = {"practice": _practice_codes(patients),
             "age_band": _age_band_codes(patients, every), "sex": _sex_codes(sex, every)}
    return {name: codes for name, codes in found.items() if codes is not None}


def breakdown_values(groupings: dict[str, tuple[np.ndarray, np.ndarray]]
                     ) -> dict[str, bool]:
    """Whether any patient has an age (``age_band``) or a sex (``sex``), read from the group
    codes of ``breakdowns(..., every=True)`` (a patient without one is ``unknown``): a
    breakdown is published only then."""
    shown = {}
    for name in ("age_band", "sex"):
        if name not in groupings:
            shown[name] = False
            continue
        codes, labels = groupings[name]
        shown[name] = bool((codes != list(labels).index(UNKNOWN_GROUP)).any())
    return shown


def count_measures(
    patients: pd.DataFrame,
    as_of: dt.date,
    *,
    measures: Sequence[Measure] = MEASURES,
    sex: pd.Series | None = None,
    groupings: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
) -> pd.DataFrame:
    """Every measure's exact counts overall and per group (before disclosure control).

    Rows: per measure, one ``overall``/``all`` row, then per ``group_by`` (``practice``, then
    ``age_band`` and ``sex`` where the inputs have them) one row per group. Each group_by's
    groups add up to the overall row (patients without a value are under ``unknown``).
    ``groupings``: the patients' ``breakdowns`` if already made (``every=True`` for a part
    of a cohort).
    """
    month = f"{as_of:%Y-%m}"
    if groupings is None:
        groupings = breakdowns(patients, sex)
    frames = []
    for measure in measures:  # a handful of measures; the work inside is vectorised
        num, den = measure.masks(patients, as_of)
        num = np.asarray(num, dtype=bool)
        den = np.asarray(den, dtype=bool)
        frames.append(pd.DataFrame({"measure": measure.id, "group_by": "overall",
                                    "group": ["all"], "numerator": [int(num.sum())],
                                    "denominator": [int(den.sum())]}))
        for group_by, (code, groups) in groupings.items():
            # the group codes of the rows counted, counted: no weight per patient
            frames.append(pd.DataFrame({
                "measure": measure.id, "group_by": group_by, "group": groups,
                "numerator": np.bincount(code[num], minlength=len(groups)).astype("int64"),
                "denominator": np.bincount(code[den], minlength=len(groups)).astype("int64"),
            }))
    table = pd.concat(frames, ignore_index=True)
    table["month"] = month
    table["ratio"] = np.nan
    for name in ("measure", "month", "group_by", "group"):
        table[name] = table[name].astype("string")
    return table[list(MEASURE_COLUMNS[:-2])]


#: The order of ``group_by`` in a measures table, and of the fixed groups within one.
_GROUP_BY_ORDER = ("overall", "practice", "age_band", "sex")
_FIXED_GROUPS = {"overall": ("all",), "age_band": (*AGE_BANDS, UNKNOWN_GROUP),
                 "sex": SEX_GROUPS}


def combine_counts(tables: Sequence[pd.DataFrame], grouped: dict[str, bool], *,
                   measures: Sequence[Measure] = MEASURES) -> pd.DataFrame:
    """The exact measures table of a cohort held in parts, from each part's
    ``count_measures(..., every=True)``: the counts summed group by group, in the order
    ``count_measures`` gives the whole cohort (practices sorted), and the age and sex
    breakdowns kept only where ``grouped`` says some patient has a value."""
    if len(tables) == 1:  # the whole cohort: its own table, less the empty breakdowns
        table = tables[0]
        keep = ~table["group_by"].isin([g for g, shown in grouped.items() if not shown])
        return table[keep.to_numpy(dtype=bool)].reset_index(drop=True)
    stacked = pd.concat(tables, ignore_index=True)
    shown = [g for g in _GROUP_BY_ORDER if grouped.get(g, True)]
    stacked = stacked[stacked["group_by"].isin(shown).to_numpy(dtype=bool)]
    summed = (stacked.groupby(["measure", "group_by", "group"], observed=True, sort=False)
              [["numerator", "denominator"]].sum().reset_index())
    practices = summed.loc[summed["group_by"].eq("practice").to_numpy(bool), "group"]
    _, practice_order = pd.factorize(practices.astype("string"), sort=True)
    ranks = pd.concat([pd.DataFrame({"group_by": group_by, "group": pd.Series(values, dtype=str),
                                     "rank": np.arange(len(values))})
                       for group_by, values in {**_FIXED_GROUPS,
                                                "practice": practice_order}.items()])
    keys = summed[["measure", "group_by", "group"]].astype(str).merge(
        ranks, how="left", on=["group_by", "group"])  # a left merge keeps the rows' order
    measure_at = {m.id: i for i, m in enumerate(measures)}
    at = {g: i for i, g in enumerate(_GROUP_BY_ORDER)}
    order = np.lexsort((keys["rank"].to_numpy(), keys["group_by"].map(at).to_numpy(),
                        keys["measure"].map(measure_at).to_numpy()))
    table = summed.take(order).reset_index(drop=True)
    table["numerator"] = table["numerator"].astype("int64")
    table["denominator"] = table["denominator"].astype("int64")
    table["month"] = tables[0]["month"].iloc[0]
    table["ratio"] = np.nan
    for name in ("measure", "month", "group_by", "group"):
        table[name] = table[name].astype("string")
    return table[list(MEASURE_COLUMNS[:-2])]


def measure_cells(table: pd.DataFrame) -> tuple[pd.Series, pd.DataFrame, pd.DataFrame]:
    """A measures table as disclosure-control cells: values keyed
    ``measure/<id>/<group_by>/<group>/<numerator|denominator>``, the relations (each
    group_by's groups add up to the overall row) and the ties (a numerator is hidden with
    its denominator)."""
    stem = ("measure/" + table["measure"].astype(str) + "/" + table["group_by"].astype(str)
            + "/" + table["group"].astype(str) + "/")
    values = pd.concat([pd.Series(table["numerator"].to_numpy("int64"),
                                  index=(stem + "numerator").to_numpy()),
                        pd.Series(table["denominator"].to_numpy("int64"),
                                  index=(stem + "denominator").to_numpy())])
    overall = table["group_by"].eq("overall").to_numpy(bool)
    relations = []
    for column in ("numerator", "denominator"):
        key = stem + column
        parts = table.loc[~overall, ["measure", "group_by"]].assign(cell=key[~overall])
        total = pd.Series(key[overall].to_numpy(), index=table.loc[overall, "measure"])
        parts["relation"] = (column + "/" + parts["measure"].astype(str) + "/"
                             + parts["group_by"].astype(str))
        parts["role"] = "part"
        totals = parts.drop_duplicates("relation")
        totals = totals.assign(cell=total.reindex(totals["measure"]).to_numpy(), role="total")
        relations += [parts, totals]
    relations_frame = pd.concat(relations, ignore_index=True)[["relation", "cell", "role"]]
    ties = pd.DataFrame({"cell": (stem + "numerator").to_numpy(),
                         "follows": (stem + "denominator").to_numpy()})
    return values, relations_frame, ties


def publish_measures(table: pd.DataFrame, decided: pd.DataFrame) -> pd.DataFrame:
    """The measures table with each cell as ``decided`` (``disclosure.protect`` output keyed
    like ``measure_cells``): rounded counts, ratios from the rounded counts, ``suppressed``
    when anything in the row is withheld and ``suppression`` (``primary`` when a count of
    the row is small itself, ``secondary`` when hidden only to protect another cell)."""
    stem = ("measure/" + table["measure"].astype(str) + "/" + table["group_by"].astype(str)
            + "/" + table["group"].astype(str) + "/")
    out = table.copy()
    kinds = []
    for column in ("numerator", "denominator"):
        cell = decided.reindex((stem + column).to_numpy())
        out[column] = pd.array(cell["count"].to_numpy(), dtype="Int64")
        kinds.append(cell["suppression"].astype("string").fillna("").to_numpy(dtype=object))
    den = out["denominator"].astype("Float64")
    out["ratio"] = (out["numerator"].astype("Float64") / den.mask(den.eq(0).fillna(False))
                    ).astype("Float64")
    out["suppressed"] = (out["numerator"].isna() | out["denominator"].isna()).to_numpy(bool)
    kind = np.where((kinds[0] == PRIMARY) | (kinds[1] == PRIMARY), PRIMARY,
                    np.where(out["suppressed"], SECONDARY, ""))
    out["suppression"] = pd.array(kind, dtype="string")
    return out[list(MEASURE_COLUMNS)]


def build_measures(
    patients: pd.DataFrame,
    as_of: dt.date,
    small_count: int = SUPPRESSION_THRESHOLD,
    rounding: int = ROUNDING_MULTIPLE,
    *,
    measures: Sequence[Measure] = MEASURES,
    sex: pd.Series | None = None,
) -> pd.DataFrame:
    """Every measure overall and per group for the as-of month, disclosure-controlled on its
    own (a run publishes it with its other tables through ``pipeline.outputs.published`` instead, so
    that one decision holds across every shareable file).

    Counts are Int64 (NA when suppressed), ratio Float64 in 0..1.
    """
    table = count_measures(patients, as_of, measures=measures, sex=sex)
    values, relations, ties = measure_cells(table)
    decided = protect(values, relations, ties=ties, small_count=small_count, rounding=rounding)
    return publish_measures(table, decided)
