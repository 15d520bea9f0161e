"""The analyst tables as Parquet datasets written by the workers (``--engine dask
--partitioned``), and what the process that writes the rest keeps of each partition.

Each partition of the cohort writes its own ``patients/part-NNNNN.parquet`` and
``results/part-NNNNN.parquet`` (the partition's number, zero-padded, so the names are the
same from run to run), with the schema and key-value metadata of the single files; within a
part, patients are in id order and results in input order, as in the single files. Reading
either folder with pandas, DuckDB or Spark gives the rows of the single file.

No patient row comes back to the writing process except the patients on a worklist (and
the index results the lists show): each partition returns the counts the shareable outputs
need (``published.CohortFigures``, the report's histograms), which add up over partitions,
and its listed patients, whose lists ``worklists.build_worklists`` sorts as it does for a
whole cohort.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.outputs.published import CohortFigures
from pipeline.outputs.report import Histograms, combine_histograms, histogram_counts
from pipeline.outputs.tables import (
    PATIENTS_SCHEMA,
    RESULTS_SCHEMA,
    results_file,
    write_frame,
)
from pipeline.outputs.worklists import LISTS, OPTIONAL_COLUMNS, WORKLIST_COLUMNS
from pipeline.rules.classify import Classified

__all__ = ["TABLES", "PartOutputs", "combine", "part_name", "prepare_folders", "write_part"]

#: The partitioned tables: folder name -> schema.
TABLES = {"patients": PATIENTS_SCHEMA, "results": RESULTS_SCHEMA}
#: Results columns a worklist shows of a patient's index test (``worklists._reported``).
_REPORTED = ("result_text", "source_unit", "specimen_id", "site_id")
#: Patients columns the worklists are built from (``worklists.build_worklists``); the
#: listed patients travel with these only.
_LISTED = frozenset({*(flag for flag, _ in LISTS.values()), *WORKLIST_COLUMNS,
                     *OPTIONAL_COLUMNS, "index_collected_at", "last_b12_test_at",
                     "paediatric", "index_row", "as_of"})


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


@dataclass
class PartOutputs:
    """What a partition gives the writing process: its counts, and its listed patients
    (with their index results, ``index_row`` pointing into those)."""

    figures: CohortFigures
    histograms: Histograms
    listed: Classified


def part_outputs(classified: Classified, as_of: date,
                 rules_cutoffs: Mapping[str, Sequence[float]]) -> PartOutputs:
    """A partition's figures, histograms and listed patients (on a worker)."""
    patients, results = classified.patients, classified.results
    classified_rows = ~results["after_as_of"].to_numpy(dtype=bool)
    histograms = histogram_counts(results.loc[classified_rows, ["analyte", "value"]],
                                  rules_cutoffs, additive=True)
    on_a_list = np.logical_or.reduce(
        [patients[flag].fillna(False).to_numpy(dtype=bool) for flag, _ in LISTS.values()])
    listed = patients.loc[on_a_list, [c for c in patients.columns if c in _LISTED]]
    listed = listed.reset_index(drop=True)
    rows = listed["index_row"].to_numpy(dtype=np.int64)
    shown = [c for c in _REPORTED if c in results.columns]
    index_results = results[shown].take(rows[rows >= 0]).reset_index(drop=True)
    moved = np.full(len(rows), -1, dtype=np.int64)
    moved[rows >= 0] = np.arange(int((rows >= 0).sum()))
    listed["index_row"] = moved
    return PartOutputs(CohortFigures.of(patients, as_of), histograms,
                       Classified(listed, index_results, classified.rows_after_as_of))


def combine(parts: Sequence[PartOutputs]) -> PartOutputs:
    """The partitions' outputs as one cohort's: counts added up, listed patients one
    partition after another (``build_worklists`` puts them in id order itself), with
    ``index_row`` pointing into their joined results. Not sorting here saves a copy of
    every listed patient's row, the writing process's largest frame."""
    offsets = np.cumsum([0] + [len(p.listed.results) for p in parts[:-1]])
    frames = []
    for part, offset in zip(parts, offsets, strict=True):  # one per partition
        rows = part.listed.patients["index_row"].to_numpy(dtype=np.int64)
        frames.append(part.listed.patients.assign(
            index_row=np.where(rows >= 0, rows + offset, -1)))
    patients = pd.concat(frames, ignore_index=True)
    del frames
    results = pd.concat([p.listed.results for p in parts], ignore_index=True)
    listed = Classified(patients, results, sum(p.listed.rows_after_as_of for p in parts))
    return PartOutputs(CohortFigures.combine([p.figures for p in parts]),
                       combine_histograms([p.histograms for p in parts]), listed)
