"""Fingerprint every output of a fixed set of b12screen runs, to prove that a change
(a refactor, a speed-up) leaves every output byte for byte as it was.

    python benchmarks/same_outputs.py --out /tmp/before.json            # on the old code
    python benchmarks/same_outputs.py --out /tmp/after.json --compare /tmp/before.json

The runs cover each command and shape a user meets: the three shipped sample formats, a
messy sample extract with patients and medications (run, then a second month against it
with ``--previous``), ``validate``, ``trend``, the Dask engine, and generated benchmark
extracts (``--rows``, default 1M, of the classic shape, and a fifth of that of the typed
shape, where most of the cohort is seen only in other tests; 0 skips them). Each output
file's SHA-256 is recorded, except what a run must not repeat: ``manifest.json`` is compared
without its timings, creation time, environment and paths (and with the hashes it lists),
and ``report.html``/``trend.html`` without the line that says when they were made. A
workbook (``.xlsx``) is compared by its zip members' names and uncompressed bytes, and the
manifest without the workbook's file hash: the compressor's stream is not the workbook's
content, and a faster compressor gives other bytes for the same sheets. Exit 1 when
``--compare`` finds a difference.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
AS_OF = "2026-10-31"
#: manifest keys that differ between two runs of the same inputs (times, machine, paths)
VOLATILE = {"created_at", "timings_seconds", "environment", "path"}


def _b12screen(*args: str, cwd: Path) -> None:
    """One CLI run as a user makes it (the installed console script's code, from ROOT)."""
    command = [sys.executable, "-c", "import sys; from pipeline.cli import app; "
               "sys.argv[0] = 'b12screen-fingerprint'; app()", *args]
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"b12screen {' '.join(args)} failed ({done.returncode}):\n"
                         f"{done.stderr[-2000:]}")


def _runs(work: Path, rows: int) -> list[Path]:
    """Run every case into ``work``; the run folders to fingerprint."""
    samples = ROOT / "sample_data"
    out = []
    for name, fmt, labs, patients, meds in (
            ("canonical", "canonical", "labs.csv", "patients.csv", "medications.csv"),
            ("uk-lab", "uk-lab", "labs.csv", "patients.csv", "medications.csv"),
            ("omop", "omop", "measurement.csv", "person.csv", "drug_exposure.csv")):
        folder = samples / name
        _b12screen("run", str(folder / labs), "--patients", str(folder / patients),
                   "--medications", str(folder / meds), "--format", fmt, "--as-of", AS_OF,
                   "--out", str(work / f"sample-{name}"), "--quiet", cwd=work)
        out.append(work / f"sample-{name}")
    for month, as_of in (("2026-09", "2026-09-30"), ("2026-10", AS_OF)):
        data = work / f"messy-{month}"
        _b12screen("sample-data", str(data), "--patients", "3000", "--messy", "--as-of", as_of,
                   cwd=work)
        args = [str(data / "labs.csv"), "--patients", str(data / "patients.csv"),
                "--medications", str(data / "medications.csv"), "--as-of", as_of]
        _b12screen("run", *args, "--out", str(work / "reports" / month), "--quiet", cwd=work)
        out.append(work / "reports" / month)
        if month == "2026-10":
            _b12screen("validate", *args, "--out", str(work / "validate"), "--quiet", cwd=work)
            _b12screen("run", *args, "--engine", "dask", "--out", str(work / "dask"), "--quiet",
                       cwd=work)
            out += [work / "validate", work / "dask"]
    _b12screen("trend", str(work / "reports"), cwd=work)
    out.append(work / "reports")  # trend.html, trend.csv (the run folders are listed apart)
    if rows:
        for shape, size in (("classic", rows), ("typed", max(rows // 5, 1000))):
            data = work / f"generated-{shape}"
            subprocess.run([sys.executable, str(HERE / "generate.py"), "--rows", str(size),
                            "--out", str(data), "--shape", shape], check=True,
                           capture_output=True)
            name = "generated-run" if shape == "classic" else f"generated-{shape}-run"
            _b12screen("run", str(data / "labs.parquet"), "--as-of", AS_OF, "--out",
                       str(work / name), "--quiet", cwd=work)
            out.append(work / name)
    return out


def _manifest(path: Path) -> str:
    def strip(value: object) -> object:
        if isinstance(value, dict):
            return {k: "<workbook>" if k.endswith(".xlsx") else strip(v)
                    for k, v in value.items() if k not in VOLATILE}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value
    data = strip(json.loads(path.read_text(encoding="utf-8")))
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def _digest(path: Path) -> str:
    if path.name == "manifest.json":
        return _manifest(path)
    if path.suffix == ".xlsx":
        digest = hashlib.sha256()
        with zipfile.ZipFile(path) as workbook:
            for info in workbook.infolist():
                digest.update(info.filename.encode() + b"\0" + workbook.read(info) + b"\0")
        return digest.hexdigest()
    data = path.read_bytes()
    if path.suffix == ".html":  # "made on <time>" lines, and the run's own folder names
        data = re.sub(rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[^<\"]*", b"<time>", data)
    return hashlib.sha256(data).hexdigest()


def fingerprint(rows: int, work: Path) -> dict[str, str]:
    """Every case run in ``work`` (emptied first: the outputs name their input files, so
    the before and after runs must use the same folder)."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    folders = _runs(work, rows)
    found = {}
    for folder in folders:
        files = folder.glob("*") if folder.name == "reports" else folder.rglob("*")
        for path in sorted(p for p in files if p.is_file()):
            found[path.relative_to(work).as_posix()] = _digest(path)
    shutil.rmtree(work)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="write the fingerprints here")
    parser.add_argument("--compare", type=Path, help="fingerprints of the code before")
    parser.add_argument("--rows", type=int, default=1_000_000,
                        help="rows of the generated classic extract (0: none)")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir())
                        / "b12screen-same-outputs", help="folder the runs write into "
                        "(emptied; default %(default)s)")
    args = parser.parse_args()
    found = fingerprint(args.rows, args.work.resolve())
    args.out.write_text(json.dumps(found, indent=1, sort_keys=True) + "\n")
    print(f"{len(found)} output files fingerprinted -> {args.out}")
    if args.compare:
        before = json.loads(args.compare.read_text())
        differ = sorted(k for k in before.keys() | found.keys() if before.get(k) != found.get(k))
        for key in differ:
            kind = "missing" if key not in found else "new" if key not in before else "changed"
            print(f"  differs: {key} ({kind})")
        print("identical" if not differ else f"{len(differ)} of {len(before)} files differ")
        sys.exit(1 if differ else 0)


if __name__ == "__main__":
    main()
