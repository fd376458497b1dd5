"""Images in, unit embeddings out: the one loop every part of the package embeds with.

Validation during training, evaluation, the gallery index, search queries and the app all turn
images into embeddings f(x) = W · g(x) / ||W · g(x)|| (:class:`~retrieval.model.EmbeddingModel`)
through :func:`embedding_batches`: consecutive batches of ``batch_size`` images, decoded and
transformed by a DataLoader (image files) or in this process (PIL images), run through the model
in eval mode under the requested precision, and handed back in image order with the indices of
the images they hold. An image file that cannot be read is left out of its batch (the dataset
warns once, naming it).

Under ``torchrun`` (a :class:`~retrieval.distributed.DistributedContext` with several processes)
batch b is embedded by process b mod N and every process receives every batch's rows, in order,
so the result is the one a single process computes.

Two consumers cover the callers: :func:`embed_images` (all rows; an unreadable file is an error
naming it) and :func:`embed_readable` (the rows of the readable images and which they are).
The index build streams :func:`embedding_batches` to disk itself.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from retrieval.data import ImageDataset, make_loader
from retrieval.distributed import DistributedContext
from retrieval.errors import RetrievalError
from retrieval.model import autocast

__all__ = ["embed_images", "embed_readable", "embedding_batches"]

ProgressCallback = Callable[[int, int], None]


def embedding_batches(
    model: torch.nn.Module,
    images: Sequence[Any],
    transform: Callable,
    *,
    batch_size: int = 64,
    device: str | torch.device | None = None,
    precision: str = "fp32",
    num_workers: int | None = None,
    ctx: DistributedContext | None = None,
    on_progress: ProgressCallback | None = None,
) -> Iterator[tuple[np.ndarray, list[int]]]:
    """Yield ``(rows (B', D) float32, image indices (B',))`` batch by batch, in image order.

    ``images`` are image paths or PIL images (all of one kind). B' < ``batch_size`` where a file
    could not be read (then it may be 0). ``precision``: as :func:`retrieval.model.autocast`
    (``"auto"`` picks bf16 where the device has it). ``num_workers=None``: no loader processes on a CPU
    device with at most 4 cores (the model's threads already use every core; measured slower,
    BENCHMARKS.md), else :func:`retrieval.data.make_loader`'s default. ``on_progress(done,
    total)`` follows the images and ends with (total, total).
    """
    ctx = ctx or DistributedContext(device=_model_device(model))
    device = torch.device(device) if device is not None else ctx.device
    if not isinstance(batch_size, int) or batch_size < 1:
        raise RetrievalError(f"--batch-size must be at least 1, got {batch_size}")
    model.eval()
    n = len(images)
    n_batches = math.ceil(n / batch_size)
    mine = [list(range(b * batch_size, min(n, (b + 1) * batch_size))) for b in range(ctx.rank, n_batches, ctx.world_size)]
    loader = _loader(images, transform, mine, device, num_workers) if mine else None
    batches = iter(loader) if loader is not None else iter(())
    dim = int(model.embedding_dim)
    for first in range(0, n_batches, ctx.world_size):
        rows = torch.zeros(0, dim, device=device)
        ids = torch.zeros(0, dtype=torch.long)
        if first + ctx.rank < n_batches:
            # decoding in this process: its many tiny tensor ops on a multi-thread pool cost ~10x
            # the CPU of one thread (BENCHMARKS.md); loader workers run one thread too
            with _torch_threads(1 if loader.num_workers == 0 else None):
                pixels, _labels, ids = next(batches)
            if len(ids):
                with torch.inference_mode(), autocast(device, precision):
                    rows = model(pixels.to(device, non_blocking=True)).float()
        rows, ids = ctx.gather_rows(rows.clone() if ctx.enabled else rows, ids)
        if on_progress is not None:
            on_progress(min(n, (first + ctx.world_size) * batch_size), n)
        yield rows.cpu().numpy(), [int(i) for i in ids]
    if on_progress is not None:
        on_progress(n, n)


def embed_readable(model: torch.nn.Module, images: Sequence[Any], transform: Callable, **options: Any) -> tuple[np.ndarray, list[int]]:
    """``(rows (M, D), kept)``: the embeddings of the M readable images and their indices into
    ``images``, in order (options as :func:`embedding_batches`)."""
    parts, kept = [], []
    for rows, ids in embedding_batches(model, images, transform, **options):
        parts.append(rows)
        kept.extend(ids)
    dim = int(model.embedding_dim)
    return (np.concatenate(parts) if parts else np.empty((0, dim), dtype=np.float32)), kept


def embed_images(model: torch.nn.Module, images: Sequence[Any], transform: Callable, **options: Any) -> np.ndarray:
    """Unit embeddings (N, D) float32 of image paths or PIL images (options as
    :func:`embedding_batches`); RetrievalError naming the first image file that cannot be read."""
    rows, kept = embed_readable(model, images, transform, **options)
    if len(kept) != len(images):
        missing = sorted(set(range(len(images))) - set(kept))
        raise RetrievalError(f"cannot read image {images[missing[0]]}")
    return rows


# ----------------------------------------------------------------------------- helpers


class _InMemoryImages(Dataset):
    """PIL images by index, as :class:`~retrieval.data.ImageDataset` gives files: ``(transform(image), -1, i)``."""

    def __init__(self, images: Sequence[Any], transform: Callable) -> None:
        self.images = images
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        image = self.images[index]
        return self.transform(image if image.mode == "RGB" else image.convert("RGB")), -1, int(index)


def _loader(images: Sequence[Any], transform: Callable, batches: list[list[int]], device: torch.device, num_workers: int | None):
    from PIL import Image

    if all(isinstance(image, Image.Image) for image in images):
        return make_loader(_InMemoryImages(images, transform), batch_sampler=batches, num_workers=0, device=device)
    if num_workers is None and device.type == "cpu" and _usable_cpus() <= 4:
        num_workers = 0
    dataset = ImageDataset([Path(p) for p in images], None, transform)
    return make_loader(dataset, batch_sampler=batches, num_workers=num_workers, device=device)


def _model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


@contextlib.contextmanager
def _torch_threads(n: int | None):
    """Run a block with ``n`` torch intra-op threads (None: unchanged), then restore the count."""
    previous = torch.get_num_threads()
    if n is None or n == previous:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1
