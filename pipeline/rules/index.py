"""R4-R7: the index test, MMA resolution, the patient's status and the need for an MMA.

All functions take one row per accepted result with an integer ``pid`` (patients factorised
once) and return one row per patient, indexed ``0..n_patients-1``.
"""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd

from pipeline.config import ANALYTES
from pipeline.ingest.harmonise import labels, lookup
from pipeline.kernels.sort import stable_order
from pipeline.rules.bands import DEFICIENT, INDETERMINATE, UNLIKELY

B12_ANALYTES = ("b12_total", "b12_active")
STATUSES = ("deficient", "indeterminate", "unlikely", "not_tested")
#: R4 tie-break "lower value wins": at equal numbers '<150' is lower than '150'.
CENSOR_RANK = {"<": 0, "<=": 1, "": 2, ">=": 3, ">": 4}


def times(values: pd.Series) -> np.ndarray:
    """Datetimes as int64 microseconds, to sort on with numpy."""
    return values.to_numpy(dtype="datetime64[us]").view("int64")


def _segments(group: np.ndarray) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """(row order that makes ``group`` ascending, or None when it already is; the group of
    each segment; segment starts).

    The classification sorts its rows by patient once, so usually no sort runs here;
    otherwise one stable sort.
    """
    group = np.asarray(group)
    order = None
    if len(group) > 1 and not (group[1:] >= group[:-1]).all():
        order = stable_order(group)
        group = group[order]
    starts = np.flatnonzero(np.concatenate([[True], group[1:] != group[:-1]])) if len(group) \
        else np.zeros(0, dtype=np.intp)
    return order, group[starts], starts


def first_positions(group: np.ndarray, criteria: tuple[np.ndarray, ...]) -> np.ndarray:
    """Position of the best row of each group: smallest first criterion, ties broken by the
    next, remaining ties by position (negate a criterion to prefer the largest).

    Segment minima (``np.minimum.reduceat``) over rows ordered by group: far cheaper than
    a sort on every key.
    """
    n = len(group)
    if n == 0:
        return np.zeros(0, dtype=np.intp)
    order, _, starts = _segments(group)
    lengths = np.diff(np.append(starts, n))
    alive = None
    for criterion in criteria:
        value = np.asarray(criterion)
        value = value if order is None else value[order]
        if alive is not None:
            value = np.where(alive, value, np.inf if value.dtype.kind == "f"
                             else np.iinfo(value.dtype).max)
        best = np.repeat(np.minimum.reduceat(value, starts), lengths)
        alive = value == best if alive is None else alive & (value == best)
    position = np.where(alive, np.arange(n), n)
    first = np.minimum.reduceat(position, starts)
    return first if order is None else order[first]


def first_per_group(rows: pd.DataFrame, group: np.ndarray,
                    criteria: tuple[np.ndarray, ...]) -> pd.DataFrame:
    """The rows chosen by :func:`first_positions`."""
    return rows.iloc[first_positions(group, criteria)]


