"""An epoch's running totals: the numbers of its ``metrics.jsonl`` row, its hardest triplets and
its class confusions.

Per step the loop adds the loss, the embeddings and the step's mining record
(:class:`~retrieval.mining_record.MiningRecord`): the mined count, active fraction (share of mined
tuples with loss > 0), mean d_ap and d_an; the violating fraction (of every valid triplet, the share
with d_an < d_ap + ε); the per-anchor view (each anchor's nearest negative against its farthest
positive: ``inverted_anchor_fraction``, the share of anchors with a negative nearer than a
positive, and ``violating_anchor_fraction``, the share with one inside the margin); and the
embeddings' spread (mean distance of the unit embeddings to their centre; near 0 they have
collapsed).

For ``mining/epoch_NNN.jsonl`` the epoch keeps two lists of its k hardest triplets (smallest
d_an − d_ap), each deduplicated by the unordered (anchor, negative) image pair: of every valid
triplet, flagged ``mined`` or not, and of the triplets the miner kept. The log is their union,
hardest first, so it shows the batches' real hardest and, with ``--mined-only``, the miner's own.
The per-anchor views' nearest-negative classes are counted for ``mining/confusions.jsonl``
(:class:`~retrieval.confusions.ConfusionCounts`).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch

from retrieval import data
from retrieval.confusions import ConfusionCounts

__all__ = ["EpochTotals", "warn_on_collapse"]

log = logging.getLogger("retrieval")


class EpochTotals:
    """Running sums of one epoch, its k hardest triplets (of every valid one, and of the mined)
    and its class confusions."""

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
        self.hardest_mined: dict[tuple[int, int], dict] = {}
        self.spread = 0.0
        self.valid = 0
        self.violating = 0
        self.anchors = [0, 0, 0]  # with a positive and a negative; nearest negative nearer than farthest positive; inside ε
        self.confusions = ConfusionCounts()

    def add(self, loss: float, n_images: int, record, embeddings: torch.Tensor) -> None:
        """One step: its loss, the number of images, its mining record and its embeddings."""
        self.loss_sum += loss
        self.steps += 1
        self.images += n_images
        self.valid += int(record.n_triplets)
        self.violating += int(record.n_violating)
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
        for kept, triplets in ((self.hardest, record.hardest), (self.hardest_mined, record.hardest_mined)):
            _keep_hardest(kept, triplets, self.steps)
            if len(kept) > 4 * max(self.keep, 1):
                _trim(kept, self.keep)
        view = record.anchors
        if view is not None:
            self.anchors = [total + count for total, count in zip(self.anchors, view.counts())]
            self.confusions.add(view)

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

    def anchor_fractions(self) -> tuple[float | None, float | None]:
        """Of the epoch's anchors with a positive and a negative in their batch, the fractions whose
        nearest negative lies nearer than their farthest positive, and within ε of it."""
        n, inverted, violating = self.anchors
        return (inverted / n, violating / n) if n else (None, None)

    def summary(self, epoch: int, seconds: float, lr: float) -> dict[str, Any]:
        inverted, violating = self.anchor_fractions()
        return {
            "epoch": epoch,
            "loss": self.mean_loss,
            "active_fraction": self.active_fraction,
            "violating_fraction": self.violating_fraction,
            "inverted_anchor_fraction": inverted,
            "violating_anchor_fraction": violating,
            "mean_d_ap": self.d_ap / self.n_ap if self.n_ap else None,
            "mean_d_an": self.d_an / self.n_an if self.n_an else None,
            "embedding_spread": self.spread / max(self.steps, 1),
            "lr": lr,
            "images_per_second": self.images_per_second,
            "train_seconds": getattr(self, "train_seconds", seconds),
            "seconds": seconds,
        }

    def hardest_rows(self, epoch: int, folder: data.ImageFolder, data_dir: Path) -> list[dict[str, Any]]:
        """The mining log's rows: the k hardest of every valid triplet and the k hardest mined,
        one row per (anchor, positive, negative), hardest first, each with ``mined`` and ``batch``
        (the epoch's step it was met in, from 1: distances and the miner's choice are that batch's)."""
        rows: dict[tuple[int, int, int], dict[str, Any]] = {}
        for kept in (self.hardest, self.hardest_mined):
            _trim(kept, self.keep)
            for triplet in kept.values():
                rows.setdefault((int(triplet["anchor"]), int(triplet["positive"]), int(triplet["negative"])), triplet)
        root = Path(data_dir)
        out = []
        for triplet in sorted(rows.values(), key=lambda t: t["gap"]):
            row: dict[str, Any] = {"epoch": epoch}
            for role in ("anchor", "positive", "negative"):
                index = int(triplet[role])
                row[f"{role}_path"] = _relative(folder.paths[index], root)
                row[f"{role}_label"] = folder.class_names[folder.labels[index]]
            row.update(d_ap=float(triplet["d_ap"]), d_an=float(triplet["d_an"]), d_an_minus_d_ap=float(triplet["gap"]),
                       mined=bool(triplet["mined"]), batch=int(triplet["batch"]))
            out.append(row)
        return out

    def confusion_rows(self, epoch: int, class_names: list[str]) -> list[dict[str, Any]]:
        """The epoch's rows of ``mining/confusions.jsonl`` (:meth:`ConfusionCounts.rows`)."""
        return self.confusions.rows(epoch, class_names)


def _keep_hardest(kept: dict[tuple[int, int], dict], triplets: list[dict], step: int) -> None:
    """Add step ``step``'s triplets (its batch, from 1 in the epoch), keeping per unordered
    (anchor, negative) pair the one with the smallest gap."""
    for triplet in triplets:
        key = tuple(sorted((int(triplet["anchor"]), int(triplet["negative"]))))
        gap = float(triplet["d_an"]) - float(triplet["d_ap"])
        if key not in kept or gap < kept[key]["gap"]:
            kept[key] = {**triplet, "gap": gap, "batch": step}


def _trim(kept: dict[tuple[int, int], dict], keep: int) -> None:
    best = sorted(kept.items(), key=lambda item: item[1]["gap"])[:keep]
    kept.clear()
    kept.update(best)


def _relative(path: Path, root: Path) -> str:
    """``path`` relative to the data folder ``root`` (as listed, else with symbolic links followed); a
    file outside it (a face run's cached crop, in the run's ``faces/``) by its absolute path, so that
    the log does not depend on the folder training ran in."""
    for listed, base in ((Path(path).absolute(), Path(root).absolute()), (Path(path).resolve(), Path(root).resolve())):
        if listed.is_relative_to(base):
            return listed.relative_to(base).as_posix()
    return Path(path).resolve().as_posix()


def warn_on_collapse(row: dict[str, Any], totals: EpochTotals) -> None:
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
