"""``--engine dask --partitioned``: the workers write ``patients/`` and ``results/`` as
Parquet datasets, and every other output is the unpartitioned run's, on a real LocalCluster
of two worker processes (as on a remote cluster, every partition travels between
processes and the part files are written by the workers).
"""

from __future__ import annotations

import json
import re
from datetime import date
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow.parquet as pq
import pytest

from pipeline.sample_data import generate
from tests.conftest import invoke

distributed = pytest.importorskip("distributed")

#: One xdist group: the Dask tests that start clusters of worker processes run in one test
#: process, not both at once on a two-core machine.
pytestmark = [pytest.mark.dask, pytest.mark.xdist_group("cluster")]
#: Sort keys that make the single file's rows and the dataset's comparable.
KEYS = {"patients": ["patient_id"], "results": ["source_file", "source_row"]}
#: Files that must be the unpartitioned run's, byte for byte.
SAME = ("rejected.parquet", "rejected.csv", "measures.parquet", "measures.csv",
        "summary.json", "disclosure_log.csv", "worklist_state.parquet", "worklists.xlsx",
        "worklists/urgent.csv", "worklists/mma.csv", "worklists/supplementation.csv",
        "worklists/metformin_monitoring.csv", "worklists/retest.csv",
        "worklists/resolved.csv", "worklists/README.txt")


@pytest.fixture(scope="module")
def months(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Path]]:
    """Two months of a messy extract (the second compared with the first)."""
    root = tmp_path_factory.mktemp("months")
    return {month: generate(root / month, n_patients=400, seed=seed, messy=True, as_of=as_of)
            for month, seed, as_of in (("2026-09", 3, date(2026, 9, 30)),
                                       ("2026-10", 4, date(2026, 10, 31)))}


def _run(extract: dict[str, Path], out: Path, *extra: str | Path) -> Path:
    args = [extract["labs"]]
    for kind in ("patients", "medications"):
        if kind in extract:
            args += [f"--{kind}", extract[kind]]
    result = invoke("run", *args, "--out", out, "--quiet", *extra)
    assert result.exit_code == 0, result.output
    return out


