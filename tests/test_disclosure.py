"""Disclosure control: a table of counts in, publishable counts out."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.outputs.disclosure import (
    format_count,
    format_ratio,
    primary_suppression,
    protect,
    round_counts,
    secondary_suppression,
    suppress_and_round,
    suppress_counts,
)

NA = None


def _values(series: pd.Series) -> list[object]:
    return [None if pd.isna(v) else v for v in series.tolist()]


@pytest.mark.parametrize(
    ("count", "published", "suppressed"),
    [
        (0, 0, False),  # zero identifies nobody: published as 0
        (1, NA, True),
        (5, NA, True),
        (7, NA, True),  # the threshold itself is suppressed
        (8, 10, False),
        (12, 10, False),
        (13, 15, False),
        (100, 100, False),
        (102, 100, False),
        (103, 105, False),
        (1_234_567, 1_234_565, False),
    ],
)
def test_single_count(count, published, suppressed):
    out = suppress_counts(pd.Series([count]), small_count=7, rounding=5)
    assert _values(out["count"]) == [published]
    assert out["suppressed"].tolist() == [suppressed]


@pytest.mark.parametrize(
    ("small_count", "rounding", "count", "published"),
    [
        (10, 10, 10, NA),
        (10, 10, 11, 10),
        (10, 10, 15, 20),  # halves round up, deterministically
        (0, 5, 1, NA),  # would round to 0: a real count is never published as 0
        (0, 5, 3, 5),
        (2, 1, 3, 3),  # rounding=1 leaves counts as they are
    ],
)
def test_other_parameters(small_count, rounding, count, published):
    out = suppress_counts(pd.Series([count]), small_count=small_count, rounding=rounding)
    assert _values(out["count"]) == [published]


@pytest.mark.parametrize(
    ("numerator", "denominator", "expected"),
    [
        # (numerator, denominator, ratio, suppressed)
        (0, 0, (0, 0, NA, False)),
        (0, 10, (0, 10, 0.0, False)),
        (3, 20, (NA, 20, NA, True)),  # small numerator only
        (5, 5, (NA, NA, NA, True)),
        (0, 5, (NA, NA, NA, True)),  # suppressed denominator takes the numerator with it
        (8, 9, (10, 10, 1.0, False)),
        (12, 27, (10, 25, 0.4, False)),  # ratio from the rounded counts, not 12/27
        (98, 100, (100, 100, 1.0, False)),
    ],
)
def test_numerator_denominator_rows(numerator, denominator, expected):
    table = pd.DataFrame({"numerator": [numerator], "denominator": [denominator]})
    out = suppress_and_round(table)
    got = (*_values(out["numerator"]), *_values(out["denominator"]), *_values(out["ratio"]))
    assert got == expected[:3]  # exact: ratios of multiples of 5 here are exact floats
    assert out["suppressed"].tolist() == [expected[3]]
    assert list(out.columns) == ["numerator", "denominator", "ratio", "suppressed"]
    assert str(out["numerator"].dtype) == "Int64" and str(out["ratio"].dtype) == "Float64"


@pytest.mark.parametrize(
    ("cells", "groups", "expected"),
    [
        ([3, 50, 20, 100], None, [True, False, True, False]),  # lone cell: next smallest goes
        ([3, 4, 50], None, [True, True, False]),  # two hidden already: nothing more
        ([3, 0, 0], None, [True, False, False]),  # others are zero: the total hides it
        ([0, 3, 20, 20], None, [False, True, True, False]),  # zeros skipped; ties: first
        ([0, 50, 60], None, [False, False, False]),
        ([9, 50], None, [False, False]),
        ([3, 50], None, [True, True]),
        (
            [3, 50, 60, 40, 2, 70, 30, 90],
            ["a", "a", "a", "b", "b", "b", "c", "c"],
            [True, True, False, True, True, False, False, False],
        ),
    ],
)
def test_secondary_suppression(cells, groups, expected):
    values = pd.Series(cells)
    by = None if groups is None else pd.Series(groups)
    primary = primary_suppression(values)
    assert secondary_suppression(values, primary, by=by).tolist() == expected
    assert suppress_counts(values, by=by)["suppressed"].tolist() == expected


def test_secondary_can_be_switched_off_for_cells_without_a_total():
    out = suppress_counts(pd.Series([3, 50, 20]), secondary=False)
    assert out["suppressed"].tolist() == [True, False, False]


def test_practices_within_a_measure_month():
    """One practice's small denominator hides another practice, numerator and all."""
    table = pd.DataFrame(
        {
            "measure": ["m"] * 4 + ["n"] * 2,
            "group": ["A", "B", "C", "D", "A", "B"],
            "numerator": [2, 10, 30, 0, 3, 40],
            "denominator": [5, 20, 80, 0, 30, 60],
        }
    )
    out = suppress_and_round(table, cells_of=["measure"])
    # m: A's denominator is small -> B (next smallest non-zero) is hidden too, and with
    # them both numerators. n: A's numerator is small -> B's numerator is hidden too.
    assert out["suppressed"].tolist() == [True, True, False, False, True, True]
    assert _values(out["denominator"]) == [None, None, 80, 0, 30, 60]
    assert _values(out["numerator"]) == [None, None, 30, 0, None, None]
    assert _values(out["ratio"]) == [None, None, 0.375, None, None, None]
    assert out["group"].tolist() == table["group"].tolist()  # other columns untouched


