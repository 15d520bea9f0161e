"""Reading real-world files: where they are, how they are encoded and delimited, and where
each row came from (file and 1-based line), down to the canonical text columns."""

from __future__ import annotations

import gzip
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from pipeline.config import load_format
from pipeline.errors import UserError
from pipeline.ingest.read import MALFORMED, SOURCE_ROW, canonical_view, read_input, resolve_paths

HEADER = "patient_id,collected_at,test_code,result,unit"
ROWS = ["0001,2026-10-01,B12,150,ng/L", "0002,2026-10-02,MMA,0.31,µmol/L"]


@pytest.fixture(scope="module")
def canonical():
    return load_format("canonical")


def _write(path: Path, text: str, encoding: str = "utf-8", newline: str = "\n") -> Path:
    path.write_bytes(text.replace("\n", newline).encode(encoding))
    return path


# ------------------------------------------------------------------- encodings and delimiters


@pytest.mark.parametrize(("encoding", "expected"), [
    ("utf-8", "utf-8"), ("utf-8-sig", "utf-8-sig"), ("cp1252", "cp1252"),
    ("latin-1", "cp1252"), ("utf-16", "utf-16"),
])
def test_encodings_are_detected(tmp_path: Path, canonical, encoding: str, expected: str) -> None:
    path = _write(tmp_path / "labs.csv", "\n".join([HEADER, *ROWS]) + "\n", encoding)
    raw = read_input(path, canonical.labs)
    assert raw.files[0].encoding == expected
    assert list(raw.frame.columns[:5]) == HEADER.split(",")  # the BOM is not in a name
    assert raw.frame["unit"].tolist() == ["ng/L", "µmol/L"]
    assert raw.frame["patient_id"].tolist() == ["0001", "0002"]


def test_mostly_utf8_with_a_stray_byte_keeps_utf8_and_warns(tmp_path: Path, canonical) -> None:
    text = "\n".join([HEADER, *ROWS]).encode() + b"\n0003,2026-10-03,B12,\xb1200,ng/L\n"
    path = tmp_path / "labs.csv"
    path.write_bytes(text)
    raw = read_input(path, canonical.labs)
    assert raw.frame["unit"].tolist()[:2] == ["ng/L", "µmol/L"]
    assert raw.frame["result"].tolist()[2] == "\ufffd200"
    assert raw.warnings == [f"labs: 1 byte(s) in {path} are not valid UTF-8 and were replaced "
                            "by U+FFFD; declare the encoding in the format's [read] table if "
                            "this is wrong"]


@pytest.mark.parametrize("delimiter", [",", ";", "\t", "|"])
@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_delimiters_are_sniffed_with_either_line_ending(tmp_path: Path, canonical,
                                                       delimiter: str, newline: str) -> None:
    rows = [r.replace(",", delimiter) for r in [HEADER, *ROWS]]
    path = _write(tmp_path / "labs.csv", "\n".join(rows) + "\n", newline=newline)
    raw = read_input(path, canonical.labs)
    assert raw.files[0].delimiter == delimiter
    assert raw.frame["unit"].tolist() == ["ng/L", "µmol/L"]  # no stray \r
    assert raw.frame[SOURCE_ROW].tolist() == [2, 3]


def test_sniffing_ignores_delimiters_inside_quotes(tmp_path: Path, canonical) -> None:
    text = ('"patient_id";"collected_at";"test_code";"result";"unit";"comment"\n'
            '0001;2026-10-01;B12;150;ng/L;"haemolysed, repeat; please"\n')
    raw = read_input(_write(tmp_path / "labs.csv", text), canonical.labs)
    assert raw.files[0].delimiter == ";"
    assert raw.frame["comment"].tolist() == ["haemolysed, repeat; please"]


def test_gzip_is_detected_by_content(tmp_path: Path, canonical) -> None:
    data = "\n".join([HEADER, *ROWS]).encode("cp1252")
    for name in ("labs.csv.gz", "labs_gz_without_suffix.csv"):
        (tmp_path / name).write_bytes(gzip.compress(data))
        raw = read_input(tmp_path / name, canonical.labs)
        assert raw.frame["unit"].tolist() == ["ng/L", "µmol/L"]


