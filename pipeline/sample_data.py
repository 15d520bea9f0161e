"""Synthetic canonical extracts (labs, patients, medications) for demos, tests and benchmarks.

A real month's extract is valid but untidy: local codes beside LOINC codes, mixed units,
censored results, unrelated chemistry, date-only and timed rows, yes/no columns spelt five
ways. This module draws such an extract with seeded numpy generators and builds every column
with numpy and pyarrow compute (no Python loop over rows or patients), so ten million lab rows
take seconds and the same arguments always give byte-identical files. ``messy=True`` adds the
bad rows a real extract carries, so validation and row accounting have something to catch;
``messy=False`` stays clean (every row is valid, skipped only if it is an unrelated test).

``shape`` chooses what the extract looks like. ``field`` (the default, used by ``sample-data``
and ``demo``) looks like a real month's extract: most rows are a chemistry panel (sodium
``NA``, potassium ``K``, calcium ``CA``, ... with the odd ``Na`` or ``k``) and the
prescriptions include metformin combination products, methylcobalamin, proton-pump
inhibitors by name, H2 blockers and medicines a careless name pattern would catch
(aripiprazole). ``classic`` is the earlier generator, kept byte for byte so that benchmark
figures stay comparable across commits. ``chemistry`` (~15 % sodium ``NA`` rows) and
``typed`` (Parquet with ``result`` as double and ``collected_at`` as date32, about one lab
row per patient, 30 % of total B12 in pmol/L) are the benchmark's field-like extracts.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

__all__ = [
    "LAB_COLUMNS",
    "MEDICATION_COLUMNS",
    "PATIENT_COLUMNS",
    "SHAPES",
    "generate",
]

LAB_COLUMNS = (
    "patient_id", "collected_at", "test_code", "result", "unit",
    "practice_id", "site_id", "specimen_id",
)
PATIENT_COLUMNS = (
    "patient_id", "birth_date", "sex", "practice_id", "diet", "autoimmune_gastritis",
    "bariatric_surgery", "crohns_disease", "neurological_symptoms", "pregnant",
    "ileal_resection_cm",
)
MEDICATION_COLUMNS = ("patient_id", "medication", "start_date", "end_date", "dose_mg_per_day")

PRACTICES = ("P81001", "P81002", "P81004", "P81007", "P81010", "P81012", "P81015", "P81020")
PRACTICE_WEIGHTS = (0.18, 0.16, 0.14, 0.13, 0.12, 0.11, 0.09, 0.07)
PRACTICE_SITE = np.array([0, 0, 0, 0, 1, 1, 1, 1])
SITES = ("RTH01", "RXQ02")
WINDOW_DAYS = 456  # about 15 months before as_of, as_of included (offset 0)
_EPOCH = date(1970, 1, 1)

# Analyte result kinds: group, code, unit, weight within group, factor from the canonical
# value (ng/L, pmol/L, umol/L) to the reported unit, decimals, censored texts below/above.
_TOTAL_LOW = ("<150", "<150", "< 150", "<200")
_TOTAL_HIGH = (">2000", ">2000", "> 2000")
_Kind = tuple[str, str, str, float, float, int, tuple[str, ...], tuple[str, ...]]
_B12_KINDS: tuple[_Kind, ...] = (
    ("total", "B12", "ng/L", 34, 1.0, 0, _TOTAL_LOW, _TOTAL_HIGH),
    ("total", "B12", "pg/mL", 5, 1.0, 0, _TOTAL_LOW, _TOTAL_HIGH),
    ("total", "B12", "ng/l", 2, 1.0, 0, _TOTAL_LOW, _TOTAL_HIGH),
    ("total", "VITB12", "ng/L", 20, 1.0, 0, _TOTAL_LOW, _TOTAL_HIGH),
    ("total", "VITB12", "pg/mL", 4, 1.0, 0, _TOTAL_LOW, _TOTAL_HIGH),
    ("total", "2132-9", "ng/L", 15, 1.0, 0, _TOTAL_LOW, _TOTAL_HIGH),
    ("total", "2132-9", "", 3, 1.0, 0, _TOTAL_LOW, _TOTAL_HIGH),
    ("total", "14685-2", "pmol/L", 14, 1 / 1.355, 0, ("<111",), (">1476",)),
    ("total", "14685-2", "", 3, 1 / 1.355, 0, ("<111",), (">1476",)),
    ("active", "HOLOTC", "pmol/L", 50, 1.0, 1, ("<25", "<25", "<10"), (">128",)),
    ("active", "ACTB12", "pmol/L", 30, 1.0, 1, ("<25", "<25", "<10"), (">128",)),
    ("active", "72160-5", "pmol/L", 17, 1.0, 1, ("<25",), (">128",)),
    ("active", "72160-5", "", 3, 1.0, 1, ("<25",), (">128",)),
    ("mma", "MMA", "umol/L", 35, 1.0, 2, ("<0.05",), (">5.00",)),
    ("mma", "MMA", "\u00b5mol/L", 15, 1.0, 2, ("<0.05",), (">5.00",)),
    ("mma", "MMA", "\u03bcmol/L", 5, 1.0, 2, ("<0.05",), (">5.00",)),
    ("mma", "MMA", "UMOL/L", 3, 1.0, 2, ("<0.05",), (">5.00",)),
    ("mma", "MMA", "nmol/L", 12, 1000.0, 0, ("<50",), (">5000",)),
    ("mma", "MMA", "nmol/mL", 5, 1.0, 2, ("<0.05",), (">5.00",)),
    ("mma", "13964-2", "umol/L", 20, 1.0, 2, ("<0.05",), (">5.00",)),
    ("mma", "13964-2", "", 5, 1.0, 2, ("<0.05",), (">5.00",)),
)
# Canonical value below which a censored result is reported as "<..." rather than ">...".
_CENSOR_MID = {"total": 265.0, "active": 47.0, "mma": 0.45}
_CLIP = {"total": (40.0, 1990.0), "active": (5.0, 127.0), "mma": (0.06, 4.9)}
_B12_CENSOR_RATE = 0.03

# Unrelated tests in a full chemistry extract: code, unit, weight, median, log-sd, decimals,
# censored texts below the median (skipped rows still look like real results).
_OTHER_KINDS: tuple[tuple[str, str, float, float, float, int, tuple[str, ...]], ...] = (
    ("FERRITIN", "ug/L", 16, 80.0, 0.8, 0, ()),
    ("FOLATE", "ug/L", 16, 7.0, 0.4, 1, ("<2.0",)),
    ("HB", "g/L", 14, 135.0, 0.1, 0, ()),
    ("TSH", "mU/L", 10, 1.8, 0.5, 2, ("<0.01",)),
    ("CRP", "mg/L", 10, 4.0, 1.0, 0, ("<1", "<5")),
    ("HBA1C", "mmol/mol", 10, 45.0, 0.25, 0, ()),
    ("FT4", "pmol/L", 6, 15.0, 0.2, 1, ()),
    ("CREA", "umol/L", 8, 80.0, 0.25, 0, ()),
    ("MCV", "fL", 6, 90.0, 0.06, 0, ()),
    ("SODIUM", "mmol/L", 4, 139.0, 0.02, 0, ()),
)
_OTHER_SHARE = 0.30  # share of all lab rows that are unrelated tests
_OTHER_CENSOR_RATE = 0.02

# Field-like shapes: a lab with a local pmol/L total B12 code beside the others.
_B12_KINDS_FIELD: tuple[_Kind, ...] = (
    *_B12_KINDS, ("total", "B12", "pmol/L", 4, 1 / 1.355, 0, ("<111",), (">1476",)),
)

# The chemistry an extract is mostly made of: code, unit, median, log-sd, decimals, censored
# texts below / above the median. Units as the labs print them.
_PANEL_TESTS: tuple[tuple[str, str, float, float, int, tuple[str, ...], tuple[str, ...]], ...] = (
    ("NA", "mmol/L", 139.0, 0.022, 0, (), ()),
    ("K", "mmol/L", 4.4, 0.10, 1, (), ()),
    ("CL", "mmol/L", 102.0, 0.03, 0, (), ()),
    ("UREA", "mmol/L", 5.8, 0.35, 1, (), ()),
    ("CREA", "umol/L", 82.0, 0.28, 0, (), ()),
    ("CA", "mmol/L", 2.36, 0.05, 2, (), ()),
    ("ALB", "g/L", 41.0, 0.09, 0, (), ()),
    ("PHOS", "mmol/L", 1.05, 0.18, 2, (), ()),
    ("HB", "g/L", 134.0, 0.11, 0, (), ()),
    ("MCV", "fL", 90.0, 0.06, 0, (), ()),
    ("PLT", "10*9/L", 260.0, 0.30, 0, (), ()),
    ("WBC", "10*9/L", 7.0, 0.30, 1, (), ()),
    ("FERR", "ug/L", 80.0, 0.80, 0, ("<5",), ()),
    ("FOL", "ug/L", 7.0, 0.45, 1, ("<2.0",), (">20.0",)),
    ("ALP", "U/L", 80.0, 0.30, 0, (), ()),
    ("ALT", "U/L", 22.0, 0.50, 0, ("<5",), ()),
    ("BILI", "umol/L", 9.0, 0.50, 0, ("<3",), ()),
    ("TSH", "mU/L", 1.8, 0.50, 2, ("<0.01",), ()),
    ("FT4", "pmol/L", 15.0, 0.20, 1, (), ()),
    ("CRP", "mg/L", 4.0, 1.00, 0, ("<1", "<5"), ()),
    ("HBA1C", "mmol/mol", 45.0, 0.25, 0, (), ()),
    ("CHOL", "mmol/L", 5.0, 0.20, 1, (), ()),
    ("HDL", "mmol/L", 1.4, 0.25, 2, (), ()),
    ("TRIG", "mmol/L", 1.5, 0.45, 1, (), ()),
)
# Some analysers and LIMS send element symbols as written in chemistry ("Na", "k"); a code
# is sent in its other spelling at the shape's spelling rate.
_SPELLINGS = {"NA": "Na", "K": "k", "CA": "Ca", "CL": "Cl", "UREA": "Urea", "CREA": "Crea"}
# What a sample is requested as: each sample without B12 (and some with) carries one panel.
_PANELS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("U&E", ("NA", "K", "UREA", "CREA")),
    ("U&E and bone", ("NA", "K", "UREA", "CREA", "CA", "ALB", "PHOS")),
    ("electrolytes", ("NA", "K", "CL")),
    ("FBC", ("HB", "MCV", "PLT", "WBC")),
    ("haematinics", ("HB", "MCV", "FERR", "FOL")),
    ("LFT", ("ALB", "ALP", "ALT", "BILI")),
    ("thyroid", ("TSH", "FT4")),
    ("CRP", ("CRP",)),
    ("HbA1c", ("HBA1C",)),
    ("lipids", ("CHOL", "HDL", "TRIG")),
    ("tiredness screen", ("NA", "K", "CL", "UREA", "CREA", "CA", "HB", "MCV", "FERR", "FOL",
                          "TSH", "CRP")),
)
# Panel weights: a primary-care month, and a chemistry-heavy one (~15 % of rows sodium NA).
_FIELD_PANEL_WEIGHTS = (0.20, 0.10, 0.03, 0.12, 0.15, 0.10, 0.08, 0.06, 0.06, 0.04, 0.06)
_CHEMISTRY_PANEL_WEIGHTS = (0.30, 0.08, 0.35, 0.06, 0.06, 0.05, 0.03, 0.03, 0.02, 0.01, 0.01)


class _Shape(NamedTuple):
    """What an extract looks like (see the module docstring)."""

    b12_kinds: tuple[_Kind, ...]
    other_share: float  # share of lab rows that are other tests
    panel_weights: tuple[float, ...] | None  # None: one unrelated test per sample (classic)
    spelling_rate: float  # share of rows of a code in _SPELLINGS sent in its other spelling
    censored: bool  # censored results ('<150'); a typed result column cannot hold them
    per_patient: float  # default lab rows per patient
    field_medications: bool
    typed: bool  # Parquet result as double and collected_at as date32
    # Field shapes' other tests: one panel per sample, on 70 % of them a B12 sample's; or
    # (spread) one test per sample, each on a different patient where the cohort allows.
    attach_share: float = 0.7
    spread: bool = False


def _pmol_share(kinds: tuple[_Kind, ...], share: float) -> tuple[_Kind, ...]:
    """``kinds`` reweighted so that ``share`` of total B12 rows are reported in pmol/L."""
    total = [k for k in kinds if k[0] == "total"]
    pmol = sum(k[3] for k in total if k[4] != 1.0)
    other = sum(k[3] for k in total if k[4] == 1.0)
    scale = {True: share / pmol, False: (1 - share) / other}
    return tuple((*k[:3], k[3] * scale[k[4] != 1.0] * 100, *k[4:]) if k[0] == "total" else k
                 for k in kinds)


_SHAPES: dict[str, _Shape] = {
    "field": _Shape(_B12_KINDS_FIELD, 0.58, _FIELD_PANEL_WEIGHTS, 0.10, True, 5.0, True, False),
    "classic": _Shape(_B12_KINDS, _OTHER_SHARE, None, 0.0, True, 3.0, False, False),
    "chemistry": _Shape(_B12_KINDS_FIELD, 0.80, _CHEMISTRY_PANEL_WEIGHTS, 0.05, True, 3.0, True,
                        False),
    "typed": _Shape(_pmol_share(_B12_KINDS_FIELD, 0.30), 0.80, _CHEMISTRY_PANEL_WEIGHTS, 0.05,
                    False, 1.0, True, True, attach_share=0.0, spread=True),
}
SHAPES = tuple(_SHAPES)

_METFORMIN = (
    ("Metformin 500mg tablets", 40), ("Metformin 850mg tablets", 12),
    ("Metformin 1g modified-release tablets", 8), ("Metformin 500mg modified-release tablets", 20),
    ("Sitagliptin/metformin 50mg/1000mg tablets", 8),
    ("Metformin 500mg/5ml oral solution sugar free", 4), ("METFORMIN HYDROCHLORIDE 500MG TAB", 8),
)
_METFORMIN_DOSES = (500, 850, 1000, 1500, 1700, 2000, 2550, 3000)
_METFORMIN_DOSE_WEIGHTS = (10, 4, 22, 18, 6, 25, 5, 10)
_B12_ORAL = (
    ("Cyanocobalamin 1mg tablets", 60, 1.0), ("Cyanocobalamin 50microgram tablets", 25, 0.05),
    ("Vitamin B12 1000microgram tablets", 15, 1.0),
)
_B12_INJECTION = (
    ("Hydroxocobalamin 1mg/1ml solution for injection ampoules", 85),
    ("Cyanocobalamin 1mg/1ml solution for injection ampoules", 15),
)
_PPI = (
    ("Omeprazole 20mg capsules", 40, 20.0), ("Lansoprazole 30mg capsules", 25, 30.0),
    ("Esomeprazole 40mg gastro-resistant tablets", 12, 40.0),
    ("Pantoprazole 40mg gastro-resistant tablets", 10, 40.0),
    ("Famotidine 20mg tablets", 8, 40.0), ("Ranitidine 150mg tablets", 5, 300.0),
)
_OTHER_MEDS = (
    ("Amlodipine 5mg tablets", 25, 5.0), ("Atorvastatin 20mg tablets", 25, 20.0),
    ("Ramipril 5mg capsules", 15, 5.0), ("Levothyroxine sodium 50microgram tablets", 12, 0.05),
    ("Sertraline 50mg tablets", 10, 50.0), ("Salbutamol 100micrograms/dose inhaler", 13, np.nan),
)

# Field-like prescriptions (name, weight[, dose mg/day]): names as GP systems print them.
_METFORMIN_FIELD = (
    ("Metformin 500mg tablets", 40), ("Metformin 850mg tablets", 12),
    ("Metformin 1g modified-release tablets", 8), ("Metformin 500mg modified-release tablets", 20),
    ("Sitagliptin/metformin 50mg/1000mg tablets", 6),
    ("Alogliptin 12.5mg / Metformin 1g tablets", 2),
    ("Metformin 500mg/5ml oral solution sugar free", 4), ("METFORMIN HYDROCHLORIDE 500MG TAB", 8),
)
# About 1 % of prescriptions: metformin with a low dose of B12 that is not B12 treatment.
_COMBINATION = (("Metformin 500 mg + methylcobalamin 500 micrograms tablets", 1),)
_COMBINATION_SHARE = 0.01
_COMBINATION_DOSES = (1000, 1500, 2000)
_B12_ORAL_FIELD = (
    ("Cyanocobalamin 1mg tablets", 50, 1.0), ("Cyanocobalamin 50microgram tablets", 20, 0.05),
    ("Methylcobalamin 1000 micrograms tablets", 15, 1.0),
    ("Vitamin B12 1000microgram tablets", 15, 1.0),
)
_ACID_FIELD = (
    ("Omeprazole 20mg gastro-resistant capsules", 35, 20.0),
    ("OMEPRAZOLE 40MG CAP", 5, 40.0), ("Lansoprazole 30mg gastro-resistant capsules", 22, 30.0),
    ("Esomeprazole 40mg gastro-resistant tablets", 10, 40.0),
    ("Pantoprazole 40mg gastro-resistant tablets", 10, 40.0),
    ("Rabeprazole 20mg gastro-resistant tablets", 5, 20.0),
    ("Famotidine 20mg tablets", 8, 40.0), ("Nizatidine 150mg capsules", 5, 300.0),
)
# Unrelated medicines, some that a careless pattern would catch: 'prazole' (aripiprazole, an
# antipsychotic), 'vitamin b' (a B compound without B12), 'metformin'-like 'met' prefixes.
_OTHER_MEDS_FIELD = (
    ("Amlodipine 5mg tablets", 25, 5.0), ("Atorvastatin 20mg tablets", 25, 20.0),
    ("Ramipril 5mg capsules", 15, 5.0), ("Levothyroxine sodium 50microgram tablets", 12, 0.05),
    ("Sertraline 50mg tablets", 10, 50.0), ("Salbutamol 100micrograms/dose inhaler", 13, np.nan),
    ("Aripiprazole 10 mg tablets", 4, 10.0), ("Vitamin B compound strong tablets", 3, np.nan),
    ("Folic acid 5mg tablets", 4, 5.0), ("Metronidazole 400mg tablets", 2, 1200.0),
    ("Metoclopramide 10mg tablets", 2, 30.0),
)

_YES = ("true", "Y", "yes", "1", "TRUE", "Yes", "y")
_NO = ("false", "N", "no", "0", "FALSE", "No", "n")

# messy=True: the bad-row kinds added to labs, and their replacement texts.
_BAD_KINDS = (
    "missing_patient_id", "bad_date", "future_date", "non_numeric_result",
    "negative_result", "unknown_unit", "implausible_value",
)
_BAD_TEXT = {
    "missing_patient_id": ("", " ", ""),
    "bad_date": ("31/02/2026", "yesterday", "2026-02-30", "31/02/2026"),
    "future_date": ("2030-01-01",),
    "non_numeric_result": ("haemolysed", "Haemolysed", "insufficient sample", "see comment"),
    "negative_result": ("-12", "-150", "-0.3"),
    "unknown_unit": ("mg",),
    "implausible_value": ("0.25",),
}
FORMULA_IDS = ('=HYPERLINK("http://example.invalid","x")', "+12345")

_CSV_CHUNK_ROWS = 1_000_000
_DICTIONARY_MAX = 100_000  # larger dictionaries are decoded before writing Parquet
_CODE_SPAN = 1 << 20  # result codes: value x 10^decimals below this
_NO_END = np.iinfo(np.int64).min  # medication end offset meaning "no end date"
_NO_DATE = -1_000_000  # day number formatted as an empty date


class _Column(NamedTuple):
    """A text column as its distinct texts plus one index per row.

    Texts are formatted once per distinct value (dates, results, ids); bad rows are made by
    appending texts and re-pointing indices; cells are materialised only when written.
    """

    texts: pa.Array
    idx: np.ndarray


def generate(
    out_dir: Path,
    *,
    n_patients: int = 2000,
    seed: int = 12,
    messy: bool = False,
    file_format: str = "csv",
    results_per_patient: float | None = None,
    as_of: date = date(2026, 10, 31),
    shape: str = "field",
) -> dict[str, Path]:
    """Write labs, patients and medications in the canonical format; return their paths.

    About ``n_patients * results_per_patient`` lab rows are written (default: the shape's,
    5 for ``field``, 3 for ``classic`` and ``chemistry``, 1 for ``typed``), most of them other
    tests in the field-like shapes (~30 % in ``classic``). ``as_of`` is the latest date in a
    clean extract: every collection, start and birth date is on or before it (some planned
    prescription end dates are after it); only ``messy`` future-dated rows are later. Labs
    are ``labs.parquet`` (text columns, empty cells null; ``typed``: result double and
    collected_at date32) when ``file_format='parquet'``; the others are always CSV.
    """
    if file_format not in ("csv", "parquet"):
        raise ValueError(f"file_format must be 'csv' or 'parquet', not {file_format!r}")
    if shape not in _SHAPES:
        raise ValueError(f"shape must be one of {', '.join(SHAPES)}, not {shape!r}")
    spec = _SHAPES[shape]
    if spec.typed and (file_format != "parquet" or messy):
        # Typed columns cannot hold 'haemolysed' or '31/02/2026'; CSV has no types.
        raise ValueError("shape 'typed' is clean Parquet only (file_format='parquet', "
                         "messy=False)")
    if n_patients < 1:
        raise ValueError("n_patients must be at least 1")
    per_patient = spec.per_patient if results_per_patient is None else results_per_patient
    if per_patient <= 0:
        raise ValueError("results_per_patient must be positive")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # Independent streams, so messy=True adds rows without changing the clean ones.
    seeds = np.random.SeedSequence(seed).spawn(4)
    rng_pat, rng_lab, rng_med, rng_messy = (np.random.default_rng(s) for s in seeds)
    as_of_days = (as_of - _EPOCH).days

    cohort = _cohort(rng_pat, n_patients, as_of_days)
    labs, sort_key, mapped = _labs(rng_lab, cohort, as_of_days, per_patient, spec)
    if messy:
        labs = _make_messy(rng_messy, labs, sort_key, mapped, as_of_days,
                           bad_per_mapped=spec.panel_weights is not None)

    paths = {
        "labs": out_dir / ("labs.parquet" if file_format == "parquet" else "labs.csv"),
        "patients": out_dir / "patients.csv",
        "medications": out_dir / "medications.csv",
    }
    if file_format == "parquet":
        columns = {k: _parquet_column(labs[k]) for k in LAB_COLUMNS}
        if spec.typed:
            columns["result"] = _typed_column(labs["result"], pa.float64())
            columns["collected_at"] = _typed_column(labs["collected_at"], pa.date32())
        # Without the stored Arrow schema, readers see plain text columns, not dictionaries.
        pq.write_table(pa.table(columns), paths["labs"], compression="zstd", store_schema=False)
    else:
        _write_csv(paths["labs"], labs, LAB_COLUMNS)
    del labs
    _write_csv(paths["patients"], _patients_table(rng_pat, cohort), PATIENT_COLUMNS)
    medications = (_field_medications if spec.field_medications else _medications)
    _write_csv(paths["medications"], medications(rng_med, cohort, as_of_days),
               MEDICATION_COLUMNS)
    return paths


# --------------------------------------------------------------------------------------
# cohort


def _cohort(rng: np.random.Generator, n: int, as_of_days: int) -> dict[str, Any]:
    """Per-patient latent state: ids, demographics, risk factors and a 'true' B12 level."""
    n_med_only = max(1, round(0.02 * n))
    n_ids = n + n_med_only
    # Strictly increasing numbers with random gaps, then shuffled: unique, many leading zeros.
    numbers = np.cumsum(rng.integers(1, 6, n_ids))
    numbers = numbers[rng.permutation(n_ids)]
    width = max(7, len(str(int(numbers.max()))))
    ids = pc.utf8_lpad(pa.array(numbers).cast(pa.string()), width, "0")

    child = rng.random(n) < 0.03
    age = np.where(child, rng.uniform(5, 16, n), np.clip(rng.normal(57, 18, n), 16, 95.9))
    female = rng.random(n) < 0.54
    practice = rng.choice(len(PRACTICES), n, p=PRACTICE_WEIGHTS)
    diet = rng.choice(4, n, p=(0.80, 0.07, 0.04, 0.09))  # omnivore, vegetarian, vegan, blank
    metformin = rng.random(n) < np.where(age >= 45, 0.22, np.where(age >= 16, 0.04, 0.0))
    autoimmune = rng.random(n) < 0.02
    bariatric = rng.random(n) < 0.015
    crohns = rng.random(n) < 0.012
    resected = (crohns & (rng.random(n) < 0.6)) | (rng.random(n) < 0.002)
    resection_cm = np.where(resected, rng.integers(5, 61, n), 0)
    neuro = rng.random(n) < 0.10
    pregnant = female & (age >= 16) & (age < 45) & (rng.random(n) < 0.08)

    # 'True' serum cobalamin (ng/L): lower with a plant diet, metformin, malabsorption.
    median = 380.0 * np.where((diet == 1) | (diet == 2), 0.8, 1.0)
    median = median * np.where(metformin, 0.85, 1.0) * np.where(autoimmune | bariatric, 0.6, 1.0)
    latent = median * np.exp(0.55 * rng.standard_normal(n))

    # 88% have B12-related tests, 4% only unrelated tests, 8% no lab row at all.
    lab_group = rng.choice(3, n, p=(0.88, 0.04, 0.08))
    med_only_metformin = rng.random(n_med_only) < 0.7
    return {
        "ids": ids, "id_numbers": numbers, "n": n, "age": age, "female": female,
        "practice": practice, "diet": diet, "metformin": metformin, "autoimmune": autoimmune,
        "bariatric": bariatric, "crohns": crohns, "resected": resected,
        "resection_cm": resection_cm, "neuro": neuro, "pregnant": pregnant, "latent": latent,
        "lab_group": lab_group, "med_only_metformin": med_only_metformin,
        "birth_days": as_of_days - np.rint(age * 365.25).astype(np.int64),
    }


def _patients_table(rng: np.random.Generator, cohort: dict[str, Any]) -> dict[str, _Column]:
    """The patients file: one row per cohort patient, sorted by id, yes/no spelt many ways."""
    n = cohort["n"]
    order = np.argsort(cohort["id_numbers"][:n], kind="stable")

    def yes_no(flag: np.ndarray) -> _Column:
        style = rng.integers(0, len(_YES), n)
        idx = np.where(flag, style, style + len(_YES))
        idx = np.where(~flag & (rng.random(n) < 0.02), 2 * len(_YES), idx)  # a few unknowns
        return _column((*_YES, *_NO, ""), idx[order])

    # Resected cm; 0 for Crohn's without resection; empty (-1) for everyone else.
    resection = np.where(cohort["resected"], cohort["resection_cm"],
                         np.where(cohort["crohns"], 0, -1))[order]
    return {
        "patient_id": _column(cohort["ids"], order),
        "birth_date": _date_strings(cohort["birth_days"][order]),
        "sex": _column(("M", "F"), cohort["female"][order]),
        "practice_id": _column(PRACTICES, cohort["practice"][order]),
        "diet": _column(("omnivore", "vegetarian", "vegan", ""), cohort["diet"][order]),
        "autoimmune_gastritis": yes_no(cohort["autoimmune"]),
        "bariatric_surgery": yes_no(cohort["bariatric"]),
        "crohns_disease": yes_no(cohort["crohns"]),
        "neurological_symptoms": yes_no(cohort["neuro"]),
        "pregnant": yes_no(cohort["pregnant"]),
        "ileal_resection_cm": _encode(resection, _format_numbers),
    }


# --------------------------------------------------------------------------------------
# labs


def _labs(
    rng: np.random.Generator, cohort: dict[str, Any], as_of_days: int, per_patient: float,
    shape: _Shape,
) -> tuple[dict[str, _Column], np.ndarray, np.ndarray]:
    """Lab rows in collection order, with their sort key and a mask of B12/MMA rows."""
    n = cohort["n"]
    latent = cohort["latent"]
    target_rows = max(1, round(n * per_patient))
    tested = np.flatnonzero(cohort["lab_group"] == 0)
    if tested.size == 0:
        tested = np.arange(1)
    # Each episode (one blood sample) gives ~1.31 B12/MMA rows on average.
    n_episodes = max(1, round(target_rows * (1 - shape.other_share) / 1.31))
    if n_episodes >= tested.size:
        extra = rng.choice(tested, n_episodes - tested.size)
        ep_pat = np.concatenate([tested, extra])
    else:
        ep_pat = rng.choice(tested, n_episodes, replace=False)
    ep_off = rng.integers(0, WINDOW_DAYS + 1, n_episodes)
    ep_off[0] = 0  # as_of is the latest date present
    ep_sec = _times(rng, n_episodes)
    ep_spec = np.arange(n_episodes)
    kind_u = rng.random(n_episodes)
    has_total = kind_u < 0.75
    has_active = kind_u >= 0.62  # 0.62-0.75: same-day total + active pair

    tot = np.flatnonzero(has_total)
    tot_val = np.clip(latent[ep_pat[tot]] * np.exp(0.12 * rng.standard_normal(tot.size)),
                      *_CLIP["total"])
    act = np.flatnonzero(has_active)
    act_val = np.clip(latent[ep_pat[act]] / 5.2 * np.exp(0.2 * rng.standard_normal(act.size)),
                      *_CLIP["active"])
    indeterminate = np.zeros(n_episodes, dtype=bool)
    indeterminate[tot] |= (tot_val >= 180) & (tot_val <= 350)
    indeterminate[act] |= (act_val >= 25) & (act_val <= 70)

    # MMA mostly for indeterminate episodes: usually after, sometimes same day or before.
    mma = np.flatnonzero(rng.random(n_episodes) < np.where(indeterminate, 0.45, 0.04))
    when = rng.random(mma.size)
    shift = np.where(when < 0.6, -rng.integers(1, 43, mma.size),
                     np.where(when < 0.8, 0, rng.integers(1, 91, mma.size)))
    mma_off = ep_off[mma] + shift
    # A shift that would leave the window goes the other way instead of piling up at its edge.
    mma_off = np.clip(np.where((mma_off < 0) | (mma_off > WINDOW_DAYS), ep_off[mma] - shift,
                               mma_off), 0, WINDOW_DAYS)
    mma_lat = latent[ep_pat[mma]]
    mma_median = np.where(mma_lat < 180, 0.8, np.where(mma_lat < 260, 0.5, 0.27))
    mma_val = np.clip(mma_median * np.exp(0.35 * rng.standard_normal(mma.size)), *_CLIP["mma"])
    mma_spec = n_episodes + np.arange(mma.size)

    b12_rows = tot.size + act.size + mma.size
    n_other = round(b12_rows * shape.other_share / (1 - shape.other_share))
    episodes = (ep_pat, ep_off, ep_sec, ep_spec)
    first_free_spec = n_episodes + mma.size
    if shape.panel_weights is None:
        other = _single_tests(rng, cohort, n_other, episodes, tested, first_free_spec)
    else:
        other = _panel_tests(rng, cohort, n_other, episodes, tested, first_free_spec, shape)
    other_pat, other_off, other_sec, other_spec, other_kind, other_val = other

    kinds_table = shape.b12_kinds
    n_b12_kinds = len(kinds_table)
    group_kinds = {g: [i for i, k in enumerate(kinds_table) if k[0] == g]
                   for g in ("total", "active", "mma")}

    def kinds(group: str, size: int) -> np.ndarray:
        idx = group_kinds[group]
        weights = np.array([kinds_table[i][3] for i in idx], dtype=float)
        return np.asarray(idx)[rng.choice(len(idx), size, p=weights / weights.sum())]

    pat = np.concatenate([ep_pat[tot], ep_pat[act], ep_pat[mma], other_pat])
    off = np.concatenate([ep_off[tot], ep_off[act], mma_off, other_off])
    sec = np.concatenate([ep_sec[tot], ep_sec[act], _times(rng, mma.size), other_sec])
    spec = np.concatenate([ep_spec[tot], ep_spec[act], mma_spec, other_spec])
    kind = np.concatenate([kinds("total", tot.size), kinds("active", act.size),
                           kinds("mma", mma.size), n_b12_kinds + other_kind])
    value = np.concatenate([tot_val, act_val, mma_val, other_val])
    censor_scale = 1.0 if shape.censored else 0.0
    table = [(k[4], k[5], k[6], k[7], _CENSOR_MID[k[0]], _B12_CENSOR_RATE * censor_scale)
             for k in kinds_table]
    if shape.panel_weights is None:
        table += [(1.0, k[5], k[6], (), k[3], _OTHER_CENSOR_RATE) for k in _OTHER_KINDS]
        other_codes = tuple(k[0] for k in _OTHER_KINDS)
        other_units = tuple(k[1] for k in _OTHER_KINDS)
    else:
        table += [(1.0, t[4], t[5], t[6], t[2], _OTHER_CENSOR_RATE * censor_scale)
                  for t in _PANEL_TESTS]
        other_codes = tuple(t[0] for t in _PANEL_TESTS)
        other_units = tuple(t[1] for t in _PANEL_TESTS)
    result = _result_text(rng, kind, value, table)
    if shape.typed:
        sec = np.full(sec.size, -1)  # a date32 column holds no time of day

    day = as_of_days - off
    time_key = day * 86400 + np.maximum(sec, 0)
    order = np.argsort(time_key * (spec.max() + 1) + spec, kind="stable")
    pat, day, sec, spec, kind = pat[order], day[order], sec[order], spec[order], kind[order]
    time_key = time_key[order]

    # Specimen numbers increase with collection order, as accession numbers do.
    first = np.ones(spec.size, dtype=bool)
    first[1:] = spec[1:] != spec[:-1]
    spec_no = 26_000_000 + np.cumsum(first)
    practice = cohort["practice"][pat]
    site = PRACTICE_SITE[practice] ^ (rng.random(pat.size) < 0.05)
    codes = tuple(k[1] for k in kinds_table) + other_codes
    units = tuple(k[2] for k in kinds_table) + other_units
    code_idx = kind
    if shape.panel_weights is not None:
        # The odd 'Na' or 'k': the same test in its other spelling.
        spelt = np.full(len(other_codes), -1)
        spelt[[other_codes.index(c) for c in _SPELLINGS]] = len(codes) + np.arange(len(_SPELLINGS))
        codes = codes + tuple(_SPELLINGS.values())
        other_rows = kind >= n_b12_kinds
        variant = np.where(other_rows, spelt[np.where(other_rows, kind - n_b12_kinds, 0)], -1)
        swap = (variant >= 0) & (rng.random(kind.size) < shape.spelling_rate)
        code_idx = np.where(swap, variant, kind)
    labs = {
        "patient_id": _column(cohort["ids"], pat),
        "collected_at": _datetime_strings(day, sec),
        "test_code": _column(codes, code_idx),
        "result": _Column(result.texts, result.idx[order]),
        "unit": _column(units, kind),
        "practice_id": _column(PRACTICES, practice),
        "site_id": _column(SITES, site),
        "specimen_id": _encode(spec_no, _format_specimen),
    }
    return labs, time_key, kind < n_b12_kinds


_Episodes = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
_OtherRows = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _free_samples(
    rng: np.random.Generator, cohort: dict[str, Any], n_free: int, tested: np.ndarray,
    first_spec: int, spread: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Samples without B12, covering every 'other tests only' patient: patient, day offset,
    seconds and specimen. ``spread``: each on a different patient while there are any."""
    other_only = np.flatnonzero(cohort["lab_group"] == 1)
    n_free = max(n_free, other_only.size)
    free_pool = np.concatenate([tested, other_only])
    n_more = n_free - other_only.size
    if spread and n_more <= free_pool.size:
        more = rng.choice(free_pool, n_more, replace=False)
    else:
        more = rng.choice(free_pool, n_more)
    free_pat = np.concatenate([other_only, more])
    free_off = rng.integers(0, WINDOW_DAYS + 1, n_free)
    free_sec = _times(rng, n_free)
    return free_pat, free_off, free_sec, first_spec + np.arange(n_free)


