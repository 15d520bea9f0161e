"""The ``reasons`` sentence and ``rule_ids`` for each patient, built column-wise.

A worklist reader sees why a patient is listed, e.g.
``R1 total B12 262 ng/L (2026-10-03) indeterminate → R7 MMA needed``. Sentences contain
values and dates, so they belong in patient-level outputs only (never in logs).

How, and why: string work per row and per clause dominated classification (first pandas
string arithmetic, then one Arrow kernel pass per clause, separator and word list), yet
almost every part of a sentence takes few distinct values. So:

* A sentence is *values* (index result and date, same-day results, MMA result and date,
  the R10 and R11 dates), each followed by *glue*: everything else, i.e. rule prefixes,
  censors, units, bands, separators, the R8/R10/R12 word lists and R9's regimen text
  (a rules-profile value, so one per branch), plus the opening glue
  before the first value. The glue depends only on a row's *shape* (which clauses apply,
  and a few categorical codes), and rows share a few shapes.
* Values are formatted once per distinct value with the same Arrow casts as always
  (``_num``, ``_day``, ...), and only on the rows whose clause can show them. A clause
  missing one of its values is left out, as before (a missing part made it null).
* Glue is rendered in plain Python once per distinct shape (``_glue`` reads the shape
  only, so rows of one shape share it); a value and the glue after it are then paired
  once per distinct combination, so most sentences are two pieces.
* One Arrow ``take`` lists every row's pieces in order from the small table of distinct
  pieces: its data buffer already *is* the sentences, so only the row offsets are
  computed (numpy). Rows with no clause are ''.
* ``rule_ids`` is a bitmask of the fired rules, each mask rendered once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.rules.actions import (
    METFORMIN_RISK_FACTORS,
    REGIMENS,
    SUPPLEMENTATION_REASONS,
    URGENT_LIMBS,
)

ARROW = " → "
_B12_BAND = ("unlikely", "indeterminate", "deficient")
_MMA_BAND = ("normal", "straddles the limit", "raised")
_RULES = ("R1", "R2", "R3", "R4", "R5", "R7", "R8", "R9", "R10", "R11", "R12", "R13")
_VALUE_SLOTS = 9  # index value and date, same-day total and active, MMA value and date,
#                   last B12 test (R10), treatment start and check day (R11)
_DAY_US = 86_400_000_000
_DENSE = 1 << 20  # key ranges up to this are looked up in a table, larger ones hashed
_NAT = np.iinfo(np.int64).min


def _mask(values: pd.Series | np.ndarray) -> np.ndarray:
    return np.asarray(pd.Series(values).fillna(False), dtype=bool)


# Value formatters (value by value, so applying them to distinct values only is the same).

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


def _lookup(words: tuple[str, ...]) -> Callable[[pd.Series], pa.Array]:
    """A formatter of integer codes (possibly missing) to words."""
    def lookup(codes: pd.Series) -> pa.Array:
        idx = pa.array(codes.astype("float64").to_numpy(), pa.float64(), from_pandas=True)
        return pc.take(pa.array(words, pa.string()), idx.cast(pa.int64()))
    return lookup


@dataclass
class _Distinct:
    """Texts per row, as codes into distinct texts (a null text: nothing to show)."""

    codes: np.ndarray
    texts: pa.Array

    @property
    def valid(self) -> np.ndarray:
        """Rows with a text."""
        return np.asarray(self.texts.is_valid(), dtype=bool)[self.codes]

    @property
    def words(self) -> list[str | None]:
        return self.texts.to_pylist()


def _distinct(values: pd.Series, fmt: Callable[[pd.Series], pa.Array],
              rows: np.ndarray) -> _Distinct:
    """``fmt`` of each row's value, formatting each distinct value once; null off ``rows``."""
    if fmt is _day:
        # Timestamps to days (floor, as Arrow's date32 cast does): a dense range of days.
        stamps = values.astype("datetime64[us]").to_numpy().view("int64")[rows]
        missing = stamps == _NAT
        days = np.floor_divide(stamps, _DAY_US)
        seen = days[~missing]
        low, high = (int(seen.min()), int(seen.max())) if len(seen) else (0, -1)
        if high - low < _DENSE:
            codes = np.where(missing, high - low + 1, days - low)
            uniques = np.append(np.arange(low, high + 1, dtype="int64") * _DAY_US, _NAT)
        else:
            codes, uniques = pd.factorize(np.where(missing, _NAT, days * _DAY_US))
        texts = _day(pd.Series(uniques.view("datetime64[us]")))
    elif fmt is _text:
        codes, uniques = pd.factorize(values.array[rows], use_na_sentinel=False)
        texts = _text(pd.Series(uniques, dtype=values.dtype))
    else:  # numbers, by bit pattern: -0.0 ('-0') stays apart from 0.0 ('0')
        bits = values.astype("float64").to_numpy().view("int64")[rows]
        codes, uniques = pd.factorize(bits)
        texts = fmt(pd.Series(uniques.view("float64")))
    out = np.zeros(len(values), dtype="int32")
    out[rows] = codes + 1
    return _Distinct(out, pa.concat_arrays([pa.nulls(1, pa.string()), texts]))


