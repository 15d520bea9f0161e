"""Property: whatever mix of rows arrives, every row is accounted for exactly once.

rows_read = rows_accepted + rows_rejected + rows_skipped_other_tests + rows_exact_duplicates
"""

from __future__ import annotations

import csv
import io
import json
import tempfile
from pathlib import Path

import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import invoke

GOOD = [("B12", "262", "ng/L"), ("HOLOTC", "<25", "pmol/L"), ("MMA", "0.31", "umol/L"),
        ("14685-2", "150", "pmol/L"), ("b12", "> 2000", "pg/mL"), ("MMA", "450", "nmol/L")]
BAD = [("", "B12", "262", "ng/L", "2026-10-01"),          # missing patient id
       ("p", "B12", "haemolysed", "ng/L", "2026-10-01"),  # non-numeric
       ("p", "B12", "262", "mg", "2026-10-01"),           # unknown unit
       ("p", "B12", "0.25", "ng/L", "2026-10-01"),        # implausible
       ("p", "B12", "-4", "ng/L", "2026-10-01"),          # negative
       ("p", "B12", "262", "ng/L", "2026-02-30"),         # impossible date
       ("p", "B12", "262", "ng/L", "2030-01-01"),         # future
       ("p", "", "262", "ng/L", "2026-10-01")]            # missing test code
OTHER = [("FERRITIN", "40", "ug/L"), ("HB", "131", "g/L"), ("TSH", "bad", "")]

row_kind = st.one_of(
    st.tuples(st.just("good"), st.sampled_from(GOOD)),
    st.tuples(st.just("bad"), st.sampled_from(BAD)),
    st.tuples(st.just("other"), st.sampled_from(OTHER)),
    st.tuples(st.just("dup"), st.integers(min_value=0, max_value=10_000)),
)


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(row_kind, min_size=1, max_size=40))
def test_every_row_is_accounted_for(kinds: list) -> None:
    rows: list[list[str]] = []
    expected = {"accepted": 0, "rejected": 0, "skipped": 0, "duplicates": 0}
    for n, (kind, spec) in enumerate(kinds):
        pid = f"{n:05d}"
        if kind == "good":
            code, result, unit = spec
            rows.append([pid, "2026-10-01", code, result, unit, f"S{n}"])
            expected["accepted"] += 1
        elif kind == "bad":
            p, code, result, unit, day = spec
            rows.append([pid if p else "", day, code, result, unit, f"S{n}"])
            expected["rejected"] += 1
        elif kind == "other":
            code, result, unit = spec
            rows.append([pid, "2026-10-01", code, result, unit, f"S{n}"])
            expected["skipped"] += 1
        elif rows:
            original = rows[spec % len(rows)]
            rows.append(list(original))
            expected["duplicates" if original[2] not in ("FERRITIN", "HB", "TSH")
                     else "skipped"] += 1
        else:
            rows.append([pid, "2026-10-01", "FERRITIN", "1", "ug/L", "S"])
            expected["skipped"] += 1
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["patient_id", "collected_at", "test_code", "result", "unit",
                     "specimen_id"])
    writer.writerows(rows)
    with tempfile.TemporaryDirectory() as tmp:
        labs = Path(tmp) / "labs.csv"
        labs.write_text(buffer.getvalue(), encoding="utf-8")
        out = Path(tmp) / "out"
        result = invoke("validate", labs, "--as-of", "2026-10-31", "--out", out,
                        "--max-reject-rate", "1", "--quiet")
        assert result.exit_code == 0, result.output
        rejected = pd.read_parquet(out / "rejected.parquet")
    assert len(rejected) == expected["rejected"]
    assert rejected["source_row"].between(2, len(rows) + 1).all()
    summary = _accounting_from_table(result.stdout)
    assert summary == [len(rows), expected["accepted"], expected["rejected"],
                       expected["skipped"], expected["duplicates"]]


def _accounting_from_table(text: str) -> list[int]:
    """Read the labs row of the rich accounting table printed by ``validate``."""
    for line in text.splitlines():
        cells = [c.strip() for c in line.replace("┃", "│").split("│") if c.strip()]
        if cells and cells[0] == "labs":
            return [int(c) for c in cells[1:6]]
    raise AssertionError(text)


def test_manifest_equation_on_a_messy_run(sample_run: Path) -> None:
    acc = json.loads((sample_run / "manifest.json").read_text())["accounting"]
    assert acc["balanced"] is True



def test_rows_per_reason_count_a_row_under_each_of_its_reasons(tmp_path: Path) -> None:
    """summary.json's rejected rows per reason and the medications warning count the same
    way as rejected.csv lists them: a row with two reasons counts once under each."""
    labs = tmp_path / "labs.csv"
    labs.write_text("patient_id,collected_at,test_code,result,unit\n"
                    + "".join(f"{1000 + i},not a date,B12,abc,ng/L\n" for i in range(14))
                    + "".join(f"{2000 + i},2026-10-02,B12,abc,ng/L\n" for i in range(6))
                    + "".join(f"{3000 + i},2026-10-03,B12,300,ng/L\n" for i in range(40)),
                    encoding="utf-8")
    meds = tmp_path / "medications.csv"
    meds.write_text("patient_id,medication,start_date,end_date\n"
                    "3001,metformin,2026-01-01,\n"
                    "3002,,someday,\n"                      # missing_medication and bad_date
                    "3003,metformin,2026-02-01,2026-01-01\n",  # end_before_start
                    encoding="utf-8")
    out = tmp_path / "out"
    result = invoke("run", labs, "--medications", meds, "--out", out, "--quiet",
                    "--max-reject-rate", "0.9")
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    # 14 lab rows and one prescription with a bad date; 14 + 6 lab rows non-numeric; the
    # other two codes under small_count, so suppressed in a shareable file
    assert summary["rejected_by_reason"] == {"bad_date": 15, "non_numeric_result": 20,
                                             "end_before_start": None,
                                             "missing_medication": None}
    assert ("warning: medications: 2 of 3 rows rejected (missing_medication 1, bad_date 1, "
            "end_before_start 1); those rows' prescriptions are not used (rejected.csv lists "
            "them)") in result.stderr.splitlines()
