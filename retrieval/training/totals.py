"""An epoch's running totals: the numbers of its ``metrics.jsonl`` row and its hardest triplets.

Per step the loop adds the loss, the miner's record (mined count, active fraction = share of mined
tuples with loss > 0, mean d_ap and d_an), the record of every valid triplet (the violating
fraction: share with d_an < d_ap + ε), the embeddings' spread (mean distance of the unit
embeddings to their centre; near 0 the embeddings have collapsed) and the batch's hardest
triplets. The epoch keeps its k hardest (smallest d_an − d_ap), deduplicated by the unordered
(anchor, negative) image pair, for ``mining/epoch_NNN.jsonl``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch

from retrieval import data

__all__ = ["EpochTotals", "warn_on_collapse"]

log = logging.getLogger("retrieval")


class EpochTotals:
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