def _single_tests(
    rng: np.random.Generator, cohort: dict[str, Any], n_other: int, episodes: _Episodes,
    tested: np.ndarray, first_spec: int,
) -> _OtherRows:
    """Classic shape: one unrelated test per sample (patient, offset, seconds, specimen,
    index into _OTHER_KINDS, value)."""
    ep_pat, ep_off, ep_sec, ep_spec = episodes
    # One unrelated test on some episodes' samples (never two: no accidental duplicates) ...
    n_attached = min(round(0.7 * n_other), ep_pat.size)
    att = rng.choice(ep_pat.size, n_attached, replace=False)
    # ... the rest on their own samples, covering every 'unrelated tests only' patient.
    free_pat, free_off, free_sec, free_spec = _free_samples(
        rng, cohort, n_other - n_attached, tested, first_spec)
    other_w = np.array([k[2] for k in _OTHER_KINDS], dtype=float)
    other_kind = rng.choice(len(_OTHER_KINDS), n_attached + free_pat.size,
                            p=other_w / other_w.sum())
    other_med = np.array([k[3] for k in _OTHER_KINDS])[other_kind]
    other_sd = np.array([k[4] for k in _OTHER_KINDS])[other_kind]
    other_val = other_med * np.exp(other_sd * rng.standard_normal(other_kind.size))
    return (np.concatenate([ep_pat[att], free_pat]), np.concatenate([ep_off[att], free_off]),
            np.concatenate([ep_sec[att], free_sec]), np.concatenate([ep_spec[att], free_spec]),
            other_kind, other_val)


