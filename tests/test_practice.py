"""Which practice a patient is listed under (``practice_id`` in patients.parquet and on
every worklist): the patients input's; else the practice named by the latest B12/MMA
result; else the practice named by the latest row of another test (latest collection
time, then the later row), so that a metformin user seen only in HbA1c rows is grouped
under the practice that requests their tests. Both engines choose alike."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from tests.conftest import invoke

LABS = """patient_id,collected_at,test_code,result,unit,practice_id
P01,2026-10-01,HBA1C,48,mmol/mol,OTHER
P02,2026-09-01,B12,150,ng/L,B12ROW
P02,2026-10-05,HBA1C,50,mmol/mol,LATER
P03,2026-09-01,HBA1C,48,mmol/mol,EARLY
P03,2026-10-01,HBA1C,50,mmol/mol,SAMEDAY1
P03,2026-10-01,NA,140,mmol/L,SAMEDAY2
P04,2026-09-01,HBA1C,48,mmol/mol,NAMED
P04,2026-10-01,HBA1C,50,mmol/mol,
P05,2026-09-01,K,4.1,mmol/L,DATED
P05,not a date,K,4.2,mmol/L,UNDATED
P05,2031-01-01,K,4.3,mmol/L,FUTURE
P06,2026-10-01,HBA1C,50,mmol/mol,
P07,2026-10-01,B12,400,ng/L,
P07,2026-10-02,HBA1C,50,mmol/mol,AFTERB12
P08,2026-10-07,B12,400,ng/L,ANCHOR
"""
PATIENTS = """patient_id,age_years,practice_id
P01,70,FROMFILE
"""
MEDICATIONS = """patient_id,medication,start_date
P03,Metformin 500mg tablets,2025-01-01
P06,Metformin 500mg tablets,2025-01-01
"""
#: patient -> (practice_id, why)
EXPECTED = {
    "P01": ("FROMFILE", "the patients input's practice comes first"),
    "P02": ("B12ROW", "a B12 result naming a practice comes before a later other test"),
    "P03": ("SAMEDAY2", "other tests only: the latest; the same time: the later row"),
    "P04": ("NAMED", "a latest row naming no practice does not blank an earlier one"),
    "P05": ("DATED", "rows with a bad or a future date name no practice"),
    "P06": (None, "no row names a practice"),
    "P07": ("AFTERB12", "a B12 result naming none: the other tests' practice"),
    "P08": ("ANCHOR", "a B12 result's practice"),
}


def _inputs(folder: Path) -> list[str | Path]:
    for name, text in (("labs.csv", LABS), ("patients.csv", PATIENTS),
                       ("medications.csv", MEDICATIONS)):
        (folder / name).write_text(text, encoding="utf-8")
    return [folder / "labs.csv", "--patients", folder / "patients.csv",
            "--medications", folder / "medications.csv", "--quiet"]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("practice")
    result = invoke("run", *_inputs(folder), "--out", folder / "out")
    assert result.exit_code == 0, result.output
    return folder / "out"


@pytest.mark.parametrize("patient", list(EXPECTED), ids=[f"{p}-{w[1][:40]}" for p, w in
                                                          EXPECTED.items()])
def test_practice_of_each_patient(run: Path, patient: str) -> None:
    patients = pd.read_parquet(run / "patients.parquet").set_index("patient_id")
    practice = patients.loc[patient, "practice_id"]
    expected = EXPECTED[patient][0]
    assert (None if pd.isna(practice) else practice) == expected, EXPECTED[patient][1]


def test_metformin_list_groups_a_patient_seen_only_in_hba1c_rows_under_their_practice(
        run: Path) -> None:
    listed = pd.read_csv(run / "worklists" / "metformin_monitoring.csv", dtype=str,
                         keep_default_na=False, encoding="utf-8-sig")
    assert dict(zip(listed["patient_id"], listed["practice_id"], strict=True)) == {
        "P03": "SAMEDAY2", "P06": ""}


def test_the_dask_engine_chooses_the_same_practices(run: Path, scheduler: str,
                                                    tmp_path: Path) -> None:
    result = invoke("run", *_inputs(tmp_path), "--out", tmp_path / "dask",
                    "--engine", "dask", "--scheduler", scheduler)
    assert result.exit_code == 0, result.output
    assert pq.read_table(tmp_path / "dask" / "patients.parquet").equals(
        pq.read_table(run / "patients.parquet"))
