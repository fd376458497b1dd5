"""Setting a run up: everything the epochs need, built once, in an order that keeps runs reproducible.

:func:`set_up` checks the ``--out`` folder (:mod:`~retrieval.training.out_folder`), reads the
checkpoint (``--resume``), builds the training source, seeds torch and
builds the model, the objective, the transforms, the sampler and loader, AdamW with its cosine
schedule, the gradient scaler, the fine-tuning schedule (:mod:`~retrieval.training.finetune`:
which parameters learn at which step, BatchNorm's mode; :meth:`TrainingSetup.enter_step` applies
it before every step) and the run's ``config.json`` contents (with ``weights_source``, where the
starting weights came from). The order matters: torch's random state after seeding is consumed by
the model's initialisation and then by every loader iteration, so a run with the same seed draws
the same weights and the same batches.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from retrieval import data, distributed
from retrieval.embed import embed_readable
from retrieval.model import EmbeddingModel, resolve_precision
from retrieval.progress import stage_bars
from retrieval.run import read_checkpoint, read_config
from retrieval.training.config import TrainConfig
from retrieval.training.finetune import FineTuning, backbone_lr_factor, weights_source
from retrieval.training.objective import Objective
from retrieval.training.out_folder import check_same_classes, clear_earlier_run, commands_so_far, prepare_out
from retrieval.training.outputs import run_config_for
from retrieval.training.resume import config_for_resume
from retrieval.training.seeded_items import KeyedBatches, SeededItems
from retrieval.training.sources import TrainingSource, build_source

__all__ = ["TrainingSetup", "set_up", "cosine_with_warmup"]

log = logging.getLogger("retrieval")


@dataclass
class TrainingSetup:
    """What one ``train()`` call works with (on every process under torchrun)."""

    config: TrainConfig  # resolved; on --resume the saved run's settings
    run_dir: Path  # this call's --out (a resumed run may have been started from another working directory)
    ctx: distributed.DistributedContext
    source: TrainingSource
    model: EmbeddingModel
    forward: Callable[[torch.Tensor], torch.Tensor]  # model.forward_unnormalised, or DDP around it
    objective: Objective
    train_transform: data.ImageTransform  # hands over uint8 pixels; finish_batch normalises the batch
    eval_transform: data.ImageTransform
    batches: KeyedBatches
    loader: Any
    optimiser: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    precision: str
    run_config: dict[str, Any]  # config.json without the epoch keys
    checkpoint: dict[str, Any] | None  # the state to resume from
    fine_tuning: FineTuning = FineTuning(0)  # what learns at which step, BatchNorm's mode
    _trainable: tuple | None = None  # the fine-tuning state the forward wrapper was built for

    @property
    def device(self) -> torch.device:
        return self.ctx.device  # config.device, or cuda:LOCAL_RANK under torchrun

    @property
    def steps_per_epoch(self) -> int:
        return len(self.batches)

    def enter_step(self, epoch: int, step: int) -> None:
        """Put the model in the fine-tuning state of (epoch, step): frozen parameters, BatchNorm modes.
        Under torchrun the DDP wrapper is rebuilt when the set of learning parameters changes."""
        global_step = (epoch - 1) * self.steps_per_epoch + step
        self.fine_tuning.apply(self.model, global_step)
        trainable = self.fine_tuning.trainable_signature(global_step)
        if self.ctx.enabled and self._trainable is not None and trainable != self._trainable:
            self.forward = self.ctx.wrap_model(self.model, sync_bn=self.config.sync_bn)
        self._trainable = trainable


def set_up(config: TrainConfig, ctx: distributed.DistributedContext, *,
           objective: tuple[Callable, Callable | None] | None = None, progress: bool = False) -> TrainingSetup:
    """Build the run for a resolved, validated ``config`` (see the module docstring); ``progress``:
    a progress bar while a face run finds its faces (rank 0 only)."""
    run_dir = Path(config.out)
    replacing = prepare_out(run_dir, resume=bool(config.resume), force=bool(config.force), is_main=ctx.is_main)
    checkpoint = read_checkpoint(run_dir) if config.resume else None
    if checkpoint is not None:
        config = config_for_resume(config, run_dir)
    elif ctx.is_main:  # a new run: settings that are valid but change nothing (a resume was warned when it started)
        for line in config.warnings():
            log.warning("%s", line)
    precision = resolve_precision(config.precision, ctx.device)
    if precision == "fp16" and ctx.device.type != "cuda" and ctx.is_main:
        log.warning("--precision fp16 on %s: half precision without loss scaling (the scaler is CUDA's), where small "
                    "gradients can round to 0; bf16 or fp32 is what a CPU trains in (auto picks one)", ctx.device)
    with stage_bars({"detect": "finding faces"}, enabled=progress and ctx.is_main, stderr=False) as bars:  # a terminal's only
        source = build_source(config, on_progress=lambda done, total: bars("detect", done, total), ctx=ctx)
    if getattr(source, "classes_per_batch", config.classes_per_batch) != config.classes_per_batch:
        config = dataclasses.replace(config, classes_per_batch=source.classes_per_batch)  # P fitted to the classes (sources)
    if getattr(source, "groups_per_batch", config.groups_per_batch) != config.groups_per_batch:
        config = dataclasses.replace(config, groups_per_batch=source.groups_per_batch)  # G fitted to the groups (labelled source)
    if checkpoint is not None:
        check_same_classes(run_dir, source.folder.class_names)
    torch.manual_seed(config.seed)
    model, forward, data_config = _build_model(config, ctx, resuming=checkpoint is not None)
    if source.greyscale:  # a model trained on grey images only is shown grey ones (data.build_transforms)
        data_config = {**data_config, "greyscale": True}
    run_objective = Objective.for_config(config, source.rules, replacement=objective)
    # workers hand over uint8 pixels; the step normalises the whole batch (train_transform.finish_batch)
    train_transform = source.make_train_transform(data_config, normalise_in_batch=True)
    eval_transform = data.build_transforms(data_config, train=False)
    batches, loader = _build_loader(config, ctx, source, model, train_transform, eval_transform, precision)
    optimiser, schedule, scaler = _build_optimiser(config, model, ctx.device, precision, len(batches))
    run_config = {**run_config_for(config, source, data_config, precision, len(batches), ctx),
                  "faces": getattr(source, "faces", None),  # the face pipeline (--faces) or null
                  "weights_source": _weights_source(config, model, run_dir, resuming=checkpoint is not None),
                  # every call that trained the run, each flag of which took effect (a resume refuses the others)
                  "commands": [*commands_so_far(run_dir, checkpoint is not None), *([config.command] if config.command else [])]}
    fine_tuning = FineTuning.for_config(config, len(batches))
    if ctx.is_main and checkpoint is None and config.epochs > 0 and fine_tuning.warmup_steps >= config.epochs * len(batches):
        log.warning("--freeze-backbone-epochs %g covers all %d epoch(s): the backbone stays frozen and only the head "
                    "learns; give more --epochs, or --freeze-backbone-epochs 0 for the backbone to learn from the start",
                    config.freeze_backbone_epochs, config.epochs)
    if replacing:  # --force: the data, model and weights are checked; the earlier run goes only now
        clear_earlier_run(run_dir, ctx.is_main)
    setup = TrainingSetup(config, run_dir, ctx, source, model, forward, run_objective, train_transform, eval_transform, batches, loader,
                          optimiser, schedule, scaler, precision, run_config, checkpoint, fine_tuning)
    if ctx.enabled:  # DDP takes the parameters that learn when it is built: build it for the first step's state
        first_epoch = 1 if checkpoint is None else int(checkpoint["epoch"]) + 1
        setup.enter_step(first_epoch, 0)
        setup.forward = ctx.wrap_model(model, sync_bn=config.sync_bn)
    return setup


def cosine_with_warmup(total_steps: int, warmup: int) -> Callable[[int], float]:
    """lr factor: linear warm-up to 1 over ``warmup`` steps, then cosine decay to 0 at ``total_steps``."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def _build_model(config: TrainConfig, ctx: distributed.DistributedContext, *, resuming: bool):
    """(model on the device, the forward the step calls, the backbone's data config at the image size).
    On ``--resume`` the weights come from the checkpoint: the starting weights are not read again
    (a moved or deleted ``--weights`` file does not stop a resume)."""
    starting = {} if resuming else {"pretrained": config.pretrained, "weights": config.weights}
    model = EmbeddingModel(config.backbone, config.embedding_dim, flip_average=bool(config.flip_average), **starting)
    data_config = model.data_config(config.image_size)
    if config.faces:  # aligned crops are framed by the template at this size: evaluation takes them whole, no centre crop
        data_config = {**data_config, "crop_pct": 1.0}
    model.to(ctx.device)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    forward = ctx.wrap_model(model, sync_bn=config.sync_bn)  # model.forward_unnormalised, or DDP around it
    return model, forward, data_config