def _panel_tests(
    rng: np.random.Generator, cohort: dict[str, Any], n_other: int, episodes: _Episodes,
    tested: np.ndarray, first_spec: int, shape: _Shape,
) -> _OtherRows:
    """Field shapes: about ``n_other`` rows of requested panels (one panel per sample, each
    test once), on B12 samples and on samples of their own; indices into _PANEL_TESTS.

    ``shape.spread``: one test per sample instead, each test as common as in the panels.
    """
    ep_pat, ep_off, ep_sec, ep_spec = episodes
    assert shape.panel_weights is not None
    weights = np.asarray(shape.panel_weights, dtype=float)
    weights = weights / weights.sum()
    test_of = {t[0]: i for i, t in enumerate(_PANEL_TESTS)}
    flat = np.array([test_of[c] for _, codes in _PANELS for c in codes])
    sizes = np.array([len(codes) for _, codes in _PANELS])
    per_test = np.bincount(flat, weights=np.repeat(weights, sizes), minlength=len(_PANEL_TESTS))
    mean_rows = 1.0 if shape.spread else float(weights @ sizes)
    n_samples = max(1, round(n_other / mean_rows))
    n_attached = min(round(shape.attach_share * n_samples), ep_pat.size)
    att = rng.choice(ep_pat.size, n_attached, replace=False)
    free_pat, free_off, free_sec, free_spec = _free_samples(
        rng, cohort, n_samples - n_attached, tested, first_spec, shape.spread)
    s_pat = np.concatenate([ep_pat[att], free_pat])
    s_off = np.concatenate([ep_off[att], free_off])
    s_sec = np.concatenate([ep_sec[att], free_sec])
    s_spec = np.concatenate([ep_spec[att], free_spec])

    if shape.spread:
        row_sample = np.arange(s_pat.size)
        test = rng.choice(len(_PANEL_TESTS), s_pat.size, p=per_test / per_test.sum())
    else:
        # Expand samples to rows: the panel's tests, in the panel's order.
        panel = rng.choice(len(_PANELS), s_pat.size, p=weights)
        panel_start = np.cumsum(sizes) - sizes
        per_sample = sizes[panel]
        row_sample = np.repeat(np.arange(s_pat.size), per_sample)
        first_row = np.repeat(np.cumsum(per_sample) - per_sample, per_sample)
        position = np.arange(row_sample.size) - first_row
        test = flat[panel_start[panel][row_sample] + position]
    median = np.array([t[2] for t in _PANEL_TESTS])[test]
    log_sd = np.array([t[3] for t in _PANEL_TESTS])[test]
    value = median * np.exp(log_sd * rng.standard_normal(test.size))
    return (s_pat[row_sample], s_off[row_sample], s_sec[row_sample], s_spec[row_sample], test,
            value)


