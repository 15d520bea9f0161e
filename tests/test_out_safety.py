"""``--out``, ``--previous`` and ``--as-of`` can never destroy or mislead.

Each case is one a user met: the folder holding the extract and notes, ``--out .``, an unset
shell variable, the reports root, a full disk, a read-only mount, a killed run. Every test
checks the exit code, the message's key phrase, that the user's files survive byte for
byte, and that no temporary folder is left behind.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from pipeline.outputs.run_folder import MARKER, is_run_folder, replacing
from pipeline.sample_data import generate
from tests.conftest import invoke

USER_FILES = {"notes.txt": b"call the lab on Monday\n", "plan/ideas.md": b"# ideas\n"}


@pytest.fixture(scope="module")
def extract(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return generate(tmp_path_factory.mktemp("data"), n_patients=200, seed=1)


@pytest.fixture(scope="module")
def earlier(extract: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished run folder for September, copied by the tests that need one."""
    out = tmp_path_factory.mktemp("earlier") / "2026-09"
    result = invoke("run", extract["labs"], "--as-of", "2026-09-30", "--out", out, "--quiet")
    assert result.exit_code == 0, result.output
    return out


def _run(extract: dict[str, Path], *args: str | Path):
    return invoke("run", extract["labs"], "--patients", extract["patients"],
                  "--medications", extract["medications"], "--quiet", *args)


def _fails(result, phrase: str) -> str:
    """Exit 1 with one line, naming ``phrase``; no traceback."""
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("b12screen: error: ")
    assert phrase in lines[0], lines[0]
    return lines[0]