def test_numerator_only_secondary_leaves_denominators_published():
    table = pd.DataFrame(
        {"g": ["x", "x", "x"], "numerator": [3, 15, 40], "denominator": [50, 50, 50]}
    )
    out = suppress_and_round(table, cells_of=["g"])
    assert _values(out["numerator"]) == [None, None, 40]
    assert _values(out["denominator"]) == [50, 50, 50]


@pytest.mark.parametrize(
    ("counts", "message"),
    [
        ([-1], "non-negative"),
        ([1.5], "whole numbers"),
        ([None], "missing"),
    ],
)
def test_bad_counts_are_bugs(counts, message):
    with pytest.raises(ValueError, match=message):
        suppress_counts(pd.Series(counts, dtype="Float64"))


def test_numerator_above_denominator_is_a_bug():
    with pytest.raises(ValueError, match="exceeds"):
        suppress_and_round(pd.DataFrame({"numerator": [10], "denominator": [9]}))


def test_round_counts_keeps_index():
    values = pd.Series([12, 13], index=["a", "b"])
    assert round_counts(values).to_dict() == {"a": 10, "b": 15}


@pytest.mark.parametrize(
    ("value", "text"),
    [(pd.NA, "≤7"), (None, "≤7"), (np.nan, "≤7"), (0, "0"), (10, "10"), (12345, "12,345")],
)
def test_format_count(value, text):
    assert format_count(value) == text


def test_format_count_uses_threshold_and_ratio_format():
    assert format_count(pd.NA, small_count=10) == "≤10"
    assert format_ratio(0.1234) == "12.3%"
    assert format_ratio(pd.NA) == "–"


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 3),  # group
            st.integers(0, 60),  # numerator
            st.integers(0, 60),  # extra in denominator
        ),
        min_size=1,
        max_size=25,
    )
)
def test_published_tables_never_disclose(rows):
    groups, nums, extra = map(list, zip(*rows, strict=True))
    table = pd.DataFrame({"g": groups, "numerator": nums, "denominator": np.add(nums, extra)})
    out = suppress_and_round(table, cells_of=["g"])
    for column in ("numerator", "denominator"):
        published = out[column].dropna().astype(int)
        assert not published.between(1, 7).any()
        assert (published % 5 == 0).all()
        # a hidden cell is never alone in its group unless every other cell is zero
        hidden = out[column].isna()
        raw = table[column]
        for _, idx in table.groupby("g").groups.items():
            if hidden[idx].sum() == 1:
                assert (raw[idx][~hidden[idx]] == 0).all()
    # numerator hidden whenever its denominator is, and the ratio comes from published counts
    assert out["numerator"][out["denominator"].isna()].isna().all()
    both = out["numerator"].notna() & out["denominator"].fillna(0).gt(0)
    expected = out["numerator"][both].astype(float) / out["denominator"][both].astype(float)
    assert np.allclose(out["ratio"][both].astype(float), expected)
    assert (
        out["suppressed"].tolist() == (out["numerator"].isna() | out["denominator"].isna()).tolist()
    )


