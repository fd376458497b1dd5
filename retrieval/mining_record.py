"""The mining record: what one mining call found in a batch, beside the tuples it kept.

Every miner of :mod:`retrieval.mining` returns its tuples with a :class:`MiningRecord`. With
d_ap = d(a, p), d_an = d(a, n) and the margin ε, it holds

- over the tuples the miner kept: how many, the fraction with a loss (the *active fraction*) and
  the mean d_ap and d_an;
- over every valid triplet of the batch (y_a = y_p, a ≠ p, n a negative of a), whatever the miner
  kept: how many there are and how many violate the margin, d_an − d_ap < ε (the *violating
  fraction*), and the *hardest*: the k triplets with the smallest d_an − d_ap, negative values
  first (the negative lies nearer than the positive), each with ``mined``, whether the miner kept
  it. This is DESIGN.md's hardest-negative log. A semihard miner keeps only 0 < d_an − d_ap < ε,
  so the hardest triplets it kept (``hardest_mined``, recorded too) are ties at the semihard
  boundary, while the batch's hardest lie below 0;
- the *per-anchor view* (:class:`AnchorView`): each anchor's nearest negative against its farthest
  positive, gap_a = min_n d_an − max_p d_ap, the anchor's worst case, and the class of that nearest
  negative (what the class confusions of training count, :mod:`retrieval.confusions`). The list
  of hardest triplets can be filled by a few anchors; the per-anchor view says how many anchors
  have a negative nearer than a positive (gap_a < 0) or inside the margin (gap_a < ε).

How it stays cheap: :class:`TripletScan` takes d_an − d_ap on (anchor, positive, negative) chunks
of anchors (:func:`~retrieval.tuples.anchor_chunks`, K/B of the B×B×B cube, +inf where a triplet
is not valid), counts the violating ones and keeps each chunk's k smallest through a row-minimum
pre-selection and two small ``topk`` s (:func:`smallest`); a threshold miner scans its own mask in
the same pass. Whether the miner kept one of the k hardest is looked up for those k only. The
record is computed the first time it is read, on the embeddings' device, under ``torch.no_grad``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from retrieval.tuples import anchor_chunks

__all__ = ["AnchorView", "MiningRecord", "TripletScan", "anchor_view", "smallest", "top_triplets"]

#: kept(anchors, positive slots, negatives) -> bool tensor: did the miner keep (a, positives[a, k], n)
Kept = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class AnchorView:
    """Each sample of a batch as an anchor: its nearest negative against its farthest positive.

    Tensors of one entry per batch sample (on the CPU once read from a record): ``labels``;
    ``nearest_negative``, the batch index of its nearest negative (-1 without one) at distance
    ``d_an``; ``d_ap``, the distance to its farthest positive (NaN without one); ``classes``, the
    batch's labels ascending, and ``negative_classes`` (B, C), whether the anchor has a negative
    of ``classes[c]`` in the batch (the negative rules decide).
    """

    labels: torch.Tensor
    nearest_negative: torch.Tensor
    d_an: torch.Tensor
    d_ap: torch.Tensor
    classes: torch.Tensor
    negative_classes: torch.Tensor
    margin: float

    @property
    def gap(self) -> torch.Tensor:
        """gap_a = min_n d_an − max_p d_ap per anchor; NaN without a positive or a negative."""
        return self.d_an - self.d_ap

    def counts(self) -> tuple[int, int, int]:
        """(anchors with a positive and a negative, those with gap_a < 0: a negative nearer than
        a positive, those with gap_a < ε: a triplet still violating the margin)."""
        gap = self.gap
        both = ~torch.isnan(gap)
        return int(both.sum()), int((gap < 0).sum()), int((gap < self.margin).sum())

    def cpu(self) -> "AnchorView":
        return AnchorView(*(t.cpu() for t in (self.labels, self.nearest_negative, self.d_an, self.d_ap,
                                               self.classes, self.negative_classes)), self.margin)


class MiningRecord:
    """What one mining call found (see the module docstring).

    Attributes (read lazily, so a training step that never looks pays no device synchronisation):

    - ``n_valid``: valid tuples (triplets for a triplet miner, positive plus negative pairs for a
      pair miner); ``n_mined``: tuples the miner kept;
    - ``active_fraction``: fraction of the mined tuples with loss > 0: triplets with
      d_an < d_ap + ε; for pairs, positive pairs with d > 0 and negative pairs with d < ε. 0.0
      when nothing was mined;
    - ``mean_d_ap`` / ``mean_d_an``: over the mined tuples; None when there is none;
    - ``n_triplets``: valid triplets of the batch; ``n_violating``: those with d_an − d_ap < ε;
      ``violating_fraction``: their share (None without a valid triplet);
    - ``hardest``: up to k valid triplets with the smallest d_an − d_ap, hardest first, as dicts
      {"anchor", "positive", "negative", "d_ap", "d_an", "mined"};
    - ``hardest_mined``: the same for the k hardest triplets the miner kept (all ``mined``);
    - ``anchors``: the :class:`AnchorView` of the batch (None where not computed).

    The three indices are dataset indices when the miner was given ``indices``, else batch indices.
    """

    def __init__(self, compute: Callable[[], dict], indices: torch.Tensor | None = None) -> None:
        # compute() -> {"counts": [n_valid, n_mined, n_active, n_ap, n_an, n_triplets, n_violating]
        # (integers, possibly held as floats), "sums": [sum d_ap, sum d_an], "hardest": None or
        # (anchors, positives, negatives, d_ap, d_an, mined) as batch indices, hardest first, +inf
        # padding, "hardest_mined": the same without mined, "anchors": AnchorView or None}.
        self._compute: Callable[[], dict] | None = compute
        self._indices = indices
        self._values: dict | None = None

    def _materialise(self) -> dict:
        if self._values is None:
            assert self._compute is not None
            with torch.no_grad():
                found = self._compute()
            self._compute = None  # let go of the batch's tensors
            anchors = found.get("anchors")
            self._values = {
                "counts": [int(round(c)) for c in found["counts"].tolist()],
                "sums": [float(v) for v in found["sums"].tolist()],
                "hardest": self._rows(found.get("hardest")),
                "hardest_mined": self._rows(found.get("hardest_mined")),
                "anchors": None if anchors is None else anchors.cpu(),
            }
        return self._values

    def _rows(self, tensors) -> list[dict]:
        if tensors is None:
            return []
        anchors, positives, negatives, d_ap, d_an, *mined = (t.cpu() for t in tensors)
        keep = torch.isfinite(d_an - d_ap)
        roles = [t[keep] for t in (anchors, positives, negatives)]
        if self._indices is not None:
            roles = [self._indices[r] for r in roles]
        flags = mined[0][keep].tolist() if mined else [True] * int(keep.sum())
        return [{"anchor": a, "positive": p, "negative": n, "d_ap": dap, "d_an": dan, "mined": bool(m)}
                for a, p, n, dap, dan, m in zip(*(r.tolist() for r in roles), d_ap[keep].tolist(), d_an[keep].tolist(), flags)]

    @property
    def n_valid(self) -> int:
        return self._materialise()["counts"][0]

    @property
    def n_mined(self) -> int:
        return self._materialise()["counts"][1]

    @property
    def active_fraction(self) -> float:
        counts = self._materialise()["counts"]
        return counts[2] / counts[1] if counts[1] else 0.0

    @property
    def mean_d_ap(self) -> float | None:
        values = self._materialise()
        return values["sums"][0] / values["counts"][3] if values["counts"][3] else None

    @property
    def mean_d_an(self) -> float | None:
        values = self._materialise()
        return values["sums"][1] / values["counts"][4] if values["counts"][4] else None

    @property
    def n_triplets(self) -> int:
        return self._materialise()["counts"][5]

    @property
    def n_violating(self) -> int:
        return self._materialise()["counts"][6]

    @property
    def violating_fraction(self) -> float | None:
        return self.n_violating / self.n_triplets if self.n_triplets else None

    @property
    def hardest(self) -> list[dict]:
        return self._materialise()["hardest"]

    @property
    def hardest_mined(self) -> list[dict]:
        return self._materialise()["hardest_mined"]

    @property
    def anchors(self) -> AnchorView | None:
        return self._materialise()["anchors"]

    def to_dict(self) -> dict:
        """The record as plain JSON-ready values (the per-anchor view as its counts)."""
        view = self.anchors
        n_anchors, inverted, violating = view.counts() if view is not None else (0, 0, 0)
        return {
            "n_valid": self.n_valid,
            "n_mined": self.n_mined,
            "active_fraction": self.active_fraction,
            "mean_d_ap": self.mean_d_ap,
            "mean_d_an": self.mean_d_an,
            "n_triplets": self.n_triplets,
            "violating_fraction": self.violating_fraction,
            "n_anchors": n_anchors,
            "inverted_anchors": inverted,
            "violating_anchors": violating,
            "hardest": self.hardest,
            "hardest_mined": self.hardest_mined,
        }

    def __repr__(self) -> str:
        d = self.to_dict()
        for key in ("hardest", "hardest_mined"):
            d[key] = f"<{len(d[key])} triplets>"
        return "MiningRecord(" + ", ".join(f"{k}={v!r}" for k, v in d.items()) + ")"


class TripletScan:
    """Every valid triplet of a batch, taken chunk of anchors by chunk: how many violate the margin
    (d_an − d_ap < ε) and the k with the smallest d_an − d_ap.

    ``scan(dist, positives, valid, neg)`` runs the whole pass; a threshold miner that scans its own
    mask in the same pass gives ``on_chunk(rows, gap)``, called after each chunk is counted (it may
    overwrite ``gap``). Then :meth:`hardest` names the k hardest and asks ``kept`` which the miner used.
    """

    def __init__(self, margin: float, k: int) -> None:
        self.margin, self.k = float(margin), int(k)
        self._violating: list[torch.Tensor] = []
        self._candidates: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._d_ap = self._positives = None

    def scan(self, dist: torch.Tensor, positives: torch.Tensor, valid: torch.Tensor, neg: torch.Tensor,
             on_chunk: Callable[[slice, torch.Tensor], None] | None = None) -> "TripletScan":
        """Scan a batch: ``dist`` (B, B), each anchor's positives (B, K) with their ``valid`` mask,
        ``neg`` (B, B) the negative mask. ``gap`` is (c, K, B), +inf where (a, p, n) is not valid."""
        batch, k_max = positives.shape
        self._positives, self._d_ap = positives, dist.gather(1, positives)
        d_an = dist.masked_fill(~neg, math.inf)
        d_ap = self._d_ap.masked_fill(~valid, -math.inf)  # inf − (−inf) = inf: never NaN
        for rows in anchor_chunks(batch, k_max * batch):
            gap = d_an[rows, None, :] - d_ap[rows, :, None]
            self._violating.append((gap < self.margin).sum())
            if self.k > 0:
                values, flat = smallest(gap.reshape(-1, batch), self.k)
                self._candidates.append((values, flat + rows.start * k_max * batch))
            if on_chunk is not None:
                on_chunk(rows, gap)
        return self

    @property
    def n_violating(self) -> torch.Tensor:
        return torch.stack(self._violating).sum() if self._violating else torch.zeros((), dtype=torch.long)

    def hardest(self, kept: Kept | None) -> tuple[torch.Tensor, ...] | None:
        """(anchors, positives, negatives, d_ap, d_an, mined) of the k hardest, hardest first
        (+inf gaps where the batch has fewer); ``kept=None``: every triplet counts as mined."""
        found = top_triplets(self._candidates, self.k, self._positives, self._d_ap)
        if found is None:
            return None
        a, slot, n, d_ap, d_an = found
        mined = torch.ones_like(a, dtype=torch.bool) if kept is None else kept(a, slot, n)
        return a, self._positives[a, slot], n, d_ap, d_an, mined


def top_triplets(candidates: list[tuple[torch.Tensor, torch.Tensor]], k: int, positives: torch.Tensor,
                 d_ap: torch.Tensor) -> tuple[torch.Tensor, ...] | None:
    """The k smallest of chunk candidates (gap values, flat indices into the (B, K, B) form):
    (anchors, positive slots, negatives, d_ap, d_an), hardest first; None without candidates."""
    if k <= 0 or not candidates:
        return None
    gap, flat = (torch.cat(t) for t in zip(*candidates))
    batch, k_max = positives.shape
    top = torch.topk(gap, min(k, len(gap)), largest=False).indices
    gap, flat = gap[top], flat[top]
    a = torch.div(flat, k_max * batch, rounding_mode="floor")
    slot = torch.div(flat, batch, rounding_mode="floor") % k_max
    d_ap_top = d_ap[a, slot]
    return a, slot, flat % batch, d_ap_top, d_ap_top + gap  # gap is inf where fewer were found


def smallest(gap: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k smallest entries of a (R, B) matrix (inf marks entries to skip) and their flat indices.

    The k smallest entries lie in the k rows with the smallest minima (a row holding one of them
    has a minimum at most that entry, and at most k − 1 rows can beat it), so only those rows are
    searched: a row-wise ``amin`` and two small ``topk`` s instead of one over the whole matrix.
    """
    rows = torch.topk(gap.amin(dim=1), min(k, gap.shape[0]), largest=False).indices
    values, where = torch.topk(gap[rows].reshape(-1), min(k, rows.numel() * gap.shape[1]), largest=False)
    width = gap.shape[1]
    return values, rows[torch.div(where, width, rounding_mode="floor")] * width + where % width


