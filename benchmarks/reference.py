"""Run the independent DuckDB SQL implementation of rules R1-R7 (reference_r1_r7.sql).

The benchmark times the pipeline against this reference and checks that both classify
the same extract the same way. Thresholds default to the shipped NICE NG239 profile, read
straight from its TOML (not through the pipeline's config code), so the reference stays
independent of the code it checks.
"""

from __future__ import annotations

import re
import tomllib
from datetime import date
from pathlib import Path
from typing import Any

import duckdb

SQL_PATH = Path(__file__).with_name("reference_r1_r7.sql")
PROFILE_PATH = Path(__file__).resolve().parent.parent / "configs" / "rules" / "nice-ng239.toml"

_PLAUSIBLE = (
    "b12_total_plausible_min", "b12_total_plausible_max", "b12_active_plausible_min",
    "b12_active_plausible_max", "mma_plausible_min", "mma_plausible_max",
)


def default_thresholds(profile: Path = PROFILE_PATH) -> dict[str, Any]:
    """The reference's parameters from a rules profile TOML (SPEC rule names → SQL names)."""
    with profile.open("rb") as fh:
        rules = tomllib.load(fh)
    harmonise = rules["harmonise"]
    r = rules["rules"]
    return {
        "total_deficient_below": r["R1"]["deficient_below"],
        "total_unlikely_above": r["R1"]["unlikely_above"],
        "active_deficient_below": r["R2"]["deficient_below"],
        "active_unlikely_above": r["R2"]["unlikely_above"],
        "lookback_days": r["R4"]["lookback_days"],
        "mma_upper": r["R5"]["mma_upper_umol_l"],
        "pmol_to_ng": harmonise["b12_total_pmol_to_ng"],
        "earliest_date": harmonise["earliest_date"],
        **{key: harmonise[key] for key in _PLAUSIBLE},
    }


def _sql_text(value: str | Path) -> str:
    """A single-quoted SQL string literal."""
    return str(value).replace("'", "''")


def labs_expression(labs_path: Path) -> str:
    """read_parquet for .parquet files, folders and globs of them; read_csv (every column
    text, so ids keep leading zeros and results stay as written) otherwise."""
    text = str(labs_path)
    if labs_path.is_dir():
        return f"read_parquet('{_sql_text(labs_path / '*.parquet')}')"
    if text.endswith(".parquet"):
        return f"read_parquet('{_sql_text(text)}')"
    # Quote and escape stated: the sniffer samples rows and may see no quoted field at all.
    return (f"read_csv('{_sql_text(text)}', all_varchar = true, header = true, "
            "quote = '\"', escape = '\"')")


def render_sql(
    labs_expr: str, as_of: date, out_patients: Path, out_results: Path,
    thresholds: dict[str, Any] | None = None, today: date | None = None,
) -> str:
    """The reference script with every placeholder filled."""
    params = default_thresholds()
    params.update(thresholds or {})
    values: dict[str, str] = {
        "labs": labs_expr,
        "as_of": as_of.isoformat(),
        "today": (today or date.today()).isoformat(),
        "earliest_date": str(params.pop("earliest_date")),
        "out_patients": _sql_text(out_patients),
        "out_results": _sql_text(out_results),
        "lookback_days": str(int(params.pop("lookback_days"))),
    }
    for key, value in params.items():
        values[key] = f"CAST({float(value)!r} AS DOUBLE)"
    sql = SQL_PATH.read_text(encoding="utf-8")
    # Plain replacement, not str.format: the SQL's regular expressions contain braces.
    for key, value in values.items():
        sql = sql.replace("{" + key + "}", value)
    left = sorted(set(re.findall(r"\{([a-z_]+)\}", sql)))
    if left:
        raise ValueError(f"reference SQL placeholders not filled: {', '.join(left)}")
    return sql


def run_reference(
    labs_path: Path, as_of: date, out_dir: Path, thresholds: dict | None = None,
    *, today: date | None = None,
) -> tuple[Path, Path]:
    """Classify ``labs_path`` with the SQL reference; return (patients, results) Parquet paths.

    ``today`` (default: the real date) only decides which results are in the future and
    rejected; pass it to make a test independent of the clock.
    """
    labs_path = Path(labs_path)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    out_patients = out_dir / "reference_patients.parquet"
    out_results = out_dir / "reference_results.parquet"
    sql = render_sql(labs_expression(labs_path), as_of, out_patients, out_results,
                     thresholds, today)
    with duckdb.connect() as con:
        con.execute("SET enable_progress_bar = false")
        con.execute(sql)
    return out_patients, out_results
