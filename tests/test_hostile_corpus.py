"""Hostile-input corpus (issue 12, item 9): every way a real extract or folder arrives broken.

Each case is a small real file written here, run through the CLI as a user would, and checked
for what the user sees:

1. the exit code (0 the run goes ahead; 1 the input as a whole is unusable or the output
   location unsafe; 2 usage);
2. the message: the exact reason code in ``rejected.parquet`` for a bad row, or the key
   phrase of the one-line error / warning, and never a traceback;
3. the accounting: ``rows_read = accepted + rejected + skipped + duplicates`` in
   ``manifest.json`` (each input under ``accounting.by_input``), ``rows_read`` equal to the
   data records written, ``rows_rejected`` equal to the rows of ``rejected.parquet``;
4. no leak: every input holds planted patient ids (``ZQX…``) and a planted result
   (``987.654``); neither may appear in stdout/stderr, the manifest's warnings, or the
   shareable files (``summary.json``, ``report.html``, ``measures.csv``).

Row-level cases are batched: all CSV rows go in one extract (one run), all Parquet rows in
another, each case in its own lines with its own patient ids, and each case then checks its
own lines. A run costs about a second of writing, so whole runs are kept for the cases that
need one of their own.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import re
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import invoke

SAMPLES = Path(__file__).resolve().parents[1] / "sample_data"

AS_OF = "2026-10-31"
#: planted in every input: a patient id prefix and a result value that must never be shown
#: a UUID pseudonym (hex, so it cannot hold "ZQX")
UUID_ID = "e7b9a4c2-5d1f-4a8e-9b3c-2f6d8e1a0c4b"
PLANTED = ("ZQX", "987.654", UUID_ID)
LABS_HEADER = ("patient_id", "collected_at", "test_code", "result", "unit")
PATIENTS_HEADER = ("patient_id", "birth_date", "age_years", "sex", "diet", "pregnant",
                   "neurological_symptoms", "ileal_resection_cm")
MEDS_HEADER = ("patient_id", "medication", "start_date", "end_date", "dose_mg_per_day")
HEADERS = {"labs": LABS_HEADER, "patients": PATIENTS_HEADER, "medications": MEDS_HEADER}
#: good rows every labs input starts with: one planted value, one deficient, one indeterminate
BASE_LABS = (("ZQXB01", "2026-10-01", "B12", "987.654", "ng/L"),
             ("ZQXB02", "2026-10-02", "B12", "100", "ng/L"),
             ("ZQXB03", "2026-10-03", "B12", "250", "ng/L"))
BASE_PATIENTS = (("ZQXB01", "1960-01-01", "", "F", "vegan", "no", "no", ""),)
BASE_MEDS = (("ZQXB02", "Metformin 500mg tablets", "2025-01-01", "", "1000"),)
SHAREABLE = ("summary.json", "report.html", "measures.csv")


# ----------------------------------------------------------------------------- helpers


def _csv_text(header: tuple[str, ...], rows: list[tuple | str]) -> str:
    """A CSV file: tuples are quoted as a CSV writer would; a str row is a raw line."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    quoted = csv.writer(buf, lineterminator="\n", quoting=csv.QUOTE_ALL)
    writer.writerow(header)
    for row in rows:
        if isinstance(row, str):
            buf.write(row + "\n")
        elif any("\r" in (v or "") for v in row):  # the csv module leaves a lone CR bare
            quoted.writerow(row)
        else:
            writer.writerow(row)
    return buf.getvalue()


def _write(path: Path, data: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    return path


def _labs(path: Path, rows: list[tuple | str] = ()) -> Path:
    return _write(path, _csv_text(LABS_HEADER, [*BASE_LABS, *rows]))


def _parquet(path: Path, header: tuple[str, ...], rows: list[tuple]) -> Path:
    columns = {c: pa.array([r[i] for r in rows], pa.string()) for i, c in enumerate(header)}
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), path)
    return path


def _run(*args: str | Path):
    result = invoke(*args)
    _no_traceback(result)
    return result


def _no_traceback(result) -> None:
    text = result.stdout + result.stderr
    assert "Traceback" not in text, text
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        repr(result.exception)


def _manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text(encoding="utf-8"))


def _skipped(counts: dict) -> int:
    return sum(n for k, n in counts.items() if k.startswith("rows_skipped"))


def _check_accounting(out: Path, written: dict[str, int]) -> dict:
    """The manifest's equation holds per input and in total, ``rows_read`` equals the data
    records written per input, and ``rows_rejected`` equals the rows of rejected.parquet."""
    manifest = _manifest(out)
    acc = manifest["accounting"]
    by_input = acc["by_input"]
    assert set(by_input) == set(written)
    for kind, counts in by_input.items():
        assert counts["rows_read"] == written[kind], (kind, counts)
        assert counts["rows_read"] == (counts["rows_accepted"] + counts["rows_rejected"]
                                       + _skipped(counts) + counts["rows_exact_duplicates"])
    assert acc["rows_read"] == sum(written.values())
    assert acc["rows_read"] == (acc["rows_accepted"] + acc["rows_rejected"]
                                + acc["rows_skipped_other_tests"] + acc["rows_exact_duplicates"])
    rejected = pd.read_parquet(out / "rejected.parquet")
    assert acc["rows_rejected"] == len(rejected)
    for kind, counts in by_input.items():
        assert counts["rows_rejected"] == int((rejected["input"] == kind).sum())
    return manifest


def _check_no_leak(result, out: Path | None = None, extra: tuple[str, ...] = ()) -> None:
    """No planted id or value in the messages, the manifest's warnings or shareable files."""
    texts = {"stdout": result.stdout, "stderr": result.stderr}
    if out is not None and (out / "manifest.json").exists():
        texts["manifest warnings"] = json.dumps(_manifest(out)["warnings"], ensure_ascii=False)
        for name in SHAREABLE:
            texts[name] = (out / name).read_text(encoding="utf-8")
    for where, text in texts.items():
        for token in (*PLANTED, *extra):
            assert token not in text, f"{token!r} shown in {where}"


def _tree(root: Path) -> dict[str, str]:
    """Every file and folder under ``root`` with its content hash (folders: '')."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        out[rel] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""
    return out


def _one_error_line(result, phrase: str, code: int) -> None:
    _no_traceback(result)
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("b12screen: error: "), result.stderr
    assert phrase in lines[0], lines[0]


# ------------------------------------------------------------ row-level cases (batched)


@dataclass(frozen=True)
class Rows:
    """Rows of one input and each row's fate: ``accepted``, ``skipped``, ``duplicate`` or
    the exact ``;``-joined reason codes of ``rejected.parquet``. ``ID`` in a row is replaced
    by the case's own planted patient id."""

    kind: str
    rows: tuple
    fates: tuple[str, ...]


def L(*rows, fates):  # noqa: N802 - table shorthand
    return Rows("labs", rows, tuple(fates))


def P(*rows, fates):  # noqa: N802
    return Rows("patients", rows, tuple(fates))


def M(*rows, fates):  # noqa: N802
    return Rows("medications", rows, tuple(fates))


D = "2026-10-05"
CHEMISTRY = ("NA", "K", "CA", "CL", "UREA", "CREA", "HB", "FERR", "FOL", "Na", "k", "Urea")

