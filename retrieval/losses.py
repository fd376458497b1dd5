"""The six training objectives, one ``torch.nn.Module`` each, exactly as DESIGN.md states them.

Every loss is called as ``loss(embeddings, labels, mined=None) -> scalar tensor``. It L2-normalises
the embeddings first (so raw network outputs are fine), works in float32 whatever the input
precision (bfloat16 / float16 inputs are upcast and autocast is switched off inside; float64 stays
float64), and returns a float32 / float64 scalar with a gradient. Notation: x̂ the normalised
embedding, s(i, j) = x̂_i · x̂_j the cosine similarity, d(i, j) = ||x̂_i − x̂_j|| = sqrt(2 − 2 s(i, j))
the Euclidean distance (0 to 2), ε a margin, τ a temperature, P the positive pairs (y_i = y_j,
i ≠ j) and N(i) the negatives of i (y_k ≠ y_i, minus what ``negative_rules`` excludes).

Without ``mined`` a loss uses every valid tuple of the batch. With a miner's output
(:class:`~retrieval.tuples.MinedTriplets`, :class:`~retrieval.tuples.MinedPairs`, or an index
tuple (a, p, n) / (a1, p, a2, n) as pytorch-metric-learning writes them) it uses only those:
the triplet loss its triplets (or, from pairs, every (a, p, n) whose (a, p) and (a, n) pairs were
both mined); the pair losses the distinct (a, p) and (a, n) pairs the tuples contain. A batch with
no valid tuple gives a loss of 0 that still has a (zero) gradient, never NaN; so do collapsed
(constant) embeddings give a finite loss and finite gradients.

``negative_rules`` (:class:`~retrieval.negatives.NegativeRules`) removes the pairs that domain
knowledge says are never negatives (and restricts negatives to the anchor's group when asked),
also from a miner's output.

Everything is computed from B×B matrices: no Python loop over the batch, and the all-triplets
triplet loss never builds a B×B×B tensor (see :class:`TripletMarginLoss`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from retrieval.batch_inputs import batch_embeddings, batch_labels, number_setting
from retrieval.distances import euclidean_from_squared, full_precision, normalize, squared_from_unit_rows, to_float
from retrieval.errors import did_you_mean
from retrieval.negatives import NegativeRules, negative_mask, positive_mask
from retrieval.tuples import (MinedPairs, MinedTriplets, anchor_chunks, checked_tuples, first_pair_of_each_class, padded_positives,
                              pairs_to_masks)

__all__ = [
    "ContrastiveLoss",
    "TripletMarginLoss",
    "LiftedStructureLoss",
    "NPairLoss",
    "NCELoss",
    "InfoNCELoss",
    "LOSSES",
    "LOSS_SETTING",
    "build_loss",
]

Mined = MinedTriplets | MinedPairs | Sequence[torch.Tensor] | None


class MetricLoss(torch.nn.Module):
    """Shared plumbing: input checks, normalisation, and the pair masks of a batch or a miner's output."""

    def __init__(self, *, negative_rules: NegativeRules | None = None) -> None:
        super().__init__()
        self.negative_rules = negative_rules

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor | Sequence[int], mined: Mined = None) -> torch.Tensor:
        embeddings = batch_embeddings(embeddings)
        labels = batch_labels(labels, len(embeddings), embeddings.device, rules=self.negative_rules)  # ids, names; never 0.5 quietly made 0
        mined = checked_tuples(mined, len(embeddings))  # a miner's output for this batch, or valid hand-given indices
        if len(embeddings) == 0:
            return embeddings.sum() * 0.0  # no tuple: a loss of 0 with a gradient
        with full_precision(embeddings):
            return self.compute(embeddings, labels, mined)

    def compute(self, embeddings: torch.Tensor, labels: torch.Tensor, mined: Mined) -> torch.Tensor:
        raise NotImplementedError

    def pair_masks(self, labels: torch.Tensor, mined: Mined, *, symmetric: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, B) bool masks of the positive and negative pairs to use: every valid pair without
        ``mined``; else the mined pairs (made symmetric when asked) that are valid."""
        positives = positive_mask(labels)
        negatives = negative_mask(labels, self.negative_rules)
        if mined is None:
            return positives, negatives
        if isinstance(mined, (MinedTriplets, MinedPairs)):
            pos_kept, neg_kept = mined.pair_masks(len(labels))
        else:
            pos_kept, neg_kept = pairs_to_masks(len(labels), *(i.to(labels.device) for i in _as_pairs(mined)))
        if symmetric:
            pos_kept = pos_kept | pos_kept.T
            neg_kept = neg_kept | neg_kept.T
        return pos_kept & positives, neg_kept & negatives


class ContrastiveLoss(MetricLoss):
    """Contrastive loss (Chopra et al. 2005; Hadsell et al. 2006) with margin ε::

        L = mean_{(i,j) ∈ P} d(i,j)²  +  mean_{(i,j) ∈ Neg} max(0, ε − d(i,j))²

    Positive and negative pairs are averaged separately, so the many negatives do not drown the
    few positives; an empty set contributes 0. Pairs are unordered ((i, j) and (j, i) count once).

    Differs from pytorch-metric-learning's ``ContrastiveLoss(pos_margin, neg_margin)``, which
    uses the unsquared hinges max(0, d − pos_margin) and max(0, neg_margin − d) and averages
    only the non-zero terms.
    """

    def __init__(self, margin: float, *, negative_rules: NegativeRules | None = None) -> None:
        super().__init__(negative_rules=negative_rules)
        self.margin = number_setting("margin", margin)

    def compute(self, embeddings, labels, mined):
        x = normalize(embeddings)
        pos, neg = self.pair_masks(labels, mined, symmetric=True)
        if mined is not None and 32 * int(pos.sum() + neg.sum()) <= len(x) ** 2:
            # few mined pairs: the distances of those pairs only, no B×B matrix
            i, j = torch.nonzero(pos, as_tuple=True)
            k, n = torch.nonzero(neg, as_tuple=True)
            squared_ap = (x[i] - x[j]).pow(2).sum(dim=1)
            hinge = F.relu(self.margin - euclidean_from_squared((x[k] - x[n]).pow(2).sum(dim=1))) ** 2
            return squared_ap.sum() / max(len(i), 1) + hinge.sum() / max(len(k), 1)
        squared = _squared_distances(x)
        pull = (squared * pos).sum() / pos.sum().clamp_min(1)
        # Only negatives inside the margin (d < ε, i.e. d² < ε²) have a non-zero hinge: take those alone.
        k, n = torch.nonzero(neg & (squared.detach() < self.margin**2), as_tuple=True) if self.margin > 0 else (None, None)
        if k is None or len(k) == 0:
            return pull + _zero(squared)
        hinge = F.relu(self.margin - euclidean_from_squared(squared[k, n])) ** 2
        return pull + hinge.sum() / neg.sum().clamp_min(1)

    def extra_repr(self) -> str:
        return f"margin={self.margin}"


class TripletMarginLoss(MetricLoss):
    """Triplet margin loss (Schroff et al. 2015) with margin ε, per triplet (a, p, n)::

        ℓ(a, p, n) = max(0, d(a,p) − d(a,n) + ε)          (squared=True: d² in place of d)

    ``reduction="nonzero_mean"`` (default) averages over the triplets with ℓ > 0 (0 when there is
    none), ``"mean"`` over all triplets used. Without a miner every valid triplet is used. The
    hinge is evaluated on the dense (anchor, positive, negative) form — each anchor's K positives
    against the whole batch, B·K·B terms in chunks of anchors, never the B×B×B cube — which also
    takes a threshold miner's mask as it is, without enumerating the triplets.

    Equals pytorch-metric-learning's ``TripletMarginLoss`` (default ``AvgNonZeroReducer``) for the
    same triplets; for a few triplets (batch-hard) the distances are computed per triplet, not as a
    B×B matrix.
    """

    def __init__(
        self,
        margin: float,
        squared: bool = False,
        reduction: str = "nonzero_mean",
        *,
        negative_rules: NegativeRules | None = None,
    ) -> None:
        super().__init__(negative_rules=negative_rules)
        if reduction not in ("nonzero_mean", "mean"):
            raise ValueError(f'reduction must be "nonzero_mean" or "mean", got {reduction!r}')
        self.margin = number_setting("margin", margin)
        self.squared = bool(squared)
        self.reduction = reduction

    def compute(self, embeddings, labels, mined):
        x = normalize(embeddings)
        if isinstance(mined, MinedTriplets) and mined.dense is None or isinstance(mined, (tuple, list)) and len(mined) == 3:
            a, p, n = (mined.anchors, mined.positives, mined.negatives) if isinstance(mined, MinedTriplets) else mined
            a, p, n = (torch.as_tensor(i, dtype=torch.long, device=labels.device) for i in (a, p, n))
            keep = positive_mask(labels)[a, p] & negative_mask(labels, self.negative_rules)[a, n]  # valid ones only, as
            a, p, n = a[keep], p[keep], n[keep]  # every other loss keeps: y_a = y_p, a ≠ p, y_n ≠ y_a (and the rules)
            if 32 * len(a) <= len(x) ** 2:  # few triplets (batch-hard; batch-semihard at large B): no B×B matrix
                x_a = x[a]
                squared = torch.stack([(x_a - x[p]).pow(2).sum(dim=1), (x_a - x[n]).pow(2).sum(dim=1)])
            else:
                squared = _squared_distances(x)
                squared = torch.stack([squared[a, p], squared[a, n]])
            d_ap, d_an = (squared if self.squared else euclidean_from_squared(squared)).unbind()
            losses = F.relu(d_ap - d_an + self.margin)
            total, n_active, n_used = losses.sum(), (losses > 0).sum(), len(losses)
        else:
            squared = _squared_distances(x)
            dist = squared if self.squared else euclidean_from_squared(squared)
            if isinstance(mined, MinedTriplets):  # a threshold miner's dense (anchor, positive, negative) mask
                positives, mask = mined.dense
                if self.negative_rules is not None:
                    mask = mask & negative_mask(labels, self.negative_rules)[:, None, :]
                valid, neg = None, None
            else:  # every (a, p, n) with a valid (or mined) positive pair (a, p) and negative pair (a, n)
                pos, neg = self.pair_masks(labels, mined, symmetric=False)
                positives, valid = padded_positives(pos)
                mask = None
            total, n_active, n_used = _dense_triplet_sum(
                dist, positives, self.margin, mask=mask, valid=valid, neg=neg, count=self.reduction == "mean"
            )
        if self.reduction == "nonzero_mean":
            return total / torch.as_tensor(n_active).clamp_min(1)
        return total / torch.as_tensor(n_used).clamp_min(1)

    def extra_repr(self) -> str:
        return f"margin={self.margin}, squared={self.squared}, reduction={self.reduction!r}"


class LiftedStructureLoss(MetricLoss):
    """Lifted structured loss (Song et al. 2016) with margin ε. For each positive pair (i, j), i < j::

        J_ij = log( Σ_{k ∈ N(i)} exp(ε − d(i,k)) + Σ_{l ∈ N(j)} exp(ε − d(j,l)) ) + d(i,j)
        L    = 1 / (2|P|) · Σ_{(i,j) ∈ P} max(0, J_ij)²

    A pair where neither sample has a negative has J = −∞ and contributes 0 (it still counts in
    |P|). Computed in B×B matrix form with a numerically safe log-sum-exp.

    Equals pytorch-metric-learning's ``LiftedStructureLoss(neg_margin=ε, pos_margin=0)`` on every
    pair of a batch (no miner), which it reaches by averaging over ordered pairs with a factor 1/2,
    through a |pairs| × |negative pairs| mask (our form is O(B²)). With mined tuples the two
    differ: here the mined pairs are made symmetric and a positive pair without a mined negative
    contributes 0, where PML sums each anchor's own mined negatives and gives such a pair d(i,j)².
    """

    def __init__(self, margin: float, *, negative_rules: NegativeRules | None = None) -> None:
        super().__init__(negative_rules=negative_rules)
        self.margin = number_setting("margin", margin)

    def compute(self, embeddings, labels, mined):
        x = normalize(embeddings)
        dist = euclidean_from_squared(_squared_distances(x))
        pos, neg = self.pair_masks(labels, mined, symmetric=True)
        lse, has = _masked_logsumexp(self.margin - dist, neg, dim=1)  # log Σ_{k∈N(i)} exp(ε − d(i,k))
        has_i, has_j = has[:, None], has[None, :]
        peak = torch.maximum(lse.masked_fill(~has, -math.inf)[:, None], lse.masked_fill(~has, -math.inf)[None, :])
        peak = torch.where(torch.isfinite(peak), peak, 0).detach()
        total = torch.where(has_i, torch.exp(lse[:, None] - peak), 0) + torch.where(has_j, torch.exp(lse[None, :] - peak), 0)
        either = has_i | has_j
        j_ij = torch.log(torch.where(either, total, 1)) + peak + dist
        pairs = torch.triu(pos, diagonal=1)
        terms = torch.where(pairs & either, F.relu(j_ij) ** 2, 0)
        return terms.sum() / (2 * pairs.sum()).clamp_min(1)

    def extra_repr(self) -> str:
        return f"margin={self.margin}"


class NPairLoss(MetricLoss):
    """Multi-class N-pair loss (Sohn 2016). One (anchor, positive) pair per class in the batch —
    its first two samples in batch order (with a miner: the class's first mined positive pair) —
    and, for the N pairs::

        logits_ij = s(a_i, p_j)
        L = mean_i −log softmax(logits_i)_i = mean_i log(1 + Σ_{j≠i} exp(s(a_i,p_j) − s(a_i,p_i)))
            + l2_reg · mean_{f ∈ {a_i, p_i}} ||f||²     (on the unnormalised embeddings)

    p_j takes part in anchor i's sum only if it is a negative of a_i (never-negative pairs and
    group rules drop it; with a miner, only mined negative pairs count). Classes with a single
    sample have no pair and are left out.

    Equals pytorch-metric-learning's ``NPairsLoss`` (which picks the same pairs) when ``l2_reg=0``.
    """

    def __init__(self, l2_reg: float = 0.0, *, negative_rules: NegativeRules | None = None) -> None:
        super().__init__(negative_rules=negative_rules)
        self.l2_reg = number_setting("l2_reg", l2_reg)

    def compute(self, embeddings, labels, mined):
        raw = to_float(embeddings)
        x = normalize(raw)
        if mined is None:
            anchors, positives = first_pair_of_each_class(labels)
            neg = None if self.negative_rules is None else negative_mask(labels, self.negative_rules)
        else:
            anchors, positives, neg = self._first_mined_pairs(labels, mined)
        if len(anchors) == 0:
            return _zero(x)
        logits = x[anchors] @ x[positives].T
        if neg is None:  # every other pair's positive is a negative
            loss = F.cross_entropy(logits, torch.arange(len(anchors), device=logits.device))
        else:
            allowed = neg[anchors][:, positives]
            allowed.fill_diagonal_(True)
            loss = -F.log_softmax(logits.masked_fill(~allowed, -math.inf), dim=1).diagonal().mean()
        if self.l2_reg:
            norms = torch.cat([raw[anchors], raw[positives]]).pow(2).sum(dim=1)
            loss = loss + self.l2_reg * norms.mean()
        return loss

    def _first_mined_pairs(self, labels, mined):
        """Per class, the mined positive pair (a, p) that comes first in batch order, and the mined negative pairs."""
        pos, neg = self.pair_masks(labels, mined, symmetric=False)
        batch = len(labels)
        has_positive = pos.any(dim=1)
        first_positive = pos.to(torch.uint8).argmax(dim=1)
        _, class_of = torch.unique(labels, return_inverse=True)
        candidate = torch.where(has_positive, torch.arange(batch, device=labels.device), batch)
        first_anchor = torch.full((int(class_of.max()) + 1 if batch else 0,), batch, device=labels.device, dtype=torch.long)
        first_anchor = first_anchor.scatter_reduce(0, class_of, candidate, reduce="amin")
        anchors = first_anchor[first_anchor < batch]
        return anchors, first_positive[anchors], neg

    def extra_repr(self) -> str:
        return f"l2_reg={self.l2_reg}"


class _TemperatureLoss(MetricLoss):
    """What NCE and InfoNCE share: the temperature τ (> 0) and the scaled similarities s(a,x)/τ of
    the normalised embeddings with the ordered (not symmetrised) positive and negative pair masks."""

    def __init__(self, temperature: float, *, negative_rules: NegativeRules | None = None) -> None:
        super().__init__(negative_rules=negative_rules)
        self.temperature = number_setting("temperature", temperature, positive=True)

    def _logits_and_pairs(self, embeddings, labels, mined) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, B) logits s(a,x)/τ and the (B, B) bool masks of the positive and negative pairs used."""
        x = normalize(embeddings)
        logits = (x @ x.T) / self.temperature
        pos, neg = self.pair_masks(labels, mined, symmetric=False)
        return logits, pos, neg

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"


