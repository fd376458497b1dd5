"""A run directory's training records: metrics, the hardest-negative log, validation distances.

Training writes these files (:mod:`retrieval.training`) and the CLI and the app read them, both
through the functions here:

- ``metrics.jsonl``: one JSON object per epoch (epoch 0 is the untrained model);
- ``mining/epoch_NNN.jsonl``: the epoch's hardest mined triplets, one JSON object per line with
  ``anchor_path``, ``positive_path``, ``negative_path`` (relative to ``config["data_dir"]``), their
  ``*_label``, ``d_ap``, ``d_an`` and ``d_an_minus_d_ap``;
- ``val_distances.json``: sampled positive- and negative-pair distances on held-out classes.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from retrieval.errors import RetrievalError
from retrieval.run.files import CONFIG_NAME, METRICS_NAME, MINING_DIR, VAL_DISTANCES_NAME, mining_log_path
from retrieval.run.store import read_json, write_json, write_jsonl

__all__ = [
    "list_runs", "mining_epochs", "read_metrics", "read_mining_log", "read_val_distances", "resolve_logged_path",
    "write_metrics", "write_mining_log", "write_val_distances",
]

_EPOCH_FILE = re.compile(r"^epoch_(\d+)\.jsonl$")


def write_metrics(run_dir: str | Path, history: list[dict[str, Any]]) -> None:
    """``metrics.jsonl``: one row per epoch, the whole history rewritten atomically."""
    write_jsonl(Path(run_dir) / METRICS_NAME, history)


def write_mining_log(run_dir: str | Path, epoch: int, rows: list[dict[str, Any]]) -> None:
    """``mining/epoch_NNN.jsonl``: the epoch's hardest negatives, hardest first."""
    write_jsonl(mining_log_path(run_dir, epoch), rows)


def write_val_distances(run_dir: str | Path, distances: dict[str, Any]) -> None:
    """``val_distances.json``: sampled positive / negative pair distances on the held-out classes."""
    write_json(Path(run_dir) / VAL_DISTANCES_NAME, distances)


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
    """The hardest mined triplets of ``epoch`` (the last logged epoch when None), hardest first."""
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


def resolve_logged_path(config: Any, relative: str) -> Path:
    """The image a mining-log path names: relative paths are under the run's ``data_dir``."""
    path = Path(relative)
    return path if path.is_absolute() else Path(config.get("data_dir", ".")) / path


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
