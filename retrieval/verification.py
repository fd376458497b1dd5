"""Verification: is a pair the same identity / product? ROC, EER, TAR at FAR, and the threshold τ.

For a distance threshold τ over pairs of images (DESIGN.md, Verification), with d the Euclidean
distance between unit embeddings:

- FAR(τ) = (different-class pairs with d ≤ τ) / (different-class pairs)  — false accepts;
- FRR(τ) = (same-class pairs with d > τ) / (same-class pairs)             — false rejects;
- TAR(τ) = 1 − FRR(τ).

The ROC is (FAR, TAR) over every τ at which a count changes (each distinct distance), from
(0, 0) below the smallest distance to (1, 1) at the largest. The EER is the rate where FAR = FRR:
FAR − FRR rises from −1 to +1 along the ROC, and the EER is read where it crosses 0, linearly
interpolated between the two ROC points around the crossing.

The threshold for a target FAR f is the largest τ whose FAR does not exceed f. With the
different-class distances sorted, n_1 ≤ … ≤ n_N, and m = ⌊f · N⌋, every τ < n_{m+1} has FAR ≤ m/N
≤ f; τ is placed half-way between n_{m+1} and the largest observed distance below it (so a
distance a little off the calibration pairs falls on the side it fell on there). TAR at FAR f is
TAR at that τ. A rate f means something only with enough pairs: :func:`far_levels` reports f
only where there are at least 10 / f different-class pairs.

Pairs come from labelled embeddings (:func:`pair_distances`): every unordered pair of one set
(leave-one-out), or every (query, gallery) pair of two sets; above ``max_pairs`` a uniform sample
(seeded) keeps memory bounded.

For people: :class:`Verdict` (open-set identification of one query at τ: the nearest item's label
when d ≤ τ, else "no match in the gallery") and :meth:`Verdict.describe`, :func:`describe_threshold`
(a stored τ in one line), :func:`percent` (rates as "1 %"), and :func:`roc_points` (the ROC thinned
for a chart).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from retrieval.batch_inputs import embedding_rows, require_labels
from retrieval.errors import RetrievalError

__all__ = [
    "FAR_LEVELS",
    "MIN_PAIRS_PER_RATE",
    "NoThresholdError",
    "PairDistances",
    "Threshold",
    "VerificationSummary",
    "Verdict",
    "describe_threshold",
    "distance_and_threshold",
    "equal_error_rate",
    "open_set_verdict",
    "far_levels",
    "few_pairs_caveat",
    "pair_distances",
    "pairs_needed",
    "percent",
    "rates_at",
    "roc_curve",
    "roc_points",
    "summarise",
    "threshold_at_far",
]

#: the FARs reported each epoch and by ``retrieval evaluate`` (1e-3 only with ≥ 10 000 negative pairs)
FAR_LEVELS = (1e-1, 1e-2, 1e-3)
#: a rate f is reported only with at least MIN_PAIRS_PER_RATE / f different-class pairs
MIN_PAIRS_PER_RATE = 10
#: the pairs of a set above which a uniform sample is used
DEFAULT_MAX_PAIRS = 20_000_000


@dataclass(frozen=True)
class PairDistances:
    """Distances of same-class (``positive``) and different-class (``negative``) pairs."""

    positive: np.ndarray
    negative: np.ndarray
    sampled: bool = False

    @property
    def n_positive(self) -> int:
        return int(len(self.positive))

    @property
    def n_negative(self) -> int:
        return int(len(self.negative))


@dataclass(frozen=True)
class Threshold:
    """A decision threshold τ (same when d ≤ τ), the target FAR it was chosen for, and what it gave
    on the pairs it was chosen on."""

    threshold: float
    target_far: float
    far: float
    tar: float
    n_positive_pairs: int
    n_negative_pairs: int

    def to_json(self) -> dict[str, Any]:
        return {"threshold": self.threshold, "target_far": self.target_far, "far": self.far, "tar": self.tar,
                "n_positive_pairs": self.n_positive_pairs, "n_negative_pairs": self.n_negative_pairs}


class NoThresholdError(RetrievalError):
    """No τ ≥ 0 keeps the FAR within the target: more different-class pairs than the target allows
    lie at distance 0 (the same image, or identical ones, under two classes)."""


@dataclass(frozen=True)
class VerificationSummary:
    """EER, TAR at each reportable FAR, the pair counts, and the threshold for the target FAR
    (None without both kinds of pairs, or, with ``no_threshold`` saying why, where no τ ≥ 0 meets it)."""

    eer: float | None
    tar_at_far: dict[str, float | None]
    n_positive_pairs: int
    n_negative_pairs: int
    threshold: Threshold | None
    no_threshold: str | None = None

    def metrics(self) -> dict[str, Any]:
        """The keys ``metrics.jsonl`` and ``retrieval evaluate --json`` carry."""
        return {"eer": self.eer, "tar_at_far": dict(self.tar_at_far),
                "n_positive_pairs": self.n_positive_pairs, "n_negative_pairs": self.n_negative_pairs}


@dataclass(frozen=True)
class Verdict:
    """Open-set identification of one query: ``match`` when its nearest gallery item lies within τ
    (then ``label`` is that item's label), else "not in the gallery"; ``match`` is None when the
    run has no threshold (no verdict without one)."""

    match: bool | None
    label: str | None
    distance: float | None
    threshold: float | None
    path: str | None = None  # the matched gallery image (None without a match), as search names it
    face: int | None = None  # in a face gallery: which face of that photo (from 0, as gallery.json)

    def to_json(self) -> dict[str, Any]:
        """``{"match", "label", "distance", "threshold", "path", "face"}``: ``path`` the matched image
        and ``face`` which face of it (a face gallery), each null without a match or a face."""
        return {"match": self.match, "label": self.label, "distance": self.distance, "threshold": self.threshold,
                "path": self.path, "face": self.face}

    def describe(self, target_far: float | None = None, nearest: str | None = None, run_dir: str | None = None) -> str:
        """One line: "match: LABEL, d = 0.31 ≤ τ = 0.52 at FAR 1 %", "no match in the gallery …". In a
        gallery without labels a match is named by ``nearest`` (the nearest item's name, e.g.
        "003.jpg · face 2"), else "(unlabelled)". Without τ, the calibrate command for ``run_dir``
        (else for RUN_DIR)."""
        if self.threshold is None:
            return (f"no threshold is set for this run, so no verdict (set one with `retrieval calibrate "
                    f"{run_dir or 'RUN_DIR'} DATA_DIR`)")
        at = f" at FAR {percent(target_far)}" if target_far is not None else ""
        if self.distance is None:
            return "no match in the gallery"
        d, tau = distance_and_threshold(self.distance, self.threshold)
        if self.match:
            name = self.label if self.label is not None else nearest if nearest is not None else "(unlabelled)"
            return f"match: {name}, d = {d} ≤ τ = {tau}{at}"
        return f"no match in the gallery: the nearest is at d = {d} > τ = {tau}{at}"


def distance_and_threshold(distance: float, threshold: float, decimals: int = 3) -> tuple[str, str]:
    """d and τ as text with ``decimals`` decimals, or more (up to 6) where that many would print two
    different values alike: "d = 0.2744 > τ = 0.2742", never "d = 0.274 > τ = 0.274"."""
    for places in range(decimals, 7):
        shown = f"{distance:.{places}f}", f"{threshold:.{places}f}"
        if shown[0] != shown[1] or distance == threshold:
            break
    return shown


def percent(rate: float) -> str:
    """A rate as the app and the CLI write it: 0.01 → "1 %", 0.001 → "0.1 %", 0.125 → "12.5 %"."""
    return f"{100 * rate:.3g} %"


def describe_threshold(stored: Mapping[str, Any] | None) -> str:
    """One line on a run's stored τ (config.json's ``"verification"``): its FAR and TAR on the pairs
    it was chosen on, the EER, how many pairs, and which."""
    if not stored:
        return "no threshold τ is set"
    eer = stored.get("eer")
    return (f"threshold τ = {stored['threshold']:.4f} at FAR {stored['far']:.4f} (target {stored['target_far']:g}), "
            f"TAR {stored['tar']:.4f}, EER {'-' if eer is None else f'{eer:.4f}'} on {stored['n_positive_pairs']} same-class "
            f"and {stored['n_negative_pairs']} different-class pairs ({stored.get('pairs', 'pairs not recorded')})")


def open_set_verdict(nearest: tuple[str | None, float] | None, threshold: Threshold | None) -> Verdict:
    """The verdict for a query whose nearest gallery item is ``nearest`` = (label, distance)
    (None for an empty result) at the run's ``threshold``."""
    label, distance = nearest if nearest is not None else (None, None)
    if threshold is None:
        return Verdict(None, None, distance, None)
    if distance is None or distance > threshold.threshold:
        return Verdict(False, None, distance, threshold.threshold)
    return Verdict(True, label, distance, threshold.threshold)


