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
    "PRIMARY",
    "SECONDARY",
    "format_count",
    "format_ratio",
    "largest_small_count",
    "narrowed",
    "primary_suppression",
    "propagate_bounds",
    "protect",
    "reader_bounds",
    "round_counts",
    "secondary_suppression",
    "suppress_and_round",
    "suppress_counts",
]

SUPPRESSION_THRESHOLD = 7
ROUNDING_MULTIPLE = 5
#: Values of the ``suppression`` column: why a cell is withheld ('' when it is published).
PRIMARY = "primary"
SECONDARY = "secondary"


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


def format_count(
    value: object, *, small_count: int = SUPPRESSION_THRESHOLD, suppression: str = ""
) -> str:
    """HTML text for a published count: NA reads ``≤7`` (primary) or ``[c]`` (secondary:
    hidden only to protect another cell, so it may be large), never 0."""
    if suppression == SECONDARY:
        return "[c]"
    if pd.isna(value):
        return f"≤{small_count}"
    return f"{int(value):,}"


def format_ratio(value: object, *, digits: int = 1) -> str:
    """A ratio as a percentage; NA (suppressed or empty denominator) reads as a dash."""
    if pd.isna(value):
        return "–"
    return f"{100 * float(value):.{digits}f}%"


# --------------------------------------------------------------------------- published tables
#
# ``protect`` decides suppression once for a whole set of published cells that are tied by
# additive relations (a total equals the sum of its parts; a count shown in two tables is
# one relation ``a = b``). It applies the classic rule (a lone hidden cell in a relation
# takes the next smallest with it) and then audits what a reader could work out: every
# relation is solved for bounds on each cell, from the published (rounded) values and what
# the markers say (``≤7``: 1..small_count; ``[c]``: more than that), repeated over all
# relations until nothing changes. While a hidden cell is still pinned down more tightly than
# "somewhere in 1..small_count", the next smallest published cell of its relations is hidden
# too. Loops run over rounds and relations' members as arrays, never per row.


