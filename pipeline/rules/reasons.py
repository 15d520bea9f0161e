"""The ``reasons`` sentence and ``rule_ids`` for each patient.

A worklist reader sees why a patient is listed, e.g.
``R1 total B12 262 ng/L (2026-10-03) indeterminate → R7 MMA needed``. Sentences contain
values and dates, so they belong in patient-level outputs only (never in logs).

The sentence is a table of clauses (``CLAUSES``), one per rule, in the order the reader
sees them; each names the condition it is written on and its words, with ``{slots}`` for
the patient's values (``_slots``: column and formatter) and ``[...]`` around a part written
only when its values are present. A clause missing one of its values is left out. The
renderer (``pipeline.kernels.text``) writes every row's sentence column-wise; adding a
clause is adding a row here.
"""

from __future__ import annotations

from collections import ChainMap
from typing import Any

import numpy as np
import pandas as pd

from pipeline.kernels.text import (
    Clause,
    Slot,
    Value,
    Word,
    Words,
    as_mask,
    day,
    integer,
    lookup,
    number,
    render,
    rule_ids,
    string,
)
from pipeline.rules.actions import (
    METFORMIN_RISK_FACTORS,
    REGIMENS,
    SUPPLEMENTATION_REASONS,
    URGENT_LIMBS,
)

ARROW = " → "
#: The R1–R9 chain links findings with an arrow; later findings are separate parts.
LINK, PART = ARROW, "; "
_B12_BAND = ("unlikely", "indeterminate", "deficient")
_MMA_BAND = ("normal", "straddles the limit", "raised")

#: R12's limbs (``URGENT_LIMBS``) in words; ``{days}`` is R12's ``untreated_days``.
URGENT_WORDS = {
    "neurological_symptoms": "neurological symptoms",
    "pregnant": "pregnant",
    "untreated_too_long": "deficient result over {days} days old, no B12 prescription active",
    "not_responding": "not responding: deficient on the check test taken on B12 treatment",
    "indeterminate_neurological": "indeterminate with neurological symptoms: treat without "
                                  "waiting for the MMA",
}

#: The sentence, clause by clause. ``when``: written on these patients (the conditions of
#: ``_conditions``); ``fires``: its rule id is listed for these (default: ``when``).
CLAUSES = (
    Clause("R1", when="total_index", fires="total_used", join=LINK,
           text="R1 total B12 {index_censor}{index_value} {index_unit} ({index_day}) "
                "{index_band}"),
    Clause("R2", when="active_index", fires="active_used", join=LINK,
           text="R2 active B12 {index_censor}{index_value} {index_unit} ({index_day}) "
                "{index_band}"),
    Clause("R3", when="censored_ambiguous", join=LINK,
           text="R3 censored result spans a cut-off: indeterminate"),
    Clause("R4", when="discordant", fires="has_index", join=LINK,
           text="R4 same-day total B12 {total_censor}{same_day_total} ng/L and active B12 "
                "{active_censor}{same_day_active} pmol/L disagree: more severe band used"),
    Clause("R5", when="has_mma", fires="status_by_mma", join=LINK,
           text="R5 MMA {mma_censor}{mma_value} µmol/L ({mma_day}) {mma_band}"
                "[ → {status_by_mma}]"),
    Clause("R7", when="needs_mma", join=LINK,
           text="R7 MMA needed"),
    Clause("R8", when="needs_supplementation", join=LINK,
           text="R8 supplementation needed ({supplementation_reasons})"),
    Clause("R9", when="has_regimen", join=LINK,
           text="R9 {regimen}"),
    Clause("R10", when="metformin_monitoring_due", join=PART,
           text="R10 on metformin, no B12 test in {interval} days[, last {last_b12_test}] "
                "(risk factors {metformin_risk}[: {risk_factors}])"),
    Clause("R11", when="retest_due", join=PART,
           text="R11 on B12 treatment since {treatment_start}, no B12 test since "
                "{check_from}: retest due"),
    Clause("R12", when="urgent_review", join=PART,
           text="R12 urgent review ({urgent_limbs})"),
    Clause("R13", when="paediatric", join=PART,
           text="R13 under 16: thresholds are for over-16s"),
)


