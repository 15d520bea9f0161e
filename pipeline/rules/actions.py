"""R8-R13: what to do about each patient, from status, attributes and prescriptions.

Inputs are per-patient Series on the same index (factorised patient codes); missing
attributes count as "no" (a yes/no left empty is not evidence of a risk factor).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np
import pandas as pd

from pipeline.ingest.harmonise import labels

#: R8 reasons in the order ``supplementation_reason`` picks the first of (the same order as
#: R9's: a resected ileum cannot absorb oral B12, so it comes before bariatric surgery).
SUPPLEMENTATION_REASONS = ("deficiency", "ileal_resection", "bariatric_surgery", "diet")
#: ``regimen_code`` values (the Parquet dictionary), and ``regimen_intent`` values.
REGIMEN_CODES = ("paediatric", "neurological", "ileal_resection", "bariatric_surgery",
                 "deficiency", "diet")
REGIMEN_INTENTS = ("treatment", "prevention")


@dataclass(frozen=True)
class Regimen:
    """One R9 branch: why it is chosen, and where its wording lives in the rules profile."""

    intent: str
    code: str  # regimen_code
    key: str  # the profile's text (``[rules.R9]``)
    label: str  # what chose it, for the reasons sentence ({diet}: vegan or vegetarian)


#: R9's branches, first match within each intent: treatment of deficiency, then prevention
#: in an at-risk group. ``regimen`` returns positions in this tuple.
REGIMENS = (
    Regimen("treatment", "paediatric", "paediatric", "under 16"),
    Regimen("treatment", "neurological", "neurological", "neurological symptoms"),
    Regimen("treatment", "ileal_resection", "ileal_resection", "ileal resection"),
    Regimen("treatment", "bariatric_surgery", "bariatric_surgery", "bariatric surgery"),
    Regimen("treatment", "deficiency", "deficiency", "deficiency"),
    Regimen("prevention", "ileal_resection", "prevention_ileal_resection", "ileal resection"),
    Regimen("prevention", "bariatric_surgery", "prevention_bariatric_surgery",
            "bariatric surgery"),
    Regimen("prevention", "diet", "prevention_diet", "{diet} diet"),
)
#: The first five branches treat a deficiency; the rest prevent one.
TREATMENT_BRANCHES = 5
#: R12's urgent limbs, in the order the reasons sentence names them.
URGENT_LIMBS = ("neurological_symptoms", "pregnant", "untreated_too_long", "not_responding",
                "indeterminate_neurological")


def _flag(series: pd.Series) -> pd.Series:
    return series.fillna(False).astype(bool)


def plant_based(diet: pd.Series) -> pd.Series:
    return diet.isin(("vegan", "vegetarian")).fillna(False).astype(bool)


def ileal_resection(ileal_cm: pd.Series, above_cm: float) -> pd.Series:
    """R8: ileal resection > 20 cm, with or without Crohn's disease.

    The seed's Crohn's branch ("if > 20 cm of distal ileum is resected") is the same test,
    so it is the resected length that counts: Crohn's disease with no length recorded does
    not trigger supplementation, and exactly 20 cm does not either (the SPEC says > 20).
    """
    return (ileal_cm.astype("float64") > above_cm).fillna(False).astype(bool)


def supplementation_conditions(status: pd.Series, bariatric: pd.Series, ileal: pd.Series,
                               diet: pd.Series) -> pd.DataFrame:
    """R8: one boolean column per reason, in SPEC order (``SUPPLEMENTATION_REASONS``).

    Each holds whether or not the patient is already treated, so ``reasons`` can name them.
    """
    return pd.DataFrame({
        "deficiency": (status == "deficient").to_numpy(dtype=bool),
        "ileal_resection": ileal.to_numpy(dtype=bool),
        "bariatric_surgery": _flag(bariatric).to_numpy(),
        "diet": plant_based(diet).to_numpy(),
    }, index=status.index)[list(SUPPLEMENTATION_REASONS)]


def needs_supplementation(conditions: pd.DataFrame,
                          on_b12: pd.Series) -> tuple[pd.Series, pd.Series]:
    """R8: (needs_supplementation, first matching reason in SPEC order, else NA).

    Not needed when a B12 *treatment* prescription (oral or injection) is active on the
    as-of date, whatever the reason; the low dose inside a metformin combination product is
    not treatment, so ``on_b12`` leaves it out. The column holds the first reason;
    ``reasons`` lists every one that applies.
    """
    cols = [conditions[c].to_numpy() for c in SUPPLEMENTATION_REASONS]
    needs = ~_flag(on_b12).to_numpy() & np.logical_or.reduce(cols)
    reason = np.where(needs, np.select(cols, range(len(cols)), -1), -1)
    return pd.Series(needs, index=conditions.index), labels(reason, SUPPLEMENTATION_REASONS,
                                                           conditions.index)


def regimen(needs: pd.Series, status: pd.Series, age: pd.Series, neuro: pd.Series,
            ileal: pd.Series, bariatric: pd.Series, diet: pd.Series,
            paediatric_below: int) -> pd.Series:
    """R9: the branch of ``REGIMENS`` (-1: none), only for patients who need supplementation.

    The branch follows *why* supplementation is needed. A deficient patient is treated
    (first match: child, neurological symptoms, ileal resection, bariatric surgery, else the
    standard course); anyone else R8 lists is in an at-risk group and gets prevention (ileal
    resection, bariatric surgery, diet). So neither a child's loading course nor the
    neurological regimen is offered for a deficiency the patient does not have. An unknown
    age counts as adult (R13 cannot flag what it does not know).
    """
    child = (age.astype("Float64") < paediatric_below).fillna(False).to_numpy(dtype=bool)
    ileal, bariatric = ileal.to_numpy(dtype=bool), _flag(bariatric).to_numpy()
    treatment = np.select([child, _flag(neuro).to_numpy(), ileal, bariatric],
                          range(TREATMENT_BRANCHES - 1), TREATMENT_BRANCHES - 1)
    prevention = np.select([ileal, bariatric, plant_based(diet).to_numpy()],
                           range(TREATMENT_BRANCHES, len(REGIMENS)), -1)
    branch = np.where((status == "deficient").to_numpy(dtype=bool), treatment, prevention)
    return pd.Series(np.where(needs.to_numpy(dtype=bool), branch, -1).astype("int8"),
                     index=needs.index)


def regimen_code(branch: pd.Series) -> tuple[pd.Series, pd.Series]:
    """R9: (``regimen_code``, ``regimen_intent``) of each branch as categoricals (codes,
    no text per row); missing where there is none."""
    codes = np.array([REGIMEN_CODES.index(r.code) for r in REGIMENS] + [-1], dtype="int8")
    intents = np.array([REGIMEN_INTENTS.index(r.intent) for r in REGIMENS] + [-1],
                       dtype="int8")
    b = branch.to_numpy()  # -1 (none) takes the last entry: missing
    return tuple(pd.Series(pd.Categorical.from_codes(table[b], categories=categories),
                           index=branch.index)
                 for table, categories in ((codes, REGIMEN_CODES), (intents, REGIMEN_INTENTS)))


def _names(value: object) -> set[str]:
    """A profile list of text keys (one name alone is read as a list of one)."""
    return {value} if isinstance(value, str) else {str(v) for v in value or ()}


def regimen_wording(regimen: Regimen, texts: dict[str, Any], *, lifelong: bool,
                    child: bool, pregnant: bool) -> str:
    """R9's text for one branch and situation, every part a rules-profile value.

    The potassium note goes only with injections, right after the regimen: as it stands for
    an injection-only regimen, and as "if IM: ..." where IM is one option beside oral
    (the hypokalaemia warning is the injection label's). Autoimmune gastritis adds
    "lifelong treatment" to treatment; an under-16 on prevention gets "dose per paediatric
    guidance"; every regimen ends with the R11 check (after 1 month in pregnancy).
    """
    parts = [texts[regimen.key]]
    if child and regimen.intent == "prevention":
        parts.append(texts["paediatric_prevention_note"])
    if regimen.key in _names(texts["injection_only"]):
        parts.append(texts["injection_note"])
    elif regimen.key in _names(texts["injection_option"]):
        parts.append(texts["injection_option_note"])
    if lifelong and regimen.intent == "treatment":
        parts.append(texts["lifelong_note"])
    parts.append(texts["monitoring_note_pregnant" if pregnant else "monitoring_note"])
    return "; ".join(parts)


def regimen_text(branch: pd.Series, autoimmune_gastritis: pd.Series, paediatric: pd.Series,
                 pregnant: pd.Series, texts: dict[str, Any]) -> pd.Series:
    """R9 ``suggested_regimen``: each row's wording taken from the few possible texts.

    A branch has eight variants (lifelong, under 16, pregnant); all of them are written
    once, and each row takes its own by code: no text is built per row.
    """
    variants = [regimen_wording(r, texts, lifelong=bool(v & 4), child=bool(v & 2),
                                pregnant=bool(v & 1)) for r in REGIMENS for v in range(8)]
    b = branch.to_numpy().astype("int64")
    variant = (_flag(autoimmune_gastritis).to_numpy() * 4 + _flag(paediatric).to_numpy() * 2
               + _flag(pregnant).to_numpy())
    # a categorical over the distinct texts (variants may coincide)
    codes, distinct = pd.factorize(pd.Index(variants, dtype="str"))
    return labels(np.where(b >= 0, codes[b * 8 + variant], -1), list(distinct), branch.index)


def metformin_monitoring_due(on_metformin: pd.Series, last_b12_test: pd.Series,
                             as_of: date, interval_days: int) -> pd.Series:
    """R10: on metformin and no total/active B12 in ``(as_of - interval, as_of]``.

    Compared by collection *date*, like R4's window: a test at 18:00 exactly 365 days ago
    is as old as one at 08:00 that day, so neither counts as within the last year.
    """
    recent = last_b12_test.dt.floor("D") > pd.Timestamp(as_of) - pd.Timedelta(days=interval_days)
    return _flag(on_metformin) & ~recent.fillna(False).astype(bool)


#: R10 risk factors, in the SPEC's order, with the words a worklist reader sees.
METFORMIN_RISK_FACTORS = {
    "age": "age {age_years}+", "dose": "dose {dose_mg:g}+ mg/day",
    "years": "{years:g}+ years on metformin", "acid_suppressant": "acid suppressant",
    "diet": "vegan/vegetarian", "autoimmune_gastritis": "autoimmune gastritis",
    "bariatric_surgery": "bariatric surgery",
}


def metformin_risk_factors(on_metformin: pd.Series, age: pd.Series, dose: pd.Series,
                           first_metformin: pd.Series, acid_suppressant: pd.Series,
                           diet: pd.Series, autoimmune_gastritis: pd.Series,
                           bariatric: pd.Series, as_of: date, *, age_years: int,
                           dose_mg: float, years: float) -> pd.DataFrame:
    """R10: one boolean column per risk factor (all False for patients not on metformin).

    ``dose`` is the summed daily dose of the active metformin prescriptions (a patient on
    two products takes both); years on metformin count from the earliest metformin start,
    including stopped prescriptions, because exposure accumulates across courses.
    """
    years_on = (pd.Timestamp(as_of) - first_metformin).dt.days / 365.25
    on = _flag(on_metformin).to_numpy()
    factors = {
        "age": (age.astype("Float64") >= age_years).fillna(False).to_numpy(dtype=bool),
        "dose": (dose >= dose_mg).fillna(False).to_numpy(dtype=bool),
        "years": (years_on >= years).fillna(False).to_numpy(dtype=bool),
        "acid_suppressant": _flag(acid_suppressant).to_numpy(),
        "diet": plant_based(diet).to_numpy(),
        "autoimmune_gastritis": _flag(autoimmune_gastritis).to_numpy(),
        "bariatric_surgery": _flag(bariatric).to_numpy(),
    }
    return pd.DataFrame({k: v & on for k, v in factors.items()}, index=on_metformin.index)


def metformin_risk(factors: pd.DataFrame) -> pd.Series:
    """R10: how many risk factors a patient on metformin has (0 when not on metformin)."""
    return factors.sum(axis=1).astype("int8")


def check_from(treatment_start: pd.Series, pregnant: pd.Series, *, after_days: int,
               after_days_pregnant: int, early_days: int,
               early_days_pregnant: int) -> pd.Series:
    """R11: the first day on which a B12 test counts as the course's check (about 3 months
    in; 1 month in pregnancy): course start + ``after_days`` - ``early_days``.

    A test in the first weeks of treatment says nothing about the response, so it is not
    the check; one taken a little early (two weeks, a week in pregnancy) is.
    """
    offset = np.where(_flag(pregnant).to_numpy(), after_days_pregnant - early_days_pregnant,
                      after_days - early_days)
    return treatment_start + pd.Series(offset.astype("timedelta64[D]"),
                                       index=treatment_start.index).astype("timedelta64[us]")


def retest_due(on_b12: pd.Series, treatment_start: pd.Series, check_day: pd.Series,
               last_b12_test: pd.Series, pregnant: pd.Series, as_of: date, *,
               after_days: int, after_days_pregnant: int) -> pd.Series:
    """R11: on a course that started >= ``after_days`` ago (``after_days_pregnant`` if
    pregnant) and no total/active B12 collected on or after ``check_day``.

    ``treatment_start`` is the start of the current course (prescriptions overlapping or
    within ``treatment_gap_days`` of each other are one course, so a repeat prescription
    does not restart the clock); it is missing when no B12 treatment is active on the as-of
    date, so a lapsed course is due nothing. Unknown pregnancy status waits the usual time.
    """
    wait = np.where(_flag(pregnant).to_numpy(), after_days_pregnant, after_days)
    started_days = (pd.Timestamp(as_of) - treatment_start).dt.days
    long_enough = (started_days >= wait).fillna(False).astype(bool)
    checked = (last_b12_test.dt.floor("D") >= check_day).fillna(False).astype(bool)
    return _flag(on_b12) & long_enough & ~checked


def failed_check(status: pd.Series, index_at: pd.Series,
                 tested_check_day: pd.Series) -> pd.Series:
    """R12's not responding, before any answer to it: deficient on R11's check test, taken
    while on the course (adherence, absorption or route needs review).

    The check test is the latest B12 test on or after the course's ``check_from`` day:
    the index test (R4's most recent in the look-back) whenever it is that late, so the
    status it gave is the check's result. ``tested_check_day`` is that day for the course
    the index test was taken in (missing when it was taken off treatment). Where the SPEC
    is silent:
    - a course that has lapsed since does not clear it: the patient did not respond and is
      now untreated too, and the untreated limb would wait 90 days from the test (the
      worklist's action then says to restart treatment); nor does a repeat of the same
      prescription, which is how tablets and injections are prescribed;
    - injections begun after the check, where none ran on its day, answer it (the change of
      route NICE advises): ``classify`` then leaves the patient out of ``not_responding``
      and dates R11's check from the injections' start, so a check of them falls due.
    """
    day = index_at.dt.floor("D")
    on_check = (day >= tested_check_day).fillna(False).astype(bool)
    return (status == "deficient") & on_check


def untreated_too_long(status: pd.Series, index_at: pd.Series, on_b12: pd.Series,
                       as_of: date, untreated_days: int) -> pd.Series:
    """R12's untreated limb: deficient, the index test more than ``untreated_days`` old,
    and no B12 treatment prescription active on the as-of date (untreated deficiency for
    more than 3 months may cause permanent spinal cord lesions).

    A course that has lapsed is untreated again; tablets started before the test and still
    taken are treatment (a deficient check on them is ``not_responding``); B12 inside a
    metformin combination is not treatment, so ``on_b12`` leaves it out.
    """
    age_days = (pd.Timestamp(as_of) - index_at.dt.floor("D")).dt.days
    old = (age_days > untreated_days).fillna(False).astype(bool)
    return (status == "deficient") & old & ~_flag(on_b12)


def urgent_limbs(status: pd.Series, neuro: pd.Series, pregnant: pd.Series,
                 untreated: pd.Series, responding_not: pd.Series) -> pd.DataFrame:
    """R12: one boolean column per limb (``URGENT_LIMBS``), so the reasons can name each.

    Deficient with neurological symptoms or pregnant; untreated too long; not responding on
    the check test; indeterminate with neurological symptoms (BSH 2014: do not delay
    treatment while the MMA is awaited).
    """
    deficient = (status == "deficient").to_numpy(dtype=bool)
    neuro = _flag(neuro).to_numpy()
    return pd.DataFrame({
        "neurological_symptoms": deficient & neuro,
        "pregnant": deficient & _flag(pregnant).to_numpy(),
        "untreated_too_long": _flag(untreated).to_numpy(),
        "not_responding": _flag(responding_not).to_numpy(),
        "indeterminate_neurological": (status == "indeterminate").to_numpy(dtype=bool) & neuro,
    }, index=status.index)[list(URGENT_LIMBS)]


def urgent_review(limbs: pd.DataFrame) -> pd.Series:
    """R12: any limb of ``urgent_limbs``."""
    return limbs.any(axis=1)


def paediatric(age: pd.Series, below: int) -> pd.Series:
    """R13: under 16 at the as-of date (thresholds are for over-16s).

    Age is whole years on the as-of date (from birth_date when given, else age_years), so
    a child whose 16th birthday is the day after the as-of date is still paediatric. An
    unknown age is not flagged.
    """
    return (age.astype("Float64") < below).fillna(False).astype(bool)
