"""Validation on the held-out classes after every epoch (and of the untrained model, epoch 0).

Every held-out image is a query against all the others (leave-one-out): Recall@1 and MAP@R as in
Musgrave et al. 2020 (:func:`retrieval.evaluate.retrieval_metrics`). The same embeddings give
every pair's distance once; from all of them, verification (:mod:`retrieval.verification`): the
EER, TAR at FAR 1e-1 and 1e-2 (1e-3 with at least 10 000 different-class pairs) and the threshold
τ for the run's target FAR (the largest τ with FAR(τ) ≤ target on these pairs). Up to
``max_pairs`` sampled positive- and negative-pair distances go to ``val_distances.json``.
MAP@R chooses the run's best epoch (``model.safetensors``), whose τ ``config.json`` stores.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from retrieval import data, distributed
from retrieval.embed import embed_readable
from retrieval.evaluate import retrieval_metrics
from retrieval.verification import PairDistances, VerificationSummary, summarise

__all__ = ["EMPTY_METRICS", "Validation", "validate"]

logger = logging.getLogger(__name__)

#: a metrics row's validation keys when there are no held-out classes
EMPTY_METRICS: dict[str, Any] = {"recall_at_1": None, "map_at_r": None, "eer": None, "tar_at_far": None,
                                 "n_positive_pairs": 0, "n_negative_pairs": 0, "threshold": None}


@dataclass
class Validation:
    metrics: dict[str, Any]  # recall_at_1, map_at_r, eer, tar_at_far, pair counts, threshold (None without held-out classes)
    distances: dict[str, Any] | None  # margin, sampled positive / negative distances (None: no held-out classes)
    verification: VerificationSummary | None = None  # EER, TAR at FAR, τ at the target FAR (None: no held-out classes)

    def verification_entry(self, epoch: int) -> dict[str, Any] | None:
        """``config.json``'s ``"verification"`` for this validation as epoch ``epoch`` (the shape
        ``retrieval calibrate`` writes), or None without a threshold."""
        summary = self.verification
        if summary is None or summary.threshold is None:
            return None
        return {**summary.threshold.to_json(), "eer": summary.eer, "pairs": f"validation classes, epoch {epoch}"}


def validate(model, folder: data.ImageFolder, transform, device, precision, margin, max_pairs: int = 5000, *,
             target_far: float | None = 0.01, ctx=None) -> Validation:
    """Recall@1, MAP@R (leave-one-out) and verification on every pair of the held-out classes, and
    sampled pair distances (under torchrun each process embeds a share of the images and all get
    the same numbers). Images that cannot be decoded are left out (the loader warns of each)."""
    if not folder.paths:
        return Validation(dict(EMPTY_METRICS), None)
    ctx = ctx or distributed.DistributedContext(device=torch.device(device))
    # an image that passed the folder scan but fails to decode (a truncated JPEG) is left out, as
    # training leaves it out: the loader has warned of it by name
    embeddings, kept = embed_readable(model, folder.paths, transform, batch_size=128, device=device, precision=precision, ctx=ctx)
    if not kept:
        return Validation(dict(EMPTY_METRICS), None)
    labels = np.asarray(folder.labels)[kept]
    metrics = retrieval_metrics(embeddings, labels)
    x = torch.from_numpy(embeddings)
    distances = torch.cdist(x, x).numpy()
    upper = np.triu_indices(len(labels), k=1)
    same = labels[upper[0]] == labels[upper[1]]
    values = distances[upper]
    pairs = PairDistances(values[same], values[~same])
    summary = summarise(pairs, target_far=target_far)
    if summary.no_threshold:  # the held-out classes share images: this epoch stores no τ
        logger.warning("validation classes: %s; no τ from this epoch", summary.no_threshold)
    rng = np.random.default_rng(0)
    sample = lambda v: rng.choice(v, size=min(len(v), max_pairs), replace=False).round(5).tolist() if len(v) else []
    return Validation(
        {"recall_at_1": metrics["recall_at_1"], "map_at_r": metrics["map_at_r"], **summary.metrics(),
         "threshold": None if summary.threshold is None else summary.threshold.threshold},
        {"margin": margin, "positive": sample(values[same]), "negative": sample(values[~same])},
        summary,
    )
