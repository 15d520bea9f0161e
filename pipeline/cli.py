"""The ``b12screen`` command line: thin wrappers over ``pipeline.engines`` and ``pipeline.outputs``.

Exit codes: 0 success; 1 the run cannot go ahead safely: input unusable, or an output
folder, ``--previous`` or ``--as-of`` that would destroy or mislead (one-line message, no
traceback); 2 usage error. ``--out`` and ``--previous`` are checked before any input is
read, so a mistyped folder costs nothing.

Process tuning is confined to this entry point: the Arrow memory pool (``_tune_process``)
and ending the program with ``os._exit`` once every file is written (``_end_program``).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from pipeline import __version__
from pipeline.errors import EXIT_USAGE, UserError

if TYPE_CHECKING:
    from pipeline.state import RunOptions

app = typer.Typer(
    name="b12screen",
    help="Screen a population for vitamin B12 deficiency from routine lab extracts.",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
err = Console(stderr=True, highlight=False)
out = Console(highlight=False)

LabsArg = Annotated[str, typer.Argument(help="Labs extract: a CSV/Parquet file, a folder or "
                                              "a glob.", show_default=False)]
PatientsOpt = Annotated[str | None, typer.Option("--patients", help="Patients file (CSV/Parquet).")]
MedsOpt = Annotated[str | None, typer.Option("--medications", help="Prescriptions file.")]
FormatOpt = Annotated[str | None, typer.Option("--format", help="Extract format: a shipped "
                                                               "name or a TOML path.")]
RulesOpt = Annotated[str | None, typer.Option("--rules", help="Rules profile: a shipped name or "
                                                             "a TOML path.")]
AsOfOpt = Annotated[str | None, typer.Option("--as-of", help="As-of date YYYY-MM-DD (default: "
                                                           "latest collected_at).")]
OutOpt = Annotated[str | None, typer.Option(
    "--out", help="Output folder (default reports/<as-of YYYY-MM>): missing, empty or an "
                  "earlier run folder, which it replaces; anything else stops the run.")]
RateOpt = Annotated[float, typer.Option(
    "--max-reject-rate", help="Stop when a larger share of an input's rows is rejected "
                              "(inputs under 100 rows: only when none is usable).")]
QuietOpt = Annotated[bool, typer.Option("--quiet", help="No progress output.")]


def _fail(exc: UserError) -> None:
    err.print(f"b12screen: error: {exc.message}", markup=False, soft_wrap=True)
    raise typer.Exit(exc.exit_code)


def _show_version(value: bool) -> None:
    if value:
        out.print(f"b12screen {__version__}", markup=False)
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[bool, typer.Option(
        "--version", callback=_show_version, is_eager=True,
        help="Print the version and exit.")] = False) -> None:
    """Screen a population for vitamin B12 deficiency from routine lab extracts."""


def _as_of(text: str | None) -> date | None:
    if text is None:
        return None
    try:
        day = datetime.strptime(text, "%Y-%m-%d").date()
    except ValueError as exc:
        raise UserError(f"--as-of must be a date YYYY-MM-DD, got '{text}'", EXIT_USAGE) from exc
    if day.year < 1900:  # a typo (0026 for 2026): no result that old is read either
        raise UserError(f"--as-of must be a date from 1900 on, got '{text}'", EXIT_USAGE)
    return day


@contextmanager
def _progress(quiet: bool) -> Iterator[Callable[..., None] | None]:
    """Progress on stderr for long steps (with tasks done / in all where the engine counts
    them); silent with --quiet or when not a terminal."""
    if quiet or not sys.stderr.isatty():
        yield None
        return
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                  console=err, transient=False) as bar:
        current: list[int] = []

        def step(name: str, done: int | None = None, total: int | None = None) -> None:
            if done is not None and current:
                bar.update(current[-1], description=f"{name} ({done}/{total} tasks)",
                           completed=done, total=total)
                return
            if current:
                bar.update(current[-1], completed=1, total=1)
            current.append(bar.add_task(name, total=None))

        yield step
        if current:
            bar.update(current[-1], completed=1, total=1)


def _import_in_background(*modules: str) -> threading.Thread:
    """Import ``modules`` in turn on a thread: their imports overlap the reading, which
    releases the GIL (an import error surfaces again at the real import)."""

    def load() -> None:
        for module in modules:
            with contextlib.suppress(Exception):
                importlib.import_module(module)

    thread = threading.Thread(target=load, name=f"import {modules[-1]}", daemon=True)
    thread.start()
    return thread


@app.command()
def run(labs: LabsArg, patients: PatientsOpt = None, medications: MedsOpt = None,
        format: FormatOpt = None, rules: RulesOpt = None, as_of: AsOfOpt = None,
        out_dir: OutOpt = None,
        engine: Annotated[str, typer.Option("--engine", help="pandas or dask.")] = "pandas",
        scheduler: Annotated[str | None, typer.Option(
            "--scheduler", help="Dask scheduler address (default: a local cluster).")] = None,
        max_reject_rate: RateOpt = 0.05,
        previous: Annotated[Path | None, typer.Option(
            "--previous", help="Previous run folder for new/persisting/resolved.")] = None,
        quiet: QuietOpt = False,
        partitioned: Annotated[bool, typer.Option(
            "--partitioned", help="With --engine dask: the workers write patients/ and "
                                  "results/ as Parquet datasets (part files), and this "
                                  "process keeps counts, not the cohort's rows.")] = False
        ) -> None:
    """Screen a labs extract and write tables, worklists, report and manifest.

    Example: b12screen run labs.csv --patients patients.csv --medications meds.csv
    """
    from pipeline.engines import screen
    from pipeline.state import RunOptions

    _tune_process()
    writers = None
    try:
        if engine not in ("pandas", "dask"):
            raise UserError("--engine must be pandas or dask", EXIT_USAGE)
        if partitioned and engine != "dask":
            raise UserError("--partitioned needs --engine dask (the workers write the "
                            "tables' parts)", EXIT_USAGE)
        options = RunOptions(labs=labs, patients=patients, medications=medications,
                             format=format, rules=rules, as_of=_as_of(as_of),
                             out=None if out_dir is None else Path(out_dir),
                             engine=engine, scheduler=scheduler,
                             max_reject_rate=max_reject_rate, previous=previous,
                             partitioned=partitioned)
        _check_places(options, out_dir, "")
        # validation (pandera) and the writers (jinja2 et al.) load while the input is read
        writers = _import_in_background("pipeline.ingest.validate", "pipeline.outputs.write")
        with _progress(quiet) as progress:
            state = screen(options, progress)
            writers.join()
            from pipeline.outputs.write import write_outputs

            folder = write_outputs(state, options.out, previous, progress)
    except BaseException as exc:
        if writers is not None:  # an import still running as the interpreter shuts down
            writers.join()  # can abort the process (exit 134 instead of the error's code)
        if isinstance(exc, UserError):
            _fail(exc)
        raise
    for note in state.warnings:
        err.print(f"warning: {note}", markup=False, soft_wrap=True)
    acc = state.accounting()["labs"]
    if not quiet:
        out.print(f"as-of {state.as_of}; {state.patients()} patients;"
                  f" labs rows read {acc['rows_read']} = accepted {acc['rows_accepted']}"
                  f" + rejected {acc['rows_rejected']} + other tests"
                  f" {acc['rows_skipped_other_tests']} + duplicates"
                  f" {acc['rows_exact_duplicates']}", markup=False, soft_wrap=True)
    out.print(f"outputs: {folder}", markup=False, soft_wrap=True)
    _end_program()


def _check_places(options: RunOptions, out_dir: str | None, prefix: str) -> None:
    """Before any input is read: ``--out`` (or the default folder, once the as-of date is
    known), ``--previous`` and ``--as-of`` must neither destroy nor mislead."""
    from pipeline.engines.steps import check_as_of
    from pipeline.outputs.run_folder import check_out, check_previous, check_root, input_paths
    from pipeline.state import input_specs

    check_as_of(options)
    inputs = input_paths(*input_specs(options))
    if out_dir is not None:
        check_out(out_dir, inputs)
    elif options.as_of is not None:
        check_out(str(Path("reports") / f"{prefix}{options.as_of:%Y-%m}"), inputs)
    else:  # the month is known once the labs are read (and checked again before writing)
        check_root(Path("reports"), inputs)
    if options.previous is not None:
        check_previous(options.previous)


def _tune_process() -> None:
    """The process-wide speed settings, made here at the entry point and nowhere else: the
    Arrow memory pool that returns freed memory at once (``kernels.memory``), so a large
    run's peak memory is what it holds, not what it once held. Library callers (tests,
    notebooks) get the same outputs with Arrow's default pool."""
    from pipeline.kernels.memory import use_prompt_memory_pool

    use_prompt_memory_pool()


