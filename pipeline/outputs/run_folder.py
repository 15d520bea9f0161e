"""Where a run writes: an output folder that can never destroy or mislead.

A run replaces its folder only when the folder is missing, empty, or an earlier b12screen
run (or validate) folder: one whose ``manifest.json`` is b12screen's and lists every file
in it. Anything else (a folder of notes, the current folder, a folder holding an input, a
reports root, a file) stops the run before any input is read, and nothing is deleted.

Outputs are written into ``.NAME.tmp-PID`` beside the folder, marked as ours, and swapped
into place in one rename, so a run killed at any moment leaves the previous folder whole.
The next run in the same place removes the temporary folders of runs that are no longer
alive. Folders are created owner-only whatever the umask: the outputs are patient-level.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import glob
import os
import re
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path

from pipeline.errors import UserError
from pipeline.run_record import MANIFEST, is_run_folder, read_manifest, unlisted

__all__ = [
    "MANIFEST",
    "MARKER",
    "check_out",
    "check_previous",
    "check_root",
    "clean_stale",
    "files_of",
    "input_paths",
    "is_run_folder",
    "is_temporary",
    "make_folders",
    "read_manifest",
    "remove_staging",
    "replacing",
    "restrict",
    "staging_folder",
]

#: A file inside a temporary folder while it is written: the folder is ours to delete.
MARKER = ".b12screen-incomplete"
#: ``.NAME.tmp-PID`` (being written) and ``.NAME.old-PID`` (a previous run set aside).
_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.(?P<kind>tmp|old)-(?P<pid>\d+)$")
_GLOB_CHARS = "*?["
_SHOWN = 3  # names quoted in a message before "…"


# ----------------------------------------------------------------------------- recognising


def is_temporary(folder: Path) -> bool:
    """A dot-folder (our temporary and set-aside folders among them): never a run."""
    return Path(folder).name.startswith(".")


def files_of(folder: Path) -> list[Path]:
    """Every file written into a (temporary) run folder, for its manifest: the marker is
    not an output."""
    return sorted(p for p in Path(folder).rglob("*") if p.is_file() and p.name != MARKER)


# ----------------------------------------------------------------------------- checking


def _shown(names: list[str]) -> str:
    more = ", …" if len(names) > _SHOWN else ""
    return ", ".join(names[:_SHOWN]) + more


def input_paths(*specs: str | Path | None) -> list[Path]:
    """The absolute paths an input names: a file or folder, or a glob's base folder and its
    matches (``**`` globs reach into subfolders, so their base folder counts whole)."""
    paths: list[Path] = []
    for spec in specs:
        if spec is None or str(spec) == "":
            continue
        text = str(spec)
        if Path(text).exists():
            paths.append(Path(text).resolve())
        elif any(ch in text for ch in _GLOB_CHARS):
            paths += [Path(p).resolve() for p in glob.glob(text, recursive=True)]
            parts = Path(text).parts
            cut = next(i for i, part in enumerate(parts) if any(c in part for c in _GLOB_CHARS))
            if "**" in text:
                paths.append(Path(*parts[:cut]).resolve() if cut else Path.cwd().resolve())
    return paths


def _first_existing(path: Path) -> Path:
    return next(p for p in (path, *path.parents) if p.exists() or p.is_symlink())


def _contents_problem(target: Path, text: str, option: str) -> str | None:
    """Why the existing folder ``target`` may not be replaced, or None."""
    try:
        entries = sorted(target.iterdir())
    except OSError as exc:
        return f"cannot read {option} {text}: {_reason(exc)}"
    if not entries or is_run_folder(target):
        return None
    runs = [e.name for e in entries if e.is_dir() and not is_temporary(e)
            and read_manifest(e) is not None]
    if runs:
        return (f"{option} {text} holds earlier run folders ({_shown(runs)}); give this run "
                f"its own folder inside it, such as {Path(text) / 'YYYY-MM'}")
    others = unlisted(target, read_manifest(target))
    return (f"{option} {text} holds files that are not from a b12screen run "
            f"({_shown(others)}); choose an empty or new folder")


def check_out(text: str, inputs: Iterable[Path] = (), option: str = "--out") -> Path:
    """The output folder named by ``text``, once it is certain that writing there destroys
    nothing but an earlier run; raises a one-line ``UserError`` otherwise. Reads no input
    and writes nothing, so it runs first."""
    if not str(text).strip():
        raise UserError(f"{option} is empty (an unset variable?); give a folder for this run")
    path = Path(text)
    target = path.resolve()
    cwd = Path.cwd().resolve()
    if target == cwd or cwd.is_relative_to(target):
        raise UserError(f"{option} {text} is the current folder or holds it; choose an empty "
                        "or new folder")
    for source in inputs:
        if source == target or source.is_relative_to(target):
            raise UserError(f"{option} {text} holds the input {source}; choose an empty or "
                            "new folder away from the inputs")
        if target.is_relative_to(source):
            raise UserError(f"{option} {text} is inside the input {source}; choose a folder "
                            "away from the inputs")
    if target.exists() and not target.is_dir():
        raise UserError(f"{option} {text} is a file, not a folder; choose an empty or new "
                        "folder")
    existing = _first_existing(target)
    if existing != target and not existing.is_dir():
        raise UserError(f"{option} {text} is under {existing}, which is a file, not a folder")
    if existing == target:
        problem = _contents_problem(target, text, option)
        if problem:
            raise UserError(problem)
    elif not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"cannot write {option} {text}: {existing} is "
                        f"{'a read-only file system' if _read_only(existing) else 'not writable'}")
    return path


def check_root(root: Path, inputs: Iterable[Path] = ()) -> None:
    """Before the as-of month (and so the default run folder) is known: the reports root
    must be, or be creatable as, a writable folder away from the inputs."""
    target = Path(root).resolve()
    for source in inputs:
        if source == target or source.is_relative_to(target) or target.is_relative_to(source):
            raise UserError(f"the reports folder {root} and the input {source} overlap; "
                            "give --out away from the inputs")
    existing = _first_existing(target)
    if not existing.is_dir():
        raise UserError(f"the reports folder {root} would be under {existing}, which is a "
                        "file; give --out")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"cannot write the reports folder {root}: {existing} is "
                        f"{'a read-only file system' if _read_only(existing) else 'not writable'}")


def _read_only(path: Path) -> bool:
    with contextlib.suppress(OSError):
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    return False


def check_previous(path: Path | str) -> Path:
    """``--previous`` must be an earlier run folder: anything else would silently mark
    every worklist row ``new``."""
    folder = Path(path)
    manifest = read_manifest(folder) if folder.is_dir() else None
    if manifest is None or manifest.get("kind", "run") != "run" or is_temporary(folder.resolve()):
        what = ("not found" if not folder.exists() else "not a folder" if not folder.is_dir()
                else "not a b12screen run folder (no run manifest.json)")
        raise UserError(f"--previous {path} is {what}; give an earlier run folder, or leave "
                        "--previous out to use the latest earlier run beside --out")
    return folder


# ----------------------------------------------------------------------------- writing


def make_folders(folder: Path) -> list[Path]:
    """Create ``folder`` and its missing parents owner-only (0700 whatever the umask: a
    reports root holds patient-level runs); returns those created, outermost first."""
    missing = [p for p in (folder, *folder.parents) if not (p.exists() or p.is_symlink())]
    created: list[Path] = []
    for path in reversed(missing):
        path.mkdir(mode=0o700)
        os.chmod(path, 0o700)
        created.append(path)
    return created


def _unmake(created: list[Path]) -> None:
    """Remove the folders ``make_folders`` created, if still empty."""
    for path in reversed(created):
        with contextlib.suppress(OSError):
            path.rmdir()


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True
    return True


def _ours(folder: Path) -> bool:
    """A temporary folder we may delete: marked, empty, or a whole run folder."""
    if folder.is_symlink() or not folder.is_dir():
        return False
    return (folder / MARKER).is_file() or not any(folder.iterdir()) or is_run_folder(folder)


def _remove(folder: Path) -> None:
    """Delete a folder of ours, its marker last: a deletion cut short stays recognisable."""
    for child in folder.iterdir():
        if child.name == MARKER:
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()
    (folder / MARKER).unlink(missing_ok=True)
    folder.rmdir()


def clean_stale(parent: Path) -> None:
    """Remove the temporary folders that runs no longer alive left in ``parent``; a
    previous run set aside by a run killed before its new folder was in place goes back."""
    try:
        entries = sorted(parent.iterdir())
    except OSError:
        return
    for entry in entries:
        match = _TEMPORARY.match(entry.name)
        if not match or _alive(int(match["pid"])) or not _ours(entry):
            continue
        home = parent / match["name"]
        with contextlib.suppress(OSError):
            if match["kind"] == "old" and not home.exists() and is_run_folder(entry):
                entry.rename(home)
            else:
                _remove(entry)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two folders in one step (Linux ``renameat2``); False where it is unavailable."""
    try:
        rename = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError, TypeError):
        return False
    rename.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                       ctypes.c_uint]
    at_cwd, exchange = -100, 2
    if rename(at_cwd, os.fsencode(a), at_cwd, os.fsencode(b), exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(b))


