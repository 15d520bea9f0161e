"""Two monthly runs under one reports folder, then the trend, as a QI team runs them."""

from __future__ import annotations

import json
from pathlib import Path

import openpyxl
import pandas as pd
import pytest

from pipeline.outputs.worklists import LISTS
from tests.conftest import invoke
from tests.spec.helpers import rows_of, write_csv


@pytest.fixture(scope="module")
def two_months(sample_extract: dict[str, Path], tmp_path_factory) -> Path:
    reports = tmp_path_factory.mktemp("reports")
    for as_of, month in (("2026-09-30", "2026-09"), ("2026-10-31", "2026-10")):
        result = invoke("run", sample_extract["labs"], "--patients", sample_extract["patients"],
                        "--medications", sample_extract["medications"], "--as-of", as_of,
                        "--out", reports / month, "--quiet")
        assert result.exit_code == 0, result.output
    result = invoke("trend", reports)
    assert result.exit_code == 0, result.output
    return reports


def _list(folder: Path, name: str) -> pd.DataFrame:
    return pd.read_csv(folder / "worklists" / f"{name}.csv", dtype=str, keep_default_na=False,
                       encoding="utf-8")


def test_second_month_finds_the_first_as_previous(two_months: Path) -> None:
    manifest = json.loads((two_months / "2026-10" / "manifest.json").read_text())
    assert manifest["options"]["previous_run"].endswith("2026-09")


@pytest.mark.parametrize("name", list(LISTS))
def test_new_persisting_and_resolved_match_the_two_lists(two_months: Path, name: str) -> None:
    before = set(_list(two_months / "2026-09", name)["patient_id"])
    now = _list(two_months / "2026-10", name)
    persisting = set(now.loc[now["change"] == "persisting", "patient_id"])
    new = set(now.loc[now["change"] == "new", "patient_id"])
    assert persisting == set(now["patient_id"]) & before
    assert new == set(now["patient_id"]) - before
    assert (now.loc[now["change"] == "persisting", "first_listed"] == "2026-09").all()
    assert (now.loc[now["change"] == "new", "first_listed"] == "2026-10").all()
    resolved = _list(two_months / "2026-10", "resolved")
    assert set(resolved.loc[resolved["list"] == name, "patient_id"]) == before - set(
        now["patient_id"])
    first = _list(two_months / "2026-09", name)
    assert (first["change"] == "new").all()


def test_xlsx_sheets_match_flagged_patients(two_months: Path) -> None:
    folder = two_months / "2026-10"
    patients = pd.read_parquet(folder / "patients.parquet")
    workbook = openpyxl.load_workbook(folder / "worklists.xlsx", read_only=True)
    assert workbook.sheetnames == list(LISTS)
    for name, (flag, _) in LISTS.items():
        rows = workbook[name].max_row - 1
        assert rows == int(patients[flag].sum()), name
    workbook.close()


def test_trend_has_both_months_and_published_counts_are_safe(two_months: Path) -> None:
    trend = pd.read_csv(two_months / "trend.csv", dtype={"month": str})
    assert sorted(trend["month"].unique()) == ["2026-09", "2026-10"]
    html = (two_months / "trend.html").read_text(encoding="utf-8")
    assert "http://" not in html and "https://" not in html.replace(
        "http://www.w3.org", "")
    for folder in (two_months / "2026-09", two_months / "2026-10"):
        measures = pd.read_parquet(folder / "measures.parquet")
        for column in ("numerator", "denominator"):
            published = measures[column].dropna().astype(int)
            assert not published.between(1, 7).any()
            assert (published % 5 == 0).all()
            assert measures.loc[measures[column].isna(), "suppressed"].all()
    for column in ("numerator", "denominator"):
        published = trend[column].dropna().astype(int)
        assert not published.between(1, 7).any()
        assert (published % 5 == 0).all()
    # the same month's measures, breakdowns and suppression markers as each run published
    assert {"overall", "practice", "age_band", "sex"} <= set(trend["group_by"])
    keys = ["measure", "group_by", "group"]
    october = pd.read_csv(two_months / "2026-10" / "measures.csv", keep_default_na=False,
                          dtype=str).sort_values(keys, ignore_index=True)
    in_trend = trend[trend["month"] == "2026-10"].fillna({"suppression": ""})
    in_trend = in_trend.astype({"group": str}).sort_values(keys, ignore_index=True)
    assert in_trend["suppression"].tolist() == october["suppression"].tolist()
    assert in_trend["numerator"].isna().tolist() == october["numerator"].eq("").tolist()


def test_a_second_folder_for_a_month_stops_the_trend(two_months: Path, tmp_path: Path) -> None:
    import shutil

    reports = tmp_path / "reports"
    shutil.copytree(two_months, reports)
    shutil.copytree(reports / "2026-10", reports / "2026-10-again")
    result = invoke("trend", reports)
    assert result.exit_code == 1
    message = " ".join(result.output.split())
    assert "2026-10-again" in message and f"{reports / '2026-10'} " in message
    assert invoke("trend", reports, "--month-folders", "latest").exit_code == 0


