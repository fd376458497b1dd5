"""What the commands share: the typer app they register on, warnings as one line each, progress bars, a number's format."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping

import typer

from retrieval.safe_text import PrintableStderrHandler

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Metric-learning image retrieval: train, index, search, evaluate and inspect embedding models.",
)


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


@contextlib.contextmanager
def stage_bars(stages: Mapping[str, str], *, enabled: bool = True):
    """Progress bars on stderr, one a stage, each added when its stage first reports (``stages``:
    stage -> what its bar says): yields ``on_progress(stage, done, total)``. Shown only on a
    terminal (a log or a pipe gets the command's own lines, and an error stays one line), and not
    when ``enabled`` is False (``--quiet``) or outside the main process of a torchrun launch."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from retrieval.distributed import is_main_process

    console = Console(stderr=True)
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                        console=console, disable=not enabled or not is_main_process() or not console.is_terminal)
    tasks: dict[str, int] = {}

    def on_progress(stage: str, done: int, total: int) -> None:
        if stage not in tasks:
            tasks[stage] = progress.add_task(stages.get(stage, stage), total=total)
        progress.update(tasks[stage], completed=done, total=total)

    with progress:
        yield on_progress
