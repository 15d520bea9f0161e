"""Every count a run shares, decided once: the one source of ``summary.json``, ``report.html``
and ``measures.*`` (and so of ``trend.*``, which reads ``measures.parquet``).

Before this module each shareable file suppressed its own copy of a table, and two files
together gave away what each hid (the urgent list's rows, new and persisting). Here every
published count is a *cell* with a key (``worklists/urgent/new``), the additive relations
between cells are declared (statuses add up to the cohort, a list's rows are its new plus
persisting patients, each breakdown of a measure adds up to its overall row, a count shown
in two tables is one relation ``a = b``), and ``disclosure.protect`` decides suppression for
all of them at once. Every file then reads the same cell: the same rounded number, the same
``≤7`` (primary) or ``[c]`` (secondary). ``disclosure_log.csv`` (owner-only) lists every
suppressed cell, why, and the rule applied, for the reviewer who signs the outputs off.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.outputs.disclosure import (
    PRIMARY,
    ROUNDING_MULTIPLE,
    SECONDARY,
    SUPPRESSION_THRESHOLD,
    format_count,
    format_ratio,
    largest_small_count,
    protect,
)
from pipeline.outputs.measures import (
    MEASURES,
    Measure,
    breakdown_values,
    breakdowns,
    combine_counts,
    count_measures,
    is_flagged,
    is_value,
    measure_cells,
    publish_measures,
)

__all__ = [
    "LOG_COLUMNS",
    "CohortFigures",
    "ROUNDING_NOTE",
    "STATUSES",
    "Published",
    "publish",
]

STATUSES = ("deficient", "indeterminate", "unlikely", "not_tested")
#: Patient flags published in the cohort table (a patient can carry several).
FLAGS = ("urgent_review", "needs_mma", "needs_supplementation", "on_metformin",
         "metformin_monitoring_due", "on_b12_treatment", "retest_due", "discordant",
         "censored_ambiguous", "paediatric")
#: Worklist name -> the patients flag whose patients it lists (one row each).
LIST_FLAGS = {"urgent": "urgent_review", "mma": "needs_mma",
              "supplementation": "needs_supplementation",
              "metformin_monitoring": "metformin_monitoring_due", "retest": "retest_due"}
WORKLIST_COLUMNS = ("rows", "new", "persisting", "resolved")
#: Shown beside rounded figures that should add up (SPEC: say that rounding is why not).
ROUNDING_NOTE = (
    "Counts are rounded to the nearest {rounding} and counts of 1 to {small} are hidden, so "
    "figures that should add up may not; the check that they do is made on the exact counts."
)
LOG_COLUMNS = ("table", "row", "column", "cell", "value", "suppression", "why", "rule")


@dataclass
class _Cells:
    """Cells and relations as they are declared, before the one decision."""

    rows: list[tuple[str, str, str, str, int]]
    relations: list[tuple[str, str, str]]

    def add(self, table: str, row: str, column: str, value: int) -> str:
        key = f"{table}/{row}/{column}"
        self.rows.append((key, table, row, column, int(value)))
        return key

    def relate(self, name: str, total: str | Sequence[str], parts: Sequence[str]) -> None:
        totals = [total] if isinstance(total, str) else list(total)
        self.relations += [(name, key, "total") for key in totals]
        self.relations += [(name, key, "part") for key in parts]


NO_STATUS = "b12_status/no_status/patients"


@dataclass
class CohortFigures:
    """What the shareable tables need of the classified patients: counts that add up over
    any split of the cohort, and the few facts about whole patient sets that decide
    relations (which cells count exactly the same patients, which sums hold). A cohort
    held in parts (``--engine dask --partitioned``) is published from its parts' figures,
    combined, exactly as the whole cohort is: no patient row reaches the process that
    writes.

    ``same[i, j]``: the cells ``mask_keys[i]`` and ``mask_keys[j]`` count the same patients;
    ``holds``: ``tested`` (tested = deficient + indeterminate + unlikely) and ``metformin``
    (on metformin = tested + monitoring due) hold patient by patient; ``measures``: the
    exact measure counts of each part, every breakdown included; ``grouped``: whether any
    patient has an age (``age_band``) or a sex (``sex``), without which that breakdown is
    not published.
    """

    patients: int
    statuses: dict[str, int]
    flags: dict[str, int]
    mask_keys: tuple[str, ...]
    same: np.ndarray
    holds: dict[str, bool]
    measures: list[pd.DataFrame]
    grouped: dict[str, bool]

    @classmethod
    def of(cls, patients: pd.DataFrame, as_of: dt.date, sex: pd.Series | None = None,
           definitions: Sequence[Measure] = MEASURES) -> CohortFigures:
        """The figures of one cohort (or one part of it)."""
        # Each cell's patients as packed bits (a bit per patient): a few dozen masks of a
        # byte per patient were a quarter of a gigabyte at 8M patients.
        masks: dict[str, np.ndarray] = {}

        def count(key: str, mask: np.ndarray) -> int:
            masks[key] = np.packbits(mask)
            return int(np.count_nonzero(mask))

        status = patients["b12_status"]
        statuses = {value: count(f"b12_status/{value}/patients", is_value(status, value))
                    for value in STATUSES}
        statuses[NO_STATUS.split("/")[1]] = count(NO_STATUS, status.isna().to_numpy(dtype=bool))
        flags = {flag: count(f"flags/{flag}/patients", _flag(patients, flag))
                 for flag in FLAGS if flag in patients.columns}
        measured = set()
        for measure in definitions:
            num, den = measure.masks(patients, as_of)
            count(f"measure/{measure.id}/overall/all/numerator", np.asarray(num, bool))
            count(f"measure/{measure.id}/overall/all/denominator", np.asarray(den, bool))
            measured.add(measure.id)

        def measure(name: str, part: str) -> np.ndarray:
            return masks[f"measure/{name}/overall/all/{part}"]

        tested = [masks[f"b12_status/{s}/patients"] for s in STATUSES[:3]]
        holds = {"tested": "deficient_among_tested" in measured and _partition_holds(
                     measure("deficient_among_tested", "denominator"), tested),
                 "metformin": "metformin_testing" in measured
                 and "metformin_monitoring_due" in patients.columns and _partition_holds(
                     measure("metformin_testing", "denominator"),
                     [measure("metformin_testing", "numerator"),
                      np.packbits(_flag(patients, "metformin_monitoring_due"))])}
        first: dict[bytes, int] = {}
        group = np.array([first.setdefault(mask.tobytes(), i)
                          for i, mask in enumerate(masks.values())])  # a few dozen masks
        if sex is None and "sex" in patients.columns:
            sex = patients["sex"]
        groupings = breakdowns(patients, sex, every=True)  # once: counts, and which to show
        counts = count_measures(patients, as_of, measures=definitions, groupings=groupings)
        return cls(len(patients), statuses, flags, tuple(masks), group[:, None] == group[None, :],
                   holds, [counts], breakdown_values(groupings))

    @staticmethod
    def combine(parts: Sequence[CohortFigures]) -> CohortFigures:
        """The figures of the parts' union (the parts hold different patients)."""
        head = parts[0]
        return CohortFigures(
            sum(p.patients for p in parts),
            {k: sum(p.statuses[k] for p in parts) for k in head.statuses},
            {k: sum(p.flags[k] for p in parts) for k in head.flags},
            head.mask_keys,
            np.logical_and.reduce([p.same for p in parts]),
            {k: all(p.holds[k] for p in parts) for k in head.holds},
            [t for p in parts for t in p.measures],
            {k: any(p.grouped[k] for p in parts) for k in head.grouped})

    def measure_table(self, definitions: Sequence[Measure] = MEASURES) -> pd.DataFrame:
        """The exact measures table (``count_measures``) of the whole cohort."""
        return combine_counts(self.measures, self.grouped, measures=definitions)


