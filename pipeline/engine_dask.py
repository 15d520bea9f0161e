"""The Dask engine (``--engine dask``): the same rules, run per patient partition on a cluster.

When to use it
    The pandas engine is the default and the fastest choice on one machine. Use ``--engine
    dask`` when a Dask cluster is already where your data work runs and you want the
    classification (the step that grows with the cohort) spread over its workers, with each
    worker holding only its share of patients. Today reading, validation and the outputs still
    run in this process, so the accepted extract must fit in this machine's memory
    (``benchmarks/README.md`` gives peak memory per size). On a single small machine it is
    slower than pandas: moving every row between workers costs more than the rules.

How it works
    Every rule is per patient, so the cohort (sorted patient ids) is cut into contiguous
    ranges and each input (labs, patients, medications) is shuffled by ``dask.dataframe`` so
    that one partition holds every row of one range of patients (``set_index`` on the
    patient's position in the sorted cohort, with the same divisions for all three inputs).
    Each partition is then classified by :func:`pipeline.classify.classify` itself -- there is
    no second implementation of the rules -- and the per-partition tables are concatenated in
    cohort order. The patients table is identical to the pandas engine's (same columns,
    dtypes and order) and results keep the input's row order.

Pointing it at a cluster
    Without ``--scheduler`` a ``distributed.LocalCluster`` is started for the run and closed
    afterwards. To use an existing cluster give its scheduler address::

        dask scheduler                      # on the scheduler host (port 8786)
        dask worker tcp://HOST:8786         # on each worker host
        b12screen run labs.parquet --engine dask --scheduler tcp://HOST:8786

    Workers must have the same b12screen version installed (``pip install b12screen[dask]``):
    they import ``pipeline.classify`` to run the rules. The client only connects to the
    scheduler; it never shuts down a cluster it did not start. Patient-level rows travel to
    the workers, so use a cluster inside the same trusted environment as the extract.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from typing import Any

import dask
import dask.dataframe as dd
import numpy as np
import pandas as pd
from dask.delayed import Delayed
from distributed import Client, Future, LocalCluster

from pipeline.classify import Classified, classify, cohort_positions
from pipeline.config import RulesProfile

__all__ = ["classify_dask"]

#: Lab rows per partition for large extracts; small ones get one partition per worker thread.
ROWS_PER_PARTITION = 1_000_000
#: The default cluster: worker threads in this process, which already holds the extract (worker
#: processes would each need a copy of their share, and take seconds to start). No dashboard;
#: the scheduler's health endpoint listens on a free local port (not 8787, which may be taken).
LOCAL_CLUSTER: dict[str, Any] = {"processes": False, "dashboard_address": "127.0.0.1:0",
                                 "scheduler_kwargs": {"dashboard": False}}
_CODE = "_b12screen_pid"  # the patient's position in the sorted cohort: the shuffle key
_ROW = "_b12screen_row"  # the row's position in its input, to restore input order

# Keep pandas' own "str" dtype; dask would otherwise convert strings to "string[pyarrow]"
# (missing values pd.NA instead of NaN), which changes comparisons inside the rules. Shipping
# the (scattered) extract is intended, so the large-graph warning is not useful here.
_DASK_CONFIG = {"dataframe.convert-string": False,
                "distributed.admin.large-graph-warning-threshold": "10GB"}


@contextmanager
def _client(scheduler: str | None) -> Iterator[Client]:
    """A client to ``scheduler``, or to a LocalCluster started (and closed) for this run."""
    if scheduler:
        with Client(scheduler) as client:
            yield client
        return
    with LocalCluster(**LOCAL_CLUSTER) as cluster, Client(cluster) as client:
        yield client


def _n_partitions(n_patients: int, n_rows: int, threads: int) -> int:
    wanted = max(threads, math.ceil(n_rows / ROWS_PER_PARTITION))
    return max(1, min(n_patients, wanted))


def _divisions(n_patients: int, n_parts: int) -> list[int]:
    """Boundaries on cohort positions: partition i holds [d[i], d[i+1]) (the last: d[-1] too)."""
    cuts = np.linspace(0, n_patients - 1, n_parts + 1).round().astype("int64")
    return sorted({int(c) for c in cuts}) if n_patients > 1 else [0, 0]


def _by_patient(client: Client, frame: pd.DataFrame, cohort: pd.Index, divisions: list[int],
                keep: list[Future]) -> list[Delayed]:
    """Shuffle ``frame`` so that partition i holds the rows of cohort range i; one delayed
    pandas frame per partition. The scattered input is appended to ``keep``: it must stay
    referenced until the partitions are computed."""
    keyed = frame.assign(**{_CODE: cohort_positions(cohort, frame["patient_id"]),
                            _ROW: np.arange(len(frame), dtype="int64")})
    keyed = keyed.reset_index(drop=True)
    n_chunks = len(divisions) - 1
    bounds = np.linspace(0, len(keyed), n_chunks + 1).astype("int64")
    chunks = [keyed.iloc[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    futures = client.scatter(chunks)
    keep.extend(futures)
    ddf = dd.from_delayed(futures, meta=keyed.iloc[:0], verify_meta=False)
    shuffled = ddf.set_index(_CODE, divisions=divisions, sort=True, shuffle_method="tasks")
    return shuffled.to_delayed()


def _restore(part: pd.DataFrame) -> pd.DataFrame:
    """Rows back in input order, indexed by their position in the input."""
    out = part.reset_index(drop=True).sort_values(_ROW, kind="stable").set_index(_ROW)
    out.index.name = None
    return out


def _classify_part(labs: pd.DataFrame, patients: pd.DataFrame | None,
                   meds: pd.DataFrame | None, cohort: pd.Index, rules: RulesProfile,
                   as_of: date) -> Classified:
    """One partition: exactly the pandas engine, on this range of patients."""
    return classify(_restore(labs), None if patients is None else _restore(patients),
                    None if meds is None else _restore(meds), cohort, rules, as_of)


def classify_dask(results: pd.DataFrame, patients: pd.DataFrame | None,
                  meds: pd.DataFrame | None, cohort: pd.Index, rules: RulesProfile,
                  as_of: date, scheduler: str | None = None,
                  npartitions: int | None = None) -> Classified:
    """:func:`pipeline.classify.classify` on a Dask cluster, partitioned by patient.

    ``scheduler`` is a scheduler address (``tcp://host:8786``); ``None`` starts a local
    cluster for this call. ``npartitions`` defaults to one per worker thread, or one per
    ``ROWS_PER_PARTITION`` lab rows if that is more. Returns the same tables as ``classify``:
    patients in cohort order, results in input order.
    """
    if len(cohort) == 0:
        return classify(results, patients, meds, cohort, rules, as_of)
    with dask.config.set(_DASK_CONFIG), _client(scheduler) as client:
        threads = sum(client.nthreads().values()) or 1
        n_parts = npartitions or _n_partitions(len(cohort), len(results), threads)
        divisions = _divisions(len(cohort), min(n_parts, len(cohort)))
        scattered: list[Future] = []
        lab_parts = _by_patient(client, results, cohort, divisions, scattered)
        pat_parts = (_by_patient(client, patients, cohort, divisions, scattered)
                     if patients is not None else [None] * len(lab_parts))
        med_parts = (_by_patient(client, meds, cohort, divisions, scattered)
                     if meds is not None else [None] * len(lab_parts))
        tasks = []
        for i, (lab, pat, med) in enumerate(zip(lab_parts, pat_parts, med_parts, strict=True)):
            stop = divisions[i + 1] + (1 if i == len(lab_parts) - 1 else 0)
            part_cohort = cohort[divisions[i]:stop]
            tasks.append(dask.delayed(_classify_part)(
                lab, pat, med, part_cohort, rules, as_of))
        parts: list[Classified] = list(client.compute(tasks, sync=True))
    patients_out = pd.concat([p.patients for p in parts], ignore_index=True)
    results_out = pd.concat([p.results for p in parts]).sort_index(kind="stable")
    results_out.index = results.index
    return Classified(patients_out, results_out, sum(p.rows_after_as_of for p in parts))
