"""The fast worklist path (build_worklists, apply_state, neutralise, write_csv) gives exactly
what the plain pandas version gave: the same frames and the same CSV bytes. The plain
versions are kept here as reference implementations and compared on random data with the
awkward cases in it (ids out of order or repeated, missing practices and dates, risky text,
odd previous state)."""

from __future__ import annotations

import re
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pytest

from pipeline.engines.pandas_engine import run_classification
from pipeline.engines.steps import prepare
from pipeline.outputs.tables import neutralise, write_csv
from pipeline.outputs.worklist_state import (
    LIST_NAMES,
    RESOLVED_COLUMNS,
    STATE_COLUMNS,
    STATE_FILE,
    apply_state,
    read_state,
)
from pipeline.outputs.worklists import (
    LISTS,
    MMA_ADD_ON,
    MMA_NEW_SAMPLE,
    MMA_SPANS_LIMIT,
    PAEDIATRIC_NOTE,
    URGENT_ACTIONS,
    build_worklists,
    worklist_columns,
)
from pipeline.state import RunOptions

#: A risky cell: tab or CR first, or = + - @ behind any control characters or spaces.
RISKY = re.compile("[\t\r]|[\x00-\x20\x7f-\xa0\xad\u1680\u180e\u2000-\u200f\u2028-\u202f"
                   "\u205f-\u206f\u3000\ufeff\ufffe\uffff]*[=+\\-@]")


def _spelt(censor: object, value: float, unit: object) -> object:
    """A result spelt from its harmonised value, as Arrow writes a float ('150', '0.25')."""
    if pd.isna(value) or pd.isna(unit):
        return np.nan
    number = repr(float(value))
    return f"{'' if pd.isna(censor) else censor}{number.removesuffix('.0')} {unit}"


def reference_build(patients: pd.DataFrame, reported: pd.DataFrame | None = None,
                    as_of: str | None = None, max_days: int = 7) -> dict[str, pd.DataFrame]:
    """The lists the plain pandas way; ``reported`` (by patient row) gives index_result,
    the rounded index_value, specimen_id and site_id when the results are known."""
    if reported is None:
        reported = pd.DataFrame({
            "index_result": pd.Series([_spelt(c, v, u) for c, v, u in zip(
                patients["index_censor"], patients["index_value"], patients["index_unit"],
                strict=True)], index=patients.index, dtype="str"),
            "index_value": patients["index_value"],
            "specimen_id": pd.Series(np.nan, index=patients.index, dtype="str"),
            "site_id": pd.Series(np.nan, index=patients.index, dtype="str")})
    day = patients["index_collected_at"].dt.floor("D")
    age = ((pd.Timestamp(as_of) - day).dt.days if as_of else
           pd.Series(np.nan, index=patients.index)).astype("Int64")
    possible = (age <= max_days).astype("boolean")
    base = patients.drop(columns="index_value").assign(
        **{c: reported[c] for c in reported.columns},
        sample_age_days=age, mma_addon_possible=possible,
        index_date=patients["index_collected_at"].dt.floor("D"),
        last_b12_test_date=patients["last_b12_test_at"].dt.floor("D"),
        result_at=patients["index_collected_at"].fillna(patients["last_b12_test_at"]),
        note=pd.Series(np.where(patients["paediatric"], PAEDIATRIC_NOTE, ""),
                       index=patients.index, dtype="str"),
    )
    base = base.sort_values(["practice_id", "urgent_review", "result_at", "patient_id"],
                            ascending=[True, False, True, True], na_position="last",
                            kind="stable")
    lists = {}
    for name, (flag, action) in LISTS.items():
        rows = base[base[flag]].copy()
        rows["suggested_action"] = pd.Series(action, index=rows.index, dtype="str")
        if name == "urgent":  # the action names the R12 limb
            if "not_responding" in rows:
                lapsed = ~rows["on_b12_treatment"].fillna(False).astype(bool) \
                    if "on_b12_treatment" in rows else False
                rows.loc[rows["not_responding"].fillna(False).astype(bool),
                         "suggested_action"] = URGENT_ACTIONS[1]
                rows.loc[rows["not_responding"].fillna(False).astype(bool) & lapsed,
                         "suggested_action"] = URGENT_ACTIONS[3]
            indeterminate = (rows["b12_status"].astype("str") == "indeterminate") & ~(
                rows["not_responding"].fillna(False).astype(bool)
                if "not_responding" in rows else False)
            rows.loc[indeterminate.to_numpy(dtype=bool), "suggested_action"] = \
                URGENT_ACTIONS[2]
        if name == "mma":
            known = rows["mma_addon_possible"]
            rows.loc[known.fillna(False).astype(bool), "suggested_action"] = MMA_ADD_ON
            rows.loc[(~known).fillna(False).astype(bool), "suggested_action"] = MMA_NEW_SAMPLE
            if {"mma_umol_l", "status_basis"} <= set(rows):  # an MMA that settled nothing
                spans = rows["mma_umol_l"].notna() & (rows["status_basis"] != "mma")
                rows.loc[spans.to_numpy(dtype=bool), "suggested_action"] = MMA_SPANS_LIMIT
        lists[name] = rows[worklist_columns(name, patients)].reset_index(drop=True)
    return lists