@dataclass(frozen=True)
class Published:
    """The run's published cells (one decision) and the measures table made from them.

    ``cells``: indexed by key, columns ``table``, ``row``, ``column``, ``value`` (exact),
    ``count`` (rounded, NA when hidden), ``suppressed``, ``suppression``, ``text`` (as HTML
    shows it: ``1,235``, ``≤7`` or ``[c]``) and ``why``.
    """

    cells: pd.DataFrame
    measures: pd.DataFrame
    small_count: int
    rounding: int

    def count(self, key: str) -> int | None:
        value = self.cells.at[key, "count"]
        return None if pd.isna(value) else int(value)

    def text(self, key: str) -> str:
        return str(self.cells.at[key, "text"])

    def table(self, table: str) -> pd.DataFrame:
        return self.cells[self.cells["table"] == table]

    def counts(self, table: str, column: str) -> dict[str, int | None]:
        """One column of a table as ``{row: published count or None}`` (JSON-ready)."""
        rows = self.table(table)
        rows = rows[rows["column"] == column]
        return {str(r): (None if pd.isna(c) else int(c))
                for r, c in zip(rows["row"], rows["count"], strict=True)}

    @property
    def note(self) -> str:
        return ROUNDING_NOTE.format(rounding=self.rounding, small=self.small_count)

    def suppression(self) -> dict[str, str]:
        """Every withheld shareable cell's key and why (``primary`` / ``secondary``)."""
        hidden = self.cells[self.cells["suppressed"]]
        return dict(zip(hidden.index, hidden["suppression"].astype(str), strict=True))

    def log(self) -> pd.DataFrame:
        """``disclosure_log.csv``: every suppressed cell, its exact value, why, and the rule."""
        hidden = self.cells[self.cells["suppressed"]]
        return pd.DataFrame({
            "table": hidden["table"], "row": hidden["row"], "column": hidden["column"],
            "cell": hidden.index, "value": hidden["value"],
            "suppression": hidden["suppression"], "why": hidden["why"],
            "rule": hidden["suppression"].map(self._rules()),
        })[list(LOG_COLUMNS)].reset_index(drop=True)

    def write_log(self, path: Path) -> None:
        self.log().to_csv(path, index=False, lineterminator="\n")

    def _rules(self) -> dict[str, str]:
        small = largest_small_count(self.small_count, self.rounding)
        return {
            PRIMARY: f"primary: a count of 1 to {small} is withheld (SPEC Outputs, disclosure "
                     "control)",
            SECONDARY: "secondary: withheld so that no combination of the shareable files "
                       "recovers a withheld count (next smallest cell of the relation)",
        }

    # ---------------------------------------------------------------- for report.html

    def _share(self, key: str, total: str) -> str:
        count, whole = self.count(key), self.count(total)
        if count is None or not whole:
            return "–"
        return format_ratio(count / whole)

    def report_rows(self, table: str, column: str, labels: Mapping[str, str],
                    share_of: str | None = None) -> list[dict[str, str]]:
        """Rows ``{label, count, share, suppression}`` of one published table: ``count``
        is the display text (``≤7`` primary, ``[c]`` secondary), ``share`` a percentage of
        the published ``share_of`` cell, worked out from the rounded counts."""
        rows = self.table(table)
        rows = rows[rows["column"] == column]
        return [{"label": labels.get(row, row), "count": text, "suppression": kind,
                 "share": self._share(key, share_of) if share_of else ""}
                for key, row, text, kind in zip(rows.index, rows["row"], rows["text"],
                                                rows["suppression"], strict=True)]

    def report_context(self, *, status_labels: Mapping[str, str],
                       flag_labels: Mapping[str, str], list_labels: Mapping[str, str],
                       accounting_labels: Mapping[str, str],
                       definitions: Sequence[Measure] = MEASURES) -> dict[str, Any]:
        """What report.html shows of the published tables, display text included, so that
        the report renders the same decision as every other file."""
        total = "cohort/patients/patients"
        inputs = []
        for table in [t for t in self.cells["table"].unique() if t.startswith("accounting/")]:
            name = table.split("/", 1)[1]
            rows = self.report_rows(table, "rows", accounting_labels)
            balanced = self.cells.loc[self.cells["table"] == table, "balanced"].iloc[0]
            inputs.append({"name": name[:1].upper() + name[1:], "rows": rows,
                           "balances": bool(balanced), "note": self.note})
        lists = self.table("worklists")
        worklists = [{"name": name, "label": list_labels.get(name, name),
                      **{c: self.text(f"worklists/{name}/{c}") for c in WORKLIST_COLUMNS}}
                     for name in lists["row"].unique()]
        return {
            "cohort": {
                "total": self.text(total),
                "status_rows": self.report_rows("b12_status", "patients", status_labels,
                                                total),
                "flag_rows": self.report_rows("flags", "patients", flag_labels, total),
                "note": self.note,
            },
            "quality": {"inputs": inputs,
                        "reasons": self.report_rows("rejected_by_reason", "rows", {}),
                        "note": self.note},
            "worklists": worklists,
            "distribution_totals": {  # per plot: its count as text, and how it is withheld
                row: (self.text(key), str(self.cells.at[key, "suppression"]))
                for row in self.table("distributions")["row"]
                for key in [f"distributions/{row}/results"]},
            "measure_counts": self._measure_texts(),
            "breakdowns": self.breakdowns(definitions),
        }

    def _measure_texts(self) -> dict[str, dict[str, str]]:
        """Per measure, the overall row as text: ratio, numerator and denominator."""
        overall = self.measures[self.measures["group_by"] == "overall"]
        return {str(m): {"ratio": format_ratio(r),
                         "numerator_count": self.text(f"measure/{m}/overall/all/numerator"),
                         "denominator_count": self.text(f"measure/{m}/overall/all/denominator")}
                for m, r in zip(overall["measure"], overall["ratio"], strict=True)}

    def breakdowns(self, definitions: Sequence[Measure] = MEASURES) -> list[dict[str, Any]]:
        """Per measure and ``group_by`` other than practice (age band, sex), the groups'
        published rows as text (practices are many: they are in measures.csv and the
        funnel plots)."""
        titles = {d.id: d.title for d in definitions}
        shown = self.measures[self.measures["group_by"].isin(["age_band", "sex"])]
        out = []
        for (measure, group_by), rows in shown.groupby(["measure", "group_by"], sort=False):
            stem = f"measure/{measure}/{group_by}/"
            out.append({
                "measure": str(measure), "title": titles.get(str(measure), str(measure)),
                "group_by": str(group_by),
                "label": {"age_band": "Age band", "sex": "Sex"}[str(group_by)],
                "rows": [{"group": str(g), "ratio": format_ratio(r),
                          "numerator": self.text(f"{stem}{g}/numerator"),
                          "denominator": self.text(f"{stem}{g}/denominator")}
                         for g, r in zip(rows["group"], rows["ratio"], strict=True)],
            })
        return out


