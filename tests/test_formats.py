"""Extract formats: every key documented and checked, each shipped format run end to end on
its sample, and the same extract in other clothes (Parquet folder, gzip'd cp1252 '|' CSV,
OMOP tables) giving the same answers as the clean canonical CSV."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from pipeline.config import (
    _FORMAT_LAYOUT,
    _READ_KEYS,
    ACCEPTED_UNITS,
    CANONICAL_COLUMNS,
    load_format,
    shipped_formats,
)
from pipeline.errors import UserError
from pipeline.ingest.harmonise import medication_classes, unit_factors
from tests.conftest import invoke

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample_data"
DOCS = ROOT / "docs" / "formats.md"
AS_OF = "2026-10-31"
SAMPLE_FILES = {
    "canonical": ("labs.csv", "patients.csv", "medications.csv"),
    "uk-lab": ("labs.csv", "patients.csv", "medications.csv"),
    "omop": ("measurement.csv", "person.csv", "drug_exposure.csv"),
}
#: The same clinical story in every sample: patient -> expected answers.
EXPECTED = pd.DataFrame([
    # id,   status,          basis,        value,  censor, mma,  needs_mma, metformin, due
    ("1001", "deficient", "b12_total", 150.0, "", None, False, False, False),
    ("1002", "indeterminate", "b12_total", 262.0, "", None, True, False, False),
    ("1003", "deficient", "mma", 262.0, "", 0.6, False, False, False),
    ("1004", "unlikely", "b12_active", 80.0, "", None, False, False, False),
    ("1005", "deficient", "b12_total", 150.0, "<", None, False, False, False),
    ("1006", "unlikely", "b12_total", 2000.0, ">", None, False, False, False),
    ("1007", "unlikely", "b12_total", 406.5, "", None, False, False, False),
    ("1008", "not_tested", "none", None, None, None, False, False, False),
    ("1009", "not_tested", "none", None, None, None, False, True, True),
    ("1010", "unlikely", "mma", 262.0, "", 0.2, False, False, False),
    ("1011", "not_tested", "none", None, None, None, False, False, False),
    ("1012", "unlikely", "mma", 300.0, "", 0.3, False, False, False),
], columns=["patient_id", "b12_status", "status_basis", "index_value", "index_censor",
            "mma_umol_l", "needs_mma", "on_metformin", "metformin_monitoring_due"])


def _run(labs, out: Path, *extra) -> dict:
    result = invoke("run", labs, "--out", out, "--as-of", AS_OF, "--quiet", *extra)
    assert result.exit_code == 0, result.output
    return json.loads((out / "manifest.json").read_text())


def _patients(out: Path) -> pd.DataFrame:
    frame = pd.read_parquet(out / "patients.parquet")
    for column in frame.columns:
        if isinstance(frame[column].dtype, pd.CategoricalDtype):
            frame[column] = frame[column].astype("object")
    return frame


def _balanced(manifest: dict) -> None:
    acc = manifest["accounting"]
    assert acc["rows_read"] == (acc["rows_accepted"] + acc["rows_rejected"]
                                + acc["rows_skipped_other_tests"] + acc["rows_exact_duplicates"])
    assert all(c["balanced"] for c in acc["by_input"].values())


# ------------------------------------------------------------------------- documentation


def test_every_format_key_and_canonical_column_is_documented() -> None:
    text = DOCS.read_text(encoding="utf-8")
    quoted = set(re.findall(r"`([a-z_]+)`", text))
    keys = set(_READ_KEYS) | set(_FORMAT_LAYOUT["format"])
    keys |= {c for columns in CANONICAL_COLUMNS.values() for c in columns}
    missing = sorted(keys - quoted)
    tables = [f"[{kind}.{key}" for kind in CANONICAL_COLUMNS
              for key in _FORMAT_LAYOUT[kind] if key != "read"]
    missing += [t for t in tables if t not in text]
    missing += [k for k in ("`yes = [...]`", "`no = [...]`", "`class`", "`pattern`")
                if k not in text]
    assert not missing, f"docs/formats.md does not mention: {missing}"


def test_every_shipped_format_is_documented_and_has_a_sample() -> None:
    text = DOCS.read_text(encoding="utf-8")
    assert set(shipped_formats()) == set(SAMPLE_FILES)
    for name, files in SAMPLE_FILES.items():
        assert f"`{name}`" in text
        assert all((SAMPLES / name / f).is_file() for f in files)


def test_accepted_units_match_the_conversion_table() -> None:
    factors = unit_factors(load_rules_harmonise())
    assert {a: tuple(u) for a, u in factors.items()} == ACCEPTED_UNITS


def load_rules_harmonise() -> dict:
    from pipeline.config import load_rules

    return load_rules().harmonise


def test_the_worked_example_in_the_docs_runs(tmp_path: Path) -> None:
    text = DOCS.read_text(encoding="utf-8")
    example = text[text.index("## A worked example"):text.index("## Keys")]
    csv_text = re.search(r"```\n(Lab No.*?)```", example, re.S).group(1)
    toml_text = re.search(r"```toml\n(.*?)```", example, re.S).group(1)
    labs = tmp_path / "export.csv"
    labs.write_bytes(csv_text.replace("\n", "\r\n").encode("cp1252"))
    fmt = tmp_path / "mylab.toml"
    fmt.write_text(toml_text, encoding="utf-8")
    out = tmp_path / "run"
    manifest = _run(labs, out, "--format", fmt)
    acc = manifest["accounting"]
    assert (acc["rows_read"], acc["rows_accepted"], acc["rows_rejected"],
            acc["rows_skipped_other_tests"]) == (4, 3, 0, 1)
    results = pd.read_parquet(out / "results.parquet").sort_values("source_row")
    assert results["value"].tolist() == [262.0, 25.0, 0.61]
    assert results["censor"].astype(str).tolist() == ["", "<", ""]
    assert results["source_row"].tolist() == [2, 3, 4]


# ------------------------------------------------------------------ format file checking

MINIMAL = """
[labs.columns]
patient_id = "id"
collected_at = "when"
test_code = "code"
result = "value"

