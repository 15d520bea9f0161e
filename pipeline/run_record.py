"""What makes a folder a b12screen run (or validate) folder: its manifest, b12screen's by
its key, listing every entry. The writer replaces only such a folder (``--out``); the reader
never reads one inside an input folder as input (a run written beside its labs)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["MANIFEST", "MANIFEST_KEY", "is_run_folder", "read_manifest", "unlisted"]

MANIFEST = "manifest.json"
#: The key that makes a manifest b12screen's (every version has written it).
MANIFEST_KEY = "b12screen_version"


def read_manifest(folder: Path) -> dict[str, Any] | None:
    """The folder's b12screen manifest, or None (missing, unreadable or not ours)."""
    try:
        data = json.loads((Path(folder) / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or MANIFEST_KEY not in data:
        return None
    return data


def unlisted(folder: Path, manifest: dict[str, Any] | None) -> list[str]:
    """Entries of ``folder`` that its manifest does not list (all of them without one),
    as relative paths; a listed file's folders count as listed. Symlinks never count:
    b12screen writes none."""
    outputs = (manifest or {}).get("outputs")
    listed = {str(p) for p in outputs} if isinstance(outputs, dict | list) else set()
    if manifest is not None:
        listed.add(MANIFEST)
    parents = {p.rsplit("/", i)[0] for p in listed for i in range(1, p.count("/") + 1)}
    found: list[str] = []
    for root, dirs, files in os.walk(folder):
        base = Path(root).relative_to(folder).as_posix()
        prefix = "" if base == "." else f"{base}/"
        inside = [d for d in sorted(dirs)
                  if f"{prefix}{d}" in parents and not (Path(root) / d).is_symlink()]
        found += [f"{prefix}{d}" for d in sorted(dirs) if d not in inside]
        found += [f"{prefix}{n}" for n in sorted(files)
                  if f"{prefix}{n}" not in listed or (Path(root) / n).is_symlink()]
        dirs[:] = inside
    return sorted(found)


def is_run_folder(folder: Path) -> bool:
    """An earlier run's (or validate's) folder: b12screen's manifest listing every entry."""
    folder = Path(folder)
    if folder.is_symlink() or not folder.is_dir():
        return False
    manifest = read_manifest(folder)
    return manifest is not None and not unlisted(folder, manifest)
