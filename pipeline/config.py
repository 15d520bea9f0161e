"""Rules profiles and extract formats: TOML files that hold every number and mapping.

Profiles (``configs/rules/*.toml``) may ``extends`` another profile and give only what
differs; a ``[sites]`` table maps a performing lab's ``site_id`` to another profile so its
method-specific cut-offs apply to that lab's results. Unknown keys are rejected with the
key and file named, because a misspelt threshold silently ignored is a clinical error.
"""

from __future__ import annotations

import codecs
import copy
import dataclasses
import hashlib
import json
import re
import tomllib
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from pipeline import CONFIG_DIR
from pipeline.errors import EXIT_USAGE, UserError

RULES_DIR = CONFIG_DIR / "rules"
FORMATS_DIR = CONFIG_DIR / "formats"
DEFAULT_RULES = "nice-ng239"
DEFAULT_FORMAT = "canonical"

ANALYTES = ("b12_total", "b12_active", "mma")
MEDICATION_CLASSES = ("metformin", "b12_oral", "b12_injection", "acid_suppressant")


def _resolve(name_or_path: str, folder: Path, what: str) -> Path:
    """A bare name means a shipped file; anything else is a path. A folder of the same name
    in the current directory (``omop/`` holding the OMOP tables) does not hide the shipped
    file: only an existing file, a ``.toml`` name or a name with a ``/`` is a path."""
    candidate = Path(name_or_path)
    if candidate.suffix == ".toml" or candidate.is_file() or "/" in name_or_path:
        if not candidate.is_file():
            raise UserError(f"{what} file not found: {name_or_path}", EXIT_USAGE)
        return candidate
    shipped = folder / f"{name_or_path}.toml"
    if not shipped.is_file():
        names = ", ".join(sorted(p.stem for p in folder.glob("*.toml")))
        raise UserError(f"unknown {what} '{name_or_path}' (shipped: {names})", EXIT_USAGE)
    return shipped


def _load_toml(path: Path, what: str) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{what} file {path} is not valid TOML: {exc}", EXIT_USAGE) from exc


def _strptime_format(text: str) -> bool:
    """A format strptime understands: a sample date written in it reads back (an unknown
    directive such as ``%Q`` would otherwise stop the run when the dates are parsed)."""
    if "%" not in text:
        return False
    try:
        sample = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)  # %z and %Z write too
        datetime.strptime(sample.strftime(text), text)
    except ValueError:
        return False
    return True


def _check_keys(data: dict[str, Any], allowed: dict[str, Any], path: Path,
                prefix: str = "") -> None:
    """Reject keys that the reference layout does not have (``None`` = free-form table)."""
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if key not in allowed:
            raise UserError(f"unknown key '{dotted}' in {path}", EXIT_USAGE)
        ref = allowed[key]
        if isinstance(ref, dict) and ref and isinstance(value, dict):
            _check_keys(value, ref, path, dotted + ".")
        elif isinstance(ref, dict) and ref and not isinstance(value, dict):
            raise UserError(f"key '{dotted}' in {path} must be a table", EXIT_USAGE)
        elif isinstance(ref, int | float) and not isinstance(ref, bool):
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise UserError(f"key '{dotted}' in {path} must be a number", EXIT_USAGE)
        elif isinstance(ref, str) and not isinstance(value, str):
            raise UserError(f"key '{dotted}' in {path} must be text", EXIT_USAGE)
        elif isinstance(ref, list) and not (isinstance(value, list)
                                            and all(isinstance(v, str) for v in value)):
            raise UserError(f"key '{dotted}' in {path} must be a list of text", EXIT_USAGE)


#: Rules-profile keys renamed by SPEC revision 2 (rule -> old key -> new key). A lab's
#: profile, often a copy of a shipped one, keeps loading: the old key's value is the new
#: key's, unless the profile gives the new key too.
RENAMED_RULE_KEYS: dict[str, dict[str, str]] = {
    "R9": {"diet": "prevention_diet", "parenteral_note": "injection_note"},
}


