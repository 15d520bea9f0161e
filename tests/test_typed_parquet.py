"""Typed Parquet gives the answers of the same extract as text (SPEC rev 2, "Typed Parquet").

Analysts export extracts from databases and Spark with real types: results as double or
decimal, ids as integers, dates as date32, timestamps with or without a time zone, text as
dictionaries. Each is read as the canonical text of the same value, so ``patients.parquet``
is byte-identical to a run on the CSV of the same cells.
"""

from __future__ import annotations

import decimal
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import invoke

AS_OF = "2026-10-31"
#: One row per result: bands on both sides of every cut-off, three units, other tests
#: (sodium ``NA`` and potassium ``K`` among them), and several results per patient.
ROWS = [
    # patient, date, time, code, result, unit, practice
    ("1001", "2026-10-01", "09:30:00", "B12", "150", "ng/L", "P1"),
    ("1001", "2026-10-01", "09:30:00", "NA", "139", "mmol/L", "P1"),
    ("1002", "2026-09-12", "11:05:00", "B12", "262", "ng/L", "P1"),
    ("1002", "2026-09-20", "08:00:00", "MMA", "0.62", "umol/L", "P1"),
    ("1003", "2026-08-03", "14:45:00", "B12", "400.5", "pg/mL", "P2"),
    ("1004", "2026-10-20", "10:10:00", "B12", "120", "pmol/L", "P2"),
    ("1004", "2026-10-20", "10:10:00", "K", "4.1", "mmol/L", "P2"),
    ("1005", "2026-07-15", "16:20:00", "HOLOTC", "22", "pmol/L", "P3"),
    ("1006", "2026-10-30", "07:55:00", "HOLOTC", "55", "pmol/L", "P3"),
    ("1006", "2026-10-30", "07:55:00", "CA", "2.31", "mmol/L", "P3"),
    ("1007", "2026-05-02", "12:00:00", "B12", "181", "ng/L", "P1"),
    ("1007", "2026-10-02", "12:00:00", "B12", "352.25", "ng/L", "P1"),
    ("1008", "2026-10-31", "23:30:00", "MMA", "310", "nmol/L", "P2"),
    ("1008", "2026-10-01", "06:00:00", "B12", "349.75", "ng/L", "P2"),
]
COLUMNS = ["patient_id", "date", "time", "test_code", "result", "unit", "practice_id"]


def _frame() -> pd.DataFrame:
    return pd.DataFrame(ROWS, columns=COLUMNS)


def _text_extract(stamp: str) -> pd.DataFrame:
    """The canonical text form: ``stamp`` is 'date', 'datetime' or 'offset' (ISO 8601 with
    the wall clock's UTC offset in London)."""
    frame = _frame()
    when = frame["date"] + "T" + frame["time"]
    if stamp == "date":
        collected = frame["date"]
    elif stamp == "datetime":
        collected = when
    else:
        local = pd.to_datetime(when).dt.tz_localize("Europe/London")
        collected = local.map(lambda t: t.isoformat())  # a dozen rows of test data
    return pd.DataFrame({"patient_id": frame["patient_id"], "collected_at": collected,
                         "test_code": frame["test_code"], "result": frame["result"],
                         "unit": frame["unit"], "practice_id": frame["practice_id"]})


def _typed(kind: str) -> tuple[pa.Table, str]:
    """The Parquet table of one typed variant, and the text form it must match."""
    frame = _frame()
    text = _text_extract("date")
    columns = {c: pa.array(text[c].tolist(), pa.string()) for c in text.columns}
    stamp = "date"
    if kind == "result_double":
        columns["result"] = pa.array(frame["result"].astype(float), pa.float64())
    elif kind == "result_decimal":
        columns["result"] = pa.array([decimal.Decimal(v) for v in frame["result"]],
                                     pa.decimal128(9, 2))
    elif kind == "ids_int64":
        columns["patient_id"] = pa.array(frame["patient_id"].astype(int), pa.int64())
    elif kind == "dates_date32":
        columns["collected_at"] = pa.array(pd.to_datetime(frame["date"]).dt.date, pa.date32())
    elif kind == "timestamps":
        stamp = "datetime"
        columns["collected_at"] = pa.array(pd.to_datetime(frame["date"] + " " + frame["time"]),
                                           pa.timestamp("us"))
    elif kind == "timestamps_tz":
        stamp = "offset"
        local = pd.to_datetime(frame["date"] + " " + frame["time"]).dt.tz_localize(
            "Europe/London")
        columns["collected_at"] = pa.array(local, pa.timestamp("ms", tz="Europe/London"))
    elif kind == "dictionaries":
        for c in ("test_code", "unit", "practice_id", "result", "collected_at"):
            columns[c] = columns[c].dictionary_encode()
    elif kind == "dictionaries_unused":  # dictionaries as a database keeps them: entries
        # no row uses (before and among the used ones), and a missing practice
        for c in ("test_code", "unit", "practice_id", "result", "collected_at"):
            values = text[c].tolist()
            if c == "practice_id":
                values[3] = None
            dictionary = ["unused-0"] + sorted({v for v in values if v is not None},
                                               reverse=True) + ["unused-1"]
            indices = pa.array([None if v is None else dictionary.index(v) for v in values],
                               pa.int16())
            columns[c] = pa.DictionaryArray.from_arrays(indices, pa.array(dictionary))
    elif kind == "null_practice":  # pandas writes an all-None column with Arrow type null
        columns["practice_id"] = pa.nulls(len(frame))
    else:
        raise AssertionError(kind)
    return pa.table(columns), stamp


