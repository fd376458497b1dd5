"""Online miners: which (anchor, positive, negative) tuples of a batch a loss trains on, and the
mining record that shows what was mined.

A valid triplet (a, p, n) of a batch has y_a = y_p, a ≠ p, and n a negative of a (y_n ≠ y_a, and
allowed by the :class:`~retrieval.negatives.NegativeRules`, if any). With d_ap = d(a, p),
d_an = d(a, n) the Euclidean distances between L2-normalised embeddings and ε the margin,
:class:`TripletMiner` keeps

=================  ==============================================================================
``all``            every valid triplet
``hard``           d_an < d_ap                       (the negative is nearer than the positive)
``semihard``       d_ap < d_an < d_ap + ε            (FaceNet, Schroff et al. 2015)
``easy``           d_an ≥ d_ap + ε                   (the margin is already met)
``batch-hard``     per anchor: its farthest positive and its nearest negative (Hermans et al. 2017)
``batch-semihard`` per (a, p): the nearest negative with d_an > d_ap; where none, the farthest negative
=================  ==============================================================================

:class:`PairMiner` does the same for pair losses (the contrastive loss). Both return index tensors
into the batch (:class:`~retrieval.tuples.MinedTriplets`, :class:`~retrieval.tuples.MinedPairs`),
which every loss in :mod:`retrieval.losses` accepts as ``mined``, and a :class:`MiningRecord`: how
many tuples were valid and mined, the fraction with loss > 0, the mean d_ap and d_an, and the k
hardest triplets (smallest d_an − d_ap) with dataset indices, which training writes to
``mining/epoch_NNN.jsonl`` and the app shows as images.

How it stays fast and small. The miners never build the B×B×B triplet tensor. Each anchor's
positives are gathered into a (B, K) matrix (:func:`~retrieval.tuples.padded_positives`), K the
largest number of positives an anchor has (K − 1 for P×K batches), so a rule is evaluated on
(anchor, positive, candidate negative) tensors of B·K·B elements — K/B of the full cube — in
chunks of anchors that bound the memory. The threshold miners keep that boolean mask as their
result and enumerate the index triplets only when asked; the triplet loss evaluates its hinge on
the same dense form, which on a CPU is many times cheaper than gathering scattered triplets. The
record (counts, means, and the hardest triplets through a row-minimum pre-selection and two small
``topk``s) is computed from the same tensors the first time it is read, so mining for a loss that
nobody inspects costs nothing extra. Everything runs on the embeddings' device under
``torch.no_grad``, in float32 (float64 stays float64); there is no Python loop over anchors.

The strict comparisons are made on d_an − d_ap (as pytorch-metric-learning does), so
``semihard`` is 0 < d_an − d_ap < ε and ``easy`` is d_an − d_ap ≥ ε.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from retrieval.distances import euclidean_distance, euclidean_from_squared, full_precision, normalize, squared_euclidean_distance
from retrieval.negatives import NegativeRules, negative_mask, positive_mask
from retrieval.tuples import MinedPairs, MinedTriplets, anchor_chunks, padded_positives

__all__ = [
    "TRIPLET_STRATEGIES",
    "PAIR_STRATEGIES",
    "TripletMiner",
    "PairMiner",
    "MiningRecord",
    "build_miner",
]

TRIPLET_STRATEGIES = ("all", "hard", "semihard", "easy", "batch-hard", "batch-semihard")
PAIR_STRATEGIES = ("all", "active", "hard", "batch-hard")


class MiningRecord:
    """What one mining call found.

    Attributes (read lazily, so a training step that never looks pays no device synchronisation):

    - ``n_valid``: valid tuples in the batch (triplets for :class:`TripletMiner`, positive plus
      negative pairs for :class:`PairMiner`).
    - ``n_mined``: tuples the miner kept.
    - ``active_fraction``: fraction of the mined tuples with loss > 0: triplets with
      d_an < d_ap + ε; for pairs, positive pairs with d > 0 and negative pairs with d < ε.
      0.0 when nothing was mined.
    - ``mean_d_ap`` / ``mean_d_an``: mean anchor-positive / anchor-negative distance over the mined
      tuples; ``None`` when there is none.
    - ``hardest``: up to ``hardest_k`` mined triplets with the smallest d_an − d_ap, hardest first,
      as dicts {"anchor", "positive", "negative", "d_ap", "d_an"}; the three indices are dataset
      indices when the miner was given ``indices``, else batch indices. (A pair miner reports its
      mined negative pairs, each with the anchor's farthest positive.)
    """

    def __init__(self, compute: Callable[[], tuple], indices: torch.Tensor | None = None) -> None:
        # compute() -> (counts, sums, hardest): counts [n_valid, n_mined, n_active, n_ap, n_an]
        # (integers, possibly held as floats), sums [sum d_ap, sum d_an], hardest None or
        # (anchors, positives, negatives, d_ap, d_an) as batch indices, hardest first, +inf padding.
        # It runs on first access, so a step that never reads the record never pays for it.
        self._compute: Callable[[], tuple] | None = compute
        self._indices = indices
        self._values: dict | None = None

    def _materialise(self) -> dict:
        if self._values is None:
            assert self._compute is not None
            with torch.no_grad():
                counts, sums, hardest_tensors = self._compute()
            self._compute = None  # let go of the batch's tensors
            hardest: list[dict] = []
            if hardest_tensors is not None:
                anchors, positives, negatives, d_ap, d_an = (t.cpu() for t in hardest_tensors)
                keep = torch.isfinite(d_an - d_ap)
                rows = [t[keep] for t in (anchors, positives, negatives)]
                if self._indices is not None:
                    rows = [self._indices[r] for r in rows]
                for a, p, n, dap, dan in zip(*(r.tolist() for r in rows), d_ap[keep].tolist(), d_an[keep].tolist()):
                    hardest.append({"anchor": a, "positive": p, "negative": n, "d_ap": dap, "d_an": dan})
            self._values = {
                "counts": [int(round(c)) for c in counts.tolist()],
                "sums": [float(v) for v in sums.tolist()],
                "hardest": hardest,
            }
        return self._values

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
    def hardest(self) -> list[dict]:
        return self._materialise()["hardest"]

    def to_dict(self) -> dict:
        """The record as plain JSON-ready values."""
        return {
            "n_valid": self.n_valid,
            "n_mined": self.n_mined,
            "active_fraction": self.active_fraction,
            "mean_d_ap": self.mean_d_ap,
            "mean_d_an": self.mean_d_an,
            "hardest": self.hardest,
        }

    def __repr__(self) -> str:
        d = self.to_dict()
        d["hardest"] = f"<{len(d['hardest'])} triplets>"
        return "MiningRecord(" + ", ".join(f"{k}={v!r}" for k, v in d.items()) + ")"


class _MarginMiner:
    """What the triplet and pair miners share: a ``strategy`` out of the class's ``strategies``,
    the margin ε (>= 0), the negative rules and how many hardest examples the record keeps."""

    strategies: tuple[str, ...] = ()

    def __init__(
        self, strategy: str, margin: float, *, negative_rules: NegativeRules | None = None, hardest_k: int = 20
    ) -> None:
        if strategy not in self.strategies:
            raise ValueError(f"strategy must be one of {', '.join(self.strategies)}; got {strategy!r}")
        if not margin >= 0:
            raise ValueError(f"margin must be >= 0, got {margin}")
        self.strategy = strategy
        self.margin = float(margin)
        self.negative_rules = negative_rules
        self.hardest_k = int(hardest_k)

    def __repr__(self) -> str:
        rules = "" if self.negative_rules is None else f", negative_rules={self.negative_rules!r}"
        return f"{type(self).__name__}({self.strategy!r}, margin={self.margin}{rules})"


class TripletMiner(_MarginMiner):
    """Online triplet miner; ``strategy`` is one of the rules in the module docstring's table.

    Args:
        strategy: ``"all"``, ``"hard"``, ``"semihard"``, ``"easy"``, ``"batch-hard"`` or
            ``"batch-semihard"``.
        margin: ε, in Euclidean distance between normalised embeddings (0 to 2); use the loss's margin.
        negative_rules: domain knowledge about negatives (:class:`~retrieval.negatives.NegativeRules`).
        hardest_k: how many of the hardest mined triplets the record keeps.

    Called as ``miner(embeddings, labels, indices=None) -> MinedTriplets``; ``indices`` are the
    samples' dataset indices, used only to name the hardest triplets in the record. Triplets come
    ordered by anchor, then positive, then negative.

    Compared with pytorch-metric-learning: its ``TripletMarginMiner`` ``"all"`` keeps only the
    triplets that violate the margin (d_an < d_ap + ε), ours keeps every valid triplet (with the
    triplet loss's ``nonzero_mean`` the loss is the same); ``hard``, ``semihard`` and ``easy``
    agree except at exact ties (its hard is d_an ≤ d_ap, its easy d_an > d_ap + ε). Our
    ``batch-hard`` is its ``BatchHardMiner``. ``batch-semihard`` has no exact counterpart.
    """

    strategies = TRIPLET_STRATEGIES

    def __call__(
        self, embeddings: torch.Tensor, labels: torch.Tensor | Sequence[int], indices: torch.Tensor | Sequence[int] | None = None
    ) -> MinedTriplets:
        with torch.no_grad(), full_precision(embeddings):
            x = normalize(embeddings.detach())
            labels, indices = _batch_labels(labels, indices, x)
            squared = squared_euclidean_distance(x, normalized=True)
            neg = negative_mask(labels, self.negative_rules)
            positives, valid = padded_positives(positive_mask(labels))
            n_valid = (valid.sum(dim=1) * neg.sum(dim=1)).sum()
            if positives.shape[1] == 0:
                return _empty_triplets(x.device, n_valid, x.dtype)
            if self.strategy == "batch-hard":
                return self._batch_hard(squared, positives, valid, neg, n_valid, indices)
            if self.strategy == "batch-semihard":
                return self._batch_semihard(squared, positives, valid, neg, n_valid, indices)
            dist = euclidean_from_squared(squared)
            return self._threshold(dist, positives, valid, dist.gather(1, positives), neg, n_valid, indices)

    # -- the threshold rules, on the dense (anchor, positive, negative) form ------------------------

    def _threshold(self, dist, positives, valid, d_ap, neg, n_valid, indices) -> MinedTriplets:
        batch, k_max = positives.shape
        # NaN where (a, k) is padding or n is not a negative of a: every comparison with NaN is False.
        d_an_or_nan = dist.masked_fill(~neg, math.nan)
        d_ap_or_nan = d_ap.masked_fill(~valid, math.nan)
        masks = []
        for rows in anchor_chunks(batch, k_max * batch):
            if self.strategy == "all":
                masks.append(valid[rows, :, None] & neg[rows, None, :])
                continue
            gap = d_an_or_nan[rows, None, :] - d_ap_or_nan[rows, :, None]  # d_an − d_ap, (c, K, B)
            if self.strategy == "hard":
                masks.append(gap < 0)
            elif self.strategy == "semihard":
                masks.append((gap > 0) & (gap < self.margin))
            else:  # easy
                masks.append(gap >= self.margin)
        mask = masks[0] if len(masks) == 1 else torch.cat(masks)

        def compute_record():
            stats, candidates = [], []
            for rows in anchor_chunks(batch, k_max * batch):
                gap = d_an_or_nan[rows, None, :] - d_ap_or_nan[rows, :, None]
                chunk_mask = mask[rows]
                weight = chunk_mask.to(dist.dtype)
                per_pair = weight.sum(dim=2)  # (c, K): negatives per (a, p)
                n_active = (gap < self.margin).sum() if self.strategy == "all" else per_pair.new_zeros(())
                chunk_stats = [per_pair.sum(), n_active, (per_pair * d_ap[rows]).sum(), (weight.sum(dim=1) * dist[rows]).sum()]
                stats.append(torch.stack(chunk_stats).to(_exact_dtype(dist.device)))  # counts stay exact integers
                if self.hardest_k > 0:
                    values, flat = _smallest(gap.masked_fill_(~chunk_mask, math.inf).reshape(-1, batch), self.hardest_k)
                    candidates.append((values, flat + rows.start * k_max * batch))
            stats = stats[0] if len(stats) == 1 else torch.stack(stats).sum(dim=0)
            n_mined, n_active = stats[0], stats[1]
            if self.strategy in ("hard", "semihard"):
                n_active = n_mined  # every such triplet violates the margin
            # ("all" counted them; "easy" triplets have d_an − d_ap >= ε, a zero hinge: n_active stays 0)
            counts = torch.stack([n_valid.to(stats.dtype), n_mined, n_active, n_mined, n_mined])
            hardest = None
            if candidates:
                gap, flat = (torch.cat(t) for t in zip(*candidates)) if len(candidates) > 1 else candidates[0]
                top = torch.topk(gap, min(self.hardest_k, len(gap)), largest=False).indices
                gap, flat = gap[top], flat[top]
                a = torch.div(flat, k_max * batch, rounding_mode="floor")
                k = torch.div(flat, batch, rounding_mode="floor") % k_max
                d_ap_top = d_ap[a, k]
                hardest = (a, positives[a, k], flat % batch, d_ap_top, d_ap_top + gap)  # gap is inf where fewer were mined
            return counts, stats[2:], hardest

        return MinedTriplets(None, None, None, MiningRecord(compute_record, indices), dense=(positives, mask))

    # -- the per-anchor / per-pair rules, decided on squared distances (the same order) ------------

    def _batch_hard(self, squared, positives, valid, neg, n_valid, indices) -> MinedTriplets:
        sq_ap, k = squared.gather(1, positives).masked_fill_(~valid, -1.0).max(dim=1)  # farthest positive
        sq_an, negatives = squared.masked_fill(~neg, 5.0).min(dim=1)  # nearest negative (d² <= 4)
        anchors = torch.nonzero(valid[:, 0] & (sq_an <= 4.0)).squeeze(1)
        positives = positives.gather(1, k[:, None]).squeeze(1)
        d_ap, d_an = euclidean_from_squared(torch.stack([sq_ap[anchors], sq_an[anchors]])).unbind()
        return self._explicit(anchors, positives[anchors], negatives[anchors], d_ap, d_an, n_valid, indices)

    def _batch_semihard(self, squared, positives, valid, neg, n_valid, indices) -> MinedTriplets:
        batch, k_max = positives.shape
        sq_ap = squared.gather(1, positives)
        farthest_sq_an, farthest = squared.masked_fill(~neg, -1.0).max(dim=1)
        sq_neg = squared.masked_fill(~neg, math.nan)  # NaN: not a negative, never "farther"
        nearest_farther = []
        for rows in anchor_chunks(batch, k_max * batch):
            sq_an = sq_neg[rows, None, :]
            candidates = torch.where(sq_an > sq_ap[rows, :, None], sq_an, 5.0)  # d² <= 4 < 5: no candidate
            nearest_farther.append(candidates.min(dim=2))  # nearest negative with d_an > d_ap
        sq_an = torch.cat([v for v, _ in nearest_farther]) if len(nearest_farther) > 1 else nearest_farther[0][0]
        negatives = torch.cat([i for _, i in nearest_farther]) if len(nearest_farther) > 1 else nearest_farther[0][1]
        none_farther = sq_an > 4.0
        sq_an = torch.where(none_farther, farthest_sq_an[:, None], sq_an)  # else the farthest negative
        negatives = torch.where(none_farther, farthest[:, None], negatives)
        a, k = torch.nonzero(valid & (farthest_sq_an >= 0)[:, None], as_tuple=True)
        mined_positives, mined_negatives = torch.stack([positives, negatives])[:, a, k]
        d_ap, d_an = euclidean_from_squared(torch.stack([sq_ap, sq_an])[:, a, k]).unbind()
        return self._explicit(a, mined_positives, mined_negatives, d_ap, d_an, n_valid, indices)

    def _explicit(self, anchors, positives, negatives, d_ap, d_an, n_valid, indices) -> MinedTriplets:
        def compute_record():
            n = torch.full((), len(anchors), device=anchors.device)
            counts = torch.stack([n_valid, n, (d_an - d_ap < self.margin).sum(), n, n])
            sums = torch.stack([d_ap.sum(), d_an.sum()])
            return counts, sums, _hardest_of(anchors, positives, negatives, d_ap, d_an, self.hardest_k)

        return MinedTriplets(anchors, positives, negatives, MiningRecord(compute_record, indices))


class PairMiner(_MarginMiner):
    """Online pair miner for pair losses (the contrastive loss).

    With d the distance of a pair and ε the margin, ``strategy`` keeps

    - ``"all"``: every positive pair (y_a = y_p, a ≠ p) and every negative pair.
    - ``"active"``: every positive pair and the negative pairs inside the margin, d_an < ε — exactly
      the pairs with non-zero contrastive loss.
    - ``"hard"``: the pairs ranked wrongly at their anchor: positive pairs farther than the anchor's
      nearest negative (d_ap > min_n d_an), negative pairs nearer than its farthest positive
      (d_an < max_p d_ap).
    - ``"batch-hard"``: per anchor, its farthest positive pair and its nearest negative pair.

    Called as ``miner(embeddings, labels, indices=None) -> MinedPairs``. Pairs are ordered (a, x);
    the contrastive loss treats (a, x) and (x, a) as one pair. ``"active"`` equals
    pytorch-metric-learning's ``PairMarginMiner(pos_margin=0, neg_margin=ε)`` (up to positive pairs
    at distance exactly 0).
    """

    strategies = PAIR_STRATEGIES

    def __call__(
        self, embeddings: torch.Tensor, labels: torch.Tensor | Sequence[int], indices: torch.Tensor | Sequence[int] | None = None
    ) -> MinedPairs:
        with torch.no_grad(), full_precision(embeddings):
            x = normalize(embeddings.detach())
            labels, indices = _batch_labels(labels, indices, x)
            dist = euclidean_distance(x, normalized=True)
            neg = negative_mask(labels, self.negative_rules)
            positives, valid = padded_positives(positive_mask(labels))  # positive pairs as (B, K)
            d_ap = dist.gather(1, positives)
            if positives.shape[1]:
                farthest_d_ap, farthest_k = d_ap.masked_fill(~valid, -1.0).max(dim=1)  # -1: no positive
            else:
                farthest_d_ap = dist.new_full((len(dist),), -1.0)
                farthest_k = torch.zeros(len(dist), dtype=torch.long, device=dist.device)
            if self.strategy == "all":
                pos_kept, neg_kept = valid, neg
            elif self.strategy == "active":
                pos_kept, neg_kept = valid, neg & (dist < self.margin)
            elif self.strategy == "hard":
                nearest_d_an = dist.masked_fill(~neg, math.inf).amin(dim=1)
                pos_kept = valid & (d_ap > nearest_d_an[:, None])
                neg_kept = neg & (dist < farthest_d_ap[:, None])
            else:  # batch-hard
                pos_kept = valid & (torch.arange(positives.shape[1], device=valid.device) == farthest_k[:, None])
                nearest_negative = dist.masked_fill(~neg, math.inf).argmin(dim=1)
                neg_kept = torch.zeros_like(neg).scatter_(1, nearest_negative[:, None], True) & neg

            def compute_record():
                pos_w, neg_w = pos_kept.to(dist.dtype), neg_kept.to(dist.dtype)
                n_ap, n_an = pos_w.sum(), neg_w.sum()
                active_an = n_an if self.strategy == "active" else (neg_w * (dist < self.margin)).sum()
                counts = torch.stack([
                    valid.sum() + neg.sum(),
                    n_ap + n_an,
                    (pos_w * (d_ap > 0)).sum() + active_an,  # positive pairs apart, negative pairs inside ε
                    n_ap,
                    n_an,
                ])
                sums = torch.stack([(pos_w * d_ap).sum(), (neg_w * dist).sum()])
                hardest = None
                if self.hardest_k > 0:  # mined negative pairs, each with the anchor's farthest positive
                    no_positive = (farthest_d_ap < 0)[:, None]
                    gap = (dist - farthest_d_ap[:, None]).masked_fill_(~neg_kept | no_positive, math.inf)
                    value, flat = _smallest(gap, self.hardest_k)
                    a, n = torch.div(flat, len(dist), rounding_mode="floor"), flat % len(dist)
                    farthest = positives.gather(1, farthest_k[:, None]).squeeze(1) if positives.shape[1] else farthest_k
                    hardest = (a, farthest[a], n, farthest_d_ap[a], farthest_d_ap[a] + value)
                return counts, sums, hardest

            record = MiningRecord(compute_record, indices)
            return MinedPairs(None, None, None, None, record, masks=(positives, pos_kept, neg_kept))


def build_miner(
    name: str, margin: float, *, negative_rules: NegativeRules | None = None, hardest_k: int = 20
) -> TripletMiner | PairMiner | None:
    """The miner for a command-line name: ``"none"`` (no miner: the loss uses every valid tuple),
    a :class:`TripletMiner` strategy (``"semihard"``, ...), or ``"pair-<strategy>"`` for a
    :class:`PairMiner` (``"pair-active"``, ...)."""
    if name in ("none", "", None):
        return None
    if name.startswith("pair-"):
        return PairMiner(name[len("pair-") :], margin, negative_rules=negative_rules, hardest_k=hardest_k)
    return TripletMiner(name, margin, negative_rules=negative_rules, hardest_k=hardest_k)


# ---------------------------------------------------------------------------------------------
# helpers


def _smallest(gap: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k smallest entries of a (R, B) matrix (inf marks entries to skip) and their flat indices.

    The k smallest entries lie in the k rows with the smallest minima (a row holding one of them
    has a minimum at most that entry, and at most k − 1 rows can beat it), so only those rows are
    searched: a row-wise ``amin`` and two small ``topk``s instead of one over the whole matrix.
    """
    rows = torch.topk(gap.amin(dim=1), min(k, gap.shape[0]), largest=False).indices
    values, where = torch.topk(gap[rows].reshape(-1), min(k, rows.numel() * gap.shape[1]), largest=False)
    width = gap.shape[1]
    return values, rows[torch.div(where, width, rounding_mode="floor")] * width + where % width


def _exact_dtype(device: torch.device) -> torch.dtype:
    """float64 (integers exact to 2^53) where the device has it."""
    return torch.float32 if device.type == "mps" else torch.float64


def _hardest_of(anchors, positives, negatives, d_ap, d_an, k) -> tuple[torch.Tensor, ...] | None:
    if k <= 0 or len(anchors) == 0:
        return None
    top = torch.topk(d_an - d_ap, min(k, len(anchors)), largest=False).indices
    return (*torch.stack([anchors, positives, negatives])[:, top], *torch.stack([d_ap, d_an])[:, top])


def _empty_triplets(device, n_valid, dtype) -> MinedTriplets:
    empty = torch.zeros(0, dtype=torch.long, device=device)
    zero = torch.zeros((), dtype=torch.long, device=device)
    counts = torch.stack([n_valid.to(device), zero, zero, zero, zero])
    record = MiningRecord(lambda: (counts, torch.zeros(2, dtype=dtype, device=device), None))
    return MinedTriplets(empty, empty.clone(), empty.clone(), record)


def _batch_labels(labels, indices, x) -> tuple[torch.Tensor, torch.Tensor | None]:
    labels = torch.as_tensor(labels, device=x.device).long()
    if labels.shape != (len(x),):
        raise ValueError(f"labels must have shape ({len(x)},) to match the embeddings, got {tuple(labels.shape)}")
    if indices is not None:
        indices = torch.as_tensor(indices).long().cpu()
        if indices.shape != (len(x),):
            raise ValueError(f"indices must have shape ({len(x)},) to match the embeddings, got {tuple(indices.shape)}")
    return labels, indices