CSV_ROWS: dict[str, Rows] = {
    # SPEC rev 2: missing-value tokens never apply to codes (NA sodium, K potassium)
    "sodium_NA": L(("ID", D, "NA", "140", "mmol/L"), fates=["skipped"]),
    "potassium_K": L(("ID", D, "K", "4.1", "mmol/L"), fates=["skipped"]),
    "calcium_CA": L(("ID", D, "CA", "2.4", "mmol/L"), fates=["skipped"]),
    "sodium_Na_mixed_case": L(("ID", D, "Na", "139", "mmol/L"), fates=["skipped"]),
    "potassium_k_lower": L(("ID", D, "k", "3.9", "mmol/L"), fates=["skipped"]),
    "chemistry_panel": L(*[("ID", D, c, "5", "mmol/L") for c in CHEMISTRY],
                         fates=["skipped"] * len(CHEMISTRY)),
    "panel_with_b12": L(("ID", D, "NA", "141", "mmol/L"), ("ID", D, "B12", "300", "ng/L"),
                        ("ID", D, "K", "4.0", "mmol/L"), fates=["skipped", "accepted", "skipped"]),
    "code_NULL_is_a_code": L(("ID", D, "NULL", "5", "mmol/L"), fates=["skipped"]),
    "code_N/A_is_a_code": L(("ID", D, "N/A", "5", "mmol/L"), fates=["skipped"]),
    "code_None_is_a_code": L(("ID", D, "None", "5", "mmol/L"), fates=["skipped"]),
    "code_dash_is_a_code": L(("ID", D, "-", "5", "mmol/L"), fates=["skipped"]),
    "code_empty": L(("ID", D, "", "300", "ng/L"), fates=["missing_test_code"]),
    # tokens in ids, dates and results are missing values
    "id_NULL": L(("NULL", D, "B12", "300", "ng/L"), fates=["missing_patient_id"]),
    "id_N/A": L(("N/A", D, "B12", "300", "ng/L"), fates=["missing_patient_id"]),
    "id_dash": L(("-", D, "B12", "300", "ng/L"), fates=["missing_patient_id"]),
    "id_None": L(("None", D, "B12", "300", "ng/L"), fates=["missing_patient_id"]),
    "id_NA": L(("NA", D, "B12", "300", "ng/L"), fates=["missing_patient_id"]),
    "id_empty": L(("", D, "B12", "300", "ng/L"), fates=["missing_patient_id"]),
    "id_blank_spaces": L(("   ", D, "B12", "300", "ng/L"), fates=["missing_patient_id"]),
    "date_NULL": L(("ID", "NULL", "B12", "300", "ng/L"), fates=["bad_date"]),
    "date_N/A": L(("ID", "N/A", "B12", "300", "ng/L"), fates=["bad_date"]),
    "date_dash": L(("ID", "-", "B12", "300", "ng/L"), fates=["bad_date"]),
    "result_NULL": L(("ID", D, "B12", "NULL", "ng/L"), fates=["missing_result"]),
    "result_N/A": L(("ID", D, "B12", "N/A", "ng/L"), fates=["missing_result"]),
    "result_dash": L(("ID", D, "B12", "-", "ng/L"), fates=["missing_result"]),
    "result_None": L(("ID", D, "B12", "None", "ng/L"), fates=["missing_result"]),
    "result_empty": L(("ID", D, "B12", "", "ng/L"), fates=["missing_result"]),
    "mma_result_NULL": L(("ID", D, "MMA", "NULL", "umol/L"), fates=["missing_result"]),
    "other_test_result_NULL": L(("ID", D, "FERR", "NULL", "ug/L"), fates=["skipped"]),
    # units: a token is a unit text, never a missing unit (2132-9 has a default unit)
    "unit_NULL_not_missing": L(("ID", D, "2132-9", "300", "NULL"), fates=["unknown_unit"]),
    "unit_N/A_not_missing": L(("ID", D, "2132-9", "300", "N/A"), fates=["unknown_unit"]),
    "unit_NA_not_missing": L(("ID", D, "2132-9", "300", "NA"), fates=["unknown_unit"]),
    "unit_empty_takes_default": L(("ID", D, "2132-9", "300", ""), fates=["accepted"]),
    "unit_empty_no_default": L(("ID", D, "B12", "300", ""), fates=["unknown_unit"]),
    "unit_unknown": L(("ID", D, "B12", "300", "mg/dL"), fates=["unknown_unit"]),
    "unit_pmol_converted": L(("ID", D, "B12", "200", "pmol/L"), fates=["accepted"]),
    "unit_pg_ml": L(("ID", D, "B12", "300", "pg/mL"), fates=["accepted"]),
    "unit_micro_sign": L(("ID", D, "MMA", "0.3", "µmol/L"), fates=["accepted"]),
    "unit_greek_mu": L(("ID", D, "MMA", "0.3", "μmol/L"), fates=["accepted"]),
    "unit_nmol_mma": L(("ID", D, "MMA", "300", "nmol/L"), fates=["accepted"]),
    "unit_slip_b12_0.25": L(("ID", D, "B12", "0.25", "ng/L"), fates=["implausible_value"]),
    "unit_slip_mma_450": L(("ID", D, "MMA", "450", "umol/L"), fates=["implausible_value"]),
    # dates
    "date_iso_datetime": L(("ID", "2026-10-05T09:30:00", "B12", "300", "ng/L"),
                           fates=["accepted"]),
    "date_day_first_not_declared": L(("ID", "24/10/2026", "B12", "300", "ng/L"),
                                     fates=["bad_date"]),
    "date_impossible_feb_30": L(("ID", "2026-02-30", "B12", "300", "ng/L"), fates=["bad_date"]),
    "date_before_1900": L(("ID", "1899-12-31", "B12", "300", "ng/L"), fates=["bad_date"]),
    "date_future": L(("ID", "2099-01-01", "B12", "300", "ng/L"), fates=["future_date"]),
    "date_words": L(("ID", "yesterday", "B12", "300", "ng/L"), fates=["bad_date"]),
    # results as reported
    "result_censored_lt": L(("ID", D, "B12", "<150", "ng/L"), fates=["accepted"]),
    "result_censored_gt_space": L(("ID", D, "B12", "> 2000", "ng/L"), fates=["accepted"]),
    "result_censored_le": L(("ID", D, "MMA", "<=0.1", "umol/L"), fates=["accepted"]),
    "result_decimal": L(("ID", D, "B12", "231.0", "ng/L"), fates=["accepted"]),
    "result_padded": L(("ID", D, "B12", "  231 ", "ng/L"), fates=["accepted"]),
    "result_thousands_comma": L(("ID", D, "B12", "1,234", "ng/L"),
                                fates=["non_numeric_result"]),
    "result_exponent": L(("ID", D, "B12", "2.5E2", "ng/L"), fates=["non_numeric_result"]),
    "result_negative": L(("ID", D, "B12", "-5", "ng/L"), fates=["negative_result"]),
    "result_words": L(("ID", D, "B12", "abc", "ng/L"), fates=["non_numeric_result"]),
    "result_haemolysed": L(("ID", D, "B12", "haemolysed", "ng/L"),
                           fates=["non_numeric_result"]),
    # several reasons on one row, in the declared order
    "two_reasons": L(("", "2026-02-30", "B12", "300", "ng/L"),
                     fates=["missing_patient_id;bad_date"]),
    "three_reasons": L(("", "not a date", "B12", "abc", "ng/L"),
                       fates=["missing_patient_id;bad_date;non_numeric_result"]),
    # duplicates and broken lines
    "exact_duplicate": L(("ID", D, "B12", "300", "ng/L"), ("ID", D, "B12", "300", "ng/L"),
                         fates=["accepted", "duplicate"]),
    "same_day_different_value": L(("ID", D, "B12", "300", "ng/L"), ("ID", D, "B12", "310", "ng/L"),
                                  fates=["accepted", "accepted"]),
    "too_many_fields": L("ID,2026-10-05,B12,300,ng/L,extra,more", fates=["malformed_row"]),
    "too_few_fields": L("ID,2026-10-05,B12", fates=["malformed_row"]),
    "ids_leading_zeros": L(("000ZQX12", D, "B12", "300", "ng/L"), fates=["accepted"]),
    # patients
    "patient_ok": P(("ID", "1970-05-05", "", "M", "omnivore", "yes", "no", ""),
                    fates=["accepted"]),
    "patient_age_words": P(("ID", "", "abc", "F", "", "", "", ""), fates=["bad_age"]),
    "patient_age_200": P(("ID", "", "200", "F", "", "", "", ""), fates=["bad_age"]),
    "patient_age_token_missing": P(("ID", "", "N/A", "F", "", "", "", ""),
                                   fates=["accepted"]),
    "patient_yes_no_maybe": P(("ID", "", "40", "F", "", "maybe", "", ""),
                              fates=["bad_yes_no"]),
    "patient_yes_no_any_case": P(("ID", "", "40", "F", "", "YES", "N", ""),
                                 fates=["accepted"]),
    "patient_diet_unknown_word": P(("ID", "", "40", "F", "carnivore", "", "", ""),
                                   fates=["bad_diet"]),
    "patient_number_words": P(("ID", "", "40", "F", "", "", "", "lots"),
                              fates=["bad_number"]),
    "patient_birth_future": P(("ID", "2099-01-01", "", "F", "", "", "", ""),
                              fates=["future_date"]),
    "patient_birth_impossible": P(("ID", "2001-02-30", "", "F", "", "", "", ""),
                                  fates=["bad_date"]),
    "patient_id_NULL": P(("NULL", "", "40", "F", "", "", "", ""),
                         fates=["missing_patient_id"]),
    "patient_conflicting_rows": P(("ID", "", "40", "F", "", "", "", ""),
                                  ("ID", "", "41", "F", "", "", "", ""),
                                  fates=["conflicting_patient_rows"] * 2),
    "patient_exact_duplicate": P(("ID", "", "40", "F", "", "", "", ""),
                                 ("ID", "", "40", "F", "", "", "", ""),
                                 fates=["accepted", "duplicate"]),
    # medications
    "med_metformin": M(("ID", "metformin 500 mg", "2025-02-01", "", "500"), fates=["accepted"]),
    "med_empty": M(("ID", "", "2025-02-01", "", ""), fates=["missing_medication"]),
    "med_NULL_is_a_name": M(("ID", "NULL", "2025-02-01", "", ""), fates=["skipped"]),
    "med_NA_is_a_name": M(("ID", "NA", "2025-02-01", "", ""), fates=["skipped"]),
    "med_aripiprazole_not_ppi": M(("ID", "Aripiprazole 10mg", "2025-02-01", "", ""),
                                  fates=["skipped"]),
    "med_end_before_start": M(("ID", "Omeprazole 20mg", "2025-02-01", "2025-01-01", ""),
                              fates=["end_before_start"]),
    "med_bad_start": M(("ID", "Omeprazole 20mg", "2025-13-01", "", ""), fates=["bad_date"]),
    "med_bad_dose": M(("ID", "metformin 500 mg", "2025-02-01", "", "lots"),
                      fates=["bad_number"]),
    "med_duplicate": M(("ID", "Cyanocobalamin 1mg tablets", "2025-02-01", "", "1"),
                       ("ID", "Cyanocobalamin 1mg tablets", "2025-02-01", "", "1"),
                       fates=["accepted", "duplicate"]),
}

