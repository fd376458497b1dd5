"""Atomic writes and careful reads of run-directory files.

Every file of a run is written to a temporary name in its folder (``.NAME.<random>.tmp``), flushed
to disk and renamed, and then the folder itself is flushed, so a reader (or a run interrupted
half-way, or a power cut) sees the old file or the new one, never half of one. Files are created
with mode 0666 less the process's umask, as ``open()`` creates them (not 0600, as
``tempfile.mkstemp`` would). Temporaries left by a killed writer are removed by
:func:`remove_stale_temporaries`, which training calls under its lock. Reads turn a missing or
corrupt file into a one-line :class:`~retrieval.errors.RetrievalError`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
from pathlib import Path
from typing import Any

from retrieval.errors import RetrievalError

__all__ = [
    "fsync_dir", "fsync_file", "json_bytes", "read_json", "remove_stale_temporaries", "sha256_file", "write_atomic", "write_json",
    "write_jsonl",
]

#: the suffix of every temporary file this module writes (``.NAME.<random>.tmp``)
TMP_SUFFIX = ".tmp"


def write_atomic(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename,
    so a reader sees the old file or the new one, never half of one; the file and then the
    folder are flushed to disk (fsync), so the rename survives a power cut too. A write the machine
    refuses (a full disk, a read-only folder, permissions) is a one-line RetrievalError naming
    ``path``; the file is then as it was before."""
    path = Path(path)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}{TMP_SUFFIX}"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # O_EXCL: a fresh file; mode 0o666 less the umask, as any file the user's tools create
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
    except OSError as error:
        raise RetrievalError(f"cannot write {path}: {error.strerror or error}") from error
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(error, OSError):
            raise RetrievalError(f"cannot write {path}: {error.strerror or error}; it is as it was") from error
        raise
    fsync_dir(path.parent)


def write_json(path: str | Path, value: Any, *, indent: int | None = None, sort_keys: bool = False) -> None:
    """``value`` as JSON (a trailing newline when indented), written atomically."""
    write_atomic(path, json_bytes(value, indent=indent, sort_keys=sort_keys))


def json_bytes(value: Any, *, indent: int | None = None, sort_keys: bool = False) -> bytes:
    """``value`` as the bytes :func:`write_json` writes."""
    text = json.dumps(value, indent=indent, sort_keys=sort_keys)
    return (text + "\n" if indent is not None else text).encode()


def write_jsonl(path: str | Path, rows: list[dict[str, Any]]) -> None:
    """One JSON object a line, written atomically."""
    write_atomic(path, "".join(json.dumps(row) + "\n" for row in rows).encode())


def read_json(path: str | Path) -> Any:
    """The JSON value in ``path``; RetrievalError naming the file when it is not valid JSON."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise RetrievalError(f"{path}: corrupt JSON ({error})") from error


def sha256_file(path: str | Path) -> str:
    """The SHA-256 of a file's bytes, as hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fsync_file(path: str | Path) -> None:
    """Flush a file's data to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str | Path) -> None:
    """Flush a folder's entries (the renames and creations in it) to disk."""
    fsync_file(path)


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Remove the ``.NAME.<random>.tmp`` files that killed writers left in ``folder``; the
    caller holds the folder's lock, so no writer is running. Returns the removed paths."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for path in folder.glob(f".*{TMP_SUFFIX}"):
        if path.is_file() and not path.is_symlink():
            with contextlib.suppress(OSError):
                path.unlink()
                removed.append(path)
    return removed
