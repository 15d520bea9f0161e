"""Output files as analysts, lab managers and auditors read them back."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.rules.classify import PATIENT_COLUMNS
from tests.conftest import invoke

SPEC_PATIENT_COLUMNS = [
    "patient_id", "practice_id", "age_years", "index_test", "index_value", "index_unit",
    "index_collected_at", "index_censor", "b12_total_ng_l", "b12_total_at",
    "b12_active_pmol_l", "b12_active_at", "mma_umol_l", "mma_at", "b12_status",
    "status_basis", "discordant", "censored_ambiguous", "needs_mma", "needs_supplementation",
    "supplementation_reason", "suggested_regimen", "metformin_monitoring_due",
    "metformin_risk", "retest_due", "urgent_review", "paediatric", "on_metformin",
    "on_b12_treatment", "reasons",
]
SPEC_RESULT_COLUMNS = ["patient_id", "collected_at", "analyte", "value", "unit", "censor",
                       "band", "result_text", "source_unit", "source_file", "source_row"]


def test_patients_parquet_has_spec_columns_in_order(sample_run: Path) -> None:
    columns = pq.read_schema(sample_run / "patients.parquet").names
    assert columns[:len(SPEC_PATIENT_COLUMNS)] == SPEC_PATIENT_COLUMNS
    # SPEC rev 2 appends, in this order, after the columns added since the SPEC's list
    assert columns[-4:] == ["regimen_intent", "not_responding", "on_b12_combination", "as_of"]
    assert columns == [*PATIENT_COLUMNS, "as_of"]


def test_as_of_column_lets_months_be_stacked(sample_run: Path) -> None:
    """Every row of patients.parquet and results.parquet carries the run's as-of date, as
    a date, equal to the metadata's."""
    for name in ("patients.parquet", "results.parquet"):
        table = pq.read_table(sample_run / name)
        assert table.schema.field("as_of").type == pa.date32()
        as_of = table.schema.metadata[b"b12screen.as_of"].decode()
        assert {d.isoformat() for d in table["as_of"].to_pylist()} == {as_of}


def test_results_parquet_has_spec_columns(sample_run: Path) -> None:
    columns = pq.read_schema(sample_run / "results.parquet").names
    assert set(SPEC_RESULT_COLUMNS) <= set(columns)


def test_duckdb_reads_typed_columns(sample_run: Path) -> None:
    con = duckdb.connect()
    rows = con.execute(
        "SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM read_parquet(?))",
        [str(sample_run / "patients.parquet")]).fetchall()
    types = dict(rows)
    assert types["patient_id"] == "VARCHAR"
    assert types["age_years"] == "SMALLINT"
    assert types["index_collected_at"].startswith("TIMESTAMP")
    assert types["b12_treatment_start"] == "DATE"
    for flag in ("discordant", "needs_mma", "urgent_review", "on_metformin"):
        assert types[flag] == "BOOLEAN"
    assert types["metformin_risk"] == "TINYINT"
    statuses = {r[0] for r in con.execute(
        "SELECT DISTINCT b12_status FROM read_parquet(?)",
        [str(sample_run / "patients.parquet")]).fetchall()}
    assert statuses <= {"deficient", "indeterminate", "unlikely", "not_tested"}
    assert "deficient" in statuses and "not_tested" in statuses
    result_types = dict(con.execute(
        "SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM read_parquet(?))",
        [str(sample_run / "results.parquet")]).fetchall())
    assert result_types["value"] == "DOUBLE"
    assert result_types["source_row"] == "BIGINT"


def test_parquet_metadata_names_version_profile_and_as_of(sample_run: Path) -> None:
    meta = pq.read_schema(sample_run / "patients.parquet").metadata
    manifest = json.loads((sample_run / "manifest.json").read_text())
    assert meta[b"b12screen.rules_profile"] == b"nice-ng239"
    assert meta[b"b12screen.as_of"].decode() == manifest["as_of"]
    assert meta[b"b12screen.rules_sha256"].decode() == manifest["rules"]["sha256"]
    assert b"b12screen.version" in meta


def test_manifest_accounts_for_every_row(sample_run: Path, sample_extract) -> None:
    manifest = json.loads((sample_run / "manifest.json").read_text())
    acc = manifest["accounting"]
    assert acc["rows_read"] == (acc["rows_accepted"] + acc["rows_rejected"]
                                + acc["rows_skipped_other_tests"]
                                + acc["rows_exact_duplicates"])
    lines = {kind: len(path.read_text(encoding="utf-8").splitlines()) - 1
             for kind, path in sample_extract.items()}
    assert acc["rows_read"] == sum(lines.values())  # every row of every input
    assert acc["rows_rejected"] > 0 and acc["rows_exact_duplicates"] > 0
    for kind, counts in acc["by_input"].items():
        assert counts["balanced"] is True
        assert counts["rows_read"] == lines[kind]
    results = pd.read_parquet(sample_run / "results.parquet")
    rejected = pd.read_parquet(sample_run / "rejected.parquet")
    assert len(results) == acc["by_input"]["labs"]["rows_accepted"]
    assert len(rejected) == acc["rows_rejected"] == manifest["rows_rejected"]
    assert (rejected["input"] == "labs").sum() == acc["by_input"]["labs"]["rows_rejected"]
    assert set(manifest["timings_seconds"]) >= {"read", "validate", "classify", "write"}
    assert manifest["inputs"]["labs"][0]["sha256"]


