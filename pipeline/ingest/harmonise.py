"""Pure, vectorised converters from source text to canonical values.

Each function works on the *unique* values of a column (codes, units, dates and results
repeat heavily in a lab extract) and maps the answers back with the factorised codes, so
cost grows with the number of distinct values, not rows.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from datetime import date

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pandas.api.types import union_categoricals

from pipeline.config import UNIT_SPELLINGS, InputSpec
from pipeline.kernels.arrow import text_codes, used_codes

CENSORS = ("", "<", "<=", ">", ">=")
#: Canonical unit of each analyte (SPEC "Analytes and units").
CANONICAL_UNIT = {"b12_total": "ng/L", "b12_active": "pmol/L", "mma": "µmol/L"}
#: An accepted result's unit as read: the reported one, or the format's unit for its test code
#: where the lab gave none (a column of the accepted rows, not of any file).
UNIT_READ = "unit_read"

_RESULT = r"^(<=|>=|=<|=>|<|>|=)?\s*([+-]?(?:\d+(?:\.\d*)?|\.\d+))$"
_TIME, _ZONE_DESIGNATOR = r"\d:\d\d(?::\d\d(?:\.\d+)?)?", r"\s*(?:Z|[+-]\d\d:?\d\d)$"
_ZONE = _TIME + _ZONE_DESIGNATOR  # a time of day, then its zone: found anywhere
_TZ = "^(.*" + _TIME + ")" + _ZONE_DESIGNATOR  # the same, with what comes before kept
_DAY_FIRST = ("%d/%m/%Y", "%d/%m/%Y %H:%M", "%d/%m/%Y %H:%M:%S", "%d-%m-%Y",
              "%d-%m-%Y %H:%M", "%d-%m-%Y %H:%M:%S", "%d.%m.%Y", "%d.%m.%Y %H:%M",
              "%d.%m.%Y %H:%M:%S")


def by_unique(series: pd.Series, fn: Callable[[pd.Series], pd.Series | pd.DataFrame]):
    """Apply a vectorised ``fn`` to the distinct values of ``series`` and broadcast back.

    ``fn`` returns a Series or DataFrame aligned with the distinct values; missing values of
    ``series`` get a missing answer.
    """
    codes, uniques = factorize(series)
    return broadcast(fn(uniques), codes, series.index)


def factorize(series: pd.Series) -> tuple[np.ndarray, pd.Series]:
    """(integer code per row, -1 where missing; the distinct values in order of appearance,
    or, for a categorical, the categories that occur, in their order).

    Done once per column so every converter below works on the distinct values only.
    """
    if isinstance(series.dtype, pd.CategoricalDtype):  # codes already: keep the used ones
        codes, used = used_codes(series.cat.codes.to_numpy(), len(series.cat.categories))
        return codes, pd.Series(series.cat.categories[used], dtype="str")
    if series.dtype == "str" and getattr(series.dtype, "storage", "") == "pyarrow":
        # Arrow's hash kernel gives int32 codes directly: pd.factorize would widen them
        # to int64 first, a transient 80 MB per column of a 10M-row extract
        text = pa.array(series.array)
        if isinstance(text, pa.ChunkedArray) and text.num_chunks == 1:
            text = text.chunk(0)
        short = None if isinstance(text, pa.ChunkedArray) else text_codes(text)
        if short is not None:  # ids of up to 8 bytes: hashed as integers
            return short[0], pd.Series(pd.array(short[1], dtype=series.dtype))
        encoded = (text if isinstance(text, pa.ChunkedArray) else pa.chunked_array([text])
                   ).dictionary_encode().combine_chunks()
        codes = pc.fill_null(encoded.indices, -1).to_numpy(zero_copy_only=False)
        return codes, pd.Series(pd.array(encoded.dictionary, dtype=series.dtype))
    codes, uniques = pd.factorize(series, use_na_sentinel=True)
    return codes, pd.Series(uniques, dtype=series.dtype)


def broadcast(answers: pd.Series, codes: np.ndarray, index: pd.Index) -> pd.Series:
    """Per-distinct-value answers back to rows (missing where the code is -1)."""
    answers = answers.reset_index(drop=True)
    if (codes < 0).any():
        answers = pd.concat([answers, answers.iloc[:0].reindex([len(answers)])])
        codes = np.where(codes < 0, len(answers) - 1, codes)
    out = answers.take(codes)
    out.index = index
    return out


def words(codes: np.ndarray, vocabulary: Sequence[str], index: pd.Index | None = None) -> pd.Series:
    """Small integer codes to their words as a text column; -1 gives a missing value.

    An Arrow ``take`` from the short vocabulary: no Python object per row.
    """
    codes = np.asarray(codes)
    positions = pa.array(codes.astype("int32"), pa.int32(), mask=codes < 0)
    taken = pa.array(list(vocabulary), pa.string()).take(positions)
    return pd.Series(pd.array(taken, dtype="str"), index=index)


def labels(codes: np.ndarray, vocabulary: Sequence[str], index: pd.Index | None = None
           ) -> pd.Series:
    """Small integer codes to a categorical column over ``vocabulary`` (distinct words);
    -1 gives a missing value. For the patients table's few-valued columns (status, unit,
    regimen text): a byte per patient instead of the text, which at millions of patients was
    a third of the table, and each file's writer recodes it without hashing text per row."""
    codes = np.asarray(codes)
    small = codes.astype("int8" if len(vocabulary) < 127 else "int32")
    return pd.Series(pd.Categorical.from_codes(small, categories=pd.Index(
        list(vocabulary), dtype="str")), index=index)


