"""Spec tests for the benchmark's DuckDB reference (benchmarks/reference_r1_r7.sql).

The reference is only worth comparing against if it is right, so each case below is a tiny
extract written from the SPEC's words (R1-R7, units, censoring, windows), with the expected
status beside it. All cases run in one extract (one DuckDB run); each patient is one case.
"""

from __future__ import annotations

import importlib.util
import tomllib
from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from pipeline.sample_data import generate

ROOT = Path(__file__).resolve().parent.parent
AS_OF = date(2026, 10, 31)
TODAY = date(2026, 11, 26)  # fixed, so 'future' does not depend on the clock
HEADER = "patient_id,collected_at,test_code,result,unit,practice_id,site_id,specimen_id"


def _load_reference():
    """benchmarks/ is not a package: load reference.py by path."""
    spec = importlib.util.spec_from_file_location("b12_reference", ROOT / "benchmarks" /
                                                  "reference.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


reference = _load_reference()

# patient: (expected status, rows of (collected_at, test_code, result, unit))
CASES: dict[str, tuple[str, list[tuple[str, str, str, str]]]] = {
    # R1 total B12 bands, ng/L: < 180 deficient, 180-350 inclusive indeterminate, > 350 unlikely
    "r1_179": ("deficient", [("2026-10-01", "B12", "179", "ng/L")]),
    "r1_179_9": ("deficient", [("2026-10-01", "B12", "179.9", "ng/L")]),
    "r1_180": ("indeterminate", [("2026-10-01", "B12", "180", "ng/L")]),
    "r1_180_0": ("indeterminate", [("2026-10-01", "B12", "180.0", "ng/L")]),
    "r1_350": ("indeterminate", [("2026-10-01", "B12", "350", "ng/L")]),
    "r1_350_1": ("unlikely", [("2026-10-01", "B12", "350.1", "ng/L")]),
    "r1_351": ("unlikely", [("2026-10-01", "2132-9", "351", "ng/L")]),
    # R2 active B12 bands, pmol/L: < 25, 25-70, > 70
    "r2_24_9": ("deficient", [("2026-10-01", "HOLOTC", "24.9", "pmol/L")]),
    "r2_25": ("indeterminate", [("2026-10-01", "HOLOTC", "25", "pmol/L")]),
    "r2_70": ("indeterminate", [("2026-10-01", "ACTB12", "70", "pmol/L")]),
    "r2_70_1": ("unlikely", [("2026-10-01", "72160-5", "70.1", "pmol/L")]),
    # R3 censored results are intervals; a band only when the whole interval lies in it
    "r3_lt180": ("deficient", [("2026-10-01", "B12", "<180", "ng/L")]),
    "r3_le180": ("indeterminate", [("2026-10-01", "B12", "<=180", "ng/L")]),
    "r3_le179": ("deficient", [("2026-10-01", "B12", "<=179", "ng/L")]),
    "r3_lt181": ("indeterminate", [("2026-10-01", "B12", "<181", "ng/L")]),
    "r3_gt350": ("unlikely", [("2026-10-01", "B12", ">350", "ng/L")]),
    "r3_ge350": ("indeterminate", [("2026-10-01", "B12", ">=350", "ng/L")]),
    "r3_gt349": ("indeterminate", [("2026-10-01", "B12", ">349", "ng/L")]),
    "r3_gt_space_2000": ("unlikely", [("2026-10-01", "B12", "> 2000", "ng/L")]),
    "r3_active_lt25": ("deficient", [("2026-10-01", "HOLOTC", "<25", "pmol/L")]),
    "r3_active_gt70": ("unlikely", [("2026-10-01", "HOLOTC", ">70", "pmol/L")]),
    "r3_active_ge70": ("indeterminate", [("2026-10-01", "HOLOTC", ">=70", "pmol/L")]),
    # Units: pmol/L x 1.355 = ng/L (132.8 -> 179.944; 132.9 -> 180.0795; 258.4 -> 350.132)
    "u_pmol_132_8": ("deficient", [("2026-10-01", "14685-2", "132.8", "pmol/L")]),
    "u_pmol_132_9": ("indeterminate", [("2026-10-01", "14685-2", "132.9", "pmol/L")]),
    "u_pmol_258_3": ("indeterminate", [("2026-10-01", "B12", "258.3", "pmol/L")]),
    "u_pmol_258_4": ("unlikely", [("2026-10-01", "B12", "258.4", "PMOL/L")]),
    "u_pgml": ("indeterminate", [("2026-10-01", "VITB12", "200", "pg/mL")]),
    "u_default_unit": ("indeterminate", [("2026-10-01", "2132-9", "200", "")]),
    "u_default_pmol": ("deficient", [("2026-10-01", "14685-2", "100", "")]),
    "u_missing_unit": ("not_tested", [("2026-10-01", "B12", "200", "")]),
    "u_active_ngl": ("not_tested", [("2026-10-01", "HOLOTC", "50", "ng/L")]),
    "u_unknown_mg": ("not_tested", [("2026-10-01", "B12", "200", "mg")]),
    "u_implausible": ("not_tested", [("2026-10-01", "B12", "0.25", "ng/L")]),
    "code_case_space": ("deficient", [("2026-10-01", " vitb12 ", "150", "ng/L")]),
    # Bad rows are dropped, the patient stays (not_tested)
    "bad_date": ("not_tested", [("31/02/2026", "B12", "150", "ng/L"),
                                ("yesterday", "B12", "150", "ng/L"),
                                ("2026-02-30", "B12", "150", "ng/L")]),
    "bad_result": ("not_tested", [("2026-10-01", "B12", "haemolysed", "ng/L"),
                                  ("2026-10-02", "B12", "-150", "ng/L"),
                                  ("2026-10-03", "B12", "1e3", "ng/L")]),
    "future": ("unlikely", [("2030-01-01", "B12", "100", "ng/L"),
                            ("2026-09-01", "B12", "400", "ng/L")]),
    # R4 index test: most recent in (as_of - 365, as_of], by date
    "r4_latest_date": ("unlikely", [("2026-01-01", "B12", "100", "ng/L"),
                                    ("2026-06-01", "B12", "400", "ng/L")]),
    "r4_window_edge_out": ("not_tested", [("2025-10-31", "B12", "100", "ng/L")]),
    "r4_window_edge_in": ("deficient", [("2025-11-01T08:00:00", "B12", "100", "ng/L")]),
    "r4_as_of_day": ("deficient", [("2026-10-31T23:59:00", "B12", "100", "ng/L")]),
    "r4_after_as_of": ("unlikely", [("2026-11-05", "B12", "100", "ng/L"),
                                    ("2026-10-01", "B12", "400", "ng/L")]),
    "r4_discordant": ("deficient", [("2026-06-01", "B12", "400", "ng/L"),
                                    ("2026-06-01", "HOLOTC", "20", "pmol/L")]),
    "r4_discordant_times": ("deficient", [("2026-06-01T09:00:00", "HOLOTC", "20", "pmol/L"),
                                          ("2026-06-01T16:00:00", "B12", "400", "ng/L")]),
    "r4_concordant_mild": ("indeterminate", [("2026-06-01", "B12", "200", "ng/L"),
                                             ("2026-06-01", "HOLOTC", "80", "pmol/L")]),
    "r4_same_time_lower": ("deficient", [("2026-06-01T10:00:00", "B12", "400", "ng/L"),
                                         ("2026-06-01T10:00:00", "B12", "170", "ng/L")]),
    "r4_later_time_high": ("unlikely", [("2026-06-01T09:00:00", "B12", "170", "ng/L"),
                                        ("2026-06-01T15:00:00", "B12", "400", "ng/L")]),
    "r4_later_time_low": ("deficient", [("2026-06-01T09:00:00", "B12", "400", "ng/L"),
                                        ("2026-06-01T15:00:00", "B12", "170", "ng/L")]),
    # R5 MMA on/after the index date resolves an indeterminate index test
    "r5_after_high": ("deficient", [("2026-06-01", "B12", "200", "ng/L"),
                                    ("2026-06-10", "MMA", "0.6", "umol/L")]),
    "r5_after_low": ("unlikely", [("2026-06-01", "B12", "200", "ng/L"),
                                  ("2026-06-10", "MMA", "0.3", "umol/L")]),
    "r5_before": ("indeterminate", [("2026-06-01", "B12", "200", "ng/L"),
                                    ("2026-05-31", "MMA", "0.6", "umol/L")]),
    "r5_same_day_earlier_time": ("deficient", [("2026-06-01T15:00:00", "B12", "200", "ng/L"),
                                               ("2026-06-01T09:00:00", "MMA", "0.6", "umol/L")]),
    "r5_at_upper": ("unlikely", [("2026-06-01", "B12", "200", "ng/L"),
                                 ("2026-06-02", "MMA", "0.45", "umol/L")]),
    "r5_nmol_450": ("unlikely", [("2026-06-01", "B12", "200", "ng/L"),
                                 ("2026-06-02", "MMA", "450", "nmol/L")]),
    "r5_nmol_451": ("deficient", [("2026-06-01", "B12", "200", "ng/L"),
                                  ("2026-06-02", "13964-2", "451", "nmol/L")]),
    "r5_micro_sign": ("deficient", [("2026-06-01", "B12", "200", "ng/L"),
                                    ("2026-06-02", "MMA", "0.5", "\u00b5mol/L")]),
    "r5_greek_mu": ("deficient", [("2026-06-01", "B12", "200", "ng/L"),
                                  ("2026-06-02", "MMA", ".5", "\u03bcmol/l")]),
    "r5_nmol_ml": ("unlikely", [("2026-06-01", "B12", "200", "ng/L"),
                                ("2026-06-02", "MMA", "0.2", "nmol/mL")]),
    "r5_censored_straddles": ("indeterminate", [("2026-06-01", "B12", "200", "ng/L"),
                                                ("2026-06-02", "MMA", "<0.5", "umol/L")]),
    "r5_censored_below": ("unlikely", [("2026-06-01", "B12", "200", "ng/L"),
                                       ("2026-06-02", "MMA", "<0.45", "umol/L")]),
    "r5_censored_above": ("deficient", [("2026-06-01", "B12", "200", "ng/L"),
                                        ("2026-06-02", "MMA", ">0.45", "umol/L")]),
    "r5_censored_ge_upper": ("indeterminate", [("2026-06-01", "B12", "200", "ng/L"),
                                               ("2026-06-02", "MMA", ">=0.45", "umol/L")]),
    "r5_latest_wins": ("unlikely", [("2026-06-01", "B12", "200", "ng/L"),
                                    ("2026-06-10", "MMA", "0.6", "umol/L"),
                                    ("2026-07-01", "MMA", "0.3", "umol/L")]),
    "r5_same_day_highest": ("deficient", [("2026-06-01", "B12", "200", "ng/L"),
                                          ("2026-06-10T09:00:00", "MMA", "0.6", "umol/L"),
                                          ("2026-06-10T15:00:00", "MMA", "0.3", "umol/L")]),
    "r5_not_overrule_deficient": ("deficient", [("2026-06-01", "B12", "100", "ng/L"),
                                                ("2026-06-10", "MMA", "0.2", "umol/L")]),
    "r5_not_overrule_unlikely": ("unlikely", [("2026-06-01", "B12", "400", "ng/L"),
                                              ("2026-06-10", "MMA", "0.9", "umol/L")]),
    "r5_after_as_of": ("indeterminate", [("2026-06-01", "B12", "200", "ng/L"),
                                         ("2026-11-05", "MMA", "0.9", "umol/L")]),
    "r5_mma_only": ("not_tested", [("2026-06-01", "MMA", "0.9", "umol/L")]),
    # ids: text, leading zeros kept, surrounding spaces trimmed; exact duplicates count once
    "0000123": ("deficient", [("2026-06-01", "B12", "100", "ng/L")]),
    "dup": ("deficient", [("2026-06-01", "B12", "100", "ng/L"),
                          ("2026-06-01", "B12", "100", "ng/L")]),
}
EXTRA_ROWS = [
    " 0000124 ,2026-06-01,B12,400,ng/L,P1,S1,X1",  # trimmed id
    ",2026-06-01,B12,100,ng/L,P1,S1,X2",  # no id: dropped
    "other_only,2026-06-01,FERRITIN,100,ug/L,P1,S1,X3",  # skipped test: not in output
    '"=HYPERLINK(""http://example.invalid"",""x"")",2026-06-01,B12,100,ng/L,P1,S1,X4',
]


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Run every case through the reference once."""
    folder = tmp_path_factory.mktemp("reference")
    lines = [HEADER]
    for patient, (_, rows) in CASES.items():
        lines += [f"{patient},{at},{code},{result},{unit},P1,S1,X" for at, code, result, unit
                  in rows]
    lines += EXTRA_ROWS
    labs = folder / "labs.csv"
    labs.write_text("\n".join(lines) + "\n", encoding="utf-8")
    patients, results = reference.run_reference(labs, AS_OF, folder / "out", today=TODAY)
    return pd.read_parquet(patients), pd.read_parquet(results)


@pytest.mark.parametrize("patient", list(CASES))
def test_case_status(reference_run: tuple[pd.DataFrame, pd.DataFrame], patient: str) -> None:
    patients, _ = reference_run
    expected = CASES[patient][0]
    row = patients.loc[patients["patient_id"] == patient]
    assert len(row) == 1
    assert row["b12_status"].iloc[0] == expected
    assert bool(row["needs_mma"].iloc[0]) == (expected == "indeterminate")  # R7


def test_cohort_is_every_id_with_an_analyte_row(
    reference_run: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    patients, _ = reference_run
    ids = set(patients["patient_id"])
    assert ids == set(CASES) | {"0000124", '=HYPERLINK("http://example.invalid","x")'}
    assert patients["patient_id"].is_unique


def test_results_are_harmonised(reference_run: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    _, results = reference_run

    def one(patient: str) -> pd.Series:
        rows = results.loc[results["patient_id"] == patient]
        assert len(rows) == 1
        return rows.iloc[0]

    pmol = one("u_pmol_132_8")
    assert (pmol["analyte"], pmol["value"], pmol["unit"]) == ("b12_total", 179.944, "ng/L")
    assert pmol["band"] == "deficient"
    mma = results.loc[(results["patient_id"] == "r5_nmol_451") & (results["analyte"] == "mma")]
    assert mma["value"].tolist() == [0.451]
    assert mma["unit"].tolist() == ["\u00b5mol/L"]
    assert mma["band"].isna().all()
    censored = one("r3_le180")
    assert (censored["censor"], censored["value"], censored["band"]) == ("<=", 180.0,
                                                                         "indeterminate")
    assert one("dup")["value"] == 100.0  # exact duplicate counted once
    assert one("0000124")["band"] == "unlikely"
    # after as_of but not after today: kept in results, left out of classification
    after = results.loc[results["patient_id"] == "r4_after_as_of"]
    assert pd.Timestamp("2026-11-05") in set(after["collected_at"])
    # after today: rejected
    assert pd.Timestamp("2030-01-01") not in set(results["collected_at"])
    for rejected in ("bad_date", "bad_result", "u_missing_unit", "u_active_ngl",
                     "u_unknown_mg", "u_implausible", "other_only"):
        assert rejected not in set(results["patient_id"])


def test_every_canonical_code_maps(tmp_path: Path) -> None:
    """The SQL's code table agrees with configs/formats/canonical.toml."""
    with (ROOT / "configs" / "formats" / "canonical.toml").open("rb") as fh:
        codes = tomllib.load(fh)["labs"]["codes"]
    unit = {"b12_total": "ng/L", "b12_active": "pmol/L", "mma": "umol/L"}
    lines = [HEADER] + [f"p{i},2026-06-01,{code.lower()},20,{unit[analyte]},,,"
                        for i, (code, analyte) in enumerate(codes.items())]
    labs = tmp_path / "labs.csv"
    labs.write_text("\n".join(lines) + "\n", encoding="utf-8")
    _, results_path = reference.run_reference(labs, AS_OF, tmp_path / "out", today=TODAY)
    results = pd.read_parquet(results_path).set_index("patient_id")
    assert results["analyte"].to_dict() == {f"p{i}": a for i, a in enumerate(codes.values())}


def test_thresholds_are_parameters(tmp_path: Path) -> None:
    lines = [HEADER, "a,2026-06-01,B12,200,ng/L,,,", "b,2026-06-01,B12,300,ng/L,,,",
             "b,2026-06-02,MMA,0.5,umol/L,,,"]
    labs = tmp_path / "labs.csv"
    labs.write_text("\n".join(lines) + "\n", encoding="utf-8")
    patients_path, _ = reference.run_reference(
        labs, AS_OF, tmp_path / "out", {"total_deficient_below": 250.0, "mma_upper": 0.6},
        today=TODAY)
    status = pd.read_parquet(patients_path).set_index("patient_id")["b12_status"].to_dict()
    assert status == {"a": "deficient", "b": "unlikely"}


def test_placeholders_all_filled() -> None:
    sql = reference.render_sql("t", AS_OF, Path("p.parquet"), Path("r.parquet"), today=TODAY)
    assert "{" not in sql.replace("{4}", "").replace("{2}", "")


def test_sample_extract_messy_adds_only_rejects(tmp_path: Path) -> None:
    """On generated data: messy rows are all rejected or duplicates, so the reference sees
    the clean extract plus the formula-id patients; CSV and Parquet agree."""
    runs = {}
    for name, kwargs in {"clean": {}, "messy": {"messy": True},
                         "parquet": {"messy": True, "file_format": "parquet"}}.items():
        paths = generate(tmp_path / name, n_patients=600, seed=5, **kwargs)
        patients, results = reference.run_reference(paths["labs"], AS_OF, tmp_path / f"o{name}",
                                                     today=TODAY)
        runs[name] = (pd.read_parquet(patients), pd.read_parquet(results))
    clean_p, clean_r = runs["clean"]
    messy_p, messy_r = runs["messy"]
    formula = messy_p["patient_id"].str.match(r"^[=+]")
    pd.testing.assert_frame_equal(messy_p.loc[~formula].reset_index(drop=True), clean_p)
    keep = ~messy_r["patient_id"].str.match(r"^[=+]")
    pd.testing.assert_frame_equal(messy_r.loc[keep].reset_index(drop=True), clean_r)
    pd.testing.assert_frame_equal(runs["parquet"][0], messy_p)
    pd.testing.assert_frame_equal(runs["parquet"][1], messy_r)
    assert set(clean_p["b12_status"]) == {"deficient", "indeterminate", "unlikely", "not_tested"}
