"""Batches for metric learning: P classes times K images, so every anchor meets its positives.

:class:`PKSampler` is the batch sampler of training: every batch holds P distinct classes with
K images each, optionally drawing the P classes from a few class groups so that the negatives are
the hard, informative ones. Which batches an epoch holds depends only on (seed, epoch).
:func:`fit_classes_per_batch` fits P to a small folder: the default P (16) on a folder with fewer
anchor classes becomes their number (one warning line); a P the user typed stays an error.
"""

from __future__ import annotations

import logging
from typing import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler

from retrieval.errors import RetrievalError

__all__ = ["GROUPS_PER_BATCH", "PKSampler", "fit_classes_per_batch"]

#: the groups a batch draws its classes from when class groups are given without a number
GROUPS_PER_BATCH = 2

logger = logging.getLogger("retrieval")


def fit_classes_per_batch(asked: int, available: int, *, typed: bool, what: str) -> int:
    """P for training data with ``available`` anchor classes (``what`` they are, for the messages).

    ``asked`` when it fits. Else, when P was not typed (the default, 16), ``available``, said in one
    warning line: a folder of 10 people trains without the user reading an error first. A P the
    user typed that does not fit is a one-line error: they asked for it, so it is not changed behind
    their back. Fewer than 2 available: ``asked`` (the P x K sampler's own error names the problem).
    """
    if asked <= available or available < 2:
        return asked
    if typed:
        raise RetrievalError(
            f"-P {asked} classes per batch (--classes-per-batch) but only {available} {what}: "
            f"lower -P, or leave it out to use all {available}"
        )
    logger.warning("%d classes per batch (P) instead of the default %d: only %d %s", available, asked, available, what)
    return available


