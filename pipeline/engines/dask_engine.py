"""The Dask engine (``--engine dask``): the same validation and rules, run per patient
partition on a cluster.

When to use it
    The pandas engine is the default and the fastest choice on one machine. Use ``--engine
    dask`` when a Dask cluster is already where your data work runs and the extract is
    larger than one machine comfortably holds: the workers read, validate and classify their
    share of the rows, and only the results come back to this process, which writes the
    outputs (so the accepted results and the patients table must fit here; the raw extract
    need not; with ``--partitioned`` neither must: this process then holds counts, last
    month's worklist state and the listed patients' ids). On a single
    small machine it is slower than pandas: moving every row between
    workers costs more than the rules.

How it works
    1. **Read.** Each input is cut into pieces -- one per CSV file, runs of row groups of
       about ``ROWS_PER_PARTITION`` rows per Parquet file -- and each piece is read on a
       worker by :func:`pipeline.ingest.read.read_file`, so source files and row numbers are those
       the pandas engine reports.
    2. **Shuffle.** ``dask.dataframe`` assembles the pieces and shuffles them by a hash of
       the cleaned patient id (``set_index`` on that partition number, the same for labs,
       patients and medications), so one partition holds every row of its patients: exact
       duplicates and conflicting patient rows are always found, whichever files they are in.
    3. **Validate.** Each labs partition is put back in input order (file, then row) and
       validated by :func:`pipeline.ingest.validate.validate_labs` itself; the counts, the latest
       collection date and the test-code tally come back, so the reject-rate limit and the
       as-of date are decided over the whole extract, exactly as in the pandas engine. Every
       partition's validated rows wait on the workers meanwhile; so with ``--as-of`` given
       (nothing to decide first) each partition is validated by its classification task
       instead, and the reject-rate limit is checked once every partition is classified
       (over the limit: the same message and exit, and nothing is written). Large extracts
       on small workers need that: 20M rows did not fit 4 workers of 1.5 GiB otherwise.
    4. **Classify.** Each partition's patients and medications are validated, and the
       partition's cohort is classified by :func:`pipeline.rules.classify.classify` -- there is no
       second implementation of the rules. Patients come back in cohort order (sorted ids),
       results and rejected rows in input order, so ``patients.parquet`` is byte for byte the
       pandas engine's.

    Timings: ``read`` covers step 1, ``validate`` steps 2-3 and ``classify`` step 4 (which
    includes validating the patients and medications, as it needs the as-of date; with
    ``--as-of``, the labs' validation too).

Partitioned tables (``--partitioned``)
    Without it the partitions' tables come back to this process, which writes
    ``patients.parquet`` and ``results.parquet``. With it, step 4 also writes each
    partition's rows on its worker as ``patients/part-NNNNN.parquet`` and
    ``results/part-NNNNN.parquet`` (:mod:`pipeline.outputs.partitioned`) into a staging
    folder beside the run folder, which the write step moves into the run folder; each
    partition also builds and sorts its own worklists and writes them as sorted parts into
    the staging folder. What comes back is each partition's counts; the write step merges
    the lists' parts block by block as it writes the CSVs and the workbook, so this
    process's memory follows neither the cohort nor the worklists. The workers must be able
    to write where ``--out`` points (a shared file system, as for the inputs).

Pointing it at a cluster
    Without ``--scheduler`` a ``distributed.LocalCluster`` is started for the run and closed
    afterwards. To use an existing cluster give its scheduler address::

        dask scheduler                      # on the scheduler host (port 8786)
        dask worker tcp://HOST:8786         # on each worker host
        b12screen run labs.parquet --engine dask --scheduler tcp://HOST:8786

    Workers must have the same b12screen version installed (``pip install b12screen[dask]``)
    and see the input files at the same paths (a shared file system): they read them. The
    client only connects to the scheduler; it never shuts down a cluster it did not start.
    Patient-level rows travel between workers, so use a cluster inside the same trusted
    environment as the extract. A run never waits for ever on a cluster that has stopped
    working for it: once no task has run on any worker for ``STALL_SECONDS`` (five minutes)
    while the run waits, it stops with a one-line error (exit 1); a slow task is running,
    and is waited for however long it takes.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path
from typing import Any

import dask
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pyarrow as pa
from distributed import Client, Future, LocalCluster, as_completed

from pipeline.config import ExtractFormat, InputSpec, RulesProfile
from pipeline.engines.steps import (
    add_input_warnings,
    check_reject_rate,
    default_as_of,
    new_state,
)
from pipeline.errors import UserError
from pipeline.ingest.read import (
    MALFORMED_COLUMNS,
    SOURCE_FILE,
    SOURCE_ROW,
    FileInfo,
    FileTable,
    Layout,
    Piece,
    RawInput,
    canonical_view,
    check_not_empty,
    column_notes,
    describe_file,
    input_notes,
    parquet_files,
    plain_text,
    plan_pieces,
    read_file,
    unused_columns,
)
from pipeline.ingest.validate import (
    CodeTally,
    Validated,
    small_count,
    today_date,
    unmapped_warning,
    validate_labs,
    validate_medications,
    validate_patients,
)
from pipeline.kernels.arrow import text_order
from pipeline.outputs import partitioned
from pipeline.outputs.run_folder import check_out, remove_staging, staging_folder
from pipeline.outputs.write import (
    default_out,
    mma_addon_max_days,
    report_cutoffs,
    run_inputs,
    table_metadata,
)
from pipeline.rules.classify import (
    Classified,
    classify,
    cohort_ids,
    cohort_positions,
    joined_parts,
    row_type,
    with_lab_practice,
)
from pipeline.state import Progress, RunOptions, RunState, StagedTables

__all__ = ["screen_dask"]

#: Rows per read piece, and lab rows per partition; small extracts get one partition per
#: worker thread.
ROWS_PER_PARTITION = 1_000_000
#: Workers with a memory limit get fewer rows per piece and partition: about this many bytes
#: of a worker's limit per lab row (a partition's rows as text, its shuffle, validation and
#: rules at their peak), but never fewer than ``MIN_ROWS_PER_PARTITION`` rows.
BYTES_PER_ROW = 4_000
MIN_ROWS_PER_PARTITION = 100_000
#: The default cluster: worker threads in this process (worker processes would each take
#: seconds to start, and copy their share). No dashboard; the scheduler's health endpoint
#: listens on a free local port (not 8787, which may be taken); its logs stay quiet, as the
#: run's own messages are the user's.
LOCAL_CLUSTER: dict[str, Any] = {"processes": False, "dashboard_address": "127.0.0.1:0",
                                 "scheduler_kwargs": {"dashboard": False},
                                 "silence_logs": logging.CRITICAL}
#: A run waiting on the cluster checks this often whether any task is processing on any
#: worker, and stops with an error once none has for ``STALL_SECONDS`` and none of the tasks
#: it waits for has finished meanwhile (a cluster left without workers, or one that lost
#: track of a task, would otherwise keep the run waiting for ever). Slow tasks are
#: processing: a task that takes an hour never trips it.
CHECK_SECONDS = 5.0
STALL_SECONDS = 300.0
POLL_SECONDS = 0.05  # how often the client looks for finished tasks between checks
_PART = "_b12screen_part"  # the partition of the row's patient: the shuffle key
_FILE = "_b12screen_file"  # the position of the row's file in its input, for input order

# Keep pandas' own "str" dtype; dask would otherwise convert strings to "string[pyarrow]"
# (missing values pd.NA instead of NaN), which changes comparisons inside the rules.
_DASK_CONFIG = {"dataframe.convert-string": False,
                "distributed.admin.large-graph-warning-threshold": "10GB"}


@contextmanager
def _client(scheduler: str | None) -> Iterator[Client]:
    """A client to ``scheduler``, or to a LocalCluster started (and closed) for this run."""
    if scheduler:
        with Client(scheduler) as client:
            yield client
        return
    with LocalCluster(**LOCAL_CLUSTER) as cluster, Client(cluster) as client:
        yield client


# ------------------------------------------------------------------ on the workers


def _read_piece(piece: Piece, spec: InputSpec) -> FileTable | UserError:
    """A piece read on a worker; an input problem is returned, not raised, so the client
    stops with its one-line message (a failed task would be logged with a traceback)."""
    try:
        return read_file(Path(piece.path), spec, piece.row_groups, piece.first_row)
    except UserError as exc:
        return exc


def _describe(table: FileTable | UserError) -> tuple[list[str], FileInfo, list[str],
                                                     list[tuple[str, str]], int] | UserError:
    """What the client needs of a piece: its columns, file facts, notes and rows."""
    if isinstance(table, UserError):
        return table
    return (table.table.column_names, table.info, table.notes, table.integer_ids,
            table.table.num_rows)


def _keyed(table: FileTable, layout: Layout, file_index: int, spec: InputSpec,
           n_parts: int) -> pd.DataFrame:
    """A piece as the input's columns, each row with its file's position and the partition
    of its (cleaned) patient id."""
    frame = plain_text(layout.conform(table.table)).to_pandas(split_blocks=True)
    ids_only = replace(spec, columns={"patient_id": spec.columns["patient_id"]},
                       values={k: v for k, v in spec.values.items() if k == "patient_id"})
    ids = canonical_view(RawInput(spec.kind, frame, [], layout.original), ids_only)
    hashed = pd.util.hash_pandas_object(ids["patient_id"], index=False).to_numpy()
    return frame.assign(**{_FILE: np.int64(file_index),
                           _PART: (hashed % np.uint64(n_parts)).astype(np.int64)})


def _in_input_order(frame: pd.DataFrame, kind: str, original: list[str],
                    parquet: frozenset[str] = frozenset()) -> RawInput:
    """A shuffled partition back in input order (file, then source row)."""
    frame = frame.reset_index(drop=True)
    order = np.lexsort((frame[SOURCE_ROW].to_numpy(), frame[_FILE].to_numpy()))
    frame = frame.take(order).reset_index(drop=True)
    frame[SOURCE_FILE] = frame[SOURCE_FILE].astype("str")
    return RawInput(kind, frame, [], original, parquet_files=parquet)


def _validate_labs(frame: pd.DataFrame, original: list[str], fmt: ExtractFormat,
                   rules: RulesProfile, today: date,
                   parquet: frozenset[str] = frozenset()) -> Validated:
    return validate_labs(_in_input_order(frame, "labs", original, parquet), fmt, rules, today)


def _slim(v: Validated) -> Validated:
    """A partition's validated input without its accepted rows (they live on in the
    classified tables) or its ids: what the client needs back."""
    return replace(v, accepted=v.accepted.iloc[:0], ids=v.ids.iloc[:0], id_codes=None,
                   id_values=None, id_practice=None)


def _labs_summary(v: Validated) -> Validated:
    """A labs partition's counts, latest date and code tally, for the reject-rate check and
    the as-of date before classification (the rows stay on the workers)."""
    return replace(_slim(v), rejected=v.rejected.iloc[:0])


@dataclass
class _Part:
    """What comes back of one partition: its tables (or, partitioned, what the writing
    process needs of them), and its inputs' rejected rows and counts (the accepted rows
    live on in ``classified``)."""

    classified: Classified | None
    inputs: dict[str, Validated]
    outputs: partitioned.PartOutputs | None = None


@dataclass(frozen=True)
class _Written:
    """Where and how a partition writes its tables (``--partitioned``)."""

    folder: Path
    meta: dict[str, str]
    cutoffs: dict[str, list[float]]
    mma_addon_max_days: int


def _screen_and_write(index: int, written: _Written, labs: Validated,
                      patients: pd.DataFrame | None, meds: pd.DataFrame | None,
                      originals: dict[str, list[str]], fmt: ExtractFormat,
                      rules: RulesProfile, as_of: date,
                      parquet: dict[str, frozenset[str]] | None = None) -> _Part:
    """One partition screened, its tables and sorted worklists written as part ``index``;
    only its counts come back."""
    part = _screen_part(labs, patients, meds, originals, fmt, rules, as_of, parquet)
    partitioned.write_part(part.classified, written.meta, written.folder, index)
    timed = partitioned.write_lists(part.classified, as_of, written.mma_addon_max_days,
                                    written.folder, index)
    outputs = partitioned.part_outputs(part.classified, as_of, written.cutoffs, timed)
    return _Part(None, part.inputs, outputs)


def _screen_part(labs: Validated, patients: pd.DataFrame | None,
                 meds: pd.DataFrame | None, originals: dict[str, list[str]],
                 fmt: ExtractFormat, rules: RulesProfile, as_of: date,
                 parquet: dict[str, frozenset[str]] | None = None) -> _Part:
    """One partition: its patients and medications validated, its cohort classified."""
    inputs = {"labs": labs}
    if patients is not None:
        inputs["patients"] = validate_patients(
            _in_input_order(patients, "patients", originals["patients"],
                            (parquet or {}).get("patients", frozenset())), fmt, as_of)
    if meds is not None:
        inputs["medications"] = validate_medications(
            _in_input_order(meds, "medications", originals["medications"],
                            (parquet or {}).get("medications", frozenset())), fmt)
    cohort = cohort_ids(*(v.ids for v in inputs.values()))
    pat, med = inputs.get("patients"), inputs.get("medications")
    results = labs.accepted
    at = None
    if labs.id_values is not None:  # ids factorised at validation: each placed once
        at = cohort_positions(cohort, labs.id_values)
        results = results.assign(pid=at[labs.id_codes])
    classified = classify(results, pat.accepted if pat else None,
                          med.accepted if med else None, cohort, rules, as_of)
    if at is not None:  # a partition holds every row of its patients
        classified.patients = with_lab_practice(classified.patients, at, labs.id_practice)
    return _Part(classified, {k: _slim(v) for k, v in inputs.items()})


# -------------------------------------------------------------------- on the client


@dataclass
class _Input:
    """One input read on the cluster: its pieces (as futures) and what they add up to."""

    kind: str
    spec: InputSpec
    pieces: list[Piece]
    tables: list[Future]
    layout: Layout
    files: list[FileInfo]
    notes: list[str]
    rows: int


def _rows_per_partition(client: Client) -> int:
    """Rows per read piece and lab rows per partition: ``ROWS_PER_PARTITION``, or fewer
    where the smallest worker's memory limit would not hold a partition that size (a worker
    past its limit is restarted, and its tasks start again)."""
    limits = [w.get("memory_limit") or 0 for w in client.scheduler_info()["workers"].values()]
    smallest = min((limit for limit in limits if limit), default=0)
    if not smallest:
        return ROWS_PER_PARTITION
    return int(min(ROWS_PER_PARTITION, max(MIN_ROWS_PER_PARTITION, smallest // BYTES_PER_ROW)))


def _read(client: Client, kind: str, path: str, spec: InputSpec,
          rows_per_piece: int = ROWS_PER_PARTITION) -> _Input:
    """Read an input's pieces on the workers; the client gets their columns and counts."""
    located: list[str] = []
    pieces = plan_pieces(path, kind, rows_per_piece, spec, located)
    tables = client.map(_read_piece, pieces, spec=spec, pure=False)
    described = _gathered(client, client.map(_describe, tables, pure=False), "read", None)
    for d in described:  # the first problem, in file order, as the pandas engine finds it
        if isinstance(d, UserError):
            raise d
    rows_of: dict[int, int] = {}
    info_of: dict[int, FileInfo] = {}
    split = {p.file_index for p in pieces if p.row_groups is not None}
    for piece, (_, info, _, _, rows) in zip(pieces, described, strict=True):
        rows_of[piece.file_index] = rows_of.get(piece.file_index, 0) + rows
        info_of.setdefault(piece.file_index, info)
    files = [describe_file(info.path, rows_of[i]) if i in split else info
             for i, info in sorted(info_of.items())]
    rows = sum(rows_of.values())
    check_not_empty(kind, files, rows)
    notes = input_notes(kind, located + [n for d in described for n in d[2]],
                        [pair for d in described for pair in d[3]])
    layout = Layout.of([d[0] for d in described])
    notes += column_notes(kind, spec, layout.original)
    return _Input(kind, spec, pieces, tables, layout, files, notes, rows)


