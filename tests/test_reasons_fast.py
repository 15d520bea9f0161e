"""``build_reasons`` against a plain row-by-row rendering of the same sentences.

``build_reasons`` renders glue once per shape and values once per distinct value; these
random frames (every clause, missing parts, odd numbers and dates) check that it writes,
row for row, what a straightforward loop writes. Value formatting is the module's own.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from pipeline.config import load_rules
from pipeline.kernels import text as K
from pipeline.rules import reasons as R
from pipeline.rules.actions import (
    METFORMIN_RISK_FACTORS,
    REGIMENS,
    SUPPLEMENTATION_REASONS,
    URGENT_LIMBS,
)

R9 = load_rules().rule("R9")
RULES = ("R1", "R2", "R3", "R4", "R5", "R7", "R8", "R9", "R10", "R11", "R12", "R13")
R10 = {"metformin_test_interval_days": 365, "risk_age_years": 65,
       "risk_dose_mg_per_day": 1500.0, "risk_years_on_metformin": 4.0}


def _numbers(rng: np.random.Generator, n: int, choices: list[float]) -> pd.Series:
    """Odd values, and many distinct ones."""
    spread = np.round(rng.lognormal(4, 2, n), int(rng.integers(0, 5)))
    return _pick(rng, n, choices, "float64").where(rng.random(n) < 0.5, spread)


def _pick(rng: np.random.Generator, n: int, choices: list[Any], dtype: str) -> pd.Series:
    return pd.Series([choices[i] for i in rng.integers(0, len(choices), n)], dtype=dtype)


def _flags(rng: np.random.Generator, n: int, p: float = 0.3) -> np.ndarray:
    return rng.random(n) < p


def random_args(n: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame,
                                            pd.DataFrame, pd.DataFrame, dict[str, Any],
                                            dict[str, Any]]:
    """Arguments of ``build_reasons`` with every clause, missing parts and odd values."""
    rng = np.random.default_rng(seed)
    numbers = [np.nan, 262.0, 178.8645, 0.0, -0.0, -0.001, 0.005, 1e16, 1e-5, 31.7, 123.456,
               np.inf, 0.3, 1e21, 99.995]
    stamps = ["2026-10-03 08:00", "2026-10-03 18:30", "1969-12-31 23:00", "1970-01-01 00:00",
              "2025-02-28 12:00", None, "1900-01-01 00:00:01", "2020-02-29 23:59:59"]
    if seed % 2:  # a span of days too wide for a dense table
        stamps += ["0900-06-01 00:00", "4900-06-01 12:00"]
    day = [None if s is None else np.datetime64(s, "us") for s in stamps]
    dates = [np.datetime64("NaT", "us") if d is None else d for d in day]

    def stamp_column() -> pd.Series:
        return pd.Series(np.array(dates, dtype="datetime64[us]")[rng.integers(0, len(dates), n)])

    p = pd.DataFrame({
        "index_test": _pick(rng, n, ["b12_total", "b12_active", None], "str"),
        "index_value": _numbers(rng, n, numbers),
        "index_unit": _pick(rng, n, ["ng/L", "pmol/L", None, ""], "str"),
        "index_collected_at": stamp_column(),
        "index_censor": _pick(rng, n, ["", "<", ">", None], "str"),
        "b12_total_ng_l": _numbers(rng, n, numbers),
        "b12_active_pmol_l": _numbers(rng, n, numbers),
        "total_censor": _pick(rng, n, ["", "<", ">=", None], "str"),
        "active_censor": _pick(rng, n, ["", ">", "<=", None], "str"),
        "mma_umol_l": _numbers(rng, n, numbers),
        "mma_at": stamp_column(),
        "b12_status": _pick(rng, n, ["unlikely", "deficient", "indeterminate", None, ""],
                            "str"),
        "status_basis": _pick(rng, n, ["mma", "b12_total", "none"], "str"),
        "discordant": _flags(rng, n),
        "censored_ambiguous": _flags(rng, n),
        "needs_mma": _flags(rng, n),
        "needs_supplementation": _flags(rng, n),
        "metformin_monitoring_due": _flags(rng, n),
        "metformin_risk": _pick(rng, n, [0, 1, 2, 7, None], "Int64"),
        "retest_due": _flags(rng, n),
        "urgent_review": _flags(rng, n),
        "paediatric": _flags(rng, n, 0.1),
        "regimen_branch": _pick(rng, n, [-1, *range(len(REGIMENS))], "int8"),
        "b12_treatment_start": stamp_column(),
        "check_from": stamp_column(),
        "last_b12_test_at": stamp_column(),
        "index_sev": _pick(rng, n, [0.0, 1.0, 2.0, np.nan], "float64"),
        "mma_sev": _pick(rng, n, [0.0, 1.0, 2.0, np.nan], "float64"),
        "mma_censor": _pick(rng, n, ["", "<", ">", None], "str"),
        "untreated_days": _pick(rng, n, [90.0, 91.0, np.nan], "float64"),
    })
    p.index = pd.Index(rng.permutation(n) * 3 + 7)  # results follow p's index
    attrs = pd.DataFrame({"diet": _pick(rng, n, ["vegan", "vegetarian", "omnivore", None],
                                        "str")})
    supplementation = pd.DataFrame({c: _flags(rng, n) for c in SUPPLEMENTATION_REASONS})
    risk_factors = pd.DataFrame({c: _flags(rng, n) for c in METFORMIN_RISK_FACTORS})
    limbs = pd.DataFrame({c: _flags(rng, n) for c in URGENT_LIMBS})
    return p, attrs, supplementation, risk_factors, limbs, dict(R9), dict(R10)


_FORMATTED: dict[tuple[Any, str, str], str | None] = {}


def _one(fmt: Any, value: Any, dtype: str) -> str | None:
    """The module's formatter on a single value (cached by repr: -0.0 is not 0.0)."""
    key = (fmt, dtype, repr(value))
    if key not in _FORMATTED:
        series = pd.Series([None if pd.isna(value) else value], dtype=dtype)
        _FORMATTED[key] = fmt(series).to_pylist()[0]
    return _FORMATTED[key]