# ------------------------------------------------------------- one decision over relations

TOTAL_ABC = [("x", "T", "total"), ("x", "a", "part"), ("x", "b", "part"), ("x", "c", "part")]


def _relations(rows):
    return pd.DataFrame(rows, columns=["relation", "cell", "role"])


@pytest.mark.parametrize(
    ("values", "rows", "expected"),
    [
        # nothing small: nothing withheld
        ({"T": 90, "a": 30, "b": 30, "c": 30}, TOTAL_ABC, ["", "", "", ""]),
        # a lone small part takes the next smallest part with it, marked secondary
        ({"T": 83, "a": 3, "b": 30, "c": 50}, TOTAL_ABC, ["", "primary", "secondary", ""]),
        # next smallest is 9: 3 + 9 is known to about ±4 and 9 is > 7, so 3 would be
        # pinned below 7: a third cell goes too
        ({"T": 120, "a": 3, "b": 9, "c": 108}, TOTAL_ABC,
         ["", "primary", "secondary", "secondary"]),
        # two small parts that add up to a lot: each would be bounded below; hide a third
        ({"T": 114, "a": 6, "b": 6, "c": 102}, TOTAL_ABC,
         ["", "primary", "primary", "secondary"]),
        # a small total and its parts are all small: nothing published can narrow them
        ({"T": 5, "a": 2, "b": 3, "c": 0}, TOTAL_ABC, ["primary", "primary", "primary", ""]),
        # one count in two tables (a = b): hidden in both, as primary in both
        ({"a": 4, "b": 4, "c": 40}, [("eq", "a", "total"), ("eq", "b", "part")],
         ["primary", "primary", ""]),
        # the urgent list: rows = new + persisting, and rows is the urgent flag's count
        ({"flag": 165, "rows": 165, "new": 160, "persisting": 5},
         [("l", "rows", "total"), ("l", "new", "part"), ("l", "persisting", "part"),
          ("f", "flag", "total"), ("f", "rows", "part")],
         ["", "", "secondary", "primary"]),
    ],
)
def test_protect_decides_once_over_relations(values, rows, expected):
    out = protect(pd.Series(values), _relations(rows))
    assert out["suppression"].tolist() == expected
    assert out["suppressed"].tolist() == [bool(e) for e in expected]
    shown = out["count"].dropna().astype(int)
    assert (shown % 5 == 0).all() and not shown.between(1, 7).any()


def test_protect_ties_a_numerator_to_its_denominator():
    values = pd.Series({"num_T": 20, "num_a": 0, "num_b": 20, "den_T": 43, "den_a": 3,
                        "den_b": 40})
    rows = [("n", "num_T", "total"), ("n", "num_a", "part"), ("n", "num_b", "part"),
            ("d", "den_T", "total"), ("d", "den_a", "part"), ("d", "den_b", "part")]
    ties = pd.DataFrame({"cell": ["num_T", "num_a", "num_b"],
                         "follows": ["den_T", "den_a", "den_b"]})
    out = protect(values, _relations(rows), ties=ties)
    assert out["suppression"].to_dict() == {"num_T": "", "num_a": "secondary",
                                            "num_b": "secondary", "den_T": "",
                                            "den_a": "primary", "den_b": "secondary"}


def test_unpublished_cells_bound_others_but_are_never_chosen():
    values = pd.Series({"rejected": 52, "overlap": 3, "bad_date": 50, "unit": 5})
    rows = [("r", "rejected", "total"), ("r", "overlap", "total"), ("r", "bad_date", "part"),
            ("r", "unit", "part")]
    out = protect(values, _relations(rows), unpublished=pd.Series({"overlap": True}))
    assert out.loc["overlap", "suppression"] == ""
    assert out.loc["unit", "suppression"] == "primary"


@pytest.mark.parametrize(("count", "kind", "text"),
                         [(pd.NA, "primary", "≤7"), (pd.NA, "secondary", "[c]"),
                          (160, "", "160")])
def test_format_count_marks_secondary_cells(count, kind, text):
    assert format_count(count, suppression=kind) == text
