"""Shared fixtures: real files in tmp folders, the CLI run in-process as a user would."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline.cli import app


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests of an xdist group run first: with ``--dist loadgroup`` one test process starts on
    the group (the longest unit) while the other takes the remaining tests, instead of the
    group starting late and running alone at the end."""
    items.sort(key=lambda item: item.get_closest_marker("xdist_group") is None)


@pytest.fixture(scope="session")
def runner() -> CliRunner:
    return CliRunner()


def invoke(*args: str | Path):
    """Run ``b12screen`` in-process; returns the click Result (stdout/stderr separate)."""
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="session")
def sample_extract(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A messy synthetic extract (labs, patients, medications) shared by output tests."""
    from pipeline.sample_data import generate

    return generate(tmp_path_factory.mktemp("sample"), n_patients=800, seed=5, messy=True)


@pytest.fixture(scope="session")
def sample_run(sample_extract: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One full run over the sample extract; tests re-read its files."""
    out = tmp_path_factory.mktemp("run") / "2026-10"
    result = invoke("run", sample_extract["labs"], "--patients", sample_extract["patients"],
                    "--medications", sample_extract["medications"], "--out", out, "--quiet")
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def scheduler() -> Iterator[str]:
    """A real Dask LocalCluster with two single-threaded worker processes, one per test
    module that asks for it; yields its address. Closed with its module: its scheduler runs
    in the test process, and left running it could allocate memory while later tests
    measure the process's peak (test_xlsx_stream)."""
    import distributed  # only the Dask tests pay for the import

    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address="127.0.0.1:0",
                                  scheduler_kwargs={"dashboard": False}) as cluster:
        yield cluster.scheduler_address
