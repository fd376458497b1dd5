"""The ``retrieval`` command line: thin typer commands that parse, call the library and print.

Every command has ``--help``. A :class:`~retrieval.errors.RetrievalError` (bad input) is printed
as one line on stderr with exit status 2; commands that report numbers take ``--json`` and then
print exactly one JSON object on stdout.

The commands live in modules by what they do (:mod:`~retrieval.cli.training`,
:mod:`~retrieval.cli.assess`, :mod:`~retrieval.cli.gallery`, :mod:`~retrieval.cli.inspect`,
:mod:`~retrieval.cli.serve`); each registers itself on the one typer ``app``.
"""

from __future__ import annotations

import os
import signal
import sys

import typer

from retrieval.cli import training, assess, gallery, inspect, serve  # noqa: F401,I001  (each registers its commands, in --help order)
from retrieval.cli.common import app
from retrieval.errors import LostProcesses, RetrievalError
from retrieval.safe_text import printable

__all__ = ["INTERRUPTED", "app", "main"]

#: the exit status typer gives a command stopped by Ctrl-C (128 + SIGINT, as a shell reports it)
INTERRUPTED = 130


def _click_exceptions():
    """click's exception classes as typer raises them: its own copy of click (newer typer) or click."""
    try:
        from typer._click import exceptions
    except ImportError:
        from click import exceptions
    return exceptions


def main() -> None:
    """Console-script entry point: run the typer app, turning user errors into one line: a
    RetrievalError, and a flag or argument that click refuses (missing, unknown, out of range),
    each as ``error: …`` on stderr with exit status 2; an OSError (the machine refused a read or a
    write: a full disk, a read-only folder) as ``error: FILE: reason`` with status 1; Ctrl-C as one
    line too, with status 130."""
    click = _click_exceptions()
    no_args = getattr(click, "NoArgsIsHelpError", ())  # click ≥ 8.2: the group given no command
    try:
        code = app(standalone_mode=False)  # Ctrl-C comes back as INTERRUPTED
    except KeyboardInterrupt:  # one that lands outside click's own handling (a second Ctrl-C)
        code = INTERRUPTED
    except (click.ClickException, RetrievalError, OSError) as error:
        if not _is_rank_0() and not isinstance(error, LostProcesses):
            sys.exit(2)  # under torchrun every process meets the same error: rank 0 alone prints it
        _exit_with_one_line(error, click, no_args)
    if code == INTERRUPTED:  # every file is written whole under a temporary name, then renamed
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C (a terminal sends it to the group) must not cut this line
        if _is_rank_0():
            typer.secho("interrupted (Ctrl-C): stopped before finishing; what was saved before is as it was",
                        fg=typer.colors.RED, err=True)
    sys.exit(code if isinstance(code, int) else 0)  # typer.Exit(code) comes back as the return value


def _is_rank_0() -> bool:
    """Whether this process prints: a plain process, or rank 0 of a torchrun launch (its RANK; read
    here without importing torch, which retrieval.distributed.is_main_process would)."""
    return os.environ.get("RANK", "0") == "0"


def _exit_with_one_line(error: Exception, click, no_args) -> None:
    """``error`` as one line on stderr, then its exit status (see :func:`main`)."""
    if isinstance(error, no_args):
        typer.echo(error.format_message(), err=True)  # the group's help
        sys.exit(2)
    if isinstance(error, click.UsageError):  # a missing argument, an unknown flag, a value out of range
        command = error.ctx.command_path if error.ctx is not None else "retrieval"
        typer.secho(f"error: {printable(error.format_message())} (see {command} --help)", fg=typer.colors.RED, err=True)
        sys.exit(2)
    if isinstance(error, click.ClickException):
        typer.secho(f"error: {printable(error.format_message())}", fg=typer.colors.RED, err=True)
        sys.exit(error.exit_code)
    if isinstance(error, RetrievalError):
        typer.secho(f"error: {printable(error)}", fg=typer.colors.RED, err=True)
        if isinstance(error, LostProcesses):  # torch's teardown may abort after a peer died (see LostProcesses)
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(2)
        sys.exit(2)
    # an OSError: the machine refused a read or write (a full disk, a read-only folder, permissions)
    where = f"{printable(str(error.filename))}: " if error.filename else ""
    typer.secho(f"error: {where}{printable(error.strerror or error)}", fg=typer.colors.RED, err=True)
    sys.exit(1)
