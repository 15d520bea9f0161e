"""Assemble and write every output of a run into one folder (atomically).

Patient-level: patients.parquet, results.parquet, rejected.parquet/.csv, worklists/*.csv,
worklists.xlsx, worklist_state.parquet. Shareable (disclosure-controlled, no patient ids):
measures.parquet/.csv, summary.json, report.html, all read from one suppression decision
(``pipeline.outputs.published``). Audit: manifest.json, and disclosure_log.csv (owner-only: every
withheld cell with its exact count, why, and the rule).
"""

from __future__ import annotations

import functools
import platform
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

from pipeline import __version__
from pipeline.ingest.read import sha256_file
from pipeline.kernels.memory import trim_heap
from pipeline.outputs.measures import MEASURES
from pipeline.outputs.partitioned import TABLES
from pipeline.outputs.published import WORKLIST_COLUMNS, CohortFigures, Published, publish
from pipeline.outputs.report import (
    ACCOUNTING_LABELS,
    FLAG_LABELS,
    STATUS_LABELS,
    WORKLIST_LABELS,
    Histograms,
    classified_histograms,
    render_report,
)
from pipeline.outputs.run_folder import (
    check_out,
    files_of,
    input_paths,
    remove_staging,
    replacing,
    restrict,
)
from pipeline.outputs.tables import (
    DISCLAIMER,
    PATIENTS_SCHEMA,
    RESULTS_SCHEMA,
    ROW_GROUP,
    accounting_record,
    encode_frame,
    neutralise,
    rejected_by_reason,
    rejected_frame,
    results_file,
    run_configuration,
    write_csv,
    write_csv_pieces,
    write_frame,
    write_json,
    write_parquet,
    write_parquet_groups,
    write_rejected,
    write_xlsx,
)
from pipeline.outputs.worklist_state import (
    ListState,
    apply_state,
    previous_run,
)
from pipeline.outputs.worklists import LISTS, MMA_ADDON_MAX_DAYS, build_worklists
from pipeline.outputs.xlsx import SheetSource
from pipeline.state import RunState, input_specs

WORKLISTS_README = f"""b12screen worklists

{DISCLAIMER}

One row per patient per list, grouped by practice, urgent first, then oldest result first.
  urgent.csv                deficient with neurological symptoms, pregnancy, or > 90 days with
                            no B12 prescription active; still deficient on the 3-month check
                            while on treatment (not_responding); indeterminate with neurological
                            symptoms (treat without waiting for the MMA); the action says which
  mma.csv                   indeterminate result: add on or request methylmalonic acid (MMA);
                            where an MMA was done but its result spans the limit (e.g.
                            >=0.45 at the default 0.45 umol/L), ask the lab for a
                            quantitative MMA or decide clinically (mma_addon_possible then
                            only describes the stored sample)
  supplementation.csv       needs B12 supplementation; suggested_regimen gives the regimen,
                            regimen_intent whether it treats a deficiency or prevents one
  metformin_monitoring.csv  on metformin with no B12 test in the last year
  retest.csv                on a B12 course >= 3 months (1 if pregnant) with no check test
                            since (a test in the course's first weeks is not the check)
  resolved.csv              patients who left a list since the previous run
Each row shows the index result as the lab reported it (index_result, e.g. "<150 ng/L") and
its date; index_value is the harmonised value, rounded as reported. mma.csv adds the stored
sample (specimen_id, site_id, sample_age_days) and whether an add-on to it is still possible.
Rows for under-16s say so in `note`: the thresholds are for over-16s.
first_listed / change: the month a patient first appeared on the list; new or persisting.
Cells starting with = + - @ (also behind spaces or control characters) are prefixed with '
so spreadsheets never run them. The CSV files are UTF-8 with a byte-order mark, so Excel
shows µg correctly.
worklists.xlsx holds the same lists, one sheet each.
"""
SHAREABLE = {"measures.parquet", "measures.csv", "summary.json", "report.html"}


def default_out(as_of: date) -> Path:
    return Path("reports") / f"{as_of:%Y-%m}"


