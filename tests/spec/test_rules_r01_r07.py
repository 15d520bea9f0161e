"""Spec tables for R1-R7: bands, censored intervals, the index test, MMA, status.

Every case is one patient (named after the case) in ONE extract, run once through
``b12screen run --as-of 2026-10-31``; each rule's test checks its expected table.
"""

# ruff: noqa: E501 - the case tables are data, aligned so each column reads down the page

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from .helpers import (
    assert_every_case_checked,
    cases,
    check,
    read_patients,
    rows_of,
    run_cli,
)

# ------------------------------------------------------------------------------ R1
R1_LABS = """
    patient_id    | collected_at | test_code | result | unit
    R1_179.9      | 2026-10-03   | B12       | 179.9  | ng/L
    R1_180        | 2026-10-03   | B12       | 180    | ng/L     # both ends inclusive
    R1_350        | 2026-10-03   | B12       | 350    | ng/L
    R1_350.1      | 2026-10-03   | B12       | 350.1  | ng/L
    R1_pg_ml      | 2026-10-03   | VITB12    | 120    | pg/mL    # pg/mL is ng/L
    R1_pmol_132   | 2026-10-03   | B12       | 132    | pmol/L   # x 1.355 = 178.86 ng/L
    R1_pmol_133   | 2026-10-03   | 14685-2   | 133    | PMOL/L   # 180.22 ng/L
    R1_pmol_132.84| 2026-10-03   | B12       | 132.84 | pmol/L   # 179.9982 ng/L
    R1_loinc_mass | 2026-10-03   | 2132-9    | 351    |          # unit fixed by the code
"""
R1_EXPECTED = """
    patient_id    | b12_status    | index_test | index_value | index_unit | b12_total_ng_l | needs_mma
    R1_179.9      | deficient     | b12_total  | 179.9       | ng/L       | 179.9          | F
    R1_180        | indeterminate | b12_total  | 180         | ng/L       | 180            | T
    R1_350        | indeterminate | b12_total  | 350         | ng/L       | 350            | T
    R1_350.1      | unlikely      | b12_total  | 350.1       | ng/L       | 350.1          | F
    R1_pg_ml      | deficient     | b12_total  | 120         | ng/L       | 120            | F
    R1_pmol_132   | deficient     | b12_total  | 178.86      | ng/L       | 178.86         | F
    R1_pmol_133   | indeterminate | b12_total  | 180.215     | ng/L       | 180.215        | T
    R1_pmol_132.84| deficient     | b12_total  | 179.9982    | ng/L       | 179.9982       | F
    R1_loinc_mass | unlikely      | b12_total  | 351         | ng/L       | 351            | F
"""

# ------------------------------------------------------------------------------ R2
R2_LABS = """
    patient_id  | collected_at | test_code | result | unit
    R2_24.9     | 2026-10-03   | HOLOTC    | 24.9   | pmol/L
    R2_25       | 2026-10-03   | HOLOTC    | 25     | pmol/L
    R2_70       | 2026-10-03   | ACTB12    | 70     | pmol/L
    R2_70.1     | 2026-10-03   | ACTB12    | 70.1   | pmol/L
    R2_loinc    | 2026-10-03   | 72160-5   | 10     |          # unit fixed by the code
"""
R2_EXPECTED = """
    patient_id | b12_status    | index_test | index_value | index_unit | b12_active_pmol_l
    R2_24.9    | deficient     | b12_active | 24.9        | pmol/L     | 24.9
    R2_25      | indeterminate | b12_active | 25          | pmol/L     | 25
    R2_70      | indeterminate | b12_active | 70          | pmol/L     | 70
    R2_70.1    | unlikely      | b12_active | 70.1        | pmol/L     | 70.1
    R2_loinc   | deficient     | b12_active | 10          | pmol/L     | 10
"""

