"""Worklist state month on month: new, persisting, resolved; and finding last month's run."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pandas as pd
import pytest

from pipeline.errors import UserError
from pipeline.outputs.worklist_state import (
    RESOLVED_COLUMNS,
    STATE_COLUMNS,
    STATE_FILE,
    apply_state,
    find_previous_run,
)


def worklist(*rows: tuple[str, str | None]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "patient_id": pd.array([r[0] for r in rows], dtype="string"),
            "practice_id": pd.array([r[1] for r in rows], dtype="string"),
            "reasons": [f"reason {i}" for i in range(len(rows))],
        }
    )


def save_run(folder: Path, as_of: str, rules: str = "nice-ng239", state=None,
             kind: str = "run") -> Path:
    folder.mkdir(parents=True)
    manifest = {"b12screen_version": "0.1.0", "kind": kind, "as_of": as_of,
                "rules": {"name": rules, "sha256": "0" * 64}}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    if state is not None:
        state.to_parquet(folder / STATE_FILE, index=False)
    return folder


def test_first_run_everyone_is_new(tmp_path):
    lists = {"mma": worklist(("p2", "A"), ("p1", "B")), "urgent": worklist()}
    marked, resolved, state = apply_state(lists, as_of_month="2026-03", previous_dir=None)
    assert marked["mma"]["change"].tolist() == ["new", "new"]
    assert marked["mma"]["first_listed"].tolist() == ["2026-03", "2026-03"]
    assert marked["mma"]["patient_id"].tolist() == ["p2", "p1"]  # row order kept
    assert marked["mma"]["reasons"].tolist() == ["reason 0", "reason 1"]  # columns kept
    assert marked["urgent"].empty and {"first_listed", "change"} <= set(marked["urgent"])
    assert tuple(resolved.columns) == RESOLVED_COLUMNS and resolved.empty
    assert tuple(state.columns) == STATE_COLUMNS
    assert state[["patient_id", "list"]].values.tolist() == [["p1", "mma"], ["p2", "mma"]]
    # the input frames are not modified
    assert "change" not in lists["mma"].columns
    # a folder without a state file (an older run) behaves the same
    empty = save_run(tmp_path / "2026-02", "2026-02-28")
    again, _, _ = apply_state(lists, as_of_month="2026-03", previous_dir=empty)
    assert again["mma"]["change"].tolist() == ["new", "new"]


# (list, patient, previous first_listed or None, on the list now?) -> expected
SCENARIOS = [
    # list     patient previously   now    change        first_listed resolved
    ("mma", "keep", "2026-01", True, "persisting", "2026-01", False),
    ("mma", "join", None, True, "new", "2026-03", False),
    ("mma", "left", "2026-02", False, None, None, True),
    ("urgent", "keep", None, True, "new", "2026-03", False),  # lists are tracked separately
    ("urgent", "moved", "2026-02", False, None, None, True),
    ("retest", "moved", None, True, "new", "2026-03", False),
]


def test_second_run_against_previous_state(tmp_path):
    before = [s for s in SCENARIOS if s[2] is not None]
    state = pd.DataFrame(
        {
            "patient_id": [s[1] for s in before],
            "list": [s[0] for s in before],
            "first_listed": [s[2] for s in before],
            "practice_id": ["PR-" + s[1] for s in before],
            "last_listed": "2026-02",
        }
    )
    previous = save_run(tmp_path / "2026-02", "2026-02-28", state=state)
    now = {}
    for name in ("mma", "urgent", "retest"):
        rows = [(s[1], "PR-" + s[1]) for s in SCENARIOS if s[0] == name and s[3]]
        now[name] = worklist(*rows)
    marked, resolved, new_state = apply_state(now, as_of_month="2026-03", previous_dir=previous)

    for name, patient, _, listed, change, first, gone in SCENARIOS:
        if listed:
            row = marked[name].set_index("patient_id").loc[patient]
            assert (row["change"], row["first_listed"]) == (change, first), (name, patient)
        is_resolved = ((resolved["list"] == name) & (resolved["patient_id"] == patient)).any()
        assert is_resolved == gone, (name, patient)
    left = resolved.set_index(["list", "patient_id"]).loc[("mma", "left")]
    assert left.to_dict() == {
        "practice_id": "PR-left",
        "first_listed": "2026-02",
        "last_listed": "2026-02",
    }
    assert list(resolved["list"]) == ["urgent", "mma"]  # standard list order
    kept = new_state.set_index(["list", "patient_id"]).loc[("mma", "keep")]
    assert (kept["first_listed"], kept["last_listed"]) == ("2026-01", "2026-03")
    assert len(new_state) == sum(s[3] for s in SCENARIOS)


def test_state_round_trips_through_parquet(tmp_path):
    lists = {"mma": worklist(("a", "X"), ("b", "X"))}
    _, _, state = apply_state(lists, as_of_month="2026-01", previous_dir=None)
    jan = save_run(tmp_path / "2026-01", "2026-01-31", state=state)
    lists = {"mma": worklist(("b", "X"), ("c", "Y"))}
    marked, resolved, state = apply_state(lists, as_of_month="2026-02", previous_dir=jan)
    feb = save_run(tmp_path / "2026-02", "2026-02-28", state=state)
    lists = {"mma": worklist(("b", "X"), ("c", "Y"))}
    marked, resolved, _ = apply_state(lists, as_of_month="2026-03", previous_dir=feb)
    assert marked["mma"]["first_listed"].tolist() == ["2026-01", "2026-02"]
    assert marked["mma"]["change"].tolist() == ["persisting", "persisting"]
    assert resolved.empty


def test_old_state_without_optional_columns_uses_manifest_month(tmp_path):
    state = pd.DataFrame({"patient_id": ["a"], "list": ["mma"], "first_listed": ["2025-11"]})
    previous = save_run(tmp_path / "old", "2026-02-14", state=state)
    _, resolved, _ = apply_state({"mma": worklist()}, as_of_month="2026-03", previous_dir=previous)
    assert resolved[["patient_id", "last_listed"]].values.tolist() == [["a", "2026-02"]]
    assert pd.isna(resolved["practice_id"].iloc[0])


def test_previous_run_later_than_this_one_is_refused(tmp_path):
    state = pd.DataFrame(
        {
            "patient_id": ["a"],
            "list": ["mma"],
            "first_listed": ["2026-05"],
            "practice_id": ["X"],
            "last_listed": ["2026-05"],
        }
    )
    previous = save_run(tmp_path / "2026-05", "2026-05-31", state=state)
    with pytest.raises(UserError, match="later"):
        apply_state({"mma": worklist()}, as_of_month="2026-03", previous_dir=previous)


@pytest.mark.parametrize("month", ["2026-3", "2026-13", "March", "2026-03-31"])
def test_bad_month_is_a_bug(month):
    with pytest.raises(ValueError, match="YYYY-MM"):
        apply_state({}, as_of_month=month, previous_dir=None)


# sibling folder name -> (as_of, rules name[, kind]), or a broken manifest
SIBLINGS = {
    "2025-12": ("2025-12-31", "nice-ng239"),
    "2026-01": ("2026-01-31", "nice-ng239"),
    "validate-2026-02": ("2026-02-28", "nice-ng239", "validate"),  # not a run
    ".2026-02.tmp-4242": ("2026-02-27", "nice-ng239"),  # a run being written, or killed
    ".2026-02.old-4242": ("2026-02-26", "nice-ng239"),  # a run set aside while replaced
    "2026-02-foreign": ("2026-02-25", "nice-ng239", "foreign"),  # not b12screen's manifest
    "2026-02-bsh": ("2026-02-28", "bsh-2014"),  # other rules: not comparable
    "2026-03": ("2026-03-31", "nice-ng239"),  # the run being written
    "2026-04": ("2026-04-30", "nice-ng239"),  # later: not "previous"
    "broken": None,
    "tmp-interrupted": "no manifest",
}


@pytest.mark.parametrize(
    ("as_of", "rules", "expected"),
    [
        (dt.date(2026, 3, 31), "nice-ng239", "2026-01"),
        (dt.date(2026, 3, 31), "bsh-2014", "2026-02-bsh"),
        (dt.date(2026, 1, 31), "nice-ng239", "2025-12"),
        (dt.date(2025, 12, 31), "nice-ng239", None),
        (dt.date(2026, 3, 31), "other", None),
    ],
)
def test_find_previous_run(tmp_path, as_of, rules, expected):
    for name, spec in SIBLINGS.items():
        folder = tmp_path / name
        if spec is None:
            folder.mkdir()
            (folder / "manifest.json").write_text("{not json")
        elif spec == "no manifest":
            folder.mkdir()
        else:
            as_of_text, rules_name, *kind = spec
            save_run(folder, as_of_text, rules_name, kind=(kind or ["run"])[0])
            if kind == ["foreign"]:
                manifest = json.loads((folder / "manifest.json").read_text())
                del manifest["b12screen_version"], manifest["kind"]
                (folder / "manifest.json").write_text(json.dumps(manifest))
    (tmp_path / "notes.txt").write_text("not a folder")
    found = find_previous_run(tmp_path / "2026-03", as_of, rules)
    assert found == (None if expected is None else tmp_path / expected)


def test_find_previous_run_without_parent(tmp_path):
    assert find_previous_run(tmp_path / "missing" / "2026-03", dt.date(2026, 3, 31), "x") is None