def _renamed_keys(raw: dict[str, Any]) -> None:
    """Rewrite, in place, the old names of renamed rules-profile keys to the new ones."""
    rules = raw.get("rules")
    if not isinstance(rules, dict):
        return
    for rule_id, renamed in RENAMED_RULE_KEYS.items():
        section = rules.get(rule_id)
        if not isinstance(section, dict):
            continue
        for old, new in renamed.items():
            if old in section:
                value = section.pop(old)
                section.setdefault(new, value)


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


# --------------------------------------------------------------------------- rules profiles


@dataclass(frozen=True)
class RulesProfile:
    """A merged rules profile; ``sites`` maps site_id to the profile used for that lab."""

    name: str
    path: Path
    data: dict[str, Any]
    sites: dict[str, RulesProfile] = field(default_factory=dict)

    def rule(self, rule_id: str) -> dict[str, Any]:
        return self.data["rules"][rule_id]

    @property
    def harmonise(self) -> dict[str, Any]:
        return self.data["harmonise"]

    @property
    def disclosure(self) -> dict[str, Any]:
        return self.data["disclosure"]

    @property
    def sha256(self) -> str:
        payload = {"profile": self.data, "sites": {k: v.sha256 for k, v in self.sites.items()}}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()

    def parameters(self) -> list[tuple[str, str, Any, str]]:
        """(rule id, parameter, value, source) rows for ``b12screen rules``."""
        rows: list[tuple[str, str, Any, str]] = []
        for key in ("harmonise",):
            section = self.data[key]
            rows += [(key, k, v, section.get("source", "")) for k, v in section.items()
                     if k != "source"]
        for rule_id, section in self.data["rules"].items():
            params = {k: v for k, v in section.items() if k not in ("title", "source")}
            if not params:
                rows.append((rule_id, "", section.get("title", ""), section.get("source", "")))
            rows += [(rule_id, k, v, section.get("source", "")) for k, v in params.items()]
        section = self.data["disclosure"]
        rows += [("disclosure", k, v, section.get("source", "")) for k, v in section.items()
                 if k != "source"]
        return rows


def _reference_profile() -> dict[str, Any]:
    return _load_toml(RULES_DIR / f"{DEFAULT_RULES}.toml", "rules profile")


def _load_profile_data(path: Path, seen: tuple[Path, ...]) -> dict[str, Any]:
    if path.resolve() in seen:
        raise UserError(f"rules profile {path} extends itself", EXIT_USAGE)
    raw = _load_toml(path, "rules profile")
    reference = _reference_profile()
    allowed = copy.deepcopy(reference)
    allowed["profile"]["extends"] = ""
    allowed["sites"] = {}
    for rule_id in allowed["rules"]:
        allowed["rules"][rule_id].setdefault("title", "")
    _renamed_keys(raw)
    _check_keys(raw, allowed, path)
    parent = raw.get("profile", {}).get("extends")
    if parent:
        base = _load_profile_data(_referenced(parent, path, "profile.extends"),
                                  (*seen, path.resolve()))
    elif path.resolve() == (RULES_DIR / f"{DEFAULT_RULES}.toml").resolve():
        base = {}
    else:
        base = reference
    merged = _merge(base, raw)
    merged.get("profile", {}).pop("extends", None)
    if not raw.get("profile", {}).get("name"):  # as a format's: its file's name, never the
        merged.setdefault("profile", {})["name"] = path.stem  # parent's it changes
    return merged


def _referenced(name: str, profile: Path, key: str) -> Path:
    """A profile that ``profile`` names (``extends``, ``[sites]``): a shipped name, or a path
    taken from the naming profile's folder first (a relative path written beside it), then
    from the current directory; an unknown one names the key and the file."""
    beside = profile.parent / name
    if not Path(name).is_absolute() and beside.suffix == ".toml" and beside.is_file():
        return beside
    try:
        return _resolve(name, RULES_DIR, "rules profile")
    except UserError as exc:
        raise UserError(f"{key} in {profile}: {exc}", EXIT_USAGE) from exc


