"""R1-R7 and the two analyst tables in polars: the benchmark's "for context" implementation.

A line-for-line port of ``reference_r1_r7.sql`` (the DuckDB reference) to polars' lazy API,
so both do the same core work on the same extract: drop exact duplicate rows, map test codes
to analytes, parse dates and censored results, convert units, reject implausible values,
band R1-R3, pick the R4 index test, resolve it with R5's MMA, and write

- ``polars_patients.parquet``: patient_id, b12_status, needs_mma (R6, R7), and
- ``polars_results.parquet``: patient_id, collected_at, analyte, value, unit, censor, band.

Thresholds are read from the rules profile TOML by ``reference.default_thresholds`` (the same
numbers the SQL gets). Example::

    python benchmarks/reference_polars.py labs.parquet --as-of 2026-10-31 --out /tmp/pl
"""

from __future__ import annotations

import argparse
import sys
from datetime import date, datetime
from pathlib import Path
from typing import Any

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reference import default_thresholds  # noqa: E402

# canonical.toml [labs.codes] / [labs.default_units], as in the SQL's ref_codes.
CODES = pl.DataFrame(
    {
        "code": ["B12", "VITB12", "2132-9", "14685-2", "HOLOTC", "ACTB12", "72160-5", "MMA",
                 "13964-2"],
        "analyte": ["b12_total", "b12_total", "b12_total", "b12_total", "b12_active",
                    "b12_active", "b12_active", "mma", "mma"],
        "default_unit": [None, None, "ng/L", "pmol/L", None, None, "pmol/L", None, "umol/L"],
    },
    schema={"code": pl.String, "analyte": pl.String, "default_unit": pl.String},
)
MISSING = ["", "NULL", "null", "N/A", "n/a", "NA", "-", "None"]
DATE_RE = r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?$"
RESULT_RE = r"^\s*(<=|>=|<|>)?\s*(\d+(\.\d*)?|\.\d+)\s*$"
SEVERITY = {"deficient": 3, "indeterminate": 2, "unlikely": 1}


def _units(t: dict[str, Any]) -> pl.DataFrame:
    """Accepted units per analyte: value * mult / div, canonical unit, plausible range."""
    rows = [
        ("b12_total", "ng/l", 1.0, 1.0, "ng/L", "b12_total"),
        ("b12_total", "pg/ml", 1.0, 1.0, "ng/L", "b12_total"),
        ("b12_total", "pmol/l", float(t["pmol_to_ng"]), 1.0, "ng/L", "b12_total"),
        ("b12_active", "pmol/l", 1.0, 1.0, "pmol/L", "b12_active"),
        ("mma", "umol/l", 1.0, 1.0, "µmol/L", "mma"),
        ("mma", "nmol/ml", 1.0, 1.0, "µmol/L", "mma"),
        ("mma", "nmol/l", 1.0, 1000.0, "µmol/L", "mma"),
    ]
    return pl.DataFrame(
        {
            "analyte": [r[0] for r in rows], "unit_key": [r[1] for r in rows],
            "mult": [r[2] for r in rows], "div": [r[3] for r in rows],
            "unit": [r[4] for r in rows],
            "plausible_min": [float(t[f"{r[5]}_plausible_min"]) for r in rows],
            "plausible_max": [float(t[f"{r[5]}_plausible_max"]) for r in rows],
        }
    )


def _cell(name: str) -> pl.Expr:
    """Trimmed text; the format's missing-value tokens become null."""
    text = pl.col(name).cast(pl.String).str.strip_chars()
    return pl.when(text.is_in(MISSING)).then(None).otherwise(text)


def _timestamp(text: pl.Expr) -> pl.Expr:
    """ISO date or date-time (``T`` or space, optional seconds and fraction); else null."""
    spaced = text.str.replace("T", " ", literal=True)
    parsed = pl.coalesce(
        spaced.str.strptime(pl.Datetime("us"), "%Y-%m-%d %H:%M:%S%.f", strict=False),
        spaced.str.strptime(pl.Datetime("us"), "%Y-%m-%d %H:%M", strict=False),
        spaced.str.strptime(pl.Date, "%Y-%m-%d", strict=False).cast(pl.Datetime("us")),
    )
    return pl.when(text.str.contains(DATE_RE)).then(parsed)


