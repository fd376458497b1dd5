"""``python -m retrieval`` and the ``retrieval`` console script (also what ``torchrun -m retrieval``
launches): import the command line, then run it (:func:`retrieval.cli.main`).

The import takes about a second (typer, torch, timm). A Ctrl-C during it is told in one line,
exit status 130, instead of a traceback from the middle of torch's import: nothing has been read or
written yet.
"""

import sys


def main() -> None:
    """Import the command line and run it; a Ctrl-C while importing ends with one line, status 130
    (``retrieval.cli.INTERRUPTED``)."""
    try:
        from retrieval.cli import main as run_command_line
    except KeyboardInterrupt:
        sys.stderr.write("interrupted (Ctrl-C) while starting: nothing was read or written\n")
        sys.exit(130)
    run_command_line()


if __name__ == "__main__":
    main()
