"""The analyst tables as Parquet datasets written by the workers (``--engine dask
--partitioned``), the worklists as sorted parts merged as they are written, and what the
process that writes the rest keeps of each partition.

Each partition of the cohort writes its own ``patients/part-NNNNN.parquet`` and
``results/part-NNNNN.parquet`` (the partition's number, zero-padded, so the names are the
same from run to run), with the schema and key-value metadata of the single files; within a
part, patients are in id order and results in input order, as in the single files. Reading
either folder with pandas, DuckDB or Spark gives the rows of the single file.

Each partition also builds its own worklists with ``worklists.build_worklists``, the code
the pandas engine runs on the whole cohort, and writes each list, sorted, as an Arrow file
of small blocks (``worklist-parts/LIST/part-NNNNN.arrow``) in the staging folder, which
never becomes part of the run folder. A list's order depends on each row alone (practice,
urgency, oldest result, patient id: ``worklists.ORDER_KEYS``) and ids are unique, so
``ListParts.pieces`` merges the sorted parts block by block (``kernels.arrow.merge_sorted``)
into the whole list's order. The write step streams those pieces into the CSVs and the
workbook, so the writing process holds a few blocks of each part, never a list.

No patient row comes back to the writing process: each partition returns the counts the
shareable outputs need (``published.CohortFigures``, the report's histograms), which add up
over partitions, and what the CSV writer must know of its lists' whole columns (which date
columns have a time of day).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pandas as pd
import pyarrow as pa

from pipeline.kernels.arrow import merge_sorted
from pipeline.outputs.published import CohortFigures
from pipeline.outputs.report import Histograms, classified_histograms, combine_histograms
from pipeline.outputs.tables import (
    PATIENTS_SCHEMA,
    RESULTS_SCHEMA,
    results_file,
    timed_columns,
    write_frame,
)
from pipeline.outputs.worklists import (
    LISTS,
    NOT_URGENT,
    ORDER_KEYS,
    RESULT_AT,
    build_worklists,
)
from pipeline.rules.classify import Classified

__all__ = ["LIST_PARTS", "TABLES", "ListParts", "PartOutputs", "combine", "part_name",
           "prepare_folders", "write_lists", "write_part"]

#: The partitioned tables: folder name -> schema.
TABLES = {"patients": PATIENTS_SCHEMA, "results": RESULTS_SCHEMA}
#: The staging folder's folder of sorted worklist parts (left behind, never moved into the
#: run folder: the staging folder is removed once the run folder is written).
LIST_PARTS = "worklist-parts"
#: Rows per block of a list's part file: the unit the merge reads, so at least what it
#: holds of each part (small: a large extract has many partitions).
LIST_BLOCK_ROWS = 1024
#: Rows the merge of a list holds in all, each part its share (but at least a block, so
#: at most this plus two blocks per part), and so about the rows of each piece it gives:
#: memory follows this and the number of parts, never the list. Smaller pieces cost the
#: workbook's writer time; larger ones, memory.
MERGE_ROWS = 1 << 16
#: Arrow files of the list parts: compressed (read once per pass, written once).
_IPC = pa.ipc.IpcWriteOptions(compression="lz4")


def part_name(index: int) -> str:
    """``part-00007.parquet``: the partition's number, so that names sort in order."""
    return f"part-{index:05d}.parquet"


def prepare_folders(folder: Path) -> None:
    """The tables' folders inside ``folder`` (owner-only: the rows are patient-level)."""
    for name in TABLES:
        (folder / name).mkdir(mode=0o700, exist_ok=True)


def write_part(classified: Classified, meta: dict[str, str], folder: Path, index: int) -> None:
    """One partition's patients and results as part ``index`` of each table (on a worker)."""
    write_frame(results_file(classified.results), RESULTS_SCHEMA, meta,
                folder / "results" / part_name(index))
    write_frame(classified.patients, PATIENTS_SCHEMA, meta,
                folder / "patients" / part_name(index))


def _list_part(folder: Path, name: str, index: int) -> Path:
    return folder / LIST_PARTS / name / part_name(index).replace(".parquet", ".arrow")