class PKSampler(Sampler[list[int]]):
    """Batches of P classes x K images (``classes_per_batch`` x ``images_per_class``).

    Every batch holds P distinct classes, K images of each, as P runs of K consecutive dataset
    indices (``len(batch) == P * K``), so every anchor has K - 1 positives and (P - 1) * K
    negatives in its batch. Only *anchor classes* (two or more images) are drawn: a one-image
    class is never one of the P. Within a class the K images are distinct when the class has
    at least K images; a smaller class fills its K places with all of its images, repeated
    (sampling with replacement).

    **Epoch.** With n_c images in anchor class c and m_c = ceil(n_c / K) the visits c needs to
    show all of its images, one epoch is

        ``len(sampler) = max(ceil(sum_c m_c / P), max_c m_c)``

    batches: the fewest in which every image could appear (about ceil(N / (P * K)) for N
    anchor-class images). Without class groups it is guaranteed: **every image of an anchor
    class appears at least once per epoch**; the remaining places go to extra visits spread
    over the classes not already in every batch (favouring the small ones, which balances the
    classes), where each class keeps cycling through a fresh shuffle of its images. With class
    groups coverage is favoured, not guaranteed: batches prefer the classes with images still
    unseen (on grocery-like data about 90-100 % of the images appear in an epoch).

    **Class groups.** ``class_groups[c]`` is the group id of class ``c`` (e.g. the coarse class
    "Apple" for the apple varieties, from :func:`read_class_groups` and :func:`class_group_ids`).
    Then each batch draws its P classes from ``groups_per_batch`` groups (default 2), round-robin
    across them (so each contributes), taking more groups only when those hold fewer than P
    anchor classes together: the negatives in a batch are mostly look-alikes.

    **Determinism.** The batches of an epoch depend only on (``seed``, epoch). As with
    ``DistributedSampler``, call :meth:`set_epoch` before each epoch: a run resumed at epoch e
    (same seed) sees the same batches as the run that stopped there. The sampler runs in the
    main process, so this holds with loader workers too.
    """

    def __init__(
        self,
        labels: Sequence[int] | np.ndarray,
        classes_per_batch: int,
        images_per_class: int,
        *,
        seed: int = 0,
        class_groups: Sequence[int] | None = None,
        groups_per_batch: int | None = None,
    ) -> None:
        labels = np.asarray(labels, dtype=np.int64)
        if labels.ndim != 1:
            raise ValueError("labels must be one label per dataset index")
        if labels.size and labels.min() < 0:
            raise RetrievalError("the P x K sampler needs labelled images (found label -1: a flat folder?)")
        if classes_per_batch < 2:
            raise RetrievalError(f"--classes-per-batch (P) must be at least 2 (negatives come from other classes), got {classes_per_batch}")
        if images_per_class < 2:
            raise RetrievalError(f"--images-per-class (K) must be at least 2 (positives come from the same class), got {images_per_class}")
        counts = np.bincount(labels) if labels.size else np.zeros(0, np.int64)
        anchor_classes = np.flatnonzero(counts >= 2)
        if len(anchor_classes) < 2:
            raise RetrievalError(f"the P x K sampler needs two classes with two or more images, found {len(anchor_classes)}")
        if classes_per_batch > len(anchor_classes):
            raise RetrievalError(
                f"{classes_per_batch} classes per batch (P) but only {len(anchor_classes)} classes have two or more "
                f"images: lower --classes-per-batch"
            )
        self.classes_per_batch = int(classes_per_batch)
        self.images_per_class = int(images_per_class)
        self.seed = int(seed)
        self.epoch = 0
        self.anchor_classes = anchor_classes
        order = np.argsort(labels, kind="stable")
        starts = np.concatenate([[0], np.cumsum(counts)])
        self._class_indices = [order[starts[c] : starts[c + 1]] for c in anchor_classes]
        self._visits_needed = -(-counts[anchor_classes] // self.images_per_class)  # m_c = ceil(n_c / K)
        self._n_batches = int(max(-(-self._visits_needed.sum() // self.classes_per_batch), self._visits_needed.max()))

        self._group_of = None
        if class_groups is not None:
            groups = np.asarray(class_groups)
            if groups.ndim != 1 or len(groups) < len(counts):
                raise ValueError(f"class_groups needs one group id per class ({len(counts)}), got {len(groups)}")
            _, self._group_of = np.unique(groups[anchor_classes], return_inverse=True)
            self._group_of = self._group_of.reshape(-1)
            n_groups = int(self._group_of.max()) + 1
            self.groups_per_batch = min(int(groups_per_batch or GROUPS_PER_BATCH), n_groups)
            if self.groups_per_batch < 1:
                raise RetrievalError(f"groups_per_batch must be at least 1, got {groups_per_batch}")
        elif groups_per_batch is not None:
            raise ValueError("groups_per_batch needs class_groups")
        else:
            self.groups_per_batch = None

    def __len__(self) -> int:
        """Batches per epoch (see the class docstring for the definition)."""
        return self._n_batches

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.epoch_batches(self.epoch):
            yield batch.tolist()

    def set_epoch(self, epoch: int) -> None:
        """Choose which epoch's batches the next iteration yields."""
        self.epoch = int(epoch)

    def epoch_batches(self, epoch: int) -> np.ndarray:
        """The batches of ``epoch`` as an int64 array (batches per epoch, P * K) of dataset indices."""
        rng = np.random.default_rng([self.seed, int(epoch)])
        if self._group_of is None:
            grid = self._class_grid(rng)
        else:
            grid = self._grouped_class_grid(rng)
        return self._fill_images(grid, rng).reshape(self._n_batches, -1)

    def _class_grid(self, rng: np.random.Generator) -> np.ndarray:
        """(B, P) anchor-class positions: class c in v_c >= m_c distinct batches, P distinct per batch.

        Extra visits (P * B - sum m_c of them) are drawn without replacement from each class's
        spare batches (B - m_c), i.e. multivariate hypergeometric. The visits of the classes, in
        a random class order, are laid out column by column in a (P, B) grid: a class's visits
        are consecutive and at most B, so they land in distinct batches.
        """
        n_batches, per_batch = self._n_batches, self.classes_per_batch
        needed = self._visits_needed
        spare = n_batches - needed
        extra = per_batch * n_batches - int(needed.sum())
        visits = needed + rng.multivariate_hypergeometric(spare, extra, method="marginals")
        class_order = rng.permutation(len(needed))
        sequence = np.repeat(class_order, visits[class_order])
        grid = sequence.reshape(per_batch, n_batches).T
        return grid[rng.permutation(n_batches)]

    def _grouped_class_grid(self, rng: np.random.Generator) -> np.ndarray:
        """(B, P) anchor-class positions, each batch from ``groups_per_batch`` groups (more if needed).

        Groups are drawn with weight = images still unseen in them (plus a little, so that every
        group stays possible), by weighted sampling without replacement (Efraimidis-Spirakis
        keys); within a group, classes with more unseen visits come first.
        """
        group_of = self._group_of
        n_groups = int(group_of.max()) + 1
        group_sizes = np.bincount(group_of, minlength=n_groups)
        remaining = self._visits_needed.astype(np.float64)
        grid = np.empty((self._n_batches, self.classes_per_batch), dtype=np.int64)
        for b in range(self._n_batches):
            weight = np.bincount(group_of, weights=remaining, minlength=n_groups) + 0.05 * group_sizes
            keys = np.log(rng.random(n_groups)) / weight
            group_order = np.argsort(-keys)
            enough = int(np.searchsorted(np.cumsum(group_sizes[group_order]), self.classes_per_batch)) + 1
            chosen = group_order[: max(self.groups_per_batch, enough)]
            group_rank = np.full(n_groups, -1)
            group_rank[chosen] = np.arange(len(chosen))
            candidates = np.flatnonzero(group_rank[group_of] >= 0)
            # Within each chosen group: most-needed classes first, ties at random.
            by_need = candidates[np.lexsort((rng.random(len(candidates)), -remaining[candidates], group_rank[group_of[candidates]]))]
            ranks_of_group = group_rank[group_of[by_need]]
            first = np.searchsorted(ranks_of_group, ranks_of_group)
            rank_in_group = np.arange(len(by_need)) - first
            picked = by_need[np.lexsort((ranks_of_group, rank_in_group))[: self.classes_per_batch]]
            grid[b] = picked
            remaining[picked] = np.maximum(remaining[picked] - 1, 0)
        return grid

    def _fill_images(self, grid: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """(B, P, K) dataset indices: the j-th visit of class c gets c's j-th chunk of K images.

        A class's chunks are consecutive windows of K over a shuffle of its images (wrapping
        around), first one covering shuffle, then a fresh shuffle for the extra visits; windows
        of K consecutive places are distinct images whenever the class has K or more.
        """
        k = self.images_per_class
        flat = grid.ravel()
        visits = np.bincount(flat, minlength=len(self._class_indices))
        chunks = []
        for c, indices in enumerate(self._class_indices):
            v = int(visits[c])
            if v == 0:
                continue
            n = len(indices)
            first = min(v, int(self._visits_needed[c])) * k
            stream = rng.permutation(indices)[np.arange(first) % n]
            if v * k > first:
                stream = np.concatenate([stream, rng.permutation(indices)[np.arange(v * k - first) % n]])
            chunks.append(stream.reshape(v, k))
        all_chunks = np.concatenate(chunks)
        starts = np.concatenate([[0], np.cumsum(visits)[:-1]])
        by_class = np.argsort(flat, kind="stable")
        occurrence = np.empty_like(flat)
        occurrence[by_class] = np.arange(flat.size) - np.repeat(starts, visits)
        return all_chunks[starts[flat] + occurrence].reshape(grid.shape[0], grid.shape[1], k)