def load_rules(name_or_path: str | None = None, _site_of: str | None = None) -> RulesProfile:
    """Load a profile by shipped name or path, with its site profiles."""
    path = _resolve(name_or_path or DEFAULT_RULES, RULES_DIR, "rules profile")
    data = _load_profile_data(path, ())
    _validate_rules(data, path)
    sites: dict[str, RulesProfile] = {}
    if _site_of is None:
        named: dict[str, str] = {}
        for site_id, target in sorted(data.get("sites", {}).items()):
            if not isinstance(target, str):
                raise UserError(f"sites.{site_id} in {path} must name a profile", EXIT_USAGE)
            named[_one_code(named, site_id, target, "sites", path)] = target  # any case
            sites[str(site_id)] = load_rules(
                str(_referenced(target, path, f"sites.{site_id}")), _site_of=str(site_id))
    data = {k: v for k, v in data.items() if k != "sites"}
    return RulesProfile(name=data["profile"]["name"], path=path, data=data, sites=sites)


#: Settings that must be above zero (a look-back, a limit or a conversion of 0 makes no
#: sense); every other number in a profile must not be negative.
POSITIVE = {("rules", "R4", "lookback_days"), ("rules", "R5", "mma_upper_umol_l"),
            ("rules", "R10", "metformin_test_interval_days"),
            ("rules", "R11", "retest_after_days"), ("rules", "R11", "retest_after_days_pregnant"),
            ("harmonise", "b12_total_pmol_to_ng"), ("harmonise", "mma_nmol_per_l_to_umol"),
            ("disclosure", "rounding")}
#: R9's lists name its regimen texts.
R9_LISTS = ("injection_only", "injection_option")


def _validate_rules(data: dict[str, Any], path: Path) -> None:
    """Values a profile can hold but no lab means: a negative look-back, days or count, a
    zero limit, bands or plausible ranges out of order, a list naming no regimen. Each
    would otherwise classify everyone wrongly without a word, or stop mid-run."""
    def bad(key: str, why: str) -> UserError:
        return UserError(f"{key} {why} in {path}", EXIT_USAGE)

    sections = [(("harmonise",), data["harmonise"]), (("disclosure",), data["disclosure"]),
                *((("rules", rid), sec) for rid, sec in data["rules"].items())]
    for where, section in sections:
        for key, value in section.items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                continue
            dotted = ".".join((*where, key))
            if (*where, key) in POSITIVE and not value > 0:
                raise bad(dotted, "must be above 0")
            if value < 0:
                raise bad(dotted, "must not be negative")
    for rid in ("R1", "R2"):
        sec = data["rules"][rid]
        if not sec["deficient_below"] <= sec["unlikely_above"]:
            raise UserError(f"rules.{rid}: deficient_below must not exceed unlikely_above"
                            f" in {path}", EXIT_USAGE)
    r11 = data["rules"]["R11"]
    for early, after in (("retest_early_days", "retest_after_days"),
                         ("retest_early_days_pregnant", "retest_after_days_pregnant")):
        if not r11[early] < r11[after]:  # else the test that found the deficiency is the check
            raise bad(f"rules.R11.{early}", f"must be below rules.R11.{after}")
    harmonise = data["harmonise"]
    for analyte in ("b12_total", "b12_active", "mma"):
        low, high = (harmonise[f"{analyte}_plausible_{end}"] for end in ("min", "max"))
        if not low < high:
            raise bad(f"harmonise.{analyte}_plausible_min", f"must be below "
                      f"harmonise.{analyte}_plausible_max")
    try:  # exactly YYYY-MM-DD: the date parsers downstream read no other ISO form alike
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", str(harmonise["earliest_date"])):
            raise ValueError
        date.fromisoformat(str(harmonise["earliest_date"]))
    except ValueError:
        raise bad("harmonise.earliest_date", "must be a date YYYY-MM-DD") from None
    r9 = data["rules"]["R9"]
    texts = sorted(k for k, v in r9.items() if isinstance(v, str) and "note" not in k
                   and k not in ("title", "source"))
    for key in R9_LISTS:
        unknown = [name for name in r9.get(key, []) if name not in texts]
        if unknown:
            raise bad(f"rules.R9.{key}", f"names '{unknown[0]}', which is not one of R9's "
                      f"regimens ({', '.join(texts)})")