def _files(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (dot-folders included) with its bytes."""
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _user_folder(folder: Path) -> dict[str, bytes]:
    for name, data in USER_FILES.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    return _files(folder)


def _leftovers(folder: Path) -> list[str]:
    """Temporary or set-aside folders anywhere under ``folder``."""
    return [p.name for p in folder.rglob(".*") if ".tmp-" in p.name or ".old-" in p.name]


# ----------------------------------------------------------------------- --out refused


def test_empty_out_from_an_unset_variable(extract, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    before = _user_folder(tmp_path)
    _fails(_run(extract, "--out", ""), "--out is empty")
    assert _files(tmp_path) == before


@pytest.mark.parametrize("out", [".", "..", "./"])
def test_current_folder_or_its_parent(extract, tmp_path, monkeypatch, out) -> None:
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    before = _user_folder(tmp_path)
    _fails(_run(extract, "--out", out), "is the current folder or holds it")
    assert _files(tmp_path) == before


def test_folder_with_the_users_files(extract, tmp_path) -> None:
    before = _user_folder(tmp_path)
    line = _fails(_run(extract, "--out", tmp_path),
                  "holds files that are not from a b12screen run (notes.txt, plan)")
    assert "choose an empty or new folder" in line
    assert _files(tmp_path) == before


def test_folder_holding_the_extract(extract) -> None:
    folder = extract["labs"].parent
    before = _files(folder)
    _fails(_run(extract, "--out", folder), "holds the input")
    assert _files(folder) == before
    # a run writes its temporary folder beside --out: there, not among the other tests'
    # folders that share this session's temporary root
    assert not [p.name for p in folder.parent.iterdir() if p.name.startswith(f".{folder.name}.")]
    assert not _leftovers(folder)


def test_folder_inside_an_input_folder(extract) -> None:
    folder = extract["labs"].parent
    before = _files(folder)
    result = invoke("run", folder, "--out", folder / "out", "--quiet")
    _fails(result, "is inside the input")
    assert _files(folder) == before


def test_out_is_a_file(extract, tmp_path) -> None:
    before = _user_folder(tmp_path)
    _fails(_run(extract, "--out", tmp_path / "notes.txt"), "is a file, not a folder")
    assert _files(tmp_path) == before


def test_out_under_a_file(extract, tmp_path) -> None:
    before = _user_folder(tmp_path)
    _fails(_run(extract, "--out", tmp_path / "notes.txt" / "2026-10"), "which is a file")
    assert _files(tmp_path) == before


def test_reports_root_holding_every_earlier_month(extract, earlier, tmp_path) -> None:
    reports = tmp_path / "reports"
    shutil.copytree(earlier, reports / "2026-09")
    before = _files(reports)
    _fails(_run(extract, "--out", reports), "holds earlier run folders (2026-09)")
    assert _files(reports) == before


def test_earlier_run_folder_with_a_users_file_added(extract, earlier, tmp_path) -> None:
    run = shutil.copytree(earlier, tmp_path / "2026-09")
    (run / "worklists" / "called.txt").write_text("rang these on Tuesday\n")
    before = _files(run)
    _fails(_run(extract, "--out", run), "not from a b12screen run (worklists/called.txt)")
    assert _files(run) == before


def test_validate_refuses_a_folder_with_the_users_files(extract, tmp_path) -> None:
    before = _user_folder(tmp_path)
    _fails(invoke("validate", extract["labs"], "--out", tmp_path, "--quiet"),
           "not from a b12screen run")
    assert _files(tmp_path) == before


# ----------------------------------------------------------------------- --out replaced


def test_rerun_replaces_an_earlier_run_folder(extract, earlier, tmp_path) -> None:
    run = shutil.copytree(earlier, tmp_path / "reports" / "2026-10")
    old = json.loads((run / "manifest.json").read_text())
    result = _run(extract, "--out", run)
    assert result.exit_code == 0, result.output
    manifest = json.loads((run / "manifest.json").read_text())
    assert (old["as_of"], manifest["as_of"]) == ("2026-09-30", "2026-10-31")
    assert is_run_folder(run)
    assert not _leftovers(tmp_path)


def test_manifest_lists_every_file_written(extract, tmp_path) -> None:
    out = tmp_path / "2026-10"
    result = _run(extract, "--out", out)
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert set(manifest["outputs"]) | {"manifest.json"} == set(_files(out))
    assert {"worklists/urgent.csv", "worklists/README.txt"} <= set(manifest["outputs"])
    assert manifest["kind"] == "run"
    assert set(manifest["unused_columns"]) == {"labs", "patients", "medications"}


def test_validate_folder_is_replaced_by_the_next_validate(extract, tmp_path) -> None:
    out = tmp_path / "validate-2026-10"
    for _ in range(2):
        result = invoke("validate", extract["labs"], "--out", out, "--quiet")
        assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["kind"] == "validate"
    assert set(manifest["outputs"]) | {"manifest.json"} == set(_files(out))
    assert not _leftovers(tmp_path)


def test_empty_folder_is_used(extract, tmp_path) -> None:
    out = tmp_path / "2026-10"
    out.mkdir()
    result = _run(extract, "--out", out)
    assert result.exit_code == 0, result.output
    assert is_run_folder(out)


# ----------------------------------------------------------------------- the environment


@contextmanager
def _tmpfs(path: Path, options: str) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    if shutil.which("mount") is None:
        pytest.skip("no mount command here")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                             capture_output=True, text=True, check=False)
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


def test_disk_full(extract, tmp_path) -> None:
    with _tmpfs(tmp_path / "small", "size=64k") as disk:
        before = _user_folder(disk)
        _fails(_run(extract, "--out", disk / "2026-10"),
               f"cannot write the run folder in {disk}: no space left on device")
        assert _files(disk) == before
        assert sorted(p.name for p in disk.iterdir()) == ["notes.txt", "plan"]


def test_read_only_location_with_an_earlier_run(extract, earlier, tmp_path) -> None:
    with _tmpfs(tmp_path / "ro", "size=4m") as disk:
        shutil.copytree(earlier, disk / "2026-09")
        before = _files(disk)
        remount = subprocess.run(["mount", "-o", "remount,ro", str(disk)],
                                 capture_output=True, text=True, check=False)
        if remount.returncode:
            pytest.skip(f"cannot remount read-only: {remount.stderr.strip()}")
        _fails(_run(extract, "--out", disk / "2026-09"), "read-only file system")
        _fails(_run(extract, "--out", disk / "2026-10"), "read-only file system")
        assert _files(disk) == before


def test_missing_location_is_created_owner_only_under_umask_000(extract, tmp_path) -> None:
    script = shutil.which("b12screen") or str(Path(sys.executable).parent / "b12screen")
    proc = subprocess.run(
        ["sh", "-c", 'umask 000 && exec "$@"', "sh", script, "run", str(extract["labs"]),
         "--as-of", "2026-10-31", "--quiet"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    for folder in (tmp_path / "reports", tmp_path / "reports" / "2026-10"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
    modes = {stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "reports").rglob("*")
             if p.is_file()}
    assert modes <= {0o600, 0o640}


_KILLED = """
import os, signal, sys
from pathlib import Path
from pipeline.outputs.run_folder import replacing
with replacing(Path(sys.argv[1])) as tmp:
    (tmp / "patients.parquet").write_bytes(b"half a table")
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_killed_run_leaves_the_earlier_run_whole_and_is_cleaned_next_time(
        extract, earlier, tmp_path) -> None:
    reports = tmp_path / "reports"
    run = shutil.copytree(earlier, reports / "2026-09")
    before = _files(run)
    proc = subprocess.run([sys.executable, "-c", _KILLED, str(run)], capture_output=True,
                          timeout=120, check=False)
    assert proc.returncode == -signal.SIGKILL
    assert _files(run) == before
    left = [p for p in reports.iterdir() if p.name.startswith(".2026-09.tmp-")]
    assert len(left) == 1 and (left[0] / MARKER).is_file()
    result = _run(extract, "--out", reports / "2026-10")
    assert result.exit_code == 0, result.output
    manifest = json.loads((reports / "2026-10" / "manifest.json").read_text())
    assert manifest["options"]["previous_run"] == str(run.resolve())
    assert sorted(p.name for p in reports.iterdir()) == ["2026-09", "2026-10"]
    assert _files(run) == before


def test_run_killed_between_renames_gets_its_earlier_folder_back(
        extract, earlier, tmp_path) -> None:
    """Where folders cannot be swapped in one step, the earlier run is set aside first: a
    run killed just then leaves it aside, and the next run puts it back."""
    reports = tmp_path / "reports"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    aside = shutil.copytree(earlier, reports / f".2026-09.old-{dead}")
    before = _files(aside)
    result = _run(extract, "--out", reports / "2026-10")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in reports.iterdir()) == ["2026-09", "2026-10"]
    assert _files(reports / "2026-09") == before


