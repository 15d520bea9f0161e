"""Per-site thresholds: a profile's ``[sites]`` table applies another profile's cut-offs
to the results of one performing lab (R1, R2 and R5's MMA limit), and only to those.

BSH 2014 (the shipped ``bsh-2014`` example) puts the total B12 cut-off at 200 ng/L and the
MMA upper limit at 0.28 umol/L, so 190 ng/L is indeterminate under NICE NG239 but
deficient at LABX.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pandas as pd
import pytest

from .helpers import cases, check, read_patients, rows_of, run_cli

PROFILE = """
    [profile]
    name = "nice-with-labx"
    title = "NICE NG239, with LABX's assay-specific cut-offs"
    extends = "nice-ng239"

    [sites]
    LABX = "bsh-2014"
"""

LABS = """
    patient_id          | collected_at | test_code | result | unit   | site_id
    SITE_labx_190       | 2026-10-03   | B12       | 190    | ng/L   | LABX
    SITE_labx_lower     | 2026-10-03   | B12       | 190    | ng/L   | labx    # as codes: any case
    SITE_laby_190       | 2026-10-03   | B12       | 190    | ng/L   | LABY    # not mapped
    SITE_none_190       | 2026-10-03   | B12       | 190    | ng/L   |
    SITE_labx_200       | 2026-10-03   | B12       | 200    | ng/L   | LABX
    SITE_labx_pmol      | 2026-10-03   | B12       | 140    | pmol/L | LABX    # 189.7 ng/L
    SITE_labx_active    | 2026-10-03   | HOLOTC    | 24     | pmol/L | LABX    # R2 not changed
    SITE_labx_mma       | 2026-10-03   | B12       | 250    | ng/L   | LABX
    SITE_labx_mma       | 2026-10-10   | MMA       | 0.3    | umol/L | LABX    # > 0.28
    SITE_laby_mma       | 2026-10-03   | B12       | 250    | ng/L   | LABY
    SITE_laby_mma       | 2026-10-10   | MMA       | 0.3    | umol/L | LABY    # <= 0.45
    SITE_mixed          | 2026-10-03   | B12       | 190    | ng/L   | LABY
    SITE_mixed          | 2026-10-03   | HOLOTC    | 40     | pmol/L | LABX    # indeterminate too
"""
EXPECTED = """
    patient_id       | b12_status    | status_basis | needs_mma | discordant
    SITE_labx_190    | deficient     | b12_total    | F         | F
    SITE_labx_lower  | deficient     | b12_total    | F         | F
    SITE_laby_190    | indeterminate | b12_total    | T         | F
    SITE_none_190    | indeterminate | b12_total    | T         | F
    SITE_labx_200    | indeterminate | b12_total    | T         | F
    SITE_labx_pmol   | deficient     | b12_total    | F         | F
    SITE_labx_active | deficient     | b12_active   | F         | F
    SITE_labx_mma    | deficient     | mma          | F         | F
    SITE_laby_mma    | unlikely      | mma          | F         | F
    SITE_mixed       | indeterminate | b12_total    | T         | F
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("sites")
    profile = folder / "nice-with-labx.toml"
    profile.write_text(textwrap.dedent(PROFILE), encoding="utf-8")
    return run_cli(folder, rows_of(LABS), rules=profile)


@pytest.fixture(scope="module")
def patients(run: Path) -> pd.DataFrame:
    return read_patients(run)


@pytest.mark.parametrize("expected", cases(EXPECTED))
def test_sites_select_method_specific_thresholds(patients: pd.DataFrame,
                                                 expected: dict[str, str]) -> None:
    check(patients, expected)


def test_results_carry_the_band_of_their_own_site(run: Path) -> None:
    results = pd.read_parquet(run / "results.parquet").set_index("patient_id")
    assert results.loc["SITE_labx_190", "band"] == "deficient"
    assert results.loc["SITE_laby_190", "band"] == "indeterminate"


def test_R9_profile_written_before_rev2_still_loads(tmp_path: Path) -> None:
    """A lab's profile copied from a shipped one before SPEC rev 2 names R9's diet text
    ``diet`` and the potassium note ``parenteral_note``: it loads, with those values
    under their new names."""
    from pipeline.config import load_rules

    profile = tmp_path / "local.toml"
    profile.write_text(textwrap.dedent("""
        [profile]
        name = "local"
        [rules.R9]
        diet = "local diet text"
        parenteral_note = "local potassium note"
    """), encoding="utf-8")
    r9 = load_rules(str(profile)).rule("R9")
    assert r9["prevention_diet"] == "local diet text"
    assert r9["injection_note"] == "local potassium note"
    assert "diet" not in r9 and "parenteral_note" not in r9