def _end_program() -> None:
    """As the ``b12screen`` program, end the process once a run's outputs are written and
    its summary printed: tearing the interpreter down (every module, the run's tables)
    took a third of a second after a 2M-row run and serves nothing, as every file is
    closed. Called in-process (tests, notebooks), it returns as usual."""
    if Path(sys.argv[0]).name not in ("b12screen", "b12screen.exe"):
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


@app.command()
def validate(labs: LabsArg, patients: PatientsOpt = None, medications: MedsOpt = None,
             format: FormatOpt = None, rules: RulesOpt = None, as_of: AsOfOpt = None,
             out_dir: Annotated[str | None, typer.Option(
                 "--out", help="Folder for rejected.parquet/.csv (default "
                               "reports/validate-<as-of YYYY-MM>): missing, empty or an "
                               "earlier run or validate folder.")] = None,
             max_reject_rate: RateOpt = 0.05, quiet: QuietOpt = False) -> None:
    """Validate inputs and account for every row; no classification.

    Prints a data-quality table (rows per reason and per file) and writes the rejected rows.
    Example: b12screen validate labs.csv --format uk-lab
    """
    from pipeline.engines.steps import check_reject_rate, prepare
    from pipeline.outputs.run_folder import check_out, input_paths
    from pipeline.outputs.tables import rejected_frame
    from pipeline.outputs.validate_report import quality_tables, write_rejected_folder
    from pipeline.state import RunOptions, input_specs

    _tune_process()
    try:
        options = RunOptions(labs=labs, patients=patients, medications=medications,
                             format=format, rules=rules, as_of=_as_of(as_of),
                             max_reject_rate=max_reject_rate)
        _check_places(options, out_dir, "validate-")
        with _progress(quiet) as progress:
            state = prepare(options, progress, classifying=False)
        folder = (Path(out_dir) if out_dir is not None
                  else Path("reports") / f"validate-{state.as_of:%Y-%m}")
        check_out(str(folder), input_paths(*input_specs(options)))
        write_rejected_folder(rejected_frame(state), folder, state)
        for table in quality_tables(state):
            out.print(table)
        out.print(f"rejected rows: {folder}", markup=False, soft_wrap=True)
        for note in state.warnings:
            err.print(f"warning: {note}", markup=False, soft_wrap=True)
        check_reject_rate(state)
    except UserError as exc:
        _fail(exc)


