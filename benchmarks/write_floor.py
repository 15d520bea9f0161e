"""How long DuckDB itself takes to write b12screen's two analyst tables, as b12screen writes
them: every patient of the cohort with every column of ``patients.parquet``, and every
accepted result of ``results.parquet`` (zstd, as b12screen compresses them).

The minimal script (``minimal_r1_r7.sql``) writes far smaller tables: one row per *tested*
patient with three columns, and six columns per result. This figure puts its time in
context: it is the cost of the output volume the SPEC asks for, in the same engine, before
any rule is applied. The tables are loaded into DuckDB's memory first (not timed); only the
two ``COPY ... TO`` statements are timed, with DuckDB's default threads.

    python benchmarks/write_floor.py RUN_FOLDER        # prints one line of JSON
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import duckdb

TABLES = ("patients", "results")


def write_seconds(run: Path) -> dict[str, float | int]:
    """Seconds DuckDB takes to write the run folder's two tables, and their shapes."""
    shape: dict[str, float | int] = {}
    with duckdb.connect() as con, tempfile.TemporaryDirectory() as tmp:
        con.execute("SET enable_progress_bar = false")
        for name in TABLES:
            source = str(run / f"{name}.parquet").replace("'", "''")
            con.execute(f"CREATE TABLE {name} AS SELECT * FROM read_parquet('{source}')")
            shape[f"{name}_rows"] = con.execute(f"SELECT count(*) FROM {name}").fetchone()[0]
            shape[f"{name}_columns"] = len(con.execute(f"DESCRIBE {name}").fetchall())
        started = time.perf_counter()
        for name in TABLES:
            target = str(Path(tmp) / f"{name}.parquet").replace("'", "''")
            con.execute(f"COPY {name} TO '{target}' (FORMAT parquet, COMPRESSION zstd)")
        shape["seconds"] = round(time.perf_counter() - started, 3)
    return shape


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a b12screen run folder")
    args = parser.parse_args()
    print(json.dumps(write_seconds(args.run)))


if __name__ == "__main__":
    main()
