"""The bad-input corpus: every way a real extract arrives broken, with the exact outcome.

Whole-input problems stop the run: exit code 1 (2 for a bad format, a usage error), exactly
one line on stderr starting ``b12screen: error:``, no traceback, no output folder. Row-level
problems never stop a run: each bad row is in ``rejected.parquet`` with its exact reason
codes, source file and 1-based line, and the manifest's accounting shows no row was lost.
The corpus files are generated here, so each case reads as the bytes it is made of.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import pipeline
from pipeline.ingest.validate import LAB_REASONS, MEDICATION_REASONS, PATIENT_REASONS
from tests.conftest import invoke

HEADER = "patient_id,collected_at,test_code,result,unit\n"
GOOD = "0001,2026-10-01,B12,150,ng/L\n"
AS_OF = "2026-10-31"


def _write(path: Path, data: str | bytes, encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode(encoding))
    return path


def _parquet(path: Path, columns: dict[str, list]) -> Path:
    pq.write_table(pa.table(columns), path)
    return path


def _labs_table(rows: int = 2) -> dict[str, list]:
    return {"patient_id": ["0001"] * rows, "collected_at": ["2026-10-01"] * rows,
            "test_code": ["B12"] * rows, "result": ["150"] * rows, "unit": ["ng/L"] * rows}


def _truncated_parquet(tmp: Path) -> Path:
    path = _parquet(tmp / "labs.parquet", _labs_table(50))
    data = path.read_bytes()
    return _write(path, data[: len(data) // 2])


def _format(tmp: Path, text: str) -> Path:
    return _write(tmp / "lims.toml", text)


MINIMAL_FORMAT = ('[labs.columns]\npatient_id = "patient_id"\ncollected_at = "collected_at"\n'
                  'test_code = "test_code"\nresult = "result"\nunit = "unit"\n'
                  '[labs.codes]\nB12 = "b12_total"\n')

# case id -> (build files in tmp, return CLI args after "run"; expected line; exit code)
Case = tuple[Callable[[Path], list], str, int]
WHOLE_INPUT: dict[str, Case] = {
    "empty_file": (lambda t: [_write(t / "labs.csv", "")],
                   "labs: {t}/labs.csv is empty", 1),
    "blank_lines_only": (lambda t: [_write(t / "labs.csv", "\r\n\n   \n")],
                         "labs: {t}/labs.csv is empty", 1),
    "header_only": (lambda t: [_write(t / "labs.csv", HEADER)],
                    "labs: no data rows in {t}/labs.csv (only a header)", 1),
    "header_only_parquet": (lambda t: [_parquet(t / "labs.parquet", {
        c: pa.array([], pa.string()) for c in HEADER.strip().split(",")})],
        "labs: no data rows in {t}/labs.parquet (only a header)", 1),
    "truncated_parquet": (lambda t: [_truncated_parquet(t)],
                          "labs: cannot read {t}/labs.parquet as Parquet (not a Parquet file,"
                          " or truncated)", 1),
    "csv_bytes_named_parquet": (lambda t: [_write(t / "labs.parquet", HEADER + GOOD)],
                                "labs: cannot read {t}/labs.parquet as Parquet (not a Parquet"
                                " file, or truncated)", 1),
    "missing_required_column": (
        lambda t: [_write(t / "labs.csv", "patient_id,collected_at,test_code,unit\n"
                                          "0001,2026-10-01,B12,ng/L\n")],
        "labs: required column result missing in {t}/labs.csv; columns found: patient_id, "
        "collected_at, test_code, unit", 1),
    "missing_two_columns_tab_delimited": (
        lambda t: [_write(t / "labs.tsv", "patient_id\tcollected_at\tvalue\n1\t2\t3\n")],
        "labs: required column test_code, result missing in {t}/labs.tsv; columns found: "
        "patient_id, collected_at, value", 1),
    "missing_column_in_one_file_of_a_folder": (
        lambda t: [_write(t / "in" / "a.csv", HEADER + GOOD)
                   and _write(t / "in" / "b.csv", "patient_id,when,test_code,result\n1,2,3,4\n")
                   and t / "in"],
        "labs: required column collected_at missing in {t}/in/b.csv; columns found: "
        "patient_id, when, test_code, result", 1),
    "duplicate_column_names": (
        lambda t: [_write(t / "labs.csv", "patient_id,collected_at,test_code,result,result\n"
                                          "1,2026-10-01,B12,150,160\n")],
        "labs: {t}/labs.csv has duplicate column name(s): result", 1),
    "duplicate_column_names_differing_in_case": (
        lambda t: [_write(t / "labs.csv", "patient_id,collected_at,test_code,Result,RESULT\n"
                                          "1,2026-10-01,B12,150,160\n")],
        "labs: {t}/labs.csv has duplicate column name(s): Result, RESULT", 1),
    "duplicate_column_names_in_parquet": (
        lambda t: [pq.write_table(pa.table([pa.array(["1"])] * 5, names=[
            "patient_id", "collected_at", "test_code", "result", "patient_id"]),
            t / "labs.parquet") or t / "labs.parquet"],
        "labs: {t}/labs.parquet has duplicate column name(s): patient_id", 1),
    "every_row_bad": (
        lambda t: [_write(t / "labs.csv", HEADER + "0001,2026-10-01,B12,haemolysed,ng/L\n"
                          "0002,2026-13-01,B12,150,ng/L\n,2026-10-01,B12,150,ng/L\n"),
                   "--as-of", AS_OF],
        "labs: 3 of 3 rows rejected (100.0%), above --max-reject-rate 5.0%; see the reasons "
        "with 'b12screen validate'", 1),
    "patients_above_reject_rate": (
        lambda t: [_write(t / "labs.csv", HEADER + GOOD), "--patients",
                   _write(t / "patients.csv", "patient_id,birth_date,pregnant\n"
                                              "0001,1950-01-01,perhaps\n")],
        "patients: 1 of 1 rows rejected (100.0%), above --max-reject-rate 5.0%; see the "
        "reasons with 'b12screen validate'", 1),
    "nonexistent_path": (lambda t: [t / "nope.csv"],
                         "labs: no such file or folder: {t}/nope.csv", 1),
    "empty_folder": (lambda t: [(t / "empty").mkdir() or t / "empty"],
                     "labs: folder {t}/empty holds no .csv or .parquet files", 1),
    "folder_without_data_files": (
        lambda t: [_write(t / "docs" / "readme.md", "x") and t / "docs"],
        "labs: folder {t}/docs holds no .csv or .parquet files", 1),
    "glob_matching_nothing": (lambda t: [str(t / "2026-*" / "*.parquet")],
                              "labs: no files match {t}/2026-*/*.parquet", 1),
    "missing_patients_file": (lambda t: [_write(t / "labs.csv", HEADER + GOOD), "--patients",
                                         t / "patients.csv"],
                              "patients: no such file or folder: {t}/patients.csv", 1),
    "patients_missing_id_column": (
        lambda t: [_write(t / "labs.csv", HEADER + GOOD), "--patients",
                   _write(t / "patients.csv", "id,sex\n0001,F\n")],
        "patients: required column patient_id missing in {t}/patients.csv; columns found: "
        "id, sex", 1),
    "not_gzip_named_gz": (lambda t: [_write(t / "labs.csv.gz", HEADER + GOOD)],
                          "labs: cannot decompress {t}/labs.csv.gz: not a valid gzip file, or "
                          "truncated", 1),
    "truncated_gzip": (lambda t: [_write(t / "labs.csv.gz",
                                         gzip.compress((HEADER + GOOD * 200).encode())[:60])],
                       "labs: cannot decompress {t}/labs.csv.gz: not a valid gzip file, or "
                       "truncated", 1),
    "spreadsheet_instead_of_csv": (
        lambda t: [_write(t / "labs.xlsx", b"PK\x03\x04" + b"\x00" * 64)],
        "labs: {t}/labs.xlsx is a spreadsheet or zip archive, not CSV; save it as CSV and "
        "read that", 1),
    "unterminated_quote_in_header": (
        lambda t: [_write(t / "labs.csv", '"patient_id,collected_at,test_code,result\n1,2\n')],
        "labs: cannot read the header line of {t}/labs.csv", 1),
    "declared_utf8_but_cp1252_bytes": (
        lambda t: [_write(t / "labs.csv", HEADER + "0001,2026-10-01,MMA,0.3,µmol/L\n",
                          "cp1252"),
                   "--format", _format(t, MINIMAL_FORMAT + '[read]\nencoding = "utf-8"\n')],
        "labs: {t}/labs.csv is not valid UTF-8 (line 2, byte 71); declare its encoding in the "
        "format's [read] table", 1),
    "no_usable_results_and_no_as_of": (
        lambda t: [_write(t / "labs.csv", HEADER + "0001,2026-10-01,B12,abc,ng/L\n"),
                   "--max-reject-rate", "1"],
        "labs: no usable B12 or MMA results, so the as-of date cannot be inferred; give "
        "--as-of", 1),
    "no_code_mapped_and_no_as_of": (  # the format is what to fix, not the missing --as-of
        lambda t: [_write(t / "labs.csv", HEADER + "0001,2026-10-01,FERRITIN,40,ug/L\n")],
        "labs: none of the 1 rows has a test code mapped by format 'canonical' ({configs}/"
        "formats/canonical.toml); no code is shown, as the column may hold ids or results "
        "(check that the columns are labelled as the format expects); so there is no B12 or "
        "MMA result to infer the as-of date from: check --format (docs/formats.md)", 1),
    "canonical_columns_under_another_format": (  # the reader reads the format's names only
        lambda t: [_write(t / "labs.csv", HEADER + GOOD), "--format", "omop"],
        "labs: required column person_id, measurement_datetime or measurement_date, "
        "measurement_source_value or measurement_concept_id, value_as_number or "
        "value_source_value missing in {t}/labs.csv; columns found: patient_id, collected_at, "
        "test_code, result, unit; its columns are those of the canonical format (--format "
        "canonical, the default)", 1),
    "comma_file_under_a_semicolon_format": (
        lambda t: [_write(t / "labs.csv", HEADER + GOOD), "--format", "uk-lab"],
        "labs: required column Patient ID, Sample Date, Test, Result missing in {t}/labs.csv; "
        "columns found: patient_id,collected_at,test_code,result,unit; the header is one "
        "column holding ',': the file seems ','-delimited, and the format reads ';' ([read] "
        "delimiter)", 1),
    "one_canonical_name_under_another_format": (
        lambda t: [_write(t / "labs.csv", "patient_id;Sample Date;Test;Result;Units\n"
                          "0001;01/10/2026;B12;150;ng/L\n"), "--format", "uk-lab"],
        "labs: required column Patient ID missing in {t}/labs.csv; columns found: patient_id, "
        "Sample Date, Test, Result, Units", 1),
    "unknown_format_name": (lambda t: [_write(t / "labs.csv", HEADER + GOOD),
                                       "--format", "lims9"],
                            "unknown format 'lims9' (shipped: canonical, omop, uk-lab)", 2),
    "format_with_unknown_key": (
        lambda t: [_write(t / "labs.csv", HEADER + GOOD), "--format",
                   _format(t, MINIMAL_FORMAT.replace("[labs.codes]", "[labs.code]"))],
        "unknown key 'labs.code' in {t}/lims.toml", 2),
    "format_with_bad_value": (
        lambda t: [_write(t / "labs.csv", HEADER + GOOD), "--format",
                   _format(t, MINIMAL_FORMAT + "[read]\nday_first = 1\n")],
        "key 'read.day_first' in {t}/lims.toml must be true or false", 2),
    "format_that_maps_nothing": (
        lambda t: [_write(t / "labs.csv", HEADER + GOOD), "--format",
                   _format(t, '[format]\nname = "empty"\n')],
        "format {t}/lims.toml maps nothing: it needs a [labs.columns] table (see "
        "docs/formats.md)", 2),
    "format_that_maps_no_codes": (
        lambda t: [_write(t / "labs.csv", HEADER + GOOD), "--format",
                   _format(t, MINIMAL_FORMAT.replace('B12 = "b12_total"', ""))],
        "format {t}/lims.toml maps no test codes ([labs.codes] is empty)", 2),
    "format_file_missing": (lambda t: [_write(t / "labs.csv", HEADER + GOOD), "--format",
                                       t / "lims.toml"],
                            "format file not found: {t}/lims.toml", 2),
}


@pytest.mark.parametrize("case", sorted(WHOLE_INPUT))
def test_whole_input_failure(tmp_path: Path, case: str) -> None:
    build, message, code = WHOLE_INPUT[case]
    args = build(tmp_path)
    out = tmp_path / "out"
    result = invoke("run", *args, "--out", out)
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    configs = Path(pipeline.__file__).resolve().parents[1] / "configs"
    assert lines == [f"b12screen: error: {message.format(t=tmp_path, configs=configs)}"]
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


# ------------------------------------------------------------------------ row-level corpus

LONG = "x" * 100_000
#: labs/batch.csv, line by line: (line text, expected reasons or outcome).
LAB_LINES = [
    ("patient_id,collected_at,test_code,result,unit,comment", "header"),
    ("PA01,2026-10-01,B12,150,ng/L,ok", "accepted"),
    ("PA02,03/10/2026,B12,150,ng/L,day-first date under canonical", "bad_date"),
    ("PA03,2026-10-01T09:30:00+01:00,B12,300,ng/L,zone dropped", "accepted"),
    ("PA04,2026-02-30,B12,150,ng/L,impossible date", "bad_date"),
    ("PA05,1899-12-31,B12,150,ng/L,before 1900", "bad_date"),
    ("PA06,2099-01-01,B12,150,ng/L,future", "future_date"),
    ("  PA07 ,2026-10-01,B12,150,ng/L,spaces around id", "accepted"),
    ("PA07,2026-10-02,B12,400,ng/L,same patient", "accepted"),
    ("NULL,2026-10-01,B12,150,ng/L,missing-value token id", "missing_patient_id"),
    ("PA08,2026-10-01,B12,N/A,ng/L,missing-value token", "missing_result"),
    ("PA09,2026-10-01,B12,-,ng/L,dash token", "missing_result"),
    ('PA10,2026-10-01,B12,"1,234",ng/L,thousands separator', "non_numeric_result"),
    ("PA11,2026-10-01,B12,2.5E2,ng/L,scientific notation", "non_numeric_result"),
    ("PA12,2026-10-01,B12,150,mg/dL,unknown unit", "unknown_unit"),
    ("PA13,2026-10-01,B12,150,ng/LL,misspelt unit", "unknown_unit"),
    ("PA14,2026-10-01,B12,150,,no unit and no default", "unknown_unit"),
    ("PA15,2026-10-01,B12,0.25,ng/L,unit slip", "implausible_value"),
    ("PA16,2026-10-01T08:00,B12,260,ng/L,conflict a", "accepted"),
    ("PA16,2026-10-01T08:00,B12,150,ng/L,conflict b", "accepted"),
    ("PA17,2026-10-01,B12,-5,ng/L,negative", "negative_result"),
    ("PA18,2026-10-01,,150,ng/L,no code", "missing_test_code"),
    ("PA19,2026-10-01,B12,=1+2,ng/L,formula result", "non_numeric_result"),
    ('"=HYPERLINK(""http://example.invalid"")",2026-10-01,B12,150,ng/L,formula id',
     "accepted"),
    (f"PA20,2026-10-01,B12,{LONG},ng/L,very long result", "non_numeric_result"),
    (f"PA21,2026-10-01,B12,500,ng/L,{LONG}", "accepted"),
    ("PA22,2026-10-01,B12", "malformed_row"),
    ("PA23,2026-10-01,B12,150,ng/L,ok,extra field", "malformed_row"),
    ("PA01,2026-10-01,B12,150,ng/L,ok", "duplicate"),
    ("PA24,2026-10-01,FERRITIN,40,ug/L,other test", "skipped"),
    ("PA25,2026-10-01,B12,< 150 ,ng/L,censored with spaces", "accepted"),
    ("PA26, 2026-10-01 ,b12,150,NG/L,case and spaces", "accepted"),
    ("PA27,2026-10-01,MMA,0.25,μmol/L,greek mu", "accepted"),
    ("PA28,2026-10-01,B12,150,ng/L,NaN and [] in comment: \ufffd", "accepted"),
    ("PA29,2026-00-10,B12,150,ng/L,month zero", "bad_date"),
    ("PA30,,B12,abc,furlongs,several problems", "bad_date;non_numeric_result;unknown_unit"),
]
#: labs/windows.csv: cp1252, ';', CRLF, in the same folder as batch.csv.
WINDOWS_LINES = [
    ("patient_id;collected_at;test_code;result;unit", "header"),
    ("PB01;2026-10-05;MMA;0,5;µmol/L", "non_numeric_result"),  # decimal comma, not declared
    ("PB02;2026-10-05;MMA;0.50;µmol/L", "accepted"),
    ("PB03;2026-10-05;B12;150;ng/L", "accepted"),
]
PATIENT_LINES = [
    ("patient_id,birth_date,sex,diet,pregnant,bariatric_surgery,ileal_resection_cm", "header"),
    ("PA01,1950-01-01,F,vegan,no,no,0", "accepted"),
    ("PA02,1960-01-01,F,omnivore,maybe,no,0", "bad_yes_no"),
    ("PA03,1960-01-01,F,carnivore,no,no,0", "bad_diet"),
    ("PA04,1960-01-01,F,omnivore,no,no,ten", "bad_number"),
    ("PA05,1960-01-01,F,omnivore,no,no,0", "conflicting_patient_rows"),
    ("PA05,1961-01-01,F,omnivore,no,no,0", "conflicting_patient_rows"),
    ("PA06,2030-01-01,F,omnivore,no,no,0", "future_date"),
    ("PA07,31/02/1960,F,omnivore,no,no,0", "bad_date"),
    ("PA01,1950-01-01,F,vegan,no,no,0", "duplicate"),
    (",1950-01-01,F,vegan,no,no,0", "missing_patient_id"),
    ("PA08,1950-01-01,F,VEGAN,YES,N,", "accepted"),
    ("PA08,1950-01-01,female,vegan,yes,no,", "duplicate"),  # the same patient, spelt anew
    ("PA09,1950-01-01,F", "malformed_row"),
    ("PA10,1950-01-01,F,omnivore,no,no,30cm", "accepted"),  # the column's own unit
    ("PA11,1950-01-01,F,omnivore,no,no,30 mm", "bad_number"),  # another unit
]
MEDICATION_LINES = [
    ("patient_id,medication,start_date,end_date,dose_mg_per_day", "header"),
    ("PA01,Metformin 500mg tablets,2025-01-01,,1000", "accepted"),
    ("PA02,Metformin 500mg tablets,2026-05-01,2026-04-01,500", "end_before_start"),
    ("PA03,,2026-01-01,,", "missing_medication"),
    ("PA04,Metformin 1g tablets,2026-01-01,,lots", "bad_number"),
    ("PA05,Cyanocobalamin 50mcg tablets,not a date,,", "bad_date"),
    ("PA06,Paracetamol 500mg tablets,2026-01-01,,", "skipped"),
    (",Metformin 500mg tablets,2026-01-01,,", "missing_patient_id"),
    ("PA07,Metformin 500mg tablets,2025-01-01,,1000 mg/day", "accepted"),
    ('PA09,Metformin 500mg tablets,2025-01-01,,"1,000 mg"', "accepted"),  # thousands
    ("PA08,Metformin 1g tablets,2025-01-01,,1 g", "bad_number"),
]


def _expected(lines: list[tuple[str, str]], file: Path, kind: str) -> dict[tuple, str]:
    return {(kind, str(file), n): outcome for n, (_, outcome) in enumerate(lines, start=1)
            if outcome not in ("header", "accepted", "duplicate", "skipped")}


def _counts(lines: list[tuple[str, str]]) -> dict[str, int]:
    outcomes = [o for _, o in lines[1:]]
    rejected = sum(o not in ("accepted", "duplicate", "skipped") for o in outcomes)
    return {"rows_read": len(outcomes), "rows_accepted": outcomes.count("accepted"),
            "rows_rejected": rejected, "skipped": outcomes.count("skipped"),
            "rows_exact_duplicates": outcomes.count("duplicate")}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("corpus")
    files = {
        "batch": _write(root / "labs" / "batch.csv",
                        "\n".join(t for t, _ in LAB_LINES) + "\n"),
        "windows": _write(root / "labs" / "windows.csv",
                          "\r\n".join(t for t, _ in WINDOWS_LINES) + "\r\n", "cp1252"),
        "patients": _write(root / "patients.csv", "\n".join(t for t, _ in PATIENT_LINES)),
        "medications": _write(root / "medications.csv",
                              "\n".join(t for t, _ in MEDICATION_LINES) + "\n"),
    }
    return {"root": root, "labs": root / "labs", **files}


@pytest.fixture(scope="module")
def corpus_run(corpus: dict[str, Path]):
    out = corpus["root"] / "out"
    result = invoke("run", corpus["labs"], "--patients", corpus["patients"], "--medications",
                    corpus["medications"], "--as-of", AS_OF, "--max-reject-rate", "1",
                    "--out", out)
    assert result.exit_code == 0, result.output
    return result, out


def test_every_bad_row_has_its_exact_reasons_and_line(corpus, corpus_run) -> None:
    _, out = corpus_run
    rejected = pd.read_parquet(out / "rejected.parquet")
    got = {(k, f, int(n)): r for k, f, n, r in
           rejected[["input", "source_file", "source_row", "reasons"]].to_numpy().tolist()}
    want = {**_expected(LAB_LINES, corpus["batch"], "labs"),
            **_expected(WINDOWS_LINES, corpus["windows"], "labs"),
            **_expected(PATIENT_LINES, corpus["patients"], "patients"),
            **_expected(MEDICATION_LINES, corpus["medications"], "medications")}
    assert got == want


def test_no_row_is_lost(corpus_run) -> None:
    _, out = corpus_run
    manifest = json.loads((out / "manifest.json").read_text())
    acc = manifest["accounting"]
    labs = _counts(LAB_LINES[:1] + LAB_LINES[1:] + WINDOWS_LINES[1:])
    got_labs = acc["by_input"]["labs"]
    assert {k: got_labs[k] for k in ("rows_read", "rows_accepted", "rows_rejected",
                                     "rows_exact_duplicates")} == \
        {k: v for k, v in labs.items() if k != "skipped"}
    assert got_labs["rows_skipped_other_tests"] == labs["skipped"]
    # the top-level totals cover every input row: labs, patients and medications
    every = [_counts(lines) for lines in (LAB_LINES[:1] + LAB_LINES[1:] + WINDOWS_LINES[1:],
                                           PATIENT_LINES, MEDICATION_LINES)]
    for key in ("rows_read", "rows_accepted", "rows_rejected", "rows_exact_duplicates"):
        assert acc[key] == manifest[key] == sum(c[key] for c in every)
    assert acc["rows_skipped_other_tests"] == sum(c["skipped"] for c in every)
    assert acc["rows_read"] == (acc["rows_accepted"] + acc["rows_rejected"]
                                + acc["rows_skipped_other_tests"] + acc["rows_exact_duplicates"])
    patients = acc["by_input"]["patients"]
    want = _counts(PATIENT_LINES)
    assert (patients["rows_read"], patients["rows_accepted"], patients["rows_rejected"],
            patients["rows_exact_duplicates"]) == (want["rows_read"], want["rows_accepted"],
                                                   want["rows_rejected"],
                                                   want["rows_exact_duplicates"])
    meds = acc["by_input"]["medications"]
    want = _counts(MEDICATION_LINES)
    assert (meds["rows_read"], meds["rows_accepted"], meds["rows_rejected"],
            meds["rows_skipped_other_medications"]) == (want["rows_read"], want["rows_accepted"],
                                                        want["rows_rejected"], want["skipped"])
    assert all(c["balanced"] for c in acc["by_input"].values())


def test_rejected_patients_and_medications_rows_are_a_warning(corpus_run) -> None:
    """A rejected patients row takes its risk factors out of the rules: the run says so
    (the labs' rejections are in its accounting line)."""
    result, _ = corpus_run
    warnings = [ln for ln in result.stderr.splitlines() if " rows rejected (" in ln]
    assert warnings == [
        "warning: patients: 10 of 15 rows rejected (malformed_row 1, missing_patient_id 1, "
        "bad_date 1, future_date 1, bad_yes_no 1, bad_diet 1, bad_number 2, "
        "conflicting_patient_rows 2); those rows' attributes (risk factors, age) are not used "
        "(rejected.csv lists them)",
        "warning: medications: 6 of 10 rows rejected (missing_patient_id 1, missing_medication "
        "1, bad_date 1, end_before_start 1, bad_number 2); those rows' prescriptions are not "
        "used (rejected.csv lists them)"]


def test_rejected_rows_keep_every_original_field(corpus, corpus_run) -> None:
    _, out = corpus_run
    rejected = pd.read_parquet(out / "rejected.parquet")
    labs = rejected[rejected["input"] == "labs"].set_index(["source_file", "source_row"])
    batch = str(corpus["batch"])
    assert labs.loc[(batch, 13), "result"] == "1,234"
    assert labs.loc[(batch, 25), "result"] == LONG
    assert labs.loc[(batch, 27), "raw_line"] == "PA22,2026-10-01,B12"
    assert labs.loc[(batch, 10), "patient_id"] == "NULL"  # as written, not as cleaned
    assert labs.loc[(str(corpus["windows"]), 2), "unit"] == "µmol/L"  # cp1252 decoded


def test_answers_from_messy_rows(corpus_run) -> None:
    _, out = corpus_run
    patients = pd.read_parquet(out / "patients.parquet").set_index("patient_id")
    assert "PA07" in patients.index and "  PA07 " not in patients.index  # one patient
    assert patients.loc["PA07", "index_value"] == 400.0
    # same patient, time and test with two values: the lower wins (SPEC R4)
    assert patients.loc["PA16", ["b12_status", "index_value"]].tolist() == ["deficient", 150.0]
    assert patients.loc["PA25", ["b12_status", "index_censor"]].tolist() == ["deficient", "<"]
    assert patients.loc["PA03", "index_collected_at"] == pd.Timestamp("2026-10-01 09:30")
    results = pd.read_parquet(out / "results.parquet").set_index("patient_id")
    assert results.loc["PB02", ["value", "source_unit"]].tolist() == [0.5, "µmol/L"]
    # rejected and other-test rows still put their patient in the cohort, untested
    assert patients.loc[["PA04", "PA12", "PA24"], "b12_status"].tolist() == ["not_tested"] * 3
    assert len(patients) == patients.index.nunique()


def test_formula_text_is_neutralised_in_csv_outputs(corpus_run) -> None:
    _, out = corpus_run
    rejected = pd.read_csv(out / "rejected.csv", dtype=str, keep_default_na=False)
    assert "'=1+2" in rejected["result"].tolist()
    listed = pd.read_csv(out / "worklists" / "supplementation.csv", dtype=str,
                         keep_default_na=False)
    formula_ids = listed[listed["patient_id"].str.contains("HYPERLINK")]["patient_id"]
    assert formula_ids.tolist() == ["'=HYPERLINK(\"http://example.invalid\")"]


def test_messages_name_files_and_counts_never_ids_or_values(corpus, corpus_run) -> None:
    result, _ = corpus_run
    text = result.stdout + result.stderr
    flat = " ".join(result.stderr.split())  # rich wraps long lines on an 80-column console
    assert (f"warning: labs: 2 malformed line(s) in {corpus['batch']} (wrong number of "
            "fields; expected 6)") in flat
    assert (f"warning: patients: 1 malformed line(s) in {corpus['patients']} (wrong number "
            "of fields; expected 7)") in flat
    for secret in ("PA0", "PA1", "PA2", "PB0", "HYPERLINK", "1,234", "2.5E2", "haemolysed",
                   LONG[:20]):
        assert secret not in text


# -------------------------------------------------------------------------------- validate


REASON_CODES = (*LAB_REASONS, *PATIENT_REASONS, *MEDICATION_REASONS)


def _reason_rows(text: str) -> dict[tuple[str, str], int]:
    """(input, reason) -> rows, summed over files, from validate's rich table.

    Rich shortens cells to fit 80 columns when output is not a terminal ("conflicting_…"),
    so a shortened name is matched to the one reason code it begins.
    """
    out: dict[tuple[str, str], int] = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.split("│") if c.strip()]
        if len(cells) == 5 and cells[3].isdigit() and cells[1][0].isalpha():
            stem = cells[1].rstrip("…")
            (code,) = {c for c in REASON_CODES if c.startswith(stem)}
            out[(cells[0], code)] = out.get((cells[0], code), 0) + int(cells[3])
    return out


