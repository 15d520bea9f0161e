"""The faster write step writes the same bytes: inline XLSX text wrapped as rows are
assembled, practices factorised once for the measures, the report given only the columns
it reads, outputs hashed on the pool; and the run's per-row frames are released once
results.parquet is written, so writing the same state twice fails rather than losing rows."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import pipeline.outputs.xlsx as xlsx
from pipeline.engines.pandas_engine import run_classification
from pipeline.engines.steps import prepare
from pipeline.ingest.harmonise import joined_column, sorted_categorical
from pipeline.outputs.measures import _practice_codes, _practice_labels
from pipeline.outputs.tables import PATIENTS_SCHEMA, to_arrow
from pipeline.outputs.write import write_outputs
from pipeline.state import RunOptions

AWKWARD = np.array(["a<b & c>d", None, "", "x\x01y", "é → ✓", "=1+1", "  lead", "same"],
                   dtype=object)


def _workbook(path: Path, seed: int, rows: int) -> bytes:
    rng = np.random.default_rng(seed)
    ids = np.array([f"{i:07d}" for i in range(rows)], dtype=object)
    ids[rng.random(rows) < 0.1] = AWKWARD[rng.integers(0, len(AWKWARD), rows)][:1]
    reasons = np.char.add(AWKWARD[rng.integers(0, len(AWKWARD), rows)].astype(str),
                          rng.integers(0, rows, rows).astype(str)).astype(object)
    reasons[rng.random(rows) < 0.05] = None
    frame = pd.DataFrame({
        "practice_id": pd.array(np.array(["A1", "B2", None])[rng.integers(0, 3, rows)],
                                dtype="str"),
        "patient_id": pd.array(ids, dtype="str"),
        "value": rng.random(rows) * 300,
        "reasons": pd.array(reasons, dtype="str"),
        "flag": rng.random(rows) < 0.5,
    })
    xlsx.write_workbook({"one": frame, "two": frame.iloc[::3]}, path, footer="f")
    return path.read_bytes()


@pytest.mark.parametrize("seed, rows", [(0, 50), (1, 700), (2, 3000)])
def test_wrapped_inline_text_writes_the_same_workbook(tmp_path: Path, seed: int, rows: int,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(xlsx, "_CHUNK_BYTES", 1 << 14)  # many slices of rows per sheet
    monkeypatch.setattr(xlsx, "_WRAP_ABOVE", 10**9)  # every cell's XML built per value
    built = _workbook(tmp_path / "built.xlsx", seed, rows)
    monkeypatch.setattr(xlsx, "_WRAP_ABOVE", 4)  # ids and reasons wrapped row by row
    assert _workbook(tmp_path / "wrapped.xlsx", seed, rows) == built


@pytest.mark.parametrize("values", [
    ["B2", " A1", "A1", "", None, "  ", "Ä", "a"], ["X", "Y"], [None, None], ["", "Z"]])
@pytest.mark.parametrize("dtype", ["str", "string", object, "category", "unused", "sorted"])
def test_practice_codes_match_the_labels(values: list[str | None], dtype: object) -> None:
    rng = np.random.default_rng(len(values))
    column = pd.Series(np.array(values, dtype=object)[rng.integers(0, len(values), 400)])
    if dtype == "unused":  # a part of a cohort: categories no patient of the part has
        practice = column.astype("category").cat.add_categories(["A0", "ZZ"])
    elif dtype == "sorted":  # as the classified patients hold it
        practice = sorted_categorical(column.astype("str"))
    else:
        practice = column.astype(dtype)
    patients = pd.DataFrame({"practice_id": practice})
    codes, groups = _practice_codes(patients)
    want_codes, want_groups = pd.factorize(_practice_labels(column.to_frame("practice_id")),
                                           sort=True)
    assert np.array_equal(codes, want_codes)
    assert list(groups) == list(want_groups)


@pytest.mark.parametrize("parts", [
    [["b", None, "a"], ["c", "a"]],  # different values: joined over their union, sorted
    [["a", "b"], ["a", "b"]],  # the same values
    [[None, None], ["x"]],  # a part without any value
    [["b"], [], ["a"]],  # an empty part
])
def test_parts_of_a_few_valued_column_join_as_the_whole(parts: list[list[str | None]]) -> None:
    pieces = [sorted_categorical(pd.Series(p, dtype="str")) for p in parts]
    joined = joined_column(pieces)
    whole = sorted_categorical(pd.Series([v for p in parts for v in p], dtype="str"))
    assert isinstance(joined.dtype, pd.CategoricalDtype)
    assert list(joined.cat.categories) == sorted(joined.cat.categories)
    assert joined.astype("str").equals(whole.astype("str"))


def test_manifest_hashes_every_output(sample_run: Path) -> None:
    manifest = json.loads((sample_run / "manifest.json").read_text())
    files = sorted(p for p in sample_run.rglob("*") if p.is_file() and p.name != "manifest.json")
    assert list(manifest["outputs"]) == [p.relative_to(sample_run).as_posix() for p in files]
    for path in files:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        assert manifest["outputs"][path.relative_to(sample_run).as_posix()] == digest


def test_rows_are_released_once_written(sample_extract: dict[str, Path], tmp_path: Path) -> None:
    state = prepare(RunOptions(labs=str(sample_extract["labs"]),
                               patients=str(sample_extract["patients"]),
                               medications=str(sample_extract["medications"])))
    run_classification(state)
    results = len(state.classified.results)
    assert results > 0
    out = write_outputs(state, tmp_path / "run", None)
    assert pq.read_metadata(out / "results.parquet").num_rows == results
    assert len(state.classified.results) == 0
    assert all(len(v.accepted) == 0 for v in state.inputs.values())
    with pytest.raises(RuntimeError, match="written already"):
        write_outputs(state, tmp_path / "again", None)
    assert not (tmp_path / "again").exists()


def test_results_encoded_while_classifying_are_the_table_written(
        sample_extract: dict[str, Path], tmp_path: Path) -> None:
    """The pandas engine encodes results.parquet during classification; the write step
    uses those bytes only while the state still holds the table they came from, so a
    caller that replaces the results gets its own table written."""
    options = RunOptions(labs=str(sample_extract["labs"]),
                         patients=str(sample_extract["patients"]),
                         medications=str(sample_extract["medications"]))
    early = prepare(options)
    run_classification(early)
    assert "results.parquet" in early.early
    late = prepare(options)
    run_classification(late)
    late.early.clear()  # encoded in the write step, as a state built by hand would be
    replaced = prepare(options)
    run_classification(replaced)
    replaced.classified.results = replaced.classified.results.iloc[:10].copy()
    files = {name: write_outputs(state, tmp_path / name, None) / "results.parquet"
             for name, state in (("early", early), ("late", late), ("replaced", replaced))}
    assert files["early"].read_bytes() == files["late"].read_bytes()
    assert pq.read_metadata(files["early"]).num_rows > 10
    assert pq.read_metadata(files["replaced"]).num_rows == 10


@pytest.mark.parametrize("categories", [
    ["deficient", "indeterminate", "unlikely", "not_tested"],  # the fixed ones, as the rules
    ["unlikely", "deficient", "not_tested", "indeterminate"],  # another order
    ["unlikely", "deficient", "unheard_of"],  # fewer, and one not among them
], ids=["fixed", "reordered", "other"])
def test_a_categorical_status_is_written_as_its_text_would_be(categories: list[str]) -> None:
    """A dictionary column from a categorical reads its fixed categories by value, whatever
    the categorical's own order (codes are used as they are only when they already match)."""
    values = ["unlikely", None, "deficient", "unlikely", None]
    values = [v if v in categories else None for v in values] + [categories[-1]]
    as_text = pd.DataFrame({"b12_status": pd.array(values, dtype="str")})
    as_codes = pd.DataFrame({"b12_status": pd.Categorical(values, categories=categories)})
    schema = pa.schema([PATIENTS_SCHEMA.field("b12_status")])
    from_codes = to_arrow(as_codes, schema, {}).column("b12_status")
    assert from_codes.equals(to_arrow(as_text, schema, {}).column("b12_status"))
    known = {"deficient", "indeterminate", "unlikely", "not_tested"}
    assert from_codes.to_pylist() == [v if v in known else None for v in values]