# --------------------------------------------------------------------------- line numbers


def test_line_numbers_survive_blank_lines_quoted_newlines_and_bad_lines(
        tmp_path: Path, canonical) -> None:
    text = ("\n"                                           # 1 blank line above the header
            "patient_id,collected_at,test_code,result,unit,comment\n"          # 2
            "0001,2026-10-01,B12,150,ng/L,ok\n"                               # 3
            "\n"                                                               # 4
            '0002,2026-10-01,B12,150,ng/L,"two\nlines"\n'                    # 5-6
            "0003,2026-10-01,B12\n"                                            # 7 ragged
            "\r\n"                                                             # 8
            '0004,2026-10-01,B12,150,ng/L,"say ""hi"""\n'                    # 9
            "0005,2026-10-01,B12,150,ng/L,x,extra\n"                          # 10 ragged
            "0006,2026-10-01,B12,150,ng/L,5\" tall\n")                        # 11
    raw = read_input(_write(tmp_path / "labs.csv", text), canonical.labs)
    frame = raw.frame
    assert frame[SOURCE_ROW].tolist() == [3, 5, 7, 9, 10, 11]
    assert frame["patient_id"].tolist() == ["0001", "0002", "", "0004", "", "0006"]
    assert frame[MALFORMED].notna().tolist() == [False, False, True, False, True, False]
    assert frame["comment"].tolist()[1] == "two\nlines"


def test_line_numbers_with_a_stray_quote_inside_a_field(tmp_path: Path, canonical) -> None:
    text = ("patient_id,collected_at,test_code,result,unit,comment\n"
            '0001,2026-10-01,B12,150,ng/L,5" tall\n'
            "\n"
            "0002,2026-10-01,B12,150,ng/L,ok\n"
            "0003,2026-10-01\n")
    raw = read_input(_write(tmp_path / "labs.csv", text), canonical.labs)
    assert raw.frame[SOURCE_ROW].tolist() == [2, 4, 5]
    assert raw.frame["comment"].tolist()[0] == '5" tall'


def test_parquet_rows_are_numbered_from_one(tmp_path: Path, canonical) -> None:
    table = pa.table({c: [r.split(",")[i] for r in ROWS] for i, c in enumerate(HEADER.split(","))})
    pq.write_table(table, tmp_path / "labs.parquet")
    raw = read_input(tmp_path / "labs.parquet", canonical.labs)
    assert raw.frame[SOURCE_ROW].tolist() == [1, 2]


# -------------------------------------------------------------------- files, folders, globs


def test_file_folder_and_glob_give_the_same_rows(tmp_path: Path, canonical) -> None:
    folder = tmp_path / "extract"
    (folder / "2026-10").mkdir(parents=True)
    _write(folder / "a.csv", "\n".join([HEADER, ROWS[0]]) + "\n")
    _write(folder / "2026-10" / "b.csv", "\n".join([HEADER, ROWS[1]]) + "\n")
    _write(folder / "notes.md", "not data\n")
    _write(folder / ".hidden.csv", "junk\n")
    by_folder = read_input(folder, canonical.labs)
    by_glob = read_input(str(folder / "**" / "*.csv"), canonical.labs)
    assert [f.path for f in by_folder.files] == [str(folder / "2026-10" / "b.csv"),
                                                  str(folder / "a.csv")]
    assert [f.path for f in by_glob.files] == [f.path for f in by_folder.files]
    assert sorted(by_folder.frame["patient_id"]) == ["0001", "0002"]