def test_validate_folder_accounts_for_rows_as_a_run_does(corpus, corpus_run,
                                                          tmp_path: Path) -> None:
    """One audit script reads both: a validate manifest lays out its accounting as a run's
    (the equation, totals under ``accounting`` and at the top level, ``by_input``)."""
    _, run_out = corpus_run
    out = tmp_path / "validate"
    result = invoke("validate", corpus["labs"], "--patients", corpus["patients"],
                    "--medications", corpus["medications"], "--as-of", AS_OF,
                    "--max-reject-rate", "1", "--out", out, "--quiet")
    assert result.exit_code == 0, result.output
    run = json.loads((run_out / "manifest.json").read_text())
    checked = json.loads((out / "manifest.json").read_text())
    keys = ["rows_read", "rows_accepted", "rows_rejected", "rows_skipped_other_tests",
            "rows_exact_duplicates"]
    assert checked["accounting"]["by_input"] == run["accounting"]["by_input"]
    assert [checked[k] for k in keys] == [checked["accounting"][k] for k in keys] \
        == [run[k] for k in keys]
    assert checked["accounting"]["equation"] == run["accounting"]["equation"]
    assert checked["accounting"]["balanced"] is True
    assert "rows_after_as_of" not in checked["accounting"]  # nothing is classified


