"""What the commands share: the typer app they register on, warnings as one line each, a number's format."""

from __future__ import annotations

import typer

from retrieval.safe_text import PrintableStderrHandler

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Metric-learning image retrieval: train, index, search, evaluate and inspect embedding models.",
)


#: retrieval.faces.detect.HARDER in words (kept here, not imported, so that the CLI starts without torch; a test compares them)
LOOK_HARDER_HELP = ("A face run: look harder for this query's faces, from 20 px and at lower thresholds (P-/R-Net 0.3, O-Net 0.9, "
                    "recheck 0.9), for a face the run's detector misses; it may also box something that is not a face. "
                    "Not cached; training, index and evaluate keep the run's detector.")
GALLERY_ROOT_HELP = "Where the index's gallery folder is now (a run moved from another machine); once per gallery folder of the index, in order."


def fmt(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def log_warnings() -> None:
    """Send the library's warnings (logger ``retrieval``) to stderr as one line each."""
    import logging

    logger = logging.getLogger("retrieval")
    if not logger.handlers:
        handler = PrintableStderrHandler()
        handler.setFormatter(logging.Formatter("warning: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.WARNING)
        logger.propagate = False


def table_console():
    """The rich Console a command prints its table on: on a terminal, the terminal's width (a long
    path folds to fit the screen); written to a file or a pipe, wide enough that no cell is folded,
    so that each row is one line that ``grep``, ``cut`` and scripts read whole (rich's default
    there, 80 columns, split a long path over several lines)."""
    from rich.console import Console

    console = Console()
    return console if console.is_terminal else Console(width=100_000)
