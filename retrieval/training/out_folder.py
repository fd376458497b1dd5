"""The ``--out`` folder of ``retrieval train``: who may write into it, and what it may hold first.

- :func:`training_lock`: rank 0 holds ``RUN_DIR/.lock`` (:func:`retrieval.run.hold_lock`) from
  before the first file is written until the run ends, however it ends: a second
  ``retrieval train`` on the same ``--out`` stops at once with a one-line error naming this
  process; a folder the run created and left empty (it failed before writing) is removed again,
  and so are the parent folders it created for it.
- :func:`undone_if_refused`: a new run in a missing or empty folder that is refused for its input
  (or stopped by Ctrl-C) while it checks and builds it, before anything of the run proper is saved,
  removes what it wrote there: a face run's detection cache ``faces/`` holds face crops, personal
  data that a failed command must not leave behind, and a folder left holding it would refuse the
  retry as the start of a run that stopped. A folder that held files before is never touched.
- :func:`prepare_out`: a new run (no ``--resume``) starts only in a missing or empty folder. A
  folder with a run (``checkpoint.pt``) needs ``--resume``; one with a run that lacks its
  checkpoint, or with other files, would have its ``config.json``, ``metrics.jsonl`` and
  ``mining/`` silently replaced, so it is refused unless ``--force`` asks for that. The files of
  the earlier run, nothing else, are then removed by :func:`clear_earlier_run` once the new run's
  data, model and starting weights have been checked and built: a typo in DATA_DIR or ``--weights``
  leaves the earlier run as it was. Either way the temporaries of killed writers (``.*.tmp``) are
  removed, under the lock.
- :func:`check_same_classes` and :func:`commands_so_far`: a resumed run trains on the classes it
  started with, and records every command that trained it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from retrieval import run
from retrieval.errors import RetrievalError
from retrieval.run.files import FACES_DIR
from retrieval.run.versions import VERSIONS_DIR

__all__ = ["check_same_classes", "clear_earlier_run", "commands_so_far", "prepare_out", "training_lock", "undone_if_refused"]

log = logging.getLogger("retrieval")

#: what a run directory holds that ``--force`` removes before a new run is written over it
RUN_FILES = (run.CONFIG_NAME, run.WEIGHTS_NAME, run.LAST_WEIGHTS_NAME, run.METRICS_NAME, run.VAL_DISTANCES_NAME,
             run.CHECKPOINT_NAME)
_IGNORED = (".lock",)  # our own lock file, present while we hold it
#: what a new run writes before its first checkpoint: a folder holding only these is a start that stopped
_STARTED_RUN = frozenset({run.METRICS_NAME, run.VAL_DISTANCES_NAME, run.MINING_DIR, FACES_DIR})


@contextlib.contextmanager
def training_lock(run_dir: str | Path, ctx) -> Iterator[None]:
    """Rank 0 holds the run directory's lock inside the block (see the module docstring)."""
    run_dir = Path(run_dir)
    if not ctx.is_main:
        yield
        return
    if run_dir.exists() and not run_dir.is_dir():
        raise RetrievalError(f"--out {run_dir} is a file, not a folder")
    created = _missing_folders(run_dir)  # run_dir and the parents the lock's mkdir creates, deepest first
    try:
        with run.hold_lock(run_dir, "`retrieval train` on a run directory"):
            yield
    finally:
        if created and run_dir.is_dir() and not any(run_dir.iterdir()):
            run_dir.rmdir()
            for parent in created[1:]:
                try:
                    os.rmdir(parent)  # only while empty: another command may have written there meanwhile
                except OSError:
                    break


@contextlib.contextmanager
def undone_if_refused(run_dir: str | Path, *, resume: bool, is_main: bool) -> Iterator[None]:
    """Around the start of a run (its input checked, the run built, nothing of the run proper
    saved yet), inside :func:`training_lock`: when it ends in an error or Ctrl-C and it was a new
    run in a missing or empty folder, rank 0 removes what the block wrote there (the face detection
    cache ``faces/`` and its ``training_photos.json``), so the folder is as the command found it
    (:func:`training_lock` then removes it if it created it) and the retry is not refused as a run
    that stopped. A folder holding anything but our lock and stale temporaries (``--force``) keeps
    everything, as does ``--resume``; the caller closes the block before its first save: a failure
    after the untrained model's row is written leaves that start, as documented."""
    run_dir = Path(run_dir)
    before = set() if resume or not is_main or not run_dir.is_dir() else {p.name for p in run_dir.iterdir()}
    if resume or not is_main or any(name not in _IGNORED and not _is_temporary(run_dir / name) for name in before):
        yield
        return
    try:
        yield
    except BaseException:
        _remove_new_entries(run_dir, keep=before)
        raise