def run_inputs(state: RunState) -> list[Path]:
    """The paths a run read: an output folder must never hold, or sit inside, any of them."""
    return input_paths(*input_specs(state.options))


def table_metadata(state: RunState) -> dict[str, str]:
    return {"version": __version__, "rules_profile": state.rules.name,
            "rules_sha256": state.rules.sha256, "as_of": state.as_of.isoformat(),
            "format": state.fmt.name}


def with_metadata(table: pa.Table, meta: dict[str, str]) -> pa.Table:
    """The run's key-value metadata (``b12screen.version``, rules, as-of, ...) added to a
    table's own (pandas keeps its dtypes there), as every Parquet output carries it."""
    return table.replace_schema_metadata({**(table.schema.metadata or {}),
                                          **{f"b12screen.{k}": v for k, v in meta.items()}})


def build_summary(state: RunState, published: Published) -> dict[str, Any]:
    """summary.json: the run's published tables, read from the one decision that every
    shareable file reads (``pipeline.outputs.published``); withheld counts are null, and
    ``suppression`` says which were withheld as small (primary) or to protect another
    (secondary)."""
    def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
        return [{k: (None if pd.isna(v) else (v.item() if hasattr(v, "item") else v))
                 for k, v in row.items()} for row in frame.to_dict("records")]

    measures = published.measures
    accounting = {}
    for table in [t for t in published.cells["table"].unique() if t.startswith("accounting/")]:
        counts: dict[str, Any] = published.counts(table, "rows")
        counts["balanced"] = bool(
            published.cells.loc[published.cells["table"] == table, "balanced"].iloc[0])
        accounting[table.split("/", 1)[1]] = counts
    lists = published.table("worklists")
    return {
        "as_of": state.as_of.isoformat(),
        "month": f"{state.as_of:%Y-%m}",
        "version": __version__,
        "rules": {"name": state.rules.name, "sha256": state.rules.sha256},
        "disclosure": {"small_count": published.small_count, "rounding": published.rounding,
                       "applied": True, "note": published.note},
        "cohort": {"patients": published.count("cohort/patients/patients"),
                   "by_status": published.counts("b12_status", "patients"),
                   "flags": published.counts("flags", "patients")},
        "accounting": accounting,
        "rejected_by_reason": published.counts("rejected_by_reason", "rows"),
        "worklists": {name: {c: published.count(f"worklists/{name}/{c}")
                             for c in WORKLIST_COLUMNS}
                      for name in lists["row"].unique()},
        "measures": records(measures[measures["group_by"] == "overall"]),
        "per_practice": records(measures[measures["group_by"] == "practice"]),
        "by_age_band": records(measures[measures["group_by"] == "age_band"]),
        "by_sex": records(measures[measures["group_by"] == "sex"]),
        "suppression": published.suppression(),
    }


def report_cutoffs(state: RunState) -> dict[str, list[float]]:
    """The cut-offs the report draws on each analyte's distribution (from the rules)."""
    r1, r2, r5 = (state.rules.rule(r) for r in ("R1", "R2", "R5"))
    return {"b12_total": [r1["deficient_below"], r1["unlikely_above"]],
            "b12_active": [r2["deficient_below"], r2["unlikely_above"]],
            "mma": [r5["mma_upper_umol_l"]]}


def patients_sex(state: RunState) -> pd.Series | None:
    """The patients input's sex aligned to the cohort (for the measures' ``sex`` breakdown),
    or None when the input has no sex at all. Classification carries it beside the patients
    table (``classify.CARRIED_COLUMNS``), so both engines give it."""
    patients = state.classified.patients
    if "sex" not in patients.columns:
        return None
    sex = patients["sex"].astype("string").fillna("").reset_index(drop=True)
    return sex if sex.ne("").any() else None


class _Digests:
    """The manifest's sha256 of each output, each computed on the pool as soon as its file
    is complete (while the page cache still holds it), not all at the end on one thread."""

    def __init__(self, pool: ThreadPoolExecutor) -> None:
        self.pool = pool
        self.pending: dict[Path, Future[str]] = {}

    def add(self, *paths: Path) -> None:
        for path in paths:
            self.pending[path] = self.pool.submit(sha256_file, path)

    def of(self, folder: Path) -> dict[str, str]:
        """Every file's digest, by path relative to ``folder`` (every file in it, so the
        manifest lists the whole run folder); any file not yet hashed is hashed now."""
        files = files_of(folder)
        for path in files:
            if path not in self.pending:
                self.add(path)
        return {p.relative_to(folder).as_posix(): self.pending[p].result() for p in files}


