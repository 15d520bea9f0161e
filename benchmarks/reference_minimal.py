"""The minimal DuckDB yardstick: R1-R7 in twenty lines of SQL over a clean, typed extract
(``minimal_r1_r7.sql``), writing both analyst tables.

It is what an analyst with a typed Parquet extract (``generate.py --shape typed``) writes
by hand, and it skips what b12screen and the full reference (``reference.py``) do: parsing
text, censored results, bad and duplicate rows, plausibility, row accounting. The benchmark
reports b12screen's time against both.

    python benchmarks/reference_minimal.py LABS.parquet --as-of 2026-10-31 --out DIR
"""

from __future__ import annotations

import argparse
from datetime import date
from pathlib import Path

import duckdb
from reference import default_thresholds, labs_expression

SQL_PATH = Path(__file__).with_name("minimal_r1_r7.sql")


def render(labs: Path, as_of: date, out_dir: Path) -> tuple[str, Path, Path]:
    """The script with every placeholder filled, and its two output paths."""
    params = default_thresholds()
    out_patients = out_dir / "minimal_patients.parquet"
    out_results = out_dir / "minimal_results.parquet"
    values = {"labs": labs_expression(labs), "as_of": as_of.isoformat(),
              "lookback_days": str(int(params["lookback_days"])),
              "out_patients": str(out_patients).replace("'", "''"),
              "out_results": str(out_results).replace("'", "''")}
    for key in ("total_deficient_below", "total_unlikely_above", "active_deficient_below",
                "active_unlikely_above", "mma_upper", "pmol_to_ng"):
        values[key] = repr(float(params[key]))
    sql = SQL_PATH.read_text(encoding="utf-8")
    for key, value in values.items():
        sql = sql.replace("{" + key + "}", value)
    return sql, out_patients, out_results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("labs", type=Path)
    parser.add_argument("--as-of", required=True, type=date.fromisoformat)
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    sql, _, _ = render(args.labs, args.as_of, args.out)
    with duckdb.connect() as con:
        con.execute("SET enable_progress_bar = false")
        con.execute(sql)


if __name__ == "__main__":
    main()