def test_validate_shows_reasons_and_writes_rejected_rows(corpus, tmp_path: Path) -> None:
    out = tmp_path / "validate"
    result = invoke("validate", corpus["labs"], "--patients", corpus["patients"],
                    "--medications", corpus["medications"], "--as-of", AS_OF,
                    "--max-reject-rate", "1", "--out", out, "--quiet")
    assert result.exit_code == 0, result.output
    reasons = _reason_rows(result.stdout)
    assert reasons[("labs", "bad_date")] == 5
    assert reasons[("labs", "non_numeric_result")] == 6
    assert reasons[("labs", "missing_result")] == 2
    assert reasons[("labs", "malformed_row")] == 2
    assert reasons[("patients", "conflicting_patient_rows")] == 2
    assert reasons[("medications", "end_before_start")] == 1
    rejected = pd.read_parquet(out / "rejected.parquet")
    assert len(rejected) == sum(
        _counts(lines)["rows_rejected"]
        for lines in (LAB_LINES, WINDOWS_LINES, PATIENT_LINES, MEDICATION_LINES))
    assert (out / "rejected.csv").is_file()
    assert not (out / "patients.parquet").exists()
    # what was read, and by which format and profile, as a run's manifest records it
    manifest = json.loads((out / "manifest.json").read_text())
    assert sorted(manifest["inputs"]) == ["labs", "medications", "patients"]
    assert {f["path"] for f in manifest["inputs"]["labs"]} == {
        str(corpus["batch"]), str(corpus["windows"])}
    assert all(len(f["sha256"]) == 64 for files in manifest["inputs"].values() for f in files)
    assert manifest["format"]["name"] == "canonical" and len(manifest["format"]["sha256"]) == 64
    assert manifest["rules"]["name"] == "nice-ng239" and len(manifest["rules"]["sha256"]) == 64


