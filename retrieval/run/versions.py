"""Units: files of a run that belong together, committed in one atomic step.

Some files are only right together: ``config.json`` records the SHA-256 of ``model.safetensors``,
``index/gallery.json`` the checks of ``gallery.ann`` and ``embeddings.npy``. Renaming them into
place one by one leaves a window (a crash, a full disk, Ctrl-C) in which the new file of one sits
beside the old file of the other, and the run refuses to load until it is rebuilt. So a unit is
written as a version folder, and one rename makes it current:

    FOLDER/.versions/<id>/NAME           the unit's files, one folder per commit, flushed first
    FOLDER/.versions/current -> <id>     a symbolic link; replacing it (rename(2)) is the commit
    FOLDER/NAME -> .versions/current/NAME  each documented name, a fixed link through ``current``

Readers keep using the documented names (``RUN_DIR/config.json``, ``index/gallery.json``, ...);
the library resolves them all to one version folder (:func:`unit_paths`, :func:`read_unit`), so a
load never mixes two commits, and a load that meets a commit half-way retries on the new version.

Step by step (:func:`new_version`): under ``.versions/.lock``, remove versions that crashed
commits left; write the new version; flush its files and the folder; point a temporary link at it
and rename that over ``current`` (the commit point) and flush ``.versions``; make each documented
name the fixed link (once: after that they never change); remove the previous version. A failure
before the rename leaves the old version current; after it, the new one. Units written before
versions existed (plain files) keep loading as they are; their first commit converts them: from the
moment the first documented name is a link, the library reads the whole unit from ``current``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TypeVar

from retrieval.errors import RetrievalError
from retrieval.run.lock import LOCK_NAME, wait_for_lock
from retrieval.run.store import TMP_SUFFIX, fsync_dir, fsync_file

__all__ = ["CURRENT", "VERSIONS_DIR", "new_version", "read_unit", "unit_paths"]

VERSIONS_DIR = ".versions"
CURRENT = "current"

T = TypeVar("T")


@contextlib.contextmanager
def new_version(folder: str | Path, names: Iterable[str], *, keep: Iterable[str] = ()) -> Iterator[Path]:
    """A fresh version folder for the unit ``names`` of ``folder``: write the unit's files into it
    inside the ``with`` block; leaving the block without an error makes it the current version in
    one atomic step (see the module docstring). Each name in ``keep`` that the block did not write
    is carried over from the current unit (a hard link, or a copy). On an error the new folder is
    removed and the current version stays."""
    folder, names = Path(folder), tuple(names)
    versions = folder / VERSIONS_DIR
    committed = False
    try:
        versions.mkdir(parents=True, exist_ok=True)
        with wait_for_lock(versions / LOCK_NAME):
            _remove_stale_versions(versions)
            version = versions / f"{time.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(4)}"
            version.mkdir()
            try:
                yield version
                _carry_over(folder, names, version, keep)
                committed = _commit(folder, names, version)
            finally:
                if not committed and not _is_current(versions, version):
                    shutil.rmtree(version, ignore_errors=True)
            _remove_stale_versions(versions)
    except OSError as error:  # a write the machine refused: one line naming the folder
        if error.errno not in _WRITE_REFUSED:
            raise
        kept = "the new version is in place" if committed else "what it held is as it was"
        raise RetrievalError(f"cannot write {folder}: {error.strerror}; {kept}") from error


#: what the machine answers when it will not take a write: no space, over quota, a read-only file
#: system, a file too large
_WRITE_REFUSED = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG})


def unit_paths(folder: str | Path, names: Iterable[str]) -> dict[str, Path | None]:
    """Where each of a unit's documented names is read from now: the files of one version folder
    when any of the names links into ``.versions/``, else the plain files; None for a name that
    does not exist. A name removed by hand reads as missing."""
    folder = Path(folder)
    versions = os.path.realpath(folder / VERSIONS_DIR)
    for _ in range(5):
        resolved = {name: os.path.realpath(folder / name) for name in names}
        inside = {os.path.dirname(path) for path in resolved.values() if os.path.dirname(os.path.dirname(path)) == versions}
        if len(inside) <= 1:
            break  # more than one: a commit moved ``current`` between two names; resolve again
    else:
        raise RetrievalError(f"{folder}: its files keep changing while being read (another process commits); try again")
    version = Path(inside.pop()) if inside else None
    return {name: None if not os.path.lexists(folder / name) else (version / name if version else Path(path))
            for name, path in resolved.items()}


def read_unit(folder: str | Path, names: Iterable[str], read: Callable[[dict[str, Path | None]], T]) -> T:
    """``read(unit_paths(folder, names))``, once more on the new version when it fails because a
    commit replaced the unit while it was being read (its old version is removed by the commit)."""
    names = tuple(names)
    paths = unit_paths(folder, names)
    for attempt in range(3):
        try:
            return read(paths)
        except (OSError, RetrievalError):
            again = unit_paths(folder, names)
            if again == paths or attempt == 2:
                raise
            paths = again
    raise AssertionError("unreachable")


# ----------------------------------------------------------------------------- the commit


def _commit(folder: Path, names: tuple[str, ...], version: Path) -> bool:
    """Flush the version, make it current (one rename), then make the documented names its links."""
    versions = version.parent
    for path in version.iterdir():
        fsync_file(path)
    fsync_dir(version)
    link = versions / f".{CURRENT}.{secrets.token_hex(4)}{TMP_SUFFIX}"
    os.symlink(version.name, link)
    current = versions / CURRENT
    if current.is_dir() and not current.is_symlink():  # a copy that followed the links: set it aside
        os.replace(current, versions / f"copied-{secrets.token_hex(4)}")
    os.replace(link, current)  # the commit point
    fsync_dir(versions)
    for name in names:
        _link_documented_name(folder, name)
    fsync_dir(folder)
    return True


def _link_documented_name(folder: Path, name: str) -> None:
    """``FOLDER/NAME -> .versions/current/NAME`` (already so after the first commit)."""
    path, target = folder / name, f"{VERSIONS_DIR}/{CURRENT}/{name}"
    if path.is_symlink() and os.readlink(path) == target:
        return
    if path.is_dir() and not path.is_symlink():
        raise RetrievalError(f"{path} is a folder; a file of that name belongs there")
    link = folder / f".{name}.{secrets.token_hex(4)}{TMP_SUFFIX}"
    os.symlink(target, link)
    os.replace(link, path)


def _carry_over(folder: Path, names: tuple[str, ...], version: Path, keep: Iterable[str]) -> None:
    """The kept names (some of ``names``) that the new version lacks, from the current unit."""
    current = unit_paths(folder, names)
    for name in keep:
        source = current[name]
        if (version / name).exists() or source is None or not source.is_file():
            continue
        try:
            os.link(source, version / name)
        except OSError:  # a file system without hard links
            shutil.copy2(source, version / name)


def _is_current(versions: Path, version: Path) -> bool:
    current = versions / CURRENT
    return current.is_symlink() and os.readlink(current) == version.name


def _remove_stale_versions(versions: Path) -> None:
    """Everything in ``.versions/`` but the lock, ``current`` and its version: what failed or
    crashed commits left, and the version the last commit replaced."""
    current = versions / CURRENT
    keep = {LOCK_NAME, CURRENT}
    if current.is_symlink():
        keep.add(os.readlink(current))
    for entry in versions.iterdir():
        if entry.name in keep:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                entry.unlink()
