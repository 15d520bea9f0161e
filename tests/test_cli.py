"""The command line as a user meets it: exit codes, one-line errors, help with examples."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import invoke

LABS_HEADER = "patient_id,collected_at,test_code,result,unit\n"
GOOD_ROW = "0001,2026-10-01,B12,150,ng/L\n"


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _assert_clean_failure(result, code: int = 1) -> str:
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("b12screen: error: ")
    return lines[0]


def test_missing_result_column_names_it_and_lists_found(tmp_path: Path) -> None:
    labs = _write(tmp_path / "labs.csv", "patient_id,collected_at,test_code,unit\n"
                                          "0001,2026-10-01,B12,ng/L\n")
    out = tmp_path / "out"
    line = _assert_clean_failure(invoke("run", labs, "--out", out))
    assert line == ("b12screen: error: labs: required column result missing in "
                    f"{labs}; columns found: patient_id, collected_at, test_code, unit")
    assert not out.exists()
    assert not any(p.name.startswith(".out") for p in tmp_path.iterdir())


def test_random_bytes_named_parquet(tmp_path: Path) -> None:
    labs = tmp_path / "x.parquet"
    labs.write_bytes(os.urandom(2048))
    line = _assert_clean_failure(invoke("run", labs, "--out", tmp_path / "out"))
    assert line == (f"b12screen: error: labs: cannot read {labs} as Parquet (not a Parquet "
                    "file, or truncated)")
    assert not (tmp_path / "out").exists()


def test_path_that_does_not_exist(tmp_path: Path) -> None:
    missing = tmp_path / "nope.csv"
    line = _assert_clean_failure(invoke("run", missing))
    assert line == f"b12screen: error: labs: no such file or folder: {missing}"


def test_bad_as_of_is_a_usage_error(tmp_path: Path) -> None:
    labs = _write(tmp_path / "labs.csv", LABS_HEADER + GOOD_ROW)
    line = _assert_clean_failure(invoke("run", labs, "--as-of", "31/10/2026"), code=2)
    assert "--as-of must be a date YYYY-MM-DD" in line


def test_unknown_rules_profile_is_a_usage_error(tmp_path: Path) -> None:
    labs = _write(tmp_path / "labs.csv", LABS_HEADER + GOOD_ROW)
    line = _assert_clean_failure(invoke("run", labs, "--rules", "nice-ng999"), code=2)
    assert line.startswith("b12screen: error: unknown rules profile 'nice-ng999' (shipped: ")


def test_reject_rate_above_limit_stops_with_counts(tmp_path: Path) -> None:
    rows = [f"{n:04d},2026-10-01,B12,{'haemolysed' if n % 10 == 0 else 250},ng/L\n"
            for n in range(120)]
    labs = _write(tmp_path / "labs.csv", LABS_HEADER + "".join(rows))
    out = tmp_path / "out"
    line = _assert_clean_failure(invoke("run", labs, "--out", out))
    assert line == ("b12screen: error: labs: 12 of 120 rows rejected (10.0%), above "
                    "--max-reject-rate 5.0%; see the reasons with 'b12screen validate'")
    assert not out.exists()


def test_a_few_bad_rows_in_a_small_extract_never_stop_the_run(tmp_path: Path) -> None:
    labs = _write(tmp_path / "labs.csv", LABS_HEADER + GOOD_ROW
                  + "0002,2026-10-01,B12,haemolysed,ng/L\n")
    out = tmp_path / "out"
    result = invoke("run", labs, "--out", out, "--quiet")
    assert result.exit_code == 0, result.output
    rejected = pd.read_parquet(out / "rejected.parquet")
    assert rejected["reasons"].tolist() == ["non_numeric_result"]


@pytest.mark.parametrize("command", ["run", "validate", "sample-data", "demo", "trend", "rules"])
def test_every_command_has_help_with_an_example(command: str) -> None:
    result = invoke(command, "--help")
    assert result.exit_code == 0
    assert "Example: b12screen " in result.output


def test_rules_shows_sources_and_differences() -> None:
    result = invoke("rules", "--rules", "bsh-2014")
    assert result.exit_code == 0, result.output
    assert "deficient_below" in result.output
    assert "200.0" in result.output and "180.0" in result.output  # value and the default
    assert "Devalia" in result.output


def test_rules_shows_each_sites_cut_offs(tmp_path: Path, monkeypatch) -> None:
    """A [sites] profile's cut-offs are what its lab's results are read by: shown with their
    source beside the main profile's, and only those it changes."""
    monkeypatch.setenv("COLUMNS", "250")
    profile = _write(tmp_path / "region.toml", '[profile]\nextends = "nice-ng239"\n'
                     '[sites]\nLABX = "bsh-2014"\nLABY = "nice-ng239"\n')
    result = invoke("rules", "--rules", profile)
    assert result.exit_code == 0, result.output
    after = result.output.split("site LABX: profile bsh-2014")[1]
    labx, laby = after.split("site LABY: profile nice-ng239")
    cells = [[c.strip() for c in line.split("│")[1:-1]] for line in labx.splitlines()
             if line.startswith("│")]
    assert [row[:4] for row in cells if row[0]] == [  # a row's first line names its rule
        ["R1", "deficient_below", "200.0", "180.0"], ["R5", "mma_upper_umol_l", "0.28", "0.45"]]
    assert "Devalia" in labx
    assert "the same cut-offs as above" in laby


