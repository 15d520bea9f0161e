"""Statistical disclosure control for every count that leaves the building.

Shareable outputs (``measures.*``, ``report.html``, ``trend.*``) are read by people who
must not be able to single out a patient, so every count goes through the same three steps
(the OpenSAFELY / NHS England convention, as in ehrql's ``disclosure_control``):

1. **Primary suppression**: a count between 1 and ``small_count`` is withheld (empty in data
   files with ``suppressed = True``, ``≤7`` in HTML, never 0). Zero is published: an empty
   cell identifies nobody.
2. **Rounding**: every other count is rounded to the nearest multiple of ``rounding``; ratios
   are recomputed from the rounded counts, so they cannot be used to undo the rounding.
3. **Secondary suppression**: where cells add up to a published total (practices within
   one measure and month, statuses within the cohort), a lone suppressed cell could be
   recovered by subtraction, so the next smallest non-zero cell is suppressed too.

A denominator that is suppressed takes its numerator and ratio with it. Everything here is
pure and vectorised; callers pass ``small_count`` and ``rounding`` from the rules profile's
``[disclosure]`` table.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

__all__ = [
    "ROUNDING_MULTIPLE",
    "SUPPRESSION_THRESHOLD",
    "format_count",
    "format_ratio",
    "primary_suppression",
    "round_counts",
    "secondary_suppression",
    "suppress_and_round",
    "suppress_counts",
]

SUPPRESSION_THRESHOLD = 7
ROUNDING_MULTIPLE = 5


def _check_parameters(small_count: int, rounding: int) -> None:
    if small_count < 0:
        raise ValueError(f"small_count must be >= 0, got {small_count}")
    if rounding < 1:
        raise ValueError(f"rounding must be >= 1, got {rounding}")


def _as_counts(values: pd.Series, name: str) -> np.ndarray:
    """Counts as int64; NA, negatives and fractions are bugs upstream, not data to publish."""
    if values.isna().any():
        raise ValueError(f"{name} has missing values; counts must be complete")
    array = values.to_numpy(dtype="float64")
    if (array < 0).any() or (array != np.floor(array)).any():
        raise ValueError(f"{name} must hold non-negative whole numbers")
    return array.astype("int64")


def round_counts(values: pd.Series, *, rounding: int = ROUNDING_MULTIPLE) -> pd.Series:
    """Round to the nearest multiple of ``rounding`` (halves up, so the result is stable)."""
    _check_parameters(0, rounding)
    counts = _as_counts(values, str(values.name or "counts"))
    rounded = (counts + rounding // 2) // rounding * rounding if rounding > 1 else counts
    return pd.Series(rounded, index=values.index, name=values.name, dtype="Int64")


def primary_suppression(
    values: pd.Series,
    *,
    small_count: int = SUPPRESSION_THRESHOLD,
    rounding: int = ROUNDING_MULTIPLE,
) -> pd.Series:
    """Cells holding 1..small_count, or a non-zero count that rounding would publish as 0."""
    _check_parameters(small_count, rounding)
    counts = _as_counts(values, str(values.name or "counts"))
    rounds_to_zero = (counts > 0) & ((counts + rounding // 2) // rounding == 0)
    small = (counts >= 1) & (counts <= small_count)
    return pd.Series(small | rounds_to_zero, index=values.index, name="suppressed")


def _group_keys(by: pd.DataFrame | pd.Series | None, index: pd.Index) -> pd.Series:
    """One integer label per group of cells that sum to a published total."""
    if by is None:
        return pd.Series(0, index=index, dtype="int64")
    frame = by.to_frame() if isinstance(by, pd.Series) else by
    if len(frame.columns) == 0:
        return pd.Series(0, index=index, dtype="int64")
    codes = frame.groupby(list(frame.columns), sort=False, dropna=False, observed=True).ngroup()
    return pd.Series(codes.to_numpy(), index=index, dtype="int64")


def secondary_suppression(
    values: pd.Series, suppressed: pd.Series, *, by: pd.DataFrame | pd.Series | None = None
) -> pd.Series:
    """Suppress the next smallest non-zero cell in each group with exactly one suppressed cell.

    ``by`` holds the columns that identify a set of cells summing to a published total
    (``None``: the whole series is one such set). Ties go to the first cell in input order, so
    the same input always suppresses the same cells. A group whose other cells are all zero
    needs nothing more: its total equals the suppressed cell and is suppressed with it.
    """
    counts = _as_counts(values, str(values.name or "counts"))
    mask = suppressed.to_numpy(dtype=bool).copy()
    keys = _group_keys(by, values.index).to_numpy()
    frame = pd.DataFrame(
        {"key": keys, "value": counts, "suppressed": mask, "order": np.arange(len(counts))}
    )
    n_suppressed = frame.groupby("key", sort=False)["suppressed"].transform("sum").to_numpy()
    candidates = frame[(n_suppressed == 1) & ~frame["suppressed"] & (frame["value"] > 0)]
    chosen = (
        candidates.sort_values(["key", "value", "order"], kind="mergesort")
        .groupby("key", sort=False)
        .head(1)["order"]
        .to_numpy()
    )
    mask[chosen] = True
    return pd.Series(mask, index=values.index, name="suppressed")


def suppress_counts(
    values: pd.Series,
    *,
    by: pd.DataFrame | pd.Series | None = None,
    secondary: bool = True,
    small_count: int = SUPPRESSION_THRESHOLD,
    rounding: int = ROUNDING_MULTIPLE,
) -> pd.DataFrame:
    """One column of counts made publishable: columns ``count`` (Int64, NA if suppressed)
    and ``suppressed`` (bool), on the input's index.

    Set ``secondary=False`` only for cells that do not add up to any published total.
    """
    suppressed = primary_suppression(values, small_count=small_count, rounding=rounding)
    if secondary:
        suppressed = secondary_suppression(values, suppressed, by=by)
    rounded = round_counts(values, rounding=rounding).mask(suppressed)
    return pd.DataFrame({"count": rounded, "suppressed": suppressed}, index=values.index)


def suppress_and_round(
    counts: pd.DataFrame,
    *,
    numerator: str = "numerator",
    denominator: str = "denominator",
    ratio: str = "ratio",
    cells_of: Sequence[str] = (),
    small_count: int = SUPPRESSION_THRESHOLD,
    rounding: int = ROUNDING_MULTIPLE,
) -> pd.DataFrame:
    """A numerator/denominator table made publishable.

    Returns a copy with ``numerator`` and ``denominator`` as rounded Int64 (NA where
    suppressed), ``ratio`` recomputed from the rounded counts (Float64, NA where suppressed or
    the denominator is 0) and a bool ``suppressed`` column (True when anything in the row was
    withheld). ``cells_of`` names the columns whose values identify cells that sum to one
    published total (e.g. ``["measure", "month", "group_by"]``: all practices of one measure
    and month add up to its overall row); secondary suppression runs within those groups,
    first on denominators, then on numerators.
    """
    missing = [c for c in (numerator, denominator, *cells_of) if c not in counts.columns]
    if missing:
        raise KeyError(f"counts table lacks column(s): {', '.join(missing)}")
    num = counts[numerator]
    den = counts[denominator]
    if (_as_counts(num, numerator) > _as_counts(den, denominator)).any():
        raise ValueError(f"{numerator} exceeds {denominator} in some rows")
    by = counts[list(cells_of)] if cells_of else None

    den_sup = primary_suppression(den, small_count=small_count, rounding=rounding)
    den_sup = secondary_suppression(den, den_sup, by=by)
    num_sup = primary_suppression(num, small_count=small_count, rounding=rounding) | den_sup
    num_sup = secondary_suppression(num, num_sup, by=by)

    out = counts.copy()
    out[numerator] = round_counts(num, rounding=rounding).mask(num_sup)
    out[denominator] = round_counts(den, rounding=rounding).mask(den_sup)
    published_den = out[denominator].astype("Float64")
    published_den = published_den.mask(published_den.eq(0).fillna(False))
    out[ratio] = (out[numerator].astype("Float64") / published_den).astype("Float64")
    out["suppressed"] = (num_sup | den_sup).astype(bool)
    return out


def format_count(value: object, *, small_count: int = SUPPRESSION_THRESHOLD) -> str:
    """HTML text for a published count: NA (suppressed) reads ``≤7``, never 0."""
    if pd.isna(value):
        return f"≤{small_count}"
    return f"{int(value):,}"


def format_ratio(value: object, *, digits: int = 1) -> str:
    """A ratio as a percentage; NA (suppressed or empty denominator) reads as a dash."""
    if pd.isna(value):
        return "–"
    return f"{100 * float(value):.{digits}f}%"
