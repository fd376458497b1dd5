"""Retrieval metrics: Recall@K, Precision@10 and MAP@R for a query set against a gallery.

Definitions follow Musgrave et al. 2020, "A Metric Learning Reality Check". For each query the
gallery is ranked by Euclidean distance between L2-normalised embeddings (equivalently by cosine
similarity, highest first), exactly, by chunked brute force:

- ``recall_at_K``: the fraction of queries with at least one same-class item among their K nearest.
- ``precision_at_10``: the mean over queries of (same-class items among the 10 nearest) / 10.
- ``map_at_r``: with R the number of same-class items in the gallery for that query (not counting
  the query itself in leave-one-out), the mean over queries of
  (1 / R) * sum_{i=1..R} P(i) * rel(i), where rel(i) is 1 when the i-th nearest item is
  same-class and P(i) is the precision among the i nearest.

Without a gallery, every query is searched against all the other queries (leave-one-out: the
query itself is never its own neighbour). With a gallery, queries and gallery are separate sets
(cross-set, e.g. shop photos against catalogue images). A query with R = 0 (no same-class item to
find) has no defined MAP@R and is left out of every metric; ``n_skipped_queries`` counts them.

Public names: :func:`retrieval_metrics` (embeddings in, metrics out), :func:`evaluate_run`
(a run directory and image folders in, metrics out, verification included: EER, TAR at FAR and the
rates at the run's threshold, :mod:`retrieval.verification`), :func:`calibrate_run` (choose and
store the run's threshold τ from a labelled folder) and :func:`verify_images` / :func:`verify_pair` (two
images at the run's τ: same or different).
"""

from __future__ import annotations

import logging
import os
import unicodedata
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from retrieval.batch_inputs import embedding_rows, require_labels
from retrieval.errors import RetrievalError
from retrieval.folder_caveats import MEMORISED_FIGURES, shared_images, warn_when_one_class, warn_when_trained_on

__all__ = ["retrieval_metrics", "with_misses", "evaluate_run", "calibrate_run", "verify_images", "verify_pair", "PRECISION_K", "METRIC_KEYS"]

logger = logging.getLogger("retrieval")

PRECISION_K = 10
"""Precision is reported at this rank (``precision_at_10``)."""

METRIC_KEYS = (
    "recall_at_1",
    "recall_at_5",
    "recall_at_10",
    "precision_at_10",
    "map_at_r",
    "n_queries",
)
"""The keys of ``retrieval evaluate --json`` (DESIGN.md), all present with the default ``ks``."""

# Similarity-matrix elements per chunk when chunk_size is not given (64 Mi float32 = 256 MiB).
_CHUNK_ELEMENTS = 1 << 26


