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
which every loss in :mod:`retrieval.losses` accepts as ``mined``, and a
:class:`~retrieval.mining_record.MiningRecord`: counts and means over the tuples the miner kept,
and, over every valid triplet of the batch whatever was kept, the violating fraction, the k
hardest triplets (smallest d_an − d_ap, negative values first) each with ``mined`` (did this miner
keep it), and the per-anchor view (nearest negative against farthest positive). Training writes
the hardest to ``mining/epoch_NNN.jsonl`` and counts the per-anchor view's classes in
``mining/confusions.jsonl``; the app shows them as images.

How it stays fast and small. The miners never build the B×B×B triplet tensor. Each anchor's
positives are gathered into a (B, K) matrix (:func:`~retrieval.tuples.padded_positives`), K the
largest number of positives an anchor has (K − 1 for P×K batches), so a rule is evaluated on
(anchor, positive, candidate negative) tensors of B·K·B elements — K/B of the full cube — in
chunks of anchors that bound the memory. The threshold miners keep that boolean mask as their
result and enumerate the index triplets only when asked; the triplet loss evaluates its hinge on
the same dense form, which on a CPU is many times cheaper than gathering scattered triplets. The
record is computed from the same tensors the first time it is read, in one pass over the chunks
(:class:`~retrieval.mining_record.TripletScan`), so mining for a loss that nobody inspects costs
nothing extra. Everything runs on the embeddings' device under ``torch.no_grad``, in float32
(float64 stays float64); there is no Python loop over anchors.

The strict comparisons are made on d_an − d_ap (as pytorch-metric-learning does), so
``semihard`` is 0 < d_an − d_ap < ε and ``easy`` is d_an − d_ap ≥ ε.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from retrieval.batch_inputs import batch_embeddings, batch_labels, number_setting
from retrieval.distances import euclidean_distance, euclidean_from_squared, full_precision, normalize, squared_euclidean_distance
from retrieval.errors import did_you_mean
from retrieval.mining_record import MiningRecord, TripletScan, anchor_view, smallest, top_triplets
from retrieval.negatives import NegativeRules, negative_mask, positive_mask
from retrieval.tuples import MinedPairs, MinedTriplets, anchor_chunks, first_pair_of_each_class, padded_positives

__all__ = [
    "TRIPLET_STRATEGIES",
    "PAIR_STRATEGIES",
    "TripletMiner",
    "NPairTriplets",
    "PairMiner",
    "MiningRecord",
    "build_miner",
]

TRIPLET_STRATEGIES = ("all", "hard", "semihard", "easy", "batch-hard", "batch-semihard")
PAIR_STRATEGIES = ("all", "active", "hard", "batch-hard")