def _times(rng: np.random.Generator, size: int) -> np.ndarray:
    """Seconds after midnight (08:00-17:59, whole minutes) for ~40% of rows, else -1."""
    minutes = rng.integers(8 * 60, 18 * 60, size)
    return np.where(rng.random(size) < 0.4, minutes * 60, -1)


def _result_text(
    rng: np.random.Generator, kind: np.ndarray, value: np.ndarray,
    table: list[tuple[float, int, tuple[str, ...], tuple[str, ...], float, float]],
) -> _Column:
    """Reported result texts: rounded to the kind's decimals, a few censored like '<150'.

    ``table`` has one entry per kind: factor from the canonical value to the reported unit,
    decimals, censored texts below and above, the value that separates them, censor rate.
    """
    factor = np.array([t[0] for t in table])[kind]
    decimals = np.array([t[1] for t in table])[kind]
    mid = np.array([t[4] for t in table])[kind]
    rate = np.array([t[5] for t in table])[kind]

    # Integer code per row: value x 10^decimals, with the decimals in the high part.
    scaled = np.clip(np.rint(value * factor * 10.0 ** decimals), 0, _CODE_SPAN - 1)
    numbers = _encode(decimals.astype(np.int64) * _CODE_SPAN + scaled.astype(np.int64),
                      _format_coded)

    # Censored texts: one flat list; each kind owns a low and a high slice of it.
    flat: list[str] = []
    low_start, low_len, high_start, high_len = [], [], [], []
    for entry in table:  # the ~30 result kinds, not rows
        low_start.append(len(flat))
        low_len.append(len(entry[2]))
        flat.extend(entry[2])
        high_start.append(len(flat))
        high_len.append(len(entry[3]))
        flat.extend(entry[3])
    low = value < mid
    start = np.where(low, np.array(low_start)[kind], np.array(high_start)[kind])
    length = np.where(low, np.array(low_len)[kind], np.array(high_len)[kind])
    censored = np.flatnonzero((rng.random(kind.size) < rate) & (length > 0))
    pick = start + np.floor(rng.random(kind.size) * np.maximum(length, 1)).astype(np.int64)
    idx = numbers.idx.copy()
    idx[censored] = len(numbers.texts) + pick[censored]
    return _Column(pa.concat_arrays([numbers.texts, _texts(tuple(flat))]), idx)


