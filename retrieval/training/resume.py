"""``--resume``: what a checkpoint holds, and how a run continues from it.

After every epoch rank 0 writes ``checkpoint.pt`` (:func:`checkpoint_state`: model, optimiser,
schedule, gradient scaler, torch's random state, the metrics history and the best epoch so far).
``retrieval train --out RUN --resume`` rebuilds the run from the settings it was started with
(``config.json``'s ``train_settings``, :func:`config_for_resume`), restores that state
(:func:`restore`) and goes on with the next epoch; with the seeded items and the epoch-seeded
sampler, the resumed epochs are those of an uninterrupted run.

A resume takes from its own command line only what may change between calls (:data:`PER_CALL`:
epochs, device, workers, cache, the distributed timeout). A flag typed with another value than the
run's own (``--lr``, ``--loss``, ``--backbone``, a DATA_DIR elsewhere, ...) is refused in one line
naming each, so the command a run records is the one that took effect. The data folder is
recorded as an absolute path; a run whose recorded data folder no longer exists resumes on the
DATA_DIR given (a run moved with its data), which must hold the same classes.
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
from retrieval.training.config import TrainConfig, settings_before_they_existed

__all__ = ["PER_CALL", "RunState", "checkpoint_state", "config_for_resume", "restore"]

log = logging.getLogger("retrieval")

#: the settings a ``--resume`` call takes from its own command line (typed or default); every
#: other setting is the saved run's, and typing another value for one of them is refused
PER_CALL = ("epochs", "device", "num_workers", "cache_mb", "command", "dist_timeout")
#: not settings of the run: where it is now (``--out``) and this call's own switches
_THIS_CALL = ("out", "resume", "force")
#: settings that hold paths (strings in config.json)
_PATHS = ("data_dir", "out", "weights", "class_groups", "never_negative", "pairs", "pair_groups")
#: how the command line spells the settings whose flag is not ``--`` and the name with dashes
_FLAGS = {"data_dir": "DATA_DIR", "num_workers": "--workers", "hardest_per_epoch": "--hardest",
          "classes_per_batch": "-P", "images_per_class": "-K"}


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
    """The saved run's settings, with only the :data:`PER_CALL` ones (and ``--out``, where the run
    is now) taken from this call, ``epochs`` only when typed (else the run's own number of epochs); RetrievalError naming every flag this call typed (``config.given``)
    with another value than the run's (see the module docstring).

    The resolved result counts the saved settings as given (they are the run's own record; a
    ``null`` miner stays "the loss's natural miner").
    """
    stored = read_config(run_dir)
    saved = stored.get("train_settings")
    if not isinstance(saved, dict):
        raise RetrievalError(f"{Path(run_dir) / CONFIG_NAME}: no train_settings to resume the run from")
    names = {f.name for f in dataclasses.fields(TrainConfig)} - {"given"}
    values = {k: v for k, v in saved.items() if k in names}
    faces = stored.get("faces")
    detector = faces.get("detector_settings") if isinstance(faces, dict) else None
    for key, value in settings_before_they_existed(saved, detector).items():  # runs saved before these settings existed
        values.setdefault(key, value)
    values["data_dir"] = _data_dir(values.get("data_dir"), stored.get("data_dir"), config.data_dir)
    for key in _PATHS:
        if values.get(key) is not None:
            values[key] = Path(values[key])
    _refuse_changes(config, TrainConfig(**values).resolve(), run_dir)
    this_call = {name: getattr(config, name) for name in (*PER_CALL, *_THIS_CALL)}
    if "epochs" not in (config.given or frozenset()):  # the run's own plan (and cosine schedule) unless --epochs is typed
        this_call.pop("epochs")
    values.update(this_call, resume=True)
    return TrainConfig(**values).resolve()


def _warn_if_squeezed(setup) -> None:
    """One warning when this resume trains on with fewer ``--epochs`` than the run was planned for
    (config.json's train_settings, not yet rewritten): the cosine schedule then ends early, the
    learning rate falling to 0 by the new last epoch, and the run counts as that many epochs long."""
    try:
        planned = read_config(setup.run_dir).get("train_settings", {}).get("epochs")
    except (RetrievalError, OSError, AttributeError):
        return
    epochs = setup.config.epochs
    if isinstance(planned, int) and epochs < planned:
        log.warning("--epochs %d is below the %d this run was planned for: its cosine schedule now ends at epoch %d (the "
                    "learning rate falls to 0 by then, faster than planned), and the run counts as %d epochs long (a later "
                    "bare --resume finds it finished)", epochs, planned, epochs, epochs)


def _data_dir(recorded: str | None, config_json: str | None, typed: Path) -> Path:
    """The run's data folder: the absolute one it recorded (runs from before absolute paths:
    config.json's own ``data_dir``, which was always absolute); the DATA_DIR typed when that one is
    gone (the run moved with its data) or unknown."""
    for candidate in (recorded, config_json):
        if candidate and Path(candidate).is_absolute():
            if Path(candidate).is_dir() or not Path(typed).is_dir():
                return Path(candidate)
            log.warning("the run's data folder %s is gone; resuming on %s", candidate, typed)
            return Path(typed)
    return Path(typed)


def _refuse_changes(call: TrainConfig, saved: TrainConfig, run_dir: Path) -> None:
    """RetrievalError naming each flag typed on this call with another value than the saved run's."""
    changed = []
    for name in sorted(call.given - set(PER_CALL) - set(_THIS_CALL)):
        typed, kept = getattr(call, name), getattr(saved, name)
        if name in _PATHS and typed is not None and kept is not None:
            same = Path(typed).resolve() == Path(kept).resolve()
        else:
            same = typed == kept
        if not same:
            flag = _FLAGS.get(name, "--" + name.replace("_", "-"))
            if isinstance(typed, bool) and isinstance(kept, bool):  # a switch: --no-flip-average, not "--flip-average False"
                changed.append(f"{flag} (the run has it off)" if typed else f"{flag.replace('--', '--no-', 1)} (the run has it on)")
            elif kept is None:  # a file or setting the run never had (--weights on a run from random weights)
                changed.append(f"{flag} {typed} (the run has none)")
            else:
                changed.append(f"{flag} {typed} (the run has {kept})")
    if changed:
        flags = [c for c in changed if not c.startswith("DATA_DIR")]
        advice = []
        if flags:
            advice.append(f"drop {'that flag' if len(flags) == 1 else 'those flags'} (only --epochs, --device, --workers, "
                          "--cache-mb, --dist-timeout may change)")
        if len(flags) < len(changed):  # DATA_DIR is positional: it cannot be dropped
            advice.append("give the run's own DATA_DIR (a run moved with its data resumes on the new place once the old one is gone)")
        raise RetrievalError(
            f"--resume continues {run_dir} as it was started, but this call gives {'; '.join(changed)}: "
            f"{'; '.join(advice)}, or train a new run with another --out"
        )


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
    left = state.start_epoch <= setup.config.epochs
    if not left:
        log.warning("%s: already trained for %d epochs; raise --epochs to train more", setup.run_dir, state.start_epoch - 1)
    else:
        _warn_if_squeezed(setup)
    damage = _served_weights_damage(setup.run_dir)
    if damage is not None:
        if not left:
            raise RetrievalError(f"{damage}: the best epoch's weights are lost and --resume has no epoch left to train; "
                                 "raise --epochs to train on (the next epoch becomes the best), or retrain with --force")
        log.warning("%s: the best epoch (%s)'s weights are lost, so the next epoch trained is saved as the best instead",
                    damage, state.best.get("epoch"))
        state.best = {"epoch": 0, "map_at_r": -1.0}  # as a new run starts: any epoch's MAP@R beats it
    return state


def _served_weights_damage(run_dir: Path) -> str | None:
    """Why the run's ``model.safetensors`` (the best epoch's weights, which search and the app serve)
    cannot be loaded — damaged, missing, or not the weights config.json records — or None when it loads."""
    from retrieval.run import load_model

    try:
        load_model(run_dir)
    except RetrievalError as error:
        return str(error)
    return None
