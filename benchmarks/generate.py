"""Write a canonical Parquet lab extract of about --rows rows for the benchmark.

Example:
    python benchmarks/generate.py --rows 1000000 --out /tmp/bench-1m --seed 12

About three results per patient, so --rows 1000000 gives ~333,000 patients; patients.csv
and medications.csv are written beside labs.parquet. Same arguments, same bytes.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

RESULTS_PER_PATIENT = 3.0


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, generate, print where the files are."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, required=True, help="about this many lab rows")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--seed", type=int, default=12, help="random seed (default 12)")
    args = parser.parse_args(argv)
    if args.rows < 1:
        parser.error("--rows must be at least 1")

    # Runnable as a script from a source checkout: make the project root importable.
    root = str(Path(__file__).resolve().parent.parent)
    if root not in sys.path:
        sys.path.insert(0, root)
    from pipeline.sample_data import generate

    started = time.perf_counter()
    n_patients = max(1, round(args.rows / RESULTS_PER_PATIENT))
    paths = generate(args.out, n_patients=n_patients, seed=args.seed, file_format="parquet",
                     results_per_patient=RESULTS_PER_PATIENT)
    elapsed = time.perf_counter() - started
    print(f"wrote {paths['labs']} ({n_patients} patients) in {elapsed:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