def test_duckdb_reads_every_parquet_output(two_months: Path) -> None:
    import duckdb

    con = duckdb.connect()
    folder = two_months / "2026-10"
    expected = {
        "patients.parquet": {"b12_status": "VARCHAR", "urgent_review": "BOOLEAN"},
        "results.parquet": {"value": "DOUBLE", "after_as_of": "BOOLEAN"},
        "rejected.parquet": {"source_row": "BIGINT", "reasons": "VARCHAR"},
        "measures.parquet": {"numerator": "BIGINT", "ratio": "DOUBLE", "suppressed": "BOOLEAN"},
        "worklist_state.parquet": {"patient_id": "VARCHAR", "first_listed": "VARCHAR"},
    }
    for name, columns in expected.items():
        types = dict(con.execute(
            "SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM read_parquet(?))",
            [str(folder / name)]).fetchall())
        for column, kind in columns.items():
            assert types[column] == kind, (name, column, types[column])
        count = con.execute("SELECT count(*) FROM read_parquet(?)",
                            [str(folder / name)]).fetchone()[0]
        assert count > 0, name


def test_resolved_list_neutralises_ids_carried_from_last_month(tmp_path: Path) -> None:
    """An id that left a list comes back from last month's state (read as ``string``);
    resolved.csv must still not start a cell with '='."""
    risky = '=HYPERLINK("http://example.invalid","x")'
    months = {
        "2026-09": rows_of(f"""
            patient_id | collected_at | test_code | result | unit | practice_id
            {risky}    | 2026-09-10   | B12       | 150    | ng/L | =SUM(1)
            KEEP_ME    | 2026-09-10   | B12       | 150    | ng/L | A81001
        """),
        "2026-10": rows_of("""
            patient_id | collected_at | test_code | result | unit | practice_id
            KEEP_ME    | 2026-10-10   | B12       | 150    | ng/L | A81001
        """),
    }
    for month, rows in months.items():
        labs = write_csv(tmp_path / f"labs-{month}.csv", rows)
        result = invoke("run", labs, "--out", tmp_path / "reports" / month, "--quiet")
        assert result.exit_code == 0, result.output
    resolved = _list(tmp_path / "reports" / "2026-10", "resolved")
    gone = resolved[resolved["patient_id"].str.contains("HYPERLINK")]
    assert set(gone["patient_id"]) == {"'" + risky}
    assert set(gone["practice_id"]) == {"'=SUM(1)"}


def test_an_edited_profile_of_the_same_name_is_not_compared(sample_extract: dict[str, Path],
                                                            tmp_path: Path) -> None:
    """A copy of the profile with another cut-off keeps its name: its month's lists were
    drawn with other cut-offs, so the next month with the standard profile compares with
    the month before it (as ``trend`` keeps the two apart), and both runs say why."""
    standard = Path(__file__).resolve().parent.parent / "configs/rules/nice-ng239.toml"
    edited = tmp_path / "edited.toml"
    edited.write_text(standard.read_text(encoding="utf-8").replace(
        "deficient_below = 180.0", "deficient_below = 250.0", 1), encoding="utf-8")
    reports = tmp_path / "reports"
    manifests, messages = {}, {}
    for as_of, month, rules in (("2026-08-31", "2026-08", []),
                                ("2026-09-30", "2026-09", ["--rules", edited]),
                                ("2026-10-31", "2026-10", [])):
        result = invoke("run", sample_extract["labs"], "--as-of", as_of,
                        "--out", reports / month, "--quiet", *rules)
        assert result.exit_code == 0, result.output
        manifests[month] = json.loads((reports / month / "manifest.json").read_text())
        messages[month] = result.stderr
    assert manifests["2026-09"]["rules"]["name"] == manifests["2026-08"]["rules"]["name"]
    assert manifests["2026-09"]["options"]["previous_run"] is None
    assert "run folder 2026-08 used rules profile 'nice-ng239' with other settings" \
        in messages["2026-09"]
    assert "every listed patient is new" in messages["2026-09"]
    assert manifests["2026-10"]["options"]["previous_run"].endswith("2026-08")
    note = next(w for w in manifests["2026-10"]["warnings"] if "other settings" in w)
    assert "run folder 2026-09" in note and "compared with 2026-08 instead" in note
    first_listed = set(_list(reports / "2026-09", "supplementation")["first_listed"])
    assert first_listed == {"2026-09"}


def test_a_profile_renamed_by_its_file_is_not_compared_in_silence(sample_extract: dict[str, Path],
                                                                  tmp_path: Path) -> None:
    """A profile without ``name`` was named after the profile it extends, and is now named
    after its file: last month's run, recorded under the old name, is not compared, and the
    run says so (never marking everyone new in silence)."""
    profile = tmp_path / "mylab.toml"
    profile.write_text('[profile]\nextends = "nice-ng239"\n[rules.R1]\ndeficient_below = 200.0\n',
                       encoding="utf-8")
    reports = tmp_path / "reports"
    first = invoke("run", sample_extract["labs"], "--as-of", "2026-09-30", "--rules", profile,
                   "--out", reports / "2026-09", "--quiet")
    assert first.exit_code == 0, first.output
    manifest_path = reports / "2026-09" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    assert manifest["rules"]["name"] == "mylab"
    manifest["rules"]["name"] = "nice-ng239"  # as the earlier release recorded it
    manifest_path.write_text(json.dumps(manifest), encoding="utf-8")
    second = invoke("run", sample_extract["labs"], "--as-of", "2026-10-31", "--rules", profile,
                    "--out", reports / "2026-10", "--quiet")
    assert second.exit_code == 0, second.output
    assert (f"worklist changes: run folder 2026-09 used this rules profile file under the name "
            f"'nice-ng239' (now 'mylab'), so its lists are not compared (every listed patient "
            f"is new); pass --previous {reports / '2026-09'} to compare with it anyway"
            ) in " ".join(second.stderr.split())
