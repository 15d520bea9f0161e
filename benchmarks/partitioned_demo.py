"""``--engine dask --partitioned`` against the pandas engine on one generated extract: the
process that runs ``b12screen`` (the client) stays small while a cluster does the work.

    python benchmarks/partitioned_demo.py                      # 20M rows (generated once)
    python benchmarks/partitioned_demo.py --rows 2000000 --work /tmp/demo-2m

A ``LocalCluster`` of 4 worker processes (1 thread and ``--memory-limit`` each, default
1.5 GiB; they spill data to disk from 30-40 % of it, so that a task's own peak fits) is
started in a subprocess, so that the ``b12screen`` process is only the client:

    b12screen run labs.parquet --patients patients.csv --medications medications.csv \\
        --as-of 2026-10-31 --engine dask --partitioned --scheduler tcp://127.0.0.1:PORT \\
        --out WORK/partitioned

The patients and medications CSVs are read as folders of files of ``--csv-rows`` rows (the
Dask engine reads a CSV file per task). The same inputs are then run with the pandas engine.
Each run's peak resident memory is the ``b12screen`` process's own (``os.wait4``), its time
is wall-clock. Then the outputs are
compared: ``patients/`` and ``results/`` against the pandas engine's single files (every
row, by DuckDB: rows of either missing from the other), and measures, summary, report,
worklists (CSV and XLSX) and worklist state byte for byte. Exit 1 if anything differs.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
#: Outputs that must be identical, byte for byte (report.html: but for when it was made).
SAME = ("measures.csv", "measures.parquet", "summary.json", "report.html", "worklists.xlsx",
        "worklist_state.parquet", "rejected.parquet", "worklists/urgent.csv",
        "worklists/mma.csv", "worklists/supplementation.csv",
        "worklists/metformin_monitoring.csv", "worklists/retest.csv", "worklists/resolved.csv")
#: The cluster, in its own process: prints the scheduler's address, runs until stdin closes.
CLUSTER = """
import logging, sys
import dask
from distributed import LocalCluster
# small workers: keep little data in memory (spill early), so that a task's own peak fits
dask.config.set({"distributed.worker.memory.target": 0.3, "distributed.worker.memory.spill": 0.4,
                 "distributed.worker.memory.pause": 0.7})
with LocalCluster(n_workers=int(sys.argv[1]), threads_per_worker=1, memory_limit=sys.argv[2],
                  processes=True, dashboard_address="127.0.0.1:0",
                  scheduler_kwargs={"dashboard": False}, silence_logs=logging.ERROR) as cluster:
    print(cluster.scheduler_address, flush=True)
    sys.stdin.read()
"""


def _extract(rows: int, shape: str, seed: int, folder: Path) -> Path:
    """The generated extract (made once; ``generate.py`` writes the same bytes each time)."""
    if not (folder / ".generated").is_file():
        subprocess.run([sys.executable, str(HERE / "generate.py"), "--rows", str(rows),
                        "--shape", shape, "--seed", str(seed), "--out", str(folder)],
                       check=True)
        (folder / ".generated").write_text(f"{rows} {shape} {seed}\n")
    return folder


def _split_csv(source: Path, folder: Path, rows: int) -> Path:
    """``source`` as a folder of CSV files of at most ``rows`` rows each (the header on each),
    split once: the Dask engine reads each CSV file as one task, so a worker holds one file
    at a time, and a 1.5 GiB worker cannot hold a 6.7M-row patients file."""
    if (folder / ".split").is_file():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    header = folder.parent / f".{source.stem}.header"
    with source.open("rb") as file:
        header.write_bytes(file.readline())
    body = subprocess.Popen(["tail", "-n", "+2", str(source)], stdout=subprocess.PIPE)
    subprocess.run(["split", "-l", str(rows), "-d", "-a", "3", "--additional-suffix=.csv",
                    "--filter", f"cat {header} - > $FILE", "-", str(folder / f"{source.stem}-")],
                   stdin=body.stdout, check=True)
    body.wait()
    (folder / ".split").write_text(f"{rows}\n")
    return folder


def _measured(args: list[str]) -> tuple[float, float, int]:
    """Run ``b12screen args``; (seconds, peak RSS in GiB of that process, exit code)."""
    command = [sys.executable, "-c", "import sys; from pipeline.cli import app; "
               "sys.argv[0] = 'b12screen'; app()", *args]
    started = time.perf_counter()
    process = subprocess.Popen(command)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    return seconds, usage.ru_maxrss / 2**20, os.waitstatus_to_exitcode(status)


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() \
        else path.stat().st_size


def _members(path: Path) -> bytes:
    """A zip's member names and contents."""
    with zipfile.ZipFile(path) as archive:
        return b"".join(i.filename.encode() + archive.read(i) for i in archive.infolist())