class NCELoss(_TemperatureLoss):
    """Noise-contrastive estimation (Gutmann & Hyvärinen 2010) with temperature τ. Each ordered
    positive pair (a, p) is told apart from the N negatives of a used with it, the noise q being
    uniform over a's M valid in-batch negatives::

        logit(x) = s(a,x)/τ − log(N q),   q = 1/M
        ℓ(a, p)  = −log σ(logit(p)) − Σ_{n} log σ(−logit(n))
        L        = mean over the ordered positive pairs of ℓ(a, p)

    Without a miner every in-batch negative is used, N q = 1 and the correction vanishes; with a
    miner N is the number of mined negatives of a. An anchor with no negative has ℓ = 0 (with N = 0
    the posterior of the data class is 1). pytorch-metric-learning has no NCE loss.
    """

    def compute(self, embeddings, labels, mined):
        logits, pos, neg = self._logits_and_pairs(embeddings, labels, mined)
        n_used = neg.sum(dim=1)
        has_noise = n_used > 0
        if mined is not None:
            n_valid = negative_mask(labels, self.negative_rules).sum(dim=1)
            ratio = n_used.clamp_min(1).to(logits.dtype) / n_valid.clamp_min(1).to(logits.dtype)  # N q
            logits = logits - torch.where(has_noise, torch.log(ratio), 0)[:, None]
        noise_term = (F.softplus(logits) * neg).sum(dim=1)  # −Σ_n log σ(−logit(n))
        per_pair = (F.softplus(-logits) + noise_term[:, None]) * has_noise[:, None]  # −log σ(logit(p)) + ...
        return (per_pair * pos).sum() / pos.sum().clamp_min(1)


