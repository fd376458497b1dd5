"""Opening and searching a built index: :class:`GalleryIndex`, its :class:`Neighbour` results,
and :func:`exact_search`, the brute-force reference over the stored embeddings.

``GalleryIndex.load(run_dir)`` opens ``RUN_DIR/index/`` (Annoy memory-maps its file, the embeddings
are a read-only memory map) with the run's model and eval transform, after checking that the index
was built by the run's model, that its files are those its build wrote (full SHA-256) and that
the Annoy file is sound node by node (:func:`~retrieval.index.annoy_file.check_annoy_file`), all
read from one commit of the index (:mod:`retrieval.run.versions`); ``.search(query, k)`` takes a
PIL image, an image path or an embedding. Item paths become files only through
:func:`retrieval.run.resolve_logged_path` (inside their root; the roots checked, or given anew
with ``gallery_roots`` for a run moved from another machine).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from retrieval.errors import RetrievalError
from retrieval.index.annoy_file import check_annoy_file, open_annoy, search_k_for
from retrieval.index.metadata import read_index_metadata, verify_file

if TYPE_CHECKING:  # torch is imported where it is used: building an index from vectors needs none
    import torch

__all__ = ["GalleryIndex", "Neighbour", "exact_search", "load_model_and_transform", "row_distances", "unfound_roots"]


@dataclass(frozen=True)
class Neighbour:
    """One search result: the gallery image, its label (None in a flat gallery), the distance
    d = ||q - x|| between unit embeddings (0 to 2) and the cosine similarity 1 - d^2 / 2."""

    path: str
    label: str | None
    distance: float
    similarity: float
    item: int
    match: bool | None = None  # d ≤ τ, the run's threshold (None: the run has none)

    def to_json(self) -> dict[str, Any]:
        """The ``retrieval search --json`` record: path, label, distance, similarity, match."""
        return {"path": self.path, "label": self.label, "distance": self.distance,
                "similarity": self.similarity, "match": self.match}


class GalleryIndex:
    """A run's gallery index, opened once: the Annoy index (memory-mapped), the stored
    embeddings (memory-mapped), the item paths and labels, and the model with its eval transform.

    Use :meth:`load`; then :meth:`search` a PIL image, an image path or an embedding, and
    :meth:`verdict` on the result (the run's threshold τ: match, or not in the gallery).
    """

    def __init__(self, run_dir: Path, metadata: dict[str, Any], annoy_index, embeddings: np.ndarray,
                 model: "torch.nn.Module | None", transform: Callable | None,
                 device: "torch.device", precision: str, *, files: dict[str, Path] | None = None,
                 roots: list[Path] | None = None) -> None:
        self.run_dir = run_dir
        self.metadata = metadata
        self.files = files or {}  # where each of the index's files was read from (one commit)
        self.embeddings = embeddings
        self._annoy = annoy_index
        self.model = model
        self.transform = transform
        self.device = device
        self.precision = precision
        items = metadata["items"]
        self.roots = roots if roots is not None else [Path(root) for root in metadata["roots"]]
        self.relative_paths: list[str] = items["path"]
        self.labels: list[str | None] = items["label"]
        self._item_roots: list[int] = items["root"]
        self.threshold = None  # the run's verification threshold (retrieval.verification.Threshold), set by load

    @classmethod
    def load(cls, run_dir: str | Path, *, device: str | torch.device = "cpu",
             precision: str = "auto", load_model: bool = True,
             gallery_roots: list[str | Path] | None = None) -> "GalleryIndex":
        """Open ``RUN_DIR/index/`` and, with ``load_model``, the run's model and eval transform.

        ``precision`` is the query's forward-pass precision (as ``retrieval.model.autocast``;
        ``auto`` picks what the build picked on the same kind of device). ``gallery_roots``
        replace the roots that ``gallery.json`` records, one for each, in order (a run moved from
        another machine: ``--gallery-root``).

        Raises RetrievalError when there is no index, when it was built by another model (its
        fingerprint or dimension differs from the run's), when its files are damaged or do not
        belong together, or when a root may not be one (:func:`retrieval.run.check_root`).
        """
        from retrieval.model import resolve_device
        from retrieval.run import INDEX_UNIT, index_dir, read_config, read_unit

        run_dir = Path(run_dir)
        config = read_config(run_dir)
        metadata, annoy_index, embeddings, files = read_unit(
            index_dir(run_dir), INDEX_UNIT, lambda paths: _open_files(run_dir, config, paths))
        try:
            roots = _roots(run_dir, metadata, gallery_roots)
        except RetrievalError:
            annoy_index.unload()
            raise
        torch_device = resolve_device(device) if isinstance(device, str) else device
        model = transform = None
        if load_model:
            model, transform = load_model_and_transform(run_dir, torch_device)
        index = cls(run_dir, metadata, annoy_index, embeddings, model, transform, torch_device, precision,
                    files=files, roots=roots)
        index.threshold = config.threshold
        return index

    def __len__(self) -> int:
        return len(self.relative_paths)

    @property
    def embedding_dim(self) -> int:
        return int(self.metadata["embedding_dim"])

    @property
    def n_trees(self) -> int:
        return int(self.metadata["n_trees"])

    @property
    def paths(self) -> list[Path]:
        """Absolute image path of every item, in item order."""
        return [self.path(i) for i in range(len(self))]

    def unfound_roots(self) -> list[Path]:
        """The gallery folders where none of their first items is found (:func:`unfound_roots`): moved
        since the build, or gone; their items are still searched, but their images cannot be shown."""
        return [self.roots[number] for number in unfound_roots(self.roots, self._item_roots, self.relative_paths)]

    def path(self, item: int) -> Path:
        """Absolute path of one item's image: under its root, symbolic links followed
        (:func:`retrieval.run.resolve_logged_path`; RetrievalError for a path that leaves it)."""
        from retrieval.run import METADATA_NAME, index_dir, resolve_logged_path

        return resolve_logged_path(self.roots[self._item_roots[item]], self.relative_paths[item],
                                   source=index_dir(self.run_dir) / METADATA_NAME)

    @property
    def shown_root(self) -> Path | None:
        """The folder that tables print paths relative to: the gallery folder, or the folder that
        holds all of an index's gallery folders (``index --add OTHER``); None when they share none
        but the file system's root (paths are then printed whole)."""
        common = Path(os.path.commonpath([str(root) for root in self.roots]))
        return None if common == Path(common.anchor) else common

    def shown_path(self, item: int) -> str:
        """An item's path as tables print it: relative to :attr:`shown_root` ("apple/3.png" for one
        gallery folder, "catalog/apple/0.png" beside "test/…" for two under one folder), else whole."""
        path = self.roots[self._item_roots[item]] / self.relative_paths[item]
        root = self.shown_root
        return (path if root is None else path.relative_to(root)).as_posix()

    def face_suffix(self, item: int) -> str:
        """" · face N" to follow an item's photo name in a face gallery ("003.jpg · face 2": a photo's
        faces are numbered from 1, most confident first); "" in an index of whole images."""
        face = self.face(item)
        return "" if face is None else f" · face {int(face.get('face', 0)) + 1}"

    def face(self, item: int) -> dict[str, Any] | None:
        """A face run's item: its face's record (``box`` [x0, y0, x1, y1] in its photo's pixels,
        ``score``, ``face``: its rank in the photo, ``sha256``: the photo's content); None in an
        index of whole images."""
        faces = self.metadata["items"].get("face")
        return None if faces is None else dict(faces[item])

    @property
    def has_faces(self) -> bool:
        """Whether the items are faces (an index of a ``--faces`` run)."""
        return "face" in self.metadata["items"]

    def embed(self, image) -> np.ndarray:
        """The unit embedding (D,) of a PIL image or an image file, with the run's eval transform."""
        from PIL import Image

        from retrieval.data import MAX_QUERY_PIXELS, load_image
        from retrieval.embed import embed_images

        if self.model is None:
            self.model, self.transform = load_model_and_transform(self.run_dir, self.device)
        if not isinstance(image, Image.Image):
            image = load_image(Path(image), max_pixels=MAX_QUERY_PIXELS)  # a query: the queries' limit
        return embed_images(self.model, [image], self.transform, device=self.device, precision=self.precision)[0]

    def search(self, query, k: int = 10, *, exact: bool = False,
               search_k: int | None = None) -> list[Neighbour]:
        """The ``k`` nearest gallery items of ``query``: a PIL image, an image path, or an
        embedding (D,) (normalised here). Annoy with ``search_k`` (default :func:`search_k_for`),
        or brute force over the stored embeddings with ``exact=True``."""
        if k < 1:
            raise RetrievalError(f"k must be at least 1, got {k}")
        if search_k is not None and search_k < 1:  # Annoy reads -1 as its default and 0 as "look at nothing"
            raise RetrievalError(f"--search-k must be at least 1 (the Annoy nodes to inspect), got {search_k}")
        vector = self._query_vector(query)
        k = min(int(k), len(self))
        if exact:
            ids, distances = exact_search(self.embeddings, vector, k)
        else:
            if search_k is None:
                search_k = search_k_for(k, self.n_trees)
            ids = self._annoy.get_nns_by_vector(vector.tolist(), k, search_k=int(search_k))
            # Annoy's own distances are sqrt(2 - 2 cos) in float32 (about 1e-3 off near 0):
            # take ||q - x|| from the stored rows instead, as exact search does.
            distances = row_distances(self.embeddings, np.asarray(ids, dtype=np.int64), vector)
        return [self._neighbour(int(i), float(d)) for i, d in zip(ids, distances)]

    def verdict(self, neighbours: list[Neighbour]):
        """Open-set identification at the run's τ (:func:`retrieval.verification.open_set_verdict`)."""
        from retrieval.verification import open_set_verdict

        nearest = (neighbours[0].label, neighbours[0].distance) if neighbours else None
        verdict = open_set_verdict(nearest, self.threshold)
        if not verdict.match:
            return verdict
        face = self.face(neighbours[0].item)
        return replace(verdict, path=str(neighbours[0].path), face=None if face is None else int(face.get("face", 0)))

    def close(self) -> None:
        """Release the memory maps."""
        self._annoy.unload()
        self.embeddings = None

    def _query_vector(self, query) -> np.ndarray:
        if type(query).__module__.startswith("torch"):  # a tensor; torch is imported lazily
            query = query.detach().float().cpu().numpy()
        if isinstance(query, np.ndarray):
            vector = np.asarray(query, dtype=np.float32).reshape(-1)
            if vector.shape != (self.embedding_dim,):
                raise RetrievalError(f"query embedding has {vector.size} values, the index has "
                                     f"dimension {self.embedding_dim}")
        else:
            vector = self.embed(query)
        norm = float(np.linalg.norm(vector))
        if not math.isfinite(norm) or norm == 0.0:
            raise RetrievalError("query embedding is zero or not finite")
        return vector / norm

    def _neighbour(self, item: int, distance: float) -> Neighbour:
        return Neighbour(
            path=str(self.path(item)),
            label=self.labels[item],
            distance=distance,
            similarity=1.0 - distance * distance / 2.0,
            item=item,
            match=None if self.threshold is None else distance <= self.threshold.threshold,
        )


def exact_search(
    embeddings: np.ndarray, query: np.ndarray, k: int, *, chunk_rows: int = 262_144
) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest rows of ``embeddings`` (unit rows, possibly memory-mapped) to one unit
    ``query`` vector, by chunked matrix products. Returns (item ids, distances), nearest first;
    distances are ||query - row|| (= sqrt(2 - 2 cos), Annoy's angular distance), in float64."""
    n = len(embeddings)
    k = min(int(k), n)
    query = np.asarray(query, dtype=np.float32).reshape(-1)
    best_ids = np.empty(0, dtype=np.int64)
    best_sims = np.empty(0, dtype=np.float32)
    for start in range(0, n, chunk_rows):
        sims = np.asarray(embeddings[start : start + chunk_rows]) @ query
        take = min(k, len(sims))
        top = np.argpartition(-sims, take - 1)[:take] if take < len(sims) else np.arange(len(sims))
        best_ids = np.concatenate([best_ids, top + start])
        best_sims = np.concatenate([best_sims, sims[top]])
        if len(best_ids) > k:
            keep = np.argpartition(-best_sims, k - 1)[:k]
            best_ids, best_sims = best_ids[keep], best_sims[keep]
    best_ids = best_ids[np.lexsort((best_ids, -best_sims))]
    # ||q - x|| from the rows themselves: sqrt(2 - 2 cos) in float32 loses precision near 0.
    return best_ids, row_distances(embeddings, best_ids, query)


def row_distances(embeddings: np.ndarray, ids: np.ndarray, query: np.ndarray) -> np.ndarray:
    """float64 ||query - embeddings[i]|| for each i in ``ids`` (read in sorted order from a memory map)."""
    if len(ids) == 0:
        return np.empty(0)
    rows = np.asarray(embeddings[np.sort(ids)], dtype=np.float64)[np.argsort(np.argsort(ids))]
    return np.linalg.norm(rows - np.asarray(query, dtype=np.float64), axis=1)


def load_model_and_transform(run_dir: Path, device: torch.device):
    """The run's model (eval mode, on ``device``) and its eval transform."""
    from retrieval.data import build_transforms
    from retrieval.run import load_model

    model, config = load_model(run_dir, device=device)
    return model, build_transforms(config.data_config, train=False)


def _open_files(run_dir: Path, config, paths: dict[str, Path | None]):
    """(metadata, the opened Annoy index, the embeddings' memory map, the paths) of one commit
    of the index, each file checked before it is opened (see :meth:`GalleryIndex.load`)."""
    from retrieval.run import ANN_NAME, EMBEDDINGS_NAME, METADATA_NAME, index_dir

    folder = index_dir(run_dir)
    metadata = read_index_metadata(run_dir, path=paths[METADATA_NAME])
    _check_built_by_the_runs_model(run_dir, metadata, config)
    dim, n_items = int(metadata["embedding_dim"]), int(metadata["n_items"])
    for name in (ANN_NAME, EMBEDDINGS_NAME):
        if name not in metadata["files"]:
            raise RetrievalError(f"{folder / METADATA_NAME}: no check of {name}; rebuild with `retrieval index`")
        path = paths[name]
        if path is None or not path.is_file():
            raise RetrievalError(f"{folder / name} is missing; rebuild the index with `retrieval index {run_dir} GALLERY_DIR`")
    ann_sha256 = check_annoy_file(paths[ANN_NAME], dim, n_items, shown=folder / ANN_NAME)  # before Annoy maps it
    verify_file(paths[ANN_NAME], metadata["files"][ANN_NAME], run_dir, sha256=ann_sha256)
    verify_file(paths[EMBEDDINGS_NAME], metadata["files"][EMBEDDINGS_NAME], run_dir)
    try:
        embeddings = np.load(paths[EMBEDDINGS_NAME], mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as error:
        raise RetrievalError(f"{folder / EMBEDDINGS_NAME}: not a float32 array ({error}); rebuild with `retrieval index`") from error
    if embeddings.shape != (n_items, dim) or embeddings.dtype != np.float32:
        raise RetrievalError(f"{folder / EMBEDDINGS_NAME}: shape {embeddings.shape} does not "
                             f"match {METADATA_NAME}; rebuild with `retrieval index`")
    annoy_index = open_annoy(paths[ANN_NAME], dim)
    if annoy_index.get_n_items() != n_items:
        raise RetrievalError(f"{folder / ANN_NAME}: {annoy_index.get_n_items()} items, "
                             f"{METADATA_NAME} lists {n_items}; rebuild with `retrieval index`")
    return metadata, annoy_index, embeddings, paths


def _roots(run_dir: Path, metadata: dict[str, Any], gallery_roots: list[str | Path] | None) -> list[Path]:
    """The index's roots, checked (:func:`retrieval.run.check_root`), or the user's in their place."""
    from retrieval.run import METADATA_NAME, check_root, given_root, index_dir

    recorded = metadata["roots"]
    listed = metadata["items"]
    if not gallery_roots:
        roots = [check_root(root, source=index_dir(run_dir) / METADATA_NAME) for root in recorded]
        for number in unfound_roots(roots, listed["root"], listed["path"]):  # moved since the build: say where to point it
            logging.getLogger("retrieval").warning(
                "gallery folder %s: none of the first gallery images the index lists for it is there: if it moved, give "
                "its new place with --gallery-root (the neighbours come from the index; their images cannot be shown "
                "or opened)", roots[number])
        return roots
    roots = [given_root(root, "--gallery-root") for root in gallery_roots]
    if len(roots) != len(recorded):
        if {str(root) for root in roots} <= set(recorded):  # roots the index records already (`index --add --gallery-root`)
            return _roots(run_dir, metadata, None)
        raise RetrievalError(f"--gallery-root: the index has {len(recorded)} gallery folder(s) "
                             f"({', '.join(recorded)}); give one --gallery-root for each, in that order")
    for number in unfound_roots(roots, listed["root"], listed["path"]):  # likely the wrong folder, or one level off
        logging.getLogger("retrieval").warning(
            "--gallery-root %s: none of the first gallery images the index lists for it is there: is it the folder the "
            "index was built from?", gallery_roots[number])
    return roots


def unfound_roots(roots: Sequence[Path], item_roots: Sequence[int], relative_paths: Sequence[str],
                  looked_at: int = 20) -> list[int]:
    """The numbers of the ``roots`` under which none of the first ``looked_at`` items the index lists
    for them is a file: a gallery folder that moved or went (or a ``--gallery-root`` one level off).
    A few file checks a root, not a walk of the gallery."""
    first: dict[int, list[str]] = {}
    for root, path in zip(item_roots, relative_paths):
        if len(first.setdefault(root, [])) < looked_at:
            first[root].append(path)
    return [number for number, paths in sorted(first.items()) if not any((roots[number] / path).is_file() for path in paths)]


def _check_built_by_the_runs_model(run_dir: Path, metadata: dict[str, Any], config) -> None:
    """RetrievalError when the index's dimension or model fingerprint differs from the run's model
    (``config``, its RunConfig)."""
    from retrieval.run import index_dir, model_fingerprint

    dim = int(metadata["embedding_dim"])
    if dim != config.embedding_dim:
        raise RetrievalError(
            f"{index_dir(run_dir)} was built by another model (embedding dimension {dim}, the run's model "
            f"has {config.embedding_dim}); rebuild it with `retrieval index {run_dir} GALLERY_DIR`"
        )
    if metadata["model_fingerprint"] != model_fingerprint(run_dir):
        raise RetrievalError(
            f"{index_dir(run_dir)} was built by another model (fingerprint {metadata['model_fingerprint']}, "
            f"the run's model is {model_fingerprint(run_dir)}); rebuild it with "
            f"`retrieval index {run_dir} GALLERY_DIR`"
        )