def _format_coded(codes: np.ndarray) -> pa.Array:
    """Decode value x 10^decimals codes into result text ('231', '45.2', '0.31')."""
    decimals, scaled = codes // _CODE_SPAN, codes % _CODE_SPAN
    as_int = pa.array(scaled).cast(pa.string())
    as_dec = pa.array(scaled / 10.0 ** decimals).cast(pa.string())
    return pc.if_else(pa.array(decimals == 0), as_int, as_dec)


def _make_messy(
    rng: np.random.Generator, labs: dict[str, _Column], sort_key: np.ndarray, mapped: np.ndarray,
    as_of_days: int, bad_per_mapped: bool = False,
) -> dict[str, _Column]:
    """Add the bad rows real extracts carry: copies of B12/MMA rows with one field broken,
    exact duplicates, whitespace around ids and spreadsheet-formula ids.

    Bad rows are 3 % of all rows (classic), or of the B12/MMA rows (``bad_per_mapped``):
    the reject rate counts B12/MMA rows only, and where they are a minority 3 % of all rows
    would exceed the default --max-reject-rate.
    """
    n = sort_key.size
    # Future-dated rows stay years ahead of as_of (and so of any date a run accepts).
    future_year = max(2030, date.fromordinal(_EPOCH.toordinal() + as_of_days).year + 3)
    bad_text = {**_BAD_TEXT, "future_date": (f"{future_year}-01-01",)}
    mapped_rows = np.flatnonzero(mapped)
    if mapped_rows.size == 0:
        return labs
    labs = dict(labs)
    # Whitespace around some ids (the rows stay valid once ids are trimmed).
    padded = np.flatnonzero(rng.random(n) < 0.01)
    pad = rng.integers(0, 3, padded.size)
    ids = labs["patient_id"]
    spaced = pc.binary_join_element_wise(
        _pick((" ", "", "  "), pad), pc.take(ids.texts, pa.array(ids.idx[padded])),
        _pick(("", " ", " "), pad), "")
    labs["patient_id"] = _replace(ids, padded, spaced)

    n_bad = max(2 * len(_BAD_KINDS), round(0.03 * (mapped_rows.size if bad_per_mapped else n)))
    bad_kind = rng.permutation(np.arange(n_bad) % len(_BAD_KINDS))
    bad_src = rng.choice(mapped_rows, n_bad, replace=mapped_rows.size < n_bad)
    n_dup = max(3, round(0.005 * n))
    dup_src = rng.choice(n, n_dup)
    formula_src = rng.choice(mapped_rows, 2 * len(FORMULA_IDS))
    src = np.concatenate([bad_src, dup_src, formula_src])
    bad_rows = n + np.arange(n_bad)  # row numbers of the added rows
    formula_rows = n + n_bad + n_dup + np.arange(formula_src.size)
    implausible = bad_rows[bad_kind == _BAD_KINDS.index("implausible_value")]

    order = np.argsort(np.concatenate([sort_key, sort_key[src]]), kind="stable")
    for col in LAB_COLUMNS:  # a loop over eight columns, not rows
        column = labs[col]
        column = _Column(column.texts, np.concatenate([column.idx, column.idx[src]]))
        for k, name in enumerate(_BAD_KINDS):
            if _BAD_COLUMN[name] == col:
                rows = bad_rows[bad_kind == k]
                options = bad_text[name]
                texts = _pick(options, rng.integers(0, len(options), rows.size))
                column = _replace(column, rows, texts)
        if col in _IMPLAUSIBLE_FIXED:
            texts = _pick((_IMPLAUSIBLE_FIXED[col],), np.zeros(implausible.size))
            column = _replace(column, implausible, texts)
        if col == "patient_id":
            column = _replace(column, formula_rows, _texts(FORMULA_IDS * 2))
        labs[col] = _Column(column.texts, column.idx[order])
    return labs