def _flag(patients: pd.DataFrame, column: str) -> np.ndarray:
    """``is_flagged``, where a flag the table does not hold counts as no."""
    if column not in patients.columns:
        return np.zeros(len(patients), dtype=bool)
    return is_flagged(patients, column)


def _partition_holds(total: np.ndarray, parts: Sequence[np.ndarray]) -> bool:
    """True when the parts' patients are disjoint and together exactly the total's (each
    set as packed bits)."""
    union = np.zeros_like(total)
    for part in parts:
        if np.bitwise_and(union, part).any():
            return False
        union |= part
    return bool(np.array_equal(union, total))


#: The names of the relations between two cells that count the same patients: found by
#: their patients, and (``SAME_GROUP``) the same group of two such cells' breakdowns, or
#: two cells that count the same patients by their definitions (``SAME_BY_DEFINITION``).
SAME_PATIENTS = "same patients: "
SAME_GROUP = "same patients in one group: "
#: Cells that count the same patients by definition (R7; the measures' words), tied even
#: when they count nobody: a 0 withheld in one (the numerator of a withheld denominator)
#: must not be shown as 0 in the other. Each pair is tied only when the patients agree.
SAME_BY_DEFINITION = (
    ("flags/needs_mma/patients", "b12_status/indeterminate/patients"),
    ("b12_status/deficient/patients", "measure/deficient_among_tested/overall/all/numerator"),
    ("b12_status/deficient/patients",
     "measure/deficient_untreated_90d/overall/all/denominator"),
    ("flags/on_metformin/patients", "measure/metformin_testing/overall/all/denominator"),
    ("flags/on_b12_treatment/patients", "measure/retest_overdue/overall/all/denominator"),
)