[labs.codes]
B12 = "b12_total"
"""


def test_a_minimal_format_borrows_patients_and_medications_from_canonical(
        tmp_path: Path) -> None:
    path = tmp_path / "mini.toml"
    path.write_text(MINIMAL, encoding="utf-8")
    fmt = load_format(str(path))
    canonical = load_format("canonical")
    assert fmt.name == "mini"
    assert fmt.patients.columns == canonical.patients.columns
    assert fmt.medications.classes == canonical.medications.classes
    assert fmt.sha256 != canonical.sha256


KNOWN_LABS = ", ".join(CANONICAL_COLUMNS["labs"])
BAD_FORMATS = [
    ("", "format {p} maps nothing: it needs a [labs.columns] table (see docs/formats.md)"),
    ('[format]\nname = "x"\n', "format {p} maps nothing: it needs a [labs.columns] table "
                               "(see docs/formats.md)"),
    (MINIMAL.replace('B12 = "b12_total"', ""),
     "format {p} maps no test codes ([labs.codes] is empty)"),
    (MINIMAL.replace('result = "value"', ""),
     "format {p} does not map required labs column(s): result"),
    (MINIMAL.replace('patient_id = "id"', 'patient = "id"'),
     "unknown key 'labs.columns.patient' in {p} (canonical columns: " + KNOWN_LABS + ")"),
    (MINIMAL + "[labz]\n", "unknown key 'labz' in {p}"),
    (MINIMAL + "[read]\ncolour = 1\n", "unknown key 'read.colour' in {p}"),
    (MINIMAL + "[labs.read]\nday_frist = true\n", "unknown key 'labs.read.day_frist' in {p}"),
    (MINIMAL + '[read]\ndelimiter = ":"\n',
     "key 'read.delimiter' in {p} must be one of \"auto\", \",\", \";\", \"tab\", \"|\""),
    (MINIMAL + '[read]\nencoding = "klingon"\n',
     "key 'read.encoding' in {p} names an unknown encoding 'klingon' (use \"auto\", "
     "\"utf-8\", \"cp1252\", \"latin-1\", ...)"),
    (MINIMAL + '[labs.read]\nday_first = "yes"\n',
     "key 'labs.read.day_first' in {p} must be true or false"),
    (MINIMAL + '[read]\nmissing_values = "NULL"\n',
     "key 'read.missing_values' in {p} must be a list of text, e.g. [\"NULL\", \"N/A\"]"),
    (MINIMAL + '[read]\ndatetime_formats = ["dd/mm/yyyy"]\n',
     "key 'read.datetime_formats' in {p} must hold strptime formats such as "
     "\"%d/%m/%Y %H:%M\""),
    (MINIMAL.replace('"b12_total"', '"b12"'),
     "key 'labs.codes.B12' in {p} must be one of b12_total, b12_active, mma"),
    (MINIMAL + '[labs.default_units]\nB12 = "mg/dL"\n',
     "key 'labs.default_units.B12' in {p} is not a unit for b12_total (ng/l, pg/ml, pmol/l)"),
    (MINIMAL + '[labs.default_units]\nFOLATE = "ug/L"\n',
     "key 'labs.default_units.FOLATE' in {p} names a code that [labs.codes] does not map"),
    (MINIMAL.replace('patient_id = "id"', "patient_id = 5"),
     "key 'labs.columns.patient_id' in {p} must name a source column, or a list of them"),
    (MINIMAL.replace('patient_id = "id"', "patient_id = []"),
     "key 'labs.columns.patient_id' in {p} must name a source column, or a list of them"),
    (MINIMAL + "[labs.values]\nunit = 3\n",
     "key 'labs.values.unit' in {p} must be a table of source value = canonical value"),
    (MINIMAL + '[labs.values.colour]\nred = "blue"\n',
     "unknown key 'labs.values.colour' in {p} (canonical columns: " + KNOWN_LABS + ")"),
    (MINIMAL + '[patients.yes_no]\nyes = "y"\n',
     "key 'patients.yes_no.yes' in {p} must be a list of text, e.g. [\"NULL\", \"N/A\"]"),
    (MINIMAL + '[patients.yes_no]\nyes = ["y", "1"]\nno = ["n", "1"]\n',
     "key 'patients.yes_no' in {p} lists '1' as both yes and no"),
    (MINIMAL + '[patients.columns]\npatient_id = "id"\n[patients.yes_no]\nmaybe = ["?"]\n',
     "unknown key 'patients.yes_no.maybe' in {p}"),
    (MINIMAL + '[[medications.classes]]\nclass = "statin"\npattern = "statin"\n',
     "medications.classes[0] in {p} needs class (one of metformin, b12_oral, b12_injection, "
     "acid_suppressant) and pattern"),
    (MINIMAL + '[[medications.classes]]\nclass = "metformin"\npattern = "metformin("\n',
     "medications.classes[0].pattern in {p}: missing ), unterminated subpattern at "
     "position 9"),
    (MINIMAL + '[medications]\nclasses = "metformin"\n',
     "key 'medications.classes' in {p} must be an array of tables ([[medications.classes]])"),
    (MINIMAL + '[medications.codes]\n"12345" = "aspirin"\n',
     "key 'medications.codes.12345' in {p} must be one of metformin, b12_oral, "
     "b12_injection, acid_suppressant"),
    (MINIMAL + '[format]\nname = 3\n', "key 'format.name' in {p} must be text"),
]


@pytest.mark.parametrize(("text", "message"), BAD_FORMATS)
def test_bad_format_files_name_the_key_and_file(tmp_path: Path, text: str,
                                                message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(UserError) as err:
        load_format(str(path))
    assert err.value.message == message.format(p=path)
    assert err.value.exit_code == 2


def test_invalid_toml_is_a_usage_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text("[labs.columns\npatient_id = 'id'\n", encoding="utf-8")
    with pytest.raises(UserError) as err:
        load_format(str(path))
    assert err.value.message.startswith(f"format file {path} is not valid TOML: ")
    assert err.value.exit_code == 2


# ------------------------------------------------------------------- shipped formats e2e


def _check_sample_answers(out: Path, id_map=lambda s: s) -> None:
    patients = _patients(out).set_index("patient_id")
    expected = EXPECTED.assign(patient_id=EXPECTED["patient_id"].map(id_map))
    assert sorted(patients.index) == sorted(expected["patient_id"])
    got = patients.loc[expected["patient_id"], expected.columns[1:]].reset_index()
    got = got.astype(object).where(got.notna(), None)
    want = expected.astype(object).where(expected.notna(), None)
    assert got.to_dict("records") == want.to_dict("records")


@pytest.mark.parametrize("name", sorted(SAMPLE_FILES))
def test_shipped_format_sample_end_to_end(tmp_path: Path, name: str) -> None:
    labs, patients, meds = (SAMPLES / name / f for f in SAMPLE_FILES[name])
    out = tmp_path / name
    manifest = _run(labs, out, "--patients", patients, "--medications", meds,
                    "--format", name, "--max-reject-rate", "0.1")
    _check_sample_answers(out)
    _balanced(manifest)
    assert manifest["format"]["name"] == name
    rejected = pd.read_csv(out / "rejected.csv", dtype=str, keep_default_na=False)
    assert rejected[["input", "source_row", "reasons"]].values.tolist() == [
        ["labs", "13", "unknown_unit"]]  # patient 1011: B12 in mg/dL
    _only_unused_columns_reported(manifest)


def test_omop_parquet_with_typed_columns(tmp_path: Path) -> None:
    """OMOP tables as Parquet with their CDM types: integer ids and concepts, float values,
    dates and timestamps; split into part files as exported by Spark."""
    read = {"convert_options": pacsv.ConvertOptions(strings_can_be_null=True)}
    measurement = pacsv.read_csv(SAMPLES / "omop" / "measurement.csv", **read)
    measurement = measurement.set_column(
        measurement.schema.get_field_index("value_as_number"), "value_as_number",
        measurement["value_as_number"].cast(pa.float64()))
    assert measurement.schema.field("person_id").type == pa.int64()
    assert measurement.schema.field("measurement_date").type == pa.date32()
    assert measurement.schema.field("operator_concept_id").type == pa.int64()
    folder = tmp_path / "measurement"
    folder.mkdir()
    pq.write_table(measurement.slice(0, 7), folder / "part-00000.parquet")
    pq.write_table(measurement.slice(7), folder / "part-00001.parquet")
    for name in ("person", "drug_exposure"):
        pq.write_table(pacsv.read_csv(SAMPLES / "omop" / f"{name}.csv", **read),
                       tmp_path / f"{name}.parquet")
    out = tmp_path / "out"
    manifest = _run(folder, out, "--patients", tmp_path / "person.parquet",
                    "--medications", tmp_path / "drug_exposure.parquet", "--format", "omop",
                    "--max-reject-rate", "0.1")
    _check_sample_answers(out)
    _balanced(manifest)
    # person_id is an integer by definition in OMOP: no warning about it; the CDM columns
    # the format does not use are reported, one line per input, and none is a near-miss
    _only_unused_columns_reported(manifest)
    ages = _patients(out).set_index("patient_id")["age_years"]
    assert ages.loc[["1001", "1002", "1009"]].tolist() == [76, 46, 71]


# ------------------------------------------------------ acceptance: same extract, new shape


@pytest.fixture(scope="module")
def extract(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from pipeline.sample_data import generate

    return generate(tmp_path_factory.mktemp("extract"), n_patients=400, seed=7, messy=True)


@pytest.fixture(scope="module")
def clean_answers(extract: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
                  ) -> pd.DataFrame:
    out = tmp_path_factory.mktemp("clean") / "run"
    _run(extract["labs"], out, "--patients", extract["patients"], "--medications",
         extract["medications"], "--max-reject-rate", "1")
    return _patients(out)


def _text_frame(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def test_parquet_folder_gives_the_same_answers(extract, clean_answers, tmp_path: Path) -> None:
    labs = pa.Table.from_pandas(_text_frame(extract["labs"]), preserve_index=False)
    folder = tmp_path / "labs"
    folder.mkdir()
    step = -(-labs.num_rows // 3)
    for i in range(3):  # part files, as a database export or Spark writes them
        pq.write_table(labs.slice(i * step, step), folder / f"part-{i:05d}.parquet")
    for kind in ("patients", "medications"):
        pq.write_table(pa.Table.from_pandas(_text_frame(extract[kind]), preserve_index=False),
                       tmp_path / f"{kind}.parquet")
    out = tmp_path / "out"
    manifest = _run(folder, out, "--patients", tmp_path / "patients.parquet",
                    "--medications", tmp_path / "medications.parquet",
                    "--max-reject-rate", "1")
    assert len(manifest["inputs"]["labs"]) == 3
    pd.testing.assert_frame_equal(_patients(out), clean_answers)


def test_gzipped_cp1252_pipe_csv_gives_the_same_answers(extract, clean_answers,
                                                        tmp_path: Path) -> None:
    paths = {}
    for kind in ("labs", "patients", "medications"):
        frame = _text_frame(extract[kind])
        if kind == "labs":  # every micro sign as the cp1252 one: µmol/L
            micro = frame["unit"].str.lower().str.replace("μ", "u").str.replace("µ", "u")
            frame["unit"] = frame["unit"].where(micro != "umol/l", "µmol/L")
            assert (frame["unit"] == "µmol/L").sum() > 20
        text = frame.to_csv(sep="|", index=False, lineterminator="\r\n")
        paths[kind] = tmp_path / f"{kind}.csv.gz"
        paths[kind].write_bytes(gzip.compress(text.encode("cp1252")))
    out = tmp_path / "out"
    manifest = _run(paths["labs"], out, "--patients", paths["patients"], "--medications",
                    paths["medications"], "--max-reject-rate", "1")
    assert manifest["inputs"]["labs"][0]["encoding"] == "cp1252"
    assert manifest["inputs"]["labs"][0]["delimiter"] == "|"
    pd.testing.assert_frame_equal(_patients(out), clean_answers)


_OPERATORS = {"<": "4171756", "<=": "4171754", ">": "4172704", ">=": "4171755"}


def _as_omop(extract: dict[str, Path], folder: Path) -> dict[str, Path]:
    """The canonical extract rewritten as OMOP CDM v5.4 tables (CSV), as an ETL would."""
    folder.mkdir()
    labs = _text_frame(extract["labs"])
    parts = labs["result"].str.strip().str.extract(r"^(<=|>=|<|>)?\s*([0-9.]+)$")
    timed = labs["collected_at"].str.len() > 10
    measurement = pd.DataFrame({
        "measurement_id": [str(i) for i in range(1, len(labs) + 1)],
        "person_id": labs["patient_id"],
        "measurement_concept_id": labs["test_code"].map(
            {"2132-9": "3000593", "14685-2": "3009035"}).fillna("0"),
        "measurement_date": labs["collected_at"].str[:10],
        "measurement_datetime": labs["collected_at"].where(timed, ""),
        "operator_concept_id": parts[0].map(_OPERATORS).fillna(""),
        "value_as_number": parts[1].fillna(""),
        "unit_concept_id": "0",
        "measurement_source_value": labs["test_code"],
        "unit_source_value": labs["unit"],
        "value_source_value": labs["result"],
    })
    patients = _text_frame(extract["patients"])
    birth = pd.to_datetime(patients["birth_date"], format="%Y-%m-%d", errors="coerce")
    person = pd.DataFrame({
        "person_id": patients["patient_id"],
        "gender_concept_id": patients["sex"].str.upper().map(
            {"M": "8507", "MALE": "8507", "F": "8532", "FEMALE": "8532"}).fillna("0"),
        "year_of_birth": birth.dt.year.astype("Int64").astype(str).replace("<NA>", ""),
        "month_of_birth": birth.dt.month.astype("Int64").astype(str).replace("<NA>", ""),
        "day_of_birth": birth.dt.day.astype("Int64").astype(str).replace("<NA>", ""),
        "birth_datetime": patients["birth_date"].where(birth.isna(), ""),
        "care_site_id": patients["practice_id"],
    })
    meds = _text_frame(extract["medications"])
    drug = pd.DataFrame({
        "drug_exposure_id": [str(i) for i in range(1, len(meds) + 1)],
        "person_id": meds["patient_id"], "drug_concept_id": "0",
        "drug_exposure_start_date": meds["start_date"],
        "drug_exposure_end_date": meds["end_date"],
        "drug_source_value": meds["medication"],
    })
    out = {}
    for name, frame in (("measurement", measurement), ("person", person),
                        ("drug_exposure", drug)):
        out[name] = folder / f"{name}.csv"
        frame.to_csv(out[name], index=False)
    return out


def test_extract_rewritten_as_omop_classifies_identically(extract, tmp_path: Path) -> None:
    """The OMOP person table has no diet or yes/no history and drug_exposure no mg/day, so
    the canonical run it is compared with gets the same facts and no more."""
    omop = _as_omop(extract, tmp_path / "omop")
    patients = _text_frame(extract["patients"])[["patient_id", "birth_date", "sex",
                                                 "practice_id"]]
    meds = _text_frame(extract["medications"]).drop(columns=["dose_mg_per_day"])
    patients.to_csv(tmp_path / "patients.csv", index=False)
    meds.to_csv(tmp_path / "medications.csv", index=False)
    canonical_out, omop_out = tmp_path / "canonical", tmp_path / "omop-run"
    _run(extract["labs"], canonical_out, "--patients", tmp_path / "patients.csv",
         "--medications", tmp_path / "medications.csv", "--max-reject-rate", "1")
    manifest = _run(omop["measurement"], omop_out, "--patients", omop["person"],
                    "--medications", omop["drug_exposure"], "--format", "omop",
                    "--max-reject-rate", "1")
    _balanced(manifest)
    want = _patients(canonical_out).drop(columns=["practice_id"])
    got = _patients(omop_out).drop(columns=["practice_id"])
    assert (want["b12_status"] != "not_tested").sum() > 100
    pd.testing.assert_frame_equal(got, want)


def test_omop_operator_concepts_become_censors(tmp_path: Path) -> None:
    """Each operator concept of the SPEC; 0 and empty mean none; anything else is rejected
    (an unknown operator could turn '<150' into an exact 150)."""
    from datetime import date

    from pipeline.config import load_rules
    from pipeline.ingest.read import read_input
    from pipeline.ingest.validate import validate_labs

    operators = ["4171756", "4171754", "4172703", "4172704", "4171755", "0", "", "4172705"]
    rows = "\n".join(f"{i},2026-10-01,3000593,200,{op},ng/L"
                     for i, op in enumerate(operators, start=1))
    path = tmp_path / "measurement.csv"
    path.write_text("person_id,measurement_date,measurement_concept_id,value_as_number,"
                    "operator_concept_id,unit_source_value\n" + rows + "\n", encoding="utf-8")
    fmt = load_format("omop")
    checked = validate_labs(read_input(path, fmt.labs), fmt, load_rules(), date(2026, 11, 1))
    assert checked.accepted["censor"].tolist() == ["<", "<=", "", ">", ">=", "", ""]
    assert checked.rejected[["source_row", "reasons"]].values.tolist() == [[9, "bad_censor"]]


def test_an_omop_operator_sign_overrides_the_text_but_equals_leaves_the_texts_sign(
        tmp_path: Path) -> None:
    """value_source_value '>170' beside value_as_number 170: an operator '<' is the ETL's
    own reading and wins; '=' (which ETLs often fill in for every row) does not turn the
    lab's '>170' into an exact, deficient 170; no operator keeps the text's sign."""
    from datetime import date

    from pipeline.config import load_rules
    from pipeline.ingest.read import read_input
    from pipeline.ingest.validate import validate_labs

    rows = "\n".join(f"{i},2026-10-01,3000593,170,>170,{op},ng/L"
                     for i, op in enumerate(["4171756", "4172703", ""], start=1))
    path = tmp_path / "measurement.csv"
    path.write_text("person_id,measurement_date,measurement_concept_id,value_as_number,"
                    "value_source_value,operator_concept_id,unit_source_value\n" + rows + "\n",
                    encoding="utf-8")
    fmt = load_format("omop")
    checked = validate_labs(read_input(path, fmt.labs), fmt, load_rules(), date(2026, 11, 1))
    assert checked.accepted["censor"].tolist() == ["<", ">", ">"]


def _only_unused_columns_reported(manifest: dict) -> None:
    """The only warnings are the one-line reports of columns the format does not use."""
    assert all("column(s) not used by the format" in w for w in manifest["warnings"]), \
        manifest["warnings"]


def test_a_folder_named_like_a_shipped_format_does_not_hide_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """OMOP tables kept in ./omop/ and a ./nice-ng239/ folder: --format omop and
    --rules nice-ng239 still name the shipped files; an explicit path stays a path."""
    (tmp_path / "omop").mkdir()
    (tmp_path / "nice-ng239").mkdir()
    for name in SAMPLE_FILES["omop"]:
        (tmp_path / "omop" / name).write_bytes((SAMPLES / "omop" / name).read_bytes())
    monkeypatch.chdir(tmp_path)
    labs, patients, meds = (f"omop/{f}" for f in SAMPLE_FILES["omop"])
    manifest = _run(labs, tmp_path / "out", "--patients", patients, "--medications", meds,
                    "--format", "omop", "--rules", "nice-ng239", "--max-reject-rate", "0.1")
    assert manifest["format"]["name"] == "omop"
    assert manifest["rules"]["name"] == "nice-ng239"
    result = invoke("run", labs, "--format", "omop/", "--out", tmp_path / "out2", "--quiet")
    assert result.exit_code == 2 and "format file not found: omop/" in result.stderr


#: (prescription name as a UK record writes it, the classes it must count in)
MEDICATION_NAMES = [
    ("Hydroxocobalamin 1mg/1ml solution for injection ampoules", {"b12_injection"}),
    ("Neo-Cytamen 1000micrograms/1ml solution for injection ampoules", {"b12_injection"}),
    ("Cobalin-H 1mg/1ml solution for injection ampoules", {"b12_injection"}),
    ("Cytamen 1000micrograms/1ml injection", {"b12_injection"}),
    ("Vit B12 1mg/1ml inj", {"b12_injection"}),
    ("B12 injection", {"b12_injection"}),
    ("Cyanocobalamin 1mg tablets", {"b12_oral"}),
    ("Vit. B12 1000microgram tablets", {"b12_oral"}),
    ("Cytacon 50micrograms tablets", {"b12_oral"}),
    ("Orobalin 1mg tablets", {"b12_oral"}),
    ("Metformin 500mg modified-release tablets", {"metformin"}),
    ("Glucophage SR 500mg prolonged-release tablets", {"metformin"}),
    ("Janumet 50mg/1000mg tablets", {"metformin"}),
    ("Metformin 500 mg + methylcobalamin 500 micrograms", {"metformin", "b12_combination"}),
    ("Losec 20mg gastro-resistant capsules", {"acid_suppressant"}),
    ("Nexium 40mg tablets", {"acid_suppressant"}),
    ("Omeprazole 20mg gastro-resistant capsules", {"acid_suppressant"}),
    ("Omeprazole20mg capsules", {"acid_suppressant"}),  # no space before the strength
    ("Cobalin H 1mg/1ml solution for injection", {"b12_injection"}),
    ("Vitamin B-12 1000microgram tablets", {"b12_oral"}),
    ("B12 1mg tablets", {"b12_oral"}),
    ("Diagemet XL 500mg prolonged-release tablets", {"metformin"}),
    ("Sublingual B12 1000mcg tablets", {"b12_oral"}),
    ("Metformin/B12 tablets", {"metformin", "b12_combination"}),
    ("IM B12 1mg every 3 months", {"b12_injection"}),  # the route before the name
    ("Cyanocobalamin 1mg/ml i.m.", {"b12_injection"}),
    ("Hydroxycobalamin 1mg/ml", {"b12_injection"}),  # a common misspelling
    ("Vitamin B 12 1000mcg tablets", {"b12_oral"}),
    ("Vipdomet 12.5mg/1000mg tablets", {"metformin"}),
    ("Pyrocalm 20mg gastro-resistant tablets", {"acid_suppressant"}),
    ("Vitamin B1, B6 and B12 tablets", set()),  # a multivitamin's B12 is no treatment dose
    ("Multivitamin with B12", set()),
    ("Vitamin B complex with B12 capsules", set()),
    ("Zotonin", set()),  # a brand name inside another word is not that brand
    ("Aripiprazole 10mg tablets", set()),  # an antipsychotic, though it ends in -prazole
    ("Folic acid 5mg tablets", set()),
    ("Ab12 cream", set()),  # 'b12' inside a word is not B12
]


@pytest.mark.parametrize("name", ["canonical", "uk-lab", "omop"])
def test_shipped_formats_class_uk_prescription_names(name: str) -> None:
    """Brand and abbreviated names (Neo-Cytamen, Cobalin-H, Vit B12 inj, Glucophage, Losec)
    count as their medicine: an unrecognised B12 injection made its patient look untreated
    (urgent) and left them off the retest list."""
    names = pd.Series([n for n, _ in MEDICATION_NAMES], dtype="str")
    found = medication_classes(names, None, load_format(name).medications)
    got = [{c for c in found.columns if found.iloc[i][c]} for i in range(len(names))]
    assert dict(zip(names, got, strict=True)) == dict(MEDICATION_NAMES)


def test_nhs_sex_codes_are_read_as_female_and_male(tmp_path: Path) -> None:
    """NHS records code sex 1 (male) and 2 (female): the breakdown by sex puts them there,
    not all under "other"."""
    labs = tmp_path / "labs.csv"
    patients = tmp_path / "patients.csv"
    ids = [f"S{i:03d}" for i in range(40)]
    labs.write_text("patient_id,collected_at,test_code,result,unit\n" + "".join(
        f"{p},2026-10-01,B12,400,ng/L\n" for p in ids), encoding="utf-8")
    patients.write_text("patient_id,sex\n" + "".join(
        f"{p},{1 + i % 2}\n" for i, p in enumerate(ids)), encoding="utf-8")
    out = tmp_path / "out"
    result = invoke("run", labs, "--patients", patients, "--out", out, "--quiet")
    assert result.exit_code == 0, result.output
    measures = pd.read_csv(out / "measures.csv", keep_default_na=False)
    tested = measures[(measures["measure"] == "deficient_among_tested")
                      & (measures["group_by"] == "sex")].set_index("group")["denominator"]
    assert tested.to_dict() == {"female": 20, "male": 20, "other": 0, "unknown": 0}


def test_omop_concept_ids_written_as_floats_read_as_the_ids(tmp_path: Path) -> None:
    """pandas writes an id column holding a gap as floats (``4171756.0``): an OMOP table
    so written classifies as the original, as the same doubles in Parquet do."""
    sample = Path(__file__).resolve().parents[1] / "sample_data" / "omop"
    table = pd.read_csv(sample / "measurement.csv")
    concept_ids = [c for c in table.columns if c.endswith("_concept_id")]
    table[concept_ids] = table[concept_ids].astype("float64")
    floats = tmp_path / "measurement.csv"
    table.to_csv(floats, index=False)
    assert ",3000593.0," in floats.read_text() and ",4171756.0," in floats.read_text()
    outs = {}
    for name, labs in (("original", sample / "measurement.csv"), ("floats", floats)):
        outs[name] = tmp_path / name
        result = invoke("run", labs, "--format", "omop", "--as-of", "2026-10-31",
                        "--out", outs[name], "--quiet")
        assert result.exit_code == 0, result.output
    for table_name in ("patients.parquet", "rejected.parquet"):
        frames = [pd.read_parquet(outs[n] / table_name) for n in ("original", "floats")]
        columns = ["patient_id", "b12_status", "index_value"] if table_name.startswith(
            "patients") else ["source_row", "reasons"]
        pd.testing.assert_frame_equal(frames[0][columns], frames[1][columns])


def test_omop_person_ids_written_as_floats_are_one_patient(tmp_path: Path) -> None:
    """pandas writes person_id with a gap as 1.0: the format declares ids whole numbers, so
    1.0 is person 1 of the person and drug_exposure tables, not a second patient."""
    m = tmp_path / "m.csv"
    m.write_text("person_id,measurement_concept_id,measurement_date,value_as_number,"
                 "unit_concept_id\n1.0,3000593,2026-10-01,150.0,8725\n"
                 "2.0,3000593,2026-10-01,400.0,8725\n,3000593,2026-10-01,300.0,8725\n",
                 encoding="utf-8")
    d = tmp_path / "d.csv"
    d.write_text("person_id,drug_source_value,drug_exposure_start_date\n"
                 "1,Hydroxocobalamin 1mg/1ml solution for injection ampoules,2026-01-01\n",
                 encoding="utf-8")
    out = tmp_path / "out"
    result = invoke("run", m, "--medications", d, "--format", "omop", "--out", out,
                    "--max-reject-rate", "1", "--quiet")
    assert result.exit_code == 0, result.output
    patients = pd.read_parquet(out / "patients.parquet").set_index("patient_id")
    assert patients.index.tolist() == ["1", "2"]
    assert bool(patients.loc["1", "on_b12_treatment"])
