"""Which classes the model confuses: over training, from each batch's nearest negatives, and after
training, from exact search over a labelled gallery.

During training (:class:`ConfusionCounts`, written to ``mining/confusions.jsonl`` once an epoch).
Each anchor a of a batch has a nearest negative, n*(a) = argmin over the negatives n of a of
d(a, n) (the per-anchor view of :class:`~retrieval.mining_record.AnchorView`). For an ordered pair
of classes (A, B) an epoch counts

- ``nearest``: anchors of A whose nearest negative was of B;
- ``met``: anchors of A whose batch held a negative of B (the negative rules decide);
- ``batches``: batches that held both A and B;
- ``anchors``: anchors of A with any negative in their batch.

Which classes meet depends on the sampler (P classes a batch, groups, hard batches), so a count
alone says little: ``rate`` = nearest / met is how often B held the nearest negative when an
anchor of A met B, and ``share`` = nearest / anchors how much of A's confusion went to B. The file
has one row per epoch and pair with nearest > 0.

After training (:func:`gallery_confusions`, ``retrieval confusions``). Every item of a labelled
set is a query against all the others (exact search, cosine on unit embeddings, d = sqrt(2 − 2 cos)):
its nearest item, its nearest item of another class (its nearest negative) and its nearest item of
its own class. For each class: how many of its items have an item of another class as nearest
neighbour (a rank-1 confusion; counted only for the ``n_with_positive`` items that have a
same-class item, as evaluation counts queries) and its ``per_class`` items nearest to another
class, with that other item. For each unordered class pair {A, B}: ``confused``, the rank-1 confusions between them
(either way), ``nearest_negative``, the items of either class whose nearest negative lies in the
other, and ``closest``, the smallest of those nearest-negative distances; the pairs are ranked by
``confused``, then ``nearest_negative``, then ``closest``. :func:`run_confusions` takes the set
from the run's indexed gallery (``index/embeddings.npy`` with ``index/gallery.json``) or embeds a
labelled folder with the run's model (for a face run, each image's most confident face).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Callable

import numpy as np

from retrieval.errors import RetrievalError

__all__ = ["ConfusionCounts", "NearestItems", "gallery_confusions", "nearest_items", "run_confusions"]

_CONSOLIDATE_ROWS = 1 << 20  # pending (pair, counts) rows before they are summed
_SEARCH_ELEMENTS = 1 << 24  # query rows × gallery items of one exact-search chunk (64 MiB as float32)


# ----------------------------------------------------------------------------- during training


class ConfusionCounts:
    """An epoch's class confusions, added batch by batch from the mining record's per-anchor view
    (:class:`~retrieval.mining_record.AnchorView`); :meth:`rows` for ``mining/confusions.jsonl``.

    Vectorised per batch (C² pairs for the batch's C classes); the pairs of many batches are summed
    with ``np.unique`` when a million are pending, so memory stays bounded over long epochs.
    """

    def __init__(self) -> None:
        self._pairs: list[tuple[np.ndarray, np.ndarray]] = []  # (codes A << 32 | B, [nearest, met, batches])
        self._anchors: list[tuple[np.ndarray, np.ndarray]] = []  # (classes, anchors with a negative)
        self._pending = 0

    def add(self, view) -> None:
        """One batch's per-anchor view (CPU tensors)."""
        classes = view.classes.numpy().astype(np.int64)
        n_classes = len(classes)
        if n_classes < 2:
            return
        of_anchor = np.searchsorted(classes, view.labels.numpy())
        nearest = view.nearest_negative.numpy()
        has_negative = nearest >= 0
        nearest_counts = np.zeros((n_classes, n_classes), dtype=np.int64)
        np.add.at(nearest_counts, (of_anchor[has_negative], of_anchor[nearest[has_negative]]), 1)
        members = np.eye(n_classes, dtype=np.int64)[of_anchor]  # (B, C): the anchor's class
        met = members.T @ view.negative_classes.numpy().astype(np.int64)  # (C, C): anchors of A with a negative of B
        a, b = np.nonzero(~np.eye(n_classes, dtype=bool))
        values = np.stack([nearest_counts[a, b], met[a, b], np.ones(len(a), dtype=np.int64)], axis=1)
        self._pairs.append(((classes[a] << 32) | classes[b], values))
        self._anchors.append((classes, np.bincount(of_anchor[has_negative], minlength=n_classes)))
        self._pending += len(a)
        if self._pending > _CONSOLIDATE_ROWS:
            self._consolidate()

    def _consolidate(self) -> None:
        self._pairs = [_sum_by_code(self._pairs)] if self._pairs else []
        self._anchors = [_sum_by_code(self._anchors)] if self._anchors else []
        self._pending = len(self._pairs[0][0]) if self._pairs else 0

    def rows(self, epoch: int, class_names: Sequence[str]) -> list[dict[str, Any]]:
        """The epoch's rows, pairs with nearest > 0, most nearest negatives first (then by name)."""
        self._consolidate()
        if not self._pairs:
            return []
        codes, values = self._pairs[0]
        anchors = dict(zip(*(part.tolist() for part in self._anchors[0])))
        rows = []
        for code, (nearest, met, batches) in zip(codes.tolist(), values.tolist()):
            if nearest <= 0:
                continue
            a, b = code >> 32, code & 0xFFFFFFFF
            rows.append({"epoch": int(epoch), "anchor_label": str(class_names[a]), "negative_label": str(class_names[b]),
                         "nearest": int(nearest), "met": int(met), "batches": int(batches), "anchors": int(anchors.get(a, 0))})
        return sorted(rows, key=lambda r: (-r["nearest"], r["anchor_label"], r["negative_label"]))


def _sum_by_code(parts: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    codes = np.concatenate([c for c, _ in parts])
    values = np.concatenate([v for _, v in parts])
    unique, inverse = np.unique(codes, return_inverse=True)
    summed = np.zeros((len(unique),) + values.shape[1:], dtype=np.int64)
    np.add.at(summed, inverse, values)
    return unique, summed


# ----------------------------------------------------------------------------- after training


class NearestItems:
    """For each item of a labelled set, by exact search over all the others: its nearest item
    (``nearest``), nearest item of another class (``negative``) and of its own class
    (``positive``), as item indices (-1: none) with their distances (``*_distance``, NaN: none)."""

    def __init__(self, n: int) -> None:
        self.nearest, self.negative, self.positive = (np.full(n, -1, dtype=np.int64) for _ in range(3))
        self.nearest_distance, self.negative_distance, self.positive_distance = (np.full(n, np.nan) for _ in range(3))


def nearest_items(embeddings: np.ndarray, labels: Sequence[Any], *, chunk_elements: int = _SEARCH_ELEMENTS) -> NearestItems:
    """:class:`NearestItems` of ``embeddings`` (N, D; normalised here) with ``labels`` (N,), in
    chunks of query rows so memory stays at ``chunk_elements`` similarities."""
    x = np.asarray(embeddings, dtype=np.float32)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    _, codes = np.unique(np.asarray([str(label) for label in labels]), return_inverse=True)
    n = len(x)
    found = NearestItems(n)
    step = max(1, chunk_elements // max(n, 1))
    for start in range(0, n, step):
        rows = np.arange(start, min(n, start + step))
        sims = x[rows] @ x.T
        sims[np.arange(len(rows)), rows] = -np.inf  # not itself
        same = codes[rows, None] == codes[None, :]
        for kind, masked in (("nearest", sims), ("negative", np.where(same, -np.inf, sims)),
                             ("positive", np.where(same, sims, -np.inf))):
            best = np.argmax(masked, axis=1)
            similarity = masked[np.arange(len(rows)), best]
            ok = np.isfinite(similarity)
            getattr(found, kind)[rows[ok]] = best[ok]
            getattr(found, f"{kind}_distance")[rows[ok]] = np.sqrt(np.maximum(0.0, 2.0 - 2.0 * similarity[ok]))
    return found


def gallery_confusions(embeddings: np.ndarray, labels: Sequence[Any], paths: Sequence[str], *,
                       per_class: int = 3, top_pairs: int = 20) -> dict[str, Any]:
    """The confusions of a labelled set (see the module docstring): ``{"n_items", "n_classes",
    "pairs": [...], "classes": [...]}``, JSON-ready. ``paths`` name the items in the result."""
    if len(embeddings) != len(labels) or len(labels) != len(paths):
        raise ValueError(f"{len(embeddings)} embeddings, {len(labels)} labels and {len(paths)} paths do not match")
    labels = [str(label) for label in labels]
    found = nearest_items(embeddings, labels)
    classes: dict[str, dict[str, Any]] = {}
    pairs: dict[tuple[str, str], dict[str, Any]] = {}
    for item, label in enumerate(labels):
        entry = classes.setdefault(label, {"class": label, "n_items": 0, "n_with_positive": 0, "confused": 0, "nearest_other": []})
        entry["n_items"] += 1
        nearest, negative = int(found.nearest[item]), int(found.negative[item])
        has_positive = found.positive[item] >= 0  # an item alone in its class has no right answer to miss
        entry["n_with_positive"] += int(has_positive)
        if negative < 0:
            continue
        other = labels[negative]
        entry["nearest_other"].append(_link(item, negative, found, labels, paths))
        pair = pairs.setdefault(tuple(sorted((label, other))), {"classes": sorted((label, other)), "confused": 0,
                                                                  "nearest_negative": 0, "closest": None})
        pair["nearest_negative"] += 1
        if has_positive and nearest >= 0 and labels[nearest] != label:
            entry["confused"] += 1
            pair["confused"] += 1
        if pair["closest"] is None or found.negative_distance[item] < pair["closest"]["distance"]:
            pair["closest"] = _link(item, negative, found, labels, paths)
    for entry in classes.values():
        entry["nearest_other"] = sorted(entry["nearest_other"], key=lambda link: link["distance"])[:per_class]
    ranked = sorted(pairs.values(), key=lambda p: (-p["confused"], -p["nearest_negative"], p["closest"]["distance"]))
    return {"n_items": len(labels), "n_classes": len(classes), "pairs": ranked[:top_pairs],
            "classes": sorted(classes.values(), key=lambda c: c["class"])}


def _link(item: int, negative: int, found: NearestItems, labels: Sequence[str], paths: Sequence[str]) -> dict[str, Any]:
    positive = found.positive_distance[item]
    return {"item": str(paths[item]), "label": labels[item], "other": str(paths[negative]), "other_label": labels[negative],
            "item_index": int(item), "other_index": int(negative),  # rows of the embeddings (a face gallery: faces, not photos)
            "distance": float(found.negative_distance[item]), "positive_distance": None if np.isnan(positive) else float(positive)}


def run_confusions(run_dir: str | Path, data_dir: str | Path | None = None, *, per_class: int = 3, top_pairs: int = 20,
                   device: str = "auto", batch_size: int = 64, num_workers: int | None = None, precision: str = "auto",
                   on_progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """:func:`gallery_confusions` of a trained run: over ``data_dir`` (a labelled folder, embedded
    with the run's model and eval transform; paths relative to it) or, without one, over the run's
    indexed gallery (its stored embeddings; paths as ``index/gallery.json`` gives them). Adds
    ``"source"``: the folder, or ``"index"``."""
    if data_dir is None:
        embeddings, labels, paths = _indexed_gallery(run_dir)
        source = "index"
    else:
        embeddings, labels, paths = _embedded_folder(run_dir, Path(data_dir), device=device, batch_size=batch_size,
                                                     num_workers=num_workers, precision=precision, on_progress=on_progress)
        source = str(Path(data_dir))
    if len(set(labels)) < 2:
        raise RetrievalError(f"{source if data_dir is not None else 'the indexed gallery'}: confusions need two or more classes")
    return {"source": source, **gallery_confusions(embeddings, labels, paths, per_class=per_class, top_pairs=top_pairs)}


def _indexed_gallery(run_dir: str | Path) -> tuple[np.ndarray, list[str], list[str]]:
    from retrieval.index import GalleryIndex

    index = GalleryIndex.load(run_dir, load_model=False)
    labels = list(index.labels)
    unlabelled = sum(label is None or str(label) in ("", "-1") for label in labels)
    if unlabelled:
        what = ("has no labels (a flat folder)" if unlabelled == len(labels) else
                f"has {unlabelled} of its {len(labels)} items without a label (added from a flat folder), and confusions "
                "need every item labelled")
        raise RetrievalError(f"{run_dir}: the indexed gallery {what}; give a labelled "
                             f"DATA_DIR: `retrieval confusions {run_dir} DATA_DIR`")
    paths = index.relative_paths if len(index.roots) == 1 else [str(p) for p in index.paths]
    paths = [f"{path}{index.face_suffix(i)}" for i, path in enumerate(paths)]  # a face index: which face of the photo
    return np.asarray(index.embeddings, dtype=np.float32), [str(label) for label in labels], paths


def _embedded_folder(run_dir, data_dir: Path, **options) -> tuple[np.ndarray, list[str], list[str]]:
    from retrieval.data import build_transforms, scan_folder
    from retrieval.embed import embed_readable
    from retrieval.model import resolve_device
    from retrieval.run import load_model

    folder = scan_folder(data_dir, labelled=True)
    names = [folder.relative_path(i) for i in range(len(folder.paths))]
    device = resolve_device(options.pop("device"))
    model, config = load_model(run_dir, device=device)
    from retrieval.faces.run_faces import face_folder, scratch_pipeline

    with scratch_pipeline(run_dir, config) as pipeline:  # a face run's crops of DATA_DIR: only while they are embedded
        if pipeline is not None:  # a face run embeds each image's most confident face, as `retrieval evaluate` does
            photos = list(folder.paths)
            folder, missing = face_folder(folder, pipeline, "DATA_DIR")
            skipped = {*missing, *folder.skipped}  # photos without a face or unreadable, left out with a warning
            names = [name for name, photo in zip(names, photos) if photo not in skipped]
        embeddings, kept = embed_readable(model, folder.paths, build_transforms(config.data_config, train=False),
                                          device=device, **options)
    labels = [folder.class_names[folder.labels[i]] for i in kept]
    return embeddings, labels, [names[i] for i in kept]
