"""One run of the pipeline: read -> validate -> harmonise -> classify -> write.

This module orchestrates only; every decision lives in ``validate``, ``harmonise``,
``rules`` and ``classify``. It records per-step timings and the row accounting that the
manifest proves: ``rows_read = accepted + rejected + skipped + duplicates``.
"""

from __future__ import annotations

import platform
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from pipeline import __version__
from pipeline.classify import (
    Classified,
    band_results,
    classify,
    cohort_ids,
    cohort_positions,
    sorted_cohort,
)
from pipeline.config import ExtractFormat, RulesProfile, load_format, load_rules
from pipeline.errors import EXIT_USAGE, UserError
from pipeline.memory import trim_heap, use_prompt_memory_pool
from pipeline.read import read_input

if TYPE_CHECKING:  # validation (and pandera) is imported once reading has started
    from pipeline.validate import Validated

Progress = Callable[[str], None]


@dataclass
class RunOptions:
    labs: str
    patients: str | None = None
    medications: str | None = None
    format: str | None = None
    rules: str | None = None
    as_of: date | None = None
    out: Path | None = None
    engine: str = "pandas"
    scheduler: str | None = None
    max_reject_rate: float = 0.05
    previous: Path | None = None
    today: date | None = None


@dataclass
class RunState:
    options: RunOptions
    fmt: ExtractFormat
    rules: RulesProfile
    inputs: dict[str, Validated] = field(default_factory=dict)
    as_of: date | None = None
    timings: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    classified: Classified | None = None

    @contextmanager
    def step(self, name: str, progress: Progress | None) -> Iterator[None]:
        if progress:
            progress(name)
        start = time.perf_counter()
        yield
        self.timings[name] = round(self.timings.get(name, 0.0) + time.perf_counter() - start, 3)

    def accounting(self) -> dict[str, Any]:
        """Per-input row accounting, each with its equation checked."""
        out: dict[str, Any] = {}
        for kind, v in self.inputs.items():
            counts = dict(v.counts)
            parts = sum(n for k, n in counts.items() if k != "rows_read")
            counts["balanced"] = parts == counts["rows_read"]
            out[kind] = counts
        return out


def input_specs(options: RunOptions) -> list[str]:
    """Every input path the options name: the extracts, and format and rules files given
    as paths (shipped names are not paths)."""
    configs = [c for c in (options.format, options.rules)
               if c and (c.endswith(".toml") or "/" in c)]
    return [s for s in (options.labs, options.patients, options.medications, *configs) if s]


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
    use_prompt_memory_pool()
    return RunState(options, load_format(options.format), load_rules(options.rules))


def screen(options: RunOptions, progress: Progress | None = None) -> RunState:
    """Read, validate and classify with the chosen engine; the outputs are written apart."""
    if options.engine == "dask":
        from pipeline.engine_dask import screen_dask

        state = screen_dask(options, progress)
    else:
        state = prepare(options, progress)
        run_classification(state, progress)
    warn_empty_window(state)
    return state


def warn_empty_window(state: RunState) -> None:
    """Warn when no total or active B12 result falls in the as-of date's look-back window:
    every patient is then ``not_tested``, which usually means a mistyped ``--as-of``."""
    patients = state.classified.patients
    if len(patients) and (patients["b12_status"] == "not_tested").all():
        days = int(state.rules.rule("R4")["lookback_days"])
        start = state.as_of - timedelta(days=days)
        note = (f"no total or active B12 result in the look-back window of as-of "
                f"{state.as_of} (after {start}, up to {state.as_of}): every patient is "
                "not_tested; check --as-of")
        if note not in state.warnings:
            state.warnings.append(note)