_BAD_COLUMN = {
    "missing_patient_id": "patient_id", "bad_date": "collected_at",
    "future_date": "collected_at", "non_numeric_result": "result",
    "negative_result": "result", "unknown_unit": "unit", "implausible_value": "result",
}
# A unit slip (0.25 'ng/L') needs a total B12 code and unit whatever row it was copied from.
_IMPLAUSIBLE_FIXED = {"test_code": "B12", "unit": "ng/L"}


def _replace(column: _Column, rows: np.ndarray, texts: pa.Array) -> _Column:
    """``column`` with ``rows`` now holding ``texts`` (appended to its distinct texts)."""
    idx = column.idx.copy()
    idx[rows] = len(column.texts) + np.arange(rows.size)
    return _Column(pa.concat_arrays([column.texts, texts.cast(pa.string())]), idx)


# --------------------------------------------------------------------------------------
# medications


class _Prescriptions:
    """Prescriptions drawn catalogue by catalogue, then sorted into one table.

    A catalogue is a tuple of (name, weight[, dose mg/day]); each call to ``add`` gives the
    patients one prescription each, with start (days before as_of) and end offsets.
    """

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.groups: list[tuple[np.ndarray, ...]] = []
        self.names: list[str] = []

    @property
    def size(self) -> int:
        return sum(g[0].size for g in self.groups)

    def add(self, patients: np.ndarray, catalogue: tuple, doses: np.ndarray | None,
            start_range: tuple[int, int], stop_rate: float, future_end_rate: float) -> None:
        """Prescriptions for ``patients`` from ``catalogue``; some stopped before as_of, some
        with a planned end after it, the rest open-ended."""
        rng = self.rng
        size = patients.size
        weights = np.array([c[1] for c in catalogue], dtype=float)
        which = rng.choice(len(catalogue), size, p=weights / weights.sum())
        if doses is None:
            doses = np.array([c[2] if len(c) > 2 else np.nan for c in catalogue])[which]
        start = rng.integers(*start_range, size)  # days before as_of
        u = rng.random(size)
        stopped_end = rng.integers(1, np.maximum(start, 2))  # after start, before as_of
        future_end = -rng.integers(1, 181, size)
        stopped = (u < stop_rate) & (start >= 2)
        end = np.where(stopped, stopped_end,
                       np.where(u < stop_rate + future_end_rate, future_end, _NO_END))
        self.groups.append((patients, len(self.names) + which, doses.astype(float), start, end))
        self.names.extend(c[0] for c in catalogue)

    def table(self, cohort: dict[str, Any], as_of_days: int) -> dict[str, _Column]:
        """One row per prescription, sorted by patient, latest start first, then name."""
        pat, name, dose, start, end = (np.concatenate(parts)
                                       for parts in zip(*self.groups, strict=True))
        order = np.lexsort((name, -start, cohort["id_numbers"][pat]))
        pat, name, dose, start, end = pat[order], name[order], dose[order], start[order], end[order]
        end_day = np.where(end != _NO_END, as_of_days - end, _NO_DATE)
        dose_thousandths = np.where(np.isnan(dose), -1, np.rint(np.nan_to_num(dose) * 1000))
        return {
            "patient_id": _column(cohort["ids"], pat),
            "medication": _column(tuple(self.names), name),
            "start_date": _date_strings(as_of_days - start),
            "end_date": _date_strings(end_day),
            "dose_mg_per_day": _encode(dose_thousandths.astype(np.int64), _format_thousandths),
        }


