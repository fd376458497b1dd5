"""A run directory's training records: metrics, the hardest-negative log, validation distances.

Training writes these files (:mod:`retrieval.training`) and the CLI and the app read them, both
through the functions here:

- ``metrics.jsonl``: one JSON object per epoch (epoch 0 is the untrained model);
- ``mining/epoch_NNN.jsonl``: the epoch's hardest triplets (of every valid triplet of its batches,
  and of those the miner kept), one JSON object per line with ``anchor_path``, ``positive_path``,
  ``negative_path`` (relative to ``config["data_dir"]``), their ``*_label``, ``d_ap``, ``d_an``,
  ``d_an_minus_d_ap`` and ``mined`` (did the miner keep it; absent in runs written before it was
  recorded, whose logs hold only the miner's triplets);
- ``mining/confusions.jsonl``: per epoch and ordered class pair (A, B), how many anchors of A had
  their nearest negative in B (``nearest``), how many met a negative of B (``met``), how many
  batches held both (``batches``) and how many anchors of A had a negative at all (``anchors``);
  see :mod:`retrieval.confusions`. Runs trained before it existed have none;
- ``val_distances.json``: sampled positive- and negative-pair distances on held-out classes.

A path recorded in a run file (a mining-log row, an ``index/gallery.json`` item) becomes a file
only through :func:`resolve_logged_path`, so a run directory received from elsewhere cannot make
the CLI or the app read a file outside its data or gallery folder: the path must be relative,
without ``..``, and lie under its root with symbolic links followed; the root (recorded in the
same file, or given by the user to re-root a run moved from another machine) must be absolute and
neither the file system's root nor a system folder (:func:`check_root`: :data:`SYSTEM_ROOTS`,
anything inside :data:`SYSTEM_TREES`, and the user's home folder itself).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from retrieval.errors import RetrievalError
from retrieval.run.files import CONFIG_NAME, METRICS_NAME, MINING_DIR, VAL_DISTANCES_NAME, confusions_path, mining_log_path
from retrieval.run.store import read_json, write_json, write_jsonl

__all__ = [
    "SYSTEM_ROOTS", "SYSTEM_TREES", "check_relative", "check_relative_paths", "check_root", "list_runs", "mining_epochs", "read_metrics", "read_mining_log", "read_val_distances", "resolve_logged_path",
    "write_metrics", "write_mining_log", "write_val_distances", "read_confusions", "write_confusions",
]

_EPOCH_FILE = re.compile(r"^epoch_(\d+)\.jsonl$")

#: folders that are never a data or gallery root: the file system's root and the system's own
#: top-level folders (a run file naming one could reach every image of the machine)
SYSTEM_ROOTS = frozenset({
    "/", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib32", "/lib64", "/libx32", "/media", "/mnt", "/opt",
    "/proc", "/root", "/run", "/sbin", "/snap", "/srv", "/sys", "/tmp", "/usr", "/var",
})
#: system trees: no folder inside them is a root either (``/proc/self/root`` is the whole file system)
SYSTEM_TREES = ("/boot", "/dev", "/etc", "/proc", "/sys")


def write_metrics(run_dir: str | Path, history: list[dict[str, Any]]) -> None:
    """``metrics.jsonl``: one row per epoch, the whole history rewritten atomically."""
    write_jsonl(Path(run_dir) / METRICS_NAME, history)


def write_mining_log(run_dir: str | Path, epoch: int, rows: list[dict[str, Any]]) -> None:
    """``mining/epoch_NNN.jsonl``: the epoch's hardest negatives, hardest first."""
    write_jsonl(mining_log_path(run_dir, epoch), rows)


def write_val_distances(run_dir: str | Path, distances: dict[str, Any]) -> None:
    """``val_distances.json``: sampled positive / negative pair distances on the held-out classes."""
    write_json(Path(run_dir) / VAL_DISTANCES_NAME, distances)


def write_confusions(run_dir: str | Path, epoch: int, rows: list[dict[str, Any]]) -> None:
    """``mining/confusions.jsonl``: the file rewritten atomically with ``epoch``'s rows replacing
    those of that epoch and any later one (left by a run that was interrupted and resumed)."""
    path = confusions_path(run_dir)
    kept = [row for row in _read_jsonl(path) if int(row.get("epoch", 0)) < epoch]
    write_jsonl(path, kept + list(rows))


def read_confusions(run_dir: str | Path, epoch: int | None = None) -> list[dict[str, Any]] | None:
    """The rows of ``mining/confusions.jsonl`` (one epoch's when ``epoch`` is given), or None when
    the run has no such file (trained before it existed, or without class labels)."""
    path = confusions_path(run_dir)
    if not path.is_file():
        return None
    rows = _read_jsonl(path)
    return rows if epoch is None else [row for row in rows if row.get("epoch") == epoch]


