"""R8-R13: what to do about each patient, from status, attributes and prescriptions.

Inputs are per-patient Series on the same index (factorised patient codes); missing
attributes count as "no" (a yes/no left empty is not evidence of a risk factor).
"""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd

from pipeline.harmonise import lookup, words

SUPPLEMENTATION_REASONS = ("deficiency", "bariatric_surgery", "ileal_resection", "diet")
REGIMEN_CODES = ("paediatric", "neurological", "ileal_resection", "bariatric_surgery",
                 "deficiency", "diet")
PARENTERAL = {"paediatric", "neurological", "ileal_resection", "deficiency"}


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
        "bariatric_surgery": _flag(bariatric).to_numpy(),
        "ileal_resection": ileal.to_numpy(dtype=bool),
        "diet": plant_based(diet).to_numpy(),
    }, index=status.index)[list(SUPPLEMENTATION_REASONS)]


def needs_supplementation(conditions: pd.DataFrame,
                          on_b12: pd.Series) -> tuple[pd.Series, pd.Series]:
    """R8: (needs_supplementation, first matching reason in SPEC order, else NA).

    Not needed when a B12 prescription is active on the as-of date, whatever the reason.
    The column holds the first reason; ``reasons`` lists every one that applies.
    """
    cols = [conditions[c].to_numpy() for c in SUPPLEMENTATION_REASONS]
    needs = ~_flag(on_b12).to_numpy() & np.logical_or.reduce(cols)
    reason = np.where(needs, np.select(cols, range(len(cols)), -1), -1)
    return pd.Series(needs, index=conditions.index), words(reason, SUPPLEMENTATION_REASONS,
                                                          conditions.index)


def regimen(needs: pd.Series, age: pd.Series, neuro: pd.Series, ileal: pd.Series,
            bariatric: pd.Series, status: pd.Series, diet: pd.Series,
            paediatric_below: int) -> pd.Series:
    """R9: regimen code by first match, only for patients who need supplementation.

    First match is taken literally: neurological symptoms choose the intramuscular
    regimen whatever the R8 reason (a vegan with neurological symptoms included), and an
    unknown age counts as adult (R13 cannot flag what it does not know).
    """
    conditions = [
        (age.astype("Float64") < paediatric_below).fillna(False).to_numpy(dtype=bool),
        _flag(neuro).to_numpy(), ileal.to_numpy(), _flag(bariatric).to_numpy(),
        (status == "deficient").to_numpy(), plant_based(diet).to_numpy(),
    ]
    code = np.select(conditions, range(len(conditions)), -1)
    return words(np.where(needs.to_numpy(dtype=bool), code, -1), REGIMEN_CODES, needs.index)


def regimen_text(code: pd.Series, texts: dict[str, str]) -> pd.Series:
    """R9 wording: the profile's regimen, the potassium note for parenteral options, and
    the 3-month check on every regimen.

    Parenteral (``PARENTERAL``): paediatric (the hydroxocobalamin label's schedule),
    neurological and ileal resection (intramuscular), and deficiency, whose text offers
    1000 micrograms IM monthly as one option. Bariatric (oral daily) and diet (oral) are
    not, so they carry no potassium note.
    """
    full = {c: "; ".join([texts[c], *([texts["parenteral_note"]] if c in PARENTERAL else []),
                          texts["monitoring_note"]]) for c in REGIMEN_CODES}
    return lookup(code, full)  # six texts, looked up; NA where no regimen


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


def retest_due(on_b12: pd.Series, treatment_start: pd.Series, last_b12_test: pd.Series,
               pregnant: pd.Series, as_of: date, *, after_days: int,
               after_days_pregnant: int) -> pd.Series:
    """R11: on treatment that started >= 90 days ago (30 if pregnant) and no total/active
    B12 collected after the start date.

    ``treatment_start`` is the start of the current course (prescriptions overlapping or
    within ``treatment_gap_days`` of each other are one course, so a repeat prescription
    does not restart the clock). A test on the start day was taken before treatment could
    act, so it does not count; unknown pregnancy status waits the usual 90 days.
    """
    wait = np.where(_flag(pregnant).to_numpy(), after_days_pregnant, after_days)
    started_days = (pd.Timestamp(as_of) - treatment_start).dt.days
    long_enough = (started_days >= wait).fillna(False).astype(bool)
    tested_after = (last_b12_test.dt.floor("D") > treatment_start).fillna(False).astype(bool)
    return _flag(on_b12) & long_enough & ~tested_after


def untreated_too_long(index_at: pd.Series, treated_since_index: pd.Series, as_of: date,
                       untreated_days: int) -> pd.Series:
    """R12's third limb: the index test is more than ``untreated_days`` old and no B12
    treatment started on or after its date (the seed: permanent cord lesions after 3
    months untreated). A course that began before the index test does not count: a
    deficient result despite treatment needs review just as much."""
    age_days = (pd.Timestamp(as_of) - index_at.dt.floor("D")).dt.days
    return (age_days > untreated_days).fillna(False).astype(bool) & ~_flag(treated_since_index)


def urgent_review(status: pd.Series, neuro: pd.Series, pregnant: pd.Series,
                  untreated: pd.Series) -> pd.Series:
    """R12: deficient and (neurological symptoms, pregnant, or ``untreated_too_long``)."""
    return (status == "deficient") & (_flag(neuro) | _flag(pregnant) | _flag(untreated))


def paediatric(age: pd.Series, below: int) -> pd.Series:
    """R13: under 16 at the as-of date (thresholds are for over-16s).

    Age is whole years on the as-of date (from birth_date when given, else age_years), so
    a child whose 16th birthday is the day after the as-of date is still paediatric. An
    unknown age is not flagged.
    """
    return (age.astype("Float64") < below).fillna(False).astype(bool)