class _MarginMiner:
    """What the triplet and pair miners share: a ``strategy`` out of the class's ``strategies``,
    the margin ε (>= 0), the negative rules and how many hardest examples the record keeps."""

    strategies: tuple[str, ...] = ()

    def __init__(
        self, strategy: str, margin: float, *, negative_rules: NegativeRules | None = None, hardest_k: int = 20
    ) -> None:
        if strategy not in self.strategies:
            raise ValueError(f"strategy must be one of {', '.join(self.strategies)}; got {strategy!r}"
                             + did_you_mean(str(strategy), self.strategies))
        self.strategy = strategy
        self.margin = number_setting("margin", margin)
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
        hardest_k: how many of the hardest triplets the record keeps (of every valid one, and of
            those mined).

    Called as ``miner(embeddings, labels, indices=None) -> MinedTriplets``; ``indices`` are the
    samples' dataset indices, used only to name the hardest triplets in the record. Triplets come
    ordered by anchor, then positive, then negative.

    Compared with pytorch-metric-learning: its ``TripletMarginMiner`` ``"all"`` keeps only the
    triplets that violate the margin (d_an < d_ap + ε), ours keeps every valid triplet (with the
    triplet loss's ``nonzero_mean`` the loss is the same); ``hard``, ``semihard`` and ``easy``
    agree except at exact ties (its hard is d_an ≤ d_ap, its semihard d_an ≤ d_ap + ε, its easy
    d_an > d_ap + ε). Our ``batch-hard`` is its ``BatchHardMiner``. ``batch-semihard`` has no exact
    counterpart.
    """

    strategies = TRIPLET_STRATEGIES

    def __call__(
        self, embeddings: torch.Tensor, labels: torch.Tensor | Sequence[int], indices: torch.Tensor | Sequence[int] | None = None
    ) -> MinedTriplets:
        with torch.no_grad(), full_precision(batch_embeddings(embeddings)):
            x = normalize(embeddings.detach())
            labels, indices = _batch_labels(labels, indices, x, self.negative_rules)
            squared = squared_euclidean_distance(x, normalized=True)
            neg = negative_mask(labels, self.negative_rules)
            positives, valid = padded_positives(positive_mask(labels))
            batch = _Batch(squared, positives, valid, neg, labels, indices)
            if positives.shape[1] == 0:
                return _empty_triplets(batch, self.margin)
            if self.strategy == "batch-hard":
                return self._batch_hard(batch)
            if self.strategy == "batch-semihard":
                return self._batch_semihard(batch)
            return self._threshold(batch)

    # -- the threshold rules, on the dense (anchor, positive, negative) form ------------------------

    def _threshold(self, b: "_Batch") -> MinedTriplets:
        dist = b.dist
        d_ap = dist.gather(1, b.positives)
        mask = self._threshold_mask(b, d_ap) if self.strategy in TRIPLET_STRATEGIES else self._given_mask(b)
        size, k_max = b.positives.shape
        counts_active = self.strategy not in TRIPLET_STRATEGIES

        def compute_record() -> dict:
            stats, candidates = [], []

            def mined_chunk(rows: slice, gap: torch.Tensor) -> None:  # gap: +inf where not valid
                chunk_mask = mask[rows]
                weight = chunk_mask.to(dist.dtype)
                per_pair = weight.sum(dim=2)  # (c, K): negatives per (a, p)
                chunk_stats = [per_pair.sum(), (per_pair * d_ap[rows]).sum(), (weight.sum(dim=1) * dist[rows]).sum()]
                if counts_active:  # kept and violating the margin (the threshold rules know it from their rule)
                    chunk_stats.append((chunk_mask & (gap < self.margin)).sum().to(weight.dtype))
                stats.append(torch.stack(chunk_stats).to(_exact_dtype(dist.device)))  # counts stay exact integers
                if self.hardest_k > 0 and self.strategy != "all":
                    values, flat = smallest(gap.masked_fill_(~chunk_mask, math.inf).reshape(-1, size), self.hardest_k)
                    candidates.append((values, flat + rows.start * k_max * size))

            scan = TripletScan(self.margin, self.hardest_k).scan(dist, b.positives, b.valid, b.neg, mined_chunk)
            stats = torch.stack(stats).sum(dim=0)
            n_mined, n_violating = stats[0], scan.n_violating.to(stats.dtype)
            # "all" keeps every valid triplet; "hard" and "semihard" triplets all violate the
            # margin; "easy" triplets have d_an − d_ap >= ε, a zero hinge
            n_active = stats[3] if counts_active else {"all": n_violating, "hard": n_mined, "semihard": n_mined}.get(
                self.strategy, torch.zeros_like(n_mined))
            hardest = scan.hardest(lambda a, slot, n: mask[a, slot, n])
            mined = hardest[:5] if self.strategy == "all" and hardest is not None else None
            if self.strategy != "all":
                found = top_triplets(candidates, self.hardest_k, b.positives, d_ap)
                mined = None if found is None else (found[0], b.positives[found[0], found[1]], *found[2:])
            n_triplets = b.n_triplets.to(stats.dtype)
            counts = torch.stack([n_triplets, n_mined, n_active, n_mined, n_mined, n_triplets, n_violating])
            return {"counts": counts, "sums": stats[1:3], "hardest": hardest, "hardest_mined": mined,
                    "anchors": b.anchor_view(self.margin)}

        return MinedTriplets(None, None, None, MiningRecord(compute_record, b.indices), dense=(b.positives, mask))

    def _threshold_mask(self, b: "_Batch", d_ap: torch.Tensor) -> torch.Tensor:
        """The (B, K, B) mask of the strategy's rule on d_an − d_ap, computed in chunks of anchors."""
        size, k_max = b.positives.shape
        # NaN where (a, k) is padding or n is not a negative of a: every comparison with NaN is False.
        d_an_or_nan = b.dist.masked_fill(~b.neg, math.nan)
        d_ap_or_nan = d_ap.masked_fill(~b.valid, math.nan)
        masks = []
        for rows in anchor_chunks(size, k_max * size):
            if self.strategy == "all":
                masks.append(b.valid[rows, :, None] & b.neg[rows, None, :])
                continue
            gap = d_an_or_nan[rows, None, :] - d_ap_or_nan[rows, :, None]  # d_an − d_ap, (c, K, B)
            if self.strategy == "hard":
                masks.append(gap < 0)
            elif self.strategy == "semihard":
                masks.append((gap > 0) & (gap < self.margin))
            else:  # easy
                masks.append(gap >= self.margin)
        return masks[0] if len(masks) == 1 else torch.cat(masks)

    def _given_mask(self, b: "_Batch") -> torch.Tensor:
        """The (B, K, B) mask of a rule that is not a threshold on d_an − d_ap (subclasses)."""
        raise NotImplementedError(self.strategy)

    # -- the per-anchor / per-pair rules, decided on squared distances (the same order) ------------

    def _batch_hard(self, b: "_Batch") -> MinedTriplets:
        squared, positives, valid, neg = b.squared, b.positives, b.valid, b.neg
        sq_ap, slot = squared.gather(1, positives).masked_fill_(~valid, -1.0).max(dim=1)  # farthest positive
        sq_an, negatives = squared.masked_fill(~neg, 5.0).min(dim=1)  # nearest negative (d² <= 4)
        anchors = torch.nonzero(valid[:, 0] & (sq_an <= 4.0)).squeeze(1)
        chosen = torch.full_like(positives, -1)  # the negative mined for (a, positives[a, k]), -1: none
        chosen[anchors, slot[anchors]] = negatives[anchors]
        positives = positives.gather(1, slot[:, None]).squeeze(1)
        d_ap, d_an = euclidean_from_squared(torch.stack([sq_ap[anchors], sq_an[anchors]])).unbind()
        return self._explicit(b, anchors, positives[anchors], negatives[anchors], d_ap, d_an, chosen)

    def _batch_semihard(self, b: "_Batch") -> MinedTriplets:
        squared, positives, valid, neg = b.squared, b.positives, b.valid, b.neg
        size, k_max = positives.shape
        sq_ap = squared.gather(1, positives)
        farthest_sq_an, farthest = squared.masked_fill(~neg, -1.0).max(dim=1)
        sq_neg = squared.masked_fill(~neg, math.nan)  # NaN: not a negative, never "farther"
        nearest_farther = []
        for rows in anchor_chunks(size, k_max * size):
            sq_an = sq_neg[rows, None, :]
            candidates = torch.where(sq_an > sq_ap[rows, :, None], sq_an, 5.0)  # d² <= 4 < 5: no candidate
            nearest_farther.append(candidates.min(dim=2))  # nearest negative with d_an > d_ap
        sq_an = torch.cat([v for v, _ in nearest_farther]) if len(nearest_farther) > 1 else nearest_farther[0][0]
        negatives = torch.cat([i for _, i in nearest_farther]) if len(nearest_farther) > 1 else nearest_farther[0][1]
        none_farther = sq_an > 4.0
        sq_an = torch.where(none_farther, farthest_sq_an[:, None], sq_an)  # else the farthest negative
        negatives = torch.where(none_farther, farthest[:, None], negatives)
        kept = valid & (farthest_sq_an >= 0)[:, None]
        a, k = torch.nonzero(kept, as_tuple=True)
        mined_positives, mined_negatives = torch.stack([positives, negatives])[:, a, k]
        d_ap, d_an = euclidean_from_squared(torch.stack([sq_ap, sq_an])[:, a, k]).unbind()
        chosen = torch.where(kept, negatives, torch.full_like(negatives, -1))
        return self._explicit(b, a, mined_positives, mined_negatives, d_ap, d_an, chosen)

    def _explicit(self, b: "_Batch", anchors, positives, negatives, d_ap, d_an, chosen) -> MinedTriplets:
        """Triplets given as index lists; ``chosen`` (B, K): the one negative mined for each
        (anchor, positive slot), -1 where none (both per-anchor rules mine at most one)."""

        def compute_record() -> dict:
            n = torch.full((), len(anchors), device=anchors.device)
            scan = TripletScan(self.margin, self.hardest_k).scan(b.dist, b.positives, b.valid, b.neg)
            counts = torch.stack([b.n_triplets, n, (d_an - d_ap < self.margin).sum(), n, n, b.n_triplets, scan.n_violating])
            return {"counts": counts, "sums": torch.stack([d_ap.sum(), d_an.sum()]),
                    "hardest": scan.hardest(lambda a, slot, n: chosen[a, slot] == n),
                    "hardest_mined": _hardest_of(anchors, positives, negatives, d_ap, d_an, self.hardest_k),
                    "anchors": b.anchor_view(self.margin)}

        return MinedTriplets(anchors, positives, negatives, MiningRecord(compute_record, b.indices), batch_size=len(b.labels))


class NPairTriplets(TripletMiner):
    """The triplets the multi-class N-pair loss (:class:`~retrieval.losses.NPairLoss`) trains on
    without a miner, as a miner's record: for each class with two or more samples its first two in
    batch order (a_i, p_i), and as negatives of a_i the other classes' p_j that the negative rules
    allow — (a_i, p_i, p_j). Every other valid triplet of the batch is one the loss never sees.

    Training uses it as the record miner of an N-pair objective without ``--miner``, so that the
    mining log's ``mined`` marks what the loss used and the active fraction counts those triplets
    with d_an < d_ap + ε. Its tuples are the loss's own: ``NPairLoss()(x, y, NPairTriplets(ε)(x, y))``
    is not meant (the loss picks its pairs from mined triplets differently); call the loss without.
    """

    strategies = ("npair",)

    def __init__(self, margin: float, *, negative_rules: NegativeRules | None = None, hardest_k: int = 20) -> None:
        super().__init__("npair", margin, negative_rules=negative_rules, hardest_k=hardest_k)

    def _given_mask(self, b: "_Batch") -> torch.Tensor:
        batch = len(b.labels)
        mask = torch.zeros((*b.positives.shape, batch), dtype=torch.bool, device=b.labels.device)
        anchors, pair_positives = first_pair_of_each_class(b.labels)
        if len(anchors):
            slot = ((b.positives[anchors] == pair_positives[:, None]) & b.valid[anchors]).to(torch.uint8).argmax(dim=1)
            is_pair_positive = torch.zeros(batch, dtype=torch.bool, device=mask.device)
            is_pair_positive[pair_positives] = True
            mask[anchors, slot] = b.neg[anchors] & is_pair_positive
        return mask


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
        with torch.no_grad(), full_precision(batch_embeddings(embeddings)):
            x = normalize(embeddings.detach())
            labels, indices = _batch_labels(labels, indices, x, self.negative_rules)
            if len(x) == 0:
                return _empty_pairs(x, indices)
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

            batch = _Batch(None, positives, valid, neg, labels, indices, dist=dist)

            def compute_record() -> dict:
                pos_w, neg_w = pos_kept.to(dist.dtype), neg_kept.to(dist.dtype)
                n_ap, n_an = pos_w.sum(), neg_w.sum()
                active_an = n_an if self.strategy == "active" else (neg_w * (dist < self.margin)).sum()
                scan = TripletScan(self.margin, self.hardest_k)
                if positives.shape[1]:  # every valid triplet; the miner kept one when it kept both its pairs
                    scan.scan(dist, positives, valid, neg)
                counts = torch.stack([
                    valid.sum() + neg.sum(),
                    n_ap + n_an,
                    (pos_w * (d_ap > 0)).sum() + active_an,  # positive pairs apart, negative pairs inside ε
                    n_ap,
                    n_an,
                    batch.n_triplets,
                    scan.n_violating.to(dist.device),
                ]).to(_exact_dtype(dist.device))
                sums = torch.stack([(pos_w * d_ap).sum(), (neg_w * dist).sum()])
                mined = None
                if self.hardest_k > 0:  # mined negative pairs, each with the anchor's farthest positive
                    no_positive = (farthest_d_ap < 0)[:, None]
                    gap = (dist - farthest_d_ap[:, None]).masked_fill_(~neg_kept | no_positive, math.inf)
                    value, flat = smallest(gap, self.hardest_k)
                    a, n = torch.div(flat, len(dist), rounding_mode="floor"), flat % len(dist)
                    farthest = positives.gather(1, farthest_k[:, None]).squeeze(1) if positives.shape[1] else farthest_k
                    mined = (a, farthest[a], n, farthest_d_ap[a], farthest_d_ap[a] + value)
                hardest = scan.hardest(lambda a, slot, n: pos_kept[a, slot] & neg_kept[a, n]) if positives.shape[1] else None
                return {"counts": counts, "sums": sums, "hardest": hardest, "hardest_mined": mined,
                        "anchors": batch.anchor_view(self.margin)}

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
    names = ("none", *TRIPLET_STRATEGIES, *(f"pair-{strategy}" for strategy in PAIR_STRATEGIES))
    if name not in names:  # named as typed: "pair-semihard", not the strategy "semihard" PairMiner would be given
        raise ValueError(f"miner must be one of {', '.join(names)}; got {name!r}" + did_you_mean(str(name), names))
    if name.startswith("pair-"):
        return PairMiner(name[len("pair-") :], margin, negative_rules=negative_rules, hardest_k=hardest_k)
    return TripletMiner(name, margin, negative_rules=negative_rules, hardest_k=hardest_k)


# ---------------------------------------------------------------------------------------------
# helpers


def _exact_dtype(device: torch.device) -> torch.dtype:
    """float64 (integers exact to 2^53) where the device has it."""
    return torch.float32 if device.type == "mps" else torch.float64


def _hardest_of(anchors, positives, negatives, d_ap, d_an, k) -> tuple[torch.Tensor, ...] | None:
    if k <= 0 or len(anchors) == 0:
        return None
    top = torch.topk(d_an - d_ap, min(k, len(anchors)), largest=False).indices
    return (*torch.stack([anchors, positives, negatives])[:, top], *torch.stack([d_ap, d_an])[:, top])


def _empty_triplets(b: "_Batch", margin: float) -> MinedTriplets:
    """No anchor has a positive: nothing is mined and there is no valid triplet."""
    device = b.labels.device
    empty = torch.zeros(0, dtype=torch.long, device=device)
    counts = torch.zeros(7, dtype=torch.long, device=device)
    record = MiningRecord(lambda: {"counts": counts, "sums": torch.zeros(2, dtype=b.squared.dtype, device=device),
                                   "anchors": b.anchor_view(margin) if len(b.labels) else None}, b.indices)
    return MinedTriplets(empty, empty.clone(), empty.clone(), record)


def _empty_pairs(x: torch.Tensor, indices) -> MinedPairs:
    """An empty batch: no pair, nothing mined."""
    empty = torch.zeros(0, dtype=torch.long, device=x.device)
    record = MiningRecord(lambda: {"counts": torch.zeros(7, dtype=torch.long, device=x.device), "sums": x.new_zeros(2),
                                   "anchors": None}, indices)
    return MinedPairs(empty, empty.clone(), empty.clone(), empty.clone(), record)


class _Batch:
    """One batch as the miners see it: squared distances (or distances), each anchor's positives
    (B, K) with their valid mask, the negative mask (B, B), labels and dataset indices."""

    def __init__(self, squared, positives, valid, neg, labels, indices, *, dist=None) -> None:
        self.squared, self.positives, self.valid, self.neg, self.labels, self.indices = squared, positives, valid, neg, labels, indices
        self._dist = dist

    @property
    def dist(self) -> torch.Tensor:
        if self._dist is None:
            self._dist = euclidean_from_squared(self.squared)
        return self._dist

    @property
    def n_triplets(self) -> torch.Tensor:
        """Valid triplets: Σ_a (positives of a) · (negatives of a)."""
        return (self.valid.sum(dim=1) * self.neg.sum(dim=1)).sum()

    def anchor_view(self, margin: float):
        return anchor_view(self.dist, self.neg, self.positives, self.valid, self.labels, margin)


def _batch_labels(labels, indices, x, rules) -> tuple[torch.Tensor, torch.Tensor | None]:
    labels = batch_labels(labels, len(x), x.device, rules=rules)
    if indices is not None:
        indices = torch.as_tensor(indices).long().cpu()
        if indices.shape != (len(x),):
            raise ValueError(f"indices must have shape ({len(x)},) to match the embeddings, got {tuple(indices.shape)}")
    return labels, indices