class InfoNCELoss(_TemperatureLoss):
    """InfoNCE / NT-Xent (van den Oord et al. 2018; Chen et al. 2020) with temperature τ. For each
    ordered positive pair (a, p)::

        ℓ(a, p) = −log( exp(s(a,p)/τ) / (exp(s(a,p)/τ) + Σ_{n ∈ N(a)} exp(s(a,n)/τ)) )
        L       = mean over the ordered positive pairs of ℓ(a, p)

    computed as softplus(logsumexp_{n∈N(a)} s(a,n)/τ − s(a,p)/τ); an anchor without negatives
    gives ℓ = 0. Equals pytorch-metric-learning's ``NTXentLoss(temperature=τ)`` on every pair of a
    batch, and on mined pairs given once each; from triplets, each distinct (a, p) pair counts once
    here, where PML counts it once per triplet that holds it.
    """

    def compute(self, embeddings, labels, mined):
        logits, pos, neg = self._logits_and_pairs(embeddings, labels, mined)
        lse, has = _masked_logsumexp(logits, neg, dim=1)
        per_pair = F.softplus(lse[:, None] - logits) * has[:, None]
        return (per_pair * pos).sum() / pos.sum().clamp_min(1)


LOSSES: dict[str, type[MetricLoss]] = {
    "contrastive": ContrastiveLoss,
    "triplet": TripletMarginLoss,
    "lifted": LiftedStructureLoss,
    "npair": NPairLoss,
    "nce": NCELoss,
    "infonce": InfoNCELoss,
}
#: the one run setting each loss takes (``--margin`` ε, ``--temperature`` τ, or none: N-pair):
#: a run of a loss without a margin records ε only for its miner, if any
LOSS_SETTING: dict[str, str | None] = {"contrastive": "margin", "triplet": "margin", "lifted": "margin", "npair": None,
                                       "nce": "temperature", "infonce": "temperature"}