# ------------------------------------------------------------------------------ R3
R3_LABS = """
    patient_id      | collected_at | test_code | result | unit
    R3_lt150        | 2026-10-03   | B12       | <150   | ng/L
    R3_lt180        | 2026-10-03   | B12       | <180   | ng/L    # [0,180): all deficient
    R3_le179        | 2026-10-03   | B12       | <=179  | ng/L
    R3_le180        | 2026-10-03   | B12       | <=180  | ng/L    # 180 is indeterminate
    R3_lt200        | 2026-10-03   | B12       | <200   | ng/L
    R3_gt200        | 2026-10-03   | B12       | >200   | ng/L    # spans into unlikely
    R3_gt350        | 2026-10-03   | B12       | >350   | ng/L
    R3_ge350        | 2026-10-03   | B12       | >=350  | ng/L    # 350 is indeterminate
    R3_gt2000       | 2026-10-03   | B12       | >2000  | ng/L
    R3_gt_sp_2000   | 2026-10-03   | B12       | > 2000 | ng/L
    R3_lt132_pmol   | 2026-10-03   | B12       | <132   | pmol/L  # < 178.86 ng/L
    R3_active_lt25  | 2026-10-03   | HOLOTC    | <25    | pmol/L
    R3_active_le25  | 2026-10-03   | HOLOTC    | <=25   | pmol/L
    R3_active_lt50  | 2026-10-03   | HOLOTC    | <50    | pmol/L
    R3_active_gt70  | 2026-10-03   | HOLOTC    | >70    | pmol/L
    R3_active_ge70  | 2026-10-03   | HOLOTC    | >=70   | pmol/L
"""
R3_EXPECTED = """
    patient_id     | b12_status    | censored_ambiguous | index_censor | index_value | needs_mma
    R3_lt150       | deficient     | F                  | <            | 150         | F
    R3_lt180       | deficient     | F                  | <            | 180         | F
    R3_le179       | deficient     | F                  | <=           | 179         | F
    R3_le180       | indeterminate | T                  | <=           | 180         | T
    R3_lt200       | indeterminate | T                  | <            | 200         | T
    R3_gt200       | indeterminate | T                  | >            | 200         | T
    R3_gt350       | unlikely      | F                  | >            | 350         | F
    R3_ge350       | indeterminate | T                  | >=           | 350         | T
    R3_gt2000      | unlikely      | F                  | >            | 2000        | F
    R3_gt_sp_2000  | unlikely      | F                  | >            | 2000        | F
    R3_lt132_pmol  | deficient     | F                  | <            | 178.86      | F
    R3_active_lt25 | deficient     | F                  | <            | 25          | F
    R3_active_le25 | indeterminate | T                  | <=           | 25          | T
    R3_active_lt50 | indeterminate | T                  | <            | 50          | T
    R3_active_gt70 | unlikely      | F                  | >            | 70          | F
    R3_active_ge70 | indeterminate | T                  | >=           | 70          | T
"""

# ------------------------------------------------------------------------------ R4
R4_LABS = """
    patient_id          | collected_at     | test_code | result | unit
    R4_latest_wins      | 2026-03-01       | B12       | 150    | ng/L
    R4_latest_wins      | 2026-10-01       | B12       | 400    | ng/L
    R4_latest_analyte   | 2026-09-01       | B12       | 400    | ng/L
    R4_latest_analyte   | 2026-10-01       | HOLOTC    | 20     | pmol/L
    R4_disc_active      | 2026-10-01       | B12       | 400    | ng/L
    R4_disc_active      | 2026-10-01       | HOLOTC    | 20     | pmol/L
    R4_disc_total       | 2026-10-01       | B12       | 150    | ng/L
    R4_disc_total       | 2026-10-01       | HOLOTC    | 50     | pmol/L
    R4_disc_times       | 2026-10-01T08:00 | B12       | 150    | ng/L    # same day, not same time
    R4_disc_times       | 2026-10-01T16:30 | HOLOTC    | 80     | pmol/L
    R4_disc_censored    | 2026-10-01T09:00 | B12       | <200   | ng/L
    R4_disc_censored    | 2026-10-01T08:00 | HOLOTC    | 20     | pmol/L
    R4_agree            | 2026-10-01       | B12       | 400    | ng/L
    R4_agree            | 2026-10-01       | HOLOTC    | 80     | pmol/L
    R4_same_time_lower  | 2026-10-01T09:00 | B12       | 400    | ng/L
    R4_same_time_lower  | 2026-10-01T09:00 | B12       | 170    | ng/L
    R4_same_time_censor | 2026-10-01       | B12       | 150    | ng/L
    R4_same_time_censor | 2026-10-01       | B12       | <150   | ng/L    # '<150' is the lower
    R4_same_day_later   | 2026-10-01T08:00 | B12       | 170    | ng/L
    R4_same_day_later   | 2026-10-01T15:00 | B12       | 400    | ng/L    # most recent wins
    R4_window_365_out   | 2025-10-31       | B12       | 150    | ng/L    # as-of minus 365 days
    R4_window_364_in    | 2025-11-01       | B12       | 150    | ng/L
    R4_as_of_evening    | 2026-10-31T23:59 | B12       | 150    | ng/L
    R4_after_as_of      | 2026-09-01       | B12       | 400    | ng/L
    R4_after_as_of      | 2026-11-05       | B12       | 150    | ng/L    # kept, not classified
    R4_only_after_as_of | 2026-11-02       | B12       | 150    | ng/L
"""
R4_EXPECTED = """
    patient_id          | b12_status | index_test | index_value | index_censor | index_collected_at | discordant | b12_total_ng_l
    R4_latest_wins      | unlikely   | b12_total  | 400         |              | 2026-10-01         | F          | 400
    R4_latest_analyte   | deficient  | b12_active | 20          |              | 2026-10-01         | F          | 400
    R4_disc_active      | deficient  | b12_active | 20          |              | 2026-10-01         | T          | 400
    R4_disc_total       | deficient  | b12_total  | 150         |              | 2026-10-01         | T          | 150
    R4_disc_times       | deficient  | b12_total  | 150         |              | 2026-10-01         | T          | 150
    R4_disc_censored    | deficient  | b12_active | 20          |              | 2026-10-01         | T          | 200
    R4_agree            | unlikely   | b12_total  | 400         |              | 2026-10-01         | F          | 400
    R4_same_time_lower  | deficient  | b12_total  | 170         |              | 2026-10-01         | F          | 170
    R4_same_time_censor | deficient  | b12_total  | 150         | <            | 2026-10-01         | F          | 150
    R4_same_day_later   | unlikely   | b12_total  | 400         |              | 2026-10-01         | F          | 400
    R4_window_365_out   | not_tested |            |             |              |                    | F          |
    R4_window_364_in    | deficient  | b12_total  | 150         |              | 2025-11-01         | F          | 150
    R4_as_of_evening    | deficient  | b12_total  | 150         |              | 2026-10-31         | F          | 150
    R4_after_as_of      | unlikely   | b12_total  | 400         |              | 2026-09-01         | F          | 400
    R4_only_after_as_of | not_tested |            |             |              |                    | F          |
"""