def _write_tables(state: RunState, tmp: Path, meta: dict[str, str],
                  rejected: pd.DataFrame, digests: _Digests, released: threading.Event) -> None:
    """The analyst tables, each hashed once written: results first, so that the per-row
    frames are released (``released`` is set) early; then patients and rejected."""
    classified = state.classified
    if state.staged is not None:  # the workers wrote them: their folders move in
        try:
            for name in TABLES:
                (state.staged.folder / name).rename(tmp / name)
            _release_rows(state)
        finally:
            released.set()
        write_rejected(rejected, tmp, meta)
        return
    try:
        source, early = state.early.pop("results.parquet", (None, None))
        if early is not None and source is classified.results:  # encoded while classifying
            (tmp / "results.parquet").write_bytes(early.result())
        else:
            write_frame(results_file(classified.results), RESULTS_SCHEMA, meta,
                        tmp / "results.parquet")
        del source, early
        digests.add(tmp / "results.parquet")
        _release_rows(state)
    finally:
        released.set()  # also on failure: nothing waits for ever
    write_frame(classified.patients, PATIENTS_SCHEMA, meta, tmp / "patients.parquet")
    digests.add(tmp / "patients.parquet")
    write_rejected(rejected, tmp, meta)


def results_bytes(state: RunState, results: pd.DataFrame) -> pa.Buffer:
    """results.parquet's bytes, from the classified result table (``classify``'s
    ``on_results``): the pandas engine encodes it while the patients are classified."""
    return encode_frame(results_file(results), RESULTS_SCHEMA, table_metadata(state))


def _release_rows(state: RunState) -> None:
    """Drop the run's per-row frames (classified results and the accepted labs rows they
    share columns with), which nothing after results.parquet reads: at 10M rows they were
    a fifth of the peak memory while writing. Zero-row frames, marked, stay in their
    place, so that a second write of the same state fails instead of writing no rows."""
    classified = state.classified
    classified.results = _released(classified.results)
    for validated in state.inputs.values():
        if isinstance(validated.accepted, pd.DataFrame):
            validated.accepted = _released(validated.accepted)
        validated.id_codes = None
    trim_heap()


def _released(frame: pd.DataFrame) -> pd.DataFrame:
    empty = frame.iloc[:0].copy()
    empty.attrs[_RELEASED] = True
    return empty


_RELEASED = "b12screen.released"
#: From this many result rows the workbook and the report start only once results.parquet
#: is written and the per-row frames are released, so that their memory and the results'
#: never add up; smaller runs start them at once, and finish sooner on two cores.
RELEASE_FIRST_ROWS = 4_000_000


def mma_addon_max_days(state: RunState) -> int:
    """Days after collection within which the MMA list offers an add-on (profile's R7)."""
    return state.rules.data["rules"].get("R7", {}).get("mma_addon_max_days", MMA_ADDON_MAX_DAYS)


