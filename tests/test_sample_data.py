"""pipeline.sample_data: deterministic, canonical, realistic enough to exercise every rule.

Checks read the files as a lab manager's tools would (text, never numbers), and classify
with a few lines of pandas written here from the SPEC's unit table and bands.
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.sample_data import (
    FORMULA_IDS,
    LAB_COLUMNS,
    MEDICATION_COLUMNS,
    PATIENT_COLUMNS,
    generate,
)
from tests.conftest import invoke

AS_OF = date(2026, 10, 31)
N = 2000
CODES = {"B12": "total", "VITB12": "total", "2132-9": "total", "14685-2": "total",
         "HOLOTC": "active", "ACTB12": "active", "72160-5": "active",
         "MMA": "mma", "13964-2": "mma"}
YES_NO = {"true", "false", "yes", "no", "y", "n", "1", "0", ""}
# The chemistry panel every field-like extract carries, with the units labs print.
PANEL_UNITS = {"NA": "mmol/L", "K": "mmol/L", "CA": "mmol/L", "CL": "mmol/L",
               "UREA": "mmol/L", "CREA": "umol/L", "HB": "g/L", "FERR": "ug/L", "FOL": "ug/L"}
COMBINATION = "Metformin 500 mg + methylcobalamin 500 micrograms tablets"
PPIS = ("omeprazole", "lansoprazole", "esomeprazole", "pantoprazole", "rabeprazole")
H2_BLOCKERS = ("famotidine", "nizatidine")
# sha256 (first 16 hex digits) of the classic shape, n_patients=300, seed=3, messy, CSV.
CLASSIC_DIGESTS = {"labs": "1f8c69b322b4d207", "patients": "bbdf3f9acf1be694",
                   "medications": "4adbf551c8dcc8af"}
NUMBER = r"^\s*(<=|>=|<|>)?\s*(\d+(\.\d*)?|\.\d+)\s*$"


def _read(path: Path) -> pd.DataFrame:
    """Every cell as text, empty cells as ''."""
    if path.suffix == ".parquet":
        return pq.read_table(path).to_pandas().fillna("").astype(str)
    return pd.read_csv(path, dtype=str, keep_default_na=False)


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> dict[str, pd.DataFrame]:
    paths = generate(tmp_path_factory.mktemp("clean"), n_patients=N)
    return {name: _read(path) for name, path in paths.items()}


@pytest.fixture(scope="module")
def messy(tmp_path_factory: pytest.TempPathFactory) -> dict[str, pd.DataFrame]:
    paths = generate(tmp_path_factory.mktemp("messy"), n_patients=N, messy=True)
    return {name: _read(path) for name, path in paths.items()}


def _harmonised(labs: pd.DataFrame) -> pd.DataFrame:
    """B12/MMA rows with analyte, censor, value in the canonical unit and band (R1-R3)."""
    rows = labs.assign(analyte=labs["test_code"].str.strip().str.upper().map(CODES))
    rows = rows.dropna(subset=["analyte"])
    parts = rows["result"].str.extract(NUMBER)
    unit = rows["unit"].str.lower().str.replace("\u00b5", "u").str.replace("\u03bc", "u")
    unit = unit.where(unit != "", rows["test_code"].map(
        {"2132-9": "ng/l", "14685-2": "pmol/l", "72160-5": "pmol/l", "13964-2": "umol/l"}))
    factor = np.select(
        [(rows["analyte"] == "total") & unit.isin(["ng/l", "pg/ml"]),
         (rows["analyte"] == "total") & (unit == "pmol/l"),
         (rows["analyte"] == "active") & (unit == "pmol/l"),
         (rows["analyte"] == "mma") & unit.isin(["umol/l", "nmol/ml"]),
         (rows["analyte"] == "mma") & (unit == "nmol/l")],
        [1.0, 1.355, 1.0, 1.0, 0.001], np.nan)
    value = parts[1].astype(float) * factor
    censor = parts[0].fillna("")
    lo = rows["analyte"].map({"total": 180.0, "active": 25.0})
    hi = rows["analyte"].map({"total": 350.0, "active": 70.0})
    band = np.select(
        [(censor == "") & (value < lo), (censor == "") & (value > hi),
         (censor == "<") & (value <= lo), (censor == "<=") & (value < lo),
         (censor == ">") & (value >= hi), (censor == ">=") & (value > hi)],
        ["deficient", "unlikely", "deficient", "deficient", "unlikely", "unlikely"],
        "indeterminate")
    return rows.assign(censor=censor, value=value, band=np.where(lo.notna(), band, ""))


# --- determinism and layout -----------------------------------------------------------------


@pytest.mark.parametrize("file_format", ["csv", "parquet"])
def test_same_seed_same_bytes(tmp_path: Path, file_format: str) -> None:
    first = generate(tmp_path / "a", n_patients=300, seed=3, messy=True, file_format=file_format)
    second = generate(tmp_path / "b", n_patients=300, seed=3, messy=True, file_format=file_format)
    for name in ("labs", "patients", "medications"):
        assert first[name].read_bytes() == second[name].read_bytes(), name


def test_different_seed_different_files(tmp_path: Path) -> None:
    first = generate(tmp_path / "a", n_patients=300, seed=3)
    second = generate(tmp_path / "b", n_patients=300, seed=4)
    for name in ("labs", "patients", "medications"):
        assert first[name].read_bytes() != second[name].read_bytes(), name


def test_returns_paths_and_exact_columns(tmp_path: Path) -> None:
    paths = generate(tmp_path, n_patients=200)
    assert set(paths) == {"labs", "patients", "medications"}
    assert paths["labs"].name == "labs.csv"
    for name, columns in (("labs", LAB_COLUMNS), ("patients", PATIENT_COLUMNS),
                          ("medications", MEDICATION_COLUMNS)):
        header = paths[name].read_text(encoding="utf-8").splitlines()[0]
        assert tuple(header.split(",")) == columns


def test_parquet_labs_are_text_and_match_csv(tmp_path: Path) -> None:
    csv_paths = generate(tmp_path / "csv", n_patients=300, messy=True)
    pq_paths = generate(tmp_path / "pq", n_patients=300, messy=True, file_format="parquet")
    assert pq_paths["labs"].name == "labs.parquet"
    assert not (tmp_path / "pq" / "labs.csv").exists()
    table = pq.read_table(pq_paths["labs"])
    assert tuple(table.column_names) == LAB_COLUMNS
    assert all(str(t) == "string" for t in table.schema.types)
    pd.testing.assert_frame_equal(_read(pq_paths["labs"]), _read(csv_paths["labs"]))
    assert pq_paths["patients"].read_bytes() == csv_paths["patients"].read_bytes()


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="file_format"):
        generate(tmp_path, file_format="xlsx")
    with pytest.raises(ValueError, match="n_patients"):
        generate(tmp_path, n_patients=0)


def test_row_count_follows_results_per_patient(tmp_path: Path) -> None:
    for per_patient in (1.5, 3.0, 6.0):
        paths = generate(tmp_path / str(per_patient), n_patients=1000,
                         results_per_patient=per_patient)
        rows = len(_read(paths["labs"]))
        assert abs(rows - 1000 * per_patient) / (1000 * per_patient) < 0.1


# --- labs -----------------------------------------------------------------------------------


def test_ids_keep_leading_zeros(clean: dict[str, pd.DataFrame]) -> None:
    ids = clean["patients"]["patient_id"]
    assert ids.str.fullmatch(r"\d{7}").all()
    assert ids.str.startswith("000").mean() > 0.5
    assert ids.is_unique
    assert set(clean["labs"]["patient_id"]) <= set(ids)


def test_labs_clean_and_dated(clean: dict[str, pd.DataFrame]) -> None:
    labs = clean["labs"]
    assert not labs.duplicated().any()
    assert (labs["patient_id"].str.strip() == labs["patient_id"]).all()
    assert labs["patient_id"].ne("").all()
    timed = labs["collected_at"].str.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}")
    dated = labs["collected_at"].str.fullmatch(r"\d{4}-\d{2}-\d{2}")
    assert (timed | dated).all() and 0.2 < timed.mean() < 0.6
    days = pd.to_datetime(labs["collected_at"].str[:10])
    assert days.max() == pd.Timestamp(AS_OF)
    assert days.min() >= pd.Timestamp(AS_OF) - pd.Timedelta(days=457)
    assert (days < pd.Timestamp(AS_OF) - pd.Timedelta(days=365)).mean() > 0.1  # outside R4
    assert labs["result"].str.match(NUMBER).all()
    assert labs["practice_id"].str.fullmatch(r"P\d{5}").all()
    assert labs["practice_id"].nunique() == 8 and labs["site_id"].nunique() == 2


def test_analytes_units_and_other_tests(clean: dict[str, pd.DataFrame]) -> None:
    labs = clean["labs"]
    assert set(CODES) <= set(labs["test_code"])
    other = ~labs["test_code"].isin(list(CODES))
    assert 0.5 < other.mean() < 0.65, "as in a real extract, most rows are other tests"
    assert set(PANEL_UNITS) | {"TSH", "CRP"} <= set(labs.loc[other, "test_code"])
    rows = _harmonised(labs)
    assert rows["value"].notna().all(), "every B12/MMA row has a known unit"
    units = set(rows["unit"])
    assert {"ng/L", "pg/mL", "pmol/L", "nmol/L", "umol/L", "\u00b5mol/L", ""} <= units


def test_every_band_and_censoring_occurs(clean: dict[str, pd.DataFrame]) -> None:
    rows = _harmonised(clean["labs"])
    for analyte in ("total", "active"):
        bands = rows.loc[rows["analyte"] == analyte, "band"].value_counts()
        assert set(bands.index) == {"deficient", "indeterminate", "unlikely"}
        assert bands.min() > 20
    mma = rows.loc[rows["analyte"] == "mma", "value"]
    assert (mma > 0.45).any() and (mma <= 0.45).any()
    censored = rows["censor"] != ""
    assert 0.015 < censored.mean() < 0.05
    texts = set(rows.loc[censored, "result"])
    assert {"<150", ">2000", "<25", ">128"} <= texts
    assert any(t.startswith("> ") for t in texts)  # '> 2000' as the SPEC writes it


def test_pairs_and_mma_timing(clean: dict[str, pd.DataFrame]) -> None:
    rows = _harmonised(clean["labs"])
    rows = rows.assign(day=rows["collected_at"].str[:10])
    per_sample = rows.groupby("specimen_id")["analyte"].agg(set)
    assert (per_sample.map(lambda s: {"total", "active"} <= s)).sum() > 50  # same-day pairs
    b12 = rows.loc[rows["analyte"] != "mma"]
    mma = rows.loc[rows["analyte"] == "mma"]
    pairs = mma.merge(b12, on="patient_id", suffixes=("_mma", "_b12"))
    assert (pairs["day_mma"] > pairs["day_b12"]).any()
    assert (pairs["day_mma"] < pairs["day_b12"]).any()
    assert (pairs["day_mma"] == pairs["day_b12"]).any()
    # MMA is mostly requested after an indeterminate result
    latest = b12.sort_values("day").groupby("patient_id").tail(1).set_index("patient_id")
    with_mma = latest.loc[latest.index.isin(mma["patient_id"]), "band"]
    assert (with_mma == "indeterminate").mean() > 0.5


# --- patients and medications ---------------------------------------------------------------


def test_patients_realistic(clean: dict[str, pd.DataFrame]) -> None:
    patients = clean["patients"]
    assert len(patients) == N
    age = (pd.Timestamp(AS_OF) - pd.to_datetime(patients["birth_date"])).dt.days / 365.25
    assert age.between(4.9, 96).all()
    assert 0 < (age < 16).sum() < 0.08 * N
    assert set(patients["sex"]) == {"F", "M"}
    assert set(patients["diet"]) == {"omnivore", "vegetarian", "vegan", ""}
    assert (patients["diet"] == "omnivore").mean() > 0.7
    flags = ["autoimmune_gastritis", "bariatric_surgery", "crohns_disease",
             "neurological_symptoms", "pregnant"]
    for column in flags:
        assert set(patients[column].str.lower()) <= YES_NO
    spellings = set(patients[flags].to_numpy().ravel())
    assert {"true", "Y", "yes", "1", "FALSE", "N", "no", "0"} <= spellings
    yes = patients[flags].apply(lambda c: c.str.lower().isin(["true", "yes", "y", "1"]))
    assert 0.06 < yes["neurological_symptoms"].mean() < 0.14
    assert (patients.loc[yes["pregnant"], "sex"] == "F").all() and yes["pregnant"].any()
    assert yes["bariatric_surgery"].any() and yes["crohns_disease"].any()
    resection = pd.to_numeric(patients["ileal_resection_cm"].replace("", np.nan))
    assert resection.dropna().between(0, 60).all() and (resection > 20).any()


def test_medications_realistic(clean: dict[str, pd.DataFrame]) -> None:
    meds, patients, labs = clean["medications"], clean["patients"], clean["labs"]
    name = meds["medication"].str.lower()
    metformin = meds.loc[name.str.contains("metformin")]
    share = metformin["patient_id"].isin(patients["patient_id"]).sum() / N
    assert 0.10 < share < 0.20
    assert name.str.contains("sitagliptin/metformin").any()
    dose = pd.to_numeric(metformin["dose_mg_per_day"])
    assert dose.between(500, 3000).all()
    stopped = metformin["end_date"].ne("") & (metformin["end_date"] < AS_OF.isoformat())
    assert stopped.any() and not stopped.all()
    assert (metformin["start_date"] <= AS_OF.isoformat()).all()
    ended = meds.loc[meds["end_date"] != ""]
    assert (ended["end_date"] > ended["start_date"]).all()
    for pattern in ("cyanocobalamin 1mg tablets", "hydroxocobalamin", "injection",
                    "omeprazole", "amlodipine"):
        assert name.str.contains(pattern).any(), pattern
    untested = ~metformin["patient_id"].isin(labs["patient_id"])
    assert untested.sum() > 5, "metformin users with no lab row at all"
    med_only = ~meds["patient_id"].isin(patients["patient_id"])
    assert med_only.any()
    assert meds.loc[med_only, "patient_id"].str.fullmatch(r"\d{7}").all()


# --- messy ----------------------------------------------------------------------------------


def test_messy_adds_each_bad_kind(clean: dict[str, pd.DataFrame],
                                  messy: dict[str, pd.DataFrame]) -> None:
    labs, base = messy["labs"], clean["labs"]
    # ~3 % of the B12/MMA rows broken (the reject rate's denominator), 0.5 % of rows repeated
    b12_rows = base["test_code"].isin(list(CODES)).sum()
    assert 0.03 < (len(labs) - len(base)) / b12_rows < 0.06
    ids = labs["patient_id"]
    kinds = {
        "missing_patient_id": ids.str.strip() == "",
        "bad_date": labs["collected_at"].isin(["31/02/2026", "yesterday", "2026-02-30"]),
        "future_date": labs["collected_at"] == "2030-01-01",
        "non_numeric_result": labs["result"].str.lower() == "haemolysed",
        "negative_result": labs["result"].str.startswith("-"),
        "unknown_unit": labs["unit"] == "mg",
        "implausible_value": (labs["result"] == "0.25") & (labs["unit"] == "ng/L"),
        "exact_duplicate": labs.duplicated(),
        "whitespace_id": (ids != ids.str.strip()) & (ids.str.strip() != ""),
    }
    for kind, mask in kinds.items():
        assert mask.sum() >= 2, kind
        assert not kind.startswith("exact") or mask.sum() >= 3
    for formula in FORMULA_IDS:
        assert (ids == formula).sum() >= 1, formula
    # the clean extract has none of them
    clean_ids = base["patient_id"]
    assert not base.duplicated().any()
    assert not clean_ids.str.match(r"^\s|\s$|^[=+]").any()
    assert not base["result"].str.match(r"^-|[a-z]").any()
    assert not base["unit"].isin(["mg"]).any()
    assert not base["collected_at"].isin(["2030-01-01", "yesterday"]).any()


def test_messy_keeps_the_clean_rows(clean: dict[str, pd.DataFrame],
                                    messy: dict[str, pd.DataFrame]) -> None:
    """Bad rows are added, not swapped in: trimmed, the clean rows are all still there."""
    labs = messy["labs"].assign(patient_id=messy["labs"]["patient_id"].str.strip())
    merged = clean["labs"].merge(labs.drop_duplicates(), how="left", indicator=True)
    assert (merged["_merge"] == "both").all()
    assert messy["patients"].equals(clean["patients"])
    assert messy["medications"].equals(clean["medications"])


def test_formula_ids_survive_csv_quoting(tmp_path: Path) -> None:
    paths = generate(tmp_path, n_patients=100, messy=True)
    text = paths["labs"].read_text(encoding="utf-8")
    assert '"=HYPERLINK(""http://example.invalid"",""x"")"' in text
    assert re.search(r"^\+12345,", text, flags=re.MULTILINE)


def test_benchmark_generate_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """benchmarks/generate.py writes a Parquet extract of about --rows rows."""
    script = Path(__file__).resolve().parent.parent / "benchmarks" / "generate.py"
    spec = importlib.util.spec_from_file_location("b12_bench_generate", script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--rows", "3000", "--out", str(tmp_path), "--seed", "2"]) == 0
    rows = pq.read_metadata(tmp_path / "labs.parquet").num_rows
    assert 2700 < rows < 3300
    assert "labs.parquet" in capsys.readouterr().out


# --- field-like extract: chemistry panel and medicine names ---------------------------------


def test_chemistry_panel_values_and_units(clean: dict[str, pd.DataFrame]) -> None:
    """Sodium is NA, potassium K (sometimes Na, k), with the values and units labs print."""
    labs = clean["labs"]
    code = labs["test_code"].str.upper()
    assert {"NA", "Na", "K", "k", "CA", "CL"} <= set(labs["test_code"])
    sodium = labs.loc[code == "NA", "test_code"]
    assert 0.8 < (sodium == "NA").mean() < 0.97, "mostly NA, the odd Na"
    for test, unit in PANEL_UNITS.items():
        assert set(labs.loc[code == test, "unit"]) == {unit}, test
    value = pd.to_numeric(labs["result"].str.lstrip("<>"), errors="coerce")
    medians = value.groupby(code).median()
    expected = {"NA": (134, 144), "K": (3.8, 5.0), "CA": (2.2, 2.5), "CL": (97, 107),
                "UREA": (4, 8), "CREA": (60, 110), "HB": (120, 150), "FERR": (40, 150),
                "FOL": (4, 12)}
    for test, (low, high) in expected.items():
        assert low < medians[test] < high, (test, medians[test])
    # A sample carries a panel: each test at most once per specimen.
    assert not labs.assign(code=code).duplicated(["specimen_id", "code"]).any()
    assert (labs.loc[code.isin(list(PANEL_UNITS))].groupby("specimen_id").size() >= 3).mean() > 0.5


def test_medicine_names_as_prescribed(clean: dict[str, pd.DataFrame]) -> None:
    meds = clean["medications"]
    name = meds["medication"].str.lower()
    combination = meds["medication"] == COMBINATION
    assert 0.005 < combination.mean() < 0.02, "about 1 % of prescriptions"
    assert (meds["medication"] == "Methylcobalamin 1000 micrograms tablets").any()
    for medicine in (*PPIS, *H2_BLOCKERS):
        assert name.str.contains(medicine).any(), medicine
    aripiprazole = meds["medication"] == "Aripiprazole 10 mg tablets"
    assert aripiprazole.any()
    # The trap: a careless 'prazole' pattern catches an antipsychotic.
    assert (name.str.contains("prazole") & ~name.str.contains("|".join(PPIS))).any()
    assert not name.str.contains("ranitidine").any(), "withdrawn in the UK since 2020"
    # Combination products go to metformin users (some also still on plain metformin).
    plain = meds.loc[name.str.contains("metformin") & ~combination, "patient_id"]
    assert meds.loc[combination, "patient_id"].isin(plain).mean() > 0.5


@pytest.mark.parametrize("as_of", [date(2025, 1, 31), date(2026, 8, 31), date(2026, 12, 5)])
def test_any_month_is_dated_relative_to_as_of(tmp_path: Path, as_of: date) -> None:
    """Nothing after as_of but the deliberate future-dated rows (and planned end dates)."""
    paths = generate(tmp_path, n_patients=400, seed=9, messy=True, as_of=as_of)
    data = {name: _read(path) for name, path in paths.items()}
    labs = data["labs"]
    days = pd.to_datetime(labs["collected_at"].str[:10], format="%Y-%m-%d", errors="coerce")
    future = labs["collected_at"].str.fullmatch(r"20[3-9]\d-01-01")
    assert future.sum() >= 2
    assert (days[future] > pd.Timestamp.today()).all()
    assert days[~future].max() == pd.Timestamp(as_of)
    assert days[~future].min() >= pd.Timestamp(as_of) - pd.Timedelta(days=457)
    meds, patients = data["medications"], data["patients"]
    assert (meds["start_date"] <= as_of.isoformat()).all()
    stopped = meds["end_date"].ne("") & (meds["end_date"] <= as_of.isoformat())
    assert stopped.any() and (meds["end_date"] > as_of.isoformat()).any()
    assert (patients["birth_date"] < as_of.isoformat()).all()


def _sample_data_cli(folder: Path, *extra: str) -> dict[str, pd.DataFrame]:
    result = invoke("sample-data", folder, "--patients", "300", "--seed", "5", *extra)
    assert result.exit_code == 0, result.output
    return {name: pd.read_csv(folder / f"{name}.csv", dtype=str, keep_default_na=False)
            for name in ("labs", "patients", "medications")}


def test_sample_data_command_writes_a_field_like_extract(tmp_path: Path) -> None:
    first = _sample_data_cli(tmp_path / "a")
    _sample_data_cli(tmp_path / "b")
    for name in ("labs", "patients", "medications"):
        assert (tmp_path / "a" / f"{name}.csv").read_bytes() == \
            (tmp_path / "b" / f"{name}.csv").read_bytes(), name
    other = _sample_data_cli(tmp_path / "c", "--messy")
    assert len(other["labs"]) > len(first["labs"])
    codes = set(first["labs"]["test_code"])
    assert {"NA", "Na", "K", *PANEL_UNITS} <= codes
    meds = first["medications"]["medication"]
    assert (meds == COMBINATION).any()
    assert (meds == "Aripiprazole 10 mg tablets").any()
    # Read naively, sodium's code is lost: the reason the product must not do so.
    naive = pd.read_csv(tmp_path / "a" / "labs.csv", dtype=str)
    assert naive["test_code"].isna().sum() == (first["labs"]["test_code"] == "NA").sum() > 0


def test_sample_data_command_as_of(tmp_path: Path) -> None:
    result = invoke("sample-data", tmp_path, "--patients", "300", "--seed", "5",
                    "--as-of", "2026-08-31")
    if result.exit_code == 2 and "--as-of" in result.output + result.stderr:
        pytest.xfail("sample-data has no --as-of option yet (SPEC rev 2)")
    assert result.exit_code == 0, result.output
    labs = pd.read_csv(tmp_path / "labs.csv", dtype=str, keep_default_na=False)
    assert labs["collected_at"].str[:10].max() == "2026-08-31"


# --- shapes -----------------------------------------------------------------------------------


def test_classic_shape_is_the_earlier_generator(tmp_path: Path) -> None:
    """Benchmark comparisons across commits depend on the classic shape not changing."""
    paths = generate(tmp_path, n_patients=300, seed=3, messy=True, shape="classic")
    digests = {name: hashlib.sha256(path.read_bytes()).hexdigest()[:16]
               for name, path in paths.items()}
    assert digests == CLASSIC_DIGESTS, (
        "the classic shape changed; benchmark before/after figures would no longer compare "
        "like for like (a numpy upgrade that changes its random streams would do this too)")
    labs = _read(paths["labs"])
    other = ~labs["test_code"].isin(list(CODES))
    assert 0.25 < other.mean() < 0.35
    assert {"FERRITIN", "FOLATE", "SODIUM"} <= set(labs.loc[other, "test_code"])
    assert "NA" not in set(labs["test_code"])


def test_chemistry_shape_is_one_sixth_sodium(tmp_path: Path) -> None:
    paths = generate(tmp_path, n_patients=3000, seed=4, file_format="parquet",
                     shape="chemistry")
    labs = _read(paths["labs"])
    assert 0.13 < (labs["test_code"] == "NA").mean() < 0.17
    assert {"Na", "k"} <= set(labs["test_code"])
    assert 0.75 < (~labs["test_code"].isin(list(CODES))).mean() < 0.85
    assert (labs["result"].str.startswith("<") | labs["result"].str.startswith(">")).any()


def test_typed_shape(tmp_path: Path) -> None:
    paths = generate(tmp_path, n_patients=6000, seed=4, file_format="parquet", shape="typed")
    table = pq.read_table(paths["labs"])
    assert table.schema.field("result").type == pa.float64()
    assert table.schema.field("collected_at").type == pa.date32()
    assert table.column("result").null_count == 0
    labs = table.to_pandas()
    code = labs["test_code"].astype(str)
    assert 0.13 < (code == "NA").mean() < 0.17
    total = labs.loc[code.isin(["B12", "VITB12", "2132-9", "14685-2"])]
    pmol = total["unit"].astype(str).eq("pmol/L") | total["test_code"].astype(str).eq("14685-2")
    assert 0.25 < pmol.mean() < 0.35
    assert labs["collected_at"].max() == AS_OF
    rows_per_patient = len(labs) / labs["patient_id"].nunique()
    assert 1.0 < rows_per_patient < 1.6, "about a third of the classic shape's ~3.3"
    # Same values as the text the other shapes would write: numbers, rounded as reported.
    assert (labs["result"] == labs["result"].round(2)).all()


def test_bad_shapes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="shape"):
        generate(tmp_path, shape="wide")
    with pytest.raises(ValueError, match="typed"):
        generate(tmp_path, shape="typed")  # CSV has no types
    with pytest.raises(ValueError, match="typed"):
        generate(tmp_path, shape="typed", file_format="parquet", messy=True)


def test_benchmark_generate_shapes(tmp_path: Path) -> None:
    script = Path(__file__).resolve().parent.parent / "benchmarks" / "generate.py"
    spec = importlib.util.spec_from_file_location("b12_bench_generate_shapes", script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for shape in ("classic", "chemistry", "typed"):
        assert module.main(["--rows", "3000", "--out", str(tmp_path / shape), "--seed", "2",
                            "--shape", shape]) == 0
        assert 2700 < pq.read_metadata(tmp_path / shape / "labs.parquet").num_rows < 3300
    classic = generate(tmp_path / "direct", n_patients=1000, seed=2, file_format="parquet",
                       shape="classic")
    assert classic["labs"].read_bytes() == (tmp_path / "classic" / "labs.parquet").read_bytes()