#: Parquet: a missing value is a null, and text is never reinterpreted (SPEC rev 2)
PARQUET_ROWS: dict[str, Rows] = {
    "pq_sodium_NA": L(("ID", D, "NA", "140", "mmol/L"), fates=["skipped"]),
    "pq_potassium_K": L(("ID", D, "K", "4.1", "mmol/L"), fates=["skipped"]),
    "pq_calcium_CA": L(("ID", D, "CA", "2.4", "mmol/L"), fates=["skipped"]),
    "pq_mixed_case_Na_k": L(("ID", D, "Na", "139", "mmol/L"), ("ID", D, "k", "4", "mmol/L"),
                            fates=["skipped", "skipped"]),
    "pq_chemistry_panel": L(*[("ID", D, c, "5", "mmol/L") for c in CHEMISTRY],
                            fates=["skipped"] * len(CHEMISTRY)),
    "pq_id_text_NULL_is_an_id": L(("NULL", D, "B12", "300", "ng/L"), fates=["accepted"]),
    "pq_id_text_N/A_is_an_id": L(("N/A", D, "B12", "300", "ng/L"), fates=["accepted"]),
    "pq_id_null": L((None, D, "B12", "300", "ng/L"), fates=["missing_patient_id"]),
    "pq_result_text_NULL": L(("ID", D, "B12", "NULL", "ng/L"), fates=["non_numeric_result"]),
    "pq_result_text_N/A": L(("ID", D, "B12", "N/A", "ng/L"), fates=["non_numeric_result"]),
    "pq_result_null": L(("ID", D, "B12", None, "ng/L"), fates=["missing_result"]),
    "pq_date_null": L(("ID", None, "B12", "300", "ng/L"), fates=["bad_date"]),
    "pq_code_null": L(("ID", D, None, "300", "ng/L"), fates=["missing_test_code"]),
    "pq_code_text_NULL": L(("ID", D, "NULL", "300", "ng/L"), fates=["skipped"]),
    "pq_unit_text_NA": L(("ID", D, "2132-9", "300", "NA"), fates=["unknown_unit"]),
    "pq_unit_null_takes_default": L(("ID", D, "2132-9", "300", None), fates=["accepted"]),
    "pq_censored": L(("ID", D, "B12", "<150", "ng/L"), fates=["accepted"]),
    "pq_negative": L(("ID", D, "B12", "-5", "ng/L"), fates=["negative_result"]),
    "pq_future": L(("ID", "2099-01-01", "B12", "300", "ng/L"), fates=["future_date"]),
    "pq_duplicate": L(("ID", D, "B12", "300", "ng/L"), ("ID", D, "B12", "300", "ng/L"),
                      fates=["accepted", "duplicate"]),
    "pq_patient_age_text_N/A": P(("ID", "", "N/A", "F", "", "", "", ""), fates=["bad_age"]),
    "pq_patient_yes_no_text_NULL": P(("ID", "", "40", "F", "", "NULL", "", ""),
                                     fates=["bad_yes_no"]),
    "pq_patient_id_text_None": P(("None", "", "40", "F", "", "", "", ""), fates=["accepted"]),
    "pq_med_text_NA": M(("ID", "NA", "2025-02-01", None, None), fates=["skipped"]),
}


def _case_rows(cases: dict[str, Rows], kind: str) -> tuple[list[tuple | str], dict, dict]:
    """Every case's rows of one input (after the base rows), each case with its own planted
    id; per case, the 1-based data row number of each of its rows, and the rows written."""
    base = {"labs": BASE_LABS, "patients": BASE_PATIENTS, "medications": BASE_MEDS}[kind]
    rows: list[tuple | str] = list(base)
    where: dict[str, list[int]] = {}
    actual: dict[str, list] = {}
    for n, (name, case) in enumerate(cases.items()):
        if case.kind != kind:
            continue
        pid = f"ZQX{n:03d}"
        where[name], actual[name] = [], []
        for row in case.rows:
            if isinstance(row, str):
                row = row.replace("ID", pid)
            else:
                row = tuple(pid if v == "ID" else v for v in row)
            rows.append(row)
            actual[name].append(row)
            where[name].append(len(rows))  # data row k (1-based) is line k + 1
    return rows, where, actual


@dataclass
class BatchRun:
    result: object
    out: Path
    files: dict[str, Path]
    lines: dict[str, list[int]]  # per case: source_row of each of its rows
    rows: dict[str, list]  # per case: the rows as written (planted ids filled in)
    written: dict[str, int]
    rejected: pd.DataFrame
    results: pd.DataFrame
    patients: pd.DataFrame


def _batch(tmp: Path, cases: dict[str, Rows], parquet: bool) -> BatchRun:
    files, lines, written, actual = {}, {}, {}, {}
    for kind in ("labs", "patients", "medications"):
        rows, where, case_rows = _case_rows(cases, kind)
        actual.update(case_rows)
        if parquet:
            files[kind] = _parquet(tmp / f"{kind}.parquet", HEADERS[kind], rows)
            offset = 0  # Parquet rows are numbered from 1
        else:
            files[kind] = _write(tmp / f"{kind}.csv", _csv_text(HEADERS[kind], rows))
            offset = 1  # the header is line 1
        lines.update({k: [n + offset for n in v] for k, v in where.items()})
        written[kind] = len(rows)
    out = tmp / "out"
    result = _run("run", files["labs"], "--patients", files["patients"], "--medications",
                  files["medications"], "--as-of", AS_OF, "--max-reject-rate", "1",
                  "--out", out, "--quiet")
    assert result.exit_code == 0, result.stderr
    return BatchRun(result, out, files, lines, actual, written,
                    pd.read_parquet(out / "rejected.parquet"),
                    pd.read_parquet(out / "results.parquet"),
                    pd.read_parquet(out / "patients.parquet"))


@pytest.fixture(scope="module")
def csv_batch(tmp_path_factory: pytest.TempPathFactory) -> BatchRun:
    return _batch(tmp_path_factory.mktemp("csv_batch"), CSV_ROWS, parquet=False)


@pytest.fixture(scope="module")
def parquet_batch(tmp_path_factory: pytest.TempPathFactory) -> BatchRun:
    return _batch(tmp_path_factory.mktemp("pq_batch"), PARQUET_ROWS, parquet=True)


ROW_CASES = [pytest.param("csv", name, id=name) for name in CSV_ROWS] + \
    [pytest.param("parquet", name, id=name) for name in PARQUET_ROWS]


