"""Month-on-month worklist state: who is new, who is still listed, who has left.

A lab manager works a list once and then wants to see what changed, so each run compares
its worklists with the previous run's ``worklist_state.parquet`` (one row per patient per
list: when they were first listed, and when last) and marks every row ``new`` or
``persisting``. Patients on a previous list and not on it now are returned as *resolved*.

``first_listed`` is the start of the patient's current spell on that list: a patient who
leaves a list and later returns is ``new`` again, because that is a new piece of work.
``worklist_state.parquet`` holds patient ids: write it with the other patient-level files
(owner-only permissions), never with the shareable outputs.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

import pandas as pd

from pipeline.errors import UserError

__all__ = [
    "LIST_NAMES",
    "RESOLVED_COLUMNS",
    "STATE_COLUMNS",
    "STATE_FILE",
    "apply_state",
    "find_previous_run",
    "read_state",
]

LIST_NAMES = ("urgent", "mma", "supplementation", "metformin_monitoring", "retest")
STATE_FILE = "worklist_state.parquet"
#: Columns of worklist_state.parquet. The first three are the state proper; practice_id and
#: last_listed let the next run say where a resolved patient was and when they were last seen.
STATE_COLUMNS = ("patient_id", "list", "first_listed", "practice_id", "last_listed")
RESOLVED_COLUMNS = ("patient_id", "practice_id", "list", "first_listed", "last_listed")

_MONTH = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")


def _empty_state() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="string") for c in STATE_COLUMNS})


def _previous_month(previous_dir: Path) -> str | None:
    """The previous run's as-of month from its manifest, for state files without last_listed."""
    try:
        manifest = json.loads((previous_dir / "manifest.json").read_text(encoding="utf-8"))
        return f"{dt.date.fromisoformat(str(manifest['as_of'])[:10]):%Y-%m}"
    except (OSError, ValueError, KeyError, TypeError):
        return None


def read_state(previous_dir: Path | None) -> pd.DataFrame:
    """The previous run's worklist state (empty when there is no previous run or no state)."""
    if previous_dir is None:
        return _empty_state()
    path = Path(previous_dir) / STATE_FILE
    if not path.is_file():
        return _empty_state()
    try:
        state = pd.read_parquet(path)
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read previous worklist state {path}: {exc}") from exc
    missing = [c for c in ("patient_id", "list", "first_listed") if c not in state.columns]
    if missing:
        raise UserError(f"previous worklist state {path} lacks column(s): {', '.join(missing)}")
    if "practice_id" not in state.columns:
        state["practice_id"] = pd.NA
    if "last_listed" not in state.columns:
        state["last_listed"] = _previous_month(Path(previous_dir))
    state = state[list(STATE_COLUMNS)].astype("string")
    return state.drop_duplicates(["list", "patient_id"], keep="first").reset_index(drop=True)


def apply_state(
    worklists: dict[str, pd.DataFrame],
    *,
    as_of_month: str,
    previous_dir: Path | None,
) -> tuple[dict[str, pd.DataFrame], pd.DataFrame, pd.DataFrame]:
    """Mark each worklist row ``new``/``persisting`` against the previous run's state.

    Returns (worklists with ``first_listed`` and ``change`` added, rows kept in their order;
    resolved patients with ``RESOLVED_COLUMNS``; the new state with ``STATE_COLUMNS``, to be
    saved as ``worklist_state.parquet``). Without a previous state everyone is ``new``.
    """
    if not _MONTH.match(as_of_month):
        raise ValueError(f"as_of_month must be YYYY-MM, got {as_of_month!r}")
    previous = read_state(previous_dir)
    later = previous["last_listed"].dropna()
    if len(later) and later.max() > as_of_month:
        raise UserError(
            f"previous run {previous_dir} is later ({later.max()}) than this run "
            f"({as_of_month}); pass an earlier run with --previous"
        )

    marked: dict[str, pd.DataFrame] = {}
    current = []
    for name, worklist in worklists.items():  # five lists; the work per list is vectorised
        missing = [c for c in ("patient_id", "practice_id") if c not in worklist.columns]
        if missing:
            raise ValueError(f"worklist {name!r} lacks column(s): {', '.join(missing)}")
        before = previous[previous["list"] == name].set_index("patient_id")["first_listed"]
        ids = worklist["patient_id"].astype("string")
        first = ids.map(before).astype("string")
        out = worklist.copy()
        out["first_listed"] = first.fillna(as_of_month).astype("string")
        out["change"] = first.notna().map({True: "persisting", False: "new"}).astype("string")
        marked[name] = out
        current.append(
            pd.DataFrame(
                {
                    "patient_id": ids,
                    "list": name,
                    "first_listed": out["first_listed"],
                    "practice_id": worklist["practice_id"].astype("string"),
                    "last_listed": as_of_month,
                }
            )
        )

    state = pd.concat([_empty_state(), *current], ignore_index=True).astype("string")
    state = state.drop_duplicates(["list", "patient_id"], keep="first")
    state = _sorted(state, ["list", "patient_id"])[list(STATE_COLUMNS)]

    gone = previous.merge(
        state[["list", "patient_id"]], on=["list", "patient_id"], how="left", indicator=True
    )
    resolved = gone[gone["_merge"] == "left_only"][list(RESOLVED_COLUMNS)]
    resolved = _sorted(resolved, ["list", "practice_id", "patient_id"])
    return marked, resolved, state


def _sorted(frame: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Lists in their standard order, then by the other keys: same input, same bytes."""
    rank = frame["list"].map({n: i for i, n in enumerate(LIST_NAMES)}).astype("Int64")
    keyed = frame.assign(_rank=rank.fillna(len(LIST_NAMES)))
    keyed = keyed.sort_values(["_rank", *by], kind="mergesort", na_position="last")
    return keyed.drop(columns="_rank").reset_index(drop=True)


def find_previous_run(out_dir: Path, as_of: dt.date, rules_name: str) -> Path | None:
    """The latest run folder beside ``out_dir`` with an earlier as-of date and the same rules.

    Folders without a readable manifest (say, an interrupted run) are not runs and are skipped.
    """
    out_dir = Path(out_dir)
    parent = out_dir.parent
    if not parent.is_dir():
        return None
    best: tuple[dt.date, str] | None = None
    found: Path | None = None
    for folder in sorted(parent.iterdir()):  # sibling run folders, one per month
        if not folder.is_dir() or folder.resolve() == out_dir.resolve():
            continue
        try:
            manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
            run_as_of = dt.date.fromisoformat(str(manifest["as_of"])[:10])
            rules = manifest.get("rules") or {}
            name = rules.get("name") if isinstance(rules, dict) else rules
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue
        if run_as_of >= as_of or name != rules_name:
            continue
        if best is None or (run_as_of, folder.name) > best:
            best, found = (run_as_of, folder.name), folder
    return found