def sorted_categorical(values: pd.Series) -> pd.Series:
    """A text column with few distinct values (practice ids, rule ids) as a categorical
    over its distinct values in sorted order, missing values kept: codes in their text's
    order, so that ordering by the codes orders by the text. At millions of patients such a
    column took 70 MB as text and its factorising (per list, per breakdown) as much again."""
    codes, distinct = pd.factorize(values, sort=True)
    return pd.Series(pd.Categorical.from_codes(codes, categories=pd.Index(distinct, dtype="str")),
                     index=values.index)


def joined_column(pieces: Sequence[pd.Series]) -> pd.Series:
    """Columns of parts of one table as one: a categorical column whose parts have different
    distinct values keeps its codes over the union of them, sorted (``sorted_categorical``);
    ``pd.concat`` would spell it out as Python objects."""
    dtypes = {piece.dtype for piece in pieces}
    if len(dtypes) > 1 and all(isinstance(d, pd.CategoricalDtype) for d in dtypes):
        return pd.Series(union_categoricals([piece.array for piece in pieces],
                                            sort_categories=True))
    return pd.concat(pieces, ignore_index=True)


def text_of(values: pd.Series) -> pd.Series:
    """A column as ``str``; a categorical one through its codes (no Python object per row,
    which ``astype("str")`` on a categorical makes)."""
    if isinstance(values.dtype, pd.CategoricalDtype):
        return words(values.cat.codes.to_numpy(), [str(c) for c in values.cat.categories],
                     values.index)
    return values.astype("str")


def categorical(values: pd.Series, categories: Sequence[str]) -> pd.Categorical:
    """A low-cardinality text column as a categorical over fixed ``categories`` (others
    missing), hashing each row once (``pd.Categorical(values)`` is much slower on text)."""
    codes, uniques = pd.factorize(values)
    cats = list(categories)
    at = np.array([cats.index(u) if u in cats else -1 for u in uniques] + [-1])
    return pd.Categorical.from_codes(at[codes], categories=cats)


def _drop_zone(text: pd.Series) -> pd.Series:
    """Strip a trailing zone designator in Arrow (pandas would loop in Python for '\\1').

    Most extracts have no zones: an end-anchored search finds that at a tenth of the cost
    of the rewrite, whose capture of everything before the zone is slow."""
    values = pa.array(text.array)
    if not pc.any(pc.match_substring_regex(values, _ZONE)).as_py():
        return text
    stripped = pc.replace_substring_regex(values, _TZ, r"\1")
    return pd.Series(stripped.to_pandas(), index=text.index, dtype="str")


def lookup(series: pd.Series, mapping: dict, dtype: str = "str") -> pd.Series:
    """Map text through a small dict with Arrow's hash kernels (NA where no key matches).

    ``Series.map`` with a dict calls Python per element on Arrow-backed text; this does not.
    """
    keys = pa.array([str(k) for k in mapping], pa.string())
    text = pa.array(series.astype("str"), pa.string(), from_pandas=True)
    positions = pc.index_in(text, value_set=keys)
    if dtype == "str":
        values = pa.array([None if v is None else str(v) for v in mapping.values()], pa.string())
        return pd.Series(pd.array(values.take(positions), dtype="str"), index=series.index)
    values = pa.array(list(mapping.values()), pa.float64())
    taken = values.take(positions).to_numpy(zero_copy_only=False)
    return pd.Series(taken, index=series.index).astype(dtype)