def _flag(value: Any) -> bool:
    return bool(value) if not pd.isna(value) else False


def reference(p: pd.DataFrame, attrs: pd.DataFrame, supplementation: pd.DataFrame,
              risk_factors: pd.DataFrame, limbs: pd.DataFrame, r9: dict[str, Any],
              r10: dict[str, Any]) -> tuple[list[str], list[str]]:
    """The sentences and rule ids, one row at a time."""
    words = {"age_years": r10["risk_age_years"], "dose_mg": r10["risk_dose_mg_per_day"],
             "years": r10["risk_years_on_metformin"]}
    sentences, ids = [], []
    for i in range(len(p)):
        row, a, limb = p.iloc[i], attrs.iloc[i], limbs.iloc[i]

        def num(col: str) -> str | None:
            return _one(K.number, row[col], "float64")  # noqa: B023

        def day(col: str) -> str | None:
            return _one(K.day, row[col], "datetime64[us]")  # noqa: B023

        def text(col: str) -> str:
            return "" if pd.isna(row[col]) else row[col]  # noqa: B023

        def band(col: str, names: tuple[str, ...]) -> str | None:
            return None if pd.isna(row[col]) else names[int(row[col])]  # noqa: B023

        has_index = not pd.isna(row["index_test"])
        is_total = row["index_test"] == "b12_total"
        by_mma = row["status_basis"] == "mma"
        has_mma = has_index and not pd.isna(row["mma_umol_l"])
        has_regimen = row["regimen_branch"] >= 0
        chain = []
        parts = [num("index_value"), day("index_collected_at"), band("index_sev", R._B12_BAND)]
        if has_index and None not in parts:
            chain.append(f"{'R1 total B12 ' if is_total else 'R2 active B12 '}"
                         f"{text('index_censor')}{parts[0]} {text('index_unit')} ({parts[1]}) "
                         f"{parts[2]}")
        if has_index and row["censored_ambiguous"]:
            chain.append("R3 censored result spans a cut-off: indeterminate")
        same_day = [num("b12_total_ng_l"), num("b12_active_pmol_l")]
        if has_index and row["discordant"] and None not in same_day:
            chain.append(f"R4 same-day total B12 {text('total_censor')}{same_day[0]} ng/L and "
                         f"active B12 {text('active_censor')}{same_day[1]} pmol/L disagree: "
                         "more severe band used")
        mma = [num("mma_umol_l"), day("mma_at"), band("mma_sev", R._MMA_BAND)]
        if has_mma and None not in mma:
            status = (R.ARROW + row["b12_status"]
                      if by_mma and not pd.isna(row["b12_status"]) else "")
            chain.append(f"R5 MMA {text('mma_censor')}{mma[0]} µmol/L ({mma[1]}) {mma[2]}"
                         f"{status}")
        if row["needs_mma"]:
            chain.append("R7 MMA needed")
        if row["needs_supplementation"]:
            why = [c for c in SUPPLEMENTATION_REASONS if supplementation[c].iloc[i]]
            chain.append(f"R8 supplementation needed ({', '.join(why)})")
        if has_regimen:
            regimen = REGIMENS[row["regimen_branch"]]
            diet = "vegan" if a["diet"] == "vegan" else "vegetarian"
            chain.append(f"R9 {regimen.intent}: {regimen.label.format(diet=diet)}: "
                         f"{r9[regimen.key]}")
        sentence = [R.ARROW.join(chain)] if chain else []
        risk = _one(K.integer, row["metformin_risk"], "float64")
        if row["metformin_monitoring_due"] and risk is not None:
            last = day("last_b12_test_at")
            factors = [label.format(**words) for name, label in METFORMIN_RISK_FACTORS.items()
                       if risk_factors[name].iloc[i]]
            listed = f": {', '.join(factors)}" if _flag(row["metformin_risk"] > 0) else ""
            sentence.append(f"R10 on metformin, no B12 test in "
                            f"{r10['metformin_test_interval_days']} days"
                            f"{'' if last is None else ', last ' + last}"
                            f" (risk factors {risk}{listed})")
        treated, check_from = day("b12_treatment_start"), day("check_from")
        if row["retest_due"] and treated is not None and check_from is not None:
            sentence.append(f"R11 on B12 treatment since {treated}, no B12 test since "
                            f"{check_from}: retest due")
        if row["urgent_review"]:
            days = _one(K.integer, row["untreated_days"], "float64")
            why = [w for w, on in (
                ("neurological symptoms", limb["neurological_symptoms"]),
                ("pregnant", limb["pregnant"]),
                (f"deficient result over {days} days old, no B12 prescription active",
                 limb["untreated_too_long"] and days is not None),
                ("not responding: deficient on the check test taken on B12 treatment",
                 limb["not_responding"]),
                ("indeterminate with neurological symptoms: treat without waiting for the MMA",
                 limb["indeterminate_neurological"])) if on]
            sentence.append(f"R12 urgent review ({', '.join(why)})")
        if row["paediatric"]:
            sentence.append("R13 under 16: thresholds are for over-16s")
        sentences.append("; ".join(sentence))
        fired = [has_index and (is_total or row["discordant"]),
                 has_index and (not is_total or row["discordant"]),
                 has_index and row["censored_ambiguous"], has_index, by_mma, row["needs_mma"],
                 row["needs_supplementation"], has_regimen, row["metformin_monitoring_due"],
                 row["retest_due"], row["urgent_review"], row["paediatric"]]
        ids.append(" ".join(r for r, on in zip(RULES, fired, strict=True) if on))
    return sentences, ids


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_sentences_match_a_row_by_row_rendering(seed: int) -> None:
    args = random_args(500, seed)
    sentences, ids = R.build_reasons(*args)
    want_sentences, want_ids = reference(*args)
    assert sentences.dtype == "str" and ids.dtype == "str"
    assert sentences.index.equals(args[0].index) and ids.index.equals(args[0].index)
    assert sentences.tolist() == want_sentences
    assert ids.tolist() == want_ids


def test_hashed_keys_match_too(monkeypatch: pytest.MonkeyPatch) -> None:
    """Wide key ranges (many distinct values, far-apart dates) are hashed, not tabled."""
    monkeypatch.setattr(K, "DENSE", 0)
    args = random_args(400, 5)
    sentences, ids = R.build_reasons(*args)
    assert (sentences.tolist(), ids.tolist()) == reference(*args)


def test_no_rows() -> None:
    sentences, ids = R.build_reasons(*random_args(0, 1))
    assert sentences.empty and ids.empty and sentences.dtype == "str" and ids.dtype == "str"