# ------------------------------------------------------------------------------ R5
R5_LABS = """
    patient_id          | collected_at     | test_code | result | unit
    R5_raised_after     | 2026-09-01       | B12       | 250    | ng/L
    R5_raised_after     | 2026-09-15       | MMA       | 0.6    | umol/L
    R5_normal_after     | 2026-09-01       | B12       | 250    | ng/L
    R5_normal_after     | 2026-09-15       | MMA       | 0.3    | µmol/L
    R5_at_limit         | 2026-09-01       | B12       | 250    | ng/L
    R5_at_limit         | 2026-09-15       | MMA       | 0.45   | umol/L   # > 0.45 is raised
    R5_same_day         | 2026-09-01T09:00 | B12       | 250    | ng/L
    R5_same_day         | 2026-09-01T08:00 | MMA       | 0.6    | umol/L   # on the index date
    R5_before_index     | 2026-08-01       | MMA       | 0.6    | umol/L
    R5_before_index     | 2026-09-01       | B12       | 250    | ng/L
    R5_nmol             | 2026-09-01       | B12       | 250    | ng/L
    R5_nmol             | 2026-09-15       | 13964-2   | 600    | nmol/L   # 0.6 umol/L
    R5_nmol_451         | 2026-09-01       | B12       | 250    | ng/L
    R5_nmol_451         | 2026-09-15       | MMA       | 451    | nmol/L   # 0.451 > 0.45
    R5_latest_wins      | 2026-09-01       | B12       | 250    | ng/L
    R5_latest_wins      | 2026-09-10       | MMA       | 0.6    | umol/L
    R5_latest_wins      | 2026-09-20       | MMA       | 0.3    | umol/L
    R5_same_day_highest | 2026-09-01       | B12       | 250    | ng/L
    R5_same_day_highest | 2026-09-20T08:00 | MMA       | 0.6    | umol/L
    R5_same_day_highest | 2026-09-20T17:00 | MMA       | 0.3    | umol/L
    R5_keep_deficient   | 2026-09-01       | B12       | 150    | ng/L
    R5_keep_deficient   | 2026-09-15       | MMA       | 0.2    | umol/L
    R5_keep_unlikely    | 2026-09-01       | B12       | 400    | ng/L
    R5_keep_unlikely    | 2026-09-15       | MMA       | 0.9    | umol/L
    R5_straddles        | 2026-09-01       | B12       | 250    | ng/L
    R5_straddles        | 2026-09-15       | MMA       | <0.6   | umol/L   # [0, 0.6) spans 0.45
    R5_censored_low     | 2026-09-01       | B12       | 250    | ng/L
    R5_censored_low     | 2026-09-15       | MMA       | <0.3   | umol/L
    R5_censored_high    | 2026-09-01       | B12       | 250    | ng/L
    R5_censored_high    | 2026-09-15       | MMA       | >0.5   | umol/L
    R5_ambiguous_index  | 2026-09-01       | B12       | <200   | ng/L
    R5_ambiguous_index  | 2026-09-15       | MMA       | 0.7    | umol/L
    R5_active_index     | 2026-09-01       | HOLOTC    | 40     | pmol/L
    R5_active_index     | 2026-09-15       | MMA       | 0.6    | umol/L
    R5_after_as_of      | 2026-09-01       | B12       | 250    | ng/L
    R5_after_as_of      | 2026-11-03       | MMA       | 0.6    | umol/L   # not yet known
    R5_mma_only         | 2026-09-15       | MMA       | 0.6    | umol/L
"""
R5_EXPECTED = """
    patient_id          | b12_status    | status_basis | mma_umol_l | mma_at     | needs_mma | censored_ambiguous
    R5_raised_after     | deficient     | mma          | 0.6        | 2026-09-15 | F         | F
    R5_normal_after     | unlikely      | mma          | 0.3        | 2026-09-15 | F         | F
    R5_at_limit         | unlikely      | mma          | 0.45       | 2026-09-15 | F         | F
    R5_same_day         | deficient     | mma          | 0.6        | 2026-09-01 | F         | F
    R5_before_index     | indeterminate | b12_total    |            |            | T         | F
    R5_nmol             | deficient     | mma          | 0.6        | 2026-09-15 | F         | F
    R5_nmol_451         | deficient     | mma          | 0.451      | 2026-09-15 | F         | F
    R5_latest_wins      | unlikely      | mma          | 0.3        | 2026-09-20 | F         | F
    R5_same_day_highest | deficient     | mma          | 0.6        | 2026-09-20 | F         | F
    R5_keep_deficient   | deficient     | b12_total    | 0.2        | 2026-09-15 | F         | F
    R5_keep_unlikely    | unlikely      | b12_total    | 0.9        | 2026-09-15 | F         | F
    R5_straddles        | indeterminate | b12_total    | 0.6        | 2026-09-15 | T         | F
    R5_censored_low     | unlikely      | mma          | 0.3        | 2026-09-15 | F         | F
    R5_censored_high    | deficient     | mma          | 0.5        | 2026-09-15 | F         | F
    R5_ambiguous_index  | deficient     | mma          | 0.7        | 2026-09-15 | F         | T
    R5_active_index     | deficient     | mma          | 0.6        | 2026-09-15 | F         | F
    R5_after_as_of      | indeterminate | b12_total    |            |            | T         | F
    R5_mma_only         | not_tested    | none         |            |            | F         | F
"""