def test_validate_exits_1_above_the_reject_limit(corpus, tmp_path: Path) -> None:
    # the corpus plus 100 good rows: large enough for the rate to apply (engines/steps.py's
    # MIN_ROWS_FOR_REJECT_RATE), still far above 5% rejected
    folder = tmp_path / "labs"
    for name in ("batch", "windows"):
        _write(folder / corpus[name].name, corpus[name].read_bytes())
    good = [f"G{n:03d},2026-10-01,B12,250,ng/L" for n in range(100)]
    _write(folder / "good.csv", "\n".join([LAB_LINES[0][0].split(",comment")[0], *good]) + "\n")
    out = tmp_path / "validate"
    result = invoke("validate", folder, "--as-of", AS_OF, "--out", out, "--quiet")
    assert result.exit_code == 1
    labs = _counts(LAB_LINES[:1] + LAB_LINES[1:] + WINDOWS_LINES[1:])
    labs["rows_accepted"] += len(good)
    considered = labs["rows_accepted"] + labs["rows_rejected"]
    share = labs["rows_rejected"] / considered
    errors = [ln for ln in result.stderr.splitlines() if not ln.startswith("warning: ")]
    assert errors == [
        f"b12screen: error: labs: {labs['rows_rejected']} of {considered} rows rejected "
        f"({share:.1%}), above --max-reject-rate 5.0%; see the reasons with 'b12screen "
        "validate'"]
    assert _reason_rows(result.stdout)[("labs", "unknown_unit")] == 4
    assert (out / "rejected.parquet").is_file()  # written so the reasons can be followed up