def _equal_masks(cells: _Cells, figures: CohortFigures, measure_values: pd.Series) -> None:
    """Cells counting exactly the same patients are one relation ``a = b``: a count shown
    in two tables must be hidden in both or neither. Two measures' overall cells that count
    the same patients (deficient patients: the numerator of "deficient among tested" and
    the denominator of "deficient and untreated") split them by the same groups, so each of
    their breakdown cells (``measure_values``' keys) is tied to its namesake likewise
    (``SAME_GROUP``), when they count anyone: every empty cell counts "the same" nobody."""
    at = {key: i for i, key in enumerate(figures.mask_keys)}
    keys = [k for k in figures.mask_keys if k != NO_STATUS or figures.statuses["no_status"]]
    groups: dict[str, list[str]] = {}
    for key in keys:  # a few dozen cells
        first = next((g for g in groups if figures.same[at[g], at[key]]), key)
        groups.setdefault(first, []).append(key)
    for a, b in SAME_BY_DEFINITION:
        if a in at and b in at and figures.same[at[a], at[b]]:
            cells.relate(f"{SAME_GROUP}{a} = {b}", a, [b])
    known = set(measure_values.index)
    overall = "/overall/all/"
    for members in groups.values():
        for other in members[1:]:
            cells.relate(f"{SAME_PATIENTS}{members[0]} = {other}", members[0], [other])
        measured = [k for k in members if k.startswith("measure/") and overall in k
                    and measure_values.get(k, 0) > 0]
        for other in measured[1:]:  # the same patients, split by the same groups
            head, tail = measured[0].split(overall), other.split(overall)
            for key in sorted(k for k in known if k.startswith(head[0] + "/")
                              and k.endswith("/" + head[1]) and overall not in k):
                split = key[len(head[0]):-len(head[1])]  # "/age_band/<16/"
                twin = tail[0] + split + tail[1]
                if twin in known:
                    cells.relate(f"{SAME_GROUP}{key} = {twin}", key, [twin])


