"""Locks on run-directory folders: one writer at a time.

``retrieval train`` holds ``RUN_DIR/.lock`` for the whole run and ``retrieval index`` holds
``RUN_DIR/index/.lock`` for a build (:func:`hold_lock`, non-blocking: a second writer stops at
once with a one-line error naming the process that holds the folder); a commit of a versioned unit
holds ``.versions/.lock`` for the few renames it takes (:func:`wait_for_lock`, blocking).

The locks are POSIX advisory locks (``fcntl.flock``) on the lock file: the operating system
releases them when the holder exits, however it exits (a crash or ``kill -9`` included), so a lock
is never stale. The holder writes its process id, host and command into the file, for the error
message of the next writer, and removes the file when it lets go. Removing a lock file is safe
because a writer that locked a file must then find that same file at the lock's path (same inode),
or it tries again.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

from retrieval.errors import RetrievalError

__all__ = ["LOCK_NAME", "hold_lock", "wait_for_lock"]

LOCK_NAME = ".lock"


@contextlib.contextmanager
def hold_lock(folder: str | Path, what: str) -> Iterator[None]:
    """Hold ``folder/.lock`` (creating the folder) for ``what`` (e.g. "`retrieval train`"), or
    raise a one-line RetrievalError at once when another process holds it."""
    folder = Path(folder)
    path = folder / LOCK_NAME
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = _lock(path, blocking=False)
    except OSError as error:
        raise RetrievalError(f"cannot lock {folder} for writing: {error.strerror or error}") from error
    if fd is None:
        raise RetrievalError(f"{folder} is in use by {_holder(path)}; wait for it to finish, or use another folder "
                             f"(only one {what} at a time)")
    try:
        _write_holder(fd)
        yield
    finally:
        _release(path, fd)


@contextlib.contextmanager
def wait_for_lock(path: str | Path) -> Iterator[None]:
    """Hold the lock file ``path`` (its folder must exist), waiting for its holder if needed."""
    path = Path(path)
    fd = _lock(path, blocking=True)
    try:
        yield
    finally:
        _release(path, fd)


def _lock(path: Path, *, blocking: bool) -> int | None:
    """An open descriptor of ``path`` holding its lock; None when another process holds it."""
    import fcntl

    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if blocking else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:  # the previous holder removed it between our open and our lock
            same = False
        if same:
            return fd
        os.close(fd)


def _release(path: Path, fd: int) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)  # while still locked: a writer waiting on this file will find it gone and retry
    os.close(fd)


def _write_holder(fd: int) -> None:
    command = " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv else ""
    text = f"process {os.getpid()} on {socket.gethostname()}: {command}"[:500]
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)
        os.pwrite(fd, text.encode(errors="replace"), 0)


def _holder(path: Path) -> str:
    """Who holds the lock, as its holder wrote it ("another process" when it wrote nothing)."""
    try:
        text = path.read_text(errors="replace").strip()
    except OSError:
        text = ""
    text = "".join(c if c.isprintable() else "?" for c in text.splitlines()[0]) if text else ""
    return f"another process ({text})" if text else "another process"