def classify(labs: pl.LazyFrame, as_of: date, today: date,
             t: dict[str, Any]) -> tuple[pl.LazyFrame, pl.LazyFrame]:
    """(patients, results) lazy frames for one extract."""
    earliest = datetime.fromisoformat(str(t["earliest_date"]))
    mapped = (
        labs.unique()
        .with_columns(code=_cell("test_code").str.to_uppercase())
        .join(CODES.lazy(), on="code", how="inner")
        .select(
            patient_id=_cell("patient_id"),
            collected_text=_cell("collected_at"),
            analyte=pl.col("analyte"),
            result_text=_cell("result"),
            unit_key=pl.coalesce(_cell("unit"), pl.col("default_unit"))
            .str.replace_all("µ", "u", literal=True).str.replace_all("μ", "u", literal=True)
            .str.to_lowercase(),
        )
        .collect()
        .lazy()
    )
    numeric = pl.col("result_text").str.contains(RESULT_RE)
    parsed = (
        mapped.filter(pl.col("patient_id").is_not_null())
        .join(_units(t).lazy(), on=["analyte", "unit_key"], how="left")
        .select(
            "patient_id", "analyte", "unit", "plausible_min", "plausible_max",
            collected_at=_timestamp(pl.col("collected_text")),
            censor=pl.when(numeric).then(
                pl.col("result_text").str.extract(RESULT_RE, 1).fill_null("")),
            value=pl.when(numeric).then(
                (pl.col("result_text").str.extract(RESULT_RE, 2).cast(pl.Float64)
                 * pl.col("mult") / pl.col("div")).round(6)),
        )
    )
    lo = (pl.when(pl.col("analyte") == "b12_total").then(t["total_deficient_below"])
          .when(pl.col("analyte") == "b12_active").then(t["active_deficient_below"]))
    hi = (pl.when(pl.col("analyte") == "b12_total").then(t["total_unlikely_above"])
          .when(pl.col("analyte") == "b12_active").then(t["active_unlikely_above"]))
    value, censor = pl.col("value"), pl.col("censor")
    band = (
        pl.when(pl.col("analyte") == "mma").then(None)
        .when(censor == "").then(pl.when(value < lo).then(pl.lit("deficient"))
                                 .when(value > hi).then(pl.lit("unlikely"))
                                 .otherwise(pl.lit("indeterminate")))
        .when(censor == "<").then(pl.when(value <= lo).then(pl.lit("deficient"))
                                  .otherwise(pl.lit("indeterminate")))
        .when(censor == "<=").then(pl.when(value < lo).then(pl.lit("deficient"))
                                   .otherwise(pl.lit("indeterminate")))
        .when(censor == ">").then(pl.when(value >= hi).then(pl.lit("unlikely"))
                                  .otherwise(pl.lit("indeterminate")))
        .when(censor == ">=").then(pl.when(value > hi).then(pl.lit("unlikely"))
                                   .otherwise(pl.lit("indeterminate")))
    )
    rank = censor.replace_strict({"<": 0, "<=": 1, "": 2, ">=": 3}, default=4,
                                 return_dtype=pl.Int8)
    accepted = (
        parsed.filter(
            pl.col("collected_at").is_not_null()
            & (pl.col("collected_at") >= earliest)
            & (pl.col("collected_at").dt.date() <= today)
            & value.is_not_null() & pl.col("unit").is_not_null()
            & (value >= pl.col("plausible_min")) & (value <= pl.col("plausible_max")))
        .with_columns(collected_date=pl.col("collected_at").dt.date(), band=band,
                      censor_rank=rank)
        .collect()
        .lazy()
    )

    # R4: latest date in the window; per analyte its latest time (then lowest value); the
    # more severe band of total and active wins.
    start = pl.lit(as_of) - pl.duration(days=int(t["lookback_days"]))
    window = accepted.filter(pl.col("analyte").is_in(["b12_total", "b12_active"])
                             & (pl.col("collected_date") > start)
                             & (pl.col("collected_date") <= pl.lit(as_of)))
    on_day = window.filter(pl.col("collected_date")
                           == pl.col("collected_date").max().over("patient_id"))
    per_analyte = (
        on_day.sort(["patient_id", "analyte", "collected_at", "value", "censor_rank"],
                    descending=[False, False, True, False, False])
        .unique(["patient_id", "analyte"], keep="first", maintain_order=True)
    )
    index = per_analyte.group_by("patient_id").agg(
        index_date=pl.col("collected_date").first(),
        index_sev=pl.col("band").replace_strict(SEVERITY, return_dtype=pl.Int8).max(),
    )

    # R5: the latest MMA on/after the index date (same day: the highest value).
    upper = t["mma_upper"]
    mma = (
        accepted.filter(pl.col("analyte") == "mma")
        .join(index, on="patient_id", how="inner")
        .filter((pl.col("collected_date") >= pl.col("index_date"))
                & (pl.col("collected_date") <= pl.lit(as_of)))
        .sort(["patient_id", "collected_date", "value", "censor_rank"],
              descending=[False, True, True, True])
        .unique("patient_id", keep="first", maintain_order=True)
        .select("patient_id", mma_band=(
            pl.when(censor == "").then(pl.when(value > upper).then(pl.lit("deficient"))
                                       .otherwise(pl.lit("unlikely")))
            .when(censor.is_in(["<", "<="]) & (value <= upper)).then(pl.lit("unlikely"))
            .when((censor == ">") & (value >= upper)).then(pl.lit("deficient"))
            .when((censor == ">=") & (value > upper)).then(pl.lit("deficient"))))
    )

    # R6, R7 over every patient with a row whose code maps to an analyte.
    index_band = (pl.col("index_sev").replace_strict({3: "deficient", 2: "indeterminate",
                                                      1: "unlikely"}, default=None,
                                                     return_dtype=pl.String))
    status = (pl.when(pl.col("index_sev").is_null()).then(pl.lit("not_tested"))
              .when((index_band == "indeterminate") & pl.col("mma_band").is_not_null())
              .then(pl.col("mma_band"))
              .otherwise(index_band))
    patients = (
        mapped.select("patient_id").filter(pl.col("patient_id").is_not_null()).unique()
        .join(index, on="patient_id", how="left")
        .join(mma, on="patient_id", how="left")
        .select("patient_id", b12_status=status)
        .with_columns(needs_mma=pl.col("b12_status") == "indeterminate")
        .sort("patient_id")
    )
    results = (
        accepted.sort(["patient_id", "collected_at", "analyte", "value", "censor_rank"])
        .select("patient_id", "collected_at", "analyte", "value", "unit", "censor", "band")
    )
    return patients, results


def run_polars(labs_path: Path, as_of: date, out_dir: Path, *, today: date | None = None,
               thresholds: dict[str, Any] | None = None) -> tuple[Path, Path]:
    """Classify ``labs_path`` (Parquet) with polars; return (patients, results) paths."""
    t = {**default_thresholds(), **(thresholds or {})}
    out_dir.mkdir(parents=True, exist_ok=True)
    labs = pl.scan_parquet(labs_path)
    patients, results = classify(labs, as_of, today or date.today(), t)
    paths = (out_dir / "polars_patients.parquet", out_dir / "polars_results.parquet")
    patients.collect().write_parquet(paths[0])
    results.collect().write_parquet(paths[1])
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("labs", type=Path, help="canonical labs extract (Parquet)")
    parser.add_argument("--as-of", type=date.fromisoformat, required=True, help="YYYY-MM-DD")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--today", type=date.fromisoformat, default=None,
                        help="results after this date are rejected (default: today)")
    args = parser.parse_args(argv)
    patients, results = run_polars(args.labs, args.as_of, args.out, today=args.today)
    print(f"wrote {patients} and {results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