@pytest.mark.parametrize(("fmt", "name"), ROW_CASES)
def test_row_ends_in_exactly_its_place(fmt: str, name: str, request) -> None:
    """Each hostile row: exit 0, its exact reason codes at its line in rejected.parquet (or
    accepted into results.parquet, or skipped / a duplicate: in neither), and nothing shown."""
    batch: BatchRun = request.getfixturevalue(f"{fmt}_batch")
    case = (CSV_ROWS if fmt == "csv" else PARQUET_ROWS)[name]
    assert batch.result.exit_code == 0
    rejected = batch.rejected[batch.rejected["input"] == case.kind]
    reasons = dict(zip(rejected["source_row"].astype(int), rejected["reasons"], strict=True))
    accepted = dict(zip(batch.results["source_row"].astype(int), batch.results["patient_id"],
                        strict=True))
    cohort = set(batch.patients["patient_id"])
    for row, line, fate in zip(batch.rows[name], batch.lines[name], case.fates, strict=True):
        if fate in ("accepted", "skipped", "duplicate"):
            assert line not in reasons, (row, reasons.get(line))
            if case.kind == "labs":
                assert (line in accepted) == (fate == "accepted"), (row, fate)
            if fate == "accepted":  # the patient is in the cohort, the id kept as written
                assert row[0].strip() in cohort, row
                if case.kind == "labs":
                    assert accepted[line] == row[0].strip(), row
        else:
            assert reasons.get(line) == fate, (row, reasons.get(line))
    _check_no_leak(batch.result, batch.out)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_batched_rows_are_all_accounted_for(fmt: str, request) -> None:
    """The manifest's counts per input equal the fates of the rows written (base rows are
    accepted), and every row is accounted for."""
    batch: BatchRun = request.getfixturevalue(f"{fmt}_batch")
    cases = CSV_ROWS if fmt == "csv" else PARQUET_ROWS
    manifest = _check_accounting(batch.out, batch.written)
    for kind, counts in manifest["accounting"]["by_input"].items():
        fates = [f for c in cases.values() if c.kind == kind for f in c.fates]
        base = {"labs": len(BASE_LABS), "patients": len(BASE_PATIENTS),
                "medications": len(BASE_MEDS)}[kind]
        assert counts["rows_accepted"] == base + fates.count("accepted"), kind
        assert _skipped(counts) == fates.count("skipped"), kind
        assert counts["rows_exact_duplicates"] == fates.count("duplicate"), kind
        assert counts["rows_rejected"] == len(fates) - fates.count("accepted") \
            - fates.count("skipped") - fates.count("duplicate"), kind


# ------------------------------------------------------------ whole input: exit 1 / 2


def _zip_bytes() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("[Content_Types].xml", "<Types/>")
        z.writestr("xl/worksheets/sheet1.xml", "<worksheet><c>ZQX001</c><v>987.654</v></worksheet>")
    return buf.getvalue()


def _labs_text(rows=()) -> str:
    return _csv_text(LABS_HEADER, [*BASE_LABS, *rows])


def _many_bad(t: Path) -> list:
    good = [(f"ZQXM{i:03d}", "2026-10-01", "B12", "300", "ng/L") for i in range(90)]
    bad = [(f"ZQXN{i:03d}", "2026-10-01", "B12", "abc", "ng/L") for i in range(20)]
    return [_labs(t / "labs.csv", good + bad)]


def _earlier_run(folder: Path) -> Path:
    _write(folder / "manifest.json", json.dumps({"b12screen_version": "0.1.0", "kind": "run",
                                                 "outputs": {}}))
    return folder


def _mislabelled(t: Path) -> Path:
    """Columns in the wrong order under the right names: the 'codes' are patient ids."""
    rows = "".join(f"2026-10-01,B12,ZQX{i:03d},100,ng/L\n" for i in range(20))
    return _write(t / "labs.csv", "collected_at,patient_id,test_code,result,unit\n" + rows)


PATIENTS_CSV = _csv_text(PATIENTS_HEADER, [("ZQX001", "", "50", "F", "", "", "", "")])
MEDS_CSV = _csv_text(MEDS_HEADER, [("ZQX001", "metformin", "2025-01-01", "", "500")])

# case -> (build inputs in tmp and return the CLI args after "run", key phrase, exit code)
STOPS: dict[str, tuple[Callable[[Path], list], str, int]] = {
    "headerless_labs": (lambda t: [_write(t / "labs.csv", _labs_text().split("\n", 1)[1])],
                        "seems to have no header row", 1),
    "headerless_patients": (lambda t: [_labs(t / "labs.csv"), "--patients",
                                       _write(t / "p.csv", "ZQX001,1950-01-01,F,vegan\n")],
                            "seems to have no header row", 1),
    # each line caught by one kind of cell alone: the id, or a value beside a plain id
    "headerless_patients_uuid_ids": (lambda t: [_labs(t / "labs.csv"), "--patients", _write(
        t / "p.csv", f"{UUID_ID},kx\n")], "seems to have no header row", 1),
    "headerless_patients_long_ids": (lambda t: [_labs(t / "labs.csv"), "--patients", _write(
        t / "p.csv", "ZQXab12cd34,kx\n")], "seems to have no header row", 1),
    "headerless_patients_underscored_ids": (lambda t: [_labs(t / "labs.csv"), "--patients",
                                              _write(t / "p.csv", "ZQX_000123,GP_NORTH,\n")],
                                             "seems to have no header row", 1),
    "headerless_labs_under_another_delimiter": (lambda t: [
        _write(t / "labs.csv", "ZQX_000123,2026-10-03,B12,987.654,ng/L\n"), "--format", "uk-lab"],
        "seems to have no header row", 1),
    "headerless_patients_unknown_sex": (lambda t: [_labs(t / "labs.csv"), "--patients", _write(
        t / "p.csv", "ZQXABCDE,U,kx\n")], "seems to have no header row", 1),
    "header_only_labs": (lambda t: [_write(t / "labs.csv", ",".join(LABS_HEADER) + "\n")],
                         "no data rows", 1),
    "header_only_labs_parquet": (lambda t: [_parquet(t / "labs.parquet", LABS_HEADER, [])],
                                 "no data rows", 1),
    "empty_file": (lambda t: [_write(t / "labs.csv", b"")], "is empty", 1),
    "blank_lines_only": (lambda t: [_write(t / "labs.csv", "\n\r\n  \n")], "is empty", 1),
    "binary_junk": (lambda t: [_write(t / "labs.csv", bytes(range(256)) * 8)],
                    "required column", 1),
    "xlsx_given_as_csv": (lambda t: [_write(t / "labs.csv", _zip_bytes())],
                          "is a spreadsheet or zip archive, not CSV", 1),
    "xlsx_by_name": (lambda t: [_write(t / "labs.xlsx", _zip_bytes())],
                     "is a spreadsheet or zip archive, not CSV", 1),
    "xlsx_in_folder": (lambda t: [_write(t / "in" / "labs.xlsx", _zip_bytes()).parent],
                       "holds no .csv or .parquet files", 1),
    "gzip_truncated": (lambda t: [_write(t / "labs.csv.gz",
                                         gzip.compress(_labs_text().encode())[:40])],
                       "not a valid gzip file, or truncated", 1),
    "gz_name_not_gzip": (lambda t: [_write(t / "labs.csv.gz", _labs_text())],
                         "not a valid gzip file, or truncated", 1),
    "parquet_truncated": (lambda t: [_write(t / "labs.parquet", _parquet(
        t / "x.parquet", LABS_HEADER, list(BASE_LABS)).read_bytes()[:200])],
        "as Parquet (not a Parquet file, or truncated)", 1),
    "csv_named_parquet": (lambda t: [_write(t / "labs.parquet", _labs_text())],
                          "as Parquet (not a Parquet file, or truncated)", 1),
    "duplicate_column_names": (lambda t: [_write(t / "labs.csv", _labs_text().replace(
        "unit\n", "unit,result\n", 1))], "duplicate column name(s): result", 1),
    "duplicate_columns_by_case": (lambda t: [_write(t / "labs.csv", _labs_text().replace(
        "unit\n", "unit,Result\n", 1))], "duplicate column name(s): result, Result", 1),
    "missing_required_column": (lambda t: [_write(t / "labs.csv", _labs_text().replace(
        "result,", "value,", 1))], "required column result missing", 1),
    "medications_as_patients": (lambda t: [_labs(t / "labs.csv"), "--patients",
                                           _write(t / "m.csv", MEDS_CSV)],
                                "looks like a medications file", 1),
    "medications_as_labs": (lambda t: [_write(t / "m.csv", MEDS_CSV)],
                            "looks like a medications file", 1),
    "labs_as_medications": (lambda t: [_labs(t / "labs.csv"), "--medications",
                                       _labs(t / "l2.csv")], "looks like a labs file", 1),
    "labs_as_patients": (lambda t: [_labs(t / "labs.csv"), "--patients", _labs(t / "l2.csv")],
                         "looks like a labs file", 1),
    "patients_as_medications": (lambda t: [_labs(t / "labs.csv"), "--medications",
                                           _write(t / "p.csv", PATIENTS_CSV)],
                                "looks like a patients file", 1),
    "patients_as_labs": (lambda t: [_write(t / "p.csv", PATIENTS_CSV)],
                         "looks like a patients file", 1),
    # recognised by the names the format gives the other input's columns, not only canonical
    "uk_lab_medications_as_patients": (lambda t: [
        SAMPLES / "uk-lab" / "labs.csv", "--format", "uk-lab",
        "--patients", SAMPLES / "uk-lab" / "medications.csv"],
        "looks like a medications file (it has Drug, Start Date), not patients; give it as "
        "the medications input (--medications)", 1),
    "omop_drug_exposure_as_patients": (lambda t: [
        SAMPLES / "omop" / "measurement.csv", "--format", "omop",
        "--patients", SAMPLES / "omop" / "drug_exposure.csv"],
        "looks like a medications file", 1),
    "omop_person_as_medications": (lambda t: [
        SAMPLES / "omop" / "measurement.csv", "--format", "omop",
        "--medications", SAMPLES / "omop" / "person.csv"],
        "looks like a patients file", 1),
    "no_such_file": (lambda t: [t / "nosuch.csv"], "no such file or folder", 1),
    "glob_matches_nothing": (lambda t: [f"{t}/nothing-*.csv"], "no files match", 1),
    "folder_of_notes_only": (lambda t: [_write(t / "in" / "notes.txt", "ZQX001 987.654\n")
                                        .parent], "holds no .csv or .parquet files", 1),
    "mislabelled_without_as_of": (lambda t: [_mislabelled(t), "--max-reject-rate", "1"],
                                  "has a test code mapped by format 'canonical'", 1),
    "every_row_rejected": (lambda t: [_write(t / "labs.csv", _csv_text(LABS_HEADER, [
        ("ZQX001", "2026-10-01", "B12", "abc", "ng/L"),
        ("ZQX002", "2026-10-01", "B12", "987.654", "furlongs")]))],
        "2 of 2 rows rejected", 1),
    "max_reject_rate_exceeded": (_many_bad, "labs: 20 of 113 rows rejected (17.7%), above "
                                            "--max-reject-rate 5.0%", 1),
    "max_reject_rate_tight": (lambda t: [*_many_bad(t), "--max-reject-rate", "0.1"],
                              "above --max-reject-rate 10.0%", 1),
    "as_of_future": (lambda t: [_labs(t / "labs.csv"), "--as-of", "2099-01-01"],
                     "is after today", 1),
    "as_of_not_a_date": (lambda t: [_labs(t / "labs.csv"), "--as-of", "31/10/2026"],
                         "--as-of must be a date YYYY-MM-DD", 2),
    "as_of_year_typo": (lambda t: [_labs(t / "labs.csv"), "--as-of", "0026-10-31"],
                        "--as-of must be a date from 1900 on, got '0026-10-31'", 2),
    "as_of_year_one": (lambda t: [_labs(t / "labs.csv"), "--as-of", "0001-01-01"],
                       "--as-of must be a date from 1900 on", 2),
    "previous_typo": (lambda t: [_labs(t / "labs.csv"), "--previous", t / "reprots/2026-09"],
                      "is not found", 1),
    "previous_plain_file": (lambda t: [_labs(t / "labs.csv"), "--previous", _labs(t / "x.csv")],
                            "is not a folder", 1),
    "previous_not_a_run": (lambda t: [_labs(t / "labs.csv"), "--previous",
                                      _write(t / "old" / "notes.txt", "x").parent],
                           "not a b12screen run folder", 1),
    "reject_rate_out_of_range": (lambda t: [_labs(t / "labs.csv"), "--max-reject-rate", "1.5"],
                                 "--max-reject-rate must be between 0 and 1", 2),
    "engine_unknown": (lambda t: [_labs(t / "labs.csv"), "--engine", "spark"],
                       "--engine must be pandas or dask", 2),
    "format_unknown": (lambda t: [_labs(t / "labs.csv"), "--format", "nosuchformat"],
                       "nosuchformat", 2),
}
STOPS_PENDING: dict[str, str] = {}