def prepare_out(run_dir: str | Path, *, resume: bool, force: bool, is_main: bool) -> bool:
    """Refuse an ``--out`` folder a new run would overwrite unasked; remove stale temporaries (rank 0
    changes the folder, every rank checks). True when ``force`` is to replace files there: the
    caller clears them (:func:`clear_earlier_run`) once nothing else can stop the new run's start."""
    run_dir = Path(run_dir)
    if resume and force:
        raise RetrievalError("give --resume (continue the run in --out) or --force (replace it), not both")
    entries = []
    if not resume and run_dir.is_dir():
        entries = sorted(p.name for p in run_dir.iterdir() if p.name not in _IGNORED and not _is_temporary(p))
        if entries and not force:
            raise RetrievalError(_refusal(run_dir, entries))
    if is_main:
        for folder in (run_dir, run_dir / run.MINING_DIR):
            run.remove_stale_temporaries(folder)
    return bool(entries)


def clear_earlier_run(run_dir: str | Path, is_main: bool) -> None:
    """``--force``: remove the earlier run's files (:data:`RUN_FILES`, its mining log, committed
    versions and index; anything else in the folder stays), on rank 0, just before the new run writes."""
    if is_main:
        _remove_run_files(Path(run_dir))


def check_same_classes(run_dir: str | Path, class_names: list[str]) -> None:
    """RetrievalError when a resumed run's data folder holds other classes than it started with."""
    saved = run.read_config(run_dir).class_names
    if saved and saved != list(class_names):
        missing, extra = sorted(set(saved) - set(class_names)), sorted(set(class_names) - set(saved))
        raise RetrievalError(
            f"--resume: DATA_DIR holds other classes than {run_dir} was trained on ({len(missing)} missing, e.g. "
            f"{missing[:3]}; {len(extra)} new, e.g. {extra[:3]}); resume on the run's own data folder"
        )


def commands_so_far(run_dir: str | Path, resume: bool) -> list[str]:
    """The commands that trained the run before this call (config.json's ``commands``; runs from
    before that key: its ``command``); empty for a new run."""
    if not resume:
        return []
    stored = run.read_config(run_dir)
    commands = stored.get("commands")
    if isinstance(commands, list) and all(isinstance(c, str) for c in commands):
        return list(commands)
    return [stored["command"]] if isinstance(stored.get("command"), str) and stored["command"] else []


def _refusal(run_dir: Path, entries: list[str]) -> str:
    shown = ", ".join(entries[:3]) + (f" and {len(entries) - 3} more" if len(entries) > 3 else "")
    if (run_dir / run.CHECKPOINT_NAME).exists():
        return (f"{run_dir} already holds a run; pass --resume to continue it, --force to replace it, "
                "or choose another --out")
    if _is_run(run_dir):
        return (f"{run_dir} holds a run without its {run.CHECKPOINT_NAME} (stopped before its first epoch, or copied "
                "without it), which cannot be resumed: pass --force to replace it, or choose another --out")
    if set(entries) <= _STARTED_RUN:
        return (f"{run_dir} holds the start of a run that stopped before its first epoch ended ({shown}), which cannot "
                "be resumed: pass --force to start it again, or choose another --out")
    return (f"{run_dir} is not empty ({shown}) and is not a run: a new run would replace files there; "
            "choose another --out, or pass --force to write into it")


def _remove_run_files(run_dir: Path) -> None:
    """The files of an earlier run (``--force``): the documented names, its mining log, its
    committed versions and its gallery index (``index/``, embedded by the earlier model); anything
    else in the folder stays (a face run's detection cache ``faces/`` too: it depends on the photos
    and the detector, not on the model)."""
    for name in RUN_FILES:
        path = run_dir / name
        if path.is_file() or path.is_symlink():
            path.unlink()
    mining = run_dir / run.MINING_DIR
    if mining.is_dir():
        for path in mining.glob("*.jsonl"):
            path.unlink()
    shutil.rmtree(run_dir / VERSIONS_DIR, ignore_errors=True)
    shutil.rmtree(run.index_dir(run_dir), ignore_errors=True)  # built by the earlier model: search would refuse it


def _missing_folders(run_dir: Path) -> list[Path]:
    """``run_dir`` and its parents that do not exist yet, deepest first (empty when it exists)."""
    missing = []
    folder = run_dir.absolute()
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing


def _remove_new_entries(run_dir: Path, keep: set[str]) -> None:
    """Remove what is in ``run_dir`` but not in ``keep`` (names), nor our lock; what cannot be
    removed is named in one warning line (it may hold face crops: personal data)."""
    left = []
    for path in sorted(run_dir.iterdir()) if run_dir.is_dir() else []:
        if path.name in keep or path.name in _IGNORED:
            continue
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        except OSError as error:
            left.append(f"{path.name} ({error.strerror or error})")
    if left:
        log.warning("%s: the refused run could not remove what it wrote there: %s; delete it by hand (a face run's faces/ "
                    "holds face crops)", run_dir, ", ".join(left))


def _is_run(run_dir: Path) -> bool:
    """Whether the folder's config.json is a run's (not some other program's config.json)."""
    try:
        run.read_config(run_dir)
    except RetrievalError:
        return False
    return True


def _is_temporary(path: Path) -> bool:
    return path.name.startswith(".") and path.name.endswith(".tmp")