# ------------------------------------------------------------------------------ R6
R6_LABS = """
    patient_id         | collected_at | test_code | result | unit
    R6_deficient       | 2026-10-03   | B12       | 150    | ng/L
    R6_indeterminate   | 2026-10-03   | B12       | 250    | ng/L
    R6_unlikely        | 2026-10-03   | B12       | 400    | ng/L
    R6_other_test_only | 2026-10-03   | FERR      | 30     | ug/L    # skipped, still in cohort
    R6_rejected_only   | 2026-10-03   | B12       | haemolysed | ng/L  # rejected, still in cohort
"""
R6_PATIENTS = """
    patient_id       | age_years
    R6_patients_only | 40
"""
R6_MEDICATIONS = """
    patient_id    | medication              | start_date
    R6_meds_only  | Metformin 500mg tablets | 2026-01-01
"""
R6_EXPECTED = """
    patient_id         | b12_status    | status_basis | index_test
    R6_deficient       | deficient     | b12_total    | b12_total
    R6_indeterminate   | indeterminate | b12_total    | b12_total
    R6_unlikely        | unlikely      | b12_total    | b12_total
    R6_other_test_only | not_tested    | none         |
    R6_rejected_only   | not_tested    | none         |
    R6_patients_only   | not_tested    | none         |
    R6_meds_only       | not_tested    | none         |
"""

# ------------------------------------------------------------------------------ R7
R7_LABS = """
    patient_id       | collected_at | test_code | result | unit
    R7_indeterminate | 2026-10-03   | B12       | 262    | ng/L
    R7_resolved      | 2026-10-03   | B12       | 262    | ng/L
    R7_resolved      | 2026-10-10   | MMA       | 0.3    | umol/L
    R7_ambiguous     | 2026-10-03   | B12       | <=180  | ng/L
    R7_deficient     | 2026-10-03   | B12       | 150    | ng/L
    R7_unlikely      | 2026-10-03   | B12       | 400    | ng/L
"""
R7_PATIENTS = """
    patient_id    | age_years
    R7_not_tested | 40
"""
R7_EXPECTED = """
    patient_id       | b12_status    | needs_mma
    R7_indeterminate | indeterminate | T
    R7_resolved      | unlikely      | F
    R7_ambiguous     | indeterminate | T
    R7_deficient     | deficient     | F
    R7_unlikely      | unlikely      | F
    R7_not_tested    | not_tested    | F
"""

