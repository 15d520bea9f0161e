"""Time b12screen against a DuckDB script (and polars) doing the same core work.

Example (from the repository root, with the ``bench`` extras installed)::

    python benchmarks/run_benchmark.py --sizes 1000000 2000000 10000000 --repeats 3

For each size it writes a canonical Parquet extract with ``benchmarks/generate.py`` (kept
under ``--work`` and reused when the same size and seed were generated before), then runs
three whole processes on that same file, ``--repeats`` times each, interleaved:

- ``b12screen run LABS --as-of D --out DIR --quiet`` (every step and every output),
- ``benchmarks/reference.py``'s ``run_reference``: the DuckDB SQL of R1-R7 and the two
  analyst tables, and
- ``benchmarks/reference_polars.py``: the same in polars, for context;
- on the ``typed`` shape also ``benchmarks/reference_minimal.py``: R1-R7 as an analyst writes
  them over clean typed columns (``minimal_r1_r7.sql``), the yardstick of issue 16.

It prints the median wall time, the ratio to DuckDB, lab rows per second, the peak RSS of
each process (``/usr/bin/time -v``, else ``os.wait4``), b12screen's per-step timings from
the run folder's ``manifest.json``, and whether the three agree on every patient's
``b12_status``; the same report is written as Markdown to ``benchmarks/results/<date>.md``.
The targets are checked for the sizes that were run: b12screen <= 2x DuckDB at 2M and 10M
rows, peak RSS <= 3 GiB at 10M, t(10M)/t(1M) <= 12; on the typed shape b12screen <= 2x the
minimal script, peak RSS <= 2.5 GiB at 10M, t(10M)/t(1M) <= 10.

``--shape classic|chemistry|typed`` chooses the extract (see ``benchmarks/generate.py``).
``--compare REF`` also times another commit of b12screen on the same extract: REF is checked
out once as a detached ``git worktree`` under ``--work`` and run as its own process, from its
own folder, with its own ``configs/``, interleaved with the current tree's runs; the report
adds its median, the after/before ratio and whether it gives DuckDB's statuses too::

    python benchmarks/run_benchmark.py --sizes 2000000 --repeats 3 --compare HEAD~1
    python benchmarks/run_benchmark.py --sizes 20000 --repeats 1 --compare HEAD --shape chemistry
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
GNU_TIME = Path("/usr/bin/time")
TOOLS = ("b12screen", "duckdb", "polars")
MINIMAL = "minimal"  # the minimal DuckDB script (typed extracts only: it parses no text)
BEFORE = "before"  # the --compare commit's b12screen
SHAPES = ("classic", "chemistry", "typed")
AS_OF = "2026-10-31"  # the generator's default: the latest date in a clean extract
TARGET_RATIO = 2.0
TARGET_RSS_GIB = 3.0
TARGET_SCALING = 12.0
#: Issue 16's targets on the typed shape: against the minimal script, at 2M and 10M rows.
TYPED_TARGET_RATIO = 2.0
TYPED_TARGET_RSS_GIB = 2.5
TYPED_TARGET_SCALING = 10.0

# Another commit's b12screen, imported from its worktree (ahead of the installed editable
# copy, whose finder comes after sys.path) and started through its own entry point.
_BEFORE_SNIPPET = """\
import importlib, sys
sys.path.insert(0, {root!r})
sys.argv[0] = "b12screen"
package = importlib.import_module("pipeline")
if not package.__file__.startswith({root!r}):
    sys.exit("the before run imported " + package.__file__ + ", not the worktree's package")
getattr(importlib.import_module({module!r}), {attr!r})()
"""

_DUCKDB_SNIPPET = """\
import sys
from datetime import date
from pathlib import Path
sys.path.insert(0, {here!r})
from reference import run_reference
run_reference(Path(sys.argv[1]), date.fromisoformat(sys.argv[2]), Path(sys.argv[3]),
              today=date.fromisoformat(sys.argv[4]))
