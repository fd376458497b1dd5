"""What training writes to the run directory (DESIGN.md, "The run directory"), on rank 0 only.

- before the first epoch: ``metrics.jsonl`` with the untrained model's row (epoch 0) and
  ``val_distances.json`` (:func:`write_baseline`); with ``--epochs 0`` also the untrained model
  (:func:`write_untrained`); from pretrained weights with validation classes, the untouched model
  as the best so far (:func:`write_untouched_as_best`: it competes for the best epoch);
- after every epoch (:func:`write_epoch`): ``mining/epoch_NNN.jsonl`` (the epoch's hardest
  triplets, paths relative to ``data_dir``), ``mining/confusions.jsonl`` (its class confusions,
  labelled runs only), ``metrics.jsonl``, and when the epoch is the best so far (by validation
  MAP@R; the last epoch without validation) ``model.safetensors`` with ``config.json`` and
  ``val_distances.json`` (the served weights' distances, on which their τ was chosen), ``model_last.safetensors`` and ``checkpoint.pt``.

``config.json``'s ``"verification"`` (:func:`best_epoch_verification`) is the best epoch's
threshold τ, chosen on the validation classes' pairs at ``--target-far``; it is written with the
best weights only, so a τ that ``retrieval calibrate`` set stays until a new best epoch replaces
the weights it was chosen for (then the new epoch's τ, or none without validation classes).

Every file goes through :mod:`retrieval.run`, which writes atomically. ``config.json`` holds
:func:`run_config_for`'s keys, the source's own (``mode``, ...) and ``best_epoch``.
"""

from __future__ import annotations

import logging
import platform
from pathlib import Path
from typing import Any

import torch

from retrieval import run
from retrieval.errors import RetrievalError
from retrieval.run import LAST_WEIGHTS_NAME
from retrieval.training.resume import RunState, checkpoint_state
from retrieval.training.totals import EpochTotals, warn_on_collapse
from retrieval.training.validation import Validation
from retrieval.verification import few_pairs_caveat

__all__ = ["best_epoch_verification", "run_config_for", "write_baseline", "write_epoch", "write_untouched_as_best", "write_untrained"]

log = logging.getLogger("retrieval")


def run_config_for(config, source, data_config: dict[str, Any], precision: str, steps_per_epoch: int, ctx) -> dict[str, Any]:
    """``config.json``'s contents for a resolved config and its training source (without the epoch keys)."""
    import albumentations
    import timm

    return {
        "backbone": config.backbone,
        "embedding_dim": config.embedding_dim,
        "image_size": config.image_size,
        "data_config": data_config,
        "normalisation": {"mean": data_config["mean"], "std": data_config["std"]},
        "loss": config.loss,
        "miner": config.miner,
        "margin": config.margin,
        "temperature": config.temperature,
        "distance": "euclidean",
        "precision": precision,
        "data_dir": str(Path(config.data_dir).resolve()),
        "class_names": source.folder.class_names,
        "train_classes": source.train_folder.class_names,
        "val_classes": source.val_folder.class_names,
        "class_counts": source.folder.class_counts(),
        "steps_per_epoch": steps_per_epoch,
        "transforms": {"train": {"strength": config.augment, "recipe": "aligned faces" if config.faces else "images",
                            **({"face_jitter": config.face_jitter} if config.faces else {}), **data_config},
                       "eval": data_config},
        "train_settings": config.train_settings(),
        "command": config.command,
        "versions": {
            "retrieval": __import__("retrieval").__version__,
            "torch": torch.__version__,
            "timm": timm.__version__,
            "albumentations": albumentations.__version__,
            "python": platform.python_version(),
        },
        **source.config_entries(),
        "distributed": ctx.describe(),
    }


def write_baseline(run_dir: Path, history: list[dict[str, Any]], baseline: Validation) -> None:
    """The untrained model's metrics row and validation distances, before the first epoch."""
    run_dir.mkdir(parents=True, exist_ok=True)
    run.write_metrics(run_dir, history)
    if baseline.distances is not None:
        run.write_val_distances(run_dir, {**baseline.distances, "epoch": 0})
    threshold = baseline.verification.threshold if baseline.verification is not None else None
    if threshold is not None and (caveat := few_pairs_caveat(threshold)):
        log.warning("the validation classes give %s (more or larger validation classes, or `retrieval calibrate` on a "
                    "bigger folder)", caveat)


