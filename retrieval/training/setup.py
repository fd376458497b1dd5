"""Setting a run up: everything the epochs need, built once, in an order that keeps runs reproducible.

:func:`set_up` reads the checkpoint (``--resume``), builds the training source, seeds torch and
builds the model, the objective, the transforms, the sampler and loader, AdamW with its cosine
schedule, the gradient scaler and the run's ``config.json`` contents. The order matters: torch's
random state after seeding is consumed by the model's initialisation and then by every loader
iteration, so a run with the same seed draws the same weights and the same batches.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from retrieval import data, distributed
from retrieval.embed import embed_images
from retrieval.errors import RetrievalError
from retrieval.model import EmbeddingModel, resolve_precision
from retrieval.run import has_checkpoint, read_checkpoint
from retrieval.training.config import TrainConfig
from retrieval.training.objective import Objective
from retrieval.training.outputs import run_config_for
from retrieval.training.resume import config_for_resume
from retrieval.training.seeded_items import KeyedBatches, SeededItems
from retrieval.training.sources import TrainingSource, build_source

__all__ = ["TrainingSetup", "set_up", "cosine_with_warmup"]


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

    @property
    def device(self) -> torch.device:
        return self.ctx.device  # config.device, or cuda:LOCAL_RANK under torchrun

    @property
    def steps_per_epoch(self) -> int:
        return len(self.batches)


def set_up(config: TrainConfig, ctx: distributed.DistributedContext, *,
           objective: tuple[Callable, Callable | None] | None = None) -> TrainingSetup:
    """Build the run for a resolved, validated ``config`` (see the module docstring)."""
    run_dir = Path(config.out)
    checkpoint = read_checkpoint(run_dir) if config.resume else None
    if not config.resume and has_checkpoint(run_dir):
        raise RetrievalError(f"{run_dir} already holds a run; pass --resume to continue it or choose another --out")
    if checkpoint is not None:
        config = config_for_resume(config, run_dir)
    precision = resolve_precision(config.precision, ctx.device)
    source = build_source(config)
    torch.manual_seed(config.seed)
    model, forward, data_config = _build_model(config, ctx)
    run_objective = Objective.for_config(config, source.rules, replacement=objective)
    # workers hand over uint8 pixels; the step normalises the whole batch (train_transform.finish_batch)
    train_transform = source.make_train_transform(data_config, normalise_in_batch=True)
    eval_transform = data.build_transforms(data_config, train=False)
    batches, loader = _build_loader(config, ctx, source, model, train_transform, eval_transform, precision)
    optimiser, schedule, scaler = _build_optimiser(config, model, ctx.device, precision, len(batches))
    run_config = run_config_for(config, source, data_config, precision, len(batches), ctx)
    return TrainingSetup(config, run_dir, ctx, source, model, forward, run_objective, train_transform, eval_transform, batches, loader,
                         optimiser, schedule, scaler, precision, run_config, checkpoint)


def cosine_with_warmup(total_steps: int, warmup: int) -> Callable[[int], float]:
    """lr factor: linear warm-up to 1 over ``warmup`` steps, then cosine decay to 0 at ``total_steps``."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def _build_model(config: TrainConfig, ctx: distributed.DistributedContext):
    """(model on the device, the forward the step calls, the backbone's data config at the image size)."""
    model = EmbeddingModel(config.backbone, config.embedding_dim, pretrained=config.pretrained, weights=config.weights)
    data_config = model.data_config(config.image_size)
    model.to(ctx.device)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    forward = ctx.wrap_model(model, sync_bn=config.sync_bn)  # model.forward_unnormalised, or DDP around it
    return model, forward, data_config


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
                                  embed_images=functools.partial(embed_images, ctx=ctx))
    ctx.require_batch(sampler.classes_per_batch * sampler.images_per_class)
    batches = KeyedBatches(sampler, config.seed, shard=(ctx.rank, ctx.world_size))
    loader = data.make_loader(SeededItems(train_set), batch_sampler=batches, num_workers=workers, device=ctx.device)
    return batches, loader


def _build_optimiser(config: TrainConfig, model: EmbeddingModel, device: torch.device, precision: str, steps_per_epoch: int):
    """AdamW (the backbone at ``config.backbone_lr_scale`` of the lr), the warm-up + cosine schedule
    over every step of the run (warm-up: the first 5 %), and the fp16 gradient scaler."""
    total_steps = max(1, config.epochs * steps_per_epoch)
    parameters = [
        {"params": model.backbone.parameters(), "lr": config.lr * config.backbone_lr_scale},
        {"params": model.head.parameters(), "lr": config.lr},
    ]
    optimiser = torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, cosine_with_warmup(total_steps, warmup=max(1, total_steps // 20)))
    scaler = torch.amp.GradScaler("cuda", enabled=(device.type == "cuda" and precision == "fp16"))
    return optimiser, schedule, scaler