def _weights_source(config: TrainConfig, model: EmbeddingModel, run_dir: Path, *, resuming: bool) -> dict[str, Any]:
    """config.json's ``weights_source`` (:func:`~retrieval.training.finetune.weights_source`); on
    ``--resume`` the run's own record (a run saved before the record existed: name and kind, no digest)."""
    if resuming:
        saved = read_config(run_dir).get("weights_source")
        if isinstance(saved, dict):
            return saved
        kind = "file" if config.weights is not None else "hub" if config.pretrained else "random"
        name = str(config.weights) if config.weights is not None else config.backbone if config.pretrained else None
        return {"kind": kind, "name": name, "sha256": None}
    return weights_source(pretrained=bool(config.pretrained), weights=config.weights, backbone=model.backbone)


def _build_loader(config: TrainConfig, ctx: distributed.DistributedContext, source: TrainingSource, model,
                  train_transform, eval_transform, precision: str) -> tuple[KeyedBatches, Any]:
    """The source's sampler, keyed for seeded items (this process's share under torchrun), and its loader."""
    workers = ctx.loader_workers(config.num_workers)
    if workers is None:
        workers = data.default_num_workers(ctx.device)
    # every worker sees every image over an epoch, so each holds its own share-sized cache
    cache_bytes = int(config.cache_mb * 2**20) // max(1, workers)
    train_set = data.ImageDataset(source.train_folder.paths, source.train_folder.labels, train_transform, cache_bytes=cache_bytes)
    sampler = source.make_sampler(model=model, transform=eval_transform, device=ctx.device, precision=precision,
                                  embed_readable=functools.partial(embed_readable, ctx=ctx))
    ctx.require_batch(sampler.classes_per_batch * sampler.images_per_class)
    batches = KeyedBatches(sampler, config.seed, shard=(ctx.rank, ctx.world_size))
    loader = data.make_loader(SeededItems(train_set), batch_sampler=batches, num_workers=workers, device=ctx.device)
    return batches, loader


def _build_optimiser(config: TrainConfig, model: EmbeddingModel, device: torch.device, precision: str, steps_per_epoch: int):
    """AdamW (the backbone at ``config.backbone_lr_scale`` of the lr), the warm-up + cosine schedule
    over every step of the run (warm-up: the first 5 %), and the fp16 gradient scaler. With a head
    warm-up of W steps the backbone's factor is 0 until step W, then its own warm-up + cosine over
    the steps left (:func:`~retrieval.training.finetune.backbone_lr_factor`)."""
    total_steps = max(1, config.epochs * steps_per_epoch)
    parameters = [
        {"params": model.backbone.parameters(), "lr": config.lr * config.backbone_lr_scale},
        {"params": model.head.parameters(), "lr": config.lr},
    ]
    optimiser = torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay)
    head = cosine_with_warmup(total_steps, warmup=max(1, total_steps // 20))
    frozen_steps = FineTuning.for_config(config, steps_per_epoch).warmup_steps
    backbone = backbone_lr_factor(total_steps, frozen_steps, cosine_with_warmup) if frozen_steps else head
    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, [backbone, head])
    scaler = torch.amp.GradScaler("cuda", enabled=(device.type == "cuda" and precision == "fp16"))
    return optimiser, schedule, scaler
