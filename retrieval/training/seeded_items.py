"""Seeded items: every training image's augmentation is drawn from its own seed.

An item's key is (seed, epoch, position in the epoch, dataset index), and the augmentation RNGs
(Python's, NumPy's, torch's CPU generator and the transform's own) are seeded from a hash of
(seed, epoch, position) before the item is made. So an epoch's pixels depend neither on the number
of loader workers nor on what ran before it: a run resumed after epoch E continues exactly as an
uninterrupted one, and two views of one image (``--unlabelled``) differ because their positions do.
"""

from __future__ import annotations

import hashlib
import random

import numpy as np
import torch

from retrieval import data

__all__ = ["SeededItems", "KeyedBatches"]


class SeededItems(torch.utils.data.Dataset):
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


class KeyedBatches(torch.utils.data.Sampler):
    """Turns the PK sampler's index batches into (seed, epoch, position, index) keys for SeededItems."""

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