def _partitions(inp: _Input, n_parts: int) -> list[Any]:
    """The input shuffled by patient: one delayed pandas frame per partition."""
    keyed = [dask.delayed(_keyed)(t, inp.layout, p.file_index, inp.spec, n_parts)
             for t, p in zip(inp.tables, inp.pieces, strict=True)]
    meta = pd.DataFrame({
        **{c: pd.Series([], dtype="str") for c in inp.layout.original},
        SOURCE_ROW: pd.Series([], dtype="int64"),
        SOURCE_FILE: pd.Series([], dtype="category"),
        **({c: pd.Series([], dtype="str") for c in MALFORMED_COLUMNS}
           if inp.layout.malformed else {}),
        _FILE: pd.Series([], dtype="int64"), _PART: pd.Series([], dtype="int64")})
    frame = dd.from_delayed(keyed, meta=meta, verify_meta=False)
    divisions = list(range(n_parts + 1))
    shuffled = frame.set_index(_PART, divisions=divisions, sort=True, shuffle_method="tasks")
    return shuffled.to_delayed()


def _merged(kind: str, parts: list[Validated], inp: _Input, fmt: ExtractFormat,
            rules: RulesProfile) -> Validated:
    """One input's partitions as one: counts summed, rejected rows in input order."""
    counts = {k: sum(p.counts[k] for p in parts) for k in parts[0].counts}
    rejected = _input_order(pd.concat([p.rejected for p in parts], ignore_index=True),
                            inp.files)
    warnings = list(inp.notes)
    tally = None
    if kind == "labs":
        tally = CodeTally.sum([p.codes for p in parts])
        warnings += unmapped_warning(tally, fmt, small_count(rules))
    dates = [p.latest_collected for p in parts if p.latest_collected is not None]
    return Validated(kind, parts[0].accepted.iloc[:0], rejected, counts,
                     pd.Series([], dtype="str"), inp.files, warnings, inp.layout.original,
                     max(dates) if dates else None, codes=tally,
                     unused_columns=unused_columns(inp.spec, inp.layout.original))