def build_loss(
    name: str, *, margin: float = 0.2, temperature: float = 0.1, negative_rules: NegativeRules | None = None
) -> MetricLoss:
    """The loss for a command-line name (a key of ``LOSSES``), given the run's margin / temperature;
    each loss takes only the parameter it uses."""
    if name not in LOSSES:
        raise ValueError(f"loss must be one of {', '.join(LOSSES)}; got {name!r}" + did_you_mean(str(name), LOSSES))
    takes = {"margin": (margin,), "temperature": (temperature,), None: ()}[LOSS_SETTING[name]]
    return LOSSES[name](*takes, negative_rules=negative_rules)


# ---------------------------------------------------------------------------------------------
# helpers


def _squared_distances(x: torch.Tensor) -> torch.Tensor:
    """d² = 2 − 2 x̂ x̂ᵀ, clamped to [0, 4], for normalised rows x."""
    return squared_from_unit_rows(x, x)


def _zero(x: torch.Tensor) -> torch.Tensor:
    """A 0 that is still connected to the graph, so backward() works and gives zero gradients."""
    return (x * 0).sum()


def _masked_logsumexp(values: torch.Tensor, mask: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """log Σ_{mask} exp(values) along dim, and whether the mask had any entry there. Where it had
    none the value is 0 (not −∞), so no NaN reaches the gradient."""
    masked = values.masked_fill(~mask, -math.inf)
    peak = masked.amax(dim=dim, keepdim=True).detach()
    peak = torch.where(torch.isfinite(peak), peak, 0)
    total = torch.exp(masked - peak).sum(dim=dim)
    has = mask.any(dim=dim)
    lse = torch.log(torch.where(has, total, 1)) + peak.squeeze(dim)
    return torch.where(has, lse, 0), has


def _dense_triplet_sum(dist, positives, margin, *, mask=None, valid=None, neg=None, count=True):
    """Σ max(0, d_ap − d_an + ε) over the triplets (a, positives[a, k], n) where mask[a, k, n]
    (or, without a mask, where valid[a, k] and neg[a, n]), the number of non-zero terms, and
    the number of triplets (when ``count``; else None); evaluated on (anchors × K × B) chunks."""
    batch, k_max = positives.shape
    if k_max == 0:
        zero = torch.zeros((), dtype=torch.long, device=dist.device)
        return _zero(dist), zero, zero
    threshold = dist.gather(1, positives) + margin  # d_ap + ε
    d_an = dist
    if mask is None:  # push excluded terms below the hinge: d_ap + ε − d_an < 0 there
        out_of_reach = 2.0 * (2.0 + abs(margin)) + 1.0
        threshold = threshold.masked_fill(~valid, -out_of_reach)
        d_an = dist.masked_fill(~neg, out_of_reach)
    totals, actives = [], []
    for rows in anchor_chunks(batch, k_max * batch):
        hinge = F.relu(threshold[rows, :, None] - d_an[rows, None, :])  # (c, K, B)
        if mask is not None:
            hinge = hinge * mask[rows]
        totals.append(hinge.sum())
        actives.append(torch.sign(hinge.detach()).sum())  # hinge >= 0: counts the non-zero terms
    if not count:
        n_triplets = None
    elif mask is not None:
        n_triplets = mask.sum()
    else:
        n_triplets = (valid.sum(dim=1) * neg.sum(dim=1)).sum()
    if len(totals) == 1:
        return totals[0], actives[0], n_triplets
    return torch.stack(totals).sum(), torch.stack(actives).sum(), n_triplets


def _as_pairs(mined) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    if isinstance(mined, (MinedTriplets, MinedPairs)):
        return mined.as_pairs()
    if isinstance(mined, (tuple, list)) and len(mined) in (3, 4):  # index lists or tensors, as PML writes them
        indices = [torch.as_tensor(i, dtype=torch.long) for i in mined]
        return (indices[0], indices[1], indices[0], indices[2]) if len(indices) == 3 else tuple(indices)  # type: ignore[return-value]
    raise TypeError("mined must be MinedTriplets, MinedPairs, or an index tuple (a, p, n) / (a1, p, a2, n)")