def _one_decision_for_the_same_count(decided: pd.DataFrame, relations: pd.DataFrame,
                                     ties: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series]:
    """A group's cells in two breakdowns that count the same patients, and cells the same
    by definition (``SAME_GROUP``), withheld in both tables or in neither. ``protect``
    already withholds the twin of a withheld non-zero count; a zero withheld only as the
    numerator of a withheld denominator (0 deficient among the few under-16s tested) would
    still be shown as 0 in the other table (0 deficient under-16s), which tells the same.
    It is withheld there too (secondary), with the numerators that follow it (``ties``).
    Returns the decision and, per cell withheld here, the cell it follows."""
    same = relations[relations["relation"].str.startswith(SAME_GROUP)]
    pairs = same.pivot(index="relation", columns="role", values="cell")
    if pairs.empty:
        return decided, pd.Series(dtype=object)
    a = np.r_[pairs["total"].to_numpy(), pairs["part"].to_numpy(), ties["cell"].to_numpy()]
    b = np.r_[pairs["part"].to_numpy(), pairs["total"].to_numpy(), ties["follows"].to_numpy()]
    twin = np.arange(len(a)) < 2 * len(pairs)  # else a numerator with its denominator
    hidden = decided["suppressed"].copy()
    follows: dict[str, str] = {}
    for _ in range(len(a)):  # along chains of equal and tied cells
        newly = hidden.reindex(b).to_numpy() & ~hidden.reindex(a).to_numpy()
        if not newly.any():
            break
        for cell, other in zip(a[newly & twin], b[newly & twin], strict=True):
            follows.setdefault(cell, other)  # a tied numerator: ``_why`` says so itself
        hidden[a[newly]] = True
    cells = hidden.index[hidden.to_numpy(dtype=bool) & ~decided["suppressed"].to_numpy(bool)]
    if not len(cells):
        return decided, pd.Series(dtype=object)
    decided = decided.copy()
    decided.loc[cells, "count"] = pd.NA
    decided.loc[cells, "suppressed"] = True
    decided.loc[cells, "suppression"] = SECONDARY
    return decided, pd.Series(follows, dtype=object)


def _distribution_cells(cells: _Cells, distributions: Mapping[str, int] | None) -> str | None:
    """The report's count of results per analyte plot, tied to the labs' accepted rows (the
    rest, dated after the as-of date, is never published): with one analyte and nothing
    after the as-of date it is the accepted count itself. Returns the unpublished rest."""
    accepted = "accounting/labs/rows_accepted/rows"
    exact = {row[0]: row[4] for row in cells.rows}
    if not distributions or accepted not in exact:
        return None
    drawn = [cells.add("distributions", analyte, "results", int(n))
             for analyte, n in distributions.items()]
    rest = exact[accepted] - sum(int(n) for n in distributions.values())
    if rest < 0:  # not the same rows (never for a run's own counts): no relation to declare
        return None
    not_drawn = cells.add("distributions", "_not_drawn", "results", rest)
    cells.relate("labs: accepted rows = results drawn + rows after the as-of date", accepted,
                 [*drawn, not_drawn])
    return not_drawn