def _report(path: Path) -> bytes:
    """report.html without the time it was made."""
    return re.sub(rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[^<\"]*", b"<time>", path.read_bytes())


def _same_as_single_files(single: Path, parts: Path) -> None:
    """Each dataset read back (pandas and DuckDB) holds the single file's rows; each part has
    its schema and metadata; every other output is byte for byte the same."""
    for table, key in KEYS.items():
        expected = pd.read_parquet(single / f"{table}.parquet")
        got = pd.read_parquet(parts / table)
        pd.testing.assert_frame_equal(got.sort_values(key).reset_index(drop=True),
                                      expected.sort_values(key).reset_index(drop=True))
        by_duckdb = [duckdb.sql(f"select * from read_parquet('{glob}')").df()
                     .sort_values(key).reset_index(drop=True)
                     for glob in (single / f"{table}.parquet", parts / table / "*.parquet")]
        pd.testing.assert_frame_equal(by_duckdb[1], by_duckdb[0])
        schema = pq.read_schema(single / f"{table}.parquet")
        for part in sorted((parts / table).iterdir()):
            assert pq.read_schema(part).equals(schema, check_metadata=True), part.name
        assert not (parts / f"{table}.parquet").exists()
    for name in SAME:
        assert (parts / name).read_bytes() == (single / name).read_bytes(), name
    assert _report(parts / "report.html") == _report(single / "report.html")


def test_partitioned_tables_hold_the_single_files_rows(scheduler: str, tmp_path: Path,
                                                       months: dict[str, dict[str, Path]]
                                                       ) -> None:
    extract = months["2026-10"]
    single = _run(extract, tmp_path / "pandas")
    parts = _run(extract, tmp_path / "parts", "--engine", "dask", "--partitioned",
                 "--scheduler", scheduler)
    _same_as_single_files(single, parts)
    manifest = json.loads((parts / "manifest.json").read_text())
    names = sorted(p.name for p in (parts / "patients").iterdir())
    assert names == [f"part-{i:05d}.parquet" for i in range(len(names))]
    assert len(names) >= 2
    assert manifest["tables"]["patients"] == {"layout": "partitioned", "folder": "patients/",
                                              "parts": len(names)}
    assert {f"{t}/{n}" for t in KEYS for n in names} <= set(manifest["outputs"])
    single_manifest = json.loads((single / "manifest.json").read_text())
    for key in ("accounting", "patients", "as_of", "warnings", "rows_after_as_of"):
        assert manifest[key] == single_manifest[key], key
    assert "tables" not in single_manifest
    assert [p.name for p in tmp_path.iterdir()] == ["pandas", "parts"]  # no staging left


def test_part_files_are_the_same_from_run_to_run(scheduler: str, tmp_path: Path,
                                                 months: dict[str, dict[str, Path]]) -> None:
    runs = [_run(months["2026-10"], tmp_path / name, "--engine", "dask", "--partitioned",
                 "--scheduler", scheduler) for name in ("first", "second")]
    for table in KEYS:
        files = [sorted((run / table).iterdir()) for run in runs]
        assert [p.name for p in files[0]] == [p.name for p in files[1]]
        for a, b in zip(*files, strict=True):
            assert a.read_bytes() == b.read_bytes(), a.name


def test_month_on_month_worklists_as_unpartitioned(scheduler: str, tmp_path: Path,
                                                   months: dict[str, dict[str, Path]]) -> None:
    """``--previous``, in nine partitions: the worklists merged from the partitions' sorted
    parts, new, persisting and resolved, and the worklist state are the pandas engine's,
    byte for byte, with a list empty in some partitions only; the sorted parts are left
    nowhere."""
    september = _run(months["2026-09"], tmp_path / "reports" / "2026-09")
    single = _run(months["2026-10"], tmp_path / "single" / "2026-10", "--previous", september)
    parts = _run_in_parts(months["2026-10"], tmp_path / "parts" / "2026-10", scheduler, 9,
                          september)
    assert any("persisting" in p.read_text() for p in (single / "worklists").glob("*.csv"))
    assert len((single / "worklists" / "resolved.csv").read_text().splitlines()) > 1
    _same_as_single_files(single, parts)
    per_part = _lists_per_part(parts)
    assert any(0 in counts and max(counts) > 0 for counts in per_part.values()), per_part
    assert not list(tmp_path.rglob("worklist-parts"))
    assert [p.name for p in (tmp_path / "parts").iterdir()] == ["2026-10"]  # no staging left
    manifest = json.loads((parts / "manifest.json").read_text())
    assert not [name for name in manifest["outputs"] if "worklist-parts" in name]


def test_labs_only_extract(scheduler: str, tmp_path: Path,
                           months: dict[str, dict[str, Path]]) -> None:
    """No patients input: no age or sex breakdown, in either run; in five partitions, the
    metformin and retest lists are empty in every one (header-only CSVs, empty sheets)."""
    labs = {"labs": months["2026-10"]["labs"]}
    single = _run(labs, tmp_path / "pandas")
    parts = _run_in_parts(labs, tmp_path / "parts", scheduler, 5)
    _same_as_single_files(single, parts)
    for name in ("metformin_monitoring", "retest"):
        assert len((parts / "worklists" / f"{name}.csv").read_text().splitlines()) == 1


def _run_in_parts(extract: dict[str, Path], out: Path, scheduler: str, partitions: int,
                  previous: Path | None = None) -> Path:
    """A partitioned run cut into ``partitions`` partitions (more than the cluster's threads,
    as a large extract is), as ``b12screen run --engine dask --partitioned`` runs it."""
    from pipeline.engines.dask_engine import screen_dask
    from pipeline.outputs.write import write_outputs
    from pipeline.state import RunOptions

    options = RunOptions(labs=str(extract["labs"]),
                         patients=str(extract["patients"]) if "patients" in extract else None,
                         medications=(str(extract["medications"])
                                      if "medications" in extract else None),
                         out=out, engine="dask", scheduler=scheduler, previous=previous,
                         partitioned=True)
    state = screen_dask(options, partitions=partitions)
    assert state.staged is not None and state.staged.parts == partitions
    assert state.classified.patients.empty  # no patient row came back
    return write_outputs(state, out, previous)


def _lists_per_part(run: Path) -> dict[str, list[int]]:
    """Each worklist's patients in each partition (from the patients dataset's parts)."""
    from pipeline.outputs.worklists import LISTS

    parts = [pd.read_parquet(p) for p in sorted((run / "patients").iterdir())]
    return {name: [int(p[flag].fillna(False).sum()) for p in parts]
            for name, (flag, _) in LISTS.items()}


def test_partitioned_needs_the_dask_engine(tmp_path: Path,
                                           months: dict[str, dict[str, Path]]) -> None:
    result = invoke("run", months["2026-10"]["labs"], "--out", tmp_path / "out",
                    "--partitioned")
    assert result.exit_code == 2
    assert "--partitioned needs --engine dask" in result.stderr
    assert not (tmp_path / "out").exists()


def test_figures_of_parts_publish_as_the_whole_cohort(months: dict[str, dict[str, Path]]
                                                      ) -> None:
    """Published cells and measures from a cohort cut into parts (one of them empty, one
    with no practice or sex known) are those of the whole cohort."""
    from pipeline.engines import screen
    from pipeline.outputs.published import CohortFigures, publish
    from pipeline.outputs.report import combine_histograms, histogram_counts
    from pipeline.state import RunOptions

    extract = months["2026-10"]
    state = screen(RunOptions(labs=str(extract["labs"]), patients=str(extract["patients"]),
                              medications=str(extract["medications"])))
    patients, as_of = state.classified.patients, state.as_of
    cut = (patients["practice_id"].isna().to_numpy()
           + 2 * (patients.index.to_numpy() % 3 == 0))  # parts of different make-up
    parts = [patients[cut == k].reset_index(drop=True) for k in range(4)] + [patients.iloc[:0]]
    args = {"as_of": as_of, "accounting": state.accounting(), "reasons": {},
            "worklist_sizes": {"urgent": {"rows": 3, "new": 3, "persisting": 0, "resolved": 0}}}
    whole = publish(patients=patients, **args)
    combined = publish(figures=CohortFigures.combine([CohortFigures.of(p, as_of)
                                                      for p in parts]), **args)
    pd.testing.assert_frame_equal(combined.cells, whole.cells)
    pd.testing.assert_frame_equal(combined.measures, whole.measures)
    cutoffs = {"b12_total": [180.0, 350.0], "b12_active": [25.0, 70.0], "mma": [0.45]}
    results = state.classified.results
    pieces = [results.iloc[k::3] for k in range(3)]
    added = combine_histograms([histogram_counts(r, cutoffs, additive=True) for r in pieces])
    expected = histogram_counts(results, cutoffs)
    assert added.keys() == expected.keys()
    for analyte, (total, bins) in expected.items():
        assert added[analyte][0] == total
        assert (bins is None) == (added[analyte][1] is None)
        if bins is not None:
            assert added[analyte][1][0] == bins[0]
            assert (added[analyte][1][1] == bins[1]).all()


def test_refused_default_folder_leaves_nothing(scheduler: str, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch,
                                               months: dict[str, dict[str, Path]]) -> None:
    """The default run folder (known once the as-of date is) holds someone's file: the run
    stops before the workers write anything, and no staging folder is left beside it."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "reports" / "2026-10").mkdir(parents=True)
    (tmp_path / "reports" / "2026-10" / "notes.txt").write_text("mine")
    extract = months["2026-10"]
    result = invoke("run", extract["labs"], "--patients", extract["patients"], "--quiet",
                    "--engine", "dask", "--partitioned", "--scheduler", scheduler)
    assert result.exit_code == 1
    assert "not from a b12screen run" in result.stderr
    assert sorted(p.name for p in (tmp_path / "reports").iterdir()) == ["2026-10"]
    assert [p.name for p in (tmp_path / "reports" / "2026-10").iterdir()] == ["notes.txt"]


def test_partitions_follow_the_workers_memory() -> None:
    """Workers with little memory get fewer lab rows per partition (a worker past its
    limit is restarted and its work starts again); without a limit, the default."""
    import pipeline.engines.dask_engine as engine_dask

    class _Cluster:
        def __init__(self, *limits: int) -> None:
            self.limits = limits

        def scheduler_info(self) -> dict:
            return {"workers": {str(i): {"memory_limit": m} for i, m in enumerate(self.limits)}}

    rows = engine_dask._rows_per_partition
    assert rows(_Cluster(0, 0)) == engine_dask.ROWS_PER_PARTITION
    assert rows(_Cluster(64 * 2**30)) == engine_dask.ROWS_PER_PARTITION
    small = rows(_Cluster(8 * 2**30, int(1.5 * 2**30)))
    assert small == int(1.5 * 2**30) // engine_dask.BYTES_PER_ROW < engine_dask.ROWS_PER_PARTITION
    assert rows(_Cluster(2**20)) == engine_dask.MIN_ROWS_PER_PARTITION
