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
into the batch, which every loss in :mod:`retrieval.losses` accepts as ``mined``, and a
:class:`MiningRecord`: how many tuples were valid and mined, the fraction with loss > 0, the mean
d_ap and d_an, and the k hardest triplets (smallest d_an − d_ap) with dataset indices, which
training writes to ``mining/epoch_NNN.jsonl`` and the app shows as images.

How it stays fast and small. The miners never build the B×B×B triplet tensor. Each anchor's
negatives are sorted by distance once (B×B); a threshold rule then selects a contiguous run of
that sorted row for every (anchor, positive) pair, found with a binary search, and the triplets
are enumerated from those runs with ``repeat_interleave``. Counts, the fraction with loss > 0 and
the mean d_an come from the run bounds and prefix sums of the sorted distances, and the hardest
triplets are the first few entries of each run, so the record costs O(B² log B), not O(triplets).
Everything runs on the embeddings' device under ``torch.no_grad``, in float32 (float64 stays
float64); there is no Python loop over anchors.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch

from retrieval.distances import euclidean_distance, full_precision, normalize
from retrieval.negatives import NegativeRules, negative_mask, positive_mask

__all__ = [
    "TRIPLET_STRATEGIES",
    "PAIR_STRATEGIES",
    "TripletMiner",
    "PairMiner",
    "MinedTriplets",
    "MinedPairs",
    "TripletRuns",
    "MiningRecord",
    "build_miner",
]

TRIPLET_STRATEGIES = ("all", "hard", "semihard", "easy", "batch-hard", "batch-semihard")
PAIR_STRATEGIES = ("all", "active", "hard", "batch-hard")


class MiningRecord:
    """What one mining call (or, merged, one epoch) found.

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

    def __init__(
        self,
        counts: torch.Tensor,
        sums: torch.Tensor,
        hardest: tuple[torch.Tensor, ...] | None = None,
        indices: torch.Tensor | None = None,
    ) -> None:
        # counts: int64 [n_valid, n_mined, n_active, n_ap, n_an]; sums: float [sum d_ap, sum d_an];
        # hardest: (anchors, positives, negatives, d_ap, d_an) batch indices, sorted, may hold +inf padding.
        self._counts = counts
        self._sums = sums
        self._hardest_tensors = hardest
        self._indices = indices
        self._values: dict | None = None

    @classmethod
    def merge(cls, records: Iterable["MiningRecord"], hardest_k: int = 20) -> "MiningRecord":
        """One record for many calls (an epoch): counts add up, means are weighted by the tuples
        they average, and ``hardest`` keeps the ``hardest_k`` hardest triplets of all of them."""
        records = list(records)
        values = [r._materialise() for r in records]
        counts = [sum(v["counts"][i] for v in values) for i in range(5)]
        sums = [math.fsum(v["sums"][i] for v in values) for i in range(2)]
        hardest = sorted((h for r in records for h in r.hardest), key=lambda h: h["d_an"] - h["d_ap"])[:hardest_k]
        merged = cls(torch.tensor(counts, dtype=torch.long), torch.tensor(sums, dtype=torch.float64))
        merged._values = {"counts": counts, "sums": sums, "hardest": hardest}
        return merged

    def _materialise(self) -> dict:
        if self._values is None:
            counts = [int(c) for c in self._counts.tolist()]
            sums = [float(s) for s in self._sums.tolist()]
            hardest: list[dict] = []
            if self._hardest_tensors is not None:
                anchors, positives, negatives, d_ap, d_an = self._hardest_tensors
                keep = torch.isfinite(d_an - d_ap)
                keep = keep.cpu()
                rows = [t.cpu()[keep] for t in (anchors, positives, negatives)]
                d_ap, d_an = d_ap.cpu(), d_an.cpu()
                if self._indices is not None:
                    rows = [self._indices[r] for r in rows]
                for a, p, n, dap, dan in zip(*(r.tolist() for r in rows), d_ap[keep].tolist(), d_an[keep].tolist()):
                    hardest.append({"anchor": a, "positive": p, "negative": n, "d_ap": dap, "d_an": dan})
            self._values = {"counts": counts, "sums": sums, "hardest": hardest}
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


class MinedTriplets:
    """Triplets (anchors[i], positives[i], negatives[i]), LongTensors of batch indices, and the record.

    The threshold miners (all / hard / semihard / easy) find their triplets as runs of each
    anchor's distance-sorted negatives (see the module docstring) and keep that compact form:
    ``anchors``, ``positives`` and ``negatives`` are enumerated on first access, and the triplet
    loss computes its value from the runs directly, without ever enumerating them.
    """

    def __init__(
        self,
        anchors: torch.Tensor | None,
        positives: torch.Tensor | None,
        negatives: torch.Tensor | None,
        record: MiningRecord,
        *,
        runs: "TripletRuns | None" = None,
    ) -> None:
        if anchors is None and runs is None:
            raise ValueError("MinedTriplets needs the triplets or their runs")
        self._triplets = None if anchors is None else (anchors, positives, negatives)
        self.record = record
        self.runs = runs

    def _enumerated(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self._triplets is None:
            assert self.runs is not None
            self._triplets = self.runs.enumerate()
        return self._triplets

    @property
    def anchors(self) -> torch.Tensor:
        return self._enumerated()[0]

    @property
    def positives(self) -> torch.Tensor:
        return self._enumerated()[1]

    @property
    def negatives(self) -> torch.Tensor:
        return self._enumerated()[2]

    def __len__(self) -> int:
        return self.record.n_mined if self._triplets is None else len(self._triplets[0])

    def __repr__(self) -> str:
        return f"MinedTriplets({len(self)} triplets, record={self.record!r})"

    def as_pairs(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The (anchor, positive) and (anchor, negative) pairs the triplets contain: (a, p, a, n)."""
        a, p, n = self._enumerated()
        return a, p, a, n