def test_folder_of_parquet_files_with_different_case_columns(tmp_path: Path, canonical) -> None:
    pq.write_table(pa.table({"patient_id": ["0001"], "collected_at": ["2026-10-01"],
                             "test_code": ["B12"], "result": ["150"], "unit": ["ng/L"]}),
                   tmp_path / "part-0.parquet")
    pq.write_table(pa.table({"PATIENT_ID": ["0002"], "Collected_At": ["2026-10-02"],
                             "TEST_CODE": ["MMA"], "RESULT": [0.31], "UNIT": ["umol/L"]}),
                   tmp_path / "part-1.parquet")
    raw = read_input(tmp_path, canonical.labs)
    assert raw.original_columns == ["patient_id", "collected_at", "test_code", "result", "unit"]
    assert raw.frame["result"].tolist() == ["150", "0.31"]


def test_each_file_of_a_folder_must_have_the_required_columns(tmp_path: Path, canonical) -> None:
    _write(tmp_path / "a.csv", "\n".join([HEADER, ROWS[0]]) + "\n")
    bad = _write(tmp_path / "b.csv", "patient_id,collected_at,test_code,value\n1,2,3,4\n")
    with pytest.raises(UserError) as err:
        read_input(tmp_path, canonical.labs)
    assert err.value.message == (f"labs: required column result missing in {bad}; columns "
                                 "found: patient_id, collected_at, test_code, value")


@pytest.mark.parametrize(("make", "message"), [
    (lambda p: p / "nope.csv", "labs: no such file or folder: {p}/nope.csv"),
    (lambda p: p, "labs: folder {p} holds no .csv or .parquet files"),
    (lambda p: p / "*.parquet", "labs: no files match {p}/*.parquet"),
])
def test_paths_that_give_nothing(tmp_path: Path, make, message: str) -> None:
    with pytest.raises(UserError) as err:
        resolve_paths(make(tmp_path), "labs")
    assert err.value.message == message.format(p=tmp_path)


# ---------------------------------------------------------------------------------- Parquet


TYPED_CELLS = {  # values whose text a careless encoding could merge or change
    "result": pa.array([0.0, -0.0, float("nan"), None, 1e20, 231.0, 0.1 + 0.2, 231.0, -0.0],
                       pa.float64()),
    "collected_at": pa.array([pd.Timestamp("2026-10-01"), None, pd.Timestamp("1900-01-01"),
                              pd.Timestamp("2026-10-01"), pd.Timestamp("2026-10-02"),
                              pd.Timestamp("2026-10-01"), pd.Timestamp("2262-01-01"),
                              pd.Timestamp("2026-10-01"), pd.Timestamp("2026-10-03")],
                             pa.date32()),
    "unit": pa.array([1.5, 2.5, None, 1.5, 2.5, 3.0, 1.5, 2.5, 3.0], pa.float32()),
}


@pytest.mark.parametrize("column", sorted(TYPED_CELLS))
def test_typed_results_and_dates_read_as_the_text_of_each_cell(tmp_path: Path, canonical,
                                                               column: str) -> None:
    """A typed extract's results, dates and units are written as text on their distinct
    values: each cell reads as its own value's text (0 and -0 apart, NaN, missing as ''),
    across row groups, exactly as the plain cast of every row reads."""
    cells = TYPED_CELLS[column]
    table = pa.table({"patient_id": pa.array([str(i) for i in range(len(cells))]),
                      "collected_at": pa.array(["2026-10-01"] * len(cells)),
                      "test_code": pa.array(["B12"] * len(cells)),
                      "result": pa.array(["231"] * len(cells)),
                      "unit": pa.array(["ng/L"] * len(cells))})
    table = table.set_column(table.schema.get_field_index(column), column, cells)
    pq.write_table(table, tmp_path / "labs.parquet", row_group_size=4)
    raw = read_input(tmp_path / "labs.parquet", canonical.labs)
    expected = pc.fill_null(pc.cast(cells, pa.string()), "").to_pylist()
    assert raw.frame[column].astype("str").tolist() == expected