def test_cohort_includes_patients_from_every_input(sample_run: Path, sample_extract) -> None:
    patients = pd.read_parquet(sample_run / "patients.parquet")
    ids = set(patients["patient_id"])
    meds = pd.read_csv(sample_extract["medications"], dtype=str, keep_default_na=False)
    listed = set(meds["patient_id"].str.strip()) - {""}
    assert listed <= ids
    assert patients["patient_id"].is_unique
    assert patients["patient_id"].is_monotonic_increasing
    untested_metformin = patients[patients["on_metformin"] & (patients["b12_status"]
                                                              == "not_tested")]
    assert len(untested_metformin) > 0
    assert untested_metformin["metformin_monitoring_due"].all()


def test_patient_level_files_are_owner_only(sample_run: Path) -> None:
    assert stat.S_IMODE(sample_run.stat().st_mode) == 0o700
    for name in ("patients.parquet", "results.parquet", "rejected.csv", "worklists.xlsx",
                 "worklists/mma.csv", "manifest.json"):
        assert stat.S_IMODE((sample_run / name).stat().st_mode) == 0o600, name


def test_shareable_files_hold_no_patient_id(sample_run: Path) -> None:
    ids = pd.read_parquet(sample_run / "patients.parquet")["patient_id"]
    for name in ("summary.json", "measures.csv", "report.html"):
        text = (sample_run / name).read_text(encoding="utf-8")
        leaked = [i for i in ids if len(i) >= 5 and i in text]
        assert not leaked, name


def test_rerun_gives_byte_identical_tables(sample_extract, tmp_path: Path) -> None:
    outs = []
    for name in ("a", "b"):
        out = tmp_path / name
        result = invoke("run", sample_extract["labs"], "--patients", sample_extract["patients"],
                        "--medications", sample_extract["medications"], "--out", out, "--quiet")
        assert result.exit_code == 0, result.output
        outs.append(out)
    for table in ("patients.parquet", "results.parquet"):
        assert (outs[0] / table).read_bytes() == (outs[1] / table).read_bytes(), table


def test_results_after_as_of_are_kept_but_not_classified(tmp_path: Path) -> None:
    labs = tmp_path / "labs.csv"
    labs.write_text("patient_id,collected_at,test_code,result,unit\n"
                    "0001,2026-09-01,B12,400,ng/L\n"
                    "0001,2026-10-20,B12,100,ng/L\n", encoding="utf-8")
    out = tmp_path / "out"
    result = invoke("run", labs, "--as-of", "2026-09-30", "--out", out, "--quiet")
    assert result.exit_code == 0, result.output
    patients = pd.read_parquet(out / "patients.parquet")
    assert patients.loc[0, "b12_status"] == "unlikely"
    results = pd.read_parquet(out / "results.parquet")
    assert results["after_as_of"].tolist() == [False, True]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["accounting"]["rows_after_as_of"] == 1
    assert manifest["as_of"] == "2026-09-30"


def test_default_as_of_is_the_latest_credible_date_in_the_extract(tmp_path: Path) -> None:
    labs = tmp_path / "labs.csv"
    labs.write_text("patient_id,collected_at,test_code,result,unit\n"
                    "0001,2026-10-01,B12,150,ng/L\n"
                    "0002,2026-10-20,FERRITIN,20,ug/L\n"    # another test: still the extract
                    "0003,2030-01-01,B12,150,ng/L\n",       # future: rejected, not the as-of
                    encoding="utf-8")
    out = tmp_path / "out"
    result = invoke("run", labs, "--out", out, "--quiet")
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["as_of"] == "2026-10-20"
    assert manifest["as_of_source"] == "latest collected_at"


def test_tables_of_many_row_groups_hold_the_same_rows(sample_extract, tmp_path: Path,
                                                      monkeypatch) -> None:
    """patients.parquet and results.parquet are converted and written a row group at a time
    (so that a large cohort is never held as Arrow whole): with groups of 7 rows the files
    hold exactly the rows, schema and metadata of a run that writes each as one group."""
    from pipeline.outputs import tables

    args = [sample_extract["labs"], "--patients", sample_extract["patients"],
            "--medications", sample_extract["medications"], "--quiet"]
    assert invoke("run", *args, "--out", tmp_path / "whole").exit_code == 0
    monkeypatch.setattr(tables, "ROW_GROUP", 7)
    result = invoke("run", *args, "--out", tmp_path / "groups")
    assert result.exit_code == 0, result.output
    for name in ("patients.parquet", "results.parquet"):
        whole, groups = (pq.ParquetFile(tmp_path / run / name) for run in ("whole", "groups"))
        assert whole.metadata.num_row_groups == 1
        assert groups.metadata.num_row_groups == -(-whole.metadata.num_rows // 7) > 10
        assert groups.read().equals(whole.read())
        assert groups.schema_arrow.metadata == whole.schema_arrow.metadata