def _input_order(frame: pd.DataFrame, files: list[FileInfo]) -> pd.DataFrame:
    """Rows sorted by their file's position in the input, then source row."""
    if frame.empty:
        return frame.reset_index(drop=True)
    return frame.take(_input_positions(frame, files)).reset_index(drop=True)


def _input_positions(frame: pd.DataFrame, files: list[FileInfo]) -> np.ndarray:
    """The row order that puts ``frame`` in input order (file, then source row)."""
    file_at = pd.Categorical(frame["source_file"].astype("str"),
                             categories=[f.path for f in files]).codes
    return np.lexsort((frame["source_row"].to_numpy(), file_at))


def _joined(parts: list[Classified], files: list[FileInfo]) -> Classified:
    """Partitions' tables as the pandas engine's: patients sorted by id, results in input
    order."""
    results = pd.concat([p.results for p in parts], ignore_index=True)
    order = _input_positions(results, files) if len(results) else np.arange(0)
    results = results.take(order).reset_index(drop=True)
    # each partition's index rows point into its own results: into the joined ones instead
    offsets = np.cumsum([0] + [len(p.results) for p in parts[:-1]])
    moved = np.empty(len(order), dtype=np.int64)
    moved[order] = np.arange(len(order))
    for part, offset in zip(parts, offsets, strict=True):  # a handful of partitions
        if "index_row" in part.patients.columns:
            local = part.patients["index_row"].to_numpy(dtype=np.int64)
            joined = np.full(len(local), -1, dtype=row_type(len(results)))
            joined[local >= 0] = moved[local[local >= 0] + offset]
            part.patients["index_row"] = joined
    patients = joined_parts([p.patients for p in parts])
    order = text_order(pa.array(patients["patient_id"].astype("str"), pa.string()))
    patients = patients.take(order).reset_index(drop=True)
    return Classified(patients, results, sum(p.rows_after_as_of for p in parts))


