"""What the user sees and does while an epoch runs: its progress bar, and Ctrl-C."""

from __future__ import annotations

import os
import signal
import sys

from retrieval.distributed import is_main_process
from retrieval.training.totals import EpochTotals

__all__ = ["InterruptFlag", "ProgressBar"]


class InterruptFlag:
    """Turns the first Ctrl-C into a request to stop after the current step (the second one kills)."""

    def __init__(self) -> None:
        self.requested = False
        self._previous = None
        self._pid = os.getpid()

    def __enter__(self):
        try:
            self._previous = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not in the main thread
            self._previous = None
        return self

    def _handle(self, signum, frame) -> None:
        if os.getpid() != self._pid:  # a data-loader worker forked with this handler: a terminal's Ctrl-C reaches
            return  # the whole process group, and the training process alone stops (and says so, once)
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        if is_main_process():  # under torchrun every process gets the terminal's Ctrl-C; rank 0 says so
            print("\nstopping after this step (Ctrl-C again to abort at once)…", file=sys.stderr)

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


class ProgressBar:
    """A rich progress bar for one epoch showing loss, active fraction and images/s (silent when off,
    and when stdout is no terminal: a log or a pipe gets the epoch's summary line alone)."""

    def __init__(self, enabled: bool, epoch: int, epochs: int, steps: int) -> None:
        self.progress = None
        from rich.console import Console

        if not enabled or not Console().is_terminal:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(
            TextColumn(f"epoch {epoch}/{epochs}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
            TextColumn("{task.fields[status]}"), transient=False,
        )
        self.progress.start()
        self.task = self.progress.add_task("train", total=steps, status="")

    def advance(self, totals: EpochTotals) -> None:
        if self.progress is None:
            return
        active, violating = totals.active_fraction, totals.violating_fraction
        status = f"loss {totals.mean_loss:.4f}"
        if active is not None:
            status += f"  active {active:.2f}"
        if violating is not None:
            status += f"  violating {violating:.2f}"
        status += f"  {totals.images_per_second:.0f} img/s"
        self.progress.update(self.task, advance=1, status=status)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
