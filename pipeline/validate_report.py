"""What ``b12screen validate`` shows and writes: data quality, per reason and per file."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from rich.table import Table

from pipeline.run import RunState, rejected_frame
from pipeline.write import atomic_folder, restrict, write_rejected


def write_rejected_folder(rejected: pd.DataFrame, folder: Path) -> None:
    """The rejected rows alone, in their own (owner-only) folder."""
    with atomic_folder(folder) as tmp:
        write_rejected(rejected, tmp)
        restrict(tmp, set())


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