def _cohort_cells(cells: _Cells, figures: CohortFigures) -> None:
    total = cells.add("cohort", "patients", "patients", figures.patients)
    parts = [cells.add("b12_status", value, "patients", figures.statuses[value])
             for value in STATUSES]
    if figures.statuses["no_status"]:
        parts.append(cells.add("b12_status", "no_status", "patients",
                               figures.statuses["no_status"]))
    cells.relate("statuses add up to the cohort", total, parts)
    for flag, count in figures.flags.items():
        cells.add("flags", flag, "patients", count)


def _measure_relations(cells: _Cells, figures: CohortFigures) -> None:
    """The sums that tie measures to the cohort tables, each declared only when the
    patients show that it holds."""
    if figures.holds["tested"]:
        cells.relate("tested = deficient + indeterminate + unlikely",
                     "measure/deficient_among_tested/overall/all/denominator",
                     [f"b12_status/{s}/patients" for s in STATUSES[:3]])
    if figures.holds["metformin"]:
        cells.relate("on metformin = tested + monitoring due",
                     "measure/metformin_testing/overall/all/denominator",
                     ["measure/metformin_testing/overall/all/numerator",
                      "flags/metformin_monitoring_due/patients"])


def publish(
    *,
    patients: pd.DataFrame | None = None,
    figures: CohortFigures | None = None,
    as_of: dt.date,
    accounting: Mapping[str, Mapping[str, Any]],
    worklist_sizes: Mapping[str, Mapping[str, int]],
    reasons: Mapping[str, int],
    sex: pd.Series | None = None,
    small_count: int = SUPPRESSION_THRESHOLD,
    rounding: int = ROUNDING_MULTIPLE,
    definitions: Sequence[Measure] = MEASURES,
    distributions: Mapping[str, int] | None = None,
) -> Published:
    """Declare every shareable cell and relation of a run and decide suppression once.

    ``accounting``: per input, its row counts (``rows_read`` = the others; ``balanced``);
    ``worklist_sizes``: per list, ``rows``/``new``/``persisting``/``resolved``;
    ``reasons``: rejected rows per reason code (a row may have several reasons);
    ``figures``: the cohort's figures (``CohortFigures``) in place of ``patients``;
    ``distributions``: per analyte, the results the report's distribution plot draws (the
    accepted labs rows, but those dated after the as-of date, which are never published).
    """
    if figures is None:
        figures = CohortFigures.of(patients, as_of, sex=sex, definitions=definitions)
    cells = _Cells([], [])
    _cohort_cells(cells, figures)

    flag_values = {row[2]: row[4] for row in cells.rows if row[1] == "flags"}
    for name, sizes in worklist_sizes.items():  # five lists
        keys = {c: cells.add("worklists", name, c, int(sizes.get(c, 0)))
                for c in WORKLIST_COLUMNS}
        cells.relate(f"{name} list: rows = new + persisting", keys["rows"],
                     [keys["new"], keys["persisting"]])
        flag = LIST_FLAGS.get(name)
        if flag in flag_values and flag_values[flag] == int(sizes.get("rows", 0)):
            cells.relate(f"{name} list rows = patients flagged {flag}",
                         f"flags/{flag}/patients", [keys["rows"]])

    balanced = {}
    rejected_total = []
    for name, counts in accounting.items():  # three inputs
        numbers = {k: int(v) for k, v in counts.items()
                   if isinstance(v, int | np.integer) and not isinstance(v, bool)}
        if "rows_read" not in numbers:
            continue
        table = f"accounting/{name}"
        read = cells.add(table, "rows_read", "rows", numbers.pop("rows_read"))
        parts = [cells.add(table, k, "rows", v) for k, v in numbers.items()]
        cells.relate(f"{name}: rows read = the rows' outcomes", read, parts)
        balanced[table] = bool(counts.get("balanced", True))
        if "rows_rejected" in numbers:
            rejected_total.append(f"{table}/rows_rejected/rows")

    reason_keys = [cells.add("rejected_by_reason", str(code), "rows", int(n))
                   for code, n in sorted(reasons.items())]
    overlap = None
    if reason_keys and rejected_total:
        # rows with several reasons are counted once per reason: the overlap is never
        # published, but a reader knows it is >= 0, so the reasons still bound each other
        extra = sum(int(n) for n in reasons.values()) - sum(
            row[4] for row in cells.rows if row[0] in rejected_total)
        overlap = cells.add("rejected_by_reason", "_overlap", "rows", max(extra, 0))
        cells.relate("reasons = rejected rows + rows with several reasons",
                     [*rejected_total, overlap], reason_keys)

    not_drawn = _distribution_cells(cells, distributions)
    table = figures.measure_table(definitions)
    m_values, m_relations, ties = measure_cells(table)
    _measure_relations(cells, figures)
    _equal_masks(cells, figures, m_values)

    frame = pd.DataFrame(cells.rows, columns=["key", "table", "row", "column", "value"])
    measure_keys = m_values.index.to_series()
    parts_of = measure_keys.str.split("/", n=4, expand=True)
    frame = pd.concat([frame, pd.DataFrame({
        "key": m_values.index, "table": "measures",
        "row": (parts_of[1] + "/" + parts_of[2] + "/" + parts_of[3]).to_numpy(),
        "column": parts_of[4].to_numpy(), "value": m_values.to_numpy()})], ignore_index=True)
    frame = frame.set_index("key")
    relations = pd.concat([pd.DataFrame(cells.relations, columns=["relation", "cell", "role"]),
                           m_relations], ignore_index=True)
    unpublished = pd.Series(frame.index.isin([overlap, not_drawn]), index=frame.index)
    decided = protect(frame["value"], relations, ties=ties, unpublished=unpublished,
                      small_count=small_count, rounding=rounding)
    decided, twins = _one_decision_for_the_same_count(decided, relations, ties)
    frame = frame.join(decided)
    frame["text"] = [format_count(c, small_count=small_count, suppression=k)
                     for c, k in zip(frame["count"], frame["suppression"], strict=True)]
    frame["why"] = _why(frame, relations, ties, small_count, rounding)
    frame.loc[twins.index, "why"] = "the same count as a withheld cell (" + twins + ")"
    frame["balanced"] = frame["table"].map(balanced)
    frame = frame[~unpublished.to_numpy()]
    return Published(cells=frame, measures=publish_measures(table, decided),
                     small_count=small_count, rounding=rounding)


