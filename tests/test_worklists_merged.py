"""Worklists built on parts of the cohort and merged as they are written (``--engine dask
--partitioned``) are the whole cohort's, byte for byte: the parts' sorted lists merged
(``partitioned.ListParts``), marked new or persisting a piece at a time
(``worklist_state.ListState``), and streamed into the CSVs (``tables.write_csv_pieces``)
and the workbook give the files the pandas engine writes from the whole lists. No cluster
here: the cohort is cut into parts in this process (the Dask tests run the real thing)."""

from __future__ import annotations

import functools
import zlib
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.engines import screen
from pipeline.outputs import worklist_state
from pipeline.outputs.partitioned import ListParts, write_lists
from pipeline.outputs.tables import (
    neutralise,
    timed_columns,
    write_csv,
    write_csv_pieces,
    write_parquet,
    write_xlsx,
)
from pipeline.outputs.worklist_state import ListState, apply_state
from pipeline.outputs.worklists import LISTS, build_worklists
from pipeline.outputs.write import write_parquet_groups
from pipeline.rules.classify import Classified
from pipeline.sample_data import generate
from pipeline.state import RunOptions

AS_OF = date(2026, 10, 31)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Classified:
    """A messy month's classified cohort (pandas engine)."""
    extract = generate(tmp_path_factory.mktemp("extract"), n_patients=600, seed=11, messy=True,
                       as_of=AS_OF)
    state = screen(RunOptions(labs=str(extract["labs"]), patients=str(extract["patients"]),
                              medications=str(extract["medications"])))
    return state.classified


def _parts(cohort: Classified, n: int) -> list[Classified]:
    """The cohort cut into ``n`` parts by patient (as the Dask engine's shuffle does: by a
    hash of the id), each with its own results and ``index_row`` pointing into them."""
    patients, results = cohort.patients, cohort.results
    hashed = pd.util.hash_pandas_object(patients["patient_id"], index=False).to_numpy()
    part = (hashed % np.uint64(n)).astype(np.int64)
    row_part = np.full(len(results), -1, dtype=np.int64)
    at = patients["index_row"].to_numpy(dtype=np.int64)
    row_part[at[at >= 0]] = part[at >= 0]
    parts = []
    for k in range(n):
        mine = patients[part == k].reset_index(drop=True)
        kept = row_part == k
        moved = np.cumsum(kept) - 1
        rows = mine["index_row"].to_numpy(dtype=np.int64)
        mine["index_row"] = np.where(rows >= 0, moved[np.maximum(rows, 0)], -1)
        parts.append(Classified(mine, results[kept].reset_index(drop=True), 0))
    return parts


def _merged(cohort: Classified, n: int, folder: Path) -> ListParts:
    """The cohort's lists written as ``n`` sorted parts and opened for merging."""
    timed: dict[str, set[str]] = {name: set() for name in LISTS}
    for k, part in enumerate(_parts(cohort, n)):
        for name, columns in write_lists(part, AS_OF, 7, folder, k).items():
            timed[name] |= columns
    return ListParts(folder, n, timed)


def _whole(cohort: Classified) -> dict[str, pd.DataFrame]:
    return build_worklists(cohort.patients, cohort.results, as_of=AS_OF, mma_addon_max_days=7)


@pytest.mark.parametrize("n", [1, 3, 24])
def test_merged_parts_are_the_whole_lists(cohort: Classified, tmp_path: Path, n: int) -> None:
    """Merged parts give each whole list's rows in its order, its columns and its CSV bytes
    (24 parts of 600 patients: some lists are empty in some parts)."""
    whole = _whole(cohort)
    parts = _merged(cohort, n, tmp_path)
    sizes = {name: [pa.ipc.open_file(p).read_all().num_rows
                    for p in (tmp_path / "worklist-parts" / name).iterdir()] for name in LISTS}
    assert all(len(s) == n for s in sizes.values())
    if n == 24:  # a list empty in some parts only
        assert any(0 in s and max(s) > 0 for s in sizes.values())
    for name, frame in whole.items():
        pieces = list(parts.pieces(name))
        got = pd.concat(pieces, ignore_index=True)
        assert list(got.columns) == list(frame.columns)
        assert got["patient_id"].tolist() == frame["patient_id"].tolist(), name
        assert parts.timed[name] == timed_columns(frame)
        write_csv(frame, tmp_path / "whole.csv", bom=True)
        write_csv_pieces(parts.pieces(name), tmp_path / "merged.csv", timed=parts.timed[name],
                         bom=True)
        assert (tmp_path / "merged.csv").read_bytes() == (tmp_path / "whole.csv").read_bytes()


