"""Spec-test helpers: tiny tables written as text, run as a user would, read back.

A table is pipe-separated text, header first, one row per line; cells are stripped, an
empty cell is an empty CSV field, and ``#`` starts a comment (say why a case exists).
Inputs are written as real CSV files (quoted where needed) and the CLI runs in-process.

Expected tables use the ``patients.parquet`` column names. Cell conventions: ``T``/``F``
for flags, ``YYYY-MM-DD`` for dates, numbers compared to 0.005, and an empty cell for
"missing" (NA, NaN, NaT, or an empty string).
"""

from __future__ import annotations

import csv
import math
import textwrap
from collections.abc import Iterable
from datetime import date, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from pipeline.cli import app

AS_OF = "2026-10-31"
Row = dict[str, str]


def table(text: str) -> list[Row]:
    """Parse a pipe table into rows (dicts of stripped text)."""
    lines = [ln.split("#", 1)[0].rstrip() for ln in textwrap.dedent(text).splitlines()]
    lines = [ln for ln in lines if ln.strip()]
    header = [c.strip() for c in lines[0].split("|")]
    rows = []
    for line in lines[1:]:
        cells = [c.strip() for c in line.split("|")]
        if len(cells) != len(header):
            raise ValueError(f"row has {len(cells)} cells, header {len(header)}: {line!r}")
        rows.append(dict(zip(header, cells, strict=True)))
    return rows


def rows_of(*tables: str) -> list[Row]:
    """Several tables (one per rule) as one extract: rows concatenated, columns unioned."""
    return [row for text in tables if text.strip() for row in table(text)]


def write_csv(path: Path, rows: list[Row]) -> Path:
    """Write rows as a CSV file a lab system could have produced (quoted where needed)."""
    columns = list(dict.fromkeys(col for row in rows for col in row))
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, columns, restval="")
        writer.writeheader()
        writer.writerows(rows)
    return path


def run_cli(folder: Path, labs: list[Row], patients: list[Row] | None = None,
            medications: list[Row] | None = None, *, as_of: str = AS_OF,
            rules: Path | str | None = None, engine: str | None = None) -> Path:
    """Write the inputs under ``folder`` and run ``b12screen run``; returns the out folder."""
    args = ["run", str(write_csv(folder / "labs.csv", labs))]
    if patients:
        args += ["--patients", str(write_csv(folder / "patients.csv", patients))]
    if medications:
        args += ["--medications", str(write_csv(folder / "medications.csv", medications))]
    if rules is not None:
        args += ["--rules", str(rules)]
    if engine is not None:
        args += ["--engine", engine]
    out = folder / "out"
    args += ["--as-of", as_of, "--out", str(out), "--quiet", "--max-reject-rate", "1"]
    result = CliRunner().invoke(app, args)
    if result.exit_code != 0:
        detail = result.output
        if result.exc_info and not isinstance(result.exception, SystemExit):
            import traceback

            detail += "".join(traceback.format_exception(*result.exc_info))
        raise AssertionError(f"b12screen run exited {result.exit_code}:\n{detail}")
    return out


def read_patients(out: Path) -> pd.DataFrame:
    """patients.parquet as an analyst reads it, indexed by patient id."""
    return pd.read_parquet(out / "patients.parquet").set_index("patient_id")


def cases(expected: str) -> list:
    """One pytest parameter per expected row, named after its patient id."""
    return [pytest.param(row, id=row["patient_id"]) for row in table(expected)]


def patient_ids(rows: Iterable[Row]) -> set[str]:
    return {row["patient_id"] for row in rows}


def assert_every_case_checked(patients: pd.DataFrame, expected_tables: Iterable[str],
                              *inputs: list[Row]) -> None:
    """No input patient goes unchecked, and the cohort is exactly the input patients."""
    expected = set().union(*(patient_ids(rows_of(t)) for t in expected_tables))
    assert set().union(*(patient_ids(rows) for rows in inputs)) == expected
    assert set(patients.index) == expected


def _matches(got: object, want: str) -> bool:
    if want == "":
        return got is None or got == "" or bool(pd.isna(got))
    if got is None or (not isinstance(got, str) and pd.isna(got)):
        return False
    if isinstance(got, bool | np.bool_):
        return want == ("T" if got else "F")
    if isinstance(got, datetime | date | pd.Timestamp):
        fmt = "%Y-%m-%d %H:%M" if " " in want else "%Y-%m-%d"
        return got.strftime(fmt) == want
    if isinstance(got, int | float | np.number):
        return math.isclose(float(got), float(want), abs_tol=0.005)
    return str(got) == want


def check(patients: pd.DataFrame, expected: Row) -> None:
    """Assert every expected column of one patient; report all mismatches at once."""
    pid = expected["patient_id"]
    assert pid in patients.index, f"patient {pid} missing from patients.parquet"
    actual = patients.loc[pid]
    wrong = {col: (actual[col], want) for col, want in expected.items()
             if col != "patient_id" and not _matches(actual[col], want)}
    assert not wrong, f"{pid}: " + "; ".join(
        f"{col} is {got!r}, expected {want!r}" for col, (got, want) in wrong.items())
