"""The training loop: a labelled folder in, a run directory out (DESIGN.md, "The run directory").

``train(TrainConfig(...))`` scans the folder, holds out whole classes for validation, and trains
an :class:`~retrieval.models.EmbeddingModel` on P×K batches with a contrastive objective and an
online miner. AdamW with a cosine learning-rate schedule (linear warm-up over the first 5 % of
steps). After every epoch it writes, atomically:

- ``metrics.jsonl``: one row per epoch (epoch 0 is the untrained model): loss, Recall@1 and
  MAP@R on the held-out classes, fraction of mined triplets with loss > 0, mean d_ap / d_an,
  learning rate, images/s, seconds;
- ``mining/epoch_NNN.jsonl``: the epoch's hardest mined triplets (smallest d_an − d_ap),
  deduplicated by (anchor, negative) image pair, with paths relative to ``data_dir``;
- ``model.safetensors`` (best epoch by validation MAP@R; the last epoch when there are no
  validation classes), ``model_last.safetensors`` and ``checkpoint.pt`` (model, optimiser,
  schedule, sampler position, RNG state, history) for ``--resume``;
- ``val_distances.json``: positive- and negative-pair distances on the held-out classes.

Augmentation is seeded per item from (seed, epoch, position in the epoch), so a run resumed
after epoch E continues exactly as an uninterrupted one, whatever the number of loader workers.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import math
import platform
import random
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch

from retrieval import data, distributed, implicit, losses, mining, models
from retrieval.errors import RetrievalError
from retrieval.evaluate import retrieval_metrics
from retrieval.models import CONFIG_NAME, EmbeddingModel, write_atomic
from retrieval.negatives import NEGATIVE_MODES, NegativeRules
from retrieval.runs import CHECKPOINT_NAME, LAST_WEIGHTS_NAME, METRICS_NAME, VAL_DISTANCES_NAME, mining_log_path

log = __import__("logging").getLogger("retrieval")

LOSSES = tuple(losses.LOSSES)
MINERS = mining.TRIPLET_STRATEGIES + tuple(f"pair-{s}" for s in mining.PAIR_STRATEGIES) + ("none",)
#: the miner each objective uses when ``--miner`` is not given
NATURAL_MINER = {
    "triplet": "semihard",
    "contrastive": "none",
    "lifted": "none",
    "npair": "none",
    "nce": "none",
    "infonce": "none",
}


@dataclass
class TrainConfig:
    """Everything ``retrieval train`` takes; defaults are the ones measured in BENCHMARKS.md."""

    data_dir: Path
    out: Path
    backbone: str = "resnet18"
    pretrained: bool = False
    weights: Optional[Path] = None
    embedding_dim: int = 128
    image_size: int = 128
    loss: str = "triplet"
    miner: Optional[str] = None
    margin: float = 0.2
    temperature: float = 0.1
    epochs: int = 10
    classes_per_batch: int = 16
    images_per_class: int = 4
    lr: float = 1e-3
    weight_decay: float = 1e-4
    val_fraction: float = 0.2
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    num_workers: Optional[int] = None
    cache_mb: float = 1024.0  # decoded training images kept in memory, split between loader workers
    augment: float = 1.0
    class_groups: Optional[Path] = None
    groups_per_batch: Optional[int] = None
    never_negative: Optional[Path] = None
    negatives: str = "all"
    hardest_per_epoch: int = 50
    resume: bool = False
    channels_last: bool = False  # faster model step on CPU, but the whole step was not (BENCHMARKS.md)
    command: str = ""
    # issue 8, several processes under torchrun (retrieval.distributed)
    sync_bn: bool = False
    dist_timeout: float = distributed.DEFAULT_TIMEOUT_S
    # issue 7, training without negative labels (retrieval.implicit): augmentation positives / positive-only pairs
    unlabelled: bool = False
    pairs: Optional[Path] = None
    pair_negatives: str = "random"
    pair_groups: Optional[Path] = None
    batch_size: Optional[int] = None

    def validate(self) -> None:
        """One-line errors for flag values that cannot work."""
        checks = [
            (self.loss in LOSSES, f"unknown loss {self.loss!r}: use one of {', '.join(LOSSES)}"),
            (self.miner is None or self.miner in MINERS, f"unknown miner {self.miner!r}: use one of {', '.join(MINERS)}"),
            (self.epochs >= 0, f"--epochs must be 0 or more, got {self.epochs}"),
            (self.classes_per_batch >= 2, f"--classes-per-batch must be at least 2 (negatives come from other classes), got {self.classes_per_batch}"),
            (self.images_per_class >= 2, f"--images-per-class must be at least 2 (positives come from the same class), got {self.images_per_class}"),
            (self.embedding_dim >= 1, f"--embedding-dim must be positive, got {self.embedding_dim}"),
            (self.image_size >= 16, f"--image-size must be at least 16, got {self.image_size}"),
            (self.lr > 0 and math.isfinite(self.lr), f"--lr must be positive, got {self.lr}"),
            (self.margin >= 0 and math.isfinite(self.margin), f"--margin must be 0 or more, got {self.margin}"),
            (self.temperature > 0, f"--temperature must be positive, got {self.temperature}"),
            (0 <= self.val_fraction < 1, f"--val-fraction must be in [0, 1), got {self.val_fraction}"),
            (self.negatives in NEGATIVE_MODES, f"--negatives must be one of {', '.join(NEGATIVE_MODES)}, got {self.negatives!r}"),
            (self.negatives == "all" or self.class_groups is not None, f"--negatives {self.negatives} needs --class-groups FILE"),
            (self.hardest_per_epoch >= 0, "--hardest must be 0 or more"),
            (self.augment >= 0, f"--augment must be 0 or more, got {self.augment}"),
            (self.cache_mb >= 0, f"--cache-mb must be 0 or more, got {self.cache_mb}"),
            (self.num_workers is None or self.num_workers >= 0, f"--workers must be 0 or more, got {self.num_workers}"),
            (self.dist_timeout > 0, f"--dist-timeout must be positive, got {self.dist_timeout}"),
        ]
        for ok, message in checks:
            if not ok:
                raise RetrievalError(message)
        if self.pretrained and self.weights is not None:
            raise RetrievalError("give --pretrained or --weights FILE, not both")
        implicit.check_config(self)

    @property
    def effective_miner(self) -> str:
        return self.miner or NATURAL_MINER[self.loss]


@dataclass
class TrainResult:
    """What ``train`` returns: the run directory and the metrics rows it wrote."""

    run_dir: Path
    history: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int = 0
    interrupted: bool = False


# ----------------------------------------------------------------------------- objective


def build_objective(config: TrainConfig, rules: NegativeRules | None):
    """(loss, miner-or-None, record-miner) for the config.

    The record miner computes the mining record (hardest triplets, active fraction) when the
    objective uses no miner of its own: every run logs which negatives were hardest.
    """
    loss = losses.build_loss(config.loss, margin=config.margin, temperature=config.temperature, negative_rules=rules)
    hardest_k = max(config.hardest_per_epoch, 1)
    miner = mining.build_miner(config.effective_miner, config.margin, negative_rules=rules, hardest_k=hardest_k)
    if isinstance(miner, mining.TripletMiner):
        record_miner = miner
    else:
        record_miner = mining.TripletMiner("all", config.margin, negative_rules=rules, hardest_k=hardest_k)
    return loss, miner, record_miner


# ----------------------------------------------------------------------------- seeded items


class _SeededItems(torch.utils.data.Dataset):
    """Wraps an ImageDataset: item keys are (seed, epoch, position, index) and the augmentation
    RNGs are seeded from them, so an epoch's pixels do not depend on loader workers or history."""

    def __init__(self, dataset: data.ImageDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key):
        seed, epoch, position, index = key
        item_seed = int.from_bytes(hashlib.blake2b(f"{seed}/{epoch}/{position}".encode(), digest_size=4).digest(), "little")
        random.seed(item_seed)
        np.random.seed(item_seed)
        # the CPU generator only: torch.manual_seed also queues a CUDA seeding call, whose lazy-call
        # bookkeeping formats a stack trace every time (~0.3 ms an image, 7 % of a 2-core training step)
        torch.random.default_generator.manual_seed(item_seed)
        transform = self.dataset.transform
        if hasattr(transform, "set_random_seed"):
            transform.set_random_seed(item_seed)
        return self.dataset[index]