"""


@dataclass
class Timed:
    """One process: wall seconds, peak resident set size, b12screen's step timings, and
    CPU seconds (user + system, all threads): on a shared machine another process's load
    stretches the wall time much more than the CPU time."""

    seconds: float
    peak_rss_bytes: int
    steps: dict[str, float] = field(default_factory=dict)
    cpu_seconds: float = 0.0


@dataclass
class SizeResult:
    requested: int
    rows: int
    labs: Path
    runs: dict[str, list[Timed]] = field(default_factory=dict)
    agreement: dict[str, str] = field(default_factory=dict)
    #: DuckDB writing b12screen's own two tables (``write_floor.py``): seconds and shapes
    write_floor: dict[str, float | int | str] = field(default_factory=dict)

    def median(self, tool: str) -> float:
        return statistics.median(t.seconds for t in self.runs[tool])

    def median_cpu(self, tool: str) -> float:
        return statistics.median(t.cpu_seconds for t in self.runs[tool])

    def peak_rss(self, tool: str) -> int:
        return max(t.peak_rss_bytes for t in self.runs[tool])

    def steps(self, tool: str = "b12screen") -> dict[str, float]:
        runs = self.runs[tool]
        names = list(dict.fromkeys(k for t in runs for k in t.steps))
        return {k: statistics.median(t.steps.get(k, 0.0) for t in runs) for k in names}


def _b12screen() -> list[str]:
    """The installed console script beside this interpreter, else ``python -m``."""
    script = Path(sys.executable).with_name("b12screen")
    if script.exists():
        return [str(script)]
    found = shutil.which("b12screen")
    return [found] if found else [sys.executable, "-c",
                                  "import sys; from pipeline.cli import app; "
                                  "sys.argv[0] = 'b12screen'; app()"]


def timed_process(cmd: list[str], log: Path, cwd: Path = ROOT) -> Timed:
    """Run ``cmd`` to completion; wall time and peak RSS (kilobytes from the kernel)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    rss_file = log.with_suffix(".time")
    use_gnu_time = GNU_TIME.exists()
    full = [str(GNU_TIME), "-v", "-o", str(rss_file), *cmd] if use_gnu_time else cmd
    with log.open("wb") as out:
        started = time.perf_counter()
        proc = subprocess.Popen(full, stdout=out, stderr=subprocess.STDOUT, cwd=cwd)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        lines = log.read_text(errors="replace").strip().splitlines()
        last = f" ({lines[-1].strip()})" if lines else ""
        raise RuntimeError(f"exit code {proc.returncode}{last}: {' '.join(cmd)}; see {log}")
    peak_kib = usage.ru_maxrss
    if use_gnu_time:
        for line in rss_file.read_text().splitlines():
            if "Maximum resident set size" in line:
                peak_kib = int(line.rsplit(":", 1)[1])
    return Timed(seconds, peak_kib * 1024, cpu_seconds=usage.ru_utime + usage.ru_stime)


def generate(rows: int, work: Path, seed: int, shape: str = "classic") -> Path:
    """The canonical extract for ``rows`` (reused if generated before with these args)."""
    prefix = "extract" if shape == "classic" else f"extract-{shape}"  # classic: earlier name
    folder = work / f"{prefix}-{rows}-seed{seed}"
    stamp = folder / ".generated"
    labs = folder / "labs.parquet"
    if stamp.exists() and labs.exists():
        return labs
    if folder.exists():
        shutil.rmtree(folder)
    subprocess.run([sys.executable, str(HERE / "generate.py"), "--rows", str(rows), "--out",
                    str(folder), "--seed", str(seed), "--shape", shape], check=True, cwd=ROOT)
    stamp.write_text(f"rows={rows} seed={seed} shape={shape}\n")
    return labs


@dataclass
class Before:
    """The --compare commit: its worktree and how to start its b12screen."""

    ref: str
    commit: str
    root: Path

    def command(self) -> list[str]:
        """``python -c`` importing the worktree's package through its own entry point."""
        module, attr = "pipeline.cli", "app"
        pyproject = self.root / "pyproject.toml"
        if pyproject.exists():
            with pyproject.open("rb") as fh:
                scripts = tomllib.load(fh).get("project", {}).get("scripts", {})
            if ":" in scripts.get("b12screen", ""):
                module, attr = scripts["b12screen"].split(":", 1)
        return [sys.executable, "-c", _BEFORE_SNIPPET.format(root=str(self.root), module=module,
                                                             attr=attr)]


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, check=True, capture_output=True,
                          text=True).stdout.strip()


