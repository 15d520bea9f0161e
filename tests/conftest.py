"""Shared fixtures: real files in tmp folders, the CLI run in-process as a user would."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline.cli import app


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
