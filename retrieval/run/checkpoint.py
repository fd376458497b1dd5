"""``checkpoint.pt``: the training state that ``retrieval train --resume`` continues from.

The state (model, optimiser, schedule, scaler, RNG, history, best epoch, the run's config as a
JSON string) holds only tensors and plain data; it is written with ``torch.save`` and read with
``weights_only=True``, so loading it runs no pickled code.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from retrieval.errors import RetrievalError
from retrieval.run.files import CHECKPOINT_NAME, CONFIG_NAME, METRICS_NAME
from retrieval.run.store import write_atomic

__all__ = ["has_checkpoint", "read_checkpoint", "write_checkpoint"]


def has_checkpoint(run_dir: str | Path) -> bool:
    return (Path(run_dir) / CHECKPOINT_NAME).exists()


def write_checkpoint(run_dir: str | Path, state: dict[str, Any]) -> None:
    """Write ``RUN_DIR/checkpoint.pt`` atomically."""
    import torch

    buffer = io.BytesIO()
    torch.save(state, buffer)
    write_atomic(Path(run_dir) / CHECKPOINT_NAME, buffer.getvalue())


def read_checkpoint(run_dir: str | Path) -> dict[str, Any]:
    """The saved training state; a one-line error when there is none or it cannot be read."""
    path = Path(run_dir) / CHECKPOINT_NAME
    if not path.is_file():
        started = any((Path(run_dir) / name).exists() for name in (METRICS_NAME, CONFIG_NAME))
        raise RetrievalError(f"--resume: no {CHECKPOINT_NAME} in {run_dir}; "
                             + ("the run stopped before its first epoch ended: start it again without --resume, with --force"
                                if started else "start a new run without --resume"))
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise RetrievalError(f"{path}: cannot read the checkpoint ({type(error).__name__}: {error})") from error