def _slots(r9: dict[str, Any], r10: dict[str, Any]) -> dict[str, Slot]:
    """What each ``{slot}`` of ``CLAUSES`` shows: a patient column and its formatter, a word
    list chosen by flags, or a rules-profile text."""
    r10_words = {"age_years": r10["risk_age_years"], "dose_mg": r10["risk_dose_mg_per_day"],
                 "years": r10["risk_years_on_metformin"]}
    regimens = [f"{r.intent}: {r.label.format(diet=diet)}: {r9[r.key]}"
                for diet in ("vegetarian", "vegan") for r in REGIMENS]
    return {
        "index_censor": Word("index_censor", string, missing=""),
        "index_value": Value("index_value", number),
        "index_unit": Word("index_unit", string, missing=""),
        "index_day": Value("index_collected_at", day),
        "index_band": Word("index_sev", lookup(_B12_BAND)),
        "total_censor": Word("total_censor", string, missing=""),
        "same_day_total": Value("b12_total_ng_l", number),
        "active_censor": Word("active_censor", string, missing=""),
        "same_day_active": Value("b12_active_pmol_l", number),
        "mma_censor": Word("mma_censor", string, missing=""),
        "mma_value": Value("mma_umol_l", number),
        "mma_day": Value("mma_at", day),
        "mma_band": Word("mma_sev", lookup(_MMA_BAND)),
        "status_by_mma": Word("b12_status", string, only="status_by_mma"),
        "supplementation_reasons": Words("supplementation",
                                         {reason: reason for reason in SUPPLEMENTATION_REASONS}),
        "regimen": Word("regimen", lookup(regimens)),
        "interval": str(r10["metformin_test_interval_days"]),
        "last_b12_test": Value("last_b12_test_at", day),
        "metformin_risk": Word("metformin_risk", integer),
        "risk_factors": Words("risk_factors", {name: label.format(**r10_words)
                                               for name, label in METFORMIN_RISK_FACTORS.items()},
                              only="risk_listed"),
        "treatment_start": Value("b12_treatment_start", day),
        "check_from": Value("check_from", day),
        "urgent_limbs": Words("urgent_limbs", {
            name: URGENT_WORDS[name].format(days="{untreated_days}") for name in URGENT_LIMBS}),
        "untreated_days": Word("untreated_days", integer),
    }


def _conditions(p: pd.DataFrame, attrs: pd.DataFrame) -> dict[str, np.ndarray]:
    """The patient conditions ``CLAUSES`` are written or fire on, by name."""
    has_index = as_mask(p["index_test"].notna())
    is_total = as_mask(p["index_test"] == "b12_total")
    discordant = has_index & as_mask(p["discordant"])
    branch = np.asarray(p["regimen_branch"].fillna(-1), dtype="int16")
    # R9's last branch (prevention by diet) is worded vegan or vegetarian: vegans' words
    # follow the vegetarians' in ``_slots``'s list.
    vegan = (branch == len(REGIMENS) - 1) & as_mask(attrs["diet"] == "vegan")
    return {
        "has_index": has_index,
        "total_index": has_index & is_total,
        "active_index": has_index & ~is_total,
        "total_used": has_index & (is_total | discordant),  # reported, or compared (R4)
        "active_used": has_index & (~is_total | discordant),
        "censored_ambiguous": has_index & as_mask(p["censored_ambiguous"]),
        "discordant": discordant,
        "has_mma": has_index & as_mask(p["mma_umol_l"].notna()),
        "status_by_mma": as_mask(p["status_basis"] == "mma"),
        "needs_mma": as_mask(p["needs_mma"]),
        "needs_supplementation": as_mask(p["needs_supplementation"]),
        "has_regimen": branch >= 0,
        "regimen": np.where(vegan, branch + len(REGIMENS), branch),
        "metformin_monitoring_due": as_mask(p["metformin_monitoring_due"]),
        "risk_listed": as_mask(p["metformin_risk"] > 0),
        "retest_due": as_mask(p["retest_due"]),
        "urgent_review": as_mask(p["urgent_review"]),
        "paediatric": as_mask(p["paediatric"]),
    }


def build_reasons(p: pd.DataFrame, attrs: pd.DataFrame, supplementation: pd.DataFrame,
                  risk_factors: pd.DataFrame, urgent_limbs: pd.DataFrame, r9: dict[str, Any],
                  r10: dict[str, Any]) -> tuple[pd.Series, pd.Series]:
    """(reasons sentence, space-separated rule ids) for every patient row of ``p``.

    ``supplementation``, ``risk_factors`` and ``urgent_limbs`` hold one flag column per R8
    reason, R10 risk factor and R12 limb (``URGENT_LIMBS``); ``r9`` the profile's regimen
    texts, named in the R9 clause with its intent and what chose it.
    """
    conditions = _conditions(p, attrs)
    flags = {"supplementation": supplementation, "risk_factors": risk_factors,
             "urgent_limbs": urgent_limbs}
    columns = ChainMap(conditions, flags, p)  # type: ignore[arg-type]
    sentences = render(CLAUSES, _slots(r9, r10), columns)
    ids = rule_ids(CLAUSES, conditions)
    return (pd.Series(pd.array(sentences, dtype="str"), index=p.index),
            pd.Series(pd.array(ids, dtype="str"), index=p.index))