# ------------------------------------------------------------------- rules profiles and formats

#: case -> (a profile extending the default: its TOML after ``[profile]``, the error's text)
PROFILE_ERRORS = {
    "negative_mma_limit": ("[rules.R5]\nmma_upper_umol_l = -0.35\n",
                           "rules.R5.mma_upper_umol_l must be above 0"),
    "negative_lookback": ("[rules.R4]\nlookback_days = -365\n",
                          "rules.R4.lookback_days must be above 0"),
    "negative_untreated_days": ("[rules.R12]\nuntreated_days = -90\n",
                                "rules.R12.untreated_days must not be negative"),
    "negative_cut_off": ("[rules.R1]\ndeficient_below = -200.0\n",
                         "rules.R1.deficient_below must not be negative"),
    "negative_small_count": ("[disclosure]\nsmall_count = -7\n",
                             "disclosure.small_count must not be negative"),
    "rounding_zero": ("[disclosure]\nrounding = 0\n", "disclosure.rounding must be above 0"),
    "plausible_range_reversed": (
        "[harmonise]\nb12_total_plausible_min = 5000.0\nb12_total_plausible_max = 100.0\n",
        "harmonise.b12_total_plausible_min must be below harmonise.b12_total_plausible_max"),
    "earliest_date_day_first": ('[harmonise]\nearliest_date = "01/01/1900"\n',
                                "harmonise.earliest_date must be a date YYYY-MM-DD"),
    "regimen_list_typo": (
        '[rules.R9]\ninjection_only = ["paediatric", "prevention_ileal_resecton"]\n',
        "rules.R9.injection_only names 'prevention_ileal_resecton', which is not one of R9's "
        "regimens (bariatric_surgery, deficiency, ileal_resection, neurological, paediatric, "
        "prevention_bariatric_surgery, prevention_diet, prevention_ileal_resection)"),
    "regimen_list_not_a_list": ('[rules.R9]\ninjection_only = "paediatric"\n',
                                "key 'rules.R9.injection_only' in {path} must be a list of text"),
    "earliest_date_basic_form": ('[harmonise]\nearliest_date = "19000101"\n',
                                 "harmonise.earliest_date must be a date YYYY-MM-DD"),
    "site_twice_by_case": ('[sites]\nRTH01 = "bsh-2014"\nrth01 = "nice-ng239"\n',
                           "key 'sites.rth01' in {path} maps a code already mapped to bsh-2014 "
                           "(codes match trimmed and in any case)"),
    "check_window_before_the_start": ("[rules.R11]\nretest_early_days = 120\n",
                                      "rules.R11.retest_early_days must be below "
                                      "rules.R11.retest_after_days"),
    "extends_unknown": ('extends = "nice-ng293"\n',
                        "profile.extends in {path}: unknown rules profile 'nice-ng293' "
                        "(shipped: bsh-2014, nice-ng239)"),
}