def parse_dates(series: pd.Series, *, day_first: bool = False,
                formats: tuple[str, ...] = ()) -> pd.Series:
    """Text to naive datetimes; unparseable or impossible dates become NaT.

    A trailing time-zone designator is dropped: the wall-clock date the lab wrote is the
    clinically meaningful one.
    """

    def parse(uniq: pd.Series) -> pd.Series:
        text = _drop_zone(uniq.astype("str"))
        out = pd.Series(pd.NaT, index=text.index, dtype="datetime64[us]")
        candidates = list(formats)
        candidates += list(_DAY_FIRST) if day_first else []
        for fmt in [*candidates, "ISO8601"]:
            todo = out.isna() & (text != "")
            if not todo.any():
                break
            parsed = pd.to_datetime(text[todo], format=fmt, errors="coerce")
            out[todo] = parsed.astype("datetime64[us]")
        return out

    return by_unique(series, parse).astype("datetime64[us]")


def parse_results(series: pd.Series, *, decimal_comma: bool = False) -> pd.DataFrame:
    """Result text to ``number`` (float, NaN if non-numeric) and ``censor`` (``<`` ... or '')."""

    def parse(uniq: pd.Series) -> pd.DataFrame:
        text = uniq.astype("str").str.strip()
        if decimal_comma:
            text = text.str.replace(",", ".", regex=False)
        parts = text.str.extract(_RESULT)
        number = pd.to_numeric(parts[1], errors="coerce").astype("float64")
        censor = parts[0].fillna("").astype("str").replace({"=": "", "=<": "<=", "=>": ">="})
        return pd.DataFrame({"number": number, "censor": censor.where(number.notna(), "")})

    out = by_unique(series, parse)
    out["censor"] = out["censor"].fillna("").astype("str")
    return out


_CENSOR_SPELLINGS = {"": "", "=": "", "<": "<", "<=": "<=", "=<": "<=", ">": ">", ">=": ">=",
                     "=>": ">="}


def parse_censor(series: pd.Series) -> tuple[pd.Series, pd.Series]:
    """A separate censor column (e.g. OMOP operator mapped by the format) to ``CENSORS``.

    Returns (censor, mask of cells that are not a comparison operator); '=' means exact
    and reads as '' (no sign), so a sign in the result text stands: a result reported as
    ``>170`` beside an OMOP operator ``=`` (which ETLs often fill in for every row) stays
    censored, not an exact 170 banded as deficient. ``<``/``>`` there override the text.
    """
    text = series.astype("str").fillna("").str.replace(" ", "", regex=False)
    censor = text.map(_CENSOR_SPELLINGS)
    return censor.fillna("").astype("str"), censor.isna()