def shipped_profiles() -> list[str]:
    return sorted(p.stem for p in RULES_DIR.glob("*.toml"))


# --------------------------------------------------------------------------- extract formats
#
# A format maps one lab's layout onto the canonical columns. Every key is checked here, when
# the file is loaded, so a typo fails before any data is read, with the key and file named.

KINDS = ("labs", "patients", "medications")
_DELIMITERS = {"auto": "auto", ",": ",", ";": ";", "\t": "\t", "tab": "\t", "|": "|"}
_READ_KEYS: dict[str, Any] = {
    "delimiter": "", "encoding": "", "day_first": None, "decimal_comma": None,
    "missing_values": None, "datetime_formats": None, "integer_ids": None,
}
_SECTION_KEYS: dict[str, tuple[str, ...]] = {
    "labs": ("columns", "codes", "default_units", "values", "read"),
    "patients": ("columns", "yes_no", "values", "read"),
    "medications": ("columns", "classes", "codes", "values", "read"),
}
_FORMAT_LAYOUT: dict[str, Any] = {
    "format": {"name": "", "title": "", "description": "", "source": ""},
    "read": _READ_KEYS,
    **{kind: {key: _READ_KEYS if key == "read" else None for key in keys}
       for kind, keys in _SECTION_KEYS.items()},
}
_FORMAT_LAYOUT["patients"]["yes_no"] = {"yes": None, "no": None}

CANONICAL_COLUMNS: dict[str, tuple[str, ...]] = {
    "labs": ("patient_id", "collected_at", "test_code", "result", "unit", "practice_id",
             "site_id", "specimen_id", "censor"),
    "patients": ("patient_id", "birth_date", "birth_year", "birth_month", "birth_day",
                 "age_years", "sex", "practice_id", "diet", "autoimmune_gastritis",
                 "bariatric_surgery", "crohns_disease", "neurological_symptoms", "pregnant",
                 "ileal_resection_cm"),
    "medications": ("patient_id", "medication", "start_date", "end_date", "dose_mg_per_day"),
}
REQUIRED_COLUMNS: dict[str, tuple[str, ...]] = {
    "labs": ("patient_id", "collected_at", "test_code", "result"),
    "patients": ("patient_id",),
    "medications": ("patient_id", "medication", "start_date"),
}
#: How unit text is compared: lower case, then each spelling replaced by its key (no spaces;
#: ``u``, ``µ``, ``μ`` and ``mc`` alike; litre/liter as ``l``). Formats' default units are
#: checked with ``unit_key``; extracts' units with ``harmonise.normalise_unit``, column-wise.
UNIT_SPELLINGS = ((" ", ""), ("µ", "u"), ("μ", "u"), ("mc", "u"), ("litre", "l"),
                  ("liter", "l"))


def unit_key(unit: str) -> str:
    """One unit's text as it is compared with the accepted units."""
    key = unit.lower()
    for spelt, replacement in UNIT_SPELLINGS:
        key = key.replace(spelt, replacement)
    return key


#: Units accepted per analyte, as ``unit_key`` spells them (SPEC table).
ACCEPTED_UNITS: dict[str, tuple[str, ...]] = {
    "b12_total": ("ng/l", "pg/ml", "pmol/l"),
    "b12_active": ("pmol/l",),
    "mma": ("umol/l", "nmol/ml", "nmol/l"),
}


@dataclass(frozen=True)
class ReadOptions:
    """How to read one input's files (CSV details; Parquet needs none of them)."""

    delimiter: str = "auto"
    encoding: str = "auto"
    day_first: bool = False
    decimal_comma: bool = False
    missing_values: tuple[str, ...] = ("", "NULL", "null", "N/A", "n/a", "NA", "-", "None")
    datetime_formats: tuple[str, ...] = ()
    integer_ids: bool = False


