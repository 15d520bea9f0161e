"""Rules profiles and extract formats: TOML files that hold every number and mapping.

Profiles (``configs/rules/*.toml``) may ``extends`` another profile and give only what
differs; a ``[sites]`` table maps a performing lab's ``site_id`` to another profile so its
method-specific cut-offs apply to that lab's results. Unknown keys are rejected with the
key and file named, because a misspelt threshold silently ignored is a clinical error.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import tomllib
from dataclasses import dataclass, field
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
    """A bare name means a shipped file; anything else is a path."""
    candidate = Path(name_or_path)
    if candidate.suffix == ".toml" or candidate.exists() or "/" in name_or_path:
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


def _check_keys(data: dict[str, Any], allowed: dict[str, Any], path: Path, prefix: str = "") -> None:
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
    _check_keys(raw, allowed, path)
    parent = raw.get("profile", {}).get("extends")
    if parent:
        base = _load_profile_data(_resolve(parent, RULES_DIR, "rules profile"),
                                  (*seen, path.resolve()))
    elif path.resolve() == (RULES_DIR / f"{DEFAULT_RULES}.toml").resolve():
        base = {}
    else:
        base = reference
    merged = _merge(base, raw)
    merged.get("profile", {}).pop("extends", None)
    return merged


def load_rules(name_or_path: str | None = None, _site_of: str | None = None) -> RulesProfile:
    """Load a profile by shipped name or path, with its site profiles."""
    path = _resolve(name_or_path or DEFAULT_RULES, RULES_DIR, "rules profile")
    data = _load_profile_data(path, ())
    _validate_rules(data, path)
    sites: dict[str, RulesProfile] = {}
    if _site_of is None:
        for site_id, target in sorted(data.get("sites", {}).items()):
            if not isinstance(target, str):
                raise UserError(f"sites.{site_id} in {path} must name a profile", EXIT_USAGE)
            sites[str(site_id)] = load_rules(target, _site_of=str(site_id))
    data = {k: v for k, v in data.items() if k != "sites"}
    return RulesProfile(name=data["profile"]["name"], path=path, data=data, sites=sites)


def _validate_rules(data: dict[str, Any], path: Path) -> None:
    r1, r2 = data["rules"]["R1"], data["rules"]["R2"]
    for rid, sec in (("R1", r1), ("R2", r2)):
        if not sec["deficient_below"] <= sec["unlikely_above"]:
            raise UserError(f"rules.{rid}: deficient_below must not exceed unlikely_above"
                            f" in {path}", EXIT_USAGE)
    for key, value in data["harmonise"].items():
        if isinstance(value, int | float) and value < 0:
            raise UserError(f"harmonise.{key} must not be negative in {path}", EXIT_USAGE)


def shipped_profiles() -> list[str]:
    return sorted(p.stem for p in RULES_DIR.glob("*.toml"))


# --------------------------------------------------------------------------- extract formats

_READ_KEYS: dict[str, Any] = {
    "delimiter": "", "encoding": "", "day_first": None, "decimal_comma": None,
    "missing_values": None, "datetime_formats": None,
}
_FORMAT_LAYOUT: dict[str, Any] = {
    "format": {"name": "", "title": "", "description": "", "source": ""},
    "read": _READ_KEYS,
    "labs": {"columns": None, "codes": None, "default_units": None, "values": None,
             "read": _READ_KEYS},
    "patients": {"columns": None, "yes_no": {"yes": None, "no": None}, "values": None,
                 "read": _READ_KEYS},
    "medications": {"columns": None, "classes": None, "codes": None, "values": None,
                    "read": _READ_KEYS},
}

CANONICAL_COLUMNS: dict[str, tuple[str, ...]] = {
    "labs": ("patient_id", "collected_at", "test_code", "result", "unit", "practice_id",
             "site_id", "specimen_id", "censor"),
    "patients": ("patient_id", "birth_date", "birth_year", "age_years", "sex", "practice_id",
                 "diet", "autoimmune_gastritis", "bariatric_surgery", "crohns_disease",
                 "neurological_symptoms", "pregnant", "ileal_resection_cm"),
    "medications": ("patient_id", "medication", "start_date", "end_date", "dose_mg_per_day"),
}
REQUIRED_COLUMNS: dict[str, tuple[str, ...]] = {
    "labs": ("patient_id", "collected_at", "test_code", "result"),
    "patients": ("patient_id",),
    "medications": ("patient_id", "medication", "start_date"),
}


@dataclass(frozen=True)
class ReadOptions:
    delimiter: str = "auto"
    encoding: str = "auto"
    day_first: bool = False
    decimal_comma: bool = False
    missing_values: tuple[str, ...] = ("", "NULL", "null", "N/A", "n/a", "NA", "-", "None")
    datetime_formats: tuple[str, ...] = ()


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


def _read_options(section: dict[str, Any], base: ReadOptions, path: Path) -> ReadOptions:
    opts = dict(base.__dict__)
    for key, value in section.items():
        if key in ("missing_values", "datetime_formats"):
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise UserError(f"read.{key} in {path} must be a list of text", EXIT_USAGE)
            value = tuple(value)
        elif key in ("day_first", "decimal_comma") and not isinstance(value, bool):
            raise UserError(f"read.{key} in {path} must be true or false", EXIT_USAGE)
        elif key == "delimiter" and value not in ("auto", ",", ";", "\t", "|"):
            raise UserError(f"read.delimiter in {path} must be auto , ; tab or |", EXIT_USAGE)
        opts[key] = value
    return ReadOptions(**opts)


def _input_spec(kind: str, section: dict[str, Any], base_read: ReadOptions,
                path: Path) -> InputSpec:
    read = _read_options(section.get("read", {}), base_read, path)
    columns: dict[str, tuple[str, ...]] = {}
    for canon, source in section.get("columns", {}).items():
        if canon not in CANONICAL_COLUMNS[kind]:
            known = ", ".join(CANONICAL_COLUMNS[kind])
            raise UserError(f"unknown key '{kind}.columns.{canon}' in {path} "
                            f"(canonical columns: {known})", EXIT_USAGE)
        sources = (source,) if isinstance(source, str) else tuple(source)
        if not sources or not all(isinstance(s, str) and s for s in sources):
            raise UserError(f"{kind}.columns.{canon} in {path} must name a column", EXIT_USAGE)
        columns[canon] = sources
    codes = {}
    for code, analyte in section.get("codes", {}).items():
        if analyte not in ANALYTES:
            raise UserError(f"{kind}.codes.{code} in {path}: '{analyte}' is not an analyte "
                            f"({', '.join(ANALYTES)})", EXIT_USAGE)
        codes[str(code).strip().upper()] = analyte
    values = {}
    for column, mapping in section.get("values", {}).items():
        if column not in CANONICAL_COLUMNS[kind] or not isinstance(mapping, dict):
            raise UserError(f"unknown key '{kind}.values.{column}' in {path}", EXIT_USAGE)
        values[column] = {str(k): str(v) for k, v in mapping.items()}
    classes = []
    for i, entry in enumerate(section.get("classes", [])):
        if (not isinstance(entry, dict) or set(entry) != {"class", "pattern"}
                or entry["class"] not in MEDICATION_CLASSES):
            raise UserError(f"{kind}.classes[{i}] in {path} needs class (one of "
                            f"{', '.join(MEDICATION_CLASSES)}) and pattern", EXIT_USAGE)
        try:
            re.compile(entry["pattern"])
        except re.error as exc:
            raise UserError(f"{kind}.classes[{i}].pattern in {path}: {exc}", EXIT_USAGE) from exc
        classes.append((entry["class"], entry["pattern"]))
    class_codes = {}
    for code, cls in section.get("codes", {}).items() if kind == "medications" else ():
        if cls not in MEDICATION_CLASSES:
            raise UserError(f"medications.codes.{code} in {path}: unknown class '{cls}'",
                            EXIT_USAGE)
        class_codes[str(code).strip().upper()] = cls
    yes_no = section.get("yes_no", {})
    return InputSpec(
        kind=kind, columns=columns, read=read,
        codes=codes if kind == "labs" else {},
        default_units={str(k).strip().upper(): v for k, v in
                       section.get("default_units", {}).items()},
        values=values,
        yes=tuple(s.lower() for s in yes_no.get("yes", InputSpec.yes)),
        no=tuple(s.lower() for s in yes_no.get("no", InputSpec.no)),
        classes=tuple(classes), class_codes=class_codes,
    )


def load_format(name_or_path: str | None = None) -> ExtractFormat:
    """Load and check an extract format; every input must map the required columns."""
    path = _resolve(name_or_path or DEFAULT_FORMAT, FORMATS_DIR, "format")
    raw = _load_toml(path, "format")
    _check_keys(raw, _FORMAT_LAYOUT, path)
    base_read = _read_options(raw.get("read", {}), ReadOptions(), path)
    specs = {kind: _input_spec(kind, raw.get(kind, {}), base_read, path)
             for kind in ("labs", "patients", "medications")}
    if not specs["labs"].codes:
        raise UserError(f"format {path} maps no test codes ([labs.codes] is empty)", EXIT_USAGE)
    if not specs["medications"].classes and not specs["medications"].class_codes:
        raise UserError(f"format {path} maps no medication classes", EXIT_USAGE)
    for kind, spec in specs.items():
        missing = [c for c in REQUIRED_COLUMNS[kind] if c not in spec.columns]
        if missing:
            raise UserError(f"format {path} does not map required {kind} column(s): "
                            f"{', '.join(missing)}", EXIT_USAGE)
    name = raw.get("format", {}).get("name", path.stem)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return ExtractFormat(name=name, path=path, sha256=digest, **specs)


def shipped_formats() -> list[str]:
    return sorted(p.stem for p in FORMATS_DIR.glob("*.toml"))