@pytest.mark.parametrize("case", sorted(PROFILE_ERRORS))
def test_rules_profile_values_no_lab_means_stop_at_load(tmp_path: Path, case: str) -> None:
    """Each would otherwise classify everyone wrongly without a word, or stop mid-run with
    a traceback: one line naming the key and the file, exit 2."""
    body, message = PROFILE_ERRORS[case]
    extends = "" if "extends" in body else 'extends = "nice-ng239"\n'
    profile = _write(tmp_path / "mine.toml", f"[profile]\n{extends}{body}")
    result = invoke("rules", "--rules", profile)
    assert result.exit_code == 2, result.output
    text = message.format(path=profile)
    expected = text if "{path}" in message or "extends" in case else f"{text} in {profile}"
    assert [ln for ln in result.stderr.splitlines() if ln.strip()] == [
        f"b12screen: error: {expected}"]


def test_a_profile_is_named_by_its_file_and_finds_its_neighbours(tmp_path: Path) -> None:
    """Without ``name`` a profile is its file's name (not its parent's, which the report and
    the Parquet metadata would show beside other cut-offs); ``extends`` and ``[sites]``
    paths are read from the profile's own folder, wherever the command runs."""
    rules = tmp_path / "rules"
    _write(rules / "local.toml", '[profile]\nextends = "nice-ng239"\n'
                                 "[rules.R1]\ndeficient_below = 200.0\n")
    _write(rules / "region.toml", '[profile]\nextends = "local.toml"\n'
                                  '[sites]\nLABX = "local.toml"\n')
    labs = _write(tmp_path / "labs.csv", HEADER + "0001,2026-10-01,B12,190,ng/L\n")
    out = tmp_path / "out"
    result = invoke("run", labs, "--rules", rules / "region.toml", "--out", out, "--quiet")
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["rules"]["name"] == "region"
    assert manifest["rules"]["sites"] == {"LABX": "local"}
    assert pd.read_parquet(out / "patients.parquet")["b12_status"].tolist() == ["deficient"]


