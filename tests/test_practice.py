"""Which practice a patient is listed under (``practice_id`` in patients.parquet and on
every worklist): the patients input's; else the practice named by the latest B12/MMA
result up to the as-of date; else the practice named by the latest lab row of any test
that names one (latest collection time, then the later row), so that a metformin user seen
only in HbA1c rows is grouped under the practice that requests their tests. Both engines
choose alike, from CSV or typed Parquet."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
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
P05,2999-01-01,K,4.3,mmol/L,FUTURE
P06,2026-10-01,HBA1C,50,mmol/mol,
P07,2026-10-01,B12,400,ng/L,
P07,2026-10-02,HBA1C,50,mmol/mol,AFTERB12
P08,2026-10-07,B12,400,ng/L,ANCHOR
P09,2026-10-01,B12,0.2,ng/L,REJECTEDROW
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
    "P09": ("REJECTEDROW", "a result rejected for its value still says where one is seen"),
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


def test_an_earlier_as_of_date_keeps_every_rows_practice(run: Path, tmp_path: Path) -> None:
    """With the as-of date before P08's only B12 result, the result is not classified, but
    its practice still places the patient; the other patients keep theirs too."""
    result = invoke("run", *_inputs(tmp_path), "--as-of", "2026-09-15",
                    "--out", tmp_path / "early")
    assert result.exit_code == 0, result.output
    early = pd.read_parquet(tmp_path / "early" / "patients.parquet").set_index("patient_id")
    assert early.loc["P08", "b12_status"] == "not_tested"
    assert early.loc["P08", "practice_id"] == "ANCHOR"
    assert early.loc["P02", "practice_id"] == "B12ROW"


def test_a_typed_parquet_extract_places_patients_alike(run: Path, tmp_path: Path) -> None:
    """The same labs as Parquet, the practice column dictionary-encoded with nulls for the
    empty cells (as pandas writes a categorical): the same practices."""
    args = _inputs(tmp_path)
    labs = pd.read_csv(tmp_path / "labs.csv", dtype=str, keep_default_na=False)
    practice = pd.Categorical(labs["practice_id"].replace("", None))
    table = pa.Table.from_pandas(labs.drop(columns="practice_id"), preserve_index=False)
    table = table.append_column("practice_id", pa.array(practice))
    pq.write_table(table, tmp_path / "labs.parquet")
    result = invoke("run", tmp_path / "labs.parquet", *args[1:], "--out", tmp_path / "typed")
    assert result.exit_code == 0, result.output
    typed = pd.read_parquet(tmp_path / "typed" / "patients.parquet")
    whole = pd.read_parquet(run / "patients.parquet")
    pd.testing.assert_series_equal(typed["practice_id"], whole["practice_id"])


def test_validation_alone_works_out_no_practice(tmp_path: Path) -> None:
    """``b12screen validate`` classifies nobody, so validation skips the practice of last
    resort (a pass over every row); a run's validation works it out."""
    from pipeline.engines.steps import prepare
    from pipeline.state import RunOptions

    args = _inputs(tmp_path)
    options = RunOptions(labs=str(args[0]), as_of=None)
    assert prepare(options, classifying=False).inputs["labs"].id_practice is None
    assert prepare(options).inputs["labs"].id_practice is not None