def test_parquet_physical_types_become_text(tmp_path: Path, canonical) -> None:
    table = pa.table({
        "patient_id": pa.array([1, 23], pa.int64()),
        "collected_at": pa.array([pd.Timestamp("2026-10-01 09:30"),
                                  pd.Timestamp("2026-10-02")], pa.timestamp("ms")),
        "test_code": pa.array(["B12", "MMA"]).dictionary_encode(),
        "result": pa.array([231.0, 0.31], pa.float64()),
        "unit": pa.array(["ng/L", None]),
        "taken_utc": pa.array([pd.Timestamp("2026-07-01 23:30", tz="UTC")] * 2,
                              pa.timestamp("us", tz="Europe/London")),
    })
    pq.write_table(table, tmp_path / "labs.parquet")
    raw = read_input(tmp_path / "labs.parquet", canonical.labs)
    frame = raw.frame
    assert frame["patient_id"].tolist() == ["1", "23"]
    assert frame["collected_at"].tolist() == ["2026-10-01 09:30:00.000",
                                              "2026-10-02 00:00:00.000"]
    assert frame["test_code"].tolist() == ["B12", "MMA"]
    assert frame["result"].tolist() == ["231", "0.31"]
    assert frame["unit"].tolist() == ["ng/L", ""]
    assert frame["taken_utc"].tolist()[0].startswith("2026-07-02 00:30:00")  # wall clock
    assert raw.warnings == [f"labs: patient id column patient_id is stored as integers in "
                            f"{tmp_path / 'labs.parquet'}; leading zeros of ids may have been "
                            "lost before b12screen read it",
                            "labs: 1 column(s) not used by the format: taken_utc"]
    assert raw.unused_columns == ["taken_utc"]


def test_integer_ids_are_expected_when_the_format_says_so(tmp_path: Path) -> None:
    omop = load_format("omop")
    table = pa.table({"person_id": pa.array([1], pa.int64()),
                      "measurement_date": ["2026-10-01"],
                      "measurement_source_value": ["2132-9"],
                      "value_as_number": pa.array([150.0])})
    pq.write_table(table, tmp_path / "measurement.parquet")
    raw = read_input(tmp_path / "measurement.parquet", omop.labs)
    assert raw.warnings == []


def test_nested_parquet_columns_are_left_out_with_a_note(tmp_path: Path, canonical) -> None:
    table = pa.table({c: [v] for c, v in zip(HEADER.split(","), ROWS[0].split(","),
                                              strict=True)})
    table = table.append_column("flags", pa.array([[1, 2]]))
    pq.write_table(table, tmp_path / "labs.parquet")
    raw = read_input(tmp_path / "labs.parquet", canonical.labs)
    assert "flags" not in raw.frame.columns
    assert raw.warnings == [f"labs: column flags in {tmp_path / 'labs.parquet'} has type "
                            "list<element: int64>, which has no text form; it was not read"]


# -------------------------------------------------------------------------- canonical view


def test_canonical_view_strips_blanks_tokens_and_matches_case(tmp_path: Path, canonical) -> None:
    text = ("Patient_ID,Collected_At,Test_Code,Result,Unit\n"
            " 0001 ,2026-10-01,B12, 150 ,ng/L\n"
            "NULL,2026-10-01,B12,N/A,-\n"
            "0002,2026-10-01,NA,140,N/A\n"
            "0003,2026-10-01, k ,4.1,\n")
    raw = read_input(_write(tmp_path / "labs.csv", text), canonical.labs)
    view = canonical_view(raw, canonical.labs)
    assert view["patient_id"].tolist() == ["0001", "", "0002", "0003"]
    assert view["result"].tolist() == ["150", "", "140", "4.1"]
    # codes are never missing-value tokens (SPEC rev 2): NA is sodium, and a unit is text
    assert view["test_code"].tolist() == ["B12", "B12", "NA", "k"]
    assert view["unit"].tolist() == ["ng/L", "-", "N/A", ""]
    assert raw.frame["Patient_ID"].tolist()[:2] == [" 0001 ", "NULL"]  # originals kept as read