class _KeyedBatches(torch.utils.data.Sampler):
    """Turns the PK sampler's index batches into (seed, epoch, position, index) keys for _SeededItems."""

    def __init__(self, sampler: data.PKSampler, seed: int, *, shard: tuple[int, int] = (0, 1)) -> None:
        self.sampler = sampler
        self.seed = seed
        self.epoch = 0
        self.rank, self.world_size = shard  # under torchrun process r loads batch[r::N], keyed by global position

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self):
        position = 0
        for batch in self.sampler:
            keys = []
            for index in batch:
                keys.append((self.seed, self.epoch, position, int(index)))
                position += 1
            yield keys[self.rank :: self.world_size]


# ----------------------------------------------------------------------------- training


def train(
    config: TrainConfig,
    *,
    progress: bool = True,
    on_epoch: Callable[[dict], None] | None = None,
    objective: tuple[Callable, Callable | None] | None = None,
) -> TrainResult:
    """Train (or resume) a run as the module docstring describes; returns the run and its history.

    ``objective`` replaces the (loss, miner) that ``config.loss`` / ``config.miner`` name, with the
    same call conventions (``miner(embeddings, labels, indices)``, ``loss(embeddings, labels,
    mined)``); the benchmarks use it to run another library's loss in the same pipeline.

    Under ``torchrun`` every process calls this; they train one model with DDP on shares of each
    global batch, and rank 0 writes the run (:mod:`retrieval.distributed`).
    """
    config.validate()
    with distributed.process_group(config.device, timeout_s=config.dist_timeout) as ctx:
        return _train(config, ctx, progress=progress, on_epoch=on_epoch, objective=objective)