def test_interrupted_write_removes_its_temporary_folder(earlier, tmp_path) -> None:
    run = shutil.copytree(earlier, tmp_path / "2026-09")
    before = _files(run)
    with pytest.raises(KeyboardInterrupt), replacing(run) as tmp:
        (tmp / "patients.parquet").write_bytes(b"half a table")
        raise KeyboardInterrupt
    assert _files(run) == before
    assert not _leftovers(tmp_path)


def test_dot_folders_are_never_runs_for_trend(earlier, tmp_path) -> None:
    reports = tmp_path / "reports"
    shutil.copytree(earlier, reports / "2026-09")
    shutil.copytree(earlier, reports / f".2026-08.tmp-{os.getpid()}")
    result = invoke("trend", reports)
    assert result.exit_code == 0, result.output
    trend = (reports / "trend.csv").read_text()
    assert ".2026-08" not in trend and "2026-09" in trend


# ----------------------------------------------------------------------- --previous, --as-of


@pytest.mark.parametrize(("make", "phrase"), [
    (lambda d: d / "2026-O9", "is not found"),
    (lambda d: _made(d / "notes.txt", "a plain file\n"), "is not a folder"),
    (lambda d: _made(d / "2026-09" / "notes.txt", "x\n").parent, "not a b12screen run folder"),
])
def test_previous_that_is_not_a_run_folder(extract, tmp_path, make, phrase) -> None:
    previous = make(tmp_path)
    before = _files(tmp_path)
    _fails(_run(extract, "--previous", previous, "--out", tmp_path / "out"), phrase)
    assert _files(tmp_path) == before
    assert not (tmp_path / "out").exists()


def _made(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_previous_run_folder_is_used(extract, earlier, tmp_path) -> None:
    result = _run(extract, "--previous", earlier, "--out", tmp_path / "2026-10")
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "2026-10" / "manifest.json").read_text())
    assert manifest["options"]["previous_run"] == str(earlier)


def test_as_of_after_today(extract, tmp_path) -> None:
    _fails(_run(extract, "--as-of", "2099-01-31", "--out", tmp_path / "out"), "is after today")
    assert not (tmp_path / "out").exists()


def test_as_of_with_no_b12_result_in_its_window_warns(extract, tmp_path) -> None:
    out = tmp_path / "2020-01"
    result = _run(extract, "--as-of", "2020-01-31", "--out", out)
    assert result.exit_code == 0, result.output
    assert "warning: no total or active B12 result in the look-back window" in result.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert any("every patient is not_tested" in w for w in manifest["warnings"])