def _reason(exc: OSError) -> str:
    text = os.strerror(exc.errno) if exc.errno else (exc.strerror or str(exc))
    return text[:1].lower() + text[1:]


def write_error(exc: OSError, parent: Path, what: str = "run folder") -> UserError:
    """The one line for a write that the environment refused (disk full, read-only...)."""
    return UserError(f"cannot write the {what} in {parent}: {_reason(exc)}")


def _swap_in(tmp: Path, target: Path, text: str) -> None:
    """Put the finished ``tmp`` at ``target``; an earlier run there is deleted only once
    the new folder is in place."""
    if target.exists() or target.is_symlink():
        if not target.is_dir() or target.is_symlink():
            raise UserError(f"--out {text} is no longer a folder; nothing was replaced")
        problem = _contents_problem(target, text, "--out")
        if problem:
            raise UserError(problem)
    (tmp / MARKER).unlink()
    if not target.exists():
        tmp.rename(target)
        return
    if _exchange(tmp, target):
        aside = tmp
    else:
        aside = target.parent / f".{target.name}.old-{os.getpid()}"
        target.rename(aside)
        try:
            tmp.rename(target)
        except BaseException:
            with contextlib.suppress(OSError):
                aside.rename(target)
            raise
    with contextlib.suppress(OSError):
        (aside / MARKER).touch()
        _remove(aside)


