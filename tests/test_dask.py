"""The Dask engine gives the pandas engine's answers, on a real two-worker LocalCluster.

One cluster (two worker processes, so every partition really travels between processes as
it would on a remote cluster) serves the module through ``--scheduler``; one test uses the
default cluster that ``classify_dask`` starts and closes itself.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.classify import classify, cohort_ids
from pipeline.run import RunOptions, prepare
from pipeline.sample_data import generate
from tests.conftest import invoke

distributed = pytest.importorskip("distributed")
from pipeline.engine_dask import classify_dask  # noqa: E402

pytestmark = pytest.mark.dask
AS_OF = date(2026, 10, 31)


@pytest.fixture(scope="module")
def scheduler() -> Iterator[str]:
    """A real LocalCluster with two single-threaded worker processes; yields its address."""
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address="127.0.0.1:0",
                                  scheduler_kwargs={"dashboard": False}) as cluster:
        yield cluster.scheduler_address


def _run(extract: dict[str, Path], out: Path, *engine: str) -> Path:
    result = invoke("run", extract["labs"], "--patients", extract["patients"],
                    "--medications", extract["medications"], "--out", out, "--quiet",
                    *engine)
    assert result.exit_code == 0, result.output
    return out


def test_cli_dask_engine_writes_the_pandas_engines_tables(scheduler: str,
                                                          tmp_path: Path) -> None:
    extract = generate(tmp_path / "in", n_patients=600, seed=21, messy=True)
    pandas_run = _run(extract, tmp_path / "pandas")
    cluster_run = _run(extract, tmp_path / "cluster", "--engine", "dask",
                       "--scheduler", scheduler)
    for name in ("patients.parquet", "results.parquet"):
        expected = pd.read_parquet(pandas_run / name)
        assert len(expected) > 0
        pd.testing.assert_frame_equal(pd.read_parquet(cluster_run / name), expected)
    assert (cluster_run / "patients.parquet").read_bytes() == \
        (pandas_run / "patients.parquet").read_bytes()


def _both_engines(paths: dict[str, Path], scheduler: str | None,
                  npartitions: int | None) -> None:
    """classify and classify_dask agree on every table of one extract."""
    state = prepare(RunOptions(labs=str(paths["labs"]), patients=str(paths["patients"]),
                               medications=str(paths["medications"]), as_of=AS_OF,
                               max_reject_rate=1.0, today=AS_OF))
    cohort = cohort_ids(*(v.ids for v in state.inputs.values()))
    args = (state.inputs["labs"].accepted, state.inputs["patients"].accepted,
            state.inputs["medications"].accepted, cohort, state.rules, state.as_of)
    expected = classify(*args)
    got = classify_dask(*args, scheduler=scheduler, npartitions=npartitions)
    pd.testing.assert_frame_equal(got.patients, expected.patients)
    pd.testing.assert_frame_equal(got.results, expected.results)
    assert got.rows_after_as_of == expected.rows_after_as_of


def test_default_local_cluster(tmp_path: Path) -> None:
    paths = generate(tmp_path, n_patients=40, seed=4, messy=True, as_of=AS_OF)
    _both_engines(paths, None, None)


@settings(max_examples=10, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(n_patients=st.integers(1, 150), seed=st.integers(0, 2**16), messy=st.booleans(),
       per_patient=st.sampled_from([0.5, 3.0, 8.0]), npartitions=st.integers(1, 3))
def test_generated_extracts_classify_the_same_on_dask(
        scheduler: str, n_patients: int, seed: int, messy: bool, per_patient: float,
        npartitions: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        paths = generate(Path(folder), n_patients=n_patients, seed=seed, messy=messy,
                         results_per_patient=per_patient, as_of=AS_OF)
        _both_engines(paths, scheduler, npartitions)