def pair_distances(
    embeddings: np.ndarray,
    labels: Sequence[int] | np.ndarray,
    gallery_embeddings: np.ndarray | None = None,
    gallery_labels: Sequence[int] | np.ndarray | None = None,
    *,
    max_pairs: int = DEFAULT_MAX_PAIRS,
    seed: int = 0,
) -> PairDistances:
    """Same- and different-class pair distances: all pairs i < j of one set, or all (query, gallery)
    pairs of two; a uniform sample of ``max_pairs`` pairs (``seed``) when there are more."""
    x, y = _unit(embeddings, labels, "")
    if gallery_embeddings is None:
        n = len(x)
        total = n * (n - 1) // 2
        if total <= max_pairs:
            first, second = np.triu_indices(n, k=1)
        else:
            first, second = _sample_upper(n, max_pairs, seed)
        g, gy = x, y
    else:
        g, gy = _unit(gallery_embeddings, gallery_labels, "gallery ")
        if g.shape[1] != x.shape[1]:
            raise ValueError(f"query and gallery embeddings differ in dimension: {x.shape[1]} vs {g.shape[1]}")
        total = len(x) * len(g)
        if total <= max_pairs:
            first, second = (a.ravel() for a in np.meshgrid(np.arange(len(x)), np.arange(len(g)), indexing="ij"))
        else:
            rng = np.random.default_rng(seed)
            first, second = rng.integers(0, len(x), max_pairs), rng.integers(0, len(g), max_pairs)
    distances = _row_distances(x, g, first, second)
    same = y[first] == gy[second]
    return PairDistances(distances[same], distances[~same], sampled=total > max_pairs)