#: case -> (TOML after the minimal format, the error's text)
FORMAT_ERRORS = {
    "code_twice_by_case": ('"Serum B12" = "b12_total"\n"SERUM B12" = "mma"\n',
                           "key 'labs.codes.SERUM B12' in {path} maps a code already mapped "
                           "to b12_total (codes match trimmed and in any case)"),
    "bad_date_directive": ('[read]\ndatetime_formats = ["%d-%Q-%Y"]\n',
                           "key 'read.datetime_formats' in {path} must hold strptime formats "
                           'such as "%d/%m/%Y %H:%M"'),
}


@pytest.mark.parametrize("case", sorted(FORMAT_ERRORS))
def test_format_mistakes_stop_at_load(tmp_path: Path, case: str) -> None:
    """A code mapped twice would silently keep the later mapping; an unknown date
    directive would stop the run mid-way with a traceback."""
    codes, message = FORMAT_ERRORS[case]
    fmt = _write(tmp_path / "mine.toml", MINIMAL_FORMAT + codes)
    labs = _write(tmp_path / "labs.csv", HEADER + GOOD)
    result = invoke("validate", labs, "--format", fmt, "--out", tmp_path / "out")
    assert result.exit_code == 2, result.output
    assert [ln for ln in result.stderr.splitlines() if ln.strip()] == [
        f"b12screen: error: {message.format(path=fmt)}"]


def test_a_code_twice_to_the_same_analyte_is_harmless(tmp_path: Path) -> None:
    fmt = _write(tmp_path / "mine.toml", MINIMAL_FORMAT + '"b12 " = "b12_total"\n')
    labs = _write(tmp_path / "labs.csv", HEADER + GOOD)
    result = invoke("validate", labs, "--format", fmt, "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output


def test_disclosure_switched_off_is_a_warning(tmp_path: Path) -> None:
    """small_count = 0 is legitimate for a team's own use, but its shareable files are not."""
    profile = _write(tmp_path / "internal.toml", '[profile]\nextends = "nice-ng239"\n'
                                                 "[disclosure]\nsmall_count = 0\n")
    labs = _write(tmp_path / "labs.csv", HEADER + GOOD)
    result = invoke("run", labs, "--rules", profile, "--out", tmp_path / "out", "--quiet")
    assert result.exit_code == 0, result.output
    assert ("warning: rules profile 'internal' sets disclosure small_count = 0: no count is "
            "withheld, so measures.*, report.html, trend.* and summary.json are not safe to "
            "share outside the team") in " ".join(result.stderr.split())