def _why(frame: pd.DataFrame, relations: pd.DataFrame, ties: pd.DataFrame, small_count: int,
         rounding: int) -> pd.Series:
    """Why each cell is withheld: its own small count, or the relations it protects."""
    small = largest_small_count(small_count, rounding)
    why = pd.Series("", index=frame.index, dtype=object)
    why[frame["suppression"] == PRIMARY] = f"count between 1 and {small}"
    secondary = frame.index[frame["suppression"] == SECONDARY]
    # a 0 is never withheld to protect a relation (hiding it hides nothing): only as a
    # numerator with its denominator, or as the same count as a withheld cell
    member = relations[relations["cell"].isin(secondary[frame.loc[secondary, "value"] > 0])]
    hidden_primary = set(frame.index[frame["suppression"] == PRIMARY])
    relation_has = relations.assign(primary=relations["cell"].isin(hidden_primary))
    protecting = relation_has.groupby("relation")["primary"].any()
    member = member[member["relation"].map(protecting).fillna(False).to_numpy(bool)]
    reasons = member.groupby("cell")["relation"].agg(lambda r: "; ".join(sorted(set(r))))
    why[reasons.index] = "protects a withheld count in: " + reasons
    tied = ties[ties["cell"].isin(secondary) & ties["follows"].isin(frame.index[
        frame["suppressed"].to_numpy(dtype=bool)])].set_index("cell")["follows"]
    tied = tied[why.reindex(tied.index).eq("").to_numpy()]
    why[tied.index] = "numerator of a withheld denominator (" + tied + ")"
    rest = (frame["suppression"] == SECONDARY) & why.eq("")
    why[rest] = "protects a withheld count through the other tables it adds up with"
    return why
