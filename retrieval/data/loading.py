"""Images by index, in batches: the dataset and the loader that feed the model.

:class:`ImageDataset` turns a list of image paths (and labels) into transformed items, giving
``None`` for an image that became unreadable after the scan so that training goes on;
:func:`collate_images` drops those from the batch. :func:`make_loader` wraps both in a
``DataLoader`` with worker processes sized to the machine (:func:`default_num_workers`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import weakref
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler

from retrieval.data.images import load_image
from retrieval.errors import RetrievalError

__all__ = ["ImageDataset", "collate_images", "make_loader", "default_num_workers"]

logger = logging.getLogger("retrieval")


class ImageDataset(Dataset):
    """Images by index: item ``i`` is ``(transform(image), label, i)``.

    An image that cannot be read at load time (corrupted or removed after the scan) gives
    ``None`` instead, with one warning per file, so training goes on; :func:`collate_images`
    drops it from the batch. ``labels=None`` labels every image -1; ``transform=None`` returns
    the RGB ``PIL.Image`` itself.

    ``cache_bytes`` > 0 keeps decoded images in memory (width x height x 3 bytes each) until that
    budget is used, so later epochs skip reading and decoding them; each loader worker holds its
    own cache. Images that no longer fit are decoded every time.
    """

    def __init__(
        self,
        paths: Sequence[str | Path],
        labels: Sequence[int] | None,
        transform: Callable[[Image.Image], Any] | None,
        *,
        cache_bytes: int = 0,
    ) -> None:
        self.paths = [Path(p) for p in paths]
        self.labels = [int(v) for v in labels] if labels is not None else [-1] * len(self.paths)
        if len(self.labels) != len(self.paths):
            raise ValueError(f"{len(self.paths)} paths but {len(self.labels)} labels")
        self.transform = transform
        self.cache_bytes = max(0, int(cache_bytes))
        self._cache: dict[Path, Image.Image] = {}
        self._cached_bytes = 0
        self._warned: set[Path] = set()
        self._warned_by_any = _WarnedOnce()  # across the loader's worker processes, each holding a copy of this

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[Any, int, int] | None:
        index = int(index)
        path = self.paths[index]
        image = self._cache.get(path)  # by path: a repeated image (unlabelled mode's two views) is held once
        if image is None:
            try:
                image = load_image(path)
            except RetrievalError as error:
                if path not in self._warned:
                    self._warned.add(path)
                    if self._warned_by_any.first(path):
                        logger.warning("skipped at load time: %s", error)
                return None
            size = image.width * image.height * 3
            if self._cached_bytes + size <= self.cache_bytes:
                self._cache[path] = image
                self._cached_bytes += size
        pixels = self.transform(image) if self.transform is not None else image
        return pixels, self.labels[index], index


class _WarnedOnce:
    """Which unreadable files some process has warned of: an empty marker file each, made with
    ``O_EXCL`` (the first process to make it warns), in a folder of the temporary directory named
    after the process and object that created this (so every loader worker, a copy, finds the same
    one); that process removes it when the object goes. Nothing is made until a file fails."""

    def __init__(self) -> None:
        self.root = Path(tempfile.gettempdir()) / f"retrieval-unreadable-{os.getpid()}-{id(self):x}"
        weakref.finalize(self, _remove_folder_of, self.root, os.getpid())

    def first(self, path: Path) -> bool:
        """Whether no process has warned of ``path`` yet (True when that cannot be recorded)."""
        try:
            self.root.mkdir(exist_ok=True)
            os.close(os.open(self.root / hashlib.sha1(os.fsencode(path)).hexdigest(), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return False
        except OSError:  # no temporary folder to write: a repeated warning rather than none
            return True
        return True


def _remove_folder_of(root: Path, owner: int) -> None:
    if os.getpid() == owner:  # a forked worker inherits the finalizer: only the creating process removes
        shutil.rmtree(root, ignore_errors=True)


def collate_images(batch: Sequence[tuple[Any, int, int] | None]) -> tuple[Any, torch.Tensor, torch.Tensor]:
    """``(images (B, C, H, W), labels (B,), indices (B,))`` from dataset items, dropping the ``None``s.

    B may be smaller than the sampler's batch (or 0: then images is an empty tensor); the
    dataset indices say which images remain. Untransformed PIL images stay a list.
    """
    items = [item for item in batch if item is not None]
    if not items:
        return torch.empty(0), torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long)
    images, labels, indices = zip(*items)
    stacked = torch.stack(images) if isinstance(images[0], torch.Tensor) else list(images)
    return stacked, torch.tensor(labels, dtype=torch.long), torch.tensor(indices, dtype=torch.long)


def make_loader(
    dataset: Dataset,
    *,
    batch_sampler: Sampler[list[int]] | None = None,
    batch_size: int | None = None,
    shuffle: bool = False,
    num_workers: int | None = None,
    device: str | torch.device,
) -> DataLoader:
    """A ``DataLoader`` over ``dataset`` with :func:`collate_images`: give ``batch_sampler`` or ``batch_size``.

    ``num_workers=None`` picks a default from the usable CPUs: none with one CPU, else
    min(2, CPUs) for a CPU ``device`` (the model's own threads need the same cores) and
    min(8, CPUs) for CUDA (decoding has to keep the GPU fed). With workers they are
    persistent (started once, kept across epochs; the batch sampler still runs in the main
    process, so :meth:`~retrieval.data.sampler.PKSampler.set_epoch` between epochs takes
    effect). The workers start from one copy of the transform, so a random augmentation draws
    alike in each unless it is seeded per item (see
    :class:`~retrieval.data.transforms.ImageTransform`). Memory is pinned when ``device`` is
    CUDA. ``shuffle`` applies to ``batch_size`` loading only.
    """
    device = torch.device(device)
    if (batch_sampler is None) == (batch_size is None):
        raise ValueError("make_loader needs exactly one of batch_sampler or batch_size")
    if batch_sampler is not None and shuffle:
        raise ValueError("shuffle is for batch_size loading; a batch_sampler decides the order itself")
    if num_workers is None:
        num_workers = default_num_workers(device)
    if num_workers < 0:
        raise RetrievalError(f"--workers (loader worker processes) must be 0 or more, got {num_workers}")
    options: dict[str, Any] = {
        "num_workers": num_workers,
        "collate_fn": collate_images,
        "pin_memory": device.type == "cuda",
    }
    if num_workers > 0:
        options["persistent_workers"] = True
    if batch_sampler is not None:
        return DataLoader(dataset, batch_sampler=batch_sampler, **options)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, **options)


def default_num_workers(device: str | torch.device) -> int:
    """Loader workers when none are asked for (see :func:`make_loader`)."""
    device = torch.device(device)
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    if cpus < 2:
        return 0
    return min(8 if device.type == "cuda" else 2, cpus)