def _differences(single: Path, parts: Path) -> list[str]:
    """What differs between the pandas engine's outputs and the partitioned run's."""
    import duckdb

    found = []
    for table in ("patients", "results"):
        a = f"read_parquet('{single / table}.parquet')"
        b = f"read_parquet('{parts / table}/*.parquet')"
        counts = duckdb.sql(f"select (select count(*) from {a}), (select count(*) from {b}),"
                            f" (select count(*) from (select * from {a} except all"
                            f"                        select * from {b})),"
                            f" (select count(*) from (select * from {b} except all"
                            f"                        select * from {a}))").fetchall()[0]
        if counts[0] != counts[1] or counts[2] or counts[3]:
            found.append(f"{table}: {counts[0]} rows vs {counts[1]}; {counts[2]} only in the "
                         f"single file, {counts[3]} only in the parts")
    for name in SAME:
        data = [(run / name).read_bytes() for run in (single, parts)]
        if name.endswith(".xlsx"):  # the sheets, not how the zip compressed them
            data = [_members(run / name) for run in (single, parts)]
        if name.endswith(".html"):
            data = [re.sub(rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[^<\"]*", b"", d) for d in data]
        if data[0] != data[1]:
            found.append(f"{name} differs")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000_000, help="lab rows (about)")
    parser.add_argument("--shape", default="classic", help="generate.py's --shape")
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument("--work", type=Path, default=Path("/tmp/b12screen-partitioned-demo"),
                        help="folder for the extract and the runs")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--memory-limit", default="1.5GiB", help="per worker")
    parser.add_argument("--csv-rows", type=int, default=500_000,
                        help="rows per file of the patients and medications CSVs")
    parser.add_argument("--as-of", default="2026-10-31",
                        help="both runs' --as-of, as a monthly run gives it (the Dask engine "
                             "then validates each partition within its classification task)")
    parser.add_argument("--no-pandas", action="store_true",
                        help="skip the pandas engine's run (and the comparison)")
    args = parser.parse_args(argv)
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    extract = _extract(args.rows, args.shape, args.seed,
                       work / f"extract-{args.shape}-{args.rows}-seed{args.seed}")
    inputs = ["run", str(extract / "labs.parquet"), "--as-of", args.as_of, "--quiet"]
    for kind in ("patients", "medications"):
        inputs += [f"--{kind}", str(_split_csv(extract / f"{kind}.csv", work / f"{kind}-split",
                                               args.csv_rows))]
    for run in ("partitioned", "pandas"):
        shutil.rmtree(work / run, ignore_errors=True)

    cluster = subprocess.Popen([sys.executable, "-c", CLUSTER, str(args.workers),
                                args.memory_limit], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True)
    try:
        address = cluster.stdout.readline().strip()
        rows = [("dask --partitioned", *_measured(
            [*inputs, "--engine", "dask", "--partitioned", "--scheduler", address,
             "--out", str(work / "partitioned")]))]
    finally:
        cluster.stdin.close()
        cluster.wait(timeout=120)
    if not args.no_pandas:
        rows.append(("pandas", *_measured([*inputs, "--out", str(work / "pandas")])))

    print(f"\n{args.rows:,} lab rows ({args.shape}), {_size(extract) / 2**20:,.0f} MiB of "
          f"input; cluster: {args.workers} workers x 1 thread, {args.memory_limit} each")
    print(f"{'engine':<20} {'seconds':>8} {'client peak RSS':>16} {'exit':>5}")
    for name, seconds, rss, code in rows:
        print(f"{name:<20} {seconds:8.1f} {rss:13.2f} GiB {code:5d}")
    if any(code for *_, code in rows):
        return 1
    for name in ("patients", "results"):
        print(f"{name}/: {len(list((work / 'partitioned' / name).iterdir()))} parts, "
              f"{_size(work / 'partitioned' / name) / 2**20:,.0f} MiB")
    if args.no_pandas:
        return 0
    found = _differences(work / "pandas", work / "partitioned")
    print("outputs: " + ("identical (tables' rows, measures, summary, report, worklists)"
                         if not found else "; ".join(found)))
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