def write_untrained(setup, state: RunState, baseline: Validation) -> None:
    """``--epochs 0``: the untrained model as the best and the last weights (with its τ), and its checkpoint."""
    write_untouched_as_best(setup, baseline)
    run.save_model(setup.run_dir, setup.model, setup.run_config, weights_name=LAST_WEIGHTS_NAME)
    run.write_checkpoint(setup.run_dir, checkpoint_state(setup, 0, state))


def write_untouched_as_best(setup, baseline: Validation) -> None:
    """The model before any training (epoch 0) as the best weights, with its τ: the result of
    ``--epochs 0``, and the first candidate of a run from pretrained weights with validation classes
    (an epoch replaces it only by matching or beating its MAP@R)."""
    run.save_model(setup.run_dir, setup.model,
                   best_epoch_verification(setup.run_dir, {**setup.run_config, "best_epoch": 0}, baseline, 0))


def write_epoch(setup, state: RunState, epoch: int, totals: EpochTotals, validation: Validation, improved: bool) -> None:
    """Everything an epoch leaves in the run directory (see the module docstring)."""
    run_dir, model, run_config = setup.run_dir, setup.model, setup.run_config
    warn_on_collapse(state.history[-1], totals)
    run.write_mining_log(run_dir, epoch, totals.hardest_rows(epoch, setup.source.train_folder, setup.config.data_dir))
    if setup.source.mode == "labelled":  # pseudo-labels (--unlabelled, --pairs) are no classes to confuse
        run.write_confusions(run_dir, epoch, totals.confusion_rows(epoch, setup.source.train_folder.class_names))
    run.write_metrics(run_dir, state.history)
    if improved:
        if validation.distances is not None:  # the served weights' distances, as their τ is (the app's ROC marks τ on them)
            run.write_val_distances(run_dir, {**validation.distances, "epoch": epoch})
        run.save_model(run_dir, model, best_epoch_verification(run_dir, {**run_config, "best_epoch": epoch}, validation, epoch))
    else:
        _record_this_command(run_dir, run_config.get("commands"))
    run.save_model(run_dir, model, {**run_config, "epoch": epoch}, weights_name=LAST_WEIGHTS_NAME)
    run.write_checkpoint(run_dir, checkpoint_state(setup, epoch, state))


def _record_this_command(run_dir: Path, commands: Any) -> None:
    """config.json's ``commands`` (every call that trained the run) with this call's, when an epoch
    of it ended without a new best: config.json is otherwise rewritten only with the best weights,
    and a resume that never beat them would be left out, for good (the next resume reads the list
    from there). The rest of config.json, and the weights it names, stay the best epoch's."""
    try:
        stored = run.read_config(run_dir)
    except RetrievalError:  # no config.json yet: the best epoch's commit will record the commands
        return
    if commands and stored.get("commands") != commands:
        stored.updated(commands=commands).write(run_dir)


def best_epoch_verification(run_dir: Path, config: dict[str, Any], validation: Validation, epoch: int) -> dict[str, Any]:
    """``config`` for a new best epoch: with its validation τ as ``"verification"``, or without one
    (no validation classes). A τ already in ``config.json`` from another source (``retrieval
    calibrate``) was chosen for the weights this epoch replaces: the new epoch wins, with a warning."""
    entry = validation.verification_entry(epoch)
    previous = _stored_verification(run_dir)
    if previous is not None and not str(previous.get("pairs", "")).startswith("validation classes"):
        replaced = "replaced by this epoch's, from the validation classes" if entry else "dropped (no validation classes to choose a new one)"
        log.warning("epoch %d is the new best: the threshold τ = %.4f that `retrieval calibrate` set for the earlier weights is %s; "
                    "run `retrieval calibrate` again to choose it on your folder", epoch, previous.get("threshold", float("nan")), replaced)
    config = {key: value for key, value in config.items() if key != "verification"}
    return config if entry is None else {**config, "verification": entry}


def _stored_verification(run_dir: Path) -> dict[str, Any] | None:
    """``config.json``'s ``"verification"`` as stored now (None without one, or without a config yet)."""
    try:
        return run.read_config(run_dir).verification
    except RetrievalError:
        return None
