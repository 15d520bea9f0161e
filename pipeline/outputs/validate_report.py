"""What ``b12screen validate`` shows and writes: data quality, per reason and per file."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pandas as pd
from rich.table import Table

from pipeline import __version__
from pipeline.ingest.read import sha256_file
from pipeline.outputs.run_folder import MANIFEST, files_of, replacing, restrict
from pipeline.outputs.tables import (
    accounting_record,
    rejected_frame,
    run_configuration,
    write_json,
    write_rejected,
)
from pipeline.state import RunState


def write_rejected_folder(rejected: pd.DataFrame, folder: Path, state: RunState) -> None:
    """The rejected rows alone, in their own (owner-only) folder, with a manifest that
    lists them: a later validate or run may then replace the folder, and nothing else."""
    with replacing(folder, "validate folder") as tmp:
        write_rejected(rejected, tmp)
        write_json(validate_manifest(tmp, state), tmp / MANIFEST)
        restrict(tmp, set())


def validate_manifest(folder: Path, state: RunState) -> dict[str, Any]:
    """What a validate folder holds (every file, hashed) and the accounting behind it, laid
    out as a run's manifest lays it out (``accounting`` with ``by_input``, totals at the top
    level)."""
    accounting, totals = accounting_record(state)
    return {
        "b12screen_version": __version__,
        "kind": "validate",
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "as_of": state.as_of.isoformat() if state.as_of else None,
        **run_configuration(state),
        "accounting": accounting,
        **totals,
        "warnings": list(state.warnings),
        "outputs": {p.relative_to(folder).as_posix(): sha256_file(p)
                    for p in files_of(folder)},
    }


def quality_tables(state: RunState) -> list[Table]:
    """Rich tables: the accounting per input, and rejected rows per reason and file."""
    acc = Table(title="Row accounting (rows_read = accepted + rejected + skipped + duplicates)")
    for column in ("input", "read", "accepted", "rejected", "skipped", "duplicates", "balanced"):
        acc.add_column(column, justify="right" if column != "input" else "left")
    for kind, c in state.accounting().items():
        skipped = c.get("rows_skipped_other_tests", c.get("rows_skipped_other_medications",
                                                            c.get("rows_skipped", 0)))
        acc.add_row(kind, str(c["rows_read"]), str(c["rows_accepted"]), str(c["rows_rejected"]),
                    str(skipped), str(c["rows_exact_duplicates"]),
                    "yes" if c["balanced"] else "NO")
    rejected = rejected_frame(state)
    reasons = Table(title="Rejected rows by reason and file")
    for column in ("input", "reason", "file", "rows", "first line"):
        reasons.add_column(column, justify="right" if column in ("rows", "first line")
                           else "left", overflow="fold")
    if len(rejected):
        exploded = rejected.assign(reason=rejected["reasons"].str.split(";")).explode("reason")
        grouped = exploded.groupby(["input", "reason", "source_file"], sort=True)["source_row"]
        table = grouped.agg(["count", "min"]).reset_index()
        for kind, reason, source, count, first in table.to_numpy().tolist():  # per reason x file
            reasons.add_row(kind, reason, source, str(count), str(first))
    return [acc, reasons]