def test_an_empty_list_merges_to_its_empty_frame(cohort: Classified, tmp_path: Path) -> None:
    """No patient on a list in any part: one empty piece, with the columns and kinds of
    values of the whole cohort's empty list (the workbook sizes its columns by them)."""
    nobody = cohort.patients.assign(retest_due=False)
    empty = Classified(nobody, cohort.results, 0)
    frame = _whole(empty)["retest"]
    assert frame.empty
    pieces = list(_merged(empty, 3, tmp_path).pieces("retest"))
    assert len(pieces) == 1 and pieces[0].empty
    assert list(pieces[0].columns) == list(frame.columns)
    for column in frame.columns:
        kinds = [pd.api.types.is_datetime64_any_dtype(f[column].dtype) for f in (frame, pieces[0])]
        assert kinds[0] == kinds[1], column
    write_xlsx({"retest": frame}, tmp_path / "whole.xlsx", as_of=AS_OF)
    write_xlsx({"retest": lambda: iter(pieces)}, tmp_path / "merged.xlsx", as_of=AS_OF,
               neutralised=True)
    assert (tmp_path / "merged.xlsx").read_bytes() == (tmp_path / "whole.xlsx").read_bytes()


def test_csv_pieces_write_the_whole_frames_bytes(tmp_path: Path) -> None:
    """Any cut of a frame (dates with and without a time of day, categoricals, risky text,
    text needing quotes, missing values, empty pieces) gives ``write_csv``'s bytes."""
    rng = np.random.default_rng(3)
    n = 500
    frame = pd.DataFrame({
        "day": pd.to_datetime("2026-01-01") + pd.to_timedelta(rng.integers(0, 300, n), "D"),
        "stamp": pd.to_datetime("2026-01-01") + pd.to_timedelta(rng.integers(0, 10**6, n), "s"),
        "text": pd.array(rng.choice(["a,b", "=1+1", 'say "hi"', "", None, "µg"], n),
                         dtype="str"),
        "code": pd.Categorical(rng.choice(["x", "y, z", "-1"], n)),
        "count": pd.array(np.where(rng.random(n) < 0.2, None, rng.integers(0, 9, n)),
                          dtype="Int64"),
        "value": np.where(rng.random(n) < 0.1, np.nan, rng.random(n) * 1000),
        "flag": pd.array(rng.choice([True, False, None], n), dtype="boolean"),
    })
    frame.loc[rng.random(n) < 0.1, "stamp"] = pd.NaT
    write_csv(frame, tmp_path / "whole.csv", bom=True)
    assert timed_columns(frame) == {"stamp"}
    cuts = [0, 0, 1, 17, 250, 250, 499, n]
    pieces = [frame.iloc[a:b] for a, b in zip(cuts[:-1], cuts[1:], strict=True)]
    write_csv_pieces(pieces, tmp_path / "pieces.csv", timed={"stamp"}, bom=True)
    assert (tmp_path / "pieces.csv").read_bytes() == (tmp_path / "whole.csv").read_bytes()
    write_csv_pieces([frame.iloc[:0]], tmp_path / "empty.csv", timed=set())
    write_csv(frame.iloc[:0], tmp_path / "whole-empty.csv")
    assert (tmp_path / "empty.csv").read_bytes() == (tmp_path / "whole-empty.csv").read_bytes()


