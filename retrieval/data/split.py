"""Training and validation classes: the unseen-class protocol of metric learning.

:func:`split_classes` divides an :class:`~retrieval.data.scan.ImageFolder` by class, so that no
validation class is ever seen in training: validation then measures how well the learnt metric
ranks images of new classes, which is what a retrieval gallery asks of it.
"""

from __future__ import annotations

import logging

import numpy as np

from retrieval.data.scan import ImageFolder
from retrieval.errors import RetrievalError

__all__ = ["split_classes"]

logger = logging.getLogger("retrieval")


def split_classes(folder: ImageFolder, val_fraction: float, seed: int) -> tuple[ImageFolder, ImageFolder]:
    """Split ``folder`` by class into (train, val): no validation class appears in training.

    About ``round(val_fraction * number of classes)`` classes go to validation, chosen at random
    (seeded) among the classes with two or more images (a one-image class cannot be a query with
    a positive); at least two when ``val_fraction > 0``, and never so many that training keeps
    fewer than two such classes. When that is impossible (fewer than four classes with two or
    more images) validation is empty and a warning says so. Both parts keep the sorted class
    order, labels re-indexed. ``val_fraction`` must be in [0, 1).
    """
    if not 0.0 <= val_fraction < 1.0:
        raise RetrievalError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if not folder.labelled:
        raise RetrievalError(f"{folder.root} is not a labelled folder: cannot split classes")
    counts = folder.class_counts()
    if val_fraction == 0.0:
        return folder, folder.subset([])
    eligible = [name for name in folder.class_names if counts[name] >= 2]
    most = len(eligible) - 2
    if most < 2:
        logger.warning(
            "%s: only %d class(es) have two or more images, too few to hold out validation classes "
            "(needs 4): training without validation",
            folder.root, len(eligible),
        )
        return folder, folder.subset([])
    n_val = min(max(2, round(val_fraction * len(folder.class_names))), most)
    rng = np.random.default_rng(seed)
    chosen = set(np.asarray(eligible)[rng.permutation(len(eligible))[:n_val]].tolist())
    val_names = [name for name in folder.class_names if name in chosen]
    train_names = [name for name in folder.class_names if name not in chosen]
    return folder.subset(train_names), folder.subset(val_names)
