"""Why a row was rejected: the reason codes of each input (a public interface), and how
many rejected rows carry each code.

Kept apart from ``validate`` (which loads pandera) so that the writers count reasons for
``summary.json`` without loading it.
"""

from __future__ import annotations

from collections import Counter

import pandas as pd

#: Reason codes in the order they are listed on a rejected row (public interface).
LAB_REASONS = ("malformed_row", "oversized_field", "missing_patient_id", "missing_test_code",
               "bad_date", "future_date", "missing_result", "non_numeric_result", "negative_result",
               "bad_censor", "unknown_unit", "implausible_value")
PATIENT_REASONS = ("malformed_row", "oversized_field", "missing_patient_id", "bad_date",
                   "future_date", "bad_age", "bad_yes_no", "bad_diet", "bad_number",
                   "conflicting_patient_rows")
MEDICATION_REASONS = ("malformed_row", "oversized_field", "missing_patient_id",
                      "missing_medication", "bad_date", "end_before_start", "bad_number")


def per_reason(reasons: pd.Series) -> Counter[str]:
    """Rejected rows per reason code, from each row's ``;``-joined codes (a row with several
    reasons counts under each). Counted over the few distinct combinations, not per row."""
    counts: Counter[str] = Counter()
    for combo, n in reasons.astype("str").value_counts().items():
        for code in str(combo).split(";"):
            counts[code] += int(n)
    return counts