def test_omop_coalescing_prefers_mapped_codes_and_censored_text(tmp_path: Path) -> None:
    omop = load_format("omop")
    text = ("person_id,measurement_date,measurement_concept_id,measurement_source_value,"
            "value_as_number,value_source_value,operator_concept_id,unit_source_value,"
            "unit_concept_id\n"
            "1,2026-10-01,3000593,VB12-LOCAL,150,<150,,,8725\n"
            "2,2026-10-01,0,2132-9,262,262,4172703,pg/mL,8845\n"
            "3,2026-10-01,3000593,2132-9,,>2000,4172704,,0\n")
    raw = read_input(_write(tmp_path / "measurement.csv", text), omop.labs)
    view = canonical_view(raw, omop.labs, prefer={"test_code": set(omop.labs.codes)})
    assert view["test_code"].tolist() == ["3000593", "2132-9", "2132-9"]
    assert view["result"].tolist() == ["<150", "262", ">2000"]
    assert view["censor"].tolist() == ["", "=", ">"]
    assert view["unit"].tolist() == ["ng/L", "pg/mL", ""]


@pytest.mark.parametrize(("declared", "written"), [("latin-1", "latin-1"), ("cp1252", "cp1252"),
                                                   ("utf-8", "utf-8-sig")])
def test_declared_encoding_and_delimiter(tmp_path: Path, declared: str, written: str) -> None:
    fmt_path = tmp_path / "lims.toml"
    canonical_toml = (Path(__file__).resolve().parents[1] / "configs" / "formats"
                      / "canonical.toml").read_text(encoding="utf-8")
    fmt_path.write_text(canonical_toml.replace('delimiter = "auto"', 'delimiter = "tab"')
                        .replace('encoding = "auto"', f'encoding = "{declared}"'),
                        encoding="utf-8")
    fmt = load_format(str(fmt_path))
    rows = [r.replace(",", "\t") for r in [HEADER, *ROWS]]
    path = _write(tmp_path / "labs.txt", "\n".join(rows) + "\n", written)
    raw = read_input(path, fmt.labs)
    assert raw.files[0].encoding == declared
    assert raw.files[0].delimiter == "\t"
    assert raw.frame["unit"].tolist() == ["ng/L", "µmol/L"]


def test_integer_ids_and_float_results_from_parquet_end_to_end(tmp_path: Path) -> None:
    """A Parquet writer that 'helpfully' typed the columns: ids lose leading zeros (warned),
    results are floats; a glob picks up the part files."""
    from tests.conftest import invoke

    folder = tmp_path / "labs"
    folder.mkdir()
    for i, (pid, value) in enumerate([(1, 150.0), (2, 262.0), (3, 406.0)]):
        pq.write_table(pa.table({
            "patient_id": pa.array([pid], pa.int64()), "collected_at": ["2026-10-01"],
            "test_code": ["B12"], "result": pa.array([value], pa.float64()),
            "unit": ["ng/L"]}), folder / f"part-{i}.parquet")
    out = tmp_path / "out"
    result = invoke("run", str(folder / "part-*.parquet"), "--out", out, "--as-of",
                    "2026-10-31", "--quiet")
    assert result.exit_code == 0, result.output
    expected = (f"warning: labs: patient id column patient_id is stored as integers in "
                f"3 files (first {folder / 'part-0.parquet'}); leading zeros of ids may "
                "have been lost before b12screen read it")
    # compared without whitespace: the CLI's console wraps long lines, even inside a path
    assert "".join(result.stderr.split()) == "".join(expected.split())
    patients = pd.read_parquet(out / "patients.parquet")
    assert patients["patient_id"].tolist() == ["1", "2", "3"]
    assert patients["b12_status"].astype(str).tolist() == ["deficient", "indeterminate",
                                                           "unlikely"]
    results = pd.read_parquet(out / "results.parquet")
    assert results["result_text"].tolist() == ["150", "262", "406"]


# ------------------------------------------------------------ Parquet text as dictionaries

