"""Every spec case, classified by the Dask engine, gives the pandas engine's patients table.

One extract holds the cases of all rule tables (their patient ids are unique across
modules); it runs once per engine, so the hand-written scenarios guard both engines.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from . import test_rules_r01_r07 as r01_r07
from . import test_rules_r08_r13 as r08_r13
from .helpers import run_cli

pytest.importorskip("distributed")
pytestmark = pytest.mark.dask


def test_dask_engine_agrees_on_every_spec_case(tmp_path: Path) -> None:
    labs = r01_r07.LABS + r08_r13.LABS
    patients = r01_r07.PATIENTS + r08_r13.PATIENTS
    medications = r01_r07.MEDICATIONS + r08_r13.MEDICATIONS
    runs = {}
    for engine in ("pandas", "dask"):
        (tmp_path / engine).mkdir()
        runs[engine] = run_cli(tmp_path / engine, labs, patients, medications, engine=engine)
    expected = pd.read_parquet(runs["pandas"] / "patients.parquet")
    assert len(expected) == len({r["patient_id"] for r in labs + patients + medications})
    pd.testing.assert_frame_equal(pd.read_parquet(runs["dask"] / "patients.parquet"), expected)


def test_cohort_cut_into_parts_on_threads_agrees_on_every_spec_case(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The pandas engine runs the per-patient rules on one thread per core for large
    cohorts; cutting even the spec cases into three ranges must change no byte."""
    import pipeline.rules.classify

    labs = r01_r07.LABS + r08_r13.LABS
    patients = r01_r07.PATIENTS + r08_r13.PATIENTS
    medications = r01_r07.MEDICATIONS + r08_r13.MEDICATIONS
    (tmp_path / "whole").mkdir()
    whole = run_cli(tmp_path / "whole", labs, patients, medications)
    monkeypatch.setattr(pipeline.rules.classify, "THREADS", 3)
    monkeypatch.setattr(pipeline.rules.classify, "MIN_PATIENTS_PER_PART", 1)
    (tmp_path / "parts").mkdir()
    parts = run_cli(tmp_path / "parts", labs, patients, medications)
    assert (parts / "patients.parquet").read_bytes() == (whole / "patients.parquet").read_bytes()
    # the parts' practices (and rule ids) are joined over the union of their values: the
    # lists' practice order and the practice breakdowns must not notice
    for name in ("measures.csv", *(f"worklists/{p.name}" for p in (whole / "worklists").glob(
            "*.csv"))):
        assert (parts / name).read_bytes() == (whole / name).read_bytes(), name
    pd.testing.assert_frame_equal(  # the input files' paths differ, nothing else may
        pd.read_parquet(parts / "results.parquet").drop(columns="source_file"),
        pd.read_parquet(whole / "results.parquet").drop(columns="source_file"))