def _gathered(client: Client, futures: list[Future], step: str,
              progress: Progress | None) -> list[Any]:
    """The futures' results in their order; meanwhile ``progress(step, done, total)`` each
    time the cluster finishes one of them (a failed one counts as done, and its error is
    raised by the gather).

    Never waits forever: a cluster on which no task has run for ``STALL_SECONDS`` while
    some of these are unfinished (no workers, or nothing left that any worker will run)
    stops the run with a one-line error. A slow task never does: the cluster is asked
    every ``CHECK_SECONDS`` whether any task is processing."""
    total = len(futures)
    if progress:
        progress(step, 0, total)
    # the run's own client and loop: ``as_completed`` would otherwise wait on the loop of
    # whichever client was made last in this process
    completed = as_completed(futures, loop=client.loop)
    done = 0
    now = time.monotonic()
    last_active = last_check = now
    while done < total:
        finished = len(completed.next_batch(block=False))
        now = time.monotonic()
        if finished:
            last_active = now
            if progress:  # one call per finished task
                for count in range(done + 1, done + finished + 1):
                    progress(step, count, total)
            done += finished
            continue
        if now - last_check >= CHECK_SECONDS:
            last_check = now
            if any(client.processing().values()):
                last_active = now
            elif now - last_active >= STALL_SECONDS:
                raise _stalled(client, step, total - done, total, now - last_active)
        time.sleep(POLL_SECONDS)
    return client.gather(futures)