def _train(config: TrainConfig, ctx: distributed.DistributedContext, *, progress, on_epoch, objective) -> TrainResult:
    config.validate()
    run_dir = Path(config.out)
    checkpoint = _load_checkpoint(run_dir) if config.resume else None
    if not config.resume and (run_dir / CHECKPOINT_NAME).exists():
        raise RetrievalError(f"{run_dir} already holds a run; pass --resume to continue it or choose another --out")
    if checkpoint is not None:
        config = _config_for_resume(config, run_dir)

    device = ctx.device  # config.device, or cuda:LOCAL_RANK under torchrun
    precision = models.resolve_precision(config.precision, device)
    source = implicit.prepare(config) if implicit.is_implicit(config) else None  # --unlabelled / --pairs: pseudo-labels
    if source is not None:
        folder, train_folder, val_folder, groups, rules = source.folder, source.train_folder, source.val_folder, None, source.rules
    else:
        folder = data.scan_folder(config.data_dir, labelled=True)
        data.require_trainable(folder)
        train_folder, val_folder = data.split_classes(folder, config.val_fraction, config.seed)
        trainable = sum(count >= 2 for count in train_folder.class_counts().values())
        if trainable < 2:
            raise RetrievalError(
                f"{config.data_dir}: {trainable} class(es) with two or more images left for training after holding out "
                f"{len(val_folder.class_names)} for validation; negatives need at least 2 (lower --val-fraction or add classes)"
            )
        groups, never_negative = _domain_knowledge(config, train_folder)
        rules = NegativeRules(never_negative=never_negative, class_groups=groups, negatives=config.negatives) if (groups is not None or never_negative) else None

    torch.manual_seed(config.seed)
    model = EmbeddingModel(config.backbone, config.embedding_dim, pretrained=config.pretrained, weights=config.weights)
    data_config = model.data_config(config.image_size)
    model.to(device)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    forward = ctx.wrap_model(model, sync_bn=config.sync_bn)  # model.forward_unnormalised, or DDP around it
    loss_fn, miner, record_miner = build_objective(config, rules)
    # every valid triplet of a batch, whatever the miner kept (how many still violate the margin);
    # the record miner already mines them all when the objective has no triplet miner of its own
    violation_miner = record_miner if record_miner.strategy == "all" else mining.TripletMiner("all", config.margin, negative_rules=rules, hardest_k=0)
    if objective is not None:
        loss_fn, miner = objective

    # workers hand over uint8 pixels; the step normalises the whole batch (train_transform.finish_batch)
    if source is not None:
        train_transform = source.make_train_transform(data_config, normalise_in_batch=True)
    else:
        train_transform = data.build_transforms(data_config, train=True, strength=config.augment, normalise_in_batch=True)
    eval_transform = data.build_transforms(data_config, train=False)
    workers = ctx.loader_workers(config.num_workers)
    if workers is None:
        workers = data.default_num_workers(device)
    # every worker sees every image over an epoch, so each holds its own share-sized cache
    cache_bytes = int(config.cache_mb * 2**20) // max(1, workers)
    train_set = data.ImageDataset(train_folder.paths, train_folder.labels, train_transform, cache_bytes=cache_bytes)
    if source is not None:
        sampler = source.make_sampler(model=model, transform=eval_transform, device=device, precision=precision,
                                      embed_images=ctx.embed_images)
    else:
        sampler = data.PKSampler(
            train_folder.labels, config.classes_per_batch, config.images_per_class, seed=config.seed,
            class_groups=groups, groups_per_batch=config.groups_per_batch,
        )
    ctx.require_batch(sampler.classes_per_batch * sampler.images_per_class)
    batches = _KeyedBatches(sampler, config.seed, shard=(ctx.rank, ctx.world_size))
    loader = data.make_loader(_SeededItems(train_set), batch_sampler=batches, num_workers=workers, device=device)

    steps_per_epoch = len(sampler)
    total_steps = max(1, config.epochs * steps_per_epoch)
    parameters = [
        {"params": model.backbone.parameters(), "lr": config.lr * (0.1 if (config.pretrained or config.weights) else 1.0)},
        {"params": model.head.parameters(), "lr": config.lr},
    ]
    optimiser = torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, _cosine_with_warmup(total_steps, warmup=max(1, total_steps // 20)))
    scaler = torch.amp.GradScaler("cuda", enabled=(device.type == "cuda" and precision == "fp16"))

    run_config = _run_config(config, folder, train_folder, val_folder, data_config, precision, steps_per_epoch)
    run_config.update(source.config_entries() if source else implicit.labelled_entries())
    run_config["distributed"] = ctx.describe()
    history: list[dict[str, Any]] = []
    start_epoch, best = 1, {"epoch": 0, "map_at_r": -1.0}
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        optimiser.load_state_dict(checkpoint["optimiser"])
        schedule.load_state_dict(checkpoint["schedule"])
        if "scaler" in checkpoint:
            scaler.load_state_dict(checkpoint["scaler"])
        torch.set_rng_state(checkpoint["torch_rng"])
        history = list(checkpoint["history"])
        best = dict(checkpoint["best"])
        start_epoch = int(checkpoint["epoch"]) + 1
        if start_epoch > config.epochs:
            log.warning("%s: already trained for %d epochs; raise --epochs to train more", run_dir, start_epoch - 1)
    else:
        baseline = _validate(model, val_folder, eval_transform, device, precision, config.margin, ctx=ctx)
        history.append({"epoch": 0, "loss": None, **baseline.metrics, "active_fraction": None, "violating_fraction": None, "mean_d_ap": None,
                        "mean_d_an": None, "lr": 0.0, "images_per_second": None, "seconds": 0.0})
        if ctx.is_main:  # only rank 0 writes the run directory
            run_dir.mkdir(parents=True, exist_ok=True)
            _write_metrics(run_dir, history)
            if baseline.distances is not None:
                write_atomic(run_dir / VAL_DISTANCES_NAME, json.dumps(baseline.distances).encode())
        if config.epochs == 0:
            if ctx.is_main:
                models.save_model(run_dir, model, run_config)
                models.save_model(run_dir, model, run_config, weights_name=LAST_WEIGHTS_NAME)
                _save_checkpoint(run_dir, model, optimiser, schedule, scaler, 0, history, best, run_config)
            ctx.barrier()  # the run directory is complete when train() returns, on every process
            return TrainResult(run_dir, history, best_epoch=0)

    result = TrainResult(run_dir, history, best_epoch=best["epoch"])
    interrupted = _InterruptFlag()
    with interrupted:
        for epoch in range(start_epoch, config.epochs + 1):
            started = time.perf_counter()
            batches.set_epoch(epoch)
            model.train()
            totals = _EpochTotals(config.hardest_per_epoch)
            bar = _progress_bar(progress and ctx.is_main, epoch, config.epochs, steps_per_epoch)
            try:
                for step, (images, labels, indices) in enumerate(loader):
                    if ctx.any(interrupted.requested):  # every process stops at the same step
                        interrupted.requested = True
                        break
                    images = train_transform.finish_batch(images.to(device, non_blocking=True))
                    if config.channels_last:
                        images = images.contiguous(memory_format=torch.channels_last)
                    labels = labels.to(device, non_blocking=True)
                    with models.autocast(device, precision):
                        embeddings = forward(images)
                    embeddings = embeddings.float()
                    # under torchrun: the global batch, in sampler order, gradients back to this share
                    embeddings, labels, indices = ctx.gather_batch(embeddings, labels, indices)
                    mined = miner(embeddings, labels, indices) if miner is not None else None
                    value = loss_fn(embeddings, labels, mined)
                    if not torch.isfinite(value):
                        raise RetrievalError(
                            f"loss became {value.item()} at epoch {epoch}, step {step + 1}: stopped; the last good "
                            f"checkpoint (epoch {epoch - 1}) is kept. Try a lower --lr (now {config.lr:g})"
                        )
                    optimiser.zero_grad(set_to_none=True)
                    scaler.scale(value).backward()
                    scaler.step(optimiser)
                    scaler.update()
                    schedule.step()
                    detached = embeddings.detach()
                    records = {} if mined is None else {miner: mined.record}  # each miner's record, computed once

                    def record_of(source):
                        if source not in records:
                            records[source] = source(detached, labels, indices).record
                        return records[source]

                    record = mined.record if mined is not None else record_of(record_miner)
                    # the hardest-negative log names triplets; a pair miner's record has them only for
                    # negatives inside the margin, so the triplet record miner supplies them
                    hardest = record_of(record_miner).hardest
                    totals.add(float(value.detach()), len(embeddings), record, detached, hardest, record_of(violation_miner))
                    bar.advance(totals)
            finally:
                totals.finish()
                bar.close()
            if ctx.any(interrupted.requested):
                result.interrupted = True
                log.warning("interrupted: epoch %d discarded; %s holds epoch %d. Continue with --resume.", epoch, run_dir, epoch - 1)
                break
            validation = _validate(model, val_folder, eval_transform, device, precision, config.margin, ctx=ctx)
            row = totals.summary(epoch, time.perf_counter() - started, schedule.get_last_lr()[-1])
            row.update(validation.metrics)
            history.append(row)
            score = row.get("map_at_r")
            improved = score is None or score >= best["map_at_r"]
            if improved:
                best = {"epoch": epoch, "map_at_r": -1.0 if score is None else score}
            if ctx.is_main:  # only rank 0 writes; the others go on to the next epoch's first step
                _warn_on_collapse(row, totals)
                hardest = totals.hardest_rows(epoch, train_folder, config.data_dir)
                write_atomic(mining_log_path(run_dir, epoch), "".join(json.dumps(r) + "\n" for r in hardest).encode())
                _write_metrics(run_dir, history)
                if validation.distances is not None:
                    write_atomic(run_dir / VAL_DISTANCES_NAME, json.dumps(validation.distances).encode())
                if improved:
                    models.save_model(run_dir, model, {**run_config, "best_epoch": epoch})
                models.save_model(run_dir, model, {**run_config, "epoch": epoch}, weights_name=LAST_WEIGHTS_NAME)
                _save_checkpoint(run_dir, model, optimiser, schedule, scaler, epoch, history, best, run_config)
            result.best_epoch = best["epoch"]
            if on_epoch is not None and ctx.is_main:
                on_epoch(row)
    result.history = history
    ctx.barrier()  # the run directory is complete when train() returns, on every process
    return result


# ----------------------------------------------------------------------------- epoch bookkeeping


class _EpochTotals:
    """Running sums of one epoch and its k hardest triplets (smallest d_an − d_ap), deduplicated
    by the unordered (anchor, negative) image pair."""

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self.loss_sum = 0.0
        self.steps = 0
        self.images = 0
        self.mined = 0
        self.active = 0.0
        self.d_ap = 0.0
        self.d_an = 0.0
        self.n_ap = 0
        self.n_an = 0
        self.started = time.perf_counter()
        self.hardest: dict[tuple[int, int], dict] = {}
        self.spread = 0.0
        self.valid = 0
        self.violating = 0.0

    def add(self, loss: float, n_images: int, record, embeddings: torch.Tensor, hardest: list[dict], every=None) -> None:
        """One step: its loss, the miner's record, the embeddings, the hardest triplets it logs and
        ``every``, the record of all the batch's valid triplets (a ``TripletMiner("all")``)."""
        self.loss_sum += loss
        self.steps += 1
        self.images += n_images
        if every is not None and every.n_mined:
            self.valid += int(every.n_mined)
            self.violating += float(every.active_fraction) * int(every.n_mined)
        n = int(record.n_mined)
        if n:
            self.mined += n
            self.active += float(record.active_fraction) * n
            # a pair miner may mine only positive or only negative pairs: one mean can be None
            if record.mean_d_ap is not None:
                self.d_ap += float(record.mean_d_ap) * n
                self.n_ap += n
            if record.mean_d_an is not None:
                self.d_an += float(record.mean_d_an) * n
                self.n_an += n
        unit = torch.nn.functional.normalize(embeddings, dim=1)
        self.spread += float((unit - unit.mean(0)).norm(dim=1).mean())
        for triplet in hardest:
            key = tuple(sorted((int(triplet["anchor"]), int(triplet["negative"]))))
            gap = float(triplet["d_an"]) - float(triplet["d_ap"])
            if key not in self.hardest or gap < self.hardest[key]["gap"]:
                self.hardest[key] = {**triplet, "gap": gap}
        if len(self.hardest) > 4 * max(self.keep, 1):
            self._trim()

    def _trim(self) -> None:
        kept = sorted(self.hardest.items(), key=lambda item: item[1]["gap"])[: self.keep]
        self.hardest = dict(kept)

    def finish(self) -> None:
        """Mark the end of the epoch's training steps (validation is timed apart)."""
        self.train_seconds = time.perf_counter() - self.started

    @property
    def images_per_second(self) -> float:
        elapsed = getattr(self, "train_seconds", None) or (time.perf_counter() - self.started)
        return self.images / max(elapsed, 1e-9)

    @property
    def mean_loss(self) -> float:
        return self.loss_sum / max(self.steps, 1)

    @property
    def active_fraction(self) -> float | None:
        return self.active / self.mined if self.mined else None

    @property
    def violating_fraction(self) -> float | None:
        """Of all valid triplets in the epoch's batches, the fraction with d_an < d_ap + ε."""
        return self.violating / self.valid if self.valid else None

    def summary(self, epoch: int, seconds: float, lr: float) -> dict[str, Any]:
        return {
            "epoch": epoch,
            "loss": self.mean_loss,
            "active_fraction": self.active_fraction,
            "violating_fraction": self.violating_fraction,
            "mean_d_ap": self.d_ap / self.n_ap if self.n_ap else None,
            "mean_d_an": self.d_an / self.n_an if self.n_an else None,
            "embedding_spread": self.spread / max(self.steps, 1),
            "lr": lr,
            "images_per_second": self.images_per_second,
            "train_seconds": getattr(self, "train_seconds", seconds),
            "seconds": seconds,
        }

    def hardest_rows(self, epoch: int, folder: data.ImageFolder, data_dir: Path) -> list[dict[str, Any]]:
        self._trim()
        root = Path(data_dir)
        rows = []
        for triplet in sorted(self.hardest.values(), key=lambda t: t["gap"]):
            row: dict[str, Any] = {"epoch": epoch}
            for role in ("anchor", "positive", "negative"):
                index = int(triplet[role])
                row[f"{role}_path"] = _relative(folder.paths[index], root)
                row[f"{role}_label"] = folder.class_names[folder.labels[index]]
            row.update(d_ap=float(triplet["d_ap"]), d_an=float(triplet["d_an"]), d_an_minus_d_ap=float(triplet["gap"]))
            rows.append(row)
        return rows


def _relative(path: Path, root: Path) -> str:
    try:
        return Path(path).resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return Path(path).as_posix()


def _warn_on_collapse(row: dict[str, Any], totals: _EpochTotals) -> None:
    spread = row.get("embedding_spread") or 0.0
    d_ap, d_an, active = row.get("mean_d_ap"), row.get("mean_d_an"), row.get("active_fraction")
    violating = row.get("violating_fraction")
    if spread < 0.05:
        log.warning("epoch %d: embeddings have collapsed (all alike: mean distance to their centre %.3f); try a lower --lr or another --miner", row["epoch"], spread)
    elif active is not None and active > 0.99 and d_ap is not None and d_an is not None and abs(d_an - d_ap) < 0.01:
        # the mined triplets all violate the margin without the negatives being any farther; a
        # semihard miner's triplets always violate it, so say how many of all triplets do
        share = f" ({violating:.0%} of all valid triplets violate the margin)" if violating is not None else ""
        log.warning("epoch %d: every mined triplet active with d_an ≈ d_ap (%.3f ≈ %.3f)%s: training may be collapsing",
                    row["epoch"], d_an, d_ap, share)


@dataclass
class _Validation:
    metrics: dict[str, Any]
    distances: dict[str, Any] | None


def _validate(model, folder: data.ImageFolder, transform, device, precision, margin, max_pairs: int = 5000, *, ctx=None) -> _Validation:
    """Recall@1 and MAP@R (leave-one-out) on the held-out classes, and sampled pair distances
    (under torchrun each process embeds a share of the images and all get the same numbers)."""
    if not folder.paths:
        return _Validation({"recall_at_1": None, "map_at_r": None}, None)
    ctx = ctx or distributed.DistributedContext(device=torch.device(device))
    embeddings = ctx.embed_images(model, folder.paths, transform, batch_size=128, device=device, precision=precision)
    labels = np.asarray(folder.labels)
    metrics = retrieval_metrics(embeddings, labels)
    x = torch.from_numpy(embeddings)
    distances = torch.cdist(x, x).numpy()
    upper = np.triu_indices(len(labels), k=1)
    same = labels[upper[0]] == labels[upper[1]]
    values = distances[upper]
    rng = np.random.default_rng(0)
    sample = lambda v: rng.choice(v, size=min(len(v), max_pairs), replace=False).round(5).tolist() if len(v) else []
    return _Validation(
        {"recall_at_1": metrics["recall_at_1"], "map_at_r": metrics["map_at_r"]},
        {"margin": margin, "positive": sample(values[same]), "negative": sample(values[~same])},
    )


def _write_metrics(run_dir: Path, history: list[dict[str, Any]]) -> None:
    write_atomic(run_dir / METRICS_NAME, "".join(json.dumps(row) + "\n" for row in history).encode())


def _cosine_with_warmup(total_steps: int, warmup: int) -> Callable[[int], float]:
    """lr factor: linear warm-up to 1 over ``warmup`` steps, then cosine decay to 0 at ``total_steps``."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def _domain_knowledge(config: TrainConfig, folder: data.ImageFolder):
    """Group id per training class and never-negative label pairs, from the CSV files given."""
    groups = None
    if config.class_groups is not None:
        groups = data.class_group_ids(folder.class_names, data.read_class_groups(config.class_groups, folder.class_names))
    never = []
    if config.never_negative is not None:
        index = {c: i for i, c in enumerate(folder.class_names)}
        never = [(index[a], index[b]) for a, b in data.read_class_pairs(config.never_negative, folder.class_names) if a in index and b in index]
    return groups, never


def _run_config(config, folder, train_folder, val_folder, data_config, precision, steps_per_epoch) -> dict[str, Any]:
    import albumentations
    import timm

    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(config).items()}
    settings.pop("resume", None)
    return {
        "backbone": config.backbone,
        "embedding_dim": config.embedding_dim,
        "image_size": config.image_size,
        "data_config": data_config,
        "normalisation": {"mean": data_config["mean"], "std": data_config["std"]},
        "loss": config.loss,
        "miner": config.effective_miner,
        "margin": config.margin,
        "temperature": config.temperature,
        "distance": "euclidean",
        "precision": precision,
        "data_dir": str(Path(config.data_dir).resolve()),
        "class_names": folder.class_names,
        "train_classes": train_folder.class_names,
        "val_classes": val_folder.class_names,
        "class_counts": folder.class_counts(),
        "steps_per_epoch": steps_per_epoch,
        "transforms": {"train": {"strength": config.augment, **data_config}, "eval": data_config},
        "train_settings": settings,
        "command": config.command,
        "versions": {
            "retrieval": __import__("retrieval").__version__,
            "torch": torch.__version__,
            "timm": timm.__version__,
            "albumentations": albumentations.__version__,
            "python": platform.python_version(),
        },
    }


# ----------------------------------------------------------------------------- checkpoint


def _save_checkpoint(run_dir, model, optimiser, schedule, scaler, epoch, history, best, run_config) -> None:
    state = {
        "epoch": epoch,
        "model": model.state_dict(),
        "optimiser": optimiser.state_dict(),
        "schedule": schedule.state_dict(),
        "scaler": scaler.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "history": history,
        "best": best,
        "config": json.dumps(run_config),
    }
    buffer = io.BytesIO()
    torch.save(state, buffer)
    write_atomic(Path(run_dir) / CHECKPOINT_NAME, buffer.getvalue())


def _load_checkpoint(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / CHECKPOINT_NAME
    if not path.is_file():
        raise RetrievalError(f"--resume: no {CHECKPOINT_NAME} in {run_dir}; start a new run without --resume")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise RetrievalError(f"{path}: cannot read the checkpoint ({type(error).__name__}: {error})") from error


def _config_for_resume(config: TrainConfig, run_dir: Path) -> TrainConfig:
    """The saved run's settings, with only --epochs, --device, --num-workers taken from this call."""
    saved = json.loads((run_dir / CONFIG_NAME).read_text())["train_settings"]
    keep = {"epochs": config.epochs, "device": config.device, "num_workers": config.num_workers, "cache_mb": config.cache_mb, "resume": True, "command": config.command,
            "dist_timeout": config.dist_timeout}
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    values = {k: v for k, v in saved.items() if k in fields}
    values.update(keep)
    for key in ("data_dir", "out", "weights", "class_groups", "never_negative", "pairs", "pair_groups"):
        if values.get(key) is not None:
            values[key] = Path(values[key])
    return TrainConfig(**values)


class _InterruptFlag:
    """Turns the first Ctrl-C into a request to stop after the current step (the second one kills)."""

    def __init__(self) -> None:
        self.requested = False
        self._previous = None

    def __enter__(self):
        try:
            self._previous = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not in the main thread
            self._previous = None
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\nstopping after this step (Ctrl-C again to abort at once)…", file=sys.stderr)

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


class _progress_bar:
    """A rich progress bar for one epoch showing loss, active fraction and images/s (silent when off)."""

    def __init__(self, enabled: bool, epoch: int, epochs: int, steps: int) -> None:
        self.progress = None
        if not enabled:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(
            TextColumn(f"epoch {epoch}/{epochs}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
            TextColumn("{task.fields[status]}"), transient=False,
        )
        self.progress.start()
        self.task = self.progress.add_task("train", total=steps, status="")

    def advance(self, totals: _EpochTotals) -> None:
        if self.progress is None:
            return
        active, violating = totals.active_fraction, totals.violating_fraction
        status = f"loss {totals.mean_loss:.4f}"
        if active is not None:
            status += f"  active {active:.2f}"
        if violating is not None:
            status += f"  violating {violating:.2f}"
        status += f"  {totals.images_per_second:.0f} img/s"
        self.progress.update(self.task, advance=1, status=status)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