@dataclass
class TripletRuns:
    """Triplets as runs: for anchor a and its k-th positive ``positives[a, k]`` (where
    ``valid[a, k]``), the negatives ``order[a, lo[a, k]] … order[a, hi[a, k] − 1]``, where ``order``
    sorts a's ``n_negatives[a]`` negatives by distance (non-negatives after them).
    ``negative_rules`` are the miner's."""

    positives: torch.Tensor
    valid: torch.Tensor
    order: torch.Tensor
    n_negatives: torch.Tensor
    lo: torch.Tensor
    hi: torch.Tensor
    n_mined: torch.Tensor  # 0-dim
    negative_rules: NegativeRules | None

    def enumerate(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The (anchors, positives, negatives) index tensors, ordered by anchor, positive, d_an."""
        k_max = self.positives.shape[1]
        lengths = torch.where(self.valid, self.hi - self.lo, 0).reshape(-1)
        device = lengths.device
        n_mined = int(self.n_mined)
        run_of = torch.repeat_interleave(torch.arange(lengths.numel(), device=device), lengths, output_size=n_mined)
        run_start = torch.cumsum(lengths, 0) - lengths
        rank = self.lo.reshape(-1)[run_of] + torch.arange(n_mined, device=device) - run_start[run_of]
        anchors = torch.div(run_of, k_max, rounding_mode="floor")
        return anchors, self.positives.reshape(-1)[run_of], self.order[anchors, rank]


@dataclass
class MinedPairs:
    """Positive pairs (anchors[i], positives[i]) and negative pairs (negative_anchors[j],
    negatives[j]), LongTensors of batch indices, and the record."""

    anchors: torch.Tensor
    positives: torch.Tensor
    negative_anchors: torch.Tensor
    negatives: torch.Tensor
    record: MiningRecord

    def __len__(self) -> int:
        return len(self.anchors) + len(self.negatives)

    def as_pairs(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.anchors, self.positives, self.negative_anchors, self.negatives


class TripletMiner:
    """Online triplet miner; ``strategy`` is one of the rules in the module docstring's table.

    Args:
        strategy: ``"all"``, ``"hard"``, ``"semihard"``, ``"easy"``, ``"batch-hard"`` or
            ``"batch-semihard"``.
        margin: ε, in Euclidean distance between normalised embeddings (0 to 2); use the loss's margin.
        negative_rules: domain knowledge about negatives (:class:`~retrieval.negatives.NegativeRules`).
        hardest_k: how many of the hardest mined triplets the record keeps.

    Called as ``miner(embeddings, labels, indices=None) -> MinedTriplets``; ``indices`` are the
    samples' dataset indices, used only to name the hardest triplets in the record. Triplets come
    ordered by anchor, then positive, then d_an.

    Compared with pytorch-metric-learning: its ``TripletMarginMiner`` ``"all"`` keeps only the
    triplets that violate the margin (d_an < d_ap + ε), ours keeps every valid triplet (with the
    triplet loss's ``nonzero_mean`` the loss is the same); ``hard``, ``semihard`` and ``easy``
    agree except at exact ties (its hard is d_an ≤ d_ap, its easy d_an > d_ap + ε). Our
    ``batch-hard`` is its ``BatchHardMiner``. ``batch-semihard`` has no exact counterpart.
    """

    def __init__(
        self, strategy: str, margin: float, *, negative_rules: NegativeRules | None = None, hardest_k: int = 20
    ) -> None:
        if strategy not in TRIPLET_STRATEGIES:
            raise ValueError(f"strategy must be one of {', '.join(TRIPLET_STRATEGIES)}; got {strategy!r}")
        if not margin >= 0:
            raise ValueError(f"margin must be >= 0, got {margin}")
        self.strategy = strategy
        self.margin = float(margin)
        self.negative_rules = negative_rules
        self.hardest_k = int(hardest_k)

    def __repr__(self) -> str:
        rules = "" if self.negative_rules is None else f", negative_rules={self.negative_rules!r}"
        return f"TripletMiner({self.strategy!r}, margin={self.margin}{rules})"

    def __call__(
        self, embeddings: torch.Tensor, labels: torch.Tensor | Sequence[int], indices: torch.Tensor | Sequence[int] | None = None
    ) -> MinedTriplets:
        with torch.no_grad(), full_precision(embeddings):
            x = normalize(embeddings.detach())
            labels, indices = _batch_labels(labels, indices, x)
            dist = euclidean_distance(x, normalized=True)
            pos = positive_mask(labels)
            neg = negative_mask(labels, self.negative_rules)
            n_pos, n_neg = pos.sum(1), neg.sum(1)
            n_valid = (n_pos * n_neg).sum()
            if self.strategy == "batch-hard":
                return self._batch_hard(dist, pos, neg, n_pos, n_neg, n_valid, indices)
            k_max = int(n_pos.max()) if len(labels) else 0
            if k_max == 0 or not bool((n_neg > 0).any()):
                return _empty_triplets(x.device, n_valid, dist.dtype)
            positives, valid = padded_positives(pos, n_pos, k_max)
            d_ap = dist.gather(1, positives)
            sorted_d_an, order = dist.masked_fill(~neg, math.inf).sort(dim=1)
            if self.strategy == "batch-semihard":
                return self._batch_semihard(dist, positives, valid, d_ap, sorted_d_an, order, n_neg, n_valid, indices)
            return self._threshold(positives, valid, d_ap, sorted_d_an, order, n_neg, n_valid, indices)

    # -- the threshold rules: a contiguous run [lo, hi) of each anchor's sorted negatives -----------

    def _threshold(self, positives, valid, d_ap, sorted_d_an, order, n_neg, n_valid, indices) -> MinedTriplets:
        batch, k_max = positives.shape
        threshold = d_ap + self.margin
        n_neg = n_neg[:, None].expand(batch, k_max)
        below_threshold = torch.searchsorted(sorted_d_an, threshold, side="left")  # count of d_an < d_ap + ε
        zero = torch.zeros_like(below_threshold)
        if self.strategy == "all":
            lo, hi = zero, n_neg
        elif self.strategy == "hard":
            lo, hi = zero, torch.searchsorted(sorted_d_an, d_ap, side="left")  # d_an < d_ap
        elif self.strategy == "semihard":
            lo, hi = torch.searchsorted(sorted_d_an, d_ap, side="right"), below_threshold  # d_ap < d_an < d_ap + ε
        else:  # easy
            lo, hi = below_threshold, n_neg  # d_an >= d_ap + ε
        hi = torch.minimum(hi, n_neg)
        lo = torch.minimum(lo, hi)
        lengths = torch.where(valid, hi - lo, 0)

        n_mined = lengths.sum()

        # The record from run bounds and prefix sums of the sorted distances.
        n_active = torch.where(valid, (torch.minimum(hi, below_threshold) - lo).clamp_min(0), 0).sum()
        prefix = torch.nn.functional.pad(sorted_d_an.masked_fill(torch.isinf(sorted_d_an), 0).cumsum(1), (1, 0))
        sum_d_an = torch.where(valid, prefix.gather(1, hi) - prefix.gather(1, lo), 0).sum()
        sum_d_ap = (lengths * d_ap).sum()
        counts = torch.stack([n_valid, n_mined, n_active, n_mined, n_mined])
        sums = torch.stack([sum_d_ap, sum_d_an])
        hardest = None
        if self.hardest_k > 0:
            k = min(self.hardest_k, sorted_d_an.shape[1])
            steps = torch.arange(k, device=lo.device)
            cand_rank = (lo[..., None] + steps).clamp_max(sorted_d_an.shape[1] - 1)  # (B, K, k)
            cand_d_an = sorted_d_an.gather(1, cand_rank.reshape(batch, -1)).reshape(batch, k_max, k)
            gap = (cand_d_an - d_ap[..., None]).masked_fill(steps >= lengths[..., None], math.inf)
            top = torch.topk(gap.reshape(-1), min(k, gap.numel()), largest=False).indices
            a = torch.div(top, k_max * k, rounding_mode="floor")
            pk = torch.div(top, k, rounding_mode="floor") % k_max
            r = cand_rank.reshape(-1)[top]
            d_an = torch.where(torch.isinf(gap.reshape(-1)[top]), math.inf, sorted_d_an[a, r])  # inf: padding
            hardest = (a, positives[a, pk], order[a, r], d_ap[a, pk], d_an)
        record = MiningRecord(counts, sums, hardest, indices)
        runs = TripletRuns(positives, valid, order, n_neg[:, 0], lo, hi, n_mined, self.negative_rules)
        return MinedTriplets(None, None, None, record, runs=runs)

    # -- the per-anchor / per-pair rules ----------------------------------------------------------

    def _batch_hard(self, dist, pos, neg, n_pos, n_neg, n_valid, indices) -> MinedTriplets:
        d_ap, positives = dist.masked_fill(~pos, -math.inf).max(dim=1)
        d_an, negatives = dist.masked_fill(~neg, math.inf).min(dim=1)
        anchors = torch.nonzero((n_pos > 0) & (n_neg > 0)).squeeze(1)
        return self._explicit(anchors, positives[anchors], negatives[anchors], d_ap[anchors], d_an[anchors], n_valid, indices)

    def _batch_semihard(self, dist, positives, valid, d_ap, sorted_d_an, order, n_neg, n_valid, indices) -> MinedTriplets:
        first_farther = torch.searchsorted(sorted_d_an, d_ap, side="right")  # nearest negative with d_an > d_ap
        last = (n_neg - 1).clamp_min(0)[:, None].expand_as(first_farther)
        rank = torch.where(first_farther < n_neg[:, None], first_farther, last)  # else the farthest negative
        a, k = torch.nonzero(valid & (n_neg > 0)[:, None], as_tuple=True)
        r = rank[a, k]
        return self._explicit(a, positives[a, k], order[a, r], d_ap[a, k], sorted_d_an[a, r], n_valid, indices)

    def _explicit(self, anchors, positives, negatives, d_ap, d_an, n_valid, indices) -> MinedTriplets:
        n = torch.tensor(len(anchors), device=anchors.device)
        counts = torch.stack([n_valid, n, (d_an < d_ap + self.margin).sum(), n, n])
        sums = torch.stack([d_ap.sum(), d_an.sum()])
        hardest = _hardest_of(anchors, positives, negatives, d_ap, d_an, self.hardest_k)
        return MinedTriplets(anchors, positives, negatives, MiningRecord(counts, sums, hardest, indices))


class PairMiner:
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
    the contrastive loss treats (a, x) and (x, a) as one pair.
    (pytorch-metric-learning's ``PairMarginMiner`` uses separate positive and negative margins.)
    """

    def __init__(
        self, strategy: str, margin: float, *, negative_rules: NegativeRules | None = None, hardest_k: int = 20
    ) -> None:
        if strategy not in PAIR_STRATEGIES:
            raise ValueError(f"strategy must be one of {', '.join(PAIR_STRATEGIES)}; got {strategy!r}")
        if not margin >= 0:
            raise ValueError(f"margin must be >= 0, got {margin}")
        self.strategy = strategy
        self.margin = float(margin)
        self.negative_rules = negative_rules
        self.hardest_k = int(hardest_k)

    def __repr__(self) -> str:
        rules = "" if self.negative_rules is None else f", negative_rules={self.negative_rules!r}"
        return f"PairMiner({self.strategy!r}, margin={self.margin}{rules})"

    def __call__(
        self, embeddings: torch.Tensor, labels: torch.Tensor | Sequence[int], indices: torch.Tensor | Sequence[int] | None = None
    ) -> MinedPairs:
        with torch.no_grad(), full_precision(embeddings):
            x = normalize(embeddings.detach())
            labels, indices = _batch_labels(labels, indices, x)
            dist = euclidean_distance(x, normalized=True)
            pos = positive_mask(labels)
            neg = negative_mask(labels, self.negative_rules)
            farthest_d_ap, farthest_positive = dist.masked_fill(~pos, -math.inf).max(dim=1)
            nearest_d_an, nearest_negative = dist.masked_fill(~neg, math.inf).min(dim=1)
            if self.strategy == "all":
                pos_kept, neg_kept = pos, neg
            elif self.strategy == "active":
                pos_kept, neg_kept = pos, neg & (dist < self.margin)
            elif self.strategy == "hard":
                pos_kept = pos & (dist > nearest_d_an[:, None])
                neg_kept = neg & (dist < farthest_d_ap[:, None])
            else:  # batch-hard
                pos_kept = torch.zeros_like(pos).scatter_(1, farthest_positive[:, None], True) & pos
                neg_kept = torch.zeros_like(neg).scatter_(1, nearest_negative[:, None], True) & neg
            anchors, positives = torch.nonzero(pos_kept, as_tuple=True)
            negative_anchors, negatives = torch.nonzero(neg_kept, as_tuple=True)
            n_ap, n_an = pos_kept.sum(), neg_kept.sum()
            n_active = (pos_kept & (dist > 0)).sum() + (neg_kept & (dist < self.margin)).sum()
            counts = torch.stack([pos.sum() + neg.sum(), n_ap + n_an, n_active, n_ap, n_an])
            sums = torch.stack([(dist * pos_kept).sum(), (dist * neg_kept).sum()])
            hardest = None
            if self.hardest_k > 0:
                a, n = negative_anchors, negatives
                has_positive = torch.isfinite(farthest_d_ap[a])
                a, n = a[has_positive], n[has_positive]
                hardest = _hardest_of(a, farthest_positive[a], n, farthest_d_ap[a], dist[a, n], self.hardest_k)
            record = MiningRecord(counts, sums, hardest, indices)
            return MinedPairs(anchors, positives, negative_anchors, negatives, record)


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
# helpers shared with retrieval.losses


def padded_positives(pos: torch.Tensor, n_pos: torch.Tensor, k_max: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each anchor's positives as a (B, k_max) index matrix in ascending order, padded with 0,
    and the (B, k_max) mask of the real entries."""
    batch = pos.shape[0]
    rank = pos.cumsum(1) - 1
    a, p = torch.nonzero(pos, as_tuple=True)
    positives = torch.zeros(batch, k_max, dtype=torch.long, device=pos.device)
    positives[a, rank[a, p]] = p
    valid = torch.arange(k_max, device=pos.device) < n_pos[:, None]
    return positives, valid


def _hardest_of(anchors, positives, negatives, d_ap, d_an, k) -> tuple[torch.Tensor, ...] | None:
    if k <= 0 or len(anchors) == 0:
        return None
    top = torch.topk(d_an - d_ap, min(k, len(anchors)), largest=False).indices
    return anchors[top], positives[top], negatives[top], d_ap[top], d_an[top]


def _empty_triplets(device, n_valid, dtype) -> MinedTriplets:
    empty = torch.zeros(0, dtype=torch.long, device=device)
    zero = torch.zeros((), dtype=torch.long, device=device)
    counts = torch.stack([n_valid.to(device), zero, zero, zero, zero])
    record = MiningRecord(counts, torch.zeros(2, dtype=dtype, device=device))
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