def reference_reported(patients: pd.DataFrame, results: pd.DataFrame) -> pd.DataFrame:
    """Each patient's index test found among the results by a merge (first in result order),
    shown as reported; its value rounded as reported (converted: one decimal)."""
    keys = pd.DataFrame({"patient_id": patients["patient_id"].astype(str),
                         "collected_at": patients["index_collected_at"],
                         "analyte": patients["index_test"].astype(str),
                         "value": patients["index_value"],
                         "censor": patients["index_censor"].astype(str).replace("nan", ""),
                         "pos": np.arange(len(patients))})
    found = results.assign(patient_id=results["patient_id"].astype(str),
                           analyte=results["analyte"].astype(str),
                           censor=results["censor"].astype(str), row=np.arange(len(results)))
    hit = keys.merge(found, on=["patient_id", "collected_at", "analyte", "value", "censor"])
    hit = hit.sort_values(["pos", "row"]).drop_duplicates("pos").set_index("pos")
    out = pd.DataFrame(index=np.arange(len(patients)))
    out["index_result"] = pd.Series(np.nan, index=out.index, dtype="str")
    out["index_value"] = patients["index_value"].to_numpy()
    for column in ("specimen_id", "site_id"):
        out[column] = pd.Series(np.nan, index=out.index, dtype="str")
        out.loc[hit.index, column] = hit[column].astype(str).to_numpy()
    for pos, row in hit.iterrows():  # a reference: one patient at a time, plainly
        text = str(row["result_text"]).strip()
        # the unit it was read in: as reported, or the format's for its test code
        read = row["unit_read"] if "unit_read" in row.index else row["source_unit"]
        unit = str(read).strip() or patients["index_unit"].iloc[pos]
        out.loc[pos, "index_result"] = f"{text} {unit}"
        number = float(re.sub(r"[^0-9.,]", "", text).replace(",", "."))
        if not np.isclose(number, row["value"], rtol=1e-9, atol=0):
            out.loc[pos, "index_value"] = float(Decimal(repr(row["value"])).quantize(
                Decimal("0.1"), ROUND_HALF_UP))
    spelt = [_spelt(c, v, u) for c, v, u in zip(
        patients["index_censor"], patients["index_value"], patients["index_unit"], strict=True)]
    missing = ~out.index.isin(hit.index)
    out.loc[missing, "index_result"] = np.array(spelt, dtype=object)[missing]
    return out.set_axis(patients.index)