def group_max(group: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(each group, the largest of its values) by segment maxima."""
    order, groups, starts = _segments(group)
    values = np.asarray(values)
    if not len(starts):
        return groups, values[:0]
    return groups, np.maximum.reduceat(values if order is None else values[order], starts)


def _rank(censor: pd.Series) -> np.ndarray:
    if isinstance(censor.dtype, pd.CategoricalDtype):  # rank the categories, take by code
        ranks = np.array([CENSOR_RANK.get(c, 2) for c in censor.cat.categories] + [2])
        return ranks[censor.cat.codes.to_numpy()].astype("int8")
    return lookup(censor, CENSOR_RANK, "int8").to_numpy()


_DAY_US = 86_400_000_000
_NAT = np.iinfo(np.int64).min


def days(values: pd.Series) -> np.ndarray:
    """Calendar dates as int64 microseconds at midnight (NaT stays NaT's integer)."""
    t = times(values)
    return np.where(t == _NAT, _NAT, t - t % _DAY_US)


def _day_of(as_of: date) -> int:
    """The as-of date in the units of :func:`days`."""
    return int(times(pd.Series([pd.Timestamp(as_of)]))[0])


def _window(day: np.ndarray, as_of: date, lookback_days: int) -> np.ndarray:
    """Collected on a date in ``(as_of - lookback_days, as_of]``."""
    end = _day_of(as_of)
    return (day > end - lookback_days * _DAY_US) & (day <= end)


def _analytes(res: pd.DataFrame) -> np.ndarray:
    return np.asarray(pd.Categorical(res["analyte"], categories=ANALYTES).codes)


def latest_per_analyte(res: pd.DataFrame, as_of: date, lookback_days: int,
                       among: np.ndarray | None = None) -> pd.DataFrame:
    """Latest result of each analyte per patient in the window (same time: lower wins),
    among the rows where ``among`` holds (all rows by default). Works on positions: only
    the chosen rows are taken from ``res``."""
    keep = _window(days(res["collected_at"]), as_of, lookback_days)
    sel = np.flatnonzero(keep if among is None else keep & among)
    group = res["pid"].to_numpy(dtype="int64")[sel] * len(ANALYTES) + _analytes(res)[sel]
    chosen = first_positions(group, (-times(res["collected_at"])[sel],
                                     res["value"].to_numpy()[sel], _rank(res["censor"])[sel]))
    return res.iloc[sel[chosen]]


def spread(frame: pd.DataFrame, n: int) -> pd.DataFrame:
    """``frame`` (indexed by patient position, at most one row each) as one row per
    position 0..n-1, missing where a patient has none: ``reindex`` by a scatter of row
    positions rather than a hash lookup of every patient."""
    at = np.full(n, len(frame), dtype=np.int64)
    at[frame.index.to_numpy(dtype=np.int64)] = np.arange(len(frame))
    rows = frame.reset_index(drop=True)
    if (at == len(frame)).any():  # one missing row to point at, as reindex would add
        rows = rows.reindex(pd.RangeIndex(len(frame) + 1))
    out = rows.take(at)
    out.index = pd.RangeIndex(n)
    return out


def select_index(res: pd.DataFrame, as_of: date, lookback_days: int, n: int) -> pd.DataFrame:
    """R4: the index test per patient, with ``discordant`` for same-day disagreement.

    The index day is the latest day with a total or active B12 in the window. On that day
    each analyte's latest result counts (same time: the lower value); if total and active
    then disagree the more severe band wins. Equal bands: the later time, then total B12.

    Decisions where the SPEC is silent: "same day" is the calendar day, so a total at 08:00
    and an active at 16:30 are compared (one blood-taking episode, often split by the lab);
    two results of one analyte on one day at different times are a repeat, and the later
    one is "most recent". The window is by collection date, so a result late on the as-of
    date counts and one on ``as_of - lookback_days`` does not.
    """
    day = days(res["collected_at"])
    sel = np.flatnonzero(np.isin(_analytes(res), (0, 1)) & _window(day, as_of, lookback_days))
    pid = res["pid"].to_numpy()[sel]
    groups, latest_day = group_max(pid, day[sel])
    on_day = np.zeros(len(res), dtype=bool)
    on_day[sel[day[sel] == latest_day[np.searchsorted(groups, pid)]]] = True
    picks = latest_per_analyte(res, as_of, lookback_days, among=on_day)
    pick_pid = picks["pid"].to_numpy()
    sev = picks["sev"].to_numpy(dtype="int64")
    order, with_pick, starts = _segments(pick_pid)
    discordant = np.zeros(n, dtype=bool)
    if len(starts):
        ordered = sev if order is None else sev[order]
        differ = np.maximum.reduceat(ordered, starts) != np.minimum.reduceat(ordered, starts)
        discordant[with_pick[differ]] = True
    total_later = (_analytes(picks) != 0).astype("int8")
    index = first_per_group(picks, pick_pid, (-sev, -times(picks["collected_at"]),
                                              total_later)).set_index("pid")
    kept = ["analyte", "value", "collected_at", "censor", "sev", "ambiguous"]
    out = spread(index[kept + (["row"] if "row" in index.columns else [])], n)
    out["discordant"] = discordant
    out["ambiguous"] = out["ambiguous"].fillna(False).astype(bool)
    return out


def select_mma(res: pd.DataFrame, index_at: pd.Series, as_of: date) -> pd.DataFrame:
    """R5: the MMA that may resolve the index test: on/after the index date, up to as-of.

    Several: the latest date wins; on the same day, the highest value (at equal numbers a
    '>' result is higher). "On/after the index date" is by calendar day, so an MMA drawn
    earlier on the index day counts (add-on MMAs usually share the B12 sample). The latest
    MMA is chosen before it is read, so a latest MMA straddling the limit resolves nothing
    even if an earlier one was clear: the most recent evidence is inconclusive.
    """
    sel = np.flatnonzero(_analytes(res) == 2)
    pid = res["pid"].to_numpy()[sel]
    index_day = days(index_at)[pid]  # index_at is positional: one row per patient
    day = days(res["collected_at"])[sel]
    keep = (index_day != _NAT) & (day >= index_day) & (day <= _day_of(as_of))
    sel, day = sel[keep], day[keep]
    chosen = first_positions(res["pid"].to_numpy()[sel],
                             (-day, -res["value"].to_numpy()[sel],
                              -_rank(res["censor"])[sel].astype("int64")))
    picked = res.iloc[sel[chosen]].set_index("pid")
    return spread(picked[["value", "collected_at", "censor", "sev", "ambiguous"]],
                  len(index_at))


def resolve_status(index_sev: pd.Series, mma_sev: pd.Series) -> tuple[pd.Series, pd.Series]:
    """R5 + R6: (b12_status, status_basis-is-mma).

    An indeterminate index test is resolved by a raised MMA (deficient) or a normal one
    (unlikely); an MMA whose censored interval straddles the limit resolves nothing. MMA
    never overrules a deficient or unlikely index test. No index test: ``not_tested``.
    A censored-ambiguous index test (R3) is indeterminate and so may be resolved too; its
    ``censored_ambiguous`` flag still describes the index result.
    """
    sev = index_sev.to_numpy(dtype="float64", na_value=np.nan)
    msev = mma_sev.to_numpy(dtype="float64", na_value=np.nan)
    resolvable = sev == INDETERMINATE
    by_mma = resolvable & ((msev == 2) | (msev == 0))
    final = np.where(by_mma & (msev == 2), DEFICIENT,
                     np.where(by_mma & (msev == 0), UNLIKELY, sev))
    code = np.select([final == DEFICIENT, final == INDETERMINATE, final == UNLIKELY], [0, 1, 2],
                     3)
    return labels(code, STATUSES, index_sev.index), pd.Series(by_mma, index=index_sev.index)


def needs_mma(status: pd.Series) -> pd.Series:
    """R7: an MMA is needed when the status is still indeterminate."""
    return status == "indeterminate"