@app.command("sample-data")
def sample_data(
        directory: Annotated[Path, typer.Argument(help="Folder to write into.")],
        patients: Annotated[int, typer.Option("--patients", help="Number of patients.")] = 2000,
        seed: Annotated[int, typer.Option("--seed", help="Random seed.")] = 12,
        messy: Annotated[bool, typer.Option("--messy", help="Add realistic bad rows.")] = False,
        as_of: Annotated[str | None, typer.Option(
            "--as-of", help="Latest date in the data, YYYY-MM-DD (default 2026-10-31): "
                            "one extract per month builds a trend.")] = None,
) -> None:
    """Write a synthetic labs, patients and medications extract (deterministic per seed).

    Example: b12screen sample-data demo --patients 5000 --messy --as-of 2026-09-30
    """
    from pipeline.sample_data import generate

    if patients < 1:
        _fail(UserError("--patients must be at least 1", EXIT_USAGE))
    try:
        day = _as_of(as_of)
    except UserError as exc:
        _fail(exc)
    extra = {} if day is None else {"as_of": day}
    paths = generate(directory, n_patients=patients, seed=seed, messy=messy, **extra)
    for kind, path in paths.items():
        out.print(f"{kind}: {path}", markup=False, soft_wrap=True)


@app.command()
def demo(directory: Annotated[Path, typer.Option(
        "--dir", help="Where to put the demo data and outputs.")] = Path("b12screen-demo"),
         quiet: QuietOpt = False) -> None:
    """Make sample data, run the pipeline on it, and print where the report is.

    Example: b12screen demo
    """
    from pipeline.engines import screen
    from pipeline.outputs.write import write_outputs
    from pipeline.sample_data import generate
    from pipeline.state import RunOptions

    _tune_process()
    try:
        paths = generate(directory / "data", n_patients=2000, seed=12, messy=True)
        options = RunOptions(labs=str(paths["labs"]), patients=str(paths["patients"]),
                             medications=str(paths["medications"]))
        with _progress(quiet) as progress:
            state = screen(options, progress)
            folder = write_outputs(state, directory / "reports" / f"{state.as_of:%Y-%m}",
                                   None, progress)
    except UserError as exc:
        _fail(exc)
    out.print(f"sample data: {directory / 'data'}", markup=False, soft_wrap=True)
    out.print(f"outputs:     {folder}", markup=False, soft_wrap=True)
    out.print(f"report:      {folder / 'report.html'}", markup=False, soft_wrap=True)