def anchor_view(dist: torch.Tensor, neg: torch.Tensor, positives: torch.Tensor, valid: torch.Tensor,
                labels: torch.Tensor, margin: float) -> AnchorView:
    """The :class:`AnchorView` of a batch from its distances (B, B), negative mask, padded
    positives (B, K) with their valid mask, and labels (B,)."""
    has_negative = neg.any(dim=1)
    d_an, nearest = dist.masked_fill(~neg, math.inf).min(dim=1)
    nearest = torch.where(has_negative, nearest, torch.full_like(nearest, -1))
    d_an = torch.where(has_negative, d_an, torch.full_like(d_an, math.nan))
    if positives.shape[1]:
        d_ap = dist.gather(1, positives).masked_fill(~valid, -math.inf).amax(dim=1)
        d_ap = torch.where(valid.any(dim=1), d_ap, torch.full_like(d_ap, math.nan))
    else:
        d_ap = torch.full_like(d_an, math.nan)
    classes, inverse = torch.unique(labels, return_inverse=True)
    members = torch.nn.functional.one_hot(inverse, len(classes)).to(dist.dtype)
    negative_classes = (neg.to(dist.dtype) @ members) > 0
    return AnchorView(labels, nearest, d_an, d_ap, classes, negative_classes, float(margin))
