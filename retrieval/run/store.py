"""Atomic writes and careful reads of run-directory files.

Every file of a run is written to a temporary name in its folder, flushed to disk and renamed, so
a reader (or a run interrupted half-way) sees the old file or the new one, never half of one.
Reads turn a missing or corrupt file into a one-line :class:`~retrieval.errors.RetrievalError`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from retrieval.errors import RetrievalError

__all__ = ["read_json", "sha256_file", "write_atomic", "write_json", "write_jsonl"]


def write_atomic(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename,
    so a reader sees the old file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_json(path: str | Path, value: Any, *, indent: int | None = None, sort_keys: bool = False) -> None:
    """``value`` as JSON (a trailing newline when indented), written atomically."""
    text = json.dumps(value, indent=indent, sort_keys=sort_keys)
    write_atomic(path, (text + "\n" if indent is not None else text).encode())


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