def _reference_sorted(frame: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    rank = frame["list"].map({n: i for i, n in enumerate(LIST_NAMES)}).astype("Int64")
    keyed = frame.assign(_rank=rank.fillna(len(LIST_NAMES)))
    keyed = keyed.sort_values(["_rank", *by], kind="mergesort", na_position="last")
    return keyed.drop(columns="_rank").reset_index(drop=True)


def reference_apply(worklists, *, as_of_month, previous_dir):
    previous = read_state(previous_dir)
    marked, current = {}, []
    for name, worklist in worklists.items():
        before = previous[previous["list"] == name].set_index("patient_id")["first_listed"]
        ids = worklist["patient_id"].astype("string")
        first = ids.map(before).astype("string")
        out = worklist.copy()
        out["first_listed"] = first.fillna(as_of_month).astype("string")
        out["change"] = first.notna().map({True: "persisting", False: "new"}).astype("string")
        marked[name] = out
        current.append(pd.DataFrame({"patient_id": ids, "list": name,
                                     "first_listed": out["first_listed"],
                                     "practice_id": worklist["practice_id"].astype("string"),
                                     "last_listed": as_of_month}))
    empty = pd.DataFrame({c: pd.Series(dtype="string") for c in STATE_COLUMNS})
    state = pd.concat([empty, *current], ignore_index=True).astype("string")
    state = state.drop_duplicates(["list", "patient_id"], keep="first")
    state = _reference_sorted(state, ["list", "patient_id"])[list(STATE_COLUMNS)]
    gone = previous.merge(state[["list", "patient_id"]], on=["list", "patient_id"],
                          how="left", indicator=True)
    resolved = gone[gone["_merge"] == "left_only"][list(RESOLVED_COLUMNS)]
    return marked, _reference_sorted(resolved, ["list", "practice_id", "patient_id"]), state


def reference_neutralise(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.copy()
    for column in out.columns:
        series = out[column]
        categories = getattr(series.dtype, "categories", None)
        kind = series.dtype if categories is None else categories.dtype
        # every flavour of text: str, string, object, categorical of text
        if isinstance(kind, pd.StringDtype) or pd.api.types.is_object_dtype(kind):
            text = series.astype("str")
            risky = pd.Series([isinstance(t, str) and RISKY.match(t) is not None
                               for t in text], index=text.index)
            if risky.any():
                out[column] = text.mask(risky, "'" + text)
    return out


def reference_write_csv(frame: pd.DataFrame, path: Path) -> None:
    safe = reference_neutralise(frame)
    arrays = []
    for name in safe.columns:
        column = safe[name]
        if pd.api.types.is_datetime64_any_dtype(column.dtype):
            stamps = pa.array(column.astype("datetime64[us]"), pa.timestamp("us"),
                              from_pandas=True)
            midnight = pc.equal(stamps.cast(pa.date32()).cast(pa.timestamp("us")), stamps)
            arrays.append(pc.if_else(pc.fill_null(pc.all(midnight), True),
                                     pc.strftime(stamps, "%Y-%m-%d"),
                                     pc.strftime(stamps, "%Y-%m-%dT%H:%M:%S")))
        elif column.dtype == "str" or column.dtype == object:
            arrays.append(pa.array(column.astype("str"), pa.string(), from_pandas=True))
        else:
            arrays.append(pa.array(column, from_pandas=True))
    names = [str(n) for n in safe.columns]
    table = pa.Table.from_arrays(arrays, names=names) if arrays else pa.table({})
    with path.open("wb") as fh:
        pacsv.write_csv(table, fh, write_options=pacsv.WriteOptions(quoting_style="needed"))


def _as_text(frame: pd.DataFrame) -> pd.DataFrame:
    """Categoricals of text (the patients table's few-valued columns, and the lists' long
    texts) as the text the writers write."""
    frame = frame.copy()
    for c in frame.columns:
        if isinstance(frame[c].dtype, pd.CategoricalDtype):
            assert frame[c].cat.categories.dtype == "str"
            frame[c] = frame[c].astype("str")
    return frame


def assert_same(got: pd.DataFrame, want: pd.DataFrame) -> None:
    """Same lists; the few long texts (regimen, action, note) may be held as categoricals
    of text, which the writers write as the same text."""
    assert list(got.columns) == list(want.columns)
    got, want = _as_text(got), _as_text(want)
    assert list(got.dtypes) == list(want.dtypes)
    assert got.index.equals(want.index)
    assert got.equals(want)


TEXT = np.array(["=HYPERLINK(1)", "+1", "-2", "@x", "\tt", "\rr", "ok", "", "Äb", "→x", None,
                 '"q,"', "a\nb", "\x00=1+1", "  =cmd", "\x01@SUM(1)", "\u00a0+1", " lead", "µg",
                 "\ufeff-1", "\u2003@x", "a\uffffb"], dtype=object)


def random_patients(seed: int, n: int = 3000, cohort_order: bool = True) -> pd.DataFrame:
    rng = np.random.default_rng(seed)

    def pick(frac: float) -> np.ndarray:
        return rng.random(n) < frac

    ids = np.array([f"{i:07d}" for i in range(n)], dtype=object)
    if not cohort_order:  # out of order, repeated and formula-like ids
        ids = ids[rng.permutation(n)]
        repeated, risky = pick(0.01), pick(0.02)
        ids[repeated] = ids[rng.integers(0, n, repeated.sum())]
        ids[risky] = TEXT[rng.integers(0, 6, risky.sum())] + ids[risky]
    practices = np.array(["B82002", "A81001", "=P1", "", "Ä1", None], dtype=object)
    when = pd.Timestamp("2025-01-01") + pd.to_timedelta(rng.integers(0, 600, n), "D")
    at = pd.Series(when + pd.to_timedelta(rng.integers(0, 86400, n), "s"), dtype="datetime64[us]")
    last = pd.Series(when, dtype="datetime64[us]")
    at[pick(0.3)] = pd.NaT
    last[pick(0.2)] = pd.NaT
    frame = pd.DataFrame({
        "patient_id": pd.array(ids, dtype="str"),
        "practice_id": pd.array(practices[rng.integers(0, len(practices), n)], dtype="str"),
        "age_years": pd.array(np.where(pick(0.5), None, rng.integers(1, 99, n)), dtype="Int16"),
        "index_test": pd.array(np.array(["b12_total", "b12_active", None])[
            rng.integers(0, 3, n)], dtype="str"),
        "index_value": np.round(rng.random(n) * 300, 2),
        "index_unit": pd.array(np.where(pick(0.5), "ng/L", "pmol/L"), dtype="str"),
        "index_collected_at": at,
        "index_censor": pd.array(np.array(["", "<", None])[rng.integers(0, 3, n)], dtype="str"),
        "b12_status": pd.array(np.array(["deficient", "unlikely", None])[
            rng.integers(0, 3, n)], dtype="str"),
        "suggested_regimen": pd.array(np.where(pick(0.4), "1 mg daily", TEXT[
            rng.integers(0, len(TEXT), n)]), dtype="str"),
        "metformin_risk": rng.integers(0, 3, n).astype(np.int8),
        "reasons": pd.array(TEXT[rng.integers(0, len(TEXT), n)], dtype="str"),
        "paediatric": pick(0.1),
        "last_b12_test_at": last,
    })
    for flag, _ in LISTS.values():
        frame[flag] = pick(0.3)
    if seed % 2:  # the rev-2 columns, where the classified patients have them
        frame["regimen_intent"] = pd.array(np.array(["treatment", "prevention", None])[
            rng.integers(0, 3, n)], dtype="str")
        frame["not_responding"] = pick(0.05)
        frame["on_b12_combination"] = pick(0.05)
        frame["on_b12_treatment"] = pick(0.5)
        frame["mma_umol_l"] = np.where(pick(0.2), 0.6, np.nan)
        frame["status_basis"] = pd.array(np.array(["mma", "b12_total", "none"])[
            rng.integers(0, 3, n)], dtype="str")
    frame.loc[pick(0.01), ["practice_id", "urgent_review"]] = [pd.NA, True]
    return frame


@pytest.mark.parametrize("seed, cohort_order, text_dtype", [
    (0, True, None), (1, False, None), (2, False, None), (3, True, None),
    (4, False, object), (5, True, object), (6, False, "category"), (7, False, "unsorted"),
])
def test_build_worklists_matches_reference(seed: int, cohort_order: bool,
                                           text_dtype: object) -> None:
    patients = random_patients(seed, cohort_order=cohort_order)
    if text_dtype is not None:  # hand-made frames: text as object or categorical columns
        text = ["practice_id", "patient_id", "b12_status", "index_test", "index_unit",
                "suggested_regimen", "reasons"]
        patients[text] = patients[text].astype(
            "category" if text_dtype == "unsorted" else text_dtype)
    want = reference_build(patients)
    if text_dtype == "unsorted":  # practices out of the text's order: lists still by text
        practice = patients["practice_id"]
        want = reference_build(patients.assign(practice_id=practice.astype("str")))
        patients["practice_id"] = practice.cat.reorder_categories(
            practice.cat.categories[::-1])
    got = build_worklists(patients)
    assert list(got) == list(want)
    for name in want:
        assert_same(got[name], want[name])


def test_build_worklists_with_as_of_dates_the_samples() -> None:
    patients = random_patients(3)
    got = build_worklists(patients, as_of=date(2026, 8, 1), mma_addon_max_days=10)
    want = reference_build(patients, as_of="2026-08-01", max_days=10)
    assert set(want["mma"]["suggested_action"]) == {LISTS["mma"][1], MMA_ADD_ON, MMA_NEW_SAMPLE,
                                                    MMA_SPANS_LIMIT}
    for name in want:
        assert_same(got[name], want[name])


def test_build_worklists_from_classified_results(sample_extract: dict[str, Path]) -> None:
    """A real run's patients and results: each index test found and shown as reported."""
    state = prepare(RunOptions(labs=str(sample_extract["labs"]),
                               patients=str(sample_extract["patients"]),
                               medications=str(sample_extract["medications"])))
    run_classification(state)
    patients, results = state.classified.patients, state.classified.results
    got = build_worklists(patients, results, as_of=state.as_of)
    want = reference_build(patients, reference_reported(patients, results),
                           as_of=state.as_of.isoformat())
    for name in want:
        assert_same(got[name], want[name])
    shown = pd.concat(list(got.values()))
    assert shown["index_result"].notna().sum() > 0
    assert (shown["index_result"].notna() == shown["index_test"].notna()).all()


def test_build_worklists_of_no_patients() -> None:
    patients = random_patients(4).iloc[:0]
    for name, frame in reference_build(patients).items():
        assert_same(build_worklists(patients)[name], frame)


def write_state(folder: Path, state: pd.DataFrame) -> Path:
    folder.mkdir()
    state.to_parquet(folder / STATE_FILE, index=False)
    return folder


def test_apply_state_matches_reference(tmp_path: Path) -> None:
    lists = build_worklists(random_patients(5, cohort_order=False))
    lists["extra"] = lists["mma"].iloc[::3]  # a list the standard order does not know
    got = apply_state(lists, as_of_month="2026-09", previous_dir=None)
    want = reference_apply(lists, as_of_month="2026-09", previous_dir=None)
    for g, w in zip(got[1:], want[1:], strict=True):
        assert_same(g, w)
    for name in want[0]:
        assert_same(got[0][name], want[0][name])

    state = want[2]
    odd = pd.DataFrame({  # missing ids and lists, an old list, a repeated row
        "patient_id": [None, "0000001", "zz", "zz", None],
        "list": ["mma", None, "old_list", "old_list", None],
        "first_listed": ["2026-01", "2026-02", None, "2026-03", "2026-04"],
        "practice_id": [None, "A", "B", None, None],
        "last_listed": "2026-09",
    }, dtype="string")
    previous = write_state(tmp_path / "prev", pd.concat([state, odd], ignore_index=True))
    later = build_worklists(random_patients(6, cohort_order=False))
    later["mma"] = pd.concat([later["mma"], later["mma"].iloc[:5]], ignore_index=True)
    later["urgent"].loc[0, "patient_id"] = np.nan
    got = apply_state(later, as_of_month="2026-10", previous_dir=previous)
    want = reference_apply(later, as_of_month="2026-10", previous_dir=previous)
    assert len(want[1]) and (want[0]["mma"]["change"] == "persisting").any()
    for g, w in zip(got[1:], want[1:], strict=True):
        assert_same(g, w)
    for name in want[0]:
        assert_same(got[0][name], want[0][name])


def csv_frames() -> dict[str, pd.DataFrame]:
    rng = np.random.default_rng(7)
    n = 2000

    def text() -> np.ndarray:
        return TEXT[rng.integers(0, len(TEXT), n)]

    days = pd.Timestamp("2020-01-01") + pd.to_timedelta(rng.integers(0, 3000, n), "D")
    base = pd.DataFrame({
        "str": pd.array(text(), dtype="str"),
        "python_str": pd.array(text(), dtype=pd.StringDtype("python", na_value=np.nan)),
        "string": pd.array(text(), dtype="string"),
        "object": pd.Series(text(), dtype=object),
        "mixed": pd.Series(np.where(rng.random(n) < 0.5, text(), rng.integers(-5, 5, n)),
                           dtype=object),
        "safe": pd.array(np.array(["ok", None])[rng.integers(0, 2, n)], dtype="str"),
        "day": pd.Series(days, dtype="datetime64[us]").where(rng.random(n) < 0.9),
        "time": pd.Series(days + pd.to_timedelta(rng.integers(0, 86400, n), "s")),
        "never": pd.Series(pd.NaT, index=range(n), dtype="datetime64[us]"),
        "number": rng.random(n), "count": pd.array(rng.integers(0, 9, n), dtype="Int16"),
        "flag": rng.random(n) < 0.5,
    })
    outside = pd.DataFrame({"t": pd.Series(["=x", *["ok"] * 10, "-y"], dtype="str")})
    at_end = pd.DataFrame({"t": pd.Series([*["ok"] * 11, "-y"], dtype="str")})
    return {
        "base": base, "slice": base.iloc[123:1789], "empty": base.iloc[:0],
        "chunks": pd.concat([base.iloc[:50], base.iloc[1500:1600], base.iloc[9:19]]),
        "risky_outside_slice": outside.iloc[1:11], "risky_at_slice_end": at_end.iloc[1:],
        "no_columns": pd.DataFrame(),
    }


@pytest.mark.parametrize("name", list(csv_frames()))
def test_csv_bytes_and_neutralised_cells_match_reference(tmp_path: Path, name: str) -> None:
    frame = csv_frames()[name]
    before = frame.copy()
    assert_same(neutralise(frame), reference_neutralise(frame))
    write_csv(frame, tmp_path / "fast.csv")
    reference_write_csv(frame, tmp_path / "reference.csv")
    assert (tmp_path / "fast.csv").read_bytes() == (tmp_path / "reference.csv").read_bytes()
    assert_same(frame, before)  # the input is left alone
    write_csv(frame, tmp_path / "bom.csv", bom=True)  # the worklists' CSV, for Excel
    assert (tmp_path / "bom.csv").read_bytes() == (b"\xef\xbb\xbf"
                                                   + (tmp_path / "fast.csv").read_bytes())