def roc_curve(positive: np.ndarray, negative: np.ndarray) -> dict[str, np.ndarray]:
    """``{"threshold", "far", "tar"}``: the ROC at every distinct distance, from (0, 0) at −∞ to (1, 1)."""
    positive, negative = _check(positive, negative)
    thresholds = np.unique(np.concatenate([positive, negative]))
    far = np.searchsorted(np.sort(negative), thresholds, side="right") / len(negative)
    tar = np.searchsorted(np.sort(positive), thresholds, side="right") / len(positive)
    return {"threshold": np.concatenate([[-np.inf], thresholds]),
            "far": np.concatenate([[0.0], far]), "tar": np.concatenate([[0.0], tar])}


def roc_points(positive: np.ndarray, negative: np.ndarray, max_points: int = 200) -> list[dict[str, float]]:
    """The ROC for a chart: at most about ``max_points`` rows ``{"threshold", "far", "tar", "frr"}``,
    thinned on a logarithmic FAR grid from 1 / (negative pairs) to 1 (at each grid FAR g the point
    with the highest TAR at FAR ≤ g, so the curve keeps its upper envelope), the end points kept
    (the first, below every distance, has threshold None) and the highest TAR at FAR 0."""
    roc = roc_curve(positive, negative)
    far = roc["far"]
    grid = np.logspace(np.log10(1.0 / len(np.ravel(negative))), 0.0, max_points)
    best_at_zero = np.searchsorted(far, 0.0, side="right") - 1  # the highest TAR that accepts no different-class pair
    keep = np.unique(np.concatenate([[0, best_at_zero, len(far) - 1], np.searchsorted(far, grid, side="right") - 1]))
    thresholds = roc["threshold"]
    return [{"threshold": float(thresholds[i]) if np.isfinite(thresholds[i]) else None, "far": float(far[i]),
             "tar": float(roc["tar"][i]), "frr": float(1.0 - roc["tar"][i])} for i in keep]


