"""Validation on the held-out classes after every epoch (and of the untrained model, epoch 0).

Every held-out image is a query against all the others (leave-one-out): Recall@1 and MAP@R as in
Musgrave et al. 2020 (:func:`retrieval.evaluate.retrieval_metrics`), and up to ``max_pairs``
sampled positive- and negative-pair distances for ``val_distances.json``. MAP@R chooses the
run's best epoch (``model.safetensors``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from retrieval import data, distributed
from retrieval.embed import embed_images
from retrieval.evaluate import retrieval_metrics

__all__ = ["Validation", "validate"]


@dataclass
class Validation:
    metrics: dict[str, Any]  # recall_at_1, map_at_r (None without held-out classes)
    distances: dict[str, Any] | None  # margin, sampled positive / negative distances (None: no held-out classes)


def validate(model, folder: data.ImageFolder, transform, device, precision, margin, max_pairs: int = 5000, *, ctx=None) -> Validation:
    """Recall@1 and MAP@R (leave-one-out) on the held-out classes, and sampled pair distances
    (under torchrun each process embeds a share of the images and all get the same numbers)."""
    if not folder.paths:
        return Validation({"recall_at_1": None, "map_at_r": None}, None)
    ctx = ctx or distributed.DistributedContext(device=torch.device(device))
    embeddings = embed_images(model, folder.paths, transform, batch_size=128, device=device, precision=precision, ctx=ctx)
    labels = np.asarray(folder.labels)
    metrics = retrieval_metrics(embeddings, labels)
    x = torch.from_numpy(embeddings)
    distances = torch.cdist(x, x).numpy()
    upper = np.triu_indices(len(labels), k=1)
    same = labels[upper[0]] == labels[upper[1]]
    values = distances[upper]
    rng = np.random.default_rng(0)
    sample = lambda v: rng.choice(v, size=min(len(v), max_pairs), replace=False).round(5).tolist() if len(v) else []
    return Validation(
        {"recall_at_1": metrics["recall_at_1"], "map_at_r": metrics["map_at_r"]},
        {"margin": margin, "positive": sample(values[same]), "negative": sample(values[~same])},
    )
