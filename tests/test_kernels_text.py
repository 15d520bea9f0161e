"""The clause renderer (``pipeline.kernels.text``) on tiny hand-made tables, exact strings."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from pipeline.kernels import text as K
from pipeline.kernels.text import Clause, Value, Word, Words

LINK, PART = " → ", "; "


def render(clauses: tuple[Clause, ...], slots: dict[str, K.Slot],
           columns: dict[str, Any]) -> list[str]:
    out = K.render(clauses, slots, columns)
    assert out.type == pa.large_string()
    return out.to_pylist()


def flags(*values: int) -> np.ndarray:
    return np.array(values, dtype=bool)


COLUMNS = {
    "a": flags(1, 1, 1, 0, 0),
    "b": flags(1, 0, 1, 1, 0),
    "c": flags(0, 1, 1, 1, 0),
    "x": pd.Series([1.5, np.nan, 262.0, 3.0, 4.0]),
    "d": pd.Series(pd.to_datetime(["2026-10-03 08:00", "2026-01-01 00:00", None,
                                   "2025-02-28 23:59", "2024-01-01 00:00"])),
    "unit": pd.Series(["ng/L", None, "pmol/L", "", "ng/L"], dtype="str"),
}


@pytest.mark.parametrize(("clauses", "slots", "want"), [
    pytest.param(  # link joins after a link, part after anything; nothing before the first
        (Clause("A", when="a", join=LINK, text="A"), Clause("B", when="b", join=LINK, text="B"),
         Clause("C", when="c", join=PART, text="C")),
        {}, ["A → B", "A; C", "A → B; C", "B; C", ""], id="separators"),
    pytest.param(  # a clause missing a value is left out, with its separator
        (Clause("A", when="a", join=LINK, text="A {x}"), Clause("B", when="b", join=LINK,
                                                                text="B")),
        {"x": Value("x", K.number)}, ["A 1.5 → B", "", "A 262 → B", "B", ""], id="missing"),
    pytest.param(  # values and dates between text, in one clause and across clauses
        (Clause("A", when="a", join=LINK, text="A {x} ({d}) end"),
         Clause("C", when="c", join=PART, text="C on {d2}.")),
        {"x": Value("x", K.number), "d": Value("d", K.day), "d2": Value("d", K.day)},
        ["A 1.5 (2026-10-03) end", "C on 2026-01-01.", "", "C on 2025-02-28.", ""],
        id="values"),
    pytest.param(  # [...] is written only when its slots are present
        (Clause("B", when="b", join=LINK, text="B[ x={x}][ unit {unit}] ok"),),
        {"x": Value("x", K.number), "unit": Word("unit", K.string)},
        ["B x=1.5 unit ng/L ok", "", "B x=262 unit pmol/L ok", "B x=3 unit  ok", ""],
        id="optional"),
    pytest.param(  # a missing word leaves the clause out, unless it has a stand-in
        (Clause("A", when="a", join=LINK, text="A {unit}"),
         Clause("B", when="b", join=PART, text="B {unit_or_blank}!")),
        {"unit": Word("unit", K.string), "unit_or_blank": Word("unit", K.string, missing="")},
        ["A ng/L; B ng/L!", "", "A pmol/L; B pmol/L!", "B !", ""], id="word-missing"),
    pytest.param(  # a fixed text, and a slot shown only where its `only` column holds
        (Clause("A", when="a", join=LINK, text="A {fixed}[ ({x})]"),),
        {"fixed": "every day", "x": Value("x", K.number, only="c")},
        ["A every day", "A every day", "A every day (262)", "", ""], id="fixed-only"),
])
def test_rendered_sentences(clauses: tuple[Clause, ...], slots: dict[str, K.Slot],
                            want: list[str]) -> None:
    assert render(clauses, slots, COLUMNS) == want


def test_word_lists_chosen_by_flags() -> None:
    """Items in table order; an item missing a word is left out; an empty list is ''."""
    columns = {
        "on": flags(1, 1, 1, 0),
        "why": pd.DataFrame({"p": flags(1, 0, 1, 1), "q": flags(1, 0, 0, 1),
                             "r": flags(0, 0, 1, 1)}),
        "days": pd.Series([90.0, 90.0, np.nan, 91.0]),
    }
    clauses = (Clause("W", when="on", join=LINK, text="W ({why})"),)
    slots: dict[str, K.Slot] = {
        "why": Words("why", {"p": "pee", "q": "queue", "r": "over {days} days"}),
        "days": Word("days", K.integer),
    }
    assert render(clauses, slots, columns) == ["W (pee, queue)", "W ()", "W (pee)", ""]


def test_codes_to_words() -> None:
    """Lookup: integer codes (missing or negative: no word), e.g. bands."""
    columns = {"on": flags(1, 1, 1, 1, 0), "band": pd.Series([0.0, 2.0, np.nan, -1.0, 7.0])}
    clauses = (Clause("L", when="on", join=LINK, text="band {band}"),)
    slots: dict[str, K.Slot] = {"band": Word("band", K.lookup(("low", "mid", "high")))}
    assert render(clauses, slots, columns) == ["band low", "band high", "", "", ""]
    columns["on"] = flags(1, 1, 1, 1, 1)  # code 7 is now shown: there is no word 7
    with pytest.raises(IndexError):
        render(clauses, slots, columns)


def test_each_distinct_value_is_formatted_once() -> None:
    """On the rows whose clause can show it only (row 4's 99 is never formatted)."""
    seen: list[float] = []

    def counted(values: pd.Series) -> pa.Array:
        seen.extend(values.tolist())
        return K.number(values)

    columns = {"on": flags(1, 1, 1, 1, 0, 1), "x": pd.Series([7.0, 8.0, 7.0, 7.0, 99.0, 8.0])}
    clauses = (Clause("A", when="on", join=LINK, text="{x} and {x_again}"),)
    slots: dict[str, K.Slot] = {"x": Value("x", counted), "x_again": Word("x", counted)}
    assert render(clauses, slots, columns) == ["7 and 7", "8 and 8", "7 and 7", "7 and 7", "",
                                               "8 and 8"]
    assert sorted(seen) == [7.0, 7.0, 8.0, 8.0]  # once per slot and distinct value


def test_rule_ids_follow_fires() -> None:
    clauses = (Clause("R1", when="a", join=LINK, text="one"),
               Clause("R2", when="b", fires="c", join=LINK, text="two"))
    assert K.rule_ids(clauses, COLUMNS).to_pylist() == ["R1", "R1 R2", "R1 R2", "R2", ""]


def test_no_rows_and_no_values() -> None:
    columns = {"a": flags(), "x": pd.Series([], dtype="float64")}
    clauses = (Clause("A", when="a", join=LINK, text="A {x}"),)
    assert render(clauses, {"x": Value("x", K.number)}, columns) == []
    assert render((Clause("A", when="a", join=LINK, text="A"),), {}, columns) == []
    assert K.rule_ids(clauses, columns).to_pylist() == []


@pytest.mark.parametrize("template", ["A [x", "A x]", "A {x", "A x}"])
def test_unbalanced_templates_are_refused(template: str) -> None:
    with pytest.raises(ValueError, match="unmatched"):
        K.parse(template)


def test_a_value_twice_in_one_sentence_needs_two_slot_names() -> None:
    clauses = (Clause("A", when="a", join=LINK, text="{x}"),
               Clause("B", when="b", join=LINK, text="{x}"))
    with pytest.raises(ValueError, match="twice"):
        render(clauses, {"x": Value("x", K.number)}, COLUMNS)
