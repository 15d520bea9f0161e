"""The ``reasons`` sentence and ``rule_ids`` for each patient, built column-wise.

A worklist reader sees why a patient is listed, e.g.
``R1 total B12 262 ng/L (2026-10-03) indeterminate → R7 MMA needed``. Sentences contain
values and dates, so they belong in patient-level outputs only (never in logs).
"""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pyarrow as pa

ARROW = " → "
_B12_BAND = {0: "unlikely", 1: "indeterminate", 2: "deficient"}
_MMA_BAND = {0: "normal", 1: "straddles the limit", 2: "raised"}


def _num(values: pd.Series) -> pd.Series:
    rounded = values.astype("float64").round(2)
    text = pa.array(rounded.to_numpy(), pa.float64()).cast(pa.string())
    return pd.Series(text.to_numpy(zero_copy_only=False), index=values.index, dtype="str")


def _day(values: pd.Series) -> pd.Series:
    return values.dt.strftime("%Y-%m-%d").astype("str")


def _when(mask: pd.Series | np.ndarray, text: pd.Series | str, index: pd.Index) -> pd.Series:
    """``text`` where ``mask`` holds, else missing."""
    mask = np.asarray(mask, dtype=bool)
    if isinstance(text, str):
        return pd.Series(np.where(mask, text, None), index=index, dtype="str")
    return text.astype("str").where(mask)


def join_present(parts: list[pd.Series], sep: str) -> pd.Series:
    """Join the non-missing parts of each row with ``sep`` (a few columns, not rows)."""
    out = pd.Series("", index=parts[0].index, dtype="str")
    for part in parts:
        has = (part.notna() & (part != "")).to_numpy(dtype=bool)
        glue = pd.Series(np.where(out == "", "", sep), index=out.index, dtype="str")
        out = out.mask(has, out + glue + part.fillna(""))
    return out


def build_reasons(p: pd.DataFrame, attrs: pd.DataFrame, as_of: date) -> tuple[pd.Series,
                                                                          pd.Series]:
    """(reasons sentence, space-separated rule ids) for every patient row of ``p``."""
    ix = p.index
    has_index = p["index_test"].notna().to_numpy()
    is_total = (p["index_test"] == "b12_total").fillna(False).to_numpy()
    rule = pd.Series(np.where(is_total, "R1 total B12 ", "R2 active B12 "), index=ix, dtype="str")
    band = p["index_sev"].map(_B12_BAND).astype("str")
    index_text = (rule + p["index_censor"].fillna("") + _num(p["index_value"]) + " "
                  + p["index_unit"].fillna("") + " (" + _day(p["index_collected_at"]) + ") "
                  + band)
    ambiguous = p["censored_ambiguous"].to_numpy()
    discordant = p["discordant"].to_numpy()
    by_mma = (p["status_basis"] == "mma").to_numpy()
    has_mma = p["mma_umol_l"].notna().to_numpy()
    mma_text = ("R5 MMA " + p["mma_censor"].fillna("") + _num(p["mma_umol_l"]) + " µmol/L ("
                + _day(p["mma_at"]) + ") " + p["mma_sev"].map(_MMA_BAND).astype("str"))
    status_after = ARROW + p["b12_status"].astype("str")
    supp = "R8 supplementation needed (" + p["supplementation_reason"].fillna("") + ")"
    regimen = "R9 " + p["regimen_code"].fillna("") + " regimen"
    metformin = ("R10 on metformin, no B12 test in " + p["metformin_interval"].astype("str")
                 + " days (risk factors: " + p["metformin_risk"].astype("str") + ")")
    retest = ("R11 on B12 treatment since " + _day(p["b12_treatment_start"])
              + ", no B12 test since: retest due")
    urgent_why = join_present([
        _when(attrs["neurological_symptoms"].fillna(False), "neurological symptoms", ix),
        _when(attrs["pregnant"].fillna(False), "pregnant", ix),
        _when((pd.Timestamp(as_of) - p["index_collected_at"].dt.floor("D")).dt.days
              .gt(90).fillna(False), "deficient result over 90 days old", ix),
    ], ", ")
    urgent = "R12 urgent review (" + urgent_why + ")"
    chain = join_present([
        _when(has_index, index_text, ix),
        _when(has_index & ambiguous, "R3 censored result spans a cut-off: indeterminate", ix),
        _when(has_index & discordant, "R4 same-day total and active B12 disagree: more "
                                      "severe band used", ix),
        _when(has_index & has_mma, mma_text + pd.Series(np.where(by_mma, status_after.to_numpy(),
                                                                 ""), index=ix, dtype="str"),
              ix),
        _when(p["needs_mma"], "R7 MMA needed", ix),
        _when(p["needs_supplementation"], supp, ix),
        _when(p["regimen_code"].notna(), regimen, ix),
    ], ARROW)
    sentence = join_present([
        chain,
        _when(p["metformin_monitoring_due"], metformin, ix),
        _when(p["retest_due"], retest, ix),
        _when(p["urgent_review"], urgent, ix),
        _when(p["paediatric"], "R13 under 16: thresholds are for over-16s", ix),
    ], "; ")
    ids = join_present([
        _when(has_index & is_total, "R1", ix), _when(has_index & ~is_total, "R2", ix),
        _when(has_index & ambiguous, "R3", ix), _when(has_index, "R4", ix),
        _when(by_mma, "R5", ix), _when(p["needs_mma"], "R7", ix),
        _when(p["needs_supplementation"], "R8", ix), _when(p["regimen_code"].notna(), "R9", ix),
        _when(p["metformin_monitoring_due"], "R10", ix), _when(p["retest_due"], "R11", ix),
        _when(p["urgent_review"], "R12", ix), _when(p["paediatric"], "R13", ix),
    ], " ")
    return sentence, ids