def prepare(options: RunOptions, progress: Progress | None = None,
            check_rate: bool = True) -> RunState:
    """Read and validate every input; decide the as-of date. No classification yet.

    The reject-rate limit is checked before the as-of date is inferred, so an extract whose
    every row is bad gets the counts, not a complaint about the date.
    """
    state = new_state(options)
    with state.step("read", progress):
        raw = {"labs": read_input(options.labs, state.fmt.labs)}
        if options.patients:
            raw["patients"] = read_input(options.patients, state.fmt.patients)
        if options.medications:
            raw["medications"] = read_input(options.medications, state.fmt.medications)
    from pipeline.validate import (
        today_date,
        validate_labs,
        validate_medications,
        validate_patients,
    )

    today = options.today or today_date()
    with state.step("validate", progress):
        labs = validate_labs(raw["labs"], state.fmt, state.rules, today)
        state.inputs["labs"] = labs
        if check_rate:
            check_reject_rate(state)
        if options.as_of is None and labs.accepted.empty and not check_rate:
            state.as_of = today  # validation only: ages need a date, nothing is classified
        else:
            state.as_of = options.as_of or default_as_of(labs)
        if "patients" in raw:
            state.inputs["patients"] = validate_patients(raw["patients"], state.fmt,
                                                         state.as_of)
        if "medications" in raw:
            state.inputs["medications"] = validate_medications(raw["medications"], state.fmt)
    for validated in state.inputs.values():
        state.warnings += [w for w in validated.warnings if w not in state.warnings]
    if check_rate:
        check_reject_rate(state)
    del raw
    trim_heap()
    return state


def default_as_of(labs: Validated) -> date:
    """The latest collected_at in the labs extract, so reruns of one extract are
    reproducible: any row's date counts (other tests too), unless it is unparseable,
    before 1900 or after today (those rows are rejected for their date)."""
    if not labs.counts["rows_accepted"] or labs.latest_collected is None:
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


def run_classification(state: RunState, progress: Progress | None = None) -> Classified:
    """Classify the cohort read and validated by :func:`prepare` (the pandas engine)."""
    with state.step("classify", progress):
        state.classified = _classify_pandas(state)
    for validated in state.inputs.values():  # the cohort is built: its ids are not needed
        validated.ids, validated.id_values = validated.ids.iloc[:0], None
    trim_heap()
    return state.classified


def _classify_pandas(state: RunState) -> Classified:
    """The cohort is sorted on a second thread while the results are banded (the sort
    releases the GIL); the patient codes from validation then give each row's position."""
    labs = state.inputs["labs"]
    patients = state.inputs.get("patients")
    meds = state.inputs.get("medications")
    with ThreadPoolExecutor(max_workers=1) as pool:
        if len(state.inputs) == 1 and labs.id_values is not None:  # one sort gives both
            cohort_at = pool.submit(sorted_cohort, labs.id_values)
        else:
            cohort_at = pool.submit(lambda: (cohort_ids(*(v.ids for v in
                                                          state.inputs.values())), None))
        results = band_results(labs.accepted, state.rules)
        cohort, at = cohort_at.result()
    if labs.id_codes is not None:  # ids were factorised once, at validation
        if at is None:
            at = cohort_positions(cohort, labs.id_values)
        results = results.assign(pid=at[labs.id_codes])
    return classify(results, patients.accepted if patients else None,
                    meds.accepted if meds else None, cohort, state.rules, state.as_of)


def rejected_frame(state: RunState) -> pd.DataFrame:
    frames = [v.rejected for v in state.inputs.values() if len(v.rejected)]
    if not frames:
        base = ["input", "source_file", "source_row", "reasons"]
        cols = base + [c for c in state.inputs["labs"].original_columns if c not in base]
        return pd.DataFrame({c: pd.Series([], dtype="int64" if c == "source_row" else "str")
                             for c in cols})
    out = pd.concat(frames, ignore_index=True)
    text_cols = [c for c in out.columns if c != "source_row"]
    out[text_cols] = out[text_cols].astype("str")
    return out


def rejected_by_reason(rejected: pd.DataFrame) -> dict[str, int]:
    if rejected.empty:
        return {}
    codes = rejected["reasons"].str.split(";").explode()
    return {str(k): int(v) for k, v in codes.value_counts().sort_index().items()}


def environment() -> dict[str, str]:
    return {"b12screen": __version__, "python": sys.version.split()[0],
            "pandas": pd.__version__, "platform": platform.platform()}
