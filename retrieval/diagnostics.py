"""What the app shows about a run, computed without any user interface: why a query got the
neighbours it got, and how hard the mined negatives were over training (where the gallery lies on
a map: :mod:`retrieval.projection`).

- :func:`explain_search` runs one query through a :class:`~retrieval.index.GalleryIndex` and adds
  the margin picture's facts: which neighbours lie within the training margin ε of the best match,
  and, when the query's label is known, its nearest positive and nearest negative in the whole
  gallery and whether their gap d_an − d_ap clears ε (a triplet (q, p, n) is satisfied when
  d(q, n) ≥ d(q, p) + ε).
- :func:`hardness_by_epoch`, :func:`logged_gaps`, :func:`gap_zone_counts` and :func:`pair_history`
  summarise the mining log (``mining/epoch_NNN.jsonl``): the distribution of d_an − d_ap of the
  logged hardest triplets per epoch (how many lie below 0, the negative nearer than the positive,
  and below the margin ε), whether the miner kept them (:func:`mined_status`), the active,
  violating and per-anchor fractions of ``metrics.jsonl`` beside them, and which (anchor,
  negative) image pairs and class pairs came back as hard in several epochs;
  :func:`select_triplets` and :func:`check_class` filter the log (the app, and
  :func:`hardest_report`, what ``retrieval mining`` shows).
- :func:`confused_pairs` and :func:`confusion_history` read the class confusions of training
  (``mining/confusions.jsonl``): which classes held each class's anchors' nearest negatives, as a
  count and as a rate of the times the two classes met.
- :func:`distance_summary` reads ``val_distances.json``: how far the positive- and negative-pair
  distance distributions of the held-out classes overlap around the margin.

The app (``streamlit_app.py``) and ``benchmarks/app.py`` call these; charts of their results are
built by :mod:`retrieval.figures`. Nothing here imports streamlit.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from retrieval.errors import RetrievalError, close_names

__all__ = [
    "GAP_ZONES",
    "GalleryHit",
    "MarginReport",
    "SearchExplanation",
    "check_class",
    "class_pair",
    "confused_pairs",
    "confusion_history",
    "distance_summary",
    "explain_search",
    "gap_zone",
    "gap_zone_counts",
    "hardest_report",
    "hardness_by_epoch",
    "logged_gaps",
    "margin_report",
    "mined_status",
    "nearest_by_label",
    "pair_history",
    "read_mining_logs",
    "select_triplets",
]

EXACT_LABEL_SEARCH_LIMIT = 2_000_000
"""Galleries up to this many items get an exact nearest positive / negative (one pass over the
stored embeddings); larger ones take them from an approximate top-``LABEL_SEARCH_K`` search."""
LABEL_SEARCH_K = 200


# ----------------------------------------------------------------------------- search and margin


@dataclass(frozen=True)
class GalleryHit:
    """One gallery item at a distance from the query (the nearest positive or negative)."""

    item: int
    path: str
    label: str | None
    distance: float


@dataclass(frozen=True)
class MarginReport:
    """The query's nearest positive and nearest negative and whether their gap clears the margin.

    ``gap`` = d_an − d_ap; the pair is separated as training asked when ``gap >= margin``, and
    ``violation`` = margin − gap is positive when the negative lies inside the margin (the triplet
    would still have a loss). Either hit may be None (no other item of the query's class, or no
    item of another class).
    """

    query_label: str
    margin: float
    positive: GalleryHit | None
    negative: GalleryHit | None

    @property
    def gap(self) -> float | None:
        if self.positive is None or self.negative is None:
            return None
        return self.negative.distance - self.positive.distance

    @property
    def violation(self) -> float | None:
        return None if self.gap is None else self.margin - self.gap

    @property
    def clears_margin(self) -> bool | None:
        return None if self.gap is None else self.gap >= self.margin


@dataclass
class SearchExplanation:
    """A query's neighbours with what the margin picture needs.

    ``neighbours`` are nearest first; ``band`` = (nearest distance, nearest distance + margin);
    ``within_margin`` counts the neighbours inside the band (the best match included).
    """

    vector: np.ndarray
    neighbours: list  # list[retrieval.index.Neighbour]
    margin: float
    report: MarginReport | None = None
    band: tuple[float, float] | None = None
    within_margin: int = 0
    seconds: dict[str, float] = field(default_factory=dict)


def explain_search(
    index,
    query,
    k: int,
    *,
    margin: float,
    query_label: str | None = None,
    exclude_item: int | None = None,
) -> SearchExplanation:
    """Search ``index`` (a :class:`~retrieval.index.GalleryIndex`) for the ``k`` nearest items of
    ``query`` (a PIL image, an image path or an embedding) and explain them against ``margin``.

    ``exclude_item`` leaves one gallery item out (the query itself, when it was picked from the
    gallery). With ``query_label``, the report names the nearest positive and negative.
    """
    import time

    started = time.perf_counter()
    if isinstance(query, np.ndarray):
        vector = np.asarray(query, dtype=np.float32).reshape(-1)
        vector = vector / max(float(np.linalg.norm(vector)), 1e-12)
    else:
        vector = index.embed(query)
    embedded = time.perf_counter()
    extra = 1 if exclude_item is not None else 0
    neighbours = [n for n in index.search(vector, k + extra) if n.item != exclude_item][:k]
    searched = time.perf_counter()
    explanation = SearchExplanation(vector=vector, neighbours=neighbours, margin=float(margin))
    if neighbours:
        nearest = neighbours[0].distance
        explanation.band = (nearest, nearest + float(margin))
        explanation.within_margin = sum(1 for n in neighbours if n.distance <= nearest + float(margin))
    if query_label is not None:
        explanation.report = margin_report(index, vector, query_label, margin, exclude_item=exclude_item,
                                           neighbours=neighbours)
    explanation.seconds = {
        "embed": embedded - started,
        "search": searched - embedded,
        "margin": time.perf_counter() - searched,
    }
    return explanation


def margin_report(index, vector: np.ndarray, query_label: str, margin: float, *,
                  exclude_item: int | None = None, neighbours: Sequence = ()) -> MarginReport:
    """The nearest positive (same label) and nearest negative (another label) of ``vector`` in the
    gallery: exact over the stored embeddings for galleries up to EXACT_LABEL_SEARCH_LIMIT items,
    else from an approximate top-LABEL_SEARCH_K search (``neighbours`` are used when they already
    contain both)."""
    labels = index.labels
    positive = negative = None
    for n in neighbours:
        if n.item == exclude_item or n.label is None:
            continue
        if n.label == query_label and positive is None:
            positive = GalleryHit(n.item, n.path, n.label, n.distance)
        elif n.label != query_label and negative is None:
            negative = GalleryHit(n.item, n.path, n.label, n.distance)
    if positive is None or negative is None:
        if len(labels) <= EXACT_LABEL_SEARCH_LIMIT:
            (pos_item, pos_d), (neg_item, neg_d) = nearest_by_label(
                index.embeddings, labels, vector, query_label, exclude_item=exclude_item)
        else:
            found = [n for n in index.search(vector, LABEL_SEARCH_K) if n.item != exclude_item]
            pos = next((n for n in found if n.label == query_label), None)
            neg = next((n for n in found if n.label is not None and n.label != query_label), None)
            pos_item, pos_d = (pos.item, pos.distance) if pos else (None, None)
            neg_item, neg_d = (neg.item, neg.distance) if neg else (None, None)
        if positive is None and pos_item is not None:
            positive = GalleryHit(pos_item, str(index.path(pos_item)), labels[pos_item], pos_d)
        if negative is None and neg_item is not None:
            negative = GalleryHit(neg_item, str(index.path(neg_item)), labels[neg_item], neg_d)
    return MarginReport(query_label=query_label, margin=float(margin), positive=positive, negative=negative)


def nearest_by_label(
    embeddings: np.ndarray,
    labels: Sequence[str | None],
    vector: np.ndarray,
    label: str,
    *,
    exclude_item: int | None = None,
    chunk_rows: int = 262_144,
) -> tuple[tuple[int | None, float | None], tuple[int | None, float | None]]:
    """Exact nearest item with ``label`` and nearest item with another (non-None) label, as
    ``((item, distance), (item, distance))``; distances sqrt(2 − 2 cos) between unit vectors.
    ``embeddings`` may be memory-mapped; it is read in chunks."""
    label_array = np.asarray([-1 if x is None else (1 if x == label else 0) for x in labels], dtype=np.int8)
    vector = np.asarray(vector, dtype=np.float32).reshape(-1)
    best = {1: (None, -np.inf), 0: (None, -np.inf)}
    for start in range(0, len(embeddings), chunk_rows):
        sims = np.asarray(embeddings[start : start + chunk_rows], dtype=np.float32) @ vector
        kinds = label_array[start : start + len(sims)]
        if exclude_item is not None and start <= exclude_item < start + len(sims):
            sims[exclude_item - start] = -np.inf
        for kind in (1, 0):
            masked = np.where(kinds == kind, sims, -np.inf)
            if len(masked) and np.isfinite(masked.max()):
                i = int(np.argmax(masked))
                if masked[i] > best[kind][1]:
                    best[kind] = (start + i, float(masked[i]))

    def as_distance(hit):
        item, sim = hit
        return (None, None) if item is None else (item, math.sqrt(max(0.0, 2.0 - 2.0 * sim)))

    return as_distance(best[1]), as_distance(best[0])


# ----------------------------------------------------------------------------- mining log


def class_pair(a: str, b: str) -> tuple[str, str]:
    """An unordered class pair as a sorted tuple (confusing a with b is confusing b with a)."""
    return (a, b) if str(a) <= str(b) else (b, a)


def pair_history(logs: Mapping[int, Sequence[Mapping[str, Any]]], by: str = "image") -> dict[tuple[str, str], list[int]]:
    """For each (anchor, negative) pair in the mining logs (``{epoch: rows}``), the epochs in which
    it was among the hardest triplets, ascending.

    ``by="image"`` keys by the (anchor_path, negative_path) image pair; ``by="class"`` by the
    unordered (anchor_label, negative_label) class pair (:func:`class_pair`).
    """
    if by not in ("image", "class"):
        raise ValueError(f"by must be 'image' or 'class', got {by!r}")
    history: dict[tuple[str, str], set[int]] = {}
    for epoch, rows in logs.items():
        for row in rows:
            key = ((row["anchor_path"], row["negative_path"]) if by == "image"
                   else class_pair(str(row["anchor_label"]), str(row["negative_label"])))
            history.setdefault(key, set()).add(int(epoch))
    return {key: sorted(epochs) for key, epochs in history.items()}


def hardness_by_epoch(logs: Mapping[int, Sequence[Mapping[str, Any]]],
                      metrics: Iterable[Mapping[str, Any]] = (), *, margin: float | None = None) -> list[dict[str, Any]]:
    """One row per epoch that has a mining log or a metrics row: ``epoch``, ``mean_gap`` (mean
    d_an − d_ap of the logged hardest triplets), ``n_logged``, ``n_violating`` (logged triplets
    with gap < margin, when ``margin`` is given), ``n_nearer`` (gap < 0: the negative nearer than
    the positive), ``n_mined`` (logged triplets the miner kept; None where the log did not record
    it), and from ``metrics.jsonl``: ``active_fraction`` (of the mined triplets, those with a loss
    > 0), ``violating_fraction`` (of all valid triplets in the batches, those with
    d_an < d_ap + ε), ``inverted_anchor_fraction`` and ``violating_anchor_fraction`` (of the
    anchors, those whose nearest negative lies nearer than their farthest positive, or within ε
    of it). Missing values are None."""
    fractions = ("active_fraction", "violating_fraction", "inverted_anchor_fraction", "violating_anchor_fraction")
    by_epoch = {int(row["epoch"]): row for row in metrics if "epoch" in row}
    rows = []
    for epoch in sorted(set(logs) | {e for e, row in by_epoch.items() if row.get("active_fraction") is not None}):
        triplets = logs.get(epoch, [])
        gaps = [_gap(t) for t in triplets]
        status = [mined_status(t) for t in triplets]
        rows.append({
            "epoch": int(epoch),
            "mean_gap": float(np.mean(gaps)) if gaps else None,
            "n_logged": len(gaps),
            "n_violating": sum(1 for g in gaps if g < margin) if margin is not None and gaps else None,
            "n_nearer": sum(1 for g in gaps if g < 0) if gaps else None,
            "n_mined": None if not gaps or NOT_RECORDED in status else status.count(MINED),
            **{key: by_epoch.get(epoch, {}).get(key) for key in fractions},
        })
    return rows


MINED, NOT_MINED, NOT_RECORDED = "mined", "not mined", "not recorded"
#: where a logged triplet's gap d_an − d_ap lies against 0 and the margin ε
GAP_ZONES = ("negative nearer than the positive", "inside the margin", "margin met")


def mined_status(row: Mapping[str, Any]) -> str:
    """Whether the miner kept a logged triplet: ``"mined"``, ``"not mined"``, or ``"not recorded"``
    (logs written before training recorded it held only the miner's triplets)."""
    mined = row.get("mined")
    return NOT_RECORDED if mined is None else (MINED if mined else NOT_MINED)


def gap_zone(gap: float, margin: float) -> str:
    """:data:`GAP_ZONES`: gap < 0, 0 <= gap < ε (a loss remains), gap >= ε."""
    return GAP_ZONES[0] if gap < 0 else (GAP_ZONES[1] if gap < margin else GAP_ZONES[2])


def logged_gaps(logs: Mapping[int, Sequence[Mapping[str, Any]]], margin: float) -> list[dict[str, Any]]:
    """One row per logged triplet: ``epoch``, ``gap`` (d_an − d_ap), its ``zone`` and ``mined``
    (:func:`mined_status`): the distribution of the hardest, epoch by epoch."""
    return [{"epoch": int(epoch), "gap": _gap(row), "zone": gap_zone(_gap(row), margin), "mined": mined_status(row)}
            for epoch, rows in sorted(logs.items()) for row in rows]


def gap_zone_counts(logs: Mapping[int, Sequence[Mapping[str, Any]]], margin: float) -> list[dict[str, Any]]:
    """How many logged triplets of each epoch lie in each zone, split by whether the miner kept
    them: rows ``{"epoch", "zone", "mined", "count"}`` (count > 0), zones in :data:`GAP_ZONES` order."""
    counts: dict[tuple[int, str, str], int] = {}
    for row in logged_gaps(logs, margin):
        key = (row["epoch"], row["zone"], row["mined"])
        counts[key] = counts.get(key, 0) + 1
    order = {zone: i for i, zone in enumerate(GAP_ZONES)}
    return [{"epoch": e, "zone": z, "mined": m, "count": c}
            for (e, z, m), c in sorted(counts.items(), key=lambda kv: (kv[0][0], order[kv[0][1]], kv[0][2]))]


def select_triplets(rows: Sequence[Mapping[str, Any]], *, mined_only: bool = False,
                    class_name: str | None = None) -> list[Mapping[str, Any]]:
    """The logged triplets that the filters keep: ``mined_only``, those the miner kept (a log that
    did not record it held only the miner's triplets: all of them); ``class_name``, those whose
    anchor or negative is of that class."""
    kept = [row for row in rows if not mined_only or mined_status(row) != NOT_MINED]
    if class_name is not None:
        kept = [row for row in kept if class_name in (str(row["anchor_label"]), str(row["negative_label"]))]
    return kept


def hardest_report(run_dir: str | Path, *, epoch: int | None = None, top: int = 20, mined_only: bool = False,
                   class_name: str | None = None) -> dict[str, Any]:
    """What ``retrieval mining`` shows: ``{"epoch", "margin", "miner", "loss", "mined_recorded", "n_logged", "triplets"}``,
    the ``top`` logged triplets of ``epoch`` (the last one logged when None) that
    :func:`select_triplets` keeps, hardest first, each with ``margin_violation`` = ε − (d_an − d_ap).
    ``mined_recorded`` is False for logs written before ``mined`` was (they hold the miner's only).
    A face run's rows also name the photos of their crops (``anchor_photo``, ...; ``with_photo_names``)."""
    from retrieval.faces.run_faces import training_photo_names, with_photo_names
    from retrieval.run import mining_epochs, read_config, read_mining_log

    if top < 1:
        raise RetrievalError(f"--top must be at least 1, got {top}")
    config = read_config(run_dir)
    if class_name is not None and config.get("mode") in ("unlabelled", "pairs"):
        raise RetrievalError(f"--class filters by class, and this run trained without class labels (--{config.get('mode')}): "
                             "its log's labels are the images' own or their linked groups'")
    logged = with_photo_names(read_mining_log(run_dir, epoch), training_photo_names(run_dir), run_dir)
    if class_name is not None:
        logged_labels = [row[f"{role}_label"] for row in logged for role in ("anchor", "negative")]
        check_class(class_name, [*(config.get("train_classes") or config.get("class_names") or []), *logged_labels], config.get("val_classes") or ())
    margin = float(config.get("margin", 0.0))
    rows = [{**row, "margin_violation": margin - float(row["d_an_minus_d_ap"])}
            for row in select_triplets(logged, mined_only=mined_only, class_name=class_name)[:top]]
    return {"epoch": epoch if epoch is not None else mining_epochs(run_dir)[-1], "margin": margin, "miner": config.get("miner"),
            "loss": config.get("loss"), "mined_recorded": all("mined" in row for row in logged), "n_logged": len(logged), "triplets": rows}


def check_class(name: str, classes: Iterable[str], held_out: Iterable[str] = ()) -> None:
    """RetrievalError (one line, naming the closest class names) when ``name`` is not one of ``classes``
    (the training classes; one of ``held_out``, the validation classes, is told so)."""
    classes = sorted({str(c) for c in classes})
    if name in classes:
        return
    held_out = {str(c) for c in held_out}
    if name in held_out:
        raise RetrievalError(f"{name!r} is a validation class of this run (held out, never trained on): no triplet of it is logged")
    close = close_names([name], [*classes, *held_out])  # a held-out name may be the one meant: said so
    shown = [f"{c} (a validation class: none of it logged)" if c in held_out else c for c in close]
    hint = f"did you mean {', '.join(shown)}?" if close else f"its classes include {', '.join(classes[:5])}{', …' if len(classes) > 5 else ''}"
    raise RetrievalError(f"no class {name!r} in this run; {hint}")


def confused_pairs(rows: Sequence[Mapping[str, Any]], epoch: int, top: int = 20) -> list[dict[str, Any]]:
    """One epoch's class confusions (rows of ``mining/confusions.jsonl``): the ``top`` ordered
    pairs by ``nearest`` (anchors of A whose nearest negative was of B), each with ``rate`` =
    nearest / met (how often B held the nearest negative when an anchor of A met B) and ``share``
    = nearest / anchors (of A's anchors)."""
    chosen = [dict(row) for row in rows if row.get("epoch") == epoch]
    for row in chosen:
        row["rate"] = row["nearest"] / row["met"] if row.get("met") else None
        row["share"] = row["nearest"] / row["anchors"] if row.get("anchors") else None
    return sorted(chosen, key=lambda r: (-r["nearest"], -(r["rate"] or 0.0), r["anchor_label"], r["negative_label"]))[:top]


def confusion_history(rows: Sequence[Mapping[str, Any]], pairs: Iterable[tuple[str, str]]) -> list[dict[str, Any]]:
    """For the ordered class ``pairs`` (anchor class, negative class): their ``rate`` in every epoch
    that recorded them, rows ``{"epoch", "pair": "A → B", "rate", "nearest", "met"}``."""
    wanted = set(pairs)
    return [{"epoch": int(row["epoch"]), "pair": f"{row['anchor_label']} → {row['negative_label']}",
             "rate": row["nearest"] / row["met"] if row.get("met") else None, "nearest": row["nearest"], "met": row.get("met")}
            for row in sorted(rows, key=lambda r: r["epoch"]) if (row["anchor_label"], row["negative_label"]) in wanted]


def _gap(row: Mapping[str, Any]) -> float:
    return float(row["d_an_minus_d_ap"]) if "d_an_minus_d_ap" in row else float(row["d_an"]) - float(row["d_ap"])


# ----------------------------------------------------------------------------- validation distances


def distance_summary(val: Mapping[str, Any], margin: float) -> dict[str, Any]:
    """Numbers for the held-out distance histogram: counts and medians of positive- and
    negative-pair distances, ``threshold`` = median positive distance + margin (a negative closer
    than that violates the margin for a typical positive) and ``negatives_inside``, the fraction
    of negative pairs closer than the threshold."""
    positive = np.asarray(val.get("positive") or [], dtype=np.float64)
    negative = np.asarray(val.get("negative") or [], dtype=np.float64)
    summary: dict[str, Any] = {"n_positive": int(positive.size), "n_negative": int(negative.size), "margin": float(margin)}
    summary["median_positive"] = float(np.median(positive)) if positive.size else None
    summary["median_negative"] = float(np.median(negative)) if negative.size else None
    if positive.size:
        summary["threshold"] = summary["median_positive"] + float(margin)
        summary["negatives_inside"] = float(np.mean(negative < summary["threshold"])) if negative.size else None
    else:
        summary["threshold"] = None
        summary["negatives_inside"] = None
    return summary


def read_mining_logs(run_dir: str | Path) -> dict[int, list[dict[str, Any]]]:
    """Every epoch's mining log of a run, ``{epoch: rows}`` (empty when the run has none); a face
    run's rows also name the photos of their crops (``with_photo_names``)."""
    from retrieval.faces.run_faces import training_photo_names, with_photo_names
    from retrieval.run import mining_epochs, read_mining_log

    names = training_photo_names(run_dir)
    return {epoch: with_photo_names(read_mining_log(run_dir, epoch), names, run_dir) for epoch in mining_epochs(run_dir)}