def _stalled(client: Client, step: str, waiting: int, total: int,
             seconds: float) -> UserError:
    """The message for a cluster that has stopped running the run's tasks."""
    workers = len(client.nthreads())
    return UserError(
        f"the Dask cluster ran no task for {seconds:.0f} s while the {step} step waited for "
        f"{waiting} of {total} tasks (workers connected: {workers}); stopped instead of "
        f"waiting for ever: check the cluster's workers, then run again")


def screen_dask(options: RunOptions, progress: Progress | None = None,
                partitions: int | None = None) -> RunState:
    """Read, validate and classify on a Dask cluster (see the module's docs); returns the
    same run state as the pandas engine's ``prepare`` and ``run_classification``.

    ``partitions`` defaults to one per worker thread, or one per ``ROWS_PER_PARTITION`` lab
    rows (fewer on workers with little memory, ``_rows_per_partition``) if that is more."""
    state = new_state(options)
    today = options.today or today_date()
    fmt, rules = state.fmt, state.rules
    with dask.config.set(_DASK_CONFIG), _client(options.scheduler) as client:
        rows = _rows_per_partition(client)
        with state.step("read", progress):
            paths = {"labs": options.labs, "patients": options.patients,
                     "medications": options.medications}
            inputs = {kind: _read(client, kind, path, getattr(fmt, kind), rows)
                      for kind, path in paths.items() if path}
        parquet = {kind: parquet_files(inp.files) for kind, inp in inputs.items()}
        threads = sum(client.nthreads().values()) or 1
        n_parts = partitions or max(threads, math.ceil(inputs["labs"].rows / rows))
        with state.step("validate", progress):
            shuffled = {kind: _partitions(inp, n_parts) for kind, inp in inputs.items()}
            labs_parts = [dask.delayed(_validate_labs)(part, inputs["labs"].layout.original,
                                                       fmt, rules, today, parquet["labs"])
                          for part in shuffled.pop("labs")]
            if options.as_of is None:  # inferred from every partition's latest date first
                labs_parts = client.compute(labs_parts)
                summaries = _gathered(client, client.map(_labs_summary, labs_parts,
                                                         pure=False), "validate", progress)
                inputs["labs"].tables = []  # the raw lab rows are no longer needed
                state.inputs["labs"] = _merged("labs", summaries, inputs["labs"], fmt, rules)
                check_reject_rate(state)
                state.as_of = default_as_of(state.inputs["labs"])
            else:  # each partition is validated by its classification task: none waits
                state.as_of = options.as_of
        with state.step("classify", progress):
            originals = {kind: inp.layout.original for kind, inp in inputs.items()}
            none = [None] * n_parts
            written = _staging(state, n_parts) if options.partitioned else None
            try:
                tasks = [dask.delayed(_screen_and_write)(i, written, lab, pat, med, originals,
                                                         fmt, rules, state.as_of, parquet)
                         if written else
                         dask.delayed(_screen_part)(lab, pat, med, originals, fmt, rules,
                                                    state.as_of, parquet)
                         for i, (lab, pat, med) in enumerate(zip(
                             labs_parts, shuffled.get("patients", none),
                             shuffled.get("medications", none), strict=True))]
                parts: list[_Part] = _gathered(client, client.compute(tasks), "classify",
                                               progress)
            except BaseException:
                if state.staged is not None:
                    remove_staging(state.staged.folder, state.staged.created)
                raise
            del shuffled, labs_parts, tasks
            inputs["labs"].tables = []
    try:
        for kind, inp in inputs.items():
            state.inputs[kind] = _merged(kind, [p.inputs[kind] for p in parts], inp, fmt,
                                         rules)
            add_input_warnings(state, state.inputs[kind])
        check_reject_rate(state)
    except BaseException:
        if state.staged is not None:
            remove_staging(state.staged.folder, state.staged.created)
        raise
    if state.staged is not None:
        outputs, lists = partitioned.combine([p.outputs for p in parts], state.staged.folder)
        state.staged.outputs, state.staged.lists = outputs, lists
        state.staged.patients = outputs.figures.patients
        state.classified = Classified(pd.DataFrame(), pd.DataFrame(), outputs.rows_after_as_of)
    else:
        state.classified = _joined([p.classified for p in parts], inputs["labs"].files)
    return state


def _staging(state: RunState, n_parts: int) -> _Written:
    """The folder the workers write the partitioned tables into, beside the run folder
    (``--out`` checked first: nothing is written where a run may not go)."""
    out = state.options.out if state.options.out is not None else default_out(state.as_of)
    check_out(str(out), run_inputs(state))
    folder, created = staging_folder(out)
    partitioned.prepare_folders(folder)
    state.staged = StagedTables(folder, created, n_parts, 0)
    return _Written(folder, table_metadata(state), report_cutoffs(state),
                    mma_addon_max_days(state))

