"""The steps every engine shares: load the configuration, read and validate each input,
decide the as-of date, check the reject rate, warn on an empty look-back window. The
engines (``pandas_engine``, ``dask_engine``) differ only in how they read and classify;
they import these steps, never each other.

Row accounting is kept per input and proved in the manifest:
``rows_read = accepted + rejected + skipped + duplicates``.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import TYPE_CHECKING

from pipeline.config import load_format, load_rules
from pipeline.errors import EXIT_USAGE, UserError
from pipeline.ingest.read import read_input
from pipeline.kernels.memory import trim_heap
from pipeline.state import Progress, RunOptions, RunState

if TYPE_CHECKING:  # validation (and pandera) is imported once reading has started
    from pipeline.ingest.validate import Validated


def check_as_of(options: RunOptions) -> None:
    """An as-of date after today would classify everyone ``not_tested`` and mislead."""
    today = options.today or date.today()
    if options.as_of is not None and options.as_of > today:
        raise UserError(f"--as-of {options.as_of} is after today ({today}); give a date on "
                        "or before today")


def new_state(options: RunOptions) -> RunState:
    """The run's configuration loaded and its options checked; nothing read yet."""
    if not 0 <= options.max_reject_rate <= 1:
        raise UserError("--max-reject-rate must be between 0 and 1", EXIT_USAGE)
    check_as_of(options)
    state = RunState(options, load_format(options.format), load_rules(options.rules))
    if int(state.rules.disclosure["small_count"]) == 0:  # legitimate for internal use only
        state.warnings.append(
            f"rules profile '{state.rules.name}' sets disclosure small_count = 0: no count is "
            "withheld, so measures.*, report.html, trend.* and summary.json are not safe to "
            "share outside the team")
    return state


def warn_empty_window(state: RunState) -> None:
    """Warn when no total or active B12 result falls in the as-of date's look-back window:
    every patient is then ``not_tested``, which usually means a mistyped ``--as-of``."""
    if state.staged is not None:  # partitioned: the cohort's counts, not its rows
        statuses = state.staged.outputs.figures.statuses
        everyone = state.staged.patients > 0 and statuses["not_tested"] == state.staged.patients
    else:
        patients = state.classified.patients
        everyone = len(patients) and (patients["b12_status"] == "not_tested").all()
    if everyone:
        days = int(state.rules.rule("R4")["lookback_days"])
        start = state.as_of - timedelta(days=days)
        note = (f"no total or active B12 result in the look-back window of as-of "
                f"{state.as_of} (after {start}, up to {state.as_of}): every patient is "
                "not_tested; check --as-of")
        if note not in state.warnings:
            state.warnings.append(note)


def prepare(options: RunOptions, progress: Progress | None = None,
            classifying: bool = True) -> RunState:
    """Read and validate every input; decide the as-of date. No classification yet.

    The reject-rate limit is checked before the as-of date is inferred, so an extract whose
    every row is bad gets the counts, not a complaint about the date. ``classifying``
    False (``b12screen validate``): no reject-rate stop, and no practice of last resort
    worked out for a classification that never comes.
    """
    state = new_state(options)
    with state.step("read", progress):
        raw = {"labs": read_input(options.labs, state.fmt.labs)}
        if options.patients:
            raw["patients"] = read_input(options.patients, state.fmt.patients)
        if options.medications:
            raw["medications"] = read_input(options.medications, state.fmt.medications)
    from pipeline.ingest.validate import (
        today_date,
        validate_labs,
        validate_medications,
        validate_patients,
    )

    today = options.today or today_date()
    with state.step("validate", progress):
        labs = validate_labs(raw["labs"], state.fmt, state.rules, today,
                             practices=classifying)
        state.inputs["labs"] = labs
        if classifying:
            check_reject_rate(state)
        if options.as_of is None and labs.accepted.empty and not classifying:
            state.as_of = today  # validation only: ages need a date, nothing is classified
        else:
            state.as_of = options.as_of or default_as_of(labs)
        if "patients" in raw:
            state.inputs["patients"] = validate_patients(raw["patients"], state.fmt,
                                                         state.as_of)
        if "medications" in raw:
            state.inputs["medications"] = validate_medications(raw["medications"], state.fmt)
    for validated in state.inputs.values():
        add_input_warnings(state, validated)
    if classifying:
        check_reject_rate(state)
    del raw
    trim_heap()
    return state


def add_input_warnings(state: RunState, validated: Validated) -> None:
    """An input's warnings, and what its rejected rows take out of the rules, each once:
    the same lines whichever engine validated it (the Dask engine: its merged partitions)."""
    from pipeline.ingest.validate import rejected_warning  # loaded: the input was validated

    state.warnings += [w for w in (*validated.warnings, *rejected_warning(validated))
                       if w not in state.warnings]


def default_as_of(labs: Validated) -> date:
    """The latest collected_at in the labs extract, so reruns of one extract are
    reproducible: any row's date counts (other tests too), unless it is unparseable,
    before 1900 or after today (those rows are rejected for their date)."""
    if not labs.counts["rows_accepted"] or labs.latest_collected is None:
        from pipeline.ingest.validate import NO_CODE_MAPPED  # loaded: it validated labs

        wrong_format = [w for w in labs.warnings if w.startswith(NO_CODE_MAPPED)]
        if wrong_format:  # the cause to fix first: --as-of would only date an empty month
            raise UserError(f"{wrong_format[0]}; so there is no B12 or MMA result to infer "
                            "the as-of date from: check --format (docs/formats.md)")
        raise UserError("labs: no usable B12 or MMA results, so the as-of date cannot be"
                        " inferred; give --as-of")
    return labs.latest_collected.date()


#: Below this many rows a reject *rate* says little (one bad row in 19 is 5.3%), and the
#: SPEC promises that one bad row never stops a run; small inputs stop only when no row
#: at all is usable.
MIN_ROWS_FOR_REJECT_RATE = 100


def check_reject_rate(state: RunState) -> None:
    """Stop when too many rows of an input were rejected (skipped/duplicate rows excluded).

    The rate is rejected / (accepted + rejected) for each input. Inputs with fewer than
    ``MIN_ROWS_FOR_REJECT_RATE`` such rows stop only when every one of them was rejected.
    """
    limit = state.options.max_reject_rate
    for kind, v in state.inputs.items():
        c = v.counts
        considered = c["rows_accepted"] + c["rows_rejected"]
        small = considered < MIN_ROWS_FOR_REJECT_RATE and c["rows_accepted"] > 0
        if considered and not small and c["rows_rejected"] / considered > limit:
            raise UserError(
                f"{kind}: {c['rows_rejected']} of {considered} rows rejected"
                f" ({c['rows_rejected'] / considered:.1%}), above --max-reject-rate"
                f" {limit:.1%}; see the reasons with 'b12screen validate'")