@dataclass(frozen=True)
class InputSpec:
    """How one input (labs, patients or medications) maps onto canonical columns."""

    kind: str
    columns: dict[str, tuple[str, ...]]
    read: ReadOptions
    codes: dict[str, str] = field(default_factory=dict)
    default_units: dict[str, str] = field(default_factory=dict)
    values: dict[str, dict[str, str]] = field(default_factory=dict)
    yes: tuple[str, ...] = ("true", "yes", "y", "1")
    no: tuple[str, ...] = ("false", "no", "n", "0")
    classes: tuple[tuple[str, str], ...] = ()
    class_codes: dict[str, str] = field(default_factory=dict)
    #: the format's column map of each other input: a file given as the wrong input is
    #: recognised by the names this format gives that input's columns
    others: dict[str, dict[str, tuple[str, ...]]] = field(default_factory=dict)


@dataclass(frozen=True)
class ExtractFormat:
    name: str
    path: Path
    labs: InputSpec
    patients: InputSpec
    medications: InputSpec
    sha256: str

    def spec(self, kind: str) -> InputSpec:
        return getattr(self, kind)


def _bad(key: str, path: Path, why: str) -> UserError:
    return UserError(f"key '{key}' in {path} {why}", EXIT_USAGE)


def _table(section: dict[str, Any], key: str, dotted: str, path: Path) -> dict[str, Any]:
    value = section.get(key, {})
    if not isinstance(value, dict):
        raise _bad(dotted, path, "must be a table")
    return value


def _text_list(value: Any, dotted: str, path: Path) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _bad(dotted, path, "must be a list of text, e.g. [\"NULL\", \"N/A\"]")
    return tuple(value)


def _read_options(section: dict[str, Any], base: ReadOptions, path: Path,
                  prefix: str) -> ReadOptions:
    opts = dict(base.__dict__)
    for key, value in section.items():
        dotted = f"{prefix}{key}"
        if key in ("missing_values", "datetime_formats"):
            value = _text_list(value, dotted, path)
            if key == "datetime_formats" and not all(_strptime_format(v) for v in value):
                raise _bad(dotted, path, "must hold strptime formats such as "
                                         "\"%d/%m/%Y %H:%M\"")
        elif key in ("day_first", "decimal_comma", "integer_ids"):
            if not isinstance(value, bool):
                raise _bad(dotted, path, "must be true or false")
        elif key == "delimiter":
            if value not in _DELIMITERS:
                raise _bad(dotted, path, "must be one of \"auto\", \",\", \";\", \"tab\", "
                                         "\"|\"")
            value = _DELIMITERS[value]
        elif key == "encoding":
            if value != "auto":
                try:
                    codecs.lookup(value)
                except LookupError:
                    raise _bad(dotted, path, f"names an unknown encoding '{value}' (use "
                                             "\"auto\", \"utf-8\", \"cp1252\", "
                                             "\"latin-1\", ...)") from None
        opts[key] = value
    return ReadOptions(**opts)


def _columns(kind: str, section: dict[str, Any], path: Path) -> dict[str, tuple[str, ...]]:
    columns: dict[str, tuple[str, ...]] = {}
    for canon, source in _table(section, "columns", f"{kind}.columns", path).items():
        dotted = f"{kind}.columns.{canon}"
        if canon not in CANONICAL_COLUMNS[kind]:
            known = ", ".join(CANONICAL_COLUMNS[kind])
            raise UserError(f"unknown key '{dotted}' in {path} (canonical columns: {known})",
                            EXIT_USAGE)
        sources = (source,) if isinstance(source, str) else source
        if (not isinstance(sources, list | tuple) or not sources
                or not all(isinstance(s, str) and s.strip() for s in sources)):
            raise _bad(dotted, path, "must name a source column, or a list of them")
        columns[canon] = tuple(s.strip() for s in sources)
    return columns


