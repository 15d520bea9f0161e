"""The ``reasons`` sentence and ``rule_ids`` for each patient, built column-wise.

A worklist reader sees why a patient is listed, e.g.
``R1 total B12 262 ng/L (2026-10-03) indeterminate → R7 MMA needed``. Sentences contain
values and dates, so they belong in patient-level outputs only (never in logs).

Built with Arrow string kernels: a missing part is a null, ``cat`` propagates nulls like
``+`` and ``join_present`` skips them, so a clause appears only when its rule fired.
(Pandas string arithmetic here was most of the classification time.)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.rules.actions import METFORMIN_RISK_FACTORS, SUPPLEMENTATION_REASONS

ARROW = " → "
_B12_BAND = ("unlikely", "indeterminate", "deficient")
_MMA_BAND = ("normal", "straddles the limit", "raised")

Text = pa.Array | str


def _mask(values: pd.Series | np.ndarray) -> pa.Array:
    return pa.array(np.asarray(pd.Series(values).fillna(False), dtype=bool), pa.bool_())


def _text(values: pd.Series) -> pa.Array:
    """A text column as Arrow strings (missing -> null)."""
    return pa.array(values.astype("object").where(values.notna(), None).to_numpy(), pa.string())


def _num(values: pd.Series) -> pa.Array:
    """Numbers as short text: 262.0 -> '262', 178.8645 -> '178.86'."""
    rounded = values.astype("float64").round(2).to_numpy()
    return pa.array(rounded, pa.float64(), from_pandas=True).cast(pa.string())


def _int(values: pd.Series) -> pa.Array:
    return pa.array(values.astype("float64").to_numpy(), pa.float64(), from_pandas=True) \
        .cast(pa.int64()).cast(pa.string())


def _day(values: pd.Series) -> pa.Array:
    """Dates as ISO text (a cast is much faster than strftime)."""
    stamps = pa.array(values.astype("datetime64[us]"), pa.timestamp("us"), from_pandas=True)
    return stamps.cast(pa.date32()).cast(pa.string())


def _lookup(codes: pd.Series, words: tuple[str, ...]) -> pa.Array:
    """Integer codes (possibly missing) to words."""
    idx = pa.array(codes.astype("float64").to_numpy(), pa.float64(), from_pandas=True)
    return pc.take(pa.array(words, pa.string()), idx.cast(pa.int64()))


def cat(*parts: Text) -> pa.Array:
    """Concatenate per row; null if any part is null (like ``+``)."""
    return pc.binary_join_element_wise(*parts, "", null_handling="emit_null")


def when(mask: pa.Array, text: Text) -> pa.Array:
    """``text`` where ``mask`` holds, else null."""
    if isinstance(text, str):
        text = pa.scalar(text, pa.string())
    return pc.if_else(mask, text, pa.scalar(None, pa.string()))


def join_present(parts: list[pa.Array], sep: str) -> pa.Array:
    """Join the non-null, non-empty parts of each row with ``sep``; '' when none.

    One pass of ``binary_join_element_wise(null_handling="skip")`` behind a never-null
    sentinel column: pyarrow 26 drops the rows whose parts are *all* null, so every row
    starts with the sentinel, which is then cut off with the separator after it.
    """
    sentinel = "\x00"
    parts = [pc.if_else(pc.equal(part, ""), pa.scalar(None, pa.string()), part)
             for part in parts]
    head = pa.repeat(pa.scalar(sentinel, pa.string()), len(parts[0]))
    joined = pc.binary_join_element_wise(head, *parts, sep, null_handling="skip")
    return pc.if_else(pc.equal(joined, sentinel), "",
                      pc.utf8_slice_codeunits(joined, len(sentinel) + len(sep)))


def build_reasons(p: pd.DataFrame, attrs: pd.DataFrame, supplementation: pd.DataFrame,
                  risk_factors: pd.DataFrame, r10: dict[str, Any]) -> tuple[pd.Series,
                                                                           pd.Series]:
    """(reasons sentence, space-separated rule ids) for every patient row of ``p``."""
    r10_words = {"age_years": r10["risk_age_years"], "dose_mg": r10["risk_dose_mg_per_day"],
                 "years": r10["risk_years_on_metformin"]}
    has_index = _mask(p["index_test"].notna())
    is_total = _mask(p["index_test"] == "b12_total")
    ambiguous = pc.and_(has_index, _mask(p["censored_ambiguous"]))
    discordant = pc.and_(has_index, _mask(p["discordant"]))
    by_mma = _mask(p["status_basis"] == "mma")
    has_mma = pc.and_(has_index, _mask(p["mma_umol_l"].notna()))
    regimen_code = _text(p["regimen_code"])
    has_regimen = pc.is_valid(regimen_code)

    index_text = cat(pc.if_else(is_total, "R1 total B12 ", "R2 active B12 "),
                     pc.fill_null(_text(p["index_censor"]), ""), _num(p["index_value"]), " ",
                     pc.fill_null(_text(p["index_unit"]), ""), " (",
                     _day(p["index_collected_at"]), ") ", _lookup(p["index_sev"], _B12_BAND))
    # Discordant: both analytes were measured on the index day, and those are the latest.
    discordant_text = cat("R4 same-day total B12 ", _num(p["b12_total_ng_l"]),
                          " ng/L and active B12 ", _num(p["b12_active_pmol_l"]),
                          " pmol/L disagree: more severe band used")
    mma_text = cat("R5 MMA ", pc.fill_null(_text(p["mma_censor"]), ""), _num(p["mma_umol_l"]),
                   " µmol/L (", _day(p["mma_at"]), ") ", _lookup(p["mma_sev"], _MMA_BAND),
                   pc.fill_null(when(by_mma, cat(ARROW, _text(p["b12_status"]))), ""))
    supp_why = join_present([when(_mask(supplementation[c]), c)
                             for c in SUPPLEMENTATION_REASONS], ", ")
    factor_words = join_present([when(_mask(risk_factors[name]), label.format(**r10_words))
                                 for name, label in METFORMIN_RISK_FACTORS.items()], ", ")
    risk = _int(p["metformin_risk"])
    metformin = cat("R10 on metformin, no B12 test in ",
                    str(r10["metformin_test_interval_days"]), " days",
                    pc.fill_null(cat(", last ", _day(p["last_b12_test_at"])), ""),
                    " (risk factors ", risk,
                    pc.fill_null(when(_mask(p["metformin_risk"] > 0), cat(": ", factor_words)),
                                 ""), ")")
    retest = cat("R11 on B12 treatment since ", _day(p["b12_treatment_start"]),
                 ", no B12 test since: retest due")
    urgent_why = join_present([
        when(_mask(attrs["neurological_symptoms"]), "neurological symptoms"),
        when(_mask(attrs["pregnant"]), "pregnant"),
        when(_mask(p["untreated_too_long"]),
             cat("deficient result over ", _int(p["untreated_days"]),
                 " days old, no B12 treatment started since")),
    ], ", ")
    chain = join_present([
        when(has_index, index_text),
        when(ambiguous, "R3 censored result spans a cut-off: indeterminate"),
        when(discordant, discordant_text),
        when(has_mma, mma_text),
        when(_mask(p["needs_mma"]), "R7 MMA needed"),
        when(_mask(p["needs_supplementation"]), cat("R8 supplementation needed (", supp_why,
                                                     ")")),
        when(has_regimen, cat("R9 ", regimen_code, " regimen")),
    ], ARROW)
    sentence = join_present([
        chain,
        when(_mask(p["metformin_monitoring_due"]), metformin),
        when(_mask(p["retest_due"]), retest),
        when(_mask(p["urgent_review"]), cat("R12 urgent review (", urgent_why, ")")),
        when(_mask(p["paediatric"]), "R13 under 16: thresholds are for over-16s"),
    ], "; ")
    ids = join_present([
        when(pc.and_(has_index, pc.or_(is_total, discordant)), "R1"),
        when(pc.and_(has_index, pc.or_(pc.invert(is_total), discordant)), "R2"),
        when(ambiguous, "R3"), when(has_index, "R4"), when(by_mma, "R5"),
        when(_mask(p["needs_mma"]), "R7"), when(_mask(p["needs_supplementation"]), "R8"),
        when(has_regimen, "R9"), when(_mask(p["metformin_monitoring_due"]), "R10"),
        when(_mask(p["retest_due"]), "R11"), when(_mask(p["urgent_review"]), "R12"),
        when(_mask(p["paediatric"]), "R13"),
    ], " ")
    return (pd.Series(sentence.to_pandas(), index=p.index, dtype="str"),
            pd.Series(ids.to_pandas(), index=p.index, dtype="str"))
