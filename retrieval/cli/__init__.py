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
import sys

import typer

from retrieval.cli import training, assess, gallery, inspect, serve  # noqa: F401,I001  (each registers its commands, in --help order)
from retrieval.cli.common import app
from retrieval.errors import LostProcesses, RetrievalError
from retrieval.safe_text import printable

__all__ = ["app", "main"]


def main() -> None:
    """Console-script entry point: run the typer app, turning user errors into one line."""
    try:
        app()
    except RetrievalError as error:
        typer.secho(f"error: {printable(error)}", fg=typer.colors.RED, err=True)
        if isinstance(error, LostProcesses):  # torch's teardown may abort after a peer died (see LostProcesses)
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(2)
        sys.exit(2)