def _lab_codes(section: dict[str, Any], path: Path) -> dict[str, str]:
    codes = {}
    for code, analyte in _table(section, "codes", "labs.codes", path).items():
        if analyte not in ANALYTES:
            raise _bad(f"labs.codes.{code}", path, f"must be one of {', '.join(ANALYTES)}")
        codes[_one_code(codes, code, analyte, "labs.codes", path)] = analyte
    return codes


def _one_code(seen: dict[str, str], code: object, value: str, table: str, path: Path) -> str:
    """A code as matched (trimmed, any case); the same code mapped twice to different
    values (``Serum B12`` and ``SERUM B12``) would silently keep the later one, so it
    stops the load (twice to the same value is harmless)."""
    key = str(code).strip().upper()
    if key in seen and seen[key] != value:
        raise _bad(f"{table}.{code}", path, f"maps a code already mapped to {seen[key]} (codes "
                                             "match trimmed and in any case)")
    return key


def _default_units(section: dict[str, Any], codes: dict[str, str], path: Path) -> dict[str, str]:
    units = {}
    for code, unit in _table(section, "default_units", "labs.default_units", path).items():
        dotted = f"labs.default_units.{code}"
        analyte = codes.get(str(code).strip().upper())
        if analyte is None:
            raise _bad(dotted, path, "names a code that [labs.codes] does not map")
        if not isinstance(unit, str):
            raise _bad(dotted, path, "must be text, e.g. \"ng/L\"")
        if unit_key(unit) not in ACCEPTED_UNITS[analyte]:
            raise _bad(dotted, path, f"is not a unit for {analyte} "
                                     f"({', '.join(ACCEPTED_UNITS[analyte])})")
        units[str(code).strip().upper()] = unit
    return units


def _values(kind: str, section: dict[str, Any], path: Path) -> dict[str, dict[str, str]]:
    values = {}
    for column, mapping in _table(section, "values", f"{kind}.values", path).items():
        dotted = f"{kind}.values.{column}"
        if column not in CANONICAL_COLUMNS[kind]:
            raise UserError(f"unknown key '{dotted}' in {path} (canonical columns: "
                            f"{', '.join(CANONICAL_COLUMNS[kind])})", EXIT_USAGE)
        if not isinstance(mapping, dict) or not all(
                isinstance(v, str | int | float) and not isinstance(v, bool)
                for v in mapping.values()):
            raise _bad(dotted, path, "must be a table of source value = canonical value")
        values[column] = {str(k): str(v) for k, v in mapping.items()}
    return values


def _classes(section: dict[str, Any], path: Path) -> tuple[tuple[str, str], ...]:
    entries = section.get("classes", [])
    if not isinstance(entries, list):
        raise _bad("medications.classes", path, "must be an array of tables "
                                                "([[medications.classes]])")
    classes = []
    for i, entry in enumerate(entries):
        if (not isinstance(entry, dict) or set(entry) != {"class", "pattern"}
                or entry["class"] not in MEDICATION_CLASSES
                or not isinstance(entry["pattern"], str) or not entry["pattern"]):
            raise UserError(f"medications.classes[{i}] in {path} needs class (one of "
                            f"{', '.join(MEDICATION_CLASSES)}) and pattern", EXIT_USAGE)
        try:
            re.compile(entry["pattern"])
        except re.error as exc:
            raise UserError(f"medications.classes[{i}].pattern in {path}: {exc}",
                            EXIT_USAGE) from exc
        classes.append((entry["class"], entry["pattern"]))
    return tuple(classes)


def _class_codes(section: dict[str, Any], path: Path) -> dict[str, str]:
    out = {}
    for code, cls in _table(section, "codes", "medications.codes", path).items():
        if cls not in MEDICATION_CLASSES:
            raise _bad(f"medications.codes.{code}", path,
                       f"must be one of {', '.join(MEDICATION_CLASSES)}")
        out[_one_code(out, code, cls, "medications.codes", path)] = cls
    return out