def _worklists(state: RunState, results: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The worklists, with each index test as reported and its sample from ``results``."""
    return build_worklists(state.classified.patients, results, as_of=state.as_of,
                           mma_addon_max_days=mma_addon_max_days(state))


def _write_worklists(state: RunState, worklists: dict[str, pd.DataFrame], tmp: Path,
                     previous: Path | None, pool: ThreadPoolExecutor, digests: _Digests,
                     released: threading.Event, meta: dict[str, str]
                     ) -> tuple[dict[str, Any], Future[list[str]]]:
    """Worklists with month-on-month state; returns each list's sizes for the report, and
    the XLSX workbook being written on the pool (its warnings when done).

    ``worklists`` is handed over: it is emptied once the lists are marked, and each marked
    list is let go once its CSV is written (the workbook keeps its own until it has encoded
    it), so that the lists (a third of a gigabyte at 10M typed rows) are not held beside
    the workbook's sheets and patients.parquet, the run's peak."""
    lists, resolved, list_state = apply_state(worklists, as_of_month=f"{state.as_of:%Y-%m}",
                                              previous_dir=previous)
    worklists.clear()
    trim_heap()  # the lists' intermediates
    # neutralised once for both the CSVs and the workbook
    lists = {name: neutralise(frame) for name, frame in lists.items()}
    sizes = {name: {"rows": len(f), "new": int((f["change"] == "new").sum()),
                    "persisting": int((f["change"] == "persisting").sum()),
                    "resolved": int((resolved["list"] == name).sum())}
             for name, f in lists.items()}
    (tmp / "worklists").mkdir(mode=0o700)
    workbook = pool.submit(_write_workbook, dict(lists), tmp / "worklists.xlsx", digests,
                           released, state.as_of)
    (tmp / "worklists" / "README.txt").write_text(WORKLISTS_README, encoding="utf-8")
    for name in list(lists):
        write_csv(lists.pop(name), tmp / "worklists" / f"{name}.csv", bom=True,
                  neutralised=True)
        digests.add(tmp / "worklists" / f"{name}.csv")
    write_csv(resolved, tmp / "worklists" / "resolved.csv", bom=True)
    write_parquet(with_metadata(pa.Table.from_pandas(list_state, preserve_index=False), meta),
                  tmp / "worklist_state.parquet")
    return sizes, workbook


def _write_merged_worklists(state: RunState, tmp: Path, previous: Path | None,
                            pool: ThreadPoolExecutor, digests: _Digests,
                            released: threading.Event, meta: dict[str, str]
                            ) -> tuple[dict[str, Any], Future[list[str]]]:
    """``_write_worklists`` for lists held as sorted parts (``--partitioned``): each list is
    merged piece by piece, marked new or persisting and neutralised per piece, and
    streamed into its CSV here and into the workbook on the pool (which reads it twice);
    only the CSV's pass records who is listed, spilling them in sorted runs to the staging
    folder, from which worklist_state.parquet is written a row group at a time. The same
    files, holding a few blocks of each part rather than the lists."""
    parts = state.staged.lists
    tracker = ListState(as_of_month=f"{state.as_of:%Y-%m}", previous_dir=previous,
                        spill=state.staged.folder / STATE_RUNS)
    counts = {name: {"rows": 0, "new": 0, "persisting": 0} for name in LISTS}

    def pieces(name: str, record: bool = False) -> Iterator[pd.DataFrame]:
        for piece in parts.pieces(name):  # pieces of a few thousand rows, not rows
            marked = tracker.mark(name, piece, record=record)
            if record:
                change = marked["change"]
                counts[name]["rows"] += len(marked)
                counts[name]["new"] += int((change == "new").sum())
                counts[name]["persisting"] += int((change == "persisting").sum())
            yield neutralise(marked)

    (tmp / "worklists").mkdir(mode=0o700)
    sources = {name: functools.partial(pieces, name) for name in LISTS}
    workbook = pool.submit(_write_workbook, sources, tmp / "worklists.xlsx", digests, released,
                           state.as_of)
    (tmp / "worklists" / "README.txt").write_text(WORKLISTS_README, encoding="utf-8")
    for name in LISTS:
        write_csv_pieces(pieces(name, record=True), tmp / "worklists" / f"{name}.csv",
                         timed=parts.timed[name], bom=True, neutralised=True)
        digests.add(tmp / "worklists" / f"{name}.csv")
    resolved = tracker.resolved()
    write_csv(resolved, tmp / "worklists" / "resolved.csv", bom=True)
    schema, groups = tracker.finish_groups(ROW_GROUP)
    write_parquet_groups(groups, with_metadata(schema.empty_table(), meta).schema,
                         tmp / "worklist_state.parquet")
    sizes = {name: {**counts[name], "resolved": int((resolved["list"] == name).sum())}
             for name in LISTS}
    return sizes, workbook


#: The staging folder's folder of the listed patients' sorted runs (``ListState`` spill).
STATE_RUNS = "worklist-state"


def _write_workbook(lists: dict[str, pd.DataFrame | SheetSource], path: Path,
                    digests: _Digests, released: threading.Event, as_of: date) -> list[str]:
    """The XLSX workbook, started once the per-row frames are released: its encoded
    columns and the results' row groups need not be in memory at once. ``lists`` is handed
    over: emptied of its frames as they are encoded, so that each goes once its CSV is
    written too."""
    released.wait()
    notes = write_xlsx(lists, path, as_of=as_of, neutralised=True, release=True)
    digests.add(path)
    return notes


def _write_aggregates(state: RunState, tmp: Path, sizes: dict[str, Any],
                      reasons: dict[str, int], figures: CohortFigures,
                      histograms: Histograms, meta: dict[str, str],
                      released: threading.Event) -> None:
    """Shareable outputs: measures, summary.json and report.html, all read from one
    disclosure decision; and the owner-only disclosure_log.csv that records it. ``figures``
    and ``histograms``: the cohort's counts and the report's counts of the classified
    results' values, worked out before the lists (``_figures``, ``_histograms``). The
    report waits for the per-row frames' release, as the workbook does: meanwhile the
    tables and the workbook keep both cores busy."""
    trim_heap()  # the lists' and their files' intermediates
    small = state.rules.disclosure["small_count"]
    rounding = state.rules.disclosure["rounding"]
    exact_accounting = state.accounting()
    published = publish(figures=figures,
                        as_of=state.as_of, accounting=exact_accounting,
                        worklist_sizes=sizes, reasons=reasons,
                        small_count=small, rounding=rounding,
                        distributions={a: n for a, (n, _) in histograms.items()})
    measures = published.measures
    write_parquet(with_metadata(pa.Table.from_pandas(measures, preserve_index=False), meta),
                  tmp / "measures.parquet")
    write_csv(measures, tmp / "measures.csv")
    summary = build_summary(state, published)
    write_json(summary, tmp / "summary.json")
    published.write_log(tmp / "disclosure_log.csv")
    released.wait()
    # report.py still suppresses the cohort, worklist and data-quality tables itself from the
    # exact counts; ``published`` carries the same tables as decided here, display text and
    # all, for it to render instead (issue 14 item 2)
    render_report(tmp / "report.html",
                  summary={**summary, "accounting": exact_accounting,
                           "rejected_by_reason": reasons, "worklists": sizes,
                           "published": published.report_context(
                               status_labels=STATUS_LABELS, flag_labels=FLAG_LABELS,
                               list_labels=WORKLIST_LABELS,
                               accounting_labels=ACCOUNTING_LABELS)},
                  patients=state.classified.patients, histograms=histograms,
                  measures=measures, definitions=MEASURES,
                  rules_cutoffs=report_cutoffs(state),
                  small_count=small, rounding=rounding)


def write_outputs(state: RunState, out: Path | None, previous: Path | None,
                  progress=None) -> Path:
    """Write every output into a temporary folder, then rename it into place.

    Three threads share the two cores (Arrow's Parquet, CSV and compute kernels, zlib and
    hashlib release the GIL): results.parquet is written on the pool while the worklists,
    their CSVs and the measures are built here. Writing consumes the state's per-row
    frames: once results.parquet is written they are released (``_release_rows``); on large
    runs only then do the XLSX workbook (on the pool) and the report (here) start, beside
    patients.parquet, so that their memory and the results' never add up. Each file is
    hashed on the pool once written.
    """
    assert state.classified is not None and state.as_of is not None
    if state.classified.results.attrs.get(_RELEASED):
        raise RuntimeError("this run's outputs were written already (its rows are released)")
    try:
        return _write_outputs(state, out, previous, progress)
    finally:
        if state.staged is not None:  # moved into the run folder, or the run stopped
            remove_staging(state.staged.folder, state.staged.created)


def _write_outputs(state: RunState, out: Path | None, previous: Path | None,
                   progress=None) -> Path:
    out = out if out is not None else default_out(state.as_of)
    check_out(str(out), run_inputs(state))
    meta = table_metadata(state)
    if progress:
        progress("write")
    started = time.perf_counter()
    trim_heap()
    prev = previous
    if previous is None:  # the latest earlier run with the same rules (name and settings)
        prev, note = previous_run(out.resolve(), state.as_of, state.rules.name,
                                  state.rules.sha256, str(state.rules.path))
        if note:
            state.warnings.append(note)
    results = state.classified.results
    histograms = _histograms(state)
    sex = None if state.staged else patients_sex(state)  # before the rows are released
    with replacing(out) as tmp, ThreadPoolExecutor(max_workers=2) as pool:
        digests, released = _Digests(pool), threading.Event()
        go = released  # when the workbook and report may start (see RELEASE_FIRST_ROWS)
        if len(state.classified.results) < RELEASE_FIRST_ROWS:
            go = threading.Event()
            go.set()
        rejected = rejected_frame(state)  # built once: written, and counted for the summary
        tables = pool.submit(_write_tables, state, tmp, meta, rejected, digests, released)
        figures = pool.submit(_figures, state, sex)  # beside the lists being built
        del sex
        if state.staged is not None:  # the workers' sorted lists, merged as written
            del results
            sizes, workbook = _write_merged_worklists(state, tmp, prev, pool, digests, go,
                                                      meta)
        else:
            worklists = _worklists(state, results)  # beside results.parquet being written
            del results  # the per-row frames are released once results.parquet is written
            sizes, workbook = _write_worklists(state, worklists, tmp, prev, pool, digests, go,
                                               meta)  # handed over: emptied as written
        _write_aggregates(state, tmp, sizes, rejected_by_reason(rejected), figures.result(),
                          histograms, meta, go)
        tables.result()
        state.warnings += workbook.result()
        state.timings["write"] = round(time.perf_counter() - started, 3)
        write_json(manifest(state, prev, digests.of(tmp)), tmp / "manifest.json")
        restrict(tmp, SHAREABLE)
    return out


def _histograms(state: RunState) -> Histograms:
    """The report's counts of the values classified (not after the as-of date), counted
    before anything is written rather than holding the values till the report is (80 MB at
    10M rows); a partitioned run brings them from its parts, and none of its rows."""
    if state.staged is not None:
        return state.staged.outputs.histograms
    return classified_histograms(state.classified.results, report_cutoffs(state))


def _figures(state: RunState, sex: pd.Series | None) -> CohortFigures:
    """The cohort's shareable counts, worked out on the pool while the lists are built,
    before the workbook starts: their memory (a few hundred MB at 8M patients) then never
    adds to the workbook's, and the workbook starts no later. A partitioned run brings
    them from its parts."""
    if state.staged is not None:
        return state.staged.outputs.figures
    return CohortFigures.of(state.classified.patients, state.as_of, sex=sex)


def manifest(state: RunState, previous: Path | None, digests: dict[str, str]
             ) -> dict[str, Any]:
    """Audit record: inputs with hashes, configuration, as-of, accounting, timings.

    ``accounting`` proves the SPEC's equation over every input row
    (``tables.accounting_record``); the totals are repeated at the top level.
    """
    classified = state.classified
    after = classified.rows_after_as_of if classified else 0
    accounting, totals = accounting_record(state, after)
    return {
        "b12screen_version": __version__,
        "kind": "run",
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "as_of": state.as_of.isoformat(),
        "as_of_source": "--as-of" if state.options.as_of else "latest collected_at",
        "engine": state.options.engine,
        **run_configuration(state),
        "options": {"max_reject_rate": state.options.max_reject_rate,
                    "previous_run": str(previous) if previous else None},
        "accounting": accounting,
        **totals,
        "rows_after_as_of": after,
        "patients": state.patients(),
        **({"tables": {name: {"layout": "partitioned", "folder": f"{name}/",
                              "parts": state.staged.parts} for name in TABLES}}
           if state.staged is not None else {}),
        "warnings": state.warnings,
        "timings_seconds": state.timings,
        "outputs": digests,
        "environment": environment(),
    }


def environment() -> dict[str, str]:
    """What the manifest records of the software that made the run."""
    return {"b12screen": __version__, "python": sys.version.split()[0],
            "pandas": pd.__version__, "platform": platform.platform()}