def largest_small_count(small_count: int, rounding: int) -> int:
    """The largest count primary suppression hides: ``small_count``, or more where rounding
    would publish a real count as 0."""
    return max(small_count, (rounding - 1) // 2)


def reader_bounds(
    published: pd.Series,
    suppression: pd.Series,
    *,
    small_count: int = SUPPRESSION_THRESHOLD,
    rounding: int = ROUNDING_MULTIPLE,
    floor_zero: pd.Series | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """What a reader knows of each cell before combining tables: [lo, hi] (float, hi may be
    inf). A published ``p`` > 0 is ``p - r//2 .. p - r//2 + r - 1`` (never a small count), 0 is
    exactly 0, primary is 1..small, secondary is above small unless ``floor_zero`` (a
    numerator hidden with its denominator: it may be anything from 0)."""
    small = largest_small_count(small_count, rounding)
    value = published.astype("Float64").to_numpy(dtype=float, na_value=np.nan)
    kind = suppression.astype("string").fillna("").to_numpy(dtype=object)
    shown = ~np.isnan(value)
    lo = np.where(shown & (value > 0), np.maximum(value - rounding // 2, small + 1), value)
    hi = np.where(shown & (value > 0), value - rounding // 2 + rounding - 1, value)
    lo = np.where(kind == PRIMARY, 1.0, np.where(kind == SECONDARY, small + 1.0, lo))
    hi = np.where(kind == PRIMARY, float(small), np.where(kind == SECONDARY, np.inf, hi))
    unknown = ~shown & (kind != PRIMARY) & (kind != SECONDARY)
    if floor_zero is not None:
        unknown |= floor_zero.to_numpy(dtype=bool) & (kind == SECONDARY)
    lo = np.where(unknown, 0.0, lo)
    hi = np.where(unknown, np.inf, hi)
    return lo.astype(float), hi.astype(float)


def _others(term: np.ndarray, rel: np.ndarray, n_rel: int, infinite_sign: float) -> np.ndarray:
    """For each member, the sum of its relation's other members' terms (inf-aware)."""
    finite = np.isfinite(term)
    total = np.bincount(rel, weights=np.where(finite, term, 0.0), minlength=n_rel)
    n_inf = np.bincount(rel, weights=~finite, minlength=n_rel)
    others = total[rel] - np.where(finite, term, 0.0)
    return np.where(n_inf[rel] - ~finite > 0, infinite_sign * np.inf, others)


def propagate_bounds(
    lo: np.ndarray, hi: np.ndarray, rel: np.ndarray, cell: np.ndarray, sign: np.ndarray,
    *, rounds: int = 200,
) -> tuple[np.ndarray, np.ndarray]:
    """Tighten each cell's [lo, hi] with every relation ``sum(sign * cell) = 0`` (parts +1,
    total -1) until nothing changes: the most a reader can learn by combining the tables."""
    lo, hi = lo.astype(float).copy(), hi.astype(float).copy()
    if len(rel) == 0:
        return lo, hi
    n_rel = int(rel.max()) + 1
    for _ in range(rounds):  # bounded fixed-point iteration over all relations at once
        tmin = np.where(sign > 0, lo[cell], -hi[cell])
        tmax = np.where(sign > 0, hi[cell], -lo[cell])
        smin = _others(tmin, rel, n_rel, -1.0)
        smax = _others(tmax, rel, n_rel, 1.0)
        new_lo = np.where(sign > 0, -smax, smin)
        new_hi = np.where(sign > 0, -smin, smax)
        next_lo, next_hi = lo.copy(), hi.copy()
        np.maximum.at(next_lo, cell, np.nan_to_num(new_lo, nan=-np.inf))
        np.minimum.at(next_hi, cell, np.nan_to_num(new_hi, nan=np.inf))
        next_lo = np.maximum(next_lo, 0.0)
        if np.array_equal(next_lo, lo) and np.array_equal(next_hi, hi):
            break
        lo, hi = next_lo, next_hi
    return lo, hi


def narrowed(
    lo: np.ndarray, hi: np.ndarray, hidden: np.ndarray, rel: np.ndarray, member: np.ndarray,
    sign: np.ndarray, *, small: int,
) -> np.ndarray:
    """Hidden cells that a reader of the published cells pins down more tightly than the
    hidden cells' markers alone allow (``[lo, hi]``: what each cell's own text says).

    Hidden cells constrain each other whatever is published (a total and its two parts all
    ``≤7``: the total is at least 2), so the yardstick is the same propagation with every
    published cell unknown. A withheld cell leaks when the published cells narrow its
    interval below that yardstick and below ``small`` wide (a primary cell: anywhere inside
    1..small; a secondary cell: narrower than small - 1)."""
    got_lo, got_hi = propagate_bounds(lo, hi, rel, member, sign)
    base_lo, base_hi = propagate_bounds(np.where(hidden, lo, 0.0), np.where(hidden, hi, np.inf),
                                        rel, member, sign)
    tighter = (got_lo > base_lo) | (got_hi < base_hi)
    too_narrow = (got_hi - got_lo) < small - 1
    primary_like = (lo >= 1.0) & (hi <= small)
    inside = primary_like & ((got_lo > 1.0) | (got_hi < small))
    return hidden & tighter & np.where(primary_like, inside, too_narrow)


def protect(
    values: pd.Series,
    relations: pd.DataFrame,
    *,
    ties: pd.DataFrame | None = None,
    unpublished: pd.Series | None = None,
    small_count: int = SUPPRESSION_THRESHOLD,
    rounding: int = ROUNDING_MULTIPLE,
) -> pd.DataFrame:
    """One suppression decision for a set of cells tied by additive relations.

    ``values``: exact counts indexed by cell key. ``relations``: columns ``relation``,
    ``cell`` and ``role`` (``total`` or ``part``): each relation's parts add up to its total
    (a relation with one part says two cells are equal). ``ties``: columns ``cell`` and
    ``follows``: ``cell`` is hidden whenever ``follows`` is (a numerator with its
    denominator). ``unpublished``: cells that take part in relations but are never shown
    (an overlap, say). Returns, on ``values``' index: ``count`` (rounded, NA when hidden),
    ``suppressed`` and ``suppression`` (``''``, ``primary``, ``secondary``).
    """
    keys = values.index
    counts = _as_counts(values, str(values.name or "counts"))
    small = largest_small_count(small_count, rounding)
    never = np.zeros(len(keys), bool) if unpublished is None else (
        unpublished.reindex(keys, fill_value=False).to_numpy(dtype=bool))
    primary = primary_suppression(values, small_count=small_count, rounding=rounding)
    primary = primary.to_numpy(dtype=bool) & ~never
    hidden = primary.copy()
    rel = pd.factorize(relations["relation"])[0] if len(relations) else np.zeros(0, "int64")
    member = keys.get_indexer(relations["cell"]) if len(relations) else np.zeros(0, "int64")
    if (member < 0).any():
        raise KeyError("a relation names a cell that has no value")
    sign = np.where(relations["role"].to_numpy() == "total", -1.0, 1.0) if len(relations) \
        else np.zeros(0)
    tied = np.zeros((2, 0), "int64") if ties is None or ties.empty else np.vstack(
        [keys.get_indexer(ties["cell"]), keys.get_indexer(ties["follows"])])
    rounded = (counts + rounding // 2) // rounding * rounding if rounding > 1 else counts
    order = np.arange(len(keys))

    def tie(mask: np.ndarray) -> np.ndarray:
        if tied.shape[1]:
            mask[tied[0][mask[tied[1]]]] = True
        return mask

    def choose(at_risk: np.ndarray) -> np.ndarray:
        """Per relation at risk: its smallest published non-zero part (the total last)."""
        free = at_risk[rel] & ~hidden[member] & (counts[member] > 0) & ~never[member]
        pick = pd.DataFrame({"rel": rel[free], "total": sign[free] < 0,
                             "value": counts[member[free]], "order": order[member[free]]})
        pick = pick.sort_values(["rel", "total", "value", "order"], kind="mergesort")
        return pick.groupby("rel", sort=False).head(1)["order"].to_numpy()

    n_rel = int(rel.max()) + 1 if len(rel) else 0
    hidden = tie(hidden)
    # classic rule first: no relation may hold exactly one hidden published cell
    for _ in range(len(keys) + 1):
        lone = np.bincount(rel, weights=hidden[member], minlength=n_rel) == 1
        chosen = choose(lone)
        if not len(chosen):
            break
        hidden[chosen] = True
        hidden = tie(hidden)
    floor_zero = pd.Series(np.isin(order, tied[0]) & ~primary)
    # then the audit: what could a reader of every shareable file work out?
    for _ in range(len(keys) + 1):
        kind = np.where(hidden & primary, PRIMARY, np.where(hidden, SECONDARY, ""))
        kind = np.where(never, "", kind)
        shown = pd.Series(rounded, dtype="Float64").mask(hidden | never)
        lo, hi = reader_bounds(shown, pd.Series(kind), small_count=small_count,
                               rounding=rounding, floor_zero=floor_zero)
        leaks = narrowed(lo, hi, hidden, rel, member, sign, small=small) & (counts > 0)
        if not leaks.any():
            break
        at_risk = np.bincount(rel, weights=leaks[member], minlength=n_rel) > 0
        chosen = choose(at_risk)
        if not len(chosen):  # every cell of those relations is hidden: widen to neighbours
            near = np.zeros(len(keys), bool)
            near[member[at_risk[rel]]] = True
            chosen = choose(np.bincount(rel, weights=near[member], minlength=n_rel) > 0)
        if not len(chosen):
            break
        hidden[chosen] = True
        hidden = tie(hidden)
    kind = np.where(hidden & primary, PRIMARY, np.where(hidden, SECONDARY, ""))
    return pd.DataFrame({
        "count": pd.Series(rounded, index=keys, dtype="Int64").mask(hidden),
        "suppressed": pd.Series(hidden, index=keys, dtype=bool),
        "suppression": pd.Series(kind, index=keys, dtype="string"),
    }, index=keys)
