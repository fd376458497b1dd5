"""Local stand-ins for torchrun, for the tests and ``tests/ddp_check.py``: start N processes on this
host with the environment torchrun would give them (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` …),
and find a free TCP port (for ``MASTER_PORT`` or a local app server). Not part of the library."""

from __future__ import annotations

import os
import socket
import time
import traceback
from typing import Any, Callable

import torch

def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (for MASTER_PORT or a local server)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def torchrun_environment(rank: int, world_size: int, port: int) -> dict[str, str]:
    """The variables torchrun sets for process ``rank`` of ``world_size`` on one host."""
    return {
        "RANK": str(rank), "WORLD_SIZE": str(world_size), "LOCAL_RANK": str(rank),
        "LOCAL_WORLD_SIZE": str(world_size), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
    }


def run_local_processes(
    target: Callable[..., Any], *args: Any, world_size: int = 2, timeout: float = 120.0,
    environment: dict[str, str] | None = None, threads: int | None = None,
) -> list[int | None]:
    """Run ``target(rank, *args)`` in ``world_size`` spawned processes with the environment
    torchrun would give them (plus ``environment``; ``threads`` sets torch's thread count), as
    ``tests/test_distributed.py`` and ``tests/ddp_check.py`` do without torchrun. ``target`` must be importable
    by name (a module-level function). Returns the exit codes; a process still running after
    ``timeout`` seconds is killed and reported as ``None``. A target that raises prints its
    traceback and exits non-zero."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    port = free_port()
    processes = [
        context.Process(target=_run_as_rank, args=(rank, world_size, port, dict(environment or {}), threads, target, args))
        for rank in range(world_size)
    ]
    for process in processes:
        process.start()
    deadline = time.monotonic() + timeout
    for process in processes:
        process.join(max(0.1, deadline - time.monotonic()))
    codes: list[int | None] = []
    for process in processes:
        if process.is_alive():
            process.kill()
            process.join()
            codes.append(None)
        else:
            codes.append(process.exitcode)
    return codes


def _run_as_rank(rank: int, world_size: int, port: int, environment: dict[str, str], threads: int | None,
                 target: Callable[..., Any], args: tuple) -> None:
    import faulthandler

    faulthandler.enable()  # a native crash (gloo's abort) prints the Python stack it happened under
    os.environ.update({**torchrun_environment(rank, world_size, port), **environment})
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        target(rank, *args)
    except BaseException:
        traceback.print_exc()
        raise