def test_state_marked_in_pieces_is_the_whole_lists(cohort: Classified, tmp_path: Path) -> None:
    """``ListState`` a piece at a time (recorded once, marked again as a workbook's second
    pass does) gives ``apply_state``'s lists, resolved patients and state."""
    whole = _whole(cohort)
    previous = tmp_path / "previous"
    previous.mkdir()
    state_rows = []
    for name, frame in whole.items():  # half of each list was listed before, plus leavers
        ids = frame["patient_id"].iloc[::2].tolist() + [f"gone-{name}-{i}" for i in range(3)]
        state_rows.append(pd.DataFrame({"patient_id": ids, "list": name,
                                        "first_listed": "2026-07", "practice_id": "P1",
                                        "last_listed": "2026-09"}))
    write_parquet(pa.Table.from_pandas(pd.concat(state_rows).astype("string"),
                                       preserve_index=False), previous / "worklist_state.parquet")
    lists, resolved, state = apply_state(whole, as_of_month="2026-10", previous_dir=previous)
    tracker = ListState(as_of_month="2026-10", previous_dir=previous)
    for name, frame in whole.items():
        cuts = [0, 1, len(frame) // 3, len(frame) // 3, len(frame)]
        pieces = [frame.iloc[a:b] for a, b in zip(cuts[:-1], cuts[1:], strict=True)]
        again = [tracker.mark(name, p, record=False) for p in pieces]
        marked = pd.concat([tracker.mark(name, p, record=True) for p in pieces])
        pd.testing.assert_frame_equal(marked, lists[name])
        pd.testing.assert_frame_equal(pd.concat(again), lists[name])
    got_resolved, got_state = tracker.finish()
    pd.testing.assert_frame_equal(got_resolved, resolved)
    pd.testing.assert_frame_equal(got_state, state)
    assert len(resolved) >= 15


@pytest.mark.parametrize("rows", [64, 1 << 20])
def test_spilled_state_is_the_whole_state_file(cohort: Classified, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch,
                                               rows: int) -> None:
    """Listed patients spilled in sorted runs (small runs here, and a patient listed twice)
    and written a row group at a time give the whole lists' worklist_state.parquet, byte
    for byte, and the same resolved patients; the runs are gone afterwards."""
    monkeypatch.setattr(worklist_state, "SPILL_ROWS", 40)
    monkeypatch.setattr(worklist_state, "SPILL_BLOCK_ROWS", 8)
    whole = _whole(cohort)
    twice = whole["mma"]["patient_id"].iloc[-1]
    whole["mma"] = pd.concat([whole["mma"].iloc[:5], whole["mma"][lambda f: f["patient_id"]
                                                                   == twice],
                              whole["mma"].iloc[5:]], ignore_index=True)
    whole["retest"] = whole["retest"].iloc[:0]
    previous = tmp_path / "previous"
    previous.mkdir()
    write_parquet(pa.Table.from_pandas(pd.DataFrame(
        {"patient_id": [*whole["urgent"]["patient_id"].iloc[::3], "gone-1", "gone-2"],
         "list": "urgent", "first_listed": "2026-08", "practice_id": "P1",
         "last_listed": "2026-09"}).astype("string"), preserve_index=False),
        previous / "worklist_state.parquet")
    _, resolved, state = apply_state(whole, as_of_month="2026-10", previous_dir=previous)
    pq.write_table(pa.Table.from_pandas(state, preserve_index=False), tmp_path / "whole.parquet",
                   row_group_size=rows, compression="zstd")
    tracker = ListState(as_of_month="2026-10", previous_dir=previous, spill=tmp_path / "runs")
    for name, frame in whole.items():
        for start in range(0, max(len(frame), 1), 33):
            tracker.mark(name, frame.iloc[start:start + 33], record=True)
    pd.testing.assert_frame_equal(tracker.resolved(), resolved)
    schema, groups = tracker.finish_groups(rows)
    with pq.ParquetWriter(tmp_path / "spilled.parquet", schema, compression="zstd") as writer:
        for group in groups:
            writer.write_table(group, row_group_size=rows)
    data = [(tmp_path / f).read_bytes() for f in ("whole.parquet", "spilled.parquet")]
    assert data[0] == data[1] and len(state) > 100
    assert not list((tmp_path / "runs").iterdir())


def test_empty_state_written_in_groups(tmp_path: Path) -> None:
    """No one listed: the state file written a row group at a time is the whole one's."""
    lists = {name: pd.DataFrame({"patient_id": pd.Series(dtype="string"),
                                 "practice_id": pd.Series(dtype="string")}) for name in LISTS}
    _, _, state = apply_state(lists, as_of_month="2026-10", previous_dir=None)
    write_parquet(pa.Table.from_pandas(state, preserve_index=False), tmp_path / "whole.parquet")
    tracker = ListState(as_of_month="2026-10", previous_dir=None, spill=tmp_path / "runs")
    for name, frame in lists.items():
        tracker.mark(name, frame, record=True)
    schema, groups = tracker.finish_groups()
    write_parquet_groups(groups, schema, tmp_path / "groups.parquet")
    assert ((tmp_path / "groups.parquet").read_bytes()
            == (tmp_path / "whole.parquet").read_bytes())


def test_merged_workbook_is_the_whole_lists(cohort: Classified, tmp_path: Path) -> None:
    """The merged lists streamed into the workbook (neutralised per piece) are the whole
    lists' workbook, byte for byte."""
    whole = {name: neutralise(frame) for name, frame in _whole(cohort).items()}
    parts = _merged(cohort, 4, tmp_path)

    def source(name: str):
        return (neutralise(piece) for piece in parts.pieces(name))

    write_xlsx(whole, tmp_path / "whole.xlsx", as_of=AS_OF, neutralised=True)
    write_xlsx({name: functools.partial(source, name) for name in whole},
               tmp_path / "merged.xlsx", as_of=AS_OF, neutralised=True)
    data = [(tmp_path / f).read_bytes() for f in ("whole.xlsx", "merged.xlsx")]
    assert zlib.crc32(data[0]) == zlib.crc32(data[1]) and data[0] == data[1]
