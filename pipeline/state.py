"""A run's options and what each step has produced so far: a plain record that the engines
fill in (read, validate, classify) and the outputs read. It holds no engine logic, so the
outputs never depend on how a run was computed."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.config import ExtractFormat, RulesProfile

if TYPE_CHECKING:  # types only: the state sits below the steps that fill it
    from concurrent.futures import Future

    from pipeline.ingest.validate import Validated
    from pipeline.rules.classify import Classified

#: Called with each step's name as it starts, and again with the work done and the work in
#: all (``progress("classify", 12, 40)``) where a step can count it: the Dask engine counts
#: its cluster's tasks. The CLI shows it; ``None`` shows nothing.
Progress = Callable[..., None]


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
    partitioned: bool = False


@dataclass
class StagedTables:
    """``patients`` and ``results`` written by the workers as part files
    (``--engine dask --partitioned``) into ``folder``, a private folder beside the run
    folder, moved into the run folder when it is written. ``created``: the parent folders
    made for it (removed again if the run stops). ``outputs``: what the writing process
    keeps of the cohort instead of its rows (``pipeline.outputs.partitioned.PartOutputs``
    combined: counts); ``lists``: the worklists' sorted parts in ``folder``, which the write
    step merges as it writes them (``pipeline.outputs.partitioned.ListParts``)."""

    folder: Path
    created: list[Path]
    parts: int
    patients: int
    outputs: Any = None
    lists: Any = None


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
    staged: StagedTables | None = None
    #: Output files encoded during classification, before the run folder exists (file name
    #: -> the frame encoded and the future of its bytes): the write step lays the bytes down
    #: instead of encoding the frame again, if that frame is still the one to write.
    early: dict[str, tuple[Any, Future[Any]]] = field(default_factory=dict)

    def patients(self) -> int:
        """Patients in the cohort (the partitioned tables' rows when the workers wrote
        them, as the writing process then holds none of the patients' rows)."""
        if self.staged is not None:
            return self.staged.patients
        return len(self.classified.patients) if self.classified is not None else 0

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
