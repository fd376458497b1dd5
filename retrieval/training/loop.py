"""The training loop, as timm's ``train.py`` reads: :func:`train` → :func:`~retrieval.training.setup.set_up`
→ per epoch :func:`train_one_epoch` → :func:`~retrieval.training.validation.validate` → write the
epoch (rank 0, :mod:`retrieval.training.outputs`).

Each step: the fine-tuning schedule sets what learns (:meth:`~retrieval.training.setup.TrainingSetup.enter_step`),
the loader's uint8 batch is normalised on the device, embedded (autocast at the run's
precision), gathered into the global batch under torchrun, mined, and the loss back-propagated
through AdamW (the gradient scaler in fp16) and one step of the schedule. A loss that is not
finite stops the run with a one-line error and keeps the last good checkpoint. The first Ctrl-C
stops after the current step on every process: the epoch is discarded and ``--resume`` continues
from the last written one.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from retrieval import distributed
from retrieval.errors import RetrievalError
from retrieval.mining import MiningRecord
from retrieval.model import autocast
from retrieval.run.checkpoint import has_checkpoint
from retrieval.training.config import TrainConfig
from retrieval.training.out_folder import training_lock, undone_if_refused
from retrieval.training.outputs import write_baseline, write_epoch, write_untouched_as_best, write_untrained
from retrieval.training.progress import InterruptFlag, ProgressBar
from retrieval.training.resume import RunState, restore
from retrieval.training.setup import TrainingSetup, set_up
from retrieval.training.totals import EpochTotals
from retrieval.training.validation import Validation, validate

__all__ = ["TrainResult", "train", "train_one_epoch"]

log = logging.getLogger("retrieval")


@dataclass
class TrainResult:
    """What ``train`` returns: the run directory and the metrics rows it wrote."""

    run_dir: Path
    history: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int = 0
    interrupted: bool = False
    resumable: bool = True  # interrupted with a checkpoint in run_dir (False: stopped before any epoch ended)
    wrote: bool = True  # False: a resume with no epoch left to train, which changed nothing


def train(
    config: TrainConfig,
    *,
    progress: bool = True,
    on_epoch: Callable[[dict], None] | None = None,
    objective: tuple[Callable, Callable | None] | None = None,
    on_start: Callable[[], None] | None = None,
) -> TrainResult:
    """Train (or resume) a run as :mod:`retrieval.training` describes; returns the run and its history.

    ``objective`` replaces the (loss, miner) that ``config.loss`` / ``config.miner`` name, with the
    same call conventions (``miner(embeddings, labels, indices)``, ``loss(embeddings, labels,
    mined)``); the benchmarks use it to run another library's loss in the same pipeline.
    ``on_start`` is called on rank 0 once the run is set up (its data, model and folder accepted),
    before the untrained model's validation: the CLI's line on the defaults taken, which an input
    refused at set-up would otherwise precede.

    Under ``torchrun`` every process calls this; they train one model with DDP on shares of each
    global batch, and rank 0 writes the run (:mod:`retrieval.distributed`), holding its lock
    (:func:`~retrieval.training.out_folder.training_lock`: one ``retrieval train`` per ``--out``).
    """
    config = config.resolve()
    config.validate()
    if config.resume and not Path(config.out).is_dir():  # before the lock, which would create it
        raise RetrievalError(f"--resume: {config.out} does not exist; start a new run there without --resume")
    with distributed.process_group(config.device, timeout_s=config.dist_timeout) as ctx, training_lock(config.out, ctx):
        # a new run refused for its input (or Ctrl-C) before its first save leaves --out as it was, faces/ included
        with undone_if_refused(config.out, resume=bool(config.resume), is_main=ctx.is_main):
            setup = set_up(config, ctx, objective=objective, progress=progress)
        if ctx.is_main and on_start is not None:
            on_start()
        if ctx.is_main and not setup.source.val_folder.paths:
            log.warning("%s: no validation classes (a flat folder, --val-fraction 0, or too few classes of two or more images to hold one out): no Recall@1 / MAP@R / EER each epoch "
                        "and no threshold τ; set one with `retrieval calibrate %s DATA_DIR`", setup.run_dir, setup.run_dir)
        try:
            state, baseline = _start(setup)
        except KeyboardInterrupt:  # Ctrl-C during the untrained model's validation, before training's own handling
            if ctx.is_main and setup.checkpoint is None:
                log.warning("interrupted before the first epoch: %s holds nothing to resume from; start the run again "
                            "(with --force if the folder is not empty)", setup.run_dir)
            raise
        if setup.checkpoint is None and setup.config.epochs == 0:
            if ctx.is_main:
                write_untrained(setup, state, baseline)
            ctx.barrier()  # the run directory is complete when train() returns, on every process
            return TrainResult(setup.run_dir, state.history, best_epoch=0)
        return _run_epochs(setup, state, progress=progress, on_epoch=on_epoch)


def train_one_epoch(setup: TrainingSetup, epoch: int, interrupted: InterruptFlag, *, progress: bool) -> EpochTotals:
    """One pass over the epoch's batches; its totals (stops early when Ctrl-C was pressed)."""
    setup.batches.set_epoch(epoch)
    setup.model.train()
    totals = EpochTotals(setup.config.hardest_per_epoch)
    bar = ProgressBar(progress, epoch, setup.config.epochs, setup.steps_per_epoch)
    try:
        for step, (images, labels, indices) in enumerate(setup.loader):
            if setup.ctx.any(interrupted.requested):  # every process stops at the same step
                interrupted.requested = True
                break
            setup.enter_step(epoch, step)  # the fine-tuning schedule: frozen backbone, BatchNorm mode (retrieval.training.finetune)
            loss, embeddings, record = _train_step(setup, images, labels, indices, epoch=epoch, step=step)
            totals.add(loss, len(embeddings), record, embeddings)
            bar.advance(totals)
    finally:
        totals.finish()
        bar.close()
    return totals