def write_lists(classified: Classified, as_of: date, mma_addon_max_days: int, folder: Path,
                index: int) -> dict[str, set[str]]:
    """One partition's worklists, each sorted and written as part ``index`` of its list (on
    a worker), with the columns only the order needs; returns each list's date columns
    with a time of day (the CSV writes those with their time, if any part has one)."""
    lists = build_worklists(classified.patients, classified.results, as_of=as_of,
                            mma_addon_max_days=mma_addon_max_days, order_keys=True)
    timed = {}
    for name, frame in lists.items():  # five lists
        table = pa.Table.from_pandas(frame, preserve_index=False)
        path = _list_part(folder, name, index)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with pa.OSFile(str(path), "wb") as sink, \
                pa.ipc.new_file(sink, table.schema, options=_IPC) as writer:
            writer.write_table(table, max_chunksize=LIST_BLOCK_ROWS)
        timed[name] = timed_columns(frame)
    return timed


@dataclass
class ListParts:
    """The worklists' sorted parts written by the partitions (``write_lists``): ``parts``
    files per list in ``folder``, and each list's date columns with a time of day."""

    folder: Path
    parts: int
    timed: dict[str, set[str]]

    def pieces(self, name: str) -> Iterator[pd.DataFrame]:
        """List ``name`` in its order, as frames of at most about ``MERGE_ROWS`` rows (at
        least one, empty if the list is): the parts' blocks merged, without the order's
        own columns. Each call reads the parts afresh (a workbook reads a list twice)."""
        with contextlib.ExitStack() as opened:
            # read, not memory-mapped: a mapped file's pages stay in the process's memory
            # until it is closed, and three passes over a list would hold its parts whole
            files = [pa.ipc.open_file(opened.enter_context(
                         pa.OSFile(str(_list_part(self.folder, name, i)))))
                     for i in range(self.parts)]
            schema = pa.unify_schemas([f.schema for f in files], promote_options="permissive")
            rows = max(LIST_BLOCK_ROWS, MERGE_ROWS // max(self.parts, 1))

            def blocks(file: pa.ipc.RecordBatchFileReader) -> Iterator[pa.Table]:
                for k in range(file.num_record_batches):  # blocks, not rows
                    yield pa.Table.from_batches([file.get_batch(k)]).cast(schema)

            given = False
            for table in merge_sorted([blocks(f) for f in files], ORDER_KEYS, rows):
                given = True
                yield _frame(table)
            if not given:
                yield _frame(schema.empty_table())


def _frame(table: pa.Table) -> pd.DataFrame:
    """A merged block as the list's frame (its pandas types restored, as written)."""
    return table.drop_columns([NOT_URGENT, RESULT_AT]).to_pandas()


@dataclass
class PartOutputs:
    """What a partition gives the writing process: its counts, its results after the
    as-of date, and which of its lists' date columns have a time of day."""

    figures: CohortFigures
    histograms: Histograms
    rows_after_as_of: int
    timed: dict[str, set[str]]


def part_outputs(classified: Classified, as_of: date,
                 rules_cutoffs: Mapping[str, Sequence[float]],
                 timed: dict[str, set[str]]) -> PartOutputs:
    """A partition's figures and histograms (on a worker)."""
    patients, results = classified.patients, classified.results
    histograms = classified_histograms(results, rules_cutoffs, additive=True)
    return PartOutputs(CohortFigures.of(patients, as_of), histograms,
                       classified.rows_after_as_of, timed)


def combine(parts: Sequence[PartOutputs], folder: Path) -> tuple[PartOutputs, ListParts]:
    """The partitions' outputs as one cohort's (counts added up), and their worklist parts
    in ``folder``."""
    timed = {name: set().union(*(p.timed.get(name, set()) for p in parts)) for name in LISTS}
    return (PartOutputs(CohortFigures.combine([p.figures for p in parts]),
                        combine_histograms([p.histograms for p in parts]),
                        sum(p.rows_after_as_of for p in parts), timed),
            ListParts(folder, len(parts), timed))
