"""The Dask engine gives the pandas engine's answers, on a real two-worker LocalCluster.

One cluster (two worker processes, so every piece and partition really travels between
processes as it would on a remote cluster) serves the module through ``--scheduler``;
some tests use the default cluster that the engine starts and closes itself.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.engines import screen
from pipeline.outputs.tables import rejected_frame
from pipeline.sample_data import generate
from pipeline.state import RunOptions, RunState
from tests.conftest import invoke

distributed = pytest.importorskip("distributed")
import pipeline.engines.dask_engine as engine_dask  # noqa: E402

#: One xdist group: the Dask tests that start clusters of worker processes run in one test
#: process, not both at once on a two-core machine.
pytestmark = [pytest.mark.dask, pytest.mark.xdist_group("cluster")]
AS_OF = date(2026, 10, 31)
TABLES = ("patients.parquet", "results.parquet", "rejected.parquet", "rejected.csv",
          "worklists/urgent.csv", "worklists/mma.csv", "worklists/supplementation.csv",
          "worklists/metformin_monitoring.csv", "worklists/retest.csv", "measures.csv")


@pytest.fixture(autouse=True)
def _short_stall_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """A run whose cluster stops running its tasks fails its test within a minute instead of
    holding the suite for the product's five minutes (slow tasks never trip it)."""
    monkeypatch.setattr(engine_dask, "STALL_SECONDS", 60.0)


def _run(labs: Path, patients: Path, medications: Path, out: Path, *engine: str) -> Path:
    result = invoke("run", labs, "--patients", patients, "--medications", medications,
                    "--out", out, "--quiet", *engine)
    assert result.exit_code == 0, result.output
    return out


def _same_outputs(expected: Path, got: Path) -> None:
    """Every patient-level table byte for byte, and the same row accounting."""
    for name in TABLES:
        assert (got / name).read_bytes() == (expected / name).read_bytes(), name
    manifests = [json.loads((run / "manifest.json").read_text()) for run in (expected, got)]
    assert manifests[1]["engine"] == "dask"
    for key in ("accounting", "as_of", "inputs", "warnings", "patients"):
        assert manifests[1][key] == manifests[0][key], key


def test_cli_dask_engine_writes_the_pandas_engines_tables(scheduler: str,
                                                          tmp_path: Path) -> None:
    extract = generate(tmp_path / "in", n_patients=600, seed=21, messy=True)
    args = (extract["labs"], extract["patients"], extract["medications"])
    pandas_run = _run(*args, tmp_path / "pandas")
    cluster_run = _run(*args, tmp_path / "cluster", "--engine", "dask",
                       "--scheduler", scheduler)
    assert len(pd.read_parquet(pandas_run / "patients.parquet")) > 0
    _same_outputs(pandas_run, cluster_run)


