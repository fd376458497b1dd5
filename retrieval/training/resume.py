"""``--resume``: what a checkpoint holds, and how a run continues from it.

After every epoch rank 0 writes ``checkpoint.pt`` (:func:`checkpoint_state`: model, optimiser,
schedule, gradient scaler, torch's random state, the metrics history and the best epoch so far).
``retrieval train --out RUN --resume`` rebuilds the run from the settings it was started with
(``config.json``'s ``train_settings``, :func:`config_for_resume`), restores that state
(:func:`restore`) and goes on with the next epoch; with the seeded items and the epoch-seeded
sampler, the resumed epochs are those of an uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from retrieval.errors import RetrievalError
from retrieval.run import CONFIG_NAME, read_config
from retrieval.training.config import TrainConfig

__all__ = ["PER_CALL", "RunState", "checkpoint_state", "config_for_resume", "restore"]

log = logging.getLogger("retrieval")

#: the settings a ``--resume`` call takes from its own command line (typed or default); every
#: other setting is the saved run's
PER_CALL = ("epochs", "device", "num_workers", "cache_mb", "command", "dist_timeout")
#: settings that hold paths (strings in config.json)
_PATHS = ("data_dir", "out", "weights", "class_groups", "never_negative", "pairs", "pair_groups")


@dataclass
class RunState:
    """Where the epochs stand: the metrics rows so far, the best epoch by MAP@R, the next epoch."""

    history: list[dict[str, Any]]
    best: dict[str, Any]  # {"epoch": E, "map_at_r": its MAP@R (-1.0 without validation)}
    start_epoch: int

    def record(self, epoch: int, row: dict[str, Any]) -> bool:
        """Add the epoch's metrics row; True when it is the best so far (the last one, without validation)."""
        self.history.append(row)
        score = row.get("map_at_r")
        improved = score is None or score >= self.best["map_at_r"]
        if improved:
            self.best = {"epoch": epoch, "map_at_r": -1.0 if score is None else score}
        return improved


def config_for_resume(config: TrainConfig, run_dir: Path) -> TrainConfig:
    """The saved run's settings, with only the :data:`PER_CALL` ones taken from this call.

    The resolved result counts the saved settings as given (they are the run's own record; a
    ``null`` miner stays "the loss's natural miner"). ``config.given`` still says which flags were
    typed on this call; nothing acts on it yet.
    """
    saved = read_config(run_dir).get("train_settings")
    if not isinstance(saved, dict):
        raise RetrievalError(f"{Path(run_dir) / CONFIG_NAME}: no train_settings to resume the run from")
    names = {f.name for f in dataclasses.fields(TrainConfig)} - {"given"}
    values = {k: v for k, v in saved.items() if k in names}
    values.update({name: getattr(config, name) for name in PER_CALL}, resume=True)
    for key in _PATHS:
        if values.get(key) is not None:
            values[key] = Path(values[key])
    return TrainConfig(**values).resolve()


def checkpoint_state(setup, epoch: int, state: RunState) -> dict[str, Any]:
    """Everything ``--resume`` needs after ``epoch`` (tensors and plain data: read with weights_only)."""
    return {
        "epoch": epoch,
        "model": setup.model.state_dict(),
        "optimiser": setup.optimiser.state_dict(),
        "schedule": setup.schedule.state_dict(),
        "scaler": setup.scaler.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "history": state.history,
        "best": state.best,
        "config": json.dumps(setup.run_config),
    }


def restore(setup, checkpoint: dict[str, Any]) -> RunState:
    """Load the checkpoint into the set-up run; the state to go on from."""
    setup.model.load_state_dict(checkpoint["model"])
    setup.optimiser.load_state_dict(checkpoint["optimiser"])
    setup.schedule.load_state_dict(checkpoint["schedule"])
    if "scaler" in checkpoint:
        setup.scaler.load_state_dict(checkpoint["scaler"])
    torch.set_rng_state(checkpoint["torch_rng"])
    state = RunState(list(checkpoint["history"]), dict(checkpoint["best"]), int(checkpoint["epoch"]) + 1)
    if state.start_epoch > setup.config.epochs:
        log.warning("%s: already trained for %d epochs; raise --epochs to train more", setup.run_dir, state.start_epoch - 1)
    return state