def _run(labs: Path, out: Path) -> Path:
    result = invoke("run", labs, "--as-of", AS_OF, "--out", out, "--quiet")
    assert result.exit_code == 0, result.output
    return out


KINDS = ["result_double", "result_decimal", "ids_int64", "dates_date32", "timestamps",
         "timestamps_tz", "dictionaries", "dictionaries_unused",
         "null_practice"]


@pytest.mark.parametrize("kind", KINDS)
def test_typed_parquet_gives_the_patients_table_of_its_text(tmp_path: Path, kind: str) -> None:
    table, stamp = _typed(kind)
    pq.write_table(table, tmp_path / "labs.parquet")
    text_form = _text_extract(stamp)
    if kind == "dictionaries_unused":
        text_form.loc[3, "practice_id"] = ""
    if kind == "null_practice":
        text_form["practice_id"] = ""
    text_form.to_csv(tmp_path / "labs.csv", index=False)
    typed = _run(tmp_path / "labs.parquet", tmp_path / "typed")
    text = _run(tmp_path / "labs.csv", tmp_path / "text")
    assert (typed / "patients.parquet").read_bytes() == (text / "patients.parquet").read_bytes()
    statuses = pd.read_parquet(typed / "patients.parquet").set_index("patient_id")["b12_status"]
    assert statuses.loc["1001"] == "deficient" and statuses.loc["1002"] == "deficient"
    assert statuses.loc["1003"] == "unlikely" and statuses.loc["1006"] == "indeterminate"
    results = pd.read_parquet(typed / "results.parquet")
    assert len(results) == 11  # sodium, potassium and calcium rows are other tests
    values = pd.read_parquet(text / "results.parquet")["value"]
    assert results["value"].tolist() == values.tolist()


def test_a_folder_of_parts_with_all_missing_columns_stacks(tmp_path: Path) -> None:
    """One part's practice is a dictionary and another's all missing (Arrow type null): the
    parts stack; a part without units has its B12 rows rejected as ``unknown_unit``."""
    base = {"patient_id": ["1", "2"], "collected_at": ["2026-10-01"] * 2,
            "test_code": ["B12"] * 2, "result": ["150", "300"]}
    (tmp_path / "parts").mkdir()
    pq.write_table(pa.table({**base, "unit": ["ng/L"] * 2,
                             "practice_id": pa.array(["P1", "P2"]).dictionary_encode(),
                             "site_id": pa.nulls(2)}), tmp_path / "parts" / "a.parquet")
    pq.write_table(pa.table({**base, "patient_id": ["3", "4"], "unit": pa.nulls(2),
                             "practice_id": pa.nulls(2),
                             "site_id": pa.array(["S1", "S1"]).dictionary_encode()}),
                   tmp_path / "parts" / "b.parquet")
    result = invoke("run", tmp_path / "parts", "--as-of", AS_OF, "--out", tmp_path / "out",
                    "--quiet", "--max-reject-rate", "1")
    assert result.exit_code == 0, result.output
    patients = pd.read_parquet(tmp_path / "out" / "patients.parquet").set_index("patient_id")
    assert patients.loc["1", "practice_id"] == "P1" and pd.isna(patients.loc["3", "practice_id"])
    rejected = pd.read_parquet(tmp_path / "out" / "rejected.parquet")
    assert rejected["reasons"].tolist() == ["unknown_unit", "unknown_unit"]
    assert set(rejected["source_file"].map(lambda f: Path(f).name)) == {"b.parquet"}