LABS = rows_of(R1_LABS, R2_LABS, R3_LABS, R4_LABS, R5_LABS, R6_LABS, R7_LABS)
PATIENTS = rows_of(R6_PATIENTS, R7_PATIENTS)
MEDICATIONS = rows_of(R6_MEDICATIONS)
EXPECTED = (R1_EXPECTED, R2_EXPECTED, R3_EXPECTED, R4_EXPECTED, R5_EXPECTED, R6_EXPECTED,
            R7_EXPECTED)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return run_cli(tmp_path_factory.mktemp("r01_r07"), LABS, PATIENTS, MEDICATIONS)


@pytest.fixture(scope="module")
def patients(run: Path) -> pd.DataFrame:
    return read_patients(run)


@pytest.mark.parametrize("expected", cases(R1_EXPECTED))
def test_R1_total_b12_bands(patients: pd.DataFrame, expected: dict[str, str]) -> None:
    check(patients, expected)


@pytest.mark.parametrize("expected", cases(R2_EXPECTED))
def test_R2_active_b12_bands(patients: pd.DataFrame, expected: dict[str, str]) -> None:
    check(patients, expected)


@pytest.mark.parametrize("expected", cases(R3_EXPECTED))
def test_R3_censored_intervals(patients: pd.DataFrame, expected: dict[str, str]) -> None:
    check(patients, expected)


@pytest.mark.parametrize("expected", cases(R4_EXPECTED))
def test_R4_index_test(patients: pd.DataFrame, expected: dict[str, str]) -> None:
    check(patients, expected)


@pytest.mark.parametrize("expected", cases(R5_EXPECTED))
def test_R5_mma_resolution(patients: pd.DataFrame, expected: dict[str, str]) -> None:
    check(patients, expected)


@pytest.mark.parametrize("expected", cases(R6_EXPECTED))
def test_R6_status(patients: pd.DataFrame, expected: dict[str, str]) -> None:
    check(patients, expected)


@pytest.mark.parametrize("expected", cases(R7_EXPECTED))
def test_R7_needs_mma(patients: pd.DataFrame, expected: dict[str, str]) -> None:
    check(patients, expected)


def test_every_case_has_an_expectation(patients: pd.DataFrame) -> None:
    assert_every_case_checked(patients, EXPECTED, LABS, PATIENTS, MEDICATIONS)


def test_reasons_sentence_names_rules_values_and_dates(patients: pd.DataFrame) -> None:
    """The SPEC's own example sentence, and rule ids in the order they fired."""
    row = patients.loc["R7_indeterminate"]
    assert row["reasons"] == "R1 total B12 262 ng/L (2026-10-03) indeterminate → R7 MMA needed"
    assert row["rule_ids"] == "R1 R4 R7"
    assert patients.loc["R5_raised_after", "rule_ids"] == "R1 R4 R5 R8 R9"
    assert "R5 MMA 0.6 µmol/L (2026-09-15) raised → deficient" in \
        patients.loc["R5_raised_after", "reasons"]
    assert "R3 censored result spans a cut-off" in patients.loc["R3_lt200", "reasons"]
    # values as exact as needed never to cross a cut-off: 179.9982 is not "180" (R1: 180
    # is indeterminate), 0.451 µmol/L is not "0.45" (R5: raised is above 0.45)
    assert patients.loc["R1_pmol_132.84", "reasons"].startswith(
        "R1 total B12 179.9982 ng/L (2026-10-03) deficient")
    assert "R5 MMA 0.451 µmol/L (2026-09-15) raised → deficient" in \
        patients.loc["R5_nmol_451", "reasons"]
    assert "R5 MMA 0.45 µmol/L (2026-09-15) normal → unlikely" in \
        patients.loc["R5_at_limit", "reasons"]
    assert ("R4 same-day total B12 400 ng/L and active B12 20 pmol/L disagree: more severe "
            "band used") in patients.loc["R4_disc_active", "reasons"]
    assert patients.loc["R4_disc_active", "rule_ids"] == "R1 R2 R4 R8 R9"
    # the compared pair as reported: a censored total keeps its "<"
    assert ("R4 same-day total B12 <200 ng/L and active B12 20 pmol/L disagree"
            in patients.loc["R4_disc_censored", "reasons"])