def equal_error_rate(positive: np.ndarray, negative: np.ndarray) -> float:
    """The rate where FAR = FRR, interpolated on the ROC (see the module docstring)."""
    roc = roc_curve(positive, negative)
    far, frr = roc["far"], 1.0 - roc["tar"]
    gap = far - frr  # −1 at the start, +1 at the end, non-decreasing
    i = int(np.argmax(gap >= 0))
    if gap[i] == 0:
        return float(far[i])
    a, b = gap[i - 1], gap[i]
    alpha = -a / (b - a)
    return float(far[i - 1] + alpha * (far[i] - far[i - 1]))


def rates_at(threshold: float, positive: np.ndarray, negative: np.ndarray) -> tuple[float, float]:
    """(FAR, FRR) at ``threshold``: same when d ≤ τ."""
    positive, negative = _check(positive, negative)
    return float(np.mean(negative <= threshold)), float(np.mean(positive > threshold))


def threshold_at_far(positive: np.ndarray, negative: np.ndarray, target_far: float) -> Threshold:
    """The largest τ with FAR(τ) ≤ ``target_far`` (half-way to the next observed distance), and its rates.

    Distances are ≥ 0, so where more than ``target_far`` of the different-class pairs lie at
    distance 0 no τ ≥ 0 meets the target: :class:`NoThresholdError` (one line, saying how many)."""
    if not 0 < target_far < 1:
        raise RetrievalError(f"--target-far must be between 0 and 1, got {target_far}")
    positive, negative = _check(positive, negative)
    ordered = np.sort(negative)
    m = int(math.floor(target_far * len(ordered) + 1e-9))
    limit = ordered[m]  # FAR stays ≤ m / N for every τ below it
    if limit <= 0:
        at_zero = int(np.sum(ordered <= 0))
        raise NoThresholdError(
            f"{at_zero} of the {len(ordered)} different-class pairs lie at distance 0 (the same image under two classes?), "
            f"more than a FAR of {target_far:g} allows: no threshold τ ≥ 0 meets it; remove the duplicates or give a "
            "larger --target-far")
    below = np.concatenate([positive[positive < limit], ordered[ordered < limit]])
    threshold = float((below.max() + limit) / 2) if len(below) else float(np.nextafter(limit, -np.inf))
    far, _frr = rates_at(threshold, positive, negative)
    tar = float(np.mean(positive <= threshold))  # counted, not 1 − FRR: 0.1125, not 0.11250000000000004
    return Threshold(threshold, float(target_far), far, tar, len(positive), len(negative))


def pairs_needed(target_far: float) -> int:
    """How many different-class pairs a FAR of ``target_far`` needs to be measured (10 / f: a FAR of
    1 % needs 1000; fewer, and it rests on a handful of pairs)."""
    return math.ceil(MIN_PAIRS_PER_RATE / target_far - 1e-9)


def few_pairs_caveat(threshold: Threshold) -> str | None:
    """The caveat of a τ chosen on fewer different-class pairs than its FAR needs (:func:`pairs_needed`),
    as the middle of a warning line ("… gives N different-class pairs: τ at FAR f rests on …"); None when enough."""
    needed = pairs_needed(threshold.target_far)
    if threshold.n_negative_pairs >= needed:
        return None
    return (f"{threshold.n_negative_pairs} different-class pairs: τ at FAR {threshold.target_far:g} rests on fewer than "
            f"the {needed} that rate needs")