def list_runs(models_dir: str | Path) -> list[Path]:
    """Run directories (folders with a ``config.json``) directly under ``models_dir``, newest first."""
    root = Path(models_dir)
    if not root.is_dir():
        return []
    runs = [p for p in root.iterdir() if p.is_dir() and (p / CONFIG_NAME).is_file()]
    return sorted(runs, key=lambda p: (p / CONFIG_NAME).stat().st_mtime, reverse=True)


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The rows of ``metrics.jsonl`` (empty when the run has none)."""
    return _read_jsonl(Path(run_dir) / METRICS_NAME)


def mining_epochs(run_dir: str | Path) -> list[int]:
    """Epochs that have a hardest-negative log, ascending."""
    folder = Path(run_dir) / MINING_DIR
    if not folder.is_dir():
        return []
    return sorted(int(m.group(1)) for p in folder.iterdir() if (m := _EPOCH_FILE.match(p.name)))


def read_mining_log(run_dir: str | Path, epoch: int | None = None) -> list[dict[str, Any]]:
    """The logged hardest triplets of ``epoch`` (the last logged epoch when None), hardest first."""
    epochs = mining_epochs(run_dir)
    if not epochs:
        raise RetrievalError(f"{run_dir} has no mining log (mining/epoch_NNN.jsonl); it is written by `retrieval train` after each epoch")
    if epoch is None:
        epoch = epochs[-1]
    if epoch not in epochs:
        raise RetrievalError(f"{run_dir}: no mining log for epoch {epoch} (logged epochs: {_ranges(epochs)})")
    rows = _read_jsonl(mining_log_path(run_dir, epoch))
    return sorted(rows, key=lambda r: r.get("d_an_minus_d_ap", 0.0))


def read_val_distances(run_dir: str | Path) -> dict[str, Any] | None:
    """``{"margin", "positive": [...], "negative": [...]}`` or None when the run has no held-out classes."""
    path = Path(run_dir) / VAL_DISTANCES_NAME
    if not path.is_file():
        return None
    return read_json(path)


def resolve_logged_path(root: str | Path | Mapping, relative: Any, *, source: str | Path = "run file") -> Path:
    """The file that a path recorded in a run file names: ``root / relative``, after checking
    that ``root`` may be a root (:func:`check_root`) and that ``relative`` is relative, has no
    ``..`` and, symbolic links followed, stays under ``root`` and names a regular file (or
    nothing yet). ``root`` may be a run's config (a mining-log path: its ``data_dir``).
    RetrievalError naming ``source`` (the run file) otherwise."""
    if isinstance(root, Mapping):
        if not root.get("data_dir"):
            raise RetrievalError(f"{source}: the run records no data folder (config.json's data_dir) to find {relative!r} in")
        root = root["data_dir"]
    base = check_root(root, source=source)
    path = base / check_relative(relative, source=source)
    real = Path(os.path.realpath(path))
    if not real.is_relative_to(base):
        raise RetrievalError(f"{source}: {relative!r} leaves its root {base} through a symbolic link; "
                             "a run's files are read only inside their data or gallery folder")
    if real.exists() and not real.is_file():
        raise RetrievalError(f"{source}: {relative!r} under {base} is not a regular file")
    return path


def check_relative(relative: Any, *, source: str | Path = "run file") -> str:
    """``relative`` when it is a relative path without ``..`` (a string); RetrievalError otherwise."""
    if not isinstance(relative, str) or not relative or "\x00" in relative:
        raise RetrievalError(f"{source}: {relative!r} is not a file path")
    if relative.startswith("/") or os.path.isabs(relative):
        raise RetrievalError(f"{source}: {relative!r} is an absolute path; paths in run files are relative to their root")
    if ".." in relative.replace("\\", "/").split("/"):
        raise RetrievalError(f"{source}: {relative!r} climbs out of its root (..); paths in run files stay under their root")
    return relative


def check_relative_paths(paths: list[Any], *, source: str | Path = "run file") -> None:
    """:func:`check_relative` on every path of a long list, fast (a million paths in a few tenths
    of a second: substring tests on the NUL-joined paths, then the slow check of each path only
    when one of them is suspect); RetrievalError naming the first bad path."""
    if set(map(type, paths)) <= {str}:
        joined = "\x00" + "\x00".join(paths).replace("\\", "/") + "\x00"
        suspect = joined.count("\x00") != len(paths) + 1 or any(
            mark in joined for mark in ("\x00\x00", "\x00/", "\x00../", "/../", "/..\x00", "\x00..\x00"))
        if not suspect:
            return
    for path in paths:
        check_relative(path, source=source)


def check_root(root: Any, *, source: str | Path = "run file") -> Path:
    """The root, resolved (symbolic links followed), when it may hold a run's data or gallery:
    an absolute path that is not the file system's root, a system folder (:data:`SYSTEM_ROOTS`,
    anything inside :data:`SYSTEM_TREES`) or the user's home folder itself. RetrievalError otherwise."""
    if not isinstance(root, (str, Path)) or not str(root) or "\x00" in str(root):
        raise RetrievalError(f"{source}: {root!r} is not a folder path")
    if not Path(root).is_absolute():
        raise RetrievalError(f"{source}: the root {str(root)!r} is not an absolute path")
    resolved = Path(os.path.realpath(root))
    text = resolved.as_posix()
    if text in SYSTEM_ROOTS or text == _home() or any(resolved.is_relative_to(tree) for tree in SYSTEM_TREES):
        shown = str(root) if str(root) == text else f"{root} (that is {text})"
        raise RetrievalError(
            f"{source}: refusing the root {shown}: the file system's root, a system folder (/etc, /proc, /usr, ...) "
            "or a home folder itself is never a data or gallery folder; re-root the run at its real folder "
            "(--gallery-root / --data-root)"
        )
    return resolved


def given_root(folder: str | Path, flag: str) -> Path:
    """A folder the user gave for a run's data or gallery (``flag``: --gallery-root, --data-root),
    checked as :func:`check_root` checks a recorded one, and existing; resolved. RetrievalError otherwise."""
    root = check_root(Path(folder).absolute(), source=flag)
    if not root.is_dir():
        raise RetrievalError(f"{flag} {folder}: no such folder")
    return root


def _home() -> str | None:
    try:
        return os.path.realpath(Path.home())
    except (RuntimeError, KeyError):
        return None


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as error:
            raise RetrievalError(f"{path}:{number}: corrupt JSON line ({error.msg})") from error
    return rows


def _ranges(values: list[int]) -> str:
    return f"{values[0]}-{values[-1]}" if values == list(range(values[0], values[-1] + 1)) else ", ".join(map(str, values))