@pytest.mark.parametrize("name", [
    pytest.param(n, id=n, marks=pytest.mark.xfail(strict=True, reason=STOPS_PENDING[n]))
    if n in STOPS_PENDING else pytest.param(n, id=n) for n in STOPS])
def test_unusable_input_stops_with_one_line(tmp_path: Path, monkeypatch, name: str) -> None:
    """Exit 1 (2 for usage), one line naming the problem, no traceback, no planted id or
    value printed, no output folder, and the inputs untouched."""
    monkeypatch.chdir(tmp_path)
    build, phrase, code = STOPS[name]
    args = build(tmp_path)
    before = _tree(tmp_path)
    out = tmp_path / "out"
    result = invoke("run", *args, "--out", out, "--quiet")
    _one_error_line(result, phrase, code)
    _check_no_leak(result)
    assert not out.exists() and not (tmp_path / "reports").exists()
    assert _tree(tmp_path) == before


# ------------------------------------------------------------------- --out must not destroy


def _user_folder(t: Path) -> Path:
    _write(t / "mine" / "notes.txt", "my notes ZQX001\n")
    _write(t / "mine" / "sub" / "analysis.R", "x <- 1\n")
    return t / "mine"


# case -> (build in tmp (the cwd), return the --out text; the key phrase)
OUT_CASES: dict[str, tuple[Callable[[Path], str], str]] = {
    "empty_string": (lambda t: "", "is empty (an unset variable?)"),
    "spaces_only": (lambda t: "  ", "is empty (an unset variable?)"),
    "current_folder": (lambda t: ".", "is the current folder or holds it"),
    "parent_of_current": (lambda t: "..", "is the current folder or holds it"),
    "folder_with_user_files": (lambda t: str(_user_folder(t)),
                               "holds files that are not from a b12screen run"),
    "run_folder_plus_user_file": (lambda t: str(_write(_earlier_run(t / "r" / "2026-10")
                                                       / "my-notes.txt", "mine").parent),
                                  "holds files that are not from a b12screen run"),
    "reports_root_of_earlier_runs": (lambda t: (_earlier_run(t / "reports" / "2026-09"),
                                                "reports")[1],
                                     "holds earlier run folders"),
    "a_file": (lambda t: str(_write(t / "report.pdf", b"%PDF-1.4 mine")),
               "is a file, not a folder"),
    "under_a_file": (lambda t: str(_write(t / "report.pdf", b"%PDF-1.4 mine") / "2026-10"),
                     "which is a file, not a folder"),
    "folder_holding_the_input": (lambda t: "data", "holds the input"),
    "inside_the_input_folder": (lambda t: "data/out", "is inside the input"),
}


@pytest.mark.parametrize("command", ["run", "validate"])
@pytest.mark.parametrize("name", list(OUT_CASES))
def test_out_that_would_destroy_stops(tmp_path: Path, monkeypatch, name: str,
                                      command: str) -> None:
    """``--out`` that is not missing, empty or an earlier run folder: exit 1, one line,
    and every file of the user's survives byte for byte."""
    monkeypatch.chdir(tmp_path)
    labs = _labs(tmp_path / "data" / "labs.csv")
    build, phrase = OUT_CASES[name]
    out = build(tmp_path)
    labs_arg = tmp_path / "data" if name == "inside_the_input_folder" else labs
    before = _tree(tmp_path)
    result = invoke(command, labs_arg, "--as-of", AS_OF, "--out", out, "--quiet")
    _one_error_line(result, phrase, 1)
    _check_no_leak(result)
    assert _tree(tmp_path) == before


# ------------------------------------------------------ runs that go ahead, one per case


def _small_run(tmp: Path, labs: Path, *extra: str | Path, written: dict[str, int] | None = None,
               out: str = "out"):
    result = _run("run", labs, *extra, "--as-of", AS_OF, "--out", tmp / out, "--quiet")
    assert result.exit_code == 0, result.stderr
    if written is not None:
        _check_accounting(tmp / out, written)
    _check_no_leak(result, tmp / out)
    return result