def far_levels(n_negative: int, levels: Sequence[float] = FAR_LEVELS) -> list[float]:
    """The FARs that ``n_negative`` different-class pairs can measure (≥ 10 / f pairs each)."""
    return [f for f in levels if n_negative >= MIN_PAIRS_PER_RATE / f]


def summarise(pairs: PairDistances, target_far: float | None = 0.01) -> VerificationSummary:
    """EER, TAR at 1e-1 and 1e-2 (None when too few pairs measure them) and at 1e-3 where enough
    pairs measure it, and the threshold for ``target_far`` (None without both kinds of pairs)."""
    if pairs.n_positive == 0 or pairs.n_negative == 0:
        empty = {_far_key(f): None for f in FAR_LEVELS[:2]}
        return VerificationSummary(None, empty, pairs.n_positive, pairs.n_negative, None)
    measurable = far_levels(pairs.n_negative)
    tar = {}
    for f in FAR_LEVELS:
        if f in measurable:
            try:
                tar[_far_key(f)] = threshold_at_far(pairs.positive, pairs.negative, f).tar
            except NoThresholdError:  # only accepting nothing meets f: TAR 0
                tar[_far_key(f)] = 0.0
        elif f in FAR_LEVELS[:2]:
            tar[_far_key(f)] = None
    threshold, no_threshold = None, None
    if target_far is not None:
        try:
            threshold = threshold_at_far(pairs.positive, pairs.negative, target_far)
        except NoThresholdError as error:
            no_threshold = str(error)
    return VerificationSummary(equal_error_rate(pairs.positive, pairs.negative), tar,
                               pairs.n_positive, pairs.n_negative, threshold, no_threshold)


# ----------------------------------------------------------------------------- helpers


def _far_key(f: float) -> str:
    """The JSON key of a FAR: "0.1", "0.01", "0.001"."""
    return f"{f:g}"


def _check(positive, negative) -> tuple[np.ndarray, np.ndarray]:
    positive = np.asarray(positive, dtype=np.float64).ravel()
    negative = np.asarray(negative, dtype=np.float64).ravel()
    if len(positive) == 0 or len(negative) == 0:
        raise RetrievalError("verification needs same-class and different-class pairs (two or more classes, "
                             "one with two or more images)")
    if not (np.isfinite(positive).all() and np.isfinite(negative).all()):
        raise RetrievalError("pair distances must be finite")
    return positive, negative


def _unit(embeddings, labels, which: str) -> tuple[np.ndarray, np.ndarray]:
    """(unit rows, labels) of one set, checked: finite (N, D) embeddings, one label each."""
    x = embedding_rows(embeddings, f"{which}embeddings")
    y = require_labels(labels, f"{which}labels")
    if y.shape != (len(x),):
        raise ValueError(f"{which}labels must have shape ({len(x)},) to match the embeddings, got {y.shape}")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12), y


def _row_distances(x: np.ndarray, g: np.ndarray, first: np.ndarray, second: np.ndarray, chunk: int = 1 << 20) -> np.ndarray:
    """||x[first[k]] − g[second[k]]|| for every k, in chunks (sqrt(2 − 2 cos) for unit rows)."""
    out = np.empty(len(first), dtype=np.float32)
    for start in range(0, len(first), chunk):
        a, b = x[first[start:start + chunk]], g[second[start:start + chunk]]
        cos = np.einsum("ij,ij->i", a, b)
        out[start:start + chunk] = np.sqrt(np.clip(2.0 - 2.0 * cos, 0.0, 4.0))
    return out


def _sample_upper(n: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """k pairs (i, j), i < j, drawn uniformly (with replacement) from the n · (n − 1) / 2."""
    rng = np.random.default_rng(seed)
    i, j = rng.integers(0, n, 2 * k), rng.integers(0, n, 2 * k)
    keep = i != j
    i, j = i[keep][:k], j[keep][:k]
    return np.minimum(i, j), np.maximum(i, j)
