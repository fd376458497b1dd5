"""``retrieval ARGS...`` through the console script's entry point, in the test's process (the model
import is paid once): exit code, stdout, stderr and stderr's non-empty lines, as a subprocess would
give them. Test modules import the ``cli`` fixture (``from cli_runner import cli``; tests/ is on sys.path)."""

import logging
import sys

import pytest


class Result:
    def __init__(self, code, out, err):
        self.code, self.out, self.err = code, out, err
        self.lines = [line for line in err.splitlines() if line.strip()]


@pytest.fixture
def cli(capsys, monkeypatch):
    from retrieval.cli import main

    def run(*args):
        logger = logging.getLogger("retrieval")  # the CLI sends warnings to this call's stderr, as a new process would
        monkeypatch.setattr(logger, "handlers", [])
        monkeypatch.setattr(logger, "propagate", logger.propagate)
        monkeypatch.setattr(sys, "argv", ["retrieval", *map(str, args)])
        capsys.readouterr()
        try:
            main()
            code = 0
        except SystemExit as exit:
            code = exit.code or 0
        out, err = capsys.readouterr()
        return Result(code, out, err)

    return run