BASELINE_ROWS = [*BASE_LABS, ("ZQXB04", "2026-10-04", "MMA", "0.5", "µmol/L"),
                 ("ZQXB05", "2026-10-04", "B12", "abc", "ng/L"),
                 ("ZQXB05", "2026-10-04", "NA", "140", "mmol/L")]


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The plain UTF-8, comma-separated extract that every variant must equal."""
    tmp = tmp_path_factory.mktemp("baseline")
    labs = _write(tmp / "labs.csv", _csv_text(LABS_HEADER, BASELINE_ROWS))
    _small_run(tmp, labs, written={"labs": len(BASELINE_ROWS)})
    return tmp / "out"


def _text(delim: str = ",", end: str = "\n", header=LABS_HEADER, rows=BASELINE_ROWS,
          extra_cell: str | None = None) -> str:
    def line(cells) -> str:
        cells = [c if delim not in c and "," not in c else f'"{c}"' for c in cells]
        return delim.join([*cells, *([] if extra_cell is None else [extra_cell])])
    return end.join([line(header), *(line(r) for r in rows)]) + end


# variant -> (file name, bytes, warning phrase expected or None)
VARIANTS: dict[str, tuple[str, Callable[[], bytes], str | None]] = {
    "utf16_bom": ("labs.csv", lambda: _text().encode("utf-16"), None),
    "utf16_bom_crlf": ("labs.csv", lambda: _text(end="\r\n").encode("utf-16"), None),
    "utf16le_no_bom": ("labs.csv", lambda: _text(end="\r\n").encode("utf-16-le"), None),
    "utf16be_no_bom": ("labs.csv", lambda: _text().encode("utf-16-be"), None),
    "cp1252_micro_sign": ("labs.csv", lambda: _text().encode("cp1252"), None),
    "utf8_bom_crlf": ("labs.csv", lambda: b"\xef\xbb\xbf" + _text(end="\r\n").encode(), None),
    "semicolon": ("labs.csv", lambda: _text(";").encode(), None),
    "pipe": ("labs.csv", lambda: _text("|").encode(), None),
    "tab": ("labs.tsv", lambda: _text("\t").encode(), None),
    "all_quoted": ("labs.csv", lambda: "".join(
        ",".join(f'"{c}"' for c in next(csv.reader([ln]))) + "\n"
        for ln in _text().splitlines()).encode(), None),
    "gzip": ("labs.csv.gz", lambda: gzip.compress(_text().encode()), None),
    "blank_lines_and_padding": ("labs.csv", lambda: ("\n\n" + _text().replace(
        "\n", "\n\n").replace(",", " , ")).encode(), None),
    "trailing_delimiter": ("labs.csv", lambda: _text(extra_cell="").encode(),
                           "1 column(s) not used by the format: column_6"),
    # a repeated column the format does not use is read under a second name, not a stop
    "repeated_unused_column": ("labs.csv", lambda: _csv_text(
        (*LABS_HEADER, "comment", "Comment"), [(*r, "a", "b") for r in BASELINE_ROWS]).encode(),
        "read as Comment -> Comment_2"),
    # some exports end the data lines, or the header alone, with a delimiter
    "trailing_delimiter_data_lines_only": ("labs.csv", lambda: (
        _text().split("\n", 1)[0] + "\n" + _text(extra_cell="").split("\n", 1)[1]).encode(),
        "1 column(s) not used by the format: column_6"),
    "trailing_delimiter_header_only": ("labs.csv", lambda: (
        _text(extra_cell="").split("\n", 1)[0] + "\n" + _text().split("\n", 1)[1]).encode(),
        None),
    "blank_header_cell": ("labs.csv", lambda: _csv_text(
        (*LABS_HEADER, ""), [(*r, "note") for r in BASELINE_ROWS]).encode(),
        "1 column(s) not used by the format: column_6"),
    "two_blank_header_cells": ("labs.csv", lambda: _csv_text(
        (LABS_HEADER[0], "", *LABS_HEADER[1:], ""),
        [(r[0], "x", *r[1:], "y") for r in BASELINE_ROWS]).encode(),
        "2 column(s) not used by the format: column_2, column_7"),
    "parquet_text": ("labs.parquet", lambda: _parquet_bytes(), None),
    "column_names_mixed_case": ("labs.csv", lambda: _text(header=(
        "Patient_ID", "Collected_At", "TEST_CODE", "Result", "Unit")).encode(), None),
}
VARIANTS_PENDING: dict[str, str] = {}


def _parquet_bytes() -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.table({c: [r[i] for r in BASELINE_ROWS]
                             for i, c in enumerate(LABS_HEADER)}), buf)
    return buf.getvalue()


@pytest.mark.parametrize("name", [
    pytest.param(n, id=n, marks=pytest.mark.xfail(strict=True, reason=VARIANTS_PENDING[n]))
    if n in VARIANTS_PENDING else pytest.param(n, id=n) for n in VARIANTS])
def test_encoding_and_layout_variants_read_the_same(tmp_path: Path, baseline: Path,
                                                    name: str) -> None:
    """Any common encoding, delimiter or layout: exit 0, every row read, the same
    patients.parquet byte for byte as the plain file, and no leak."""
    filename, data, warning = VARIANTS[name]
    labs = _write(tmp_path / filename, data())
    result = _small_run(tmp_path, labs, written={"labs": len(BASELINE_ROWS)})
    if warning:
        assert warning in result.stderr
    else:
        assert "column(s) not used" not in result.stderr
    counts = _manifest(tmp_path / "out")["accounting"]["by_input"]["labs"]
    assert counts == _manifest(baseline)["accounting"]["by_input"]["labs"]
    assert (tmp_path / "out" / "patients.parquet").read_bytes() == \
        (baseline / "patients.parquet").read_bytes()


# the reader's own column names as input columns: just input columns (SPEC rev 2)
HOSTILE_COLUMNS = ("reasons", "source_row", "source_file", "input", "_malformed", "raw_line",
                   "\x1fsource_row", "original_reasons", "as_of")


@pytest.mark.parametrize("column", HOSTILE_COLUMNS, ids=lambda c: c.replace("\x1f", "US_"))
def test_input_column_named_like_the_readers_own_changes_nothing(
        tmp_path: Path, baseline: Path, column: str) -> None:
    """Values of the hostile column are the row's patient id: the run succeeds, the column
    is reported as unused, rejected rows keep the product's own input/reasons/source, and
    patients.parquet is byte-identical to the same file without that column."""
    rows = [(*r, r[0]) for r in BASELINE_ROWS]
    labs = _write(tmp_path / "labs.csv", _csv_text((*LABS_HEADER, column), rows))
    result = _small_run(tmp_path, labs, written={"labs": len(rows)})
    out = tmp_path / "out"
    name = column.replace("\x1f", "")
    assert _manifest(out)["unused_columns"]["labs"] == [name]
    assert f"not used by the format: {name}" in result.stderr
    assert (out / "patients.parquet").read_bytes() == (baseline / "patients.parquet").read_bytes()
    rejected = pd.read_parquet(out / "rejected.parquet")
    expected = pd.read_parquet(baseline / "rejected.parquet")
    for own in ("input", "source_row", "reasons"):
        assert rejected[own].tolist() == expected[own].tolist()
    assert rejected["source_file"].tolist() == [str(labs)] * len(rejected)
    extra = [c for c in rejected.columns if c not in expected.columns]
    assert len(extra) == 1 and rejected[extra[0]].tolist() == ["ZQXB05"]


@pytest.mark.parametrize(("kind", "column"), [("patients", "reasons"), ("patients", "input"),
                                              ("medications", "source_row"),
                                              ("medications", "reasons")])
def test_hostile_column_in_patients_and_medications(tmp_path: Path, kind: str,
                                                    column: str) -> None:
    """The same for the optional inputs: a bad row's reasons stay the product's."""
    labs = _labs(tmp_path / "labs.csv")
    header = (*HEADERS[kind], column)
    if kind == "patients":
        rows = [("ZQXB01", "", "50", "F", "", "", "", "", "ZQXB01"),
                ("ZQXB02", "", "abc", "F", "", "", "", "", "ZQXB02")]
        reason = "bad_age"
    else:
        rows = [("ZQXB01", "metformin", "2025-01-01", "", "500", "ZQXB01"),
                ("ZQXB02", "metformin", "2025-13-01", "", "500", "ZQXB02")]
        reason = "bad_date"
    other = _write(tmp_path / f"{kind}.csv", _csv_text(header, rows))
    _small_run(tmp_path, labs, f"--{kind}", other,
               written={"labs": len(BASE_LABS), kind: len(rows)})
    out = tmp_path / "out"
    rejected = pd.read_parquet(out / "rejected.parquet")
    assert rejected[["input", "source_row", "reasons"]].values.tolist() == [[kind, 3, reason]]
    assert _manifest(out)["unused_columns"][kind] == [column]


# misspelt attribute columns: a loud warning naming the intended column and the fix
MISSPELT = {"neuro_symptoms": "neurological_symptoms", "Pregnant?": "pregnant",
            "ileal_resection": "ileal_resection_cm", "Crohns disease": "crohns_disease",
            "autoimune_gastritis": "autoimmune_gastritis"}


@pytest.fixture(scope="module")
def misspelt_run(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("misspelt")
    labs = _labs(tmp / "labs.csv")
    header = ("patient_id", "age_years", *MISSPELT)
    patients = _write(tmp / "patients.csv", _csv_text(header, [
        ("ZQXB02", "50", "yes", "no", "30", "no", "yes")]))
    result = _small_run(tmp, labs, "--patients", patients,
                        written={"labs": len(BASE_LABS), "patients": 1})
    return result, tmp / "out"


@pytest.mark.parametrize("column", list(MISSPELT))
def test_misspelt_column_is_a_loud_warning(misspelt_run, column: str) -> None:
    result, out = misspelt_run
    assert result.exit_code == 0
    intended = MISSPELT[column]
    warning = (f"patients: column '{column}' is not used; did you mean '{intended}'? Rename "
               f"the column, or map it in a format file ([patients.columns] {intended} = "
               f"[\"{column}\"]")
    assert warning in result.stderr
    manifest = _manifest(out)
    assert column in manifest["unused_columns"]["patients"]
    assert any(w.startswith(warning.split("?")[0]) for w in manifest["warnings"])


def test_a_column_the_format_does_not_map_at_all_is_named_too(tmp_path: Path) -> None:
    """A lab's own format that leaves pregnancy unmapped: the file's 'Pregnant' column is the
    canonical one by name, so it gets the loud warning with the mapping to add."""
    fmt = _write(tmp_path / "mine.toml", '[labs.columns]\npatient_id = "patient_id"\n'
                 'collected_at = "collected_at"\ntest_code = "test_code"\nresult = "result"\n'
                 'unit = "unit"\n[labs.codes]\nB12 = "b12_total"\n'
                 '[patients.columns]\npatient_id = "patient_id"\n')
    labs = _labs(tmp_path / "labs.csv")
    patients = _write(tmp_path / "patients.csv", _csv_text(
        ("patient_id", "Pregnant", "Neuro Symptoms", "birth_country"),
        [("ZQXB02", "yes", "no", "UK")]))
    result = _small_run(tmp_path, labs, "--patients", patients, "--format", fmt)
    assert "'birth_country' is not used; it looks like" not in result.stderr  # not birth_year
    for column, canon in (("Pregnant", "pregnant"), ("Neuro Symptoms", "neurological_symptoms")):
        assert (f"warning: patients: column '{column}' is not used; it looks like '{canon}', "
                f"which the format does not map: map it in a format file ([patients.columns] "
                f"{canon} = [\"{column}\"], see docs/formats.md)") in result.stderr


# ------------------------------------------------- ids that are formulas or break XML


HOSTILE_IDS = {
    "formula_eq": "=1+1", "formula_plus_phone": "+441234567890", "formula_at": "@SUM(A1:A9)",
    "formula_minus": "-2+3", "nul_before_eq": "\x00=1+2", "space_before_eq": " =HYPERLINK(1)",
    "tab_before_eq": "\t=ZQX9", "cr_inside": "ZQX\rCR", "uffff": "ZQX\uffffA",
    "ufffe": "ZQX\ufffeB", "control_char": "ZQX\x01C", "escape_char": "ZQX\x1bD",
    "line_separator": "ZQX\u2028E", "leading_zeros": "000ZQX7", "padded": "  ZQX8  ",
    "xml_markup": "ZQX<b>&amp;</b>", "dde": "=cmd|' /C calc'!A0",
}


def _stored(raw: str) -> str:
    """The id as the product keeps it: surrounding whitespace trimmed."""
    return raw.strip()


def _neutralised(stored: str) -> str:
    """OWASP: a cell starting with = + - @ tab or CR, also behind leading control characters
    or spaces, is prefixed with a quote."""
    risky = re.match(r"^[\x00-\x20]*[=+\-@]", stored) or stored[:1] in ("\t", "\r")
    return "'" + stored if risky else stored


@pytest.fixture(scope="module")
def hostile_id_run(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("hostile_ids")
    rows = [(pid, "2026-10-01", "B12", "100", "ng/L") for pid in HOSTILE_IDS.values()]
    labs = _write(tmp / "labs.csv", _csv_text(LABS_HEADER, [*BASE_LABS, *rows]))
    result = _small_run(tmp, labs, written={"labs": len(BASE_LABS) + len(rows)})
    return result, tmp / "out"


@pytest.mark.parametrize("name", list(HOSTILE_IDS))
def test_hostile_id_is_kept_neutralised_and_never_breaks_the_workbook(hostile_id_run,
                                                                      name: str) -> None:
    """A deficient patient with a hostile id: kept as written in patients.parquet, on the
    supplementation list with the id neutralised in CSV, worklists.xlsx a valid zip whose
    every XML part parses, and the id in no shareable file."""
    result, out = hostile_id_run
    raw = HOSTILE_IDS[name]
    stored = _stored(raw)
    patients = pd.read_parquet(out / "patients.parquet")
    assert stored in set(patients["patient_id"])
    listed = pd.read_csv(out / "worklists" / "supplementation.csv", encoding="utf-8-sig",
                         dtype=str, keep_default_na=False)
    assert _neutralised(stored) in set(listed["patient_id"])
    with zipfile.ZipFile(out / "worklists.xlsx") as workbook:
        assert workbook.testzip() is None
        for part in workbook.namelist():
            if part.endswith((".xml", ".rels")):
                ET.fromstring(workbook.read(part))  # raises on invalid XML
    for share in SHAREABLE:
        assert stored not in (out / share).read_text(encoding="utf-8")
    _check_no_leak(result, out)


# -------------------------------------------------------- malformed CSV, realistic extract


def _planted(text: str) -> str:
    """A sample extract with planted ids (ZQX before every id) and one planted value."""
    lines = text.splitlines()
    lines = [lines[0]] + [("ZQX" + ln if ln[:1].isdigit() else ln) for ln in lines[1:]]
    cells = lines[1].split(",")
    cells[3] = "987.654" if cells[2] in ("B12", "VITB12", "2132-9") else cells[3]
    lines[1] = ",".join(cells)
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def extract(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    from pipeline.sample_data import generate

    tmp = tmp_path_factory.mktemp("extract")
    paths = generate(tmp, n_patients=150, seed=3)
    return {kind: _planted(path.read_text(encoding="utf-8")) for kind, path in paths.items()}


@pytest.fixture(scope="module")
def extract_run(extract, tmp_path_factory: pytest.TempPathFactory):
    """The realistic extract as generated (a chemistry panel is most of its rows)."""
    tmp = tmp_path_factory.mktemp("extract_run")
    files = {k: _write(tmp / f"{k}.csv", v) for k, v in extract.items()}
    written = {k: v.count("\n") - 1 for k, v in extract.items()}
    result = _run("run", files["labs"], "--patients", files["patients"], "--medications",
                  files["medications"], "--out", tmp / "out", "--quiet")
    assert result.exit_code == 0, result.stderr
    _check_accounting(tmp / "out", written)
    _check_no_leak(result, tmp / "out")
    return tmp / "out"


def test_realistic_chemistry_extract_runs(extract, extract_run) -> None:
    """NA, K, CA and the rest of the panel are other tests, skipped and counted, not
    rejected as missing codes: the run goes ahead."""
    counts = _manifest(extract_run)["accounting"]["by_input"]["labs"]
    codes = [ln.split(",")[2] for ln in extract["labs"].splitlines()[1:]]
    assert {"NA", "K", "CA"} <= set(codes)
    rejected = pd.read_parquet(extract_run / "rejected.parquet")
    assert "missing_test_code" not in ";".join(rejected["reasons"])
    assert counts["rows_skipped_other_tests"] >= sum(c in ("NA", "K", "CA") for c in codes)


def _quote_at(line: str) -> str:
    """``line`` with a quote opening its result field (never closed on that line)."""
    cells = line.split(",")
    cells[3] = '"' + cells[3]
    return ",".join(cells)


def _unclosed(lines: list[str]) -> list[str]:
    lines = list(lines)
    lines[50] = _quote_at(lines[50])  # physical line 51
    return lines


def _closed_later(lines: list[str]) -> list[str]:
    lines = _unclosed(lines)
    lines[55] = lines[55] + '"'  # a quote at the end of line 56
    return lines


def _oversized(lines: list[str]) -> list[str]:
    lines = list(lines)
    cells = lines[50].split(",")
    cells[-1] = "S" + "9" * (2 << 20)  # a 2 MB specimen id on line 51
    lines[50] = ",".join(cells)
    return lines


# mutation of the realistic extract -> the line rejected and its reason(s)
MUTATIONS: dict[str, tuple[Callable[[list[str]], list[str]], set[str]]] = {
    "unclosed_quote_line_51": (_unclosed, {"malformed_row"}),
    "quote_closed_5_lines_later": (_closed_later, {"malformed_row"}),
    "oversized_field_2MB": (_oversized, {"oversized_field", "malformed_row"}),
}
MUTATIONS_PENDING: dict[str, str] = {}


@pytest.mark.parametrize("name", [
    pytest.param(n, id=n, marks=pytest.mark.xfail(strict=True, reason=MUTATIONS_PENDING[n]))
    if n in MUTATIONS_PENDING else pytest.param(n, id=n) for n in MUTATIONS])
def test_stray_quote_or_huge_field_costs_one_row(tmp_path: Path, extract, extract_run,
                                                  name: str) -> None:
    """Line 51 of the realistic extract is broken: exit 0, line 51 rejected with its line
    number, every other line read as its own row (each ends as in the unbroken run)."""
    mutate, reasons = MUTATIONS[name]
    lines = mutate(extract["labs"].splitlines())
    labs = _write(tmp_path / "labs.csv", "\n".join(lines) + "\n")
    written = len(lines) - 1
    result = _run("run", labs, "--out", tmp_path / "out", "--quiet")
    assert result.exit_code == 0, result.stderr
    _check_accounting(tmp_path / "out", {"labs": written})
    _check_no_leak(result, tmp_path / "out")
    rejected = pd.read_parquet(tmp_path / "out" / "rejected.parquet")
    line_51 = rejected[rejected["source_row"] == 51]
    assert len(line_51) == 1 and line_51["reasons"].iloc[0] in reasons
    before = pd.read_parquet(extract_run / "rejected.parquet")
    before = before[before["input"] == "labs"]
    assert set(rejected["source_row"]) - {51} == set(before["source_row"]) - {51}
    results = pd.read_parquet(tmp_path / "out" / "results.parquet")
    results_before = pd.read_parquet(extract_run / "results.parquet")
    assert set(results["source_row"]) == set(results_before["source_row"]) - {51}


def test_quoted_comment_spanning_two_lines_is_one_record(tmp_path: Path) -> None:
    """A legitimately quoted comment with a line break: one record, the rows after it keep
    their physical line numbers, nothing rejected."""
    header = (*LABS_HEADER, "comment")
    rows = [(*r, "") for r in BASE_LABS]
    rows.insert(1, ("ZQXC01", "2026-10-04", "B12", "260", "ng/L",
                    "haemolysed, repeated\nsecond line of the comment"))
    labs = _write(tmp_path / "labs.csv", _csv_text(header, rows))
    _small_run(tmp_path, labs, written={"labs": len(rows)})
    out = tmp_path / "out"
    results = pd.read_parquet(out / "results.parquet")
    lines = dict(zip(results["patient_id"], results["source_row"], strict=True))
    # header line 1; ZQXB01 line 2; the comment record lines 3-4; then lines 5 and 6
    assert lines == {"ZQXB01": 2, "ZQXC01": 3, "ZQXB02": 5, "ZQXB03": 6}
    assert len(pd.read_parquet(out / "rejected.parquet")) == 0


# ------------------------------------------------------------------ folders and empty months


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("folder")
    _labs(tmp / "in" / "labs.csv")
    _write(tmp / "in" / "notes.txt", "ZQXB01 looked odd, 987.654\n")
    _write(tmp / "in" / "README.md", "# October extract\nZQXB02\n")
    result = _small_run(tmp, tmp / "in", written={"labs": len(BASE_LABS)})
    return result, tmp / "out"


@pytest.mark.parametrize("name", ["notes.txt", "README.md"])
def test_non_extract_files_in_a_folder_are_skipped_with_a_warning(folder_run,
                                                                  name: str) -> None:
    result, out = folder_run
    warning = next(w for w in _manifest(out)["warnings"] if "are not extracts" in w)
    assert "2 file(s) in folder" in warning and name in warning
    assert f"warning: {warning}" in result.stderr
    assert [Path(i["path"]).name for i in _manifest(out)["inputs"]["labs"]] == ["labs.csv"]


@pytest.fixture(scope="module")
def empty_month_run(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("empty_month")
    labs = _labs(tmp / "labs.csv")
    patients = _write(tmp / "patients.csv", ",".join(PATIENTS_HEADER) + "\n")
    meds = _write(tmp / "medications.parquet", _parquet(tmp / "m.parquet", MEDS_HEADER, [])
                  .read_bytes())
    result = _small_run(tmp, labs, "--patients", patients, "--medications", meds,
                        written={"labs": len(BASE_LABS), "patients": 0, "medications": 0})
    return result, tmp / "out"


@pytest.mark.parametrize("kind", ["patients", "medications"])
def test_header_only_optional_input_is_a_valid_empty_month(empty_month_run, kind) -> None:
    result, out = empty_month_run
    assert result.exit_code == 0
    counts = _manifest(out)["accounting"]["by_input"][kind]
    assert counts["rows_read"] == 0 and counts["balanced"] is True


@pytest.mark.parametrize("case", ["ids_in_code_column", "swapped_id_and_code",
                                  "swapped_in_a_small_extract", "control_characters",
                                  "results_in_code_column", "unmapped_real_codes"])
def test_unmapped_codes_warning_prints_no_id(tmp_path: Path, case: str) -> None:
    """Mislabelled columns (ids or results where the codes should be): the warning names
    no code, so no id or result; real but unmapped codes seen for enough patients are
    named. With the id and code columns swapped, each id is "seen" for as many "patients"
    as it had tests (here 8, above small_count): the distinct counts give it away."""
    if case == "ids_in_code_column":
        labs = _mislabelled(tmp_path)
        written, phrase = 20, ("no code is shown: the test code column has 20 distinct "
                               "values for 1 patients")
    elif case == "swapped_id_and_code":
        rows = [(f"T{t:02d}", "2026-10-01", f"ZQX{i:03d}", "100", "ng/L")
                for i in range(20) for t in range(8)]
        labs = _write(tmp_path / "labs.csv", _csv_text(LABS_HEADER, rows))
        written, phrase = 160, "the test code column has 20 distinct values for 8 patients"
    elif case == "swapped_in_a_small_extract":  # 12 ids, 8 tests: not clearly swapped
        rows = [(f"T{t:02d}", "2026-10-01", f"ZQX{i:03d}", "100", "ng/L")
                for i in range(12) for t in range(8)]
        labs = _write(tmp_path / "labs.csv", _csv_text(LABS_HEADER, rows))
        written, phrase = 96, "no code is shown, as the column may hold ids or results"
    elif case == "control_characters":  # C1 control and a bidi override, 9 patients each
        rows = [(f"P{i:03d}", "2026-10-01", code, "1", "ng/L") for i in range(9)
                for code in ("AB\u009b31m", "X\u202eYZ")]
        labs = _write(tmp_path / "labs.csv", _csv_text(LABS_HEADER, rows))
        written, phrase = 18, "no code is shown, as the column may hold ids or results"
    elif case == "results_in_code_column":  # a common result, 987.654, for 9 patients
        rows = [(f"P{i:03d}", "2026-10-01", "987.654", "B12", "ng/L") for i in range(9)]
        labs = _write(tmp_path / "labs.csv", _csv_text(LABS_HEADER, rows))
        written, phrase = 9, "no code is shown, as the column may hold ids or results"
    else:
        rows = [(f"ZQX{i:03d}", "2026-10-01", "FERR", "987.654", "ug/L") for i in range(8)]
        labs = _write(tmp_path / "labs.csv", _csv_text(LABS_HEADER, rows))
        written, phrase = 8, "; most common codes: FERR"
    result = _small_run(tmp_path, labs, "--max-reject-rate", "1", written={"labs": written})
    assert "labs: none of the " + str(written) + " rows has a test code mapped" in result.stderr
    assert phrase in result.stderr


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be"])
def test_a_utf16_extract_in_a_folder_is_read_as_alone(tmp_path: Path, encoding: str) -> None:
    """A file that reads on its own reads in a folder too: UTF-16 (with a BOM, or without
    one as bcp -w writes it) is not taken for a file of notes."""
    folder = tmp_path / "labs"
    folder.mkdir()
    _write(folder / "labs.csv", _text(end="\r\n").encode(encoding))
    _write(folder / "notes.txt", b"not an extract\n")
    _small_run(tmp_path, folder, written={"labs": len(BASELINE_ROWS)})
    inputs = _manifest(tmp_path / "out")["inputs"]["labs"]
    assert [Path(i["path"]).name for i in inputs] == ["labs.csv"]


def test_a_stray_quote_among_trailing_delimiters_costs_its_own_row(tmp_path: Path) -> None:
    """Data lines ending with a delimiter the header lacks, and one line among them with a
    stray quote: the trailing field is still read as an unused column, and the stray quote
    rejects only its own line (SPEC "Malformed CSV")."""
    header, body = _text(extra_cell="").split("\n", 1)
    lines = body.rstrip("\n").split("\n")
    lines.insert(2, 'ZQXS01,2026-10-01,B12,"250,ng/L,')
    text = _text().split("\n", 1)[0] + "\n" + "\n".join(lines) + "\n"
    labs = _write(tmp_path / "labs.csv", text.encode())
    _small_run(tmp_path, labs, "--max-reject-rate", "1", written={"labs": len(lines)})
    rejected = pd.read_csv(tmp_path / "out" / "rejected.csv", dtype=str, keep_default_na=False)
    malformed = rejected[rejected["reasons"].str.contains("malformed_row")]
    assert malformed["source_row"].tolist() == ["4"]  # header is line 1
    assert _manifest(tmp_path / "out")["unused_columns"]["labs"] == ["column_6"]