class MonthFolders(StrEnum):
    """What ``trend`` does with two run folders for one month."""

    stop = "stop"
    latest = "latest"


@app.command()
def trend(reports_dir: Annotated[Path, typer.Argument(help="Folder holding run folders.")],
          month_folders: Annotated[MonthFolders, typer.Option(
              "--month-folders",
              help="Two run folders for one month: stop (exit 1, naming both) or use the "
                   "latest (the later as-of date).")] = MonthFolders.stop,
          ) -> None:
    """Month-on-month measures over earlier runs: trend.html and trend.csv.

    Example: b12screen trend reports --month-folders latest
    """
    from pipeline.outputs.trend import build_trend

    try:
        html, csv = build_trend(reports_dir, month_folders.value)
    except UserError as exc:
        _fail(exc)
    out.print(f"trend: {html}\ntrend data: {csv}", markup=False, soft_wrap=True)


@app.command("rules")
def rules_cmd(rules: RulesOpt = None) -> None:
    """Show the active rules table with sources, and what differs from the default.

    Example: b12screen rules --rules bsh-2014
    """
    from pipeline.config import DEFAULT_RULES, load_rules
    from pipeline.rules.classify import SITE_SETTINGS

    try:
        profile = load_rules(rules)
        default = {(r, k): v for r, k, v, _ in load_rules(DEFAULT_RULES).parameters()}
    except UserError as exc:
        _fail(exc)
    meta = profile.data["profile"]
    out.print(f"{profile.name}: {meta.get('title', '')}", markup=False, soft_wrap=True)
    out.print(f"source: {meta.get('source', '')}", markup=False, soft_wrap=True)
    table = Table(title=f"Rules profile {profile.name} ({profile.path})")
    for column in ("rule", "parameter", "value", "default", "source"):
        table.add_column(column, overflow="fold")
    for rule_id, key, value, source in profile.parameters():
        base = default.get((rule_id, key))
        differs = "" if base == value else f"{base}"
        table.add_row(rule_id, key, str(value), differs, source)
    out.print(table)
    here = {(r, k): v for r, k, v, _ in profile.parameters()}
    for site, site_profile in profile.sites.items():
        out.print(f"site {site}: profile {site_profile.name} ({site_profile.path})",
                  markup=False, soft_wrap=True)
        differs = [(r, k, v, src) for r, k, v, src in site_profile.parameters()
                   if (r, k) in SITE_SETTINGS and here.get((r, k)) != v]
        if not differs:
            out.print("  the same cut-offs as above", markup=False)
            continue
        site_table = Table(title=f"Results from site {site}: the cut-offs that differ (the "
                                 f"rest as above)")
        for column in ("rule", "parameter", "value", "above", "source"):
            site_table.add_column(column, overflow="fold")
        for rule_id, key, value, source in differs:
            site_table.add_row(rule_id, key, str(value), str(here.get((rule_id, key))), source)
        out.print(site_table)


def main() -> None:  # pragma: no cover - console entry point convenience
    app()