def _metformin_users(
    rng: np.random.Generator, cohort: dict[str, Any]
) -> tuple[np.ndarray, np.ndarray]:
    """Metformin users (cohort and medication-only patients) and a daily dose for each."""
    med_only = np.arange(cohort["n"], len(cohort["ids"]))
    users = np.concatenate([np.flatnonzero(cohort["metformin"]),
                            med_only[cohort["med_only_metformin"]]])
    dose = rng.choice(_METFORMIN_DOSES, users.size,
                      p=np.array(_METFORMIN_DOSE_WEIGHTS) / sum(_METFORMIN_DOSE_WEIGHTS))
    return users, dose.astype(float)


def _medications(
    rng: np.random.Generator, cohort: dict[str, Any], as_of_days: int
) -> dict[str, _Column]:
    """Classic shape: metformin (some stopped), B12 oral/injection, PPIs, others."""
    rx, _ = _base_prescriptions(rng, cohort, (_METFORMIN, _B12_ORAL, _PPI, _OTHER_MEDS))
    return rx.table(cohort, as_of_days)


def _base_prescriptions(rng: np.random.Generator, cohort: dict[str, Any],
                        names: tuple[Any, Any, Any, Any]) -> tuple[_Prescriptions, np.ndarray]:
    """Metformin (some stopped), B12 oral and injection, acid suppressants and other
    medicines, drawn in one order whatever the shape (so a shape's names change nothing
    else): ``names`` are the metformin, oral B12, acid-suppressant and other-medicine
    name tables. Returns the prescriptions and the metformin users."""
    metformin_names, oral_names, acid_names, other_names = names
    n = cohort["n"]
    age = cohort["age"]
    deficient = cohort["latent"] < 180
    med_only = np.arange(n, len(cohort["ids"]))
    rx = _Prescriptions(rng)
    metformin, met_dose = _metformin_users(rng, cohort)
    rx.add(metformin, metformin_names, met_dose, (30, 3651), 0.18, 0.05)
    oral = np.flatnonzero(rng.random(n) < np.where(deficient, 0.25, 0.03))
    rx.add(oral, oral_names, None, (0, 400), 0.15, 0.0)
    injection = np.flatnonzero(rng.random(n) < np.where(deficient, 0.15, 0.01))
    rx.add(injection, _B12_INJECTION, None, (0, 400), 0.10, 0.0)
    acid = np.flatnonzero(rng.random(n) < np.where(age >= 60, 0.2, 0.1))
    rx.add(acid, acid_names, None, (30, 2001), 0.10, 0.0)
    other = np.concatenate([np.flatnonzero(rng.random(n) < 0.35),
                            med_only[~cohort["med_only_metformin"]]])
    rx.add(other, other_names, None, (10, 3001), 0.08, 0.0)
    return rx, metformin