def _held_out(folder: Path) -> dict[str, Path]:
    """An extract spread over several files the way real months arrive: labs as a Parquet
    file of many row groups plus a CSV file repeating some of its rows (exact duplicates
    across files), patients in two files with one patient's rows conflicting across them."""
    paths = generate(folder / "generated", n_patients=400, seed=33, messy=True,
                     results_per_patient=4.0)
    labs = pd.read_csv(paths["labs"], dtype=str, keep_default_na=False)
    half = len(labs) // 2
    (folder / "labs").mkdir()
    pq.write_table(pa.Table.from_pandas(labs.iloc[:half], preserve_index=False),
                   folder / "labs" / "a.parquet", row_group_size=60)
    pd.concat([labs.iloc[half:], labs.iloc[:25]]).to_csv(folder / "labs" / "b.csv",
                                                         index=False)
    patients = pd.read_csv(paths["patients"], dtype=str, keep_default_na=False)
    (folder / "patients").mkdir()
    patients.iloc[: len(patients) // 2].to_csv(folder / "patients" / "a.csv", index=False)
    second = pd.concat([patients.iloc[len(patients) // 2:],
                        patients.iloc[:1].assign(sex="other-value")])
    second.to_csv(folder / "patients" / "b.csv", index=False)
    return {"labs": folder / "labs", "patients": folder / "patients",
            "medications": paths["medications"]}


def test_held_out_extract_in_several_files_gives_the_pandas_tables(
        scheduler: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Pieces of a Parquet file and whole CSV files, shuffled by patient: duplicates and
    conflicts across files are found as the pandas engine finds them."""
    extract = _held_out(tmp_path / "in")
    monkeypatch.setattr(engine_dask, "ROWS_PER_PARTITION", 150)  # the Parquet file: 4 pieces
    args = (extract["labs"], extract["patients"], extract["medications"])
    pandas_run = _run(*args, tmp_path / "pandas")
    cluster_run = _run(*args, tmp_path / "cluster", "--engine", "dask",
                       "--scheduler", scheduler)
    _same_outputs(pandas_run, cluster_run)
    accounting = json.loads((cluster_run / "manifest.json").read_text())["accounting"]
    assert accounting["by_input"]["labs"]["rows_exact_duplicates"] > 0
    rejected = pd.read_parquet(cluster_run / "rejected.parquet")
    assert rejected["reasons"].str.contains("conflicting_patient_rows").sum() == 2


def _states(options: RunOptions, scheduler: str | None,
            partitions: int | None) -> tuple[RunState, RunState]:
    expected = screen(options)
    got = engine_dask.screen_dask(RunOptions(**{**vars(options), "engine": "dask",
                                                "scheduler": scheduler}),
                                  partitions=partitions)
    return expected, got


def _same_state(expected: RunState, got: RunState) -> None:
    assert got.as_of == expected.as_of
    assert got.accounting() == expected.accounting()
    assert got.warnings == expected.warnings
    pd.testing.assert_frame_equal(got.classified.patients, expected.classified.patients)
    pd.testing.assert_frame_equal(_plain(got.classified.results),
                                  _plain(expected.classified.results))
    assert got.classified.rows_after_as_of == expected.classified.rows_after_as_of
    pd.testing.assert_frame_equal(rejected_frame(got).reset_index(drop=True),
                                  rejected_frame(expected).reset_index(drop=True))


def _plain(results: pd.DataFrame) -> pd.DataFrame:
    """Results with text columns as text: a partition's categoricals hold only its own
    values, which the Parquet tables do not show."""
    out = results.reset_index(drop=True)
    text = [c for c in out.columns if isinstance(out[c].dtype, pd.CategoricalDtype)]
    return out.astype(dict.fromkeys(text, "str"))


def _options(paths: dict[str, Path]) -> RunOptions:
    return RunOptions(labs=str(paths["labs"]), patients=str(paths["patients"]),
                      medications=str(paths["medications"]), max_reject_rate=1.0,
                      today=AS_OF)


def test_default_local_cluster_with_more_partitions_than_patients(tmp_path: Path) -> None:
    paths = generate(tmp_path, n_patients=3, seed=4, messy=False, as_of=AS_OF)
    _same_state(*_states(_options(paths), None, 8))


def test_progress_counts_the_clusters_tasks_and_the_manifest_times_each_step(
        scheduler: str, tmp_path: Path) -> None:
    """Each step is announced, and the validate and classify steps report the cluster's
    tasks done out of all of them as each finishes; both engines' manifests time every
    step."""
    paths = generate(tmp_path / "in", n_patients=80, seed=5, as_of=AS_OF)
    calls: list[tuple] = []
    options = RunOptions(**{**vars(_options(paths)), "engine": "dask", "scheduler": scheduler})
    engine_dask.screen_dask(options, lambda *call: calls.append(call), partitions=3)
    assert [c[0] for c in calls if len(c) == 1] == ["read", "validate", "classify"]
    for step in ("validate", "classify"):
        counted = [c[1:] for c in calls if c[0] == step and len(c) == 3]
        assert counted == [(done, 3) for done in range(4)], step
    for engine in (["--engine", "pandas"], ["--engine", "dask", "--scheduler", scheduler]):
        run = _run(paths["labs"], paths["patients"], paths["medications"],
                   tmp_path / engine[1], *engine)
        timings = json.loads((run / "manifest.json").read_text())["timings_seconds"]
        assert set(timings) == {"read", "validate", "classify", "write"}, engine
        assert all(seconds >= 0 for seconds in timings.values())


@settings(max_examples=8, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(n_patients=st.integers(1, 150), seed=st.integers(0, 2**16), messy=st.booleans(),
       per_patient=st.sampled_from([0.5, 3.0, 8.0]), partitions=st.integers(1, 4),
       as_of=st.sampled_from([None, AS_OF, date(2026, 9, 15)]))
def test_generated_extracts_screen_the_same_on_dask(
        scheduler: str, n_patients: int, seed: int, messy: bool, per_patient: float,
        partitions: int, as_of: date | None) -> None:
    """Inferred as-of dates (every partition validated first) and given ones (each
    partition validated within its classification task) alike."""
    with tempfile.TemporaryDirectory() as folder:
        paths = generate(Path(folder), n_patients=n_patients, seed=seed, messy=messy,
                         results_per_patient=per_patient, as_of=AS_OF)
        options = RunOptions(**{**vars(_options(paths)), "as_of": as_of})
        _same_state(*_states(options, scheduler, partitions))


@pytest.mark.parametrize("partitioned", [False, True], ids=["single-files", "partitioned"])
def test_too_many_rejected_rows_with_a_given_as_of_stop_as_the_pandas_engine_does(
        scheduler: str, tmp_path: Path, partitioned: bool) -> None:
    """With --as-of each partition is validated by its classification task, so the
    reject-rate limit is checked after classifying: the same message and exit code as the
    pandas engine, and nothing left behind (no run folder, no staging folder)."""
    paths = generate(tmp_path / "in", n_patients=200, seed=6, messy=True)
    messages = []
    for engine in (["--engine", "pandas"],
                   ["--engine", "dask", "--scheduler", scheduler,
                    *(["--partitioned"] if partitioned else [])]):
        out = tmp_path / "runs" / engine[1]
        result = invoke("run", paths["labs"], "--patients", paths["patients"],
                        "--medications", paths["medications"], "--as-of", "2026-10-31",
                        "--max-reject-rate", "0.001", "--out", out, "--quiet", *engine)
        assert result.exit_code == 1, result.output
        assert "Traceback" not in result.output
        messages.append(result.stderr)
    assert "rows rejected" in messages[0] and "above --max-reject-rate 0.1%" in messages[0]
    assert messages[1] == messages[0]
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_a_bad_file_read_on_a_worker_stops_with_the_pandas_engines_message(
        scheduler: str, tmp_path: Path) -> None:
    paths = generate(tmp_path / "in", n_patients=20, seed=2)
    (tmp_path / "labs").mkdir()
    labs = pd.read_csv(paths["labs"], dtype=str, keep_default_na=False)
    labs.to_csv(tmp_path / "labs" / "a.csv", index=False)
    labs.drop(columns=["result"]).to_csv(tmp_path / "labs" / "b.csv", index=False)
    messages = []
    for engine in (["--engine", "pandas"], ["--engine", "dask", "--scheduler", scheduler]):
        result = invoke("run", tmp_path / "labs", "--out", tmp_path / engine[1], "--quiet",
                        *engine)
        assert result.exit_code == 1
        assert "Traceback" not in result.output
        messages.append(result.stderr)
    assert "required column result missing in" in messages[0]
    assert messages[1] == messages[0]
    assert not (tmp_path / "dask").exists()


def test_a_format_that_maps_no_code_is_named_by_both_engines(scheduler: str,
                                                              tmp_path: Path) -> None:
    """Every test code unknown to the format: the run says so (with the commonest codes),
    whichever engine, however the rows are partitioned."""
    paths = generate(tmp_path / "in", n_patients=30, seed=8)
    labs = pd.read_csv(paths["labs"], dtype=str, keep_default_na=False)
    labs["test_code"] = "LOCAL-" + (labs.index % 3).astype(str)
    labs.to_csv(tmp_path / "labs.csv", index=False)
    outputs = []
    for engine in (["--engine", "pandas"], ["--engine", "dask", "--scheduler", scheduler]):
        result = invoke("run", tmp_path / "labs.csv", "--as-of", "2026-10-31", "--out",
                        tmp_path / engine[1], "--quiet", *engine)
        assert result.exit_code == 0, result.output
        outputs.append(result.stderr)
    assert f"none of the {len(labs)} rows has a test code mapped by format 'canonical'" \
        in outputs[0]
    assert "most common codes: LOCAL-0, LOCAL-1, LOCAL-2" in outputs[0]
    assert outputs[1] == outputs[0]


def _script_run(labs: Path, out: Path, engine: str) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).with_name("b12screen")
    return subprocess.run([str(script), "run", str(labs), "--quiet", "--engine", engine,
                           "--out", str(out)], capture_output=True, text=True, timeout=300,
                          check=False)


@pytest.mark.parametrize("content", [
    b"patient_id,collected_at,test_code,unit\n001,2025-06-01,B12,ng/L\n",  # no result
    b"",  # empty file
])
def test_a_bad_file_on_the_default_cluster_gives_one_line(tmp_path: Path,
                                                           content: bytes) -> None:
    """The default cluster's workers are threads of the program itself: a problem found
    while a worker reads a file stops the run with the pandas engine's one line, and no
    worker log or traceback reaches the terminal."""
    labs = tmp_path / "labs"
    labs.mkdir()
    (labs / "labs.csv").write_bytes(content)
    pandas_run = _script_run(labs, tmp_path / "pandas", "pandas")
    dask_run = _script_run(labs, tmp_path / "dask", "dask")
    assert pandas_run.returncode == dask_run.returncode == 1
    assert len(pandas_run.stderr.strip().splitlines()) == 1
    assert dask_run.stderr == pandas_run.stderr
    assert not (tmp_path / "dask").exists()


def test_a_cluster_that_runs_no_task_stops_the_run_with_one_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A cluster whose tasks never run (here: no worker at all) stops the run with one
    line and exit 1 once nothing has run for the stall limit, instead of waiting for
    ever; nothing is written."""
    monkeypatch.setattr(engine_dask, "STALL_SECONDS", 1.0)
    monkeypatch.setattr(engine_dask, "CHECK_SECONDS", 0.2)
    paths = generate(tmp_path / "in", n_patients=5, seed=3)
    with distributed.LocalCluster(n_workers=0, processes=False,
                                  dashboard_address="127.0.0.1:0",
                                  scheduler_kwargs={"dashboard": False}) as cluster:
        result = invoke("run", paths["labs"], "--engine", "dask", "--scheduler",
                        cluster.scheduler_address, "--out", tmp_path / "out", "--quiet")
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert len(result.stderr.strip().splitlines()) == 1
    assert "the Dask cluster ran no task for" in result.stderr
    assert "read step waited for 1 of 1 tasks (workers connected: 0)" in result.stderr
    assert not (tmp_path / "out").exists()


def test_a_slow_task_is_waited_for_however_long_it_runs(
        scheduler: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The stall limit counts time in which no task runs: a task running longer than it
    is waited for, and its progress is reported when it finishes."""
    monkeypatch.setattr(engine_dask, "STALL_SECONDS", 0.3)
    monkeypatch.setattr(engine_dask, "CHECK_SECONDS", 0.1)
    calls: list[tuple] = []
    with distributed.Client(scheduler) as client:
        futures = client.map(time.sleep, [1.0, 0.0], pure=False)
        got = engine_dask._gathered(client, futures, "classify",
                                    lambda *call: calls.append(call))
    assert got == [None, None]
    assert calls[0] == ("classify", 0, 2) and calls[-1] == ("classify", 2, 2)