def birth_from_parts(year: pd.Series, month: pd.Series,
                     day: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Birth date from year (and month, day) columns, e.g. OMOP person; (dates, bad mask).

    A missing month is taken as mid-year (1 July) and a missing day as the 15th, so the age
    is within six months (or half a month) of the truth either way.
    """
    y, bad_y = parse_number(year)
    m, bad_m = parse_number(month)
    d, bad_d = parse_number(day)
    has_year = y.notna()
    parts = pd.DataFrame({"year": y, "month": m.where(m.notna(), 7.0),
                          "day": d.where(d.notna(), np.where(m.notna(), 15.0, 1.0))})
    whole = (parts.round() == parts).all(axis=1)
    dates = pd.to_datetime(parts.where(has_year & whole), errors="coerce").astype(
        "datetime64[us]")
    bad = bad_y | bad_m | bad_d | (has_year & dates.isna()) | ((m.notna() | d.notna()) & ~has_year)
    return dates.where(has_year), bad


def normalise_unit(series: pd.Series) -> pd.Series:
    """Case-folded unit text with ``u``, ``µ``, ``μ`` (and ``mc``) alike and no spaces."""

    def norm(uniq: pd.Series) -> pd.Series:
        text = uniq.astype("str").str.lower()
        for spelt, key in UNIT_SPELLINGS:  # the formats' own rule (config.unit_key)
            text = text.str.replace(spelt, key, regex=False)
        return text

    return by_unique(series, norm).fillna("").astype("str")


def unit_factors(harmonise: dict) -> dict[str, dict[str, float]]:
    """Accepted units per analyte and the factor to the canonical unit (from the profile)."""
    return {
        "b12_total": {"ng/l": 1.0, "pg/ml": 1.0, "pmol/l": harmonise["b12_total_pmol_to_ng"]},
        "b12_active": {"pmol/l": 1.0},
        "mma": {"umol/l": 1.0, "nmol/ml": 1.0, "nmol/l": harmonise["mma_nmol_per_l_to_umol"]},
    }


#: One word per sex, whichever way the patients input spells it (any case).
_SEX_WORDS = {"f": "female", "m": "male"}


def sex_words(series: pd.Series) -> pd.Series:
    """The patients input's sex in lower case, ``f``/``m`` as ``female``/``male``: two rows of
    one patient that spell it differently (``F`` and ``female``) say the same thing and are
    one patient, not conflicting rows. Other values are kept as written (lower case)."""
    text = series.astype("str").str.lower()
    return text.replace(_SEX_WORDS)


def parse_yes_no(series: pd.Series, spec: InputSpec) -> tuple[pd.Series, pd.Series]:
    """(value as nullable boolean, mask of cells that are neither yes, no nor empty)."""
    lowered = series.astype("str").str.strip().str.lower()
    value = pd.Series(pd.NA, index=series.index, dtype="boolean")
    value[lowered.isin(spec.yes)] = True
    value[lowered.isin(spec.no)] = False
    bad = value.isna() & (lowered != "")
    return value, bad


def parse_number(series: pd.Series, *, decimal_comma: bool = False,
                 unit: str | None = None) -> tuple[pd.Series, pd.Series]:
    """(float, mask of non-empty cells that are not plain numbers).

    ``unit``: a regular expression for the column's own unit, which may follow the number
    (``30cm`` for centimetres resected, ``1000 mg/day``): a record system often writes it,
    and rejecting the row would drop the patient's every other attribute. Another unit
    (``30 mm``) is still not a number here.
    """
    text = series.astype("str").str.strip()
    if decimal_comma:
        text = text.str.replace(",", ".", regex=False)
    elif unit:  # a thousands separator in a column that reads its unit too: 1,000 mg
        text = text.str.replace(r"(?<=\d),(?=\d{3}(?:\D|$))", "", regex=True)
    if unit:
        text = text.str.replace(rf"(?<=[0-9.])\s*(?:{unit})$", "", regex=True, case=False)
    plain = text.str.fullmatch(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)")
    value = pd.to_numeric(text.where(plain, None), errors="coerce").astype("float64")
    return value, (~plain) & (text != "")


#: The B12 routes: one prescription is one route, so among these the first match wins.
B12_ROUTES = ("b12_injection", "b12_oral")
#: B12 inside a metformin combination product: recorded, never B12 *treatment* (its dose is
#: below the 1000-2000 µg treatment dose; the product is metformin) (SPEC rev 2).
B12_COMBINATION = "b12_combination"


def medication_classes(names: pd.Series, codes: pd.Series | None,
                       spec: InputSpec) -> pd.DataFrame:
    """Every class each medication belongs to, as one boolean column per class.

    A name counts in every class whose pattern it matches (``Metformin + sitagliptin`` is
    metformin whatever else it holds); the B12 routes are exclusive, the first matching
    route in the format's order wins; and B12 in a name that is also metformin becomes
    ``b12_combination``. ``class_codes`` (exact codes) decide alone where they match.
    Worked out on the distinct names only.
    """
    columns = (*dict.fromkeys(c for c, _ in spec.classes), *dict.fromkeys(
        spec.class_codes.values()))
    columns = tuple(dict.fromkeys((*columns, *(B12_ROUTES if any(
        c in B12_ROUTES for c in columns) else ()), B12_COMBINATION)))

    def classes(uniq: pd.Series) -> pd.DataFrame:
        text = uniq.astype("str")
        out = pd.DataFrame(False, index=text.index, columns=list(columns))
        coded = pd.Series(False, index=text.index)
        if spec.class_codes:
            by_code = text.str.strip().str.upper().map(spec.class_codes)
            coded = by_code.notna()
            for cls in set(spec.class_codes.values()):
                out[cls] = by_code == cls
        route = coded.copy()
        for cls, pattern in spec.classes:
            with warnings.catch_warnings():  # groups in a user's pattern are harmless here
                warnings.simplefilter("ignore", UserWarning)
                hit = text.str.contains(pattern, case=False, regex=True).fillna(False) & ~coded
            if cls in B12_ROUTES:
                hit &= ~route
                route |= hit
            out[cls] |= hit
        if "metformin" in out:
            b12 = out[[c for c in B12_ROUTES if c in out]].any(axis=1) & out["metformin"]
            for cls in B12_ROUTES:
                if cls in out:
                    out[cls] &= ~b12
            out[B12_COMBINATION] = b12
        return out

    codes_, uniques = factorize(names)
    answers = classes(uniques) if len(uniques) else pd.DataFrame(
        False, index=uniques.index, columns=list(columns))
    taken = np.append(answers.to_numpy(dtype=bool), np.zeros((1, len(columns)), bool), axis=0)
    return pd.DataFrame(taken[codes_], index=names.index, columns=list(columns))


def age_at(birth: pd.Series, as_of: date) -> pd.Series:
    """Whole years of age on ``as_of`` (birthday not yet reached counts one year less)."""
    years = as_of.year - birth.dt.year
    before = (birth.dt.month > as_of.month) | (
        (birth.dt.month == as_of.month) & (birth.dt.day > as_of.day))
    return (years - before.astype("Int64")).astype("Int64")