def _field_medications(
    rng: np.random.Generator, cohort: dict[str, Any], as_of_days: int
) -> dict[str, _Column]:
    """Field shapes: as classic, with methylcobalamin, every PPI by name, H2 blockers,
    medicines a careless pattern would catch, and ~1 % metformin + methylcobalamin
    combination prescriptions (some metformin users switched to one, some on both)."""
    rx, metformin = _base_prescriptions(rng, cohort, (_METFORMIN_FIELD, _B12_ORAL_FIELD,
                                                      _ACID_FIELD, _OTHER_MEDS_FIELD))
    # Combination products: about _COMBINATION_SHARE of all prescriptions, at least one.
    n_combo = max(1, round(rx.size * _COMBINATION_SHARE / (1 - _COMBINATION_SHARE)))
    pool = metformin if metformin.size else np.arange(len(cohort["ids"]))
    combo = rng.choice(pool, n_combo, replace=pool.size < n_combo)
    combo_dose = rng.choice(_COMBINATION_DOSES, n_combo).astype(float)
    rx.add(combo, _COMBINATION, combo_dose, (14, 1500), 0.10, 0.0)
    return rx.table(cohort, as_of_days)


# --------------------------------------------------------------------------------------
# text helpers and writers


def _texts(options: tuple[str, ...]) -> pa.Array:
    return pa.array(options, type=pa.string())


def _pick(options: tuple[str, ...], idx: np.ndarray) -> pa.Array:
    """Vectorised lookup of a few options, as plain text."""
    return pc.take(_texts(options), pa.array(np.asarray(idx, dtype=np.int64)))


def _column(options: tuple[str, ...] | pa.Array, idx: np.ndarray) -> _Column:
    """Rows as indices into a few distinct texts (codes, units, spellings, ids)."""
    texts = _texts(options) if isinstance(options, tuple) else options
    return _Column(texts, np.asarray(idx, dtype=np.int64))


def _encode(keys: np.ndarray, fmt: Callable[[np.ndarray], pa.Array]) -> _Column:
    """Format each distinct integer key once (dates, numbers); rows index into the texts.

    Keys span a small range, so a presence table finds the distinct ones without sorting.
    """
    keys = np.asarray(keys, dtype=np.int64)
    low = int(keys.min())
    shifted = keys - low
    present = np.zeros(int(shifted.max()) + 1, dtype=bool)
    present[shifted] = True
    distinct = np.flatnonzero(present)
    position = np.zeros(present.size, dtype=np.int64)
    position[distinct] = np.arange(distinct.size)
    return _Column(fmt(distinct + low), position[shifted])


def _format_dates(days: np.ndarray) -> pa.Array:
    """Days since 1970-01-01 -> 'YYYY-MM-DD'; _NO_DATE -> ''."""
    missing = days == _NO_DATE
    text = pa.array(np.where(missing, 0, days).astype("datetime64[D]")).cast(pa.string())
    return pc.if_else(pa.array(missing), "", text)


def _format_numbers(values: np.ndarray) -> pa.Array:
    """Non-negative integers as text; negative means empty."""
    return pc.if_else(pa.array(values < 0), "", pa.array(values).cast(pa.string()))


def _format_thousandths(values: np.ndarray) -> pa.Array:
    """Thousandths as a decimal ('500', '0.05'); negative means empty."""
    return pc.if_else(pa.array(values < 0), "", pa.array(values / 1000).cast(pa.string()))


def _format_specimen(values: np.ndarray) -> pa.Array:
    """Accession numbers as specimen ids ('S26000001')."""
    return pc.binary_join_element_wise("S", pa.array(values).cast(pa.string()), "")


def _date_strings(days: np.ndarray) -> _Column:
    """Days since 1970-01-01 -> 'YYYY-MM-DD' ('' for _NO_DATE)."""
    return _encode(days, _format_dates)


def _datetime_strings(days: np.ndarray, seconds: np.ndarray) -> _Column:
    """'YYYY-MM-DD' where seconds < 0, else 'YYYY-MM-DDTHH:MM:SS' (whole minutes)."""
    span = 24 * 60 + 1
    minute = np.where(seconds >= 0, seconds // 60 + 1, 0)  # 0 = date only

    def fmt(keys: np.ndarray) -> pa.Array:
        day, slot = keys // span, keys % span
        stamps = (day * 86400 + np.maximum(slot - 1, 0) * 60).astype("datetime64[s]")
        timed = pc.replace_substring(pa.array(stamps).cast(pa.string()), " ", "T")
        return pc.if_else(pa.array(slot > 0), timed, _format_dates(day))

    return _encode(days * span + minute, fmt)


def _parquet_column(column: _Column) -> pa.Array:
    """Dictionary-encoded text with null for empty cells. A huge dictionary (patient ids) is
    decoded, because Parquet would store it again in every row group. Repeated texts are
    merged first: Parquet's output for a dictionary with repeats is not reproducible."""
    unique = pc.unique(column.texts)
    if len(unique) < len(column.texts):
        remap = np.asarray(pc.index_in(column.texts, unique), dtype=np.int64)
        column = _Column(unique, remap[column.idx])
    is_empty = np.asarray(pc.equal(column.texts, "").fill_null(True), dtype=bool)
    mask = is_empty[column.idx] if is_empty.any() else None
    values = pa.DictionaryArray.from_arrays(column.idx.astype(np.int32), column.texts, mask=mask)
    if len(column.texts) > _DICTIONARY_MAX:
        return values.dictionary_decode()
    return values


def _typed_column(column: _Column, type_: pa.DataType) -> pa.Array:
    """The column as ``type_`` (a lab system exporting numbers and dates, not text): each
    distinct text used by a row is converted once; unused texts are never parsed."""
    used = np.zeros(len(column.texts), dtype=bool)
    used[column.idx] = True
    texts = pc.if_else(pa.array(used), column.texts, pa.scalar(None, pa.string()))
    return pc.take(texts.cast(type_), pa.array(column.idx))


def _csv_field(values: pa.Array) -> pa.Array:
    """RFC 4180 quoting only where needed (delimiter, quote or newline in the field)."""
    needs = pc.match_substring_regex(values, '[,"\r\n]')
    if not pc.any(needs).as_py():
        return values
    quoted = pc.binary_join_element_wise('"', pc.replace_substring(values, '"', '""'), '"', "")
    return pc.if_else(needs, quoted, values)


def _write_csv(path: Path, columns: dict[str, _Column], names: tuple[str, ...]) -> None:
    """UTF-8 CSV with minimal quoting, built in Arrow and written buffer by buffer.

    pyarrow.csv quotes every text cell; a lab extract quotes only what needs it. Each
    column's distinct texts are quoted once, then rows are gathered chunk by chunk.
    """
    n = columns[names[0]].idx.size
    texts = [_csv_field(columns[c].texts) for c in names]
    with path.open("wb") as fh:
        fh.write((",".join(names) + "\n").encode())
        for start in range(0, n, _CSV_CHUNK_ROWS):  # chunks of a million rows, not rows
            stop = start + _CSV_CHUNK_ROWS
            fields = [pc.take(t, pa.array(columns[c].idx[start:stop]))
                      for c, t in zip(names, texts, strict=True)]
            lines = pc.binary_join_element_wise(*fields, ",")
            lines = pc.binary_join_element_wise(lines, "", "\n")
            offsets = np.frombuffer(lines.buffers()[1], dtype=np.int32)
            first, last = offsets[lines.offset], offsets[lines.offset + len(lines)]
            fh.write(memoryview(lines.buffers()[2])[first:last])