def _start(setup: TrainingSetup) -> tuple[RunState, Validation | None]:
    """The checkpoint's state on ``--resume``; else the untrained model's row (epoch 0), written,
    with its validation."""
    if setup.checkpoint is not None:
        return restore(setup, setup.checkpoint), None
    baseline = validate(setup.model, setup.source.val_folder, setup.eval_transform, setup.device, setup.precision,
                        setup.config.margin, target_far=setup.config.target_far, ctx=setup.ctx)
    # every key a trained epoch's row has (null: nothing trained), so a reader may index any row by key
    history = [{"epoch": 0, "loss": None, **baseline.metrics, "active_fraction": None, "violating_fraction": None,
                "inverted_anchor_fraction": None, "violating_anchor_fraction": None, "mean_d_ap": None, "mean_d_an": None,
                "embedding_spread": None, "lr": 0.0, "images_per_second": None, "train_seconds": None, "seconds": 0.0}]
    if setup.ctx.is_main:  # only rank 0 writes the run directory
        write_baseline(setup.run_dir, history, baseline)
    state = RunState(history, {"epoch": 0, "map_at_r": -1.0}, start_epoch=1)
    score = baseline.metrics.get("map_at_r")
    if setup.config.starts_pretrained and score is not None and setup.config.epochs > 0:
        # the untouched pretrained model competes for the best epoch: fine-tuning that only makes
        # validation worse leaves it as model.safetensors (a random one is no candidate)
        state.best = {"epoch": 0, "map_at_r": float(score)}
        if setup.ctx.is_main:
            write_untouched_as_best(setup, baseline)
    return state, baseline


def _run_epochs(setup: TrainingSetup, state: RunState, *, progress: bool, on_epoch) -> TrainResult:
    """The epochs from ``state.start_epoch`` to ``--epochs``: train, validate, write (rank 0), report."""
    config, ctx = setup.config, setup.ctx
    result = TrainResult(setup.run_dir, state.history, best_epoch=state.best["epoch"], wrote=state.start_epoch <= config.epochs)
    with InterruptFlag() as interrupted:
        for epoch in range(state.start_epoch, config.epochs + 1):
            started = time.perf_counter()
            totals = train_one_epoch(setup, epoch, interrupted, progress=progress and ctx.is_main)
            if ctx.any(interrupted.requested):
                result.interrupted = True
                result.resumable = has_checkpoint(setup.run_dir)
                if result.resumable:
                    log.warning("interrupted: epoch %d discarded; %s holds epoch %d. Continue with --resume.", epoch, setup.run_dir, epoch - 1)
                else:  # stopped in the first epoch of a new run: no epoch has ended, no checkpoint to resume from
                    log.warning("interrupted: epoch %d discarded; no epoch had ended, so %s holds nothing to resume from: "
                                "start the run again (with --force: the folder is not empty)", epoch, setup.run_dir)
                break
            validation = validate(setup.model, setup.source.val_folder, setup.eval_transform, setup.device, setup.precision,
                                  config.margin, target_far=config.target_far, ctx=ctx)
            row = totals.summary(epoch, time.perf_counter() - started, setup.schedule.get_last_lr()[-1])
            row.update(validation.metrics)
            improved = state.record(epoch, row)
            if ctx.is_main:  # only rank 0 writes; the others go on to the next epoch's first step
                write_epoch(setup, state, epoch, totals, validation, improved)
            result.best_epoch = state.best["epoch"]
            if on_epoch is not None and ctx.is_main:
                on_epoch(row)
    result.history = state.history
    ctx.barrier()  # the run directory is complete when train() returns, on every process
    return result


def _train_step(setup: TrainingSetup, images, labels, indices, *, epoch: int, step: int) -> tuple[float, torch.Tensor, MiningRecord]:
    """Forward, mine, loss, backward and optimiser step on one batch; (loss, detached embeddings, mining record)."""
    config, device, objective = setup.config, setup.device, setup.objective
    images = setup.train_transform.finish_batch(images.to(device, non_blocking=True))
    if config.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    labels = labels.to(device, non_blocking=True)
    with autocast(device, setup.precision):
        embeddings = setup.forward(images)
    embeddings = embeddings.float()
    # under torchrun: the global batch, in sampler order, gradients back to this share
    embeddings, labels, indices = setup.ctx.gather_batch(embeddings, labels, indices)
    mined = objective.mine(embeddings, labels, indices)
    value = objective.loss(embeddings, labels, mined)
    if not torch.isfinite(value):
        raise RetrievalError(
            f"loss became {value.item()} at epoch {epoch}, step {step + 1}: stopped; the last good "
            f"checkpoint (epoch {epoch - 1}) is kept. Try a lower --lr (now {config.lr:g})"
        )
    setup.optimiser.zero_grad(set_to_none=True)
    setup.scaler.scale(value).backward()
    setup.scaler.step(setup.optimiser)
    setup.scaler.update()
    setup.schedule.step()
    detached = embeddings.detach()
    return float(value.detach()), detached, objective.record(mined, detached, labels, indices)
