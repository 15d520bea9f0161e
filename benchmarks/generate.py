"""Write a canonical Parquet lab extract of about --rows rows for the benchmark.

Example:
    python benchmarks/generate.py --rows 1000000 --out /tmp/bench-1m --seed 12
    python benchmarks/generate.py --rows 200000 --out /tmp/bench-typed --shape typed

Shapes (``--shape``):

- ``classic`` (default): about three results per patient, ~30 % of them unrelated tests,
  text columns. Byte for byte the extract earlier benchmark figures were measured on, so
  before/after comparisons across commits stay like for like.
- ``chemistry``: as a real chemistry extract: ~80 % of rows a chemistry panel (``NA``,
  ``K``, ``CL``, ``UREA``, ``CREA``, ``CA``, ...; ~15 % of all rows sodium ``NA``, with the odd
  ``Na`` or ``k``), three rows per patient, text columns.
- ``typed``: the chemistry panel written by a system that exports types: ``result`` as
  double (so no censored results), ``collected_at`` as date32, about one row per patient
  (a third of the other shapes' rows per patient, so three times the patients), 30 % of
  total B12 in pmol/L.

patients.csv and medications.csv are written beside labs.parquet. Same arguments, same bytes.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

SHAPES = ("classic", "chemistry", "typed")
#: Lab rows per patient for each shape (typed: a third of the others').
RESULTS_PER_PATIENT = {"classic": 3.0, "chemistry": 3.0, "typed": 1.0}


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, generate, print where the files are."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, required=True, help="about this many lab rows")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--seed", type=int, default=12, help="random seed (default 12)")
    parser.add_argument("--shape", choices=SHAPES, default="classic",
                        help="what the extract looks like (default classic; see the module "
                             "docstring)")
    args = parser.parse_args(argv)
    if args.rows < 1:
        parser.error("--rows must be at least 1")

    # Runnable as a script from a source checkout: make the project root importable.
    root = str(Path(__file__).resolve().parent.parent)
    if root not in sys.path:
        sys.path.insert(0, root)
    from pipeline.sample_data import generate

    started = time.perf_counter()
    per_patient = RESULTS_PER_PATIENT[args.shape]
    n_patients = max(1, round(args.rows / per_patient))
    paths = generate(args.out, n_patients=n_patients, seed=args.seed, file_format="parquet",
                     results_per_patient=per_patient, shape=args.shape)
    elapsed = time.perf_counter() - started
    print(f"wrote {paths['labs']} ({n_patients} patients, {args.shape} shape) in "
          f"{elapsed:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
