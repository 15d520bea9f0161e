"""R8-R13: what to do about each patient, from status, attributes and prescriptions.

Inputs are per-patient Series on the same index (factorised patient codes); missing
attributes count as "no" (a yes/no left empty is not evidence of a risk factor).
"""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd

SUPPLEMENTATION_REASONS = ("deficiency", "bariatric_surgery", "ileal_resection", "diet")
REGIMEN_CODES = ("paediatric", "neurological", "ileal_resection", "bariatric_surgery",
                 "deficiency", "diet")
PARENTERAL = {"paediatric", "neurological", "ileal_resection", "deficiency"}


def _flag(series: pd.Series) -> pd.Series:
    return series.fillna(False).astype(bool)


def plant_based(diet: pd.Series) -> pd.Series:
    return diet.isin(("vegan", "vegetarian")).fillna(False).astype(bool)


def ileal_resection(ileal_cm: pd.Series, above_cm: float) -> pd.Series:
    """R8: ileal resection > 20 cm (Crohn's with > 20 cm resected is the same test)."""
    return (ileal_cm.astype("float64") > above_cm).fillna(False).astype(bool)


def needs_supplementation(status: pd.Series, on_b12: pd.Series, bariatric: pd.Series,
                          ileal: pd.Series, diet: pd.Series) -> tuple[pd.Series, pd.Series]:
    """R8: (needs_supplementation, first matching reason in SPEC order, else NA).

    Every reason that applies is also listed in ``reasons``; the column holds the first.
    """
    conditions = [status == "deficient", _flag(bariatric), ileal, plant_based(diet)]
    any_reason = np.logical_or.reduce([c.to_numpy() for c in conditions])
    needs = ~_flag(on_b12).to_numpy() & any_reason
    reason = np.select([c.to_numpy() for c in conditions], SUPPLEMENTATION_REASONS, "")
    reason = pd.Series(reason, index=status.index, dtype="str").where(needs)
    return pd.Series(needs, index=status.index), reason


def regimen(needs: pd.Series, age: pd.Series, neuro: pd.Series, ileal: pd.Series,
            bariatric: pd.Series, status: pd.Series, diet: pd.Series,
            paediatric_below: int) -> pd.Series:
    """R9: regimen code by first match, only for patients who need supplementation."""
    conditions = [
        (age.astype("Float64") < paediatric_below).fillna(False).to_numpy(dtype=bool),
        _flag(neuro).to_numpy(), ileal.to_numpy(), _flag(bariatric).to_numpy(),
        (status == "deficient").to_numpy(), plant_based(diet).to_numpy(),
    ]
    code = np.select(conditions, REGIMEN_CODES, "")
    return pd.Series(code, index=needs.index, dtype="str").where(needs.to_numpy())


def regimen_text(code: pd.Series, texts: dict[str, str]) -> pd.Series:
    """R9 wording: the profile's regimen, the potassium note for parenteral options, and
    the 3-month check on every regimen."""
    base = code.map({c: texts[c] for c in REGIMEN_CODES})
    parenteral = code.isin(PARENTERAL)
    note = pd.Series("", index=code.index, dtype="str").mask(
        parenteral, ". " + texts["parenteral_note"])
    text = base.astype("str") + note + ". " + texts["monitoring_note"]
    return text.where(code.notna()).astype("str")


def metformin_monitoring_due(on_metformin: pd.Series, last_b12_test: pd.Series,
                             as_of: date, interval_days: int) -> pd.Series:
    """R10: on metformin and no total/active B12 in ``(as_of - interval, as_of]``."""
    recent = last_b12_test > pd.Timestamp(as_of) - pd.Timedelta(days=interval_days)
    return _flag(on_metformin) & ~recent.fillna(False).astype(bool)


def metformin_risk(on_metformin: pd.Series, age: pd.Series, dose: pd.Series,
                   first_metformin: pd.Series, acid_suppressant: pd.Series, diet: pd.Series,
                   autoimmune_gastritis: pd.Series, bariatric: pd.Series, as_of: date, *,
                   age_years: int, dose_mg: float, years: float) -> pd.Series:
    """R10: count of metformin risk factors (0 for patients not on metformin)."""
    years_on = (pd.Timestamp(as_of) - first_metformin).dt.days / 365.25
    factors = [
        (age.astype("Float64") >= age_years).fillna(False).to_numpy(dtype=bool),
        (dose >= dose_mg).fillna(False).to_numpy(dtype=bool),
        (years_on >= years).fillna(False).to_numpy(dtype=bool),
        _flag(acid_suppressant).to_numpy(), plant_based(diet).to_numpy(),
        _flag(autoimmune_gastritis).to_numpy(), _flag(bariatric).to_numpy(),
    ]
    count = np.sum(factors, axis=0) * _flag(on_metformin).to_numpy()
    return pd.Series(count.astype("int8"), index=on_metformin.index)


def retest_due(on_b12: pd.Series, treatment_start: pd.Series, last_b12_test: pd.Series,
               pregnant: pd.Series, as_of: date, *, after_days: int,
               after_days_pregnant: int) -> pd.Series:
    """R11: on treatment that started >= 90 days ago (30 if pregnant) and no total/active
    B12 collected after the start date."""
    wait = np.where(_flag(pregnant).to_numpy(), after_days_pregnant, after_days)
    started_days = (pd.Timestamp(as_of) - treatment_start).dt.days
    long_enough = (started_days >= wait).fillna(False).astype(bool)
    tested_after = (last_b12_test.dt.floor("D") > treatment_start).fillna(False).astype(bool)
    return _flag(on_b12) & long_enough & ~tested_after


def urgent_review(status: pd.Series, neuro: pd.Series, pregnant: pd.Series,
                  index_at: pd.Series, treated_since_index: pd.Series, as_of: date,
                  untreated_days: int) -> pd.Series:
    """R12: deficient and (neurological symptoms, pregnant, or deficient index test more
    than 90 days old with no B12 treatment started since)."""
    age_days = (pd.Timestamp(as_of) - index_at.dt.floor("D")).dt.days
    stale = (age_days > untreated_days).fillna(False).astype(bool) & ~_flag(treated_since_index)
    return (status == "deficient") & (_flag(neuro) | _flag(pregnant) | stale)


def paediatric(age: pd.Series, below: int) -> pd.Series:
    """R13: under 16 at the as-of date (thresholds are for over-16s)."""
    return (age.astype("Float64") < below).fillna(False).astype(bool)