def test_run_prints_accounting_and_folder(tmp_path: Path) -> None:
    labs = _write(tmp_path / "labs.csv", LABS_HEADER + GOOD_ROW
                  + "0002,2026-10-01,FERRITIN,20,ug/L\n")
    out = tmp_path / "run"
    result = invoke("run", labs, "--out", out)
    assert result.exit_code == 0, result.output
    assert "labs rows read 2 = accepted 1 + rejected 0 + other tests 1 + duplicates 0" \
        in result.stdout
    assert f"outputs: {out}" in result.stdout
    assert (out / "patients.parquet").is_file()


def test_installed_script_runs_demo_from_any_folder(tmp_path: Path) -> None:
    script = shutil.which("b12screen") or str(Path(sys.executable).parent / "b12screen")
    proc = subprocess.run([script, "demo", "--quiet"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    report = tmp_path / "b12screen-demo" / "reports"
    assert "report:" in proc.stdout
    assert list(report.glob("*/patients.parquet"))
    assert list(report.glob("*/report.html"))


def test_installed_script_run_ends_after_everything_is_written(tmp_path: Path) -> None:
    """The program ends without tearing the interpreter down, once every output is
    written and the summary printed."""
    script = shutil.which("b12screen") or str(Path(sys.executable).parent / "b12screen")
    labs = tmp_path / "labs.csv"
    labs.write_text("patient_id,collected_at,test_code,result,unit\n"
                    "0001,2026-10-01,B12,150,ng/L\n0002,2026-10-01,B12,abc,ng/L\n"
                    "0003,2026-10-01,FERRITIN,20,ug/L\n", encoding="utf-8")
    out = tmp_path / "run"
    proc = subprocess.run([script, "run", str(labs), "--out", str(out),
                           "--max-reject-rate", "1"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.rstrip().endswith(f"outputs: {out}")
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert set(manifest["outputs"]) >= {"patients.parquet", "results.parquet", "report.html",
                                        "worklists.xlsx"}
    assert len(pd.read_parquet(out / "patients.parquet")) == 3


def test_version_prints_the_installed_version() -> None:
    from pipeline import __version__

    result = invoke("--version")
    assert result.exit_code == 0, result.output
    assert result.stdout == f"b12screen {__version__}\n"


def test_sample_data_for_another_month(tmp_path: Path) -> None:
    result = invoke("sample-data", tmp_path / "2026-07", "--patients", "50", "--as-of",
                    "2026-07-31")
    assert result.exit_code == 0, result.output
    labs = pd.read_csv(tmp_path / "2026-07" / "labs.csv", dtype=str, keep_default_na=False)
    assert labs["collected_at"].str[:10].max() == "2026-07-31"


def test_sample_data_with_a_bad_as_of_is_a_usage_error(tmp_path: Path) -> None:
    line = _assert_clean_failure(invoke("sample-data", tmp_path / "x", "--as-of", "July"),
                                 code=2)
    assert "--as-of must be a date YYYY-MM-DD" in line
    assert not (tmp_path / "x").exists()