def worktree(ref: str, work: Path) -> Before:
    """A detached worktree of ``ref`` under ``work`` (made once, then reused)."""
    try:
        commit = _git("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    except subprocess.CalledProcessError:
        raise SystemExit(f"--compare: {ref!r} is not a commit of {ROOT}") from None
    root = (work / "worktrees" / commit[:12]).resolve()
    if not (root / ".git").exists():
        root.parent.mkdir(parents=True, exist_ok=True)
        _git("worktree", "prune")  # forget worktrees whose folders were deleted
        _git("worktree", "add", "--detach", str(root), commit)
    elif _git("-C", str(root), "rev-parse", "HEAD") != commit:
        raise SystemExit(f"--compare: {root} is not at {commit}; remove it (git worktree "
                         "remove) and run again")
    return Before(ref, commit, root)


def commands(tool: str, labs: Path, out: Path, today: str,
             before: Before | None = None) -> list[str]:
    if tool in ("b12screen", BEFORE):
        program = _b12screen() if tool == "b12screen" else before.command()
        return [*program, "run", str(labs), "--as-of", AS_OF, "--out", str(out), "--quiet"]
    if tool == "duckdb":
        return [sys.executable, "-c", _DUCKDB_SNIPPET.format(here=str(HERE)), str(labs), AS_OF,
                str(out), today]
    if tool == MINIMAL:
        return [sys.executable, str(HERE / "reference_minimal.py"), str(labs), "--as-of", AS_OF,
                "--out", str(out)]
    return [sys.executable, str(HERE / "reference_polars.py"), str(labs), "--as-of", AS_OF,
            "--out", str(out), "--today", today]


def _statuses(path: Path) -> pd.Series:
    frame = pd.read_parquet(path, columns=["patient_id", "b12_status"])
    return frame.set_index("patient_id")["b12_status"].astype("str")


def agreement(outs: dict[str, Path]) -> dict[str, str]:
    """Do b12screen and polars give DuckDB's b12_status for every patient DuckDB lists?

    The reference's cohort is the patients with a B12/MMA row; b12screen's also holds
    patients with only other tests (all ``not_tested``), so compare on DuckDB's cohort.
    """
    ref = _statuses(outs["duckdb"] / "reference_patients.parquet")
    found = {"b12screen": outs["b12screen"] / "patients.parquet",
             "polars": outs["polars"] / "polars_patients.parquet"}
    if BEFORE in outs:
        found[BEFORE] = outs[BEFORE] / "patients.parquet"
    if MINIMAL in outs:
        found[MINIMAL] = outs[MINIMAL] / "minimal_patients.parquet"
    verdict: dict[str, str] = {}
    for tool, path in found.items():
        other = _statuses(path).reindex(ref.index)
        differ = int((other.fillna("<missing>") != ref).sum())
        verdict[tool] = (f"all {len(ref):,} agree" if differ == 0
                         else f"{differ:,} of {len(ref):,} differ")
    return verdict


def tools(before: Before | None, shape: str = "classic") -> tuple[str, ...]:
    """The processes timed: the current tree's b12screen, the --compare one right after it
    (right before it every other repeat: ``_in_turn``), and on the typed shape the minimal
    DuckDB script beside the full reference."""
    timed = TOOLS if before is None else (TOOLS[0], BEFORE, *TOOLS[1:])
    return (*timed[:-1], MINIMAL, timed[-1]) if shape == "typed" else timed


def _in_turn(timed: tuple[str, ...], repeat: int) -> tuple[str, ...]:
    """The tools in the order of this repeat: with ``--compare``, the two trees swap places
    every other repeat. A run straight after another tool's (which freed gigabytes and left
    its output to be flushed) was measured 5-8 % slower at 10M rows, so with a fixed order
    the tree always run first looked slower than the one run right after it."""
    if repeat % 2 == 0 or BEFORE not in timed:
        return timed
    at = timed.index(BEFORE)
    return (*timed[:at - 1], timed[at], timed[at - 1], *timed[at + 1:])


def run_size(rows: int, work: Path, repeats: int, seed: int, today: str,
             shape: str = "classic", before: Before | None = None) -> SizeResult:
    labs = generate(rows, work, seed, shape)
    result = SizeResult(rows, pq.ParquetFile(labs).metadata.num_rows, labs,
                        {tool: [] for tool in tools(before, shape)})
    runs = work / (f"runs-{rows}" if shape == "classic" else f"runs-{shape}-{rows}")
    shutil.rmtree(runs, ignore_errors=True)
    last: dict[str, Path] = {}
    for i in range(repeats):
        for tool in _in_turn(tools(before, shape), i):
            out = runs / f"{tool}-{i + 1}"
            cwd = before.root if tool == BEFORE and before else ROOT
            timed = timed_process(commands(tool, labs, out, today, before),
                                  runs / f"{tool}-{i + 1}.log", cwd)
            if tool in ("b12screen", BEFORE):
                manifest = json.loads((out / "manifest.json").read_text())
                timings = manifest.get("timings_seconds", {})
                timed.steps = {k: float(v) for k, v in timings.items()}
            result.runs[tool].append(timed)
            print(f"  {rows:>11,} rows  {tool:<9} run {i + 1}: {timed.seconds:7.2f} s  "
                  f"CPU {timed.cpu_seconds:7.2f} s  "
                  f"peak RSS {timed.peak_rss_bytes / 2**30:5.2f} GiB", flush=True)
            if tool in last:
                shutil.rmtree(last[tool], ignore_errors=True)
            last[tool] = out
    result.agreement = agreement(last)
    result.write_floor = write_floor(last["b12screen"], runs / "write-floor.log")
    return result


def write_floor(run: Path, log: Path) -> dict[str, float | int | str]:
    """``write_floor.py`` on a b12screen run folder: how long DuckDB takes to write the
    same two tables (once per size, for context; not one of the timed tools). Empty if it
    failed: the timed runs' report is still written, and says so."""
    done = subprocess.run([sys.executable, str(HERE / "write_floor.py"), str(run)],
                          capture_output=True, text=True, cwd=ROOT)
    log.write_text(done.stdout + done.stderr, encoding="utf-8")
    if done.returncode != 0:
        print(f"  write_floor.py failed; see {log}", flush=True)
        return {"log": str(log)}
    return json.loads(done.stdout)


def machine() -> str:
    mem = ""
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        kib = int(meminfo.read_text().split("MemTotal:", 1)[1].split()[0])
        mem = f", {kib / 2**20:.0f} GiB RAM"
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [ln.split(":", 1)[1].strip() for ln in cpuinfo.read_text().splitlines()
                 if ln.startswith("model name")]
        cpu = names[0] if names else cpu
    return f"{os.cpu_count()} cores ({cpu}){mem}, {platform.system()} {platform.release()}"


def versions() -> str:
    import duckdb
    import polars
    import pyarrow

    import pipeline

    return (f"Python {platform.python_version()}, b12screen {pipeline.__version__}, "
            f"pandas {pd.__version__}, pyarrow {pyarrow.__version__}, "
            f"duckdb {duckdb.__version__}, polars {polars.__version__}")


def _commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, check=True,
                              capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, check=True,
                               capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + (" + uncommitted changes" if dirty else "")


def _gib(n: int) -> str:
    return f"{n / 2**30:.2f}"


def _label(tool: str, before: Before | None) -> str:
    return f"b12screen @ {before.commit[:9]} (before)" if tool == BEFORE and before else tool


def _command(results: list[SizeResult], repeats: int, shape: str,
             before: Before | None) -> str:
    extra = "" if shape == "classic" else f" --shape {shape}"
    extra += f" --compare {before.ref}" if before else ""
    return (f"python benchmarks/run_benchmark.py --sizes "
            f"{' '.join(str(r.requested) for r in results)} --repeats {repeats}{extra}")


def report(results: list[SizeResult], repeats: int, shape: str = "classic",
           before: Before | None = None) -> str:
    lines = [
        f"# b12screen benchmark, {date.today().isoformat()}",
        "",
        f"- Machine: {machine()}",
        f"- Software: {versions()}",
        f"- Code: {_commit()}",
        f"- Command: `{_command(results, repeats, shape, before)}`",
        f"- Extract: `{shape}` shape (benchmarks/generate.py)",
        f"- Each figure: median wall time of {repeats} whole-process runs (peak RSS: the "
        "largest of the runs). b12screen runs every step and writes every output; DuckDB and "
        "polars apply R1-R7 and write the two analyst tables.",
    ]
    if before:
        lines.append(f"- Before: `{before.ref}` = commit {before.commit[:12]}, run from its "
                     f"worktree {before.root} on the same extract, interleaved with the "
                     "current tree's runs.")
    minimal = shape == "typed"
    if minimal:
        lines.append("- minimal: `reference_minimal.py` (`minimal_r1_r7.sql`), R1-R7 as an "
                     "analyst writes them over a clean typed extract (no text parsing, "
                     "censoring, bad rows or accounting); DuckDB is the full reference.")
    lines += [
        "",
        "| lab rows | tool | median s | × DuckDB | " + ("× minimal | " if minimal else "")
        + "rows/s | peak RSS GiB | runs (s) |",
        "|---:|---|---:|---:|" + ("---:|" if minimal else "") + "---:|---:|---|",
    ]
    for r in results:
        duck = r.median("duckdb")
        for tool in tools(before, shape):
            med = r.median(tool)
            runs = ", ".join(f"{t.seconds:.1f}" for t in r.runs[tool])
            least = f"{med / r.median(MINIMAL):.2f} | " if minimal else ""
            lines.append(f"| {r.rows:,} | {_label(tool, before)} | {med:.2f} | "
                         f"{med / duck:.2f} | {least}{r.rows / med:,.0f} | "
                         f"{_gib(r.peak_rss(tool))} | {runs} |")
    if before:
        lines += ["", f"After (current tree) against before ({before.ref}, "
                  f"{before.commit[:12]}): ratio of medians, below 1 is faster.", "",
                  "| lab rows | after s | before s | after / before | CPU s after | "
                  "CPU s before | CPU after / before | peak RSS after / before |",
                  "|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in results:
            after, old = r.median("b12screen"), r.median(BEFORE)
            cpu, cpu_old = r.median_cpu("b12screen"), r.median_cpu(BEFORE)
            rss = r.peak_rss("b12screen") / r.peak_rss(BEFORE)
            lines.append(f"| {r.rows:,} | {after:.2f} | {old:.2f} | {after / old:.2f} | "
                         f"{cpu:.2f} | {cpu_old:.2f} | {cpu / cpu_old:.2f} | {rss:.2f} |")
    stepped = [t for t in tools(before, shape) if t in ("b12screen", BEFORE)]
    steps = {(id(r), t): r.steps(t) for r in results for t in stepped}
    names = list(dict.fromkeys(k for s in steps.values() for k in s))
    lines += ["", "b12screen per-step timings (median seconds, from manifest.json; 'other' is "
              "the median wall time minus the steps: interpreter start, imports, exit):", "",
              "| lab rows | " + ("run | " if before else "") + " | ".join(names)
              + " | other | wall |",
              "|---:|" + ("---|" if before else "") + "---:|" * (len(names) + 2)]
    for r in results:
        for tool in stepped:
            s = steps[(id(r), tool)]
            cells = " | ".join(f"{s.get(k, 0.0):.2f}" for k in names)
            wall = r.median(tool)
            label = f"{'after' if tool == 'b12screen' else 'before'} | " if before else ""
            lines.append(f"| {r.rows:,} | {label}{cells} | {wall - sum(s.values()):.2f} | "
                         f"{wall:.2f} |")
    lines += ["", "Agreement with DuckDB on b12_status (DuckDB's cohort):", ""]
    for r in results:
        lines.append(f"- {r.rows:,} rows: " + "; ".join(f"{_label(k, before)} {v}"
                                                       for k, v in r.agreement.items()))
    lines += ["", "Targets:", ""] + [f"- {t}" for t in targets(results, shape)]
    lines += ["", "The output volume: DuckDB writing b12screen's own two tables "
              "(`write_floor.py`, loaded into memory first; only the writes are timed, "
              "zstd as b12screen writes them):", ""]
    for r in results:
        f = r.write_floor
        if "seconds" not in f:
            lines.append(f"- {r.rows:,} rows: write_floor.py failed (see {f.get('log')})")
            continue
        versus = (f"; {f['seconds'] / r.median(MINIMAL):.1f}× the minimal script's whole run"
                  if minimal else "")
        lines.append(f"- {r.rows:,} rows: patients {f['patients_rows']:,} rows × "
                     f"{f['patients_columns']} columns and results {f['results_rows']:,} × "
                     f"{f['results_columns']}: {f['seconds']:.2f} s ("
                     f"{f['seconds'] / r.median('b12screen'):.2f}× b12screen's whole run"
                     f"{versus})")
    return "\n".join(lines) + "\n"


def targets(results: list[SizeResult], shape: str = "classic") -> list[str]:
    """The issues' targets, for the sizes that were run: on the typed shape against the
    minimal script (issue 16), otherwise against the full DuckDB reference."""
    by_rows = {r.requested: r for r in results}
    typed = shape == "typed"
    yardstick, name = (MINIMAL, "minimal") if typed else ("duckdb", "DuckDB")
    limit = TYPED_TARGET_RATIO if typed else TARGET_RATIO
    memory = TYPED_TARGET_RSS_GIB if typed else TARGET_RSS_GIB
    scaling = TYPED_TARGET_SCALING if typed else TARGET_SCALING
    out = []
    for r in results:
        ratio = r.median("b12screen") / r.median(yardstick)
        if r.requested >= 2_000_000:
            out.append(f"{r.rows:,} rows: b12screen / {name} = {ratio:.2f} (target <= "
                       f"{limit}): {'met' if ratio <= limit else 'NOT met'}")
        if r.requested >= 10_000_000:
            rss = r.peak_rss("b12screen") / 2**30
            out.append(f"{r.rows:,} rows: b12screen peak RSS {rss:.2f} GiB (target <= "
                       f"{memory}): {'met' if rss <= memory else 'NOT met'}")
    small, large = by_rows.get(1_000_000), by_rows.get(10_000_000)
    if small and large:
        scale = large.median("b12screen") / small.median("b12screen")
        out.append(f"t(10M) / t(1M) = {scale:.1f} (target <= {scaling}): "
                   f"{'met' if scale <= scaling else 'NOT met'}")
    return out or ["(no size large enough to check a target)"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 2_000_000,
                                                                  10_000_000],
                        help="lab rows per extract (default: 1M 2M 10M)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per tool (median)")
    parser.add_argument("--seed", type=int, default=12, help="generator seed")
    parser.add_argument("--work", type=Path, default=Path("/tmp/b12screen-bench"),
                        help="folder for extracts and run outputs (default /tmp/b12screen-bench)")
    parser.add_argument("--results", type=Path, default=HERE / "results",
                        help="folder for the Markdown report (default benchmarks/results)")
    parser.add_argument("--shape", choices=SHAPES, default="classic",
                        help="extract shape (benchmarks/generate.py; default classic)")
    parser.add_argument("--compare", metavar="REF",
                        help="also time b12screen at this git commit/ref (a detached worktree "
                             "under --work), interleaved with the current tree's runs")
    args = parser.parse_args(argv)
    if args.repeats < 1 or any(s < 1 for s in args.sizes):
        parser.error("--sizes and --repeats must be positive")
    today = date.today().isoformat()
    before = worktree(args.compare, args.work) if args.compare else None
    if before:
        print(f"before: {args.compare} = {before.commit[:12]} in {before.root}", flush=True)
    results = []
    for rows in args.sizes:
        print(f"size {rows:,}", flush=True)
        results.append(run_size(rows, args.work, args.repeats, args.seed, today, args.shape,
                                before))
    text = report(results, args.repeats, args.shape, before)
    args.results.mkdir(parents=True, exist_ok=True)
    path = args.results / f"{today}.md"
    n = 2
    while path.exists():  # a second run on the same day keeps the first one's report
        path, n = args.results / f"{today}-{n}.md", n + 1
    path.write_text(text, encoding="utf-8")
    print()
    print(text)
    print(f"written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
