"""Progress bars on the console for work measured in items: one bar a stage (finding faces,
embedding images, building Annoy trees), each shown from its stage's first report.

``retrieval index``, ``evaluate`` and ``calibrate`` show theirs on stderr, on a terminal only (a log
or a pipe gets the command's own lines, and an error stays one line); training shows its search for
faces on stdout like its epoch bars (:mod:`retrieval.training.progress`), wherever that goes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping

__all__ = ["StageCallback", "stage_bars"]

#: ``on_progress(stage, done, total)``
StageCallback = Callable[[str, int, int], None]


@contextlib.contextmanager
def stage_bars(stages: Mapping[str, str], *, enabled: bool = True, stderr: bool = True,
               terminal_only: bool = True) -> Iterator[StageCallback]:
    """Yields ``on_progress(stage, done, total)``; each stage's bar (``stages``: stage -> what its
    bar says) appears at its first report, so nothing is shown for work that never reports. Nothing
    at all when ``enabled`` is False, or when ``terminal_only`` and the console is no terminal."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    console = Console(stderr=stderr)
    shown = enabled and (console.is_terminal or not terminal_only)
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                        console=console, disable=not shown)
    tasks: dict[str, int] = {}

    def on_progress(stage: str, done: int, total: int) -> None:
        if not tasks:
            progress.start()
        if stage not in tasks:
            tasks[stage] = progress.add_task(stages.get(stage, stage), total=total)
        progress.update(tasks[stage], completed=done, total=total)

    try:
        yield on_progress
    finally:
        if tasks:
            progress.stop()
