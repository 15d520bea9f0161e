"""Patients the rules have nothing to read for (seen only in other tests, rejected rows or
results after the as-of date, with no patients row and no prescription) are classified
once for all (``pipeline.rules.classify._bare_rows``): every output is byte for byte
what running the rules on each of them gives, whatever share of the cohort they are."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

import pipeline.rules.classify as classify
from pipeline.sample_data import generate
from tests.conftest import invoke

FILES = ("patients.parquet", "results.parquet", "worklists/urgent.csv", "worklists/mma.csv",
         "worklists/supplementation.csv", "measures.csv")


def _with_bare(folder: Path, bare: int) -> dict[str, Path]:
    """A messy extract plus ``bare`` patients seen only in a sodium test, a rejected row or
    a result after the as-of date."""
    paths = generate(folder, n_patients=300, seed=9, messy=True)
    labs = pd.read_csv(paths["labs"], dtype=str, keep_default_na=False)
    template = labs.iloc[0]
    extra = pd.DataFrame([template] * bare).reset_index(drop=True)
    extra["patient_id"] = [f"B{i:05d}" for i in range(bare)]
    kind = pd.Series(range(bare)) % 3
    extra.loc[kind == 0, ["test_code", "result", "unit"]] = ["NA", "140", "mmol/L"]
    extra.loc[kind == 1, "result"] = "not a number"  # rejected: non_numeric_result
    extra.loc[kind == 1, "test_code"] = "B12"
    extra.loc[kind == 2, ["test_code", "result", "unit"]] = ["B12", "300", "ng/L"]
    extra.loc[kind == 2, "collected_at"] = "2026-11-20"  # after the as-of date
    pd.concat([labs, extra]).to_csv(paths["labs"], index=False)
    return paths


@pytest.mark.parametrize("bare", [10, 900], ids=["few", "most"])
def test_bare_patients_give_the_same_outputs_on_either_path(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bare: int) -> None:
    paths = _with_bare(tmp_path / "in", bare)
    outputs = {}
    for share in (2.0, 0.0):  # never the shortcut; whenever there is a bare patient
        monkeypatch.setattr(classify, "BARE_SHARE", share)
        out = tmp_path / f"share-{share}"
        result = invoke("run", paths["labs"], "--patients", paths["patients"],
                        "--medications", paths["medications"], "--as-of", "2026-10-31",
                        "--max-reject-rate", "1", "--out", out, "--quiet")
        assert result.exit_code == 0, result.output
        outputs[share] = out
    for name in FILES:
        assert (outputs[0.0] / name).read_bytes() == (outputs[2.0] / name).read_bytes(), name
    patients = pd.read_parquet(outputs[0.0] / "patients.parquet").set_index("patient_id")
    extra = patients.loc[[f"B{i:05d}" for i in range(bare)]]
    assert (extra["b12_status"] == "not_tested").all()
    assert extra["reasons"].eq("").all()