@contextlib.contextmanager
def replacing(out: Path, what: str = "run folder") -> Iterator[Path]:
    """Yield a private temporary folder beside ``out``; on success it replaces ``out``.

    On any failure (an exception, Ctrl-C) the temporary folder and any parent folders made
    for it are removed; a write the environment refuses (disk full, read-only, not a
    folder) becomes one ``UserError`` line.
    """
    text = str(out)
    target = Path(out).resolve()
    parent = target.parent
    tmp = parent / f".{target.name}.tmp-{os.getpid()}"
    created = _private_folder(tmp, what)
    try:
        yield tmp
        _swap_in(tmp, target, text)
    except BaseException as exc:
        if tmp.is_dir():
            with contextlib.suppress(OSError):
                (tmp / MARKER).touch()
            with contextlib.suppress(OSError):
                _remove(tmp)
        _unmake(created)
        if isinstance(exc, OSError):
            raise write_error(exc, parent, what) from exc
        raise


def staging_folder(out: Path) -> tuple[Path, list[Path]]:
    """A private folder beside ``out`` (``.NAME.parts.tmp-PID``, marked as ours) where the
    workers write the partitioned tables before the run folder is assembled; returns it
    and the parent folders made for it. A run that dies leaves a temporary folder that no
    later run mistakes for a run, and the next run in the same place removes it."""
    target = Path(out).resolve()
    folder = target.parent / f".{target.name}.parts.tmp-{os.getpid()}"
    return folder, _private_folder(folder)


def _private_folder(folder: Path, what: str = "run folder") -> list[Path]:
    """Make ``folder`` anew, owner-only and marked as ours (an earlier one of ours at the
    same place is removed, and stale ones beside it); returns the parent folders made for
    it. A write the environment refuses becomes one ``UserError`` line, and the parents
    made are removed."""
    parent = folder.parent
    created: list[Path] = []
    try:
        created = make_folders(parent)
        clean_stale(parent)
        if folder.exists() and _ours(folder):
            _remove(folder)
        folder.mkdir(mode=0o700)
        os.chmod(folder, 0o700)
        (folder / MARKER).touch()
    except OSError as exc:
        _unmake(created)
        raise write_error(exc, parent, what) from exc
    return created


def remove_staging(folder: Path, created: list[Path]) -> None:
    """Remove a staging folder (whatever is left in it) and the parents made for it."""
    with contextlib.suppress(OSError):
        if folder.is_dir() and _ours(folder):
            _remove(folder)
    _unmake(created)


def restrict(folder: Path, shareable: set[str]) -> None:
    """Owner-only patient-level files; shareable aggregates readable by the group too."""
    os.chmod(folder, 0o700)
    for path in Path(folder).rglob("*"):
        if path.is_dir():
            os.chmod(path, 0o700)
        elif path.name != MARKER:
            os.chmod(path, 0o640 if path.name in shareable else 0o600)