def _yes_no(section: dict[str, Any], path: Path) -> tuple[tuple[str, ...], tuple[str, ...]]:
    table = _table(section, "yes_no", "patients.yes_no", path)
    yes = tuple(s.strip().lower() for s in _text_list(table.get("yes", list(InputSpec.yes)),
                                                      "patients.yes_no.yes", path))
    no = tuple(s.strip().lower() for s in _text_list(table.get("no", list(InputSpec.no)),
                                                     "patients.yes_no.no", path))
    both = sorted(set(yes) & set(no))
    if both:
        raise _bad("patients.yes_no", path, f"lists '{both[0]}' as both yes and no")
    return yes, no


def _input_spec(kind: str, section: dict[str, Any], base_read: ReadOptions,
                path: Path) -> InputSpec:
    read = _read_options(_table(section, "read", f"{kind}.read", path), base_read, path,
                         f"{kind}.read.")
    columns = _columns(kind, section, path)
    values = _values(kind, section, path)
    if kind == "labs":
        codes = _lab_codes(section, path)
        return InputSpec(kind=kind, columns=columns, read=read, codes=codes,
                         default_units=_default_units(section, codes, path), values=values)
    if kind == "patients":
        yes, no = _yes_no(section, path)
        return InputSpec(kind=kind, columns=columns, read=read, values=values, yes=yes, no=no)
    return InputSpec(kind=kind, columns=columns, read=read, values=values,
                     classes=_classes(section, path), class_codes=_class_codes(section, path))


def _canonical_raw() -> dict[str, Any]:
    return _load_toml(FORMATS_DIR / f"{DEFAULT_FORMAT}.toml", "format")


def load_format(name_or_path: str | None = None) -> ExtractFormat:
    """Load and check an extract format; every input must map the required columns.

    A format need only describe labs: a missing ``[patients]`` or ``[medications]`` table,
    or a ``[medications]`` table without classes or codes, takes the canonical format's.
    """
    path = _resolve(name_or_path or DEFAULT_FORMAT, FORMATS_DIR, "format")
    raw = _load_toml(path, "format")
    _check_keys(raw, _FORMAT_LAYOUT, path)
    if not isinstance(raw.get("labs"), dict) or not raw["labs"].get("columns"):
        raise UserError(f"format {path} maps nothing: it needs a [labs.columns] table "
                        "(see docs/formats.md)", EXIT_USAGE)
    canonical = _canonical_raw()
    borrowed = False
    for kind in ("patients", "medications"):
        if kind not in raw:
            raw[kind], borrowed = canonical[kind], True
    meds = raw["medications"]
    if not meds.get("classes") and not meds.get("codes"):
        raw["medications"] = {**meds, "classes": canonical["medications"]["classes"]}
        borrowed = True
    base_read = _read_options(_table(raw, "read", "read", path), ReadOptions(), path, "read.")
    specs = {kind: _input_spec(kind, raw[kind] if kind in raw else {}, base_read, path)
             for kind in KINDS}
    if not specs["labs"].codes:
        raise UserError(f"format {path} maps no test codes ([labs.codes] is empty)", EXIT_USAGE)
    for kind, spec in specs.items():
        missing = [c for c in REQUIRED_COLUMNS[kind] if c not in spec.columns]
        if missing:
            raise UserError(f"format {path} does not map required {kind} column(s): "
                            f"{', '.join(missing)}", EXIT_USAGE)
    specs = {kind: dataclasses.replace(spec, others={other: specs[other].columns
                                                     for other in KINDS if other != kind})
             for kind, spec in specs.items()}
    name = raw.get("format", {}).get("name", path.stem)
    digest = hashlib.sha256(path.read_bytes())
    if borrowed:
        digest.update((FORMATS_DIR / f"{DEFAULT_FORMAT}.toml").read_bytes())
    return ExtractFormat(name=name, path=path, sha256=digest.hexdigest(), **specs)


def shipped_formats() -> list[str]:
    return sorted(p.stem for p in FORMATS_DIR.glob("*.toml"))