MESSY = pd.DataFrame({
    "patient_id": ["0001", "0002", "0003", "0004", "0005", "0006", "0007", "0008"],
    "collected_at": ["2026-10-01", " 2026-10-02 ", None, "2026-10-03", "NULL",
                     "2026-10-04", "2026-10-04", "2026-10-05"],
    "test_code": [" B12", "b12 ", "B12", None, "B12", "NA", "HOLOTC", "GLUCOSE"],
    "result": ["<150", " 231", "300", "200", "250", "260", "n/a", "5.1"],
    "unit": ["ng/L", " pmol/L", "ng/L", "ng/L", "", "ng/L", None, "mmol/L"],
    "practice_id": [" P1", "P1", None, "P2", "P2", "NULL", "P3", "P3"],
})


def _runs(tmp_path: Path, *labs: Path) -> list[Path]:
    from tests.conftest import invoke

    outs = []
    for i, path in enumerate(labs):
        out = tmp_path / f"run{i}"
        result = invoke("run", path, "--as-of", "2026-10-31", "--max-reject-rate", "1",
                        "--out", out, "--quiet")
        assert result.exit_code == 0, result.output
        outs.append(out)
    return outs


def test_parquet_text_read_as_dictionaries_is_cleaned_as_csv_text_is(tmp_path: Path) -> None:
    """Codes, results, units, dates and practices of a Parquet file are read as
    dictionaries and cleaned once per distinct value: blanks and nulls give exactly the
    tables a CSV file with blanks and missing-value tokens in those cells gives (a token in
    Parquet text would be text: SPEC rev 2); ``NA`` is a test code in both; a folder mixing
    both stacks them."""
    typed = MESSY.replace({"NULL": None, "n/a": None})  # Parquet's missing value is a null
    MESSY.to_csv(tmp_path / "labs.csv", index=False)
    pq.write_table(pa.Table.from_pandas(typed, preserve_index=False),
                   tmp_path / "labs.parquet", use_dictionary=True, row_group_size=3)
    (tmp_path / "both").mkdir()
    MESSY.to_csv(tmp_path / "both" / "a.csv", index=False)
    pq.write_table(pa.Table.from_pandas(typed.assign(patient_id=typed["patient_id"] + "b"),
                                        preserve_index=False), tmp_path / "both" / "b.parquet")
    from_csv, from_parquet, from_both = _runs(tmp_path, tmp_path / "labs.csv",
                                              tmp_path / "labs.parquet", tmp_path / "both")
    raw = read_input(tmp_path / "labs.parquet", load_format("canonical").labs)
    assert isinstance(raw.frame["test_code"].dtype, pd.CategoricalDtype)
    assert (from_parquet / "patients.parquet").read_bytes() == \
        (from_csv / "patients.parquet").read_bytes()
    for name in ("results.parquet", "rejected.parquet"):
        csv, parquet = (pd.read_parquet(run / name).drop(columns=["source_file", "source_row"])
                        for run in (from_csv, from_parquet))  # CSV line 2 is Parquet row 1
        assert len(parquet) > 0
        if name == "rejected.parquet":  # original fields as read: the CSV's tokens as text
            csv = csv.replace({"NULL": "", "n/a": ""})
        pd.testing.assert_frame_equal(parquet, csv)
    both = pd.read_parquet(from_both / "results.parquet")
    assert len(both) == 2 * len(pd.read_parquet(from_csv / "results.parquet"))


def test_int8_dictionary_with_128_values_and_missing_cells(tmp_path: Path) -> None:
    """A unit column stored as a dictionary with int8 indices, 128 values and missing cells
    (as some writers store it) is read: missing cells read as '', as in CSV."""
    from tests.conftest import invoke

    n = 129
    units = pa.DictionaryArray.from_arrays(pa.array([*range(128), None], pa.int8()),
                                           pa.array(["ng/L", *(f"U{i}" for i in range(127))]))
    pq.write_table(pa.table({"patient_id": [f"{i:03d}" for i in range(n)],
                             "collected_at": ["2025-06-01"] * n, "test_code": ["B12"] * n,
                             "result": ["250"] * n, "unit": units}), tmp_path / "labs.parquet")
    result = invoke("run", tmp_path / "labs.parquet", "--out", tmp_path / "out", "--quiet",
                    "--max-reject-rate", "1", "--as-of", "2025-06-30")
    assert result.exit_code == 0, result.output
    rejected = pd.read_csv(tmp_path / "out" / "rejected.csv", dtype=str, keep_default_na=False)
    assert len(pd.read_parquet(tmp_path / "out" / "results.parquet")) == 1
    assert (rejected["reasons"] == "unknown_unit").all() and len(rejected) == 128
    assert rejected.loc[rejected["patient_id"] == "128", "unit"].tolist() == [""]


