"""Measures: who is in each numerator and denominator, and the published long table."""

from __future__ import annotations

import datetime as dt
import re

import numpy as np
import pandas as pd
import pytest

from pipeline.outputs.measures import (
    MEASURE_COLUMNS,
    MEASURES,
    UNKNOWN_PRACTICE,
    build_measures,
    definitions_table,
    measure_by_id,
)

AS_OF = dt.date(2026, 3, 31)
STATUSES = ["deficient", "indeterminate", "unlikely", "not_tested"]

BASE = {
    "patient_id": "X",
    "practice_id": "A1",
    "b12_status": "unlikely",
    "status_basis": "b12_total",
    "index_collected_at": pd.Timestamp("2026-03-01"),
    "mma_umol_l": np.nan,
    "on_metformin": False,
    "metformin_monitoring_due": False,
    "on_b12_treatment": False,
    "retest_due": False,
}


def patients_frame(rows: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame([{**BASE, **row} for row in rows])
    frame["patient_id"] = frame["patient_id"].astype("string")
    frame["practice_id"] = frame["practice_id"].astype("string")
    frame["b12_status"] = pd.Categorical(frame["b12_status"], categories=STATUSES)
    frame["index_collected_at"] = pd.to_datetime(frame["index_collected_at"])
    frame["mma_umol_l"] = frame["mma_umol_l"].astype(float)
    return frame


# (measure, patient overrides, in numerator, in denominator)
CASES = [
    ("metformin_testing", {"on_metformin": True}, True, True),
    ("metformin_testing", {"on_metformin": True, "metformin_monitoring_due": True}, False, True),
    ("metformin_testing", {"on_metformin": False}, False, False),
    ("deficient_among_tested", {"b12_status": "deficient"}, True, True),
    ("deficient_among_tested", {"b12_status": "indeterminate"}, False, True),
    ("deficient_among_tested", {"b12_status": "unlikely"}, False, True),
    ("deficient_among_tested", {"b12_status": "not_tested", "status_basis": "none"}, False, False),
    ("indeterminate_mma_done", {"b12_status": "indeterminate"}, False, True),
    # an indeterminate result resolved by MMA is still an indeterminate result with an MMA
    (
        "indeterminate_mma_done",
        {"b12_status": "deficient", "status_basis": "mma", "mma_umol_l": 0.8},
        True,
        True,
    ),
    (
        "indeterminate_mma_done",
        {"b12_status": "unlikely", "status_basis": "mma", "mma_umol_l": 0.2},
        True,
        True,
    ),
    ("indeterminate_mma_done", {"b12_status": "deficient"}, False, False),
    (
        "deficient_untreated_90d",
        {"b12_status": "deficient", "index_collected_at": pd.Timestamp("2025-12-30")},
        True,
        True,
    ),
    # exactly 90 days is not "more than 90 days"
    (
        "deficient_untreated_90d",
        {"b12_status": "deficient", "index_collected_at": pd.Timestamp("2025-12-31")},
        False,
        True,
    ),
    (
        "deficient_untreated_90d",
        {
            "b12_status": "deficient",
            "on_b12_treatment": True,
            "index_collected_at": pd.Timestamp("2025-06-01"),
        },
        False,
        True,
    ),
    (
        "deficient_untreated_90d",
        {"b12_status": "indeterminate", "index_collected_at": pd.Timestamp("2025-06-01")},
        False,
        False,
    ),
    ("retest_overdue", {"on_b12_treatment": True, "retest_due": True}, True, True),
    ("retest_overdue", {"on_b12_treatment": True}, False, True),
    ("retest_overdue", {}, False, False),
]


@pytest.mark.parametrize(("measure_id", "overrides", "in_numerator", "in_denominator"), CASES)
def test_masks(measure_id, overrides, in_numerator, in_denominator):
    num, den = measure_by_id(measure_id).masks(patients_frame([overrides]), AS_OF)
    assert (bool(num[0]), bool(den[0])) == (in_numerator, in_denominator)


def test_missing_flags_count_as_no():
    frame = patients_frame([{}])
    frame["on_metformin"] = pd.array([pd.NA], dtype="boolean")
    frame["b12_status"] = pd.Categorical([None], categories=STATUSES)
    for measure in MEASURES:
        num, den = measure.masks(frame, AS_OF)
        assert not num[0] and not den[0]


def test_definitions_are_complete_data():
    ids = [m.id for m in MEASURES]
    assert len(ids) == len(set(ids)) == 5
    table = definitions_table()
    assert list(table["id"]) == ids
    for column in ("title", "numerator", "denominator", "why", "source"):
        assert table[column].str.len().gt(10).all(), column
    assert set(table["low_is_good"].map(repr)) <= {"True", "False", "None"}
    with pytest.raises(KeyError):
        measure_by_id("no_such_measure")


def _cohort(n_per_practice: dict[str | None, int]) -> pd.DataFrame:
    """Every patient deficient, on metformin and on treatment: counts are easy to predict."""
    rows = []
    for practice, n in n_per_practice.items():
        rows += [
            {
                "patient_id": f"ID-{practice}-{i:04d}",
                "practice_id": practice,
                "b12_status": "deficient",
                "on_metformin": True,
                "on_b12_treatment": True,
            }
            for i in range(n)
        ]
    return patients_frame(rows)


def test_long_table_shape_and_types():
    table = build_measures(_cohort({"P2": 40, "P1": 30, None: 20}), AS_OF, 7, 5)
    assert tuple(table.columns) == MEASURE_COLUMNS
    assert set(table["month"]) == {"2026-03"}
    assert list(table["measure"].unique()) == [m.id for m in MEASURES]
    first = table[table["measure"] == "deficient_among_tested"]
    assert first[["group_by", "group"]].values.tolist() == [
        ["overall", "all"],
        ["practice", "P1"],
        ["practice", "P2"],
        ["practice", UNKNOWN_PRACTICE],
    ]
    assert first["denominator"].tolist() == [90, 30, 40, 20]
    assert first["numerator"].tolist() == [90, 30, 40, 20]
    assert first["ratio"].tolist() == [1.0, 1.0, 1.0, 1.0]
    assert {str(t) for t in table.dtypes} == {"string", "Int64", "Float64", "bool"}
    assert str(table["suppressed"].dtype) == "bool"


def test_blank_practice_is_unknown():
    frame = _cohort({"P1": 20, "  ": 20})
    table = build_measures(frame, AS_OF, 7, 5)
    assert set(table.loc[table["group_by"] == "practice", "group"]) == {"P1", UNKNOWN_PRACTICE}


def test_small_practice_and_its_neighbour_are_suppressed():
    table = build_measures(_cohort({"BIG": 200, "MID": 30, "TINY": 3}), AS_OF, 7, 5)
    rows = table[table["measure"] == "retest_overdue"].set_index("group")
    assert rows.loc["TINY", "suppressed"] and rows.loc["MID", "suppressed"]
    assert pd.isna(rows.loc["TINY", "denominator"]) and pd.isna(rows.loc["MID", "denominator"])
    assert rows.loc["BIG", "denominator"] == 200 and not rows.loc["BIG", "suppressed"]
    assert rows.loc["all", "denominator"] == 235


@pytest.mark.parametrize(("small_count", "rounding"), [(7, 5), (10, 10)])
def test_random_cohort_publishes_nothing_small(small_count, rounding):
    rng = np.random.default_rng(7)
    n = 2_000
    frame = patients_frame(
        [
            {
                "patient_id": f"ID{i:06d}",
                "practice_id": rng.choice(
                    ["A", "B", "C", "D", "E"], p=[0.5, 0.3, 0.15, 0.04, 0.01]
                ),
                "b12_status": rng.choice(STATUSES),
                "on_metformin": bool(rng.random() < 0.2),
                "metformin_monitoring_due": bool(rng.random() < 0.5),
                "on_b12_treatment": bool(rng.random() < 0.1),
                "retest_due": bool(rng.random() < 0.5),
                "index_collected_at": pd.Timestamp(AS_OF)
                - pd.Timedelta(days=int(rng.integers(400))),
            }
            for i in range(n)
        ]
    )
    frame["retest_due"] &= frame["on_b12_treatment"]
    table = build_measures(frame, AS_OF, small_count, rounding)
    exact = build_measures(frame, AS_OF, 0, 1)  # nothing to suppress or round
    for column in ("numerator", "denominator"):
        raw = exact[column].astype(int)
        published = table[column]
        assert published[raw.between(1, small_count)].isna().all()
        shown = published.notna()
        assert (published[shown].astype(int) % rounding == 0).all()
        assert (published[shown].astype(int) - raw[shown]).abs().le(rounding // 2).all()
        if (small_count, rounding) == (7, 5):
            assert not published.dropna().between(1, 7).any()
    assert not table.astype(str).isin(frame["patient_id"].tolist()).any().any()
    # the overall row counts everyone, before rounding, exactly once
    overall = table[(table["group_by"] == "overall") & (table["measure"] == "metformin_testing")]
    raw = int(frame["on_metformin"].sum())
    assert abs(int(overall["denominator"].iloc[0]) - raw) <= rounding // 2
    # same input, same table
    pd.testing.assert_frame_equal(table, build_measures(frame, AS_OF, small_count, rounding))


def test_empty_cohort_gives_zero_overall_rows():
    table = build_measures(patients_frame([{}]).iloc[:0], AS_OF, 7, 5)
    assert tuple(table.columns) == MEASURE_COLUMNS
    assert len(table) == len(MEASURES)
    assert (table["denominator"] == 0).all() and table["ratio"].isna().all()


def test_breakdowns_by_age_band_and_sex_add_up_to_the_overall_row():
    rng = np.random.default_rng(3)
    n = 600
    ages = rng.choice([5, 30, 50, 70, 90, None], size=n, p=[0.05, 0.25, 0.3, 0.25, 0.1, 0.05])
    frame = patients_frame([{"patient_id": f"ID{i:05d}", "b12_status": "deficient",
                             "on_metformin": True} for i in range(n)])
    frame["age_years"] = pd.array(ages, dtype="Int64")
    sex = pd.Series(rng.choice(["F", "male", "", "x"], size=n, p=[0.5, 0.45, 0.04, 0.01]))
    exact = build_measures(frame, AS_OF, 0, 1, sex=sex)
    rows = exact[exact["measure"] == "metformin_testing"]
    groups = rows.groupby("group_by", sort=False)["group"].apply(list).to_dict()
    assert list(groups) == ["overall", "practice", "age_band", "sex"]
    assert groups["age_band"] == ["<16", "16–39", "40–64", "65–79", "80+", "unknown"]
    assert groups["sex"] == ["female", "male", "other", "unknown"]
    overall = int(rows.loc[rows["group_by"] == "overall", "denominator"].iloc[0])
    for group_by in ("practice", "age_band", "sex"):
        assert rows.loc[rows["group_by"] == group_by, "denominator"].sum() == overall
    by_band = rows[rows["group_by"] == "age_band"].set_index("group")["denominator"]
    assert by_band["<16"] == int((ages == 5).sum())
    assert by_band["unknown"] == sum(a is None for a in ages)
    # the same cohort published: small groups withheld, secondary cells marked as such
    published = build_measures(frame, AS_OF, 7, 5, sex=sex)
    other = published[(published["group_by"] == "sex") & (published["group"] == "other")
                      & (published["measure"] == "metformin_testing")]
    assert other["suppressed"].all() and set(other["suppression"]) == {"primary"}
    assert published["suppression"].isin(["", "primary", "secondary"]).all()
    assert (published["suppressed"] == published["suppression"].ne("")).all()


def test_no_breakdown_the_inputs_do_not_have():
    table = build_measures(_cohort({"P1": 30}), AS_OF, 7, 5)
    assert set(table["group_by"]) == {"overall", "practice"}
    blank = build_measures(_cohort({"P1": 30}), AS_OF, 7, 5, sex=pd.Series([""] * 30))
    assert set(blank["group_by"]) == {"overall", "practice"}


def test_measure_sources_are_citations_not_internal_names() -> None:
    """The report shows each measure's source: a guideline or a section of the shipped
    clinical basis a reader can look up, as `b12screen rules` does, never "seed" or "SPEC",
    and no cut-off that another rules profile would make untrue without saying whose."""
    for measure in MEASURES:
        assert not re.search(r"\bseed\b|\bSPEC\b", measure.source), measure.id
        assert re.search(r"NICE|MHRA|BSH|prescribing information|clinical-basis", measure.source)
        if "180 ng/L" in measure.source:
            assert "rules profile" in measure.source and "by default" in measure.source