def _pair(first: _Distinct, second: _Distinct, rows: np.ndarray) -> _Distinct:
    """``first + second`` on ``rows``, formed once per distinct combination."""
    where = np.flatnonzero(rows)
    width = len(second.texts)
    key = first.codes[where].astype("int64") * width + second.codes[where]
    size = len(first.texts) * width
    if size <= _DENSE:
        used = np.zeros(size, dtype=bool)
        used[key] = True
        uniques = np.flatnonzero(used)
        codes = (np.cumsum(used) - 1)[key]
    else:
        codes, uniques = pd.factorize(key)
    out = np.zeros(len(rows), dtype="int32")
    out[where] = codes
    return _Distinct(out, pc.binary_join_element_wise(
        first.texts.take(uniques // width), second.texts.take(uniques % width), ""))


def _bits(flags: list[np.ndarray]) -> np.ndarray:
    """Boolean columns as a bitmask (bit ``i``: ``flags[i]``)."""
    dtype = np.uint16 if len(flags) <= 16 else np.int64
    out = np.zeros(len(flags[0]), dtype=dtype)
    for i, flag in enumerate(flags):
        out |= flag.astype(dtype) << dtype(i)
    return out


def _shapes(components: dict[str, np.ndarray]) -> tuple[np.ndarray, list[dict[str, int]]]:
    """Codes of the distinct combinations of the components (small non-negative ints)."""
    n = len(next(iter(components.values())))
    key = np.zeros(n, dtype="int64")
    size = 1
    for codes in components.values():
        radix = int(codes.max()) + 1 if n else 1
        if size * radix >= 1 << 62:
            key, uniques = pd.factorize(key)
            key, size = key.astype("int64"), len(uniques)
        key *= radix
        key += codes
        size *= radix
    shape, uniques = pd.factorize(key)
    first = np.empty(len(uniques), dtype=np.intp)
    first[shape] = np.arange(n)  # any row of each shape: they all agree on the components
    picked = {name: codes[first].tolist() for name, codes in components.items()}
    return shape, [dict(zip(picked, row, strict=True))
                   for row in zip(*picked.values(), strict=True)]


class _Pieces:
    """The glue of one shape: ``glue[k]`` follows value slot ``k`` (0: the opening)."""

    def __init__(self) -> None:
        self.glue = [""] * (_VALUE_SLOTS + 1)
        self.values: set[int] = set()  # value slots written
        self.slot = 0
        self.links = 0  # clauses of the R1-R9 chain written, joined by ARROW
        self.parts = 0  # later sentence parts written, joined by "; "

    def text(self, text: str) -> None:
        self.glue[self.slot] += text

    def value(self, slot: int) -> None:
        self.values.add(slot)
        self.slot = slot

    def link(self) -> None:
        self.text(ARROW if self.links else "")
        self.links += 1

    def part(self) -> None:
        self.text("; " if self.links or self.parts else "")
        self.parts += 1


def _assemble(pieces: list[tuple[np.ndarray, _Distinct]]) -> pa.Array:
    """Per row, the concatenation of its present pieces (``(present, texts)``, in order).

    One ``take`` from the table of every piece's texts lists each row's pieces in order,
    so its data buffer is the sentences; the row offsets are those of each row's first
    piece. Rows are handled by pattern (which pieces are present), each pattern densely.
    """
    n = len(pieces[0][0])
    if n == 0:
        return pa.array([], pa.large_string())
    table = pa.concat_arrays([texts.texts.cast(pa.large_string()) for _, texts in pieces])
    bases = np.cumsum([0] + [len(texts.texts) for _, texts in pieces])
    pattern = _bits([present for present, _ in pieces])
    per_pattern = np.bincount(pattern, minlength=1 << len(pieces))
    sizes = np.array([bin(p).count("1") for p in range(len(per_pattern))], dtype="int64")
    starts = np.zeros(n + 1, dtype="int64")
    np.cumsum(sizes[pattern], out=starts[1:])
    flat = np.empty(int(starts[-1]), dtype="int32")
    for p in np.flatnonzero(per_pattern[1:]) + 1:
        rows = np.flatnonzero(pattern == p)
        at = starts[rows]
        for i, (_, texts) in enumerate(pieces):
            if p >> i & 1:
                flat[at] = bases[i] + texts.codes[rows]
                at += 1
    taken = table.take(pa.array(flat, pa.int32()))
    ends = np.frombuffer(taken.buffers()[1], dtype="int64", count=len(taken) + 1,
                         offset=taken.offset * 8)
    return pa.LargeStringArray.from_buffers(n, pa.py_buffer(ends[starts]),
                                            taken.buffers()[2])


#: R12's limbs (``URGENT_LIMBS``) in words; ``{days}`` is R12's ``untreated_days``.
URGENT_WORDS = {
    "neurological_symptoms": "neurological symptoms",
    "pregnant": "pregnant",
    "untreated_too_long": "deficient result over {days} days old, no B12 prescription active",
    "not_responding": "not responding: deficient on the check test while on B12 treatment",
    "indeterminate_neurological": "indeterminate with neurological symptoms: treat without "
                                  "waiting for the MMA",
}


def build_reasons(p: pd.DataFrame, attrs: pd.DataFrame, supplementation: pd.DataFrame,
                  risk_factors: pd.DataFrame, urgent_limbs: pd.DataFrame, r9: dict[str, Any],
                  r10: dict[str, Any]) -> tuple[pd.Series, pd.Series]:
    """(reasons sentence, space-separated rule ids) for every patient row of ``p``.

    ``urgent_limbs`` holds R12's limbs (``URGENT_LIMBS``); ``r9`` the profile's regimen
    texts, named in the R9 clause with its intent and what chose it.
    """
    r10_words = {"age_years": r10["risk_age_years"], "dose_mg": r10["risk_dose_mg_per_day"],
                 "years": r10["risk_years_on_metformin"]}
    interval = str(r10["metformin_test_interval_days"])
    factor_words = [label.format(**r10_words) for label in METFORMIN_RISK_FACTORS.values()]

    has_index = _mask(p["index_test"].notna())
    is_total = _mask(p["index_test"] == "b12_total")
    ambiguous = has_index & _mask(p["censored_ambiguous"])
    discordant = has_index & _mask(p["discordant"])
    by_mma = _mask(p["status_basis"] == "mma")
    has_mma = has_index & _mask(p["mma_umol_l"].notna())
    branch = np.asarray(p["regimen_branch"].fillna(-1), dtype="int64")
    has_regimen = branch >= 0
    vegan = _mask(attrs["diet"] == "vegan")
    needs_mma = _mask(p["needs_mma"])
    needs_supp = _mask(p["needs_supplementation"])
    monitoring = _mask(p["metformin_monitoring_due"])
    retest_due = _mask(p["retest_due"])
    urgent = _mask(p["urgent_review"])
    paediatric = _mask(p["paediatric"])
    limbs = [urgent & _mask(urgent_limbs[name]) for name in URGENT_LIMBS]
    untreated = limbs[URGENT_LIMBS.index("untreated_too_long")]

    # Texts of the values and words, on the rows whose clause may show them.
    index_value = _distinct(p["index_value"], _num, has_index)
    index_day = _distinct(p["index_collected_at"], _day, has_index)
    index_band = _distinct(p["index_sev"], _lookup(_B12_BAND), has_index)
    index_censor = _distinct(p["index_censor"], _text, has_index)
    index_unit = _distinct(p["index_unit"], _text, has_index)
    total = _distinct(p["b12_total_ng_l"], _num, discordant)
    active = _distinct(p["b12_active_pmol_l"], _num, discordant)
    mma_value = _distinct(p["mma_umol_l"], _num, has_mma)
    mma_day = _distinct(p["mma_at"], _day, has_mma)
    mma_band = _distinct(p["mma_sev"], _lookup(_MMA_BAND), has_mma)
    mma_censor = _distinct(p["mma_censor"], _text, has_mma)
    status = _distinct(p["b12_status"], _text, has_mma & by_mma)
    risk = _distinct(p["metformin_risk"], _int, monitoring)
    last_test = _distinct(p["last_b12_test_at"], _day, monitoring)
    treated = _distinct(p["b12_treatment_start"], _day, retest_due)
    check_day = _distinct(p["check_from"], _day, retest_due)
    untreated_days = _distinct(p["untreated_days"], _int, untreated)

    # A clause missing one of its values (or its band) is left out altogether.
    c1 = index_value.valid & index_day.valid & index_band.valid
    c3 = total.valid & active.valid
    c4 = mma_value.valid & mma_day.valid & mma_band.valid
    s1 = risk.valid
    s2 = treated.valid & check_day.valid
    listed = s1 & _mask(p["metformin_risk"] > 0)
    untreated &= untreated_days.valid

    def only(flag: np.ndarray, codes: np.ndarray) -> np.ndarray:
        return np.where(flag, codes, 0)

    # Everything the glue depends on (zeroed where irrelevant, for fewer shapes).
    shape, shapes = _shapes({
        "c1": c1, "total": c1 & is_total, "censor": index_censor.codes,
        "unit": index_unit.codes, "band": index_band.codes, "c2": ambiguous, "c3": c3,
        "c4": c4, "mma_censor": mma_censor.codes, "mma_band": mma_band.codes,
        "status": only(c4, status.codes), "c5": needs_mma, "c6": needs_supp,
        "supp": only(needs_supp, _bits([_mask(supplementation[c])
                                        for c in SUPPLEMENTATION_REASONS])),
        "regimen": np.where(has_regimen, branch + 1, 0),
        "vegan": has_regimen & (branch == len(REGIMENS) - 1) & vegan,
        "s1": s1, "last": only(s1, last_test.valid), "risk": risk.codes, "listed": listed,
        "factors": only(listed, _bits([_mask(risk_factors[name])
                                       for name in METFORMIN_RISK_FACTORS])),
        "s2": s2, "s3": urgent,
        "why": only(urgent, _bits([limbs[0], limbs[1], untreated, *limbs[3:]])),
        "days": untreated_days.codes, "s4": paediatric,
    })
    words = {"censor": index_censor.words, "unit": index_unit.words,
             "band": index_band.words, "mma_censor": mma_censor.words,
             "mma_band": mma_band.words, "status": status.words,
             "risk": risk.words, "days": untreated_days.words}

    def _glue(s: dict[str, int]) -> _Pieces:
        """The glue of one shape, clause by clause as the reader sees them."""
        def word(name: str) -> str:
            return words[name][s[name]] or ""

        g = _Pieces()
        if s["c1"]:
            g.link()
            g.text(("R1 total B12 " if s["total"] else "R2 active B12 ") + word("censor"))
            g.value(1)
            g.text(f" {word('unit')} (")
            g.value(2)
            g.text(f") {word('band')}")
        if s["c2"]:
            g.link()
            g.text("R3 censored result spans a cut-off: indeterminate")
        if s["c3"]:
            g.link()
            g.text("R4 same-day total B12 ")
            g.value(3)
            g.text(" ng/L and active B12 ")
            g.value(4)
            g.text(" pmol/L disagree: more severe band used")
        if s["c4"]:
            g.link()
            g.text("R5 MMA " + word("mma_censor"))
            g.value(5)
            g.text(" µmol/L (")
            g.value(6)
            g.text(f") {word('mma_band')}")
            if words["status"][s["status"]] is not None:  # status basis MMA
                g.text(ARROW + word("status"))
        if s["c5"]:
            g.link()
            g.text("R7 MMA needed")
        if s["c6"]:
            g.link()
            why = [c for i, c in enumerate(SUPPLEMENTATION_REASONS) if s["supp"] >> i & 1]
            g.text(f"R8 supplementation needed ({', '.join(why)})")
        if s["regimen"]:
            regimen = REGIMENS[s["regimen"] - 1]
            label = regimen.label.format(diet="vegan" if s["vegan"] else "vegetarian")
            g.link()
            g.text(f"R9 {regimen.intent}: {label}: {r9[regimen.key]}")
        if s["s1"]:
            g.part()
            g.text(f"R10 on metformin, no B12 test in {interval} days")
            if s["last"]:
                g.text(", last ")
                g.value(7)
            factors = [w for i, w in enumerate(factor_words) if s["factors"] >> i & 1]
            g.text(f" (risk factors {word('risk')}"
                   + (f": {', '.join(factors)}" if s["listed"] else "") + ")")
        if s["s2"]:
            g.part()
            g.text("R11 on B12 treatment since ")
            g.value(8)
            g.text(", no B12 test since ")
            g.value(9)
            g.text(": retest due")
        if s["s3"]:
            g.part()
            why = [URGENT_WORDS[name].format(days=word("days"))
                   for i, name in enumerate(URGENT_LIMBS) if s["why"] >> i & 1]
            g.text(f"R12 urgent review ({', '.join(why)})")
        if s["s4"]:
            g.part()
            g.text("R13 under 16: thresholds are for over-16s")
        return g

    rendered = [_glue(s) for s in shapes]

    def per_shape(values: list[Any], dtype: str) -> np.ndarray:
        return np.array(values, dtype=dtype)[shape]

    def glue(slot: int) -> _Distinct:
        """The glue after value ``slot`` (0: the opening), per row."""
        distinct: dict[str, int] = {}
        codes = [distinct.setdefault(r.glue[slot], len(distinct)) for r in rendered]
        return _Distinct(per_shape(codes, "int32"), pa.array(list(distinct), pa.string()))

    # Pieces: the opening glue, then each value written with the glue after it; the
    # opening and the index value (most rows) are paired too.
    opening = glue(0)
    has_opening = per_shape([r.glue[0] != "" for r in rendered], "bool")
    values = [index_value, index_day, total, active, mma_value, mma_day, last_test, treated,
              check_day]
    pieces = []
    for slot, column in enumerate(values, start=1):
        written = per_shape([slot in r.values for r in rendered], "bool")
        pieces.append((written, _pair(column, glue(slot), written)))
    (first_written, first), rest = pieces[0], pieces[1:]
    sentence = _assemble([(has_opening & ~first_written, opening),
                          (first_written, _pair(opening, first, first_written)), *rest])

    fired = _bits([has_index & (is_total | discordant), has_index & (~is_total | discordant),
                   ambiguous, has_index, by_mma, needs_mma, needs_supp, has_regimen,
                   monitoring, retest_due, urgent, paediatric])
    id_texts = pa.array([" ".join(r for i, r in enumerate(_RULES) if mask >> i & 1)
                         for mask in range(1 << len(_RULES))], pa.large_string())
    ids = id_texts.take(pa.array(fired))
    return (pd.Series(pd.array(sentence, dtype="str"), index=p.index),
            pd.Series(pd.array(ids, dtype="str"), index=p.index))