def test_parquet_text_is_never_reinterpreted_as_missing(tmp_path: Path, canonical) -> None:
    """SPEC rev 2: in Parquet a missing value is a null, and text is never reinterpreted:
    'NULL' in a Parquet practice column is a practice called NULL, a null is missing."""
    pq.write_table(pa.table({
        "patient_id": ["0001", "0002"], "collected_at": ["2026-10-01", "2026-10-01"],
        "test_code": ["B12", "NA"], "result": ["150", "N/A"], "unit": ["ng/L", None],
        "practice_id": ["NULL", None]}), tmp_path / "labs.parquet")
    raw = read_input(tmp_path / "labs.parquet", canonical.labs)
    view = canonical_view(raw, canonical.labs)
    assert view["practice_id"].tolist() == ["NULL", ""]
    assert view["result"].tolist() == ["150", "N/A"]
    assert view["test_code"].tolist() == ["B12", "NA"]


def test_a_run_folder_inside_an_input_folder_is_not_read_as_input(tmp_path: Path) -> None:
    """A run written beside its labs (``--out`` inside their folder) leaves Parquet and CSV
    files there; next month's run of the folder reads the labs only, and says so."""
    from tests.conftest import invoke

    folder = tmp_path / "exports"
    folder.mkdir()
    labs = folder / "labs.csv"
    labs.write_text("patient_id,collected_at,test_code,result,unit\n"
                    "0001,2026-10-01,B12,150,ng/L\n0002,2026-10-02,B12,400,ng/L\n",
                    encoding="utf-8")
    first = invoke("run", labs, "--out", folder / "run-2026-10", "--quiet")
    assert first.exit_code == 0, first.output
    out = tmp_path / "out"
    again = invoke("run", folder, "--out", out, "--quiet")
    assert again.exit_code == 0, again.output
    assert (f"warning: labs: folder {folder} holds b12screen run folder(s) run-2026-10, whose "
            "outputs are not read as input") in again.stderr
    manifest = pd.read_json(out / "manifest.json", typ="series")
    assert manifest["accounting"]["by_input"]["labs"]["rows_read"] == 2
    # a glob over the folder's CSVs skips the run's worklists alike
    globbed = invoke("run", f"{folder}/**/*.csv", "--out", tmp_path / "out2", "--quiet")
    assert globbed.exit_code == 0, globbed.output
    assert (f"warning: labs: files matching {folder}/**/*.csv include b12screen run folder(s) "
            f"{folder / 'run-2026-10'}, whose outputs are not read as input") in globbed.stderr
    # nor through a link to the run (``latest``), which the glob follows
    (folder / "latest").symlink_to(folder / "run-2026-10", target_is_directory=True)
    linked = invoke("run", f"{folder}/**/*.csv", "--out", tmp_path / "out4", "--quiet")
    assert linked.exit_code == 0, linked.output
    assert f"{folder / 'latest'}, " in linked.stderr
    (folder / "latest").unlink()
    # a folder holding a copied manifest beside files it does not list is no run: read it
    copied = folder / "nov"
    copied.mkdir()
    (copied / "manifest.json").write_bytes((folder / "run-2026-10" / "manifest.json").read_bytes())
    (copied / "labs-nov.csv").write_bytes(labs.read_bytes())
    third = invoke("run", folder, "--out", tmp_path / "out3", "--quiet")
    assert third.exit_code == 0, third.output
    manifest = pd.read_json(tmp_path / "out3" / "manifest.json", typ="series")
    assert manifest["accounting"]["by_input"]["labs"]["rows_read"] == 4
