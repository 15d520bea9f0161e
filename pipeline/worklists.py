"""The five worklists a lab manager acts on: one row per patient per list.

Rows are grouped by practice, urgent first, then oldest result first, then patient id so
the order is stable. "Result" is the index test, or for patients without one in the
look-back window (everyone on the metformin list) their last total/active B12 test, so the
longest-unmonitored come first; patients never tested come last in their practice.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

#: list name -> (patients column that puts a patient on it, what to do)
LISTS: dict[str, tuple[str, str]] = {
    "urgent": ("urgent_review", "Urgent clinical review of B12 deficiency; treat if not treated"),
    "mma": ("needs_mma", "Add on or request serum methylmalonic acid (MMA)"),
    "supplementation": ("needs_supplementation", "Start B12 supplementation: see regimen"),
    "metformin_monitoring": ("metformin_monitoring_due",
                             "Request serum B12 (on metformin, none in the last year)"),
    "retest": ("retest_due", "Request serum B12 (3-month check after starting treatment)"),
}
WORKLIST_COLUMNS = (
    "practice_id", "patient_id", "age_years", "urgent_review", "b12_status", "index_test",
    "index_value", "index_unit", "index_censor", "index_date", "last_b12_test_date",
    "suggested_action", "suggested_regimen", "metformin_risk", "note", "reasons",
)
PAEDIATRIC_NOTE = "Under 16: thresholds are for over-16s; specialist review"


def build_worklists(patients: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Select, annotate and sort each list from the classified patients."""
    base = patients.assign(
        index_date=patients["index_collected_at"].dt.floor("D"),
        last_b12_test_date=patients["last_b12_test_at"].dt.floor("D"),
        result_at=patients["index_collected_at"].fillna(patients["last_b12_test_at"]),
        note=pd.Series(np.where(patients["paediatric"], PAEDIATRIC_NOTE, ""),
                       index=patients.index, dtype="str"),
    )
    base = base.sort_values(["practice_id", "urgent_review", "result_at", "patient_id"],
                            ascending=[True, False, True, True], na_position="last",
                            kind="stable")
    lists = {}
    for name, (flag, action) in LISTS.items():
        rows = base[base[flag]].copy()
        rows["suggested_action"] = action
        lists[name] = rows[list(WORKLIST_COLUMNS)].reset_index(drop=True)
    return lists