def retrieval_metrics(
    query_embeddings: np.ndarray | torch.Tensor,
    query_labels: Sequence[int] | np.ndarray | torch.Tensor,
    gallery_embeddings: np.ndarray | torch.Tensor | None = None,
    gallery_labels: Sequence[int] | np.ndarray | torch.Tensor | None = None,
    *,
    ks: Sequence[int] = (1, 5, 10),
    chunk_size: int | None = None,
) -> dict[str, float | int]:
    """Recall@K for each K in ``ks``, Precision@10 and MAP@R, computed exactly.

    Embeddings are (N, D) arrays or tensors; they are L2-normalised here (a no-op for a model's
    output), so ranking by dot product equals ranking by the training distance; a row holding NaN or
    inf is a ValueError. Labels are class ids or class names, compared for equality (1 and 1.0
    are one class); in cross-set mode query and gallery labels must be in one numbering (the same
    names, or indices into a shared list of class names).

    ``chunk_size`` queries are ranked at a time (default: as many as keep the similarity chunk
    near 256 MiB), so memory stays bounded for large sets.

    Returns ``recall_at_K`` per K, ``precision_at_10``, ``map_at_r`` (floats), ``n_queries``
    (queries that count) and ``n_skipped_queries`` (queries with no same-class gallery item).
    Raises :class:`RetrievalError` when no query has a same-class item to find.
    """
    leave_one_out = gallery_embeddings is None
    if leave_one_out != (gallery_labels is None):
        raise ValueError("give both gallery_embeddings and gallery_labels, or neither")
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1:
        raise ValueError(f"ks must be positive integers, got {ks}")

    queries, q_labels, gallery, g_labels = _query_and_gallery_sets(
        query_embeddings, query_labels, gallery_embeddings, gallery_labels
    )
    n_relevant = _same_class_counts(q_labels, g_labels) - int(leave_one_out)
    counted = n_relevant > 0
    n_queries = int(counted.sum())
    n_skipped = len(queries) - n_queries
    if n_queries == 0:
        raise RetrievalError(
            "no query has a same-class item in the gallery: nothing to evaluate "
            + ("(each class needs at least two images for leave-one-out)" if leave_one_out
               else "(no query class is among the gallery's classes: classes are matched by label, in `retrieval "
                    "evaluate` by folder name)")
        )
    if chunk_size is None:
        chunk_size = max(1, min(4096, _CHUNK_ELEMENTS // max(1, len(gallery))))

    hits, precision_sum, map_sum = _sum_over_queries(
        queries, q_labels, gallery, g_labels, np.flatnonzero(counted), n_relevant,
        ks=ks, chunk_size=chunk_size, leave_one_out=leave_one_out,
    )
    metrics: dict[str, float | int] = {f"recall_at_{k}": hits[k] / n_queries for k in ks}
    metrics["precision_at_10"] = precision_sum / n_queries
    metrics["map_at_r"] = map_sum / n_queries
    metrics["n_queries"] = n_queries
    metrics["n_skipped_queries"] = n_skipped
    return metrics


def evaluate_run(
    run_dir: Path | str,
    data_dir: Path | str | None = None,
    *,
    query_dir: Path | str | None = None,
    gallery_dir: Path | str | None = None,
    batch_size: int = 64,
    device: str = "auto",
    num_workers: int | None = None,
    precision: str = "auto",
    on_progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, Any]:
    """Embed labelled folders with a run's model and eval transform, and compute the metrics.

    Give ``data_dir`` for leave-one-out over one labelled folder, or ``query_dir`` and
    ``gallery_dir`` for one set against another; classes are matched by folder name across the
    two sets. Unreadable images are skipped with a warning. ``precision`` is the forward pass's
    (``retrieval.model.autocast``). ``on_progress(stage, done, total)`` is called as a face run
    searches the images for faces (stage ``"detect"``) and as images are embedded (``"embed"``),
    both sets counted together.

    Besides the ranking metrics: verification on the same pairs (every pair of ``data_dir``, or
    every query × gallery pair; :mod:`retrieval.verification`): ``eer``, ``tar_at_far``,
    ``n_positive_pairs``, ``n_negative_pairs``, and ``far_at_threshold`` / ``frr_at_threshold``
    at the run's threshold τ (None when the run has none).
    """
    from retrieval.verification import pair_distances, rates_at, summarise

    if not check_folder_arguments(data_dir, query_dir, gallery_dir):  # before any warning about the folders
        warn_when_trained_on(run_dir, data_dir, MEMORISED_FIGURES)
    else:  # the queries' classes that the gallery holds: a trained class only in the gallery is a distractor
        warn_when_trained_on(run_dir, query_dir, MEMORISED_FIGURES, gallery_dir=gallery_dir)
    config, sets, n_no_face = _embed_labelled_sets(run_dir, data_dir, query_dir, gallery_dir, batch_size=batch_size,
                                        device=device, num_workers=num_workers, precision=precision, on_progress=on_progress)
    metrics: dict[str, Any] = dict(retrieval_metrics(*sets[0], *(sets[1] if len(sets) > 1 else (None, None))))
    # after the metrics: a folder with nothing to evaluate is refused in one line, without this warning ahead of it
    warn_when_one_class((sets[1] if len(sets) > 1 else sets[0])[1], gallery_dir if gallery_dir is not None else data_dir)
    if config.faces is not None:  # a face run: the queries whose face was not found are misses, never dropped
        metrics = with_misses(metrics, n_no_face)
    pairs = pair_distances(*sets[0], *(sets[1] if len(sets) > 1 else (None, None)))
    metrics.update(summarise(pairs, target_far=None).metrics())
    threshold = config.threshold
    far = frr = None
    if threshold is not None and pairs.n_positive and pairs.n_negative:
        far, frr = rates_at(threshold.threshold, pairs.positive, pairs.negative)
    metrics.update(threshold=None if threshold is None else threshold.threshold, far_at_threshold=far, frr_at_threshold=frr)
    return metrics


def with_misses(metrics: dict[str, Any], n_missed: int) -> dict[str, Any]:
    """``metrics`` of the queries that could be searched, with ``n_missed`` more queries that found
    nothing (a face run's queries without a face): each ranking metric m over n queries becomes
    m · n / (n + n_missed) (a miss scores 0 on every one), ``n_queries`` counts them all and
    ``n_no_face`` says how many missed."""
    counted = int(metrics["n_queries"])
    total = counted + int(n_missed)
    scaled = {key: (value * counted / total if total else 0.0) for key, value in metrics.items()
              if key.startswith(("recall_at_", "precision_at_")) or key == "map_at_r"}
    return {**metrics, **scaled, "n_queries": total, "n_no_face": int(n_missed)}


def calibrate_run(
    run_dir: Path | str,
    data_dir: Path | str,
    *,
    target_far: float = 0.01,
    batch_size: int = 64,
    device: str = "auto",
    num_workers: int | None = None,
    precision: str = "auto",
    on_progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, Any]:
    """Choose the run's threshold τ on every pair of a labelled folder at ``target_far`` and store it
    in ``config.json`` (``"verification"``); returns what was stored. The folder's classes should be
    ones the model did not train on, or τ will be optimistic. ``on_progress``: as :func:`evaluate_run`'s."""
    from retrieval.verification import few_pairs_caveat, pair_distances, summarise

    if not 0 < target_far < 1:
        raise RetrievalError(f"--target-far must be between 0 and 1, got {target_far}")
    if Path(run_dir).is_dir() and not os.access(run_dir, os.W_OK):  # before the embedding, not after it
        raise RetrievalError(f"cannot write {run_dir} (a read-only folder or file system): calibrate stores τ in its config.json")
    warn_when_trained_on(run_dir, data_dir)
    config, sets, n_no_face = _embed_labelled_sets(run_dir, data_dir, None, None, batch_size=batch_size, device=device,
                                                num_workers=num_workers, precision=precision, on_progress=on_progress,
                                                purpose="calibration")
    pairs = pair_distances(*sets[0])
    if not pairs.n_positive or not pairs.n_negative:
        left_out = f", once the {n_no_face} image(s) without a face found are left out" if n_no_face else ""
        raise RetrievalError(f"{data_dir}: calibration needs two or more classes, one with two or more images{left_out}")
    summary = summarise(pairs, target_far=target_far)
    if summary.threshold is None:  # nothing is written: the stored τ stays as it was
        raise RetrievalError(f"{data_dir}: {summary.no_threshold}")
    if caveat := few_pairs_caveat(summary.threshold):
        logger.warning("%s gives %s (a folder of more or larger classes gives a firmer τ)", data_dir, caveat)
    verification = {**summary.threshold.to_json(), "eer": summary.eer,
                    "pairs": f"every pair of {Path(data_dir).resolve()} (retrieval calibrate)"}
    config.updated(verification=verification).write(run_dir)
    return verification


def verify_images(run_dir: Path | str, image_a: Path | str, image_b: Path | str, *, device: str = "cpu",
                  precision: str = "auto", look_harder: bool = False,
                  faces: tuple[int | None, int | None] = (None, None)) -> dict[str, Any]:
    """Are two image files the same identity / product? Loads the run's model and answers
    :func:`verify_pair`'s dict for them. A face run compares each image's most confident face
    (ties: the larger box), or the face ``faces`` picks for it (from 0, most confident first, as
    ``search`` numbers them; None: the most confident), and adds ``"faces"``: for each image the
    compared face's ``box``, ``score`` and ``face`` and ``n_faces``, how many faces were found in it;
    ``look_harder``: found by the run's pipeline looking harder
    (:meth:`~retrieval.faces.FacePipeline.harder`). Either is an error for a run without faces."""
    from retrieval.data import MAX_QUERY_PIXELS, load_image
    from retrieval.model import resolve_device
    from retrieval.run import load_model

    images = [load_image(Path(image_a), max_pixels=MAX_QUERY_PIXELS), load_image(Path(image_b), max_pixels=MAX_QUERY_PIXELS)]
    torch_device = resolve_device(device)
    model, config = load_model(run_dir, device=torch_device)
    if config.faces is None:
        if look_harder:
            from retrieval.faces.detect import LOOK_HARDER_WITHOUT_FACES

            raise RetrievalError(LOOK_HARDER_WITHOUT_FACES)
        if any(face is not None for face in faces):
            raise RetrievalError("--face-a / --face-b pick a face of a face run (trained with --faces); this run compares "
                                 "whole images")
        return verify_pair(model, config, images[0], images[1], device=torch_device, precision=precision)
    from retrieval.faces.run_faces import run_pipeline

    pipeline = run_pipeline(run_dir, config)
    if look_harder:
        pipeline = pipeline.harder()
    found = pipeline.faces_many(images)  # each image's faces, most confident first
    picked = [0 if face is None else int(face) for face in faces]
    for path, faces_found, image, pick, flag in zip((image_a, image_b), found, images, picked, ("--face-a", "--face-b")):
        if not faces_found:
            harder = "" if look_harder else f"; {pipeline.settings.look_harder_hint(image.size)}"
            raise RetrievalError(f"{path}: no face found (this run compares faces; {pipeline.settings.no_face_hint(image.size, looked_harder=look_harder)}{harder})")
        if not 0 <= pick < len(faces_found):
            raise RetrievalError(f"{flag} {pick + 1}: {path} has {len(faces_found)} face(s) found, numbered from 1, most "
                                 "confident first (as `retrieval search` numbers them)")
    chosen = [faces_found[pick] for faces_found, pick in zip(found, picked)]
    result = verify_pair(model, config, chosen[0].crop, chosen[1].crop, device=torch_device, precision=precision)
    result["faces"] = [{"box": [round(float(v), 2) for v in face.box], "score": round(float(face.score), 5), "face": pick,
                        "n_faces": len(faces_found)} for face, pick, faces_found in zip(chosen, picked, found)]
    return result


def verify_pair(model, config, image_a, image_b, *, device: Any = "cpu", precision: str = "auto") -> dict[str, Any]:
    """Two decoded images (PIL) against a loaded run's threshold: ``{"distance", "threshold", "same",
    "far", "target_far"}``: d between their unit embeddings, the run's τ, d ≤ τ, and the FAR τ had
    on its pairs with the FAR it was chosen for (the last four None when the run has no threshold:
    no verdict without one)."""
    from retrieval.data import build_transforms
    from retrieval.embed import embed_images

    rows = embed_images(model, [image_a, image_b], build_transforms(config.data_config, train=False), device=device,
                        precision=precision)
    distance = float(np.linalg.norm(rows[0] - rows[1]))
    threshold = config.threshold
    if threshold is None:
        return {"distance": distance, "threshold": None, "same": None, "far": None, "target_far": None}
    return {"distance": distance, "threshold": threshold.threshold, "same": distance <= threshold.threshold,
            "far": threshold.far, "target_far": threshold.target_far}


def _stage_offset(on_progress, stage: str, offset: int, total: int):
    """A (done, total) callback for one folder of several: ``on_progress(stage, offset + done, total)``
    (None when there is no ``on_progress``)."""
    if on_progress is None:
        return None
    return lambda done, _total: on_progress(stage, offset + done, total)


def check_folder_arguments(data_dir, query_dir, gallery_dir) -> bool:
    """Whether the folders ask for cross-set evaluation (``query_dir`` against ``gallery_dir``)
    rather than leave-one-out over ``data_dir``; a one-line RetrievalError when they ask for
    neither, or for both, or give only one of the two sets, or the same folder twice."""
    cross_set = query_dir is not None or gallery_dir is not None
    if cross_set and data_dir is not None:
        raise RetrievalError("give DATA_DIR for leave-one-out, or --query and --gallery, not both")
    if cross_set and (query_dir is None or gallery_dir is None):
        raise RetrievalError("cross-set evaluation needs both --query DIR and --gallery DIR")
    if not cross_set and data_dir is None:
        raise RetrievalError("give DATA_DIR (leave-one-out) or --query DIR --gallery DIR")
    if cross_set and Path(query_dir).resolve() == Path(gallery_dir).resolve():  # before the model is loaded
        raise RetrievalError(f"--query and --gallery are the same folder ({query_dir}): each image would find itself; "
                             f"evaluate it leave-one-out instead: retrieval evaluate RUN_DIR {query_dir}")
    return cross_set


def _embed_labelled_sets(run_dir, data_dir, query_dir, gallery_dir, *, batch_size, device, num_workers, precision,
                         on_progress, purpose: str = "evaluation") -> tuple[Any, list[tuple[np.ndarray, np.ndarray]], int]:
    """The run's config, [(embeddings, labels)] of one folder (leave-one-out) or two (query, gallery),
    labels numbered by class name (NFC) across the sets, and for a face run the number of query images
    without a face (each set then holds each image's most confident face; a set where no face is
    found at all is a one-line RetrievalError). ``purpose``, "evaluation" or "calibration", names
    the one folder in the no-face warning (evaluation counts those images as misses, calibration
    leaves them out)."""
    from retrieval.data import build_transforms, scan_folder
    from retrieval.embed import embed_readable
    from retrieval.model import resolve_device
    from retrieval.run import load_model

    cross_set = check_folder_arguments(data_dir, query_dir, gallery_dir)
    torch_device = resolve_device(device)
    model, config = load_model(run_dir, device=torch_device)
    transform = build_transforms(config.data_config, train=False)

    folders = [scan_folder(Path(d), labelled=True) for d in
               ((query_dir, gallery_dir) if cross_set else (data_dir,))]
    if cross_set and (shared := shared_images(folders[0].paths, folders[1].paths)):
        logger.warning("%d of the %d query image(s) are also in the gallery (the same file content, e.g. %s): each finds "
                       "itself at d = 0, so Recall@K, MAP@R and the pair rates are optimistic; evaluate on disjoint folders, "
                       "or leave-one-out on one", len(shared), len(folders[0].paths), shared[0])
    from retrieval.faces.run_faces import face_folder, scratch_pipeline

    n_no_face = 0
    with scratch_pipeline(run_dir, config) as pipeline:  # a face run's crops of these folders: only while they are embedded
        if pipeline is not None:  # a face run embeds each image's most confident face (retrieval.faces.run_faces)
            searched, to_search, faced = 0, sum(len(f.paths) for f in folders), []
            for folder, what in zip(folders, ("query", "gallery") if cross_set else (purpose,)):
                found, missing = face_folder(folder, pipeline, what, on_progress=_stage_offset(on_progress, "detect", searched, to_search))
                if not found.paths:
                    raise RetrievalError(f"no face found in any of the {len(folder.paths)} {what} image(s) of {folder.root}: a face run "
                                         f"compares faces (it looks for {pipeline.settings.reach()})")
                faced.append((found, missing))
                searched += len(folder.paths)
            folders, n_no_face = [f for f, _ in faced], len(faced[0][1])
        class_ids: dict[str, int] = {}
        total = sum(len(f.paths) for f in folders)
        done = 0
        sets = []
        for folder in folders:
            embeddings, kept = embed_readable(
                model, folder.paths, transform, batch_size=batch_size, device=torch_device,
                num_workers=num_workers, precision=precision, on_progress=_stage_offset(on_progress, "embed", done, total),
            )
            done += len(folder.paths)
            # a class is its folder's name in Unicode's composed form (NFC): "Café" written by macOS
            # (decomposed, NFD) and by Linux or Windows (composed) is one class, as it looks
            labels = np.array(
                [class_ids.setdefault(unicodedata.normalize("NFC", folder.class_names[folder.labels[i]]), len(class_ids))
                 for i in kept],
                dtype=np.int64,
            )
            sets.append((embeddings, labels))
    return config, sets, n_no_face


# ---------------------------------------------------------------------------------------------


def _query_and_gallery_sets(
    query_embeddings: Any, query_labels: Any, gallery_embeddings: Any, gallery_labels: Any
) -> tuple[torch.Tensor, np.ndarray, torch.Tensor, np.ndarray]:
    """Queries and gallery as unit rows and int64 labels; without a gallery, the queries are it."""
    queries = _unit_rows(query_embeddings)
    q_labels = _label_array(query_labels, len(queries), "query")
    if gallery_embeddings is None:
        q_labels = _class_ids(q_labels)[0]
        return queries, q_labels, queries, q_labels
    gallery = _unit_rows(gallery_embeddings)
    g_labels = _label_array(gallery_labels, len(gallery), "gallery")
    if gallery.shape[1] != queries.shape[1]:
        raise ValueError(
            f"query and gallery embeddings differ in dimension: "
            f"{queries.shape[1]} vs {gallery.shape[1]}"
        )
    q_labels, g_labels = _class_ids(q_labels, g_labels)
    return queries, q_labels, gallery, g_labels


def _sum_over_queries(
    queries: torch.Tensor,
    q_labels: np.ndarray,
    gallery: torch.Tensor,
    g_labels: np.ndarray,
    query_ids: np.ndarray,
    n_relevant: np.ndarray,
    *,
    ks: list[int],
    chunk_size: int,
    leave_one_out: bool,
) -> tuple[dict[int, float], float, float]:
    """Over the queries ``query_ids`` (those with R > 0), ranked ``chunk_size`` at a time: the
    number with a same-class item among their K nearest, for each K in ``ks``; the sum of their
    Precision@10; and the sum of their average precision at R."""
    n_candidates = len(gallery) - int(leave_one_out)
    max_k = max(ks[-1], PRECISION_K)
    hits = {k: 0.0 for k in ks}
    precision_sum = 0.0
    map_sum = 0.0
    g_labels_t = torch.from_numpy(g_labels)
    for start in range(0, len(query_ids), chunk_size):
        rows = torch.from_numpy(query_ids[start : start + chunk_size])
        r = torch.from_numpy(n_relevant[rows.numpy()])
        depth = min(n_candidates, max(max_k, int(r.max())))
        relevant = _ranked_relevance(queries, q_labels, gallery, g_labels_t, rows, depth, leave_one_out)

        for k in ks:
            hits[k] += relevant[:, :k].any(dim=1).sum().item()
        # Musgrave et al. divide by K even where fewer than K items exist; so do we.
        precision_sum += relevant[:, :PRECISION_K].sum().item() / PRECISION_K
        map_sum += _average_precision_at_r_sum(relevant, r)
    return hits, precision_sum, map_sum


def _ranked_relevance(
    queries: torch.Tensor,
    q_labels: np.ndarray,
    gallery: torch.Tensor,
    g_labels_t: torch.Tensor,
    rows: torch.Tensor,
    depth: int,
    leave_one_out: bool,
) -> torch.Tensor:
    """(len(rows), depth) bool: is the i-th nearest gallery item of query ``rows[j]`` same-class?
    Nearest first, by cosine similarity; in leave-one-out a query is never its own neighbour."""
    similarity = queries[rows] @ gallery.T
    if leave_one_out:
        similarity[torch.arange(len(rows)), rows] = -torch.inf
    ranked = torch.topk(similarity, depth, dim=1, largest=True, sorted=True).indices
    return g_labels_t[ranked] == torch.from_numpy(q_labels[rows.numpy()])[:, None]


def _average_precision_at_r_sum(relevant: torch.Tensor, r: torch.Tensor) -> float:
    """Sum over the rows of (1 / R) * sum_{i=1..R} P(i) * rel(i), R = ``r`` per row (MAP@R's terms)."""
    ranks = torch.arange(1, relevant.shape[1] + 1, dtype=torch.float64)
    within_r = ranks[None, :] <= r[:, None]
    rel = relevant & within_r
    precision_at_i = rel.cumsum(dim=1) / ranks[None, :]
    return ((precision_at_i * rel).sum(dim=1) / r.double()).sum().item()


def _unit_rows(embeddings: np.ndarray | torch.Tensor) -> torch.Tensor:
    """(N, D) float32 CPU tensor with L2-normalised rows (:func:`retrieval.batch_inputs.embedding_rows`:
    finite values only)."""
    array = embedding_rows(embeddings)
    # a read-only array (an index's memory-mapped embeddings): torch warns on wrapping one, so copy it
    x = torch.from_numpy(array if array.flags.writeable else array.copy())
    return torch.nn.functional.normalize(x, dim=1)


def _label_array(labels: Any, n: int, which: str) -> np.ndarray:
    array = require_labels(labels, f"{which} labels")
    if array.shape != (n,):
        raise ValueError(f"{which} labels must have shape ({n},), got {array.shape}")
    return array


def _class_ids(*label_sets: np.ndarray) -> tuple[np.ndarray, ...]:
    """The label arrays as int64 class ids in one numbering: integer labels as they are; numbers of
    any kind compared as numbers (1 and 1.0 are one class); any other labels (class names, such as a
    gallery index's ``labels``) numbered by their sorted distinct values as text."""
    if all(np.issubdtype(labels.dtype, np.integer) for labels in label_sets):
        return tuple(labels.astype(np.int64) for labels in label_sets)
    if all(np.issubdtype(labels.dtype, np.number) or labels.dtype == np.bool_ for labels in label_sets):
        values = np.unique(np.concatenate([labels.astype(np.float64) for labels in label_sets]))
        return tuple(np.searchsorted(values, labels.astype(np.float64)).astype(np.int64) for labels in label_sets)
    names = [[str(label) for label in labels] for labels in label_sets]
    ids = {name: i for i, name in enumerate(sorted({name for labels in names for name in labels}))}
    return tuple(np.array([ids[name] for name in labels], dtype=np.int64) for labels in names)


def _same_class_counts(query_labels: np.ndarray, gallery_labels: np.ndarray) -> np.ndarray:
    """For each query, the number of gallery items with its label."""
    classes, counts = np.unique(gallery_labels, return_counts=True)
    position = np.searchsorted(classes, query_labels)
    position = np.clip(position, 0, len(classes) - 1)
    found = classes[position] == query_labels
    return np.where(found, counts[position], 0).astype(np.int64)
