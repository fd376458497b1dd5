"""The gallery index: embed a gallery folder once, build an Annoy index over it, search it.

``build_index(run_dir, gallery_dir)`` embeds every image of a gallery (a labelled folder
``<class>/<image>`` or a flat folder of images) with the run's model and eval transform, streams the
embeddings to ``RUN_DIR/index/embeddings.npy`` (a memory-mapped float32 array, so memory does not
grow with the gallery) and builds ``index/gallery.ann``, an Annoy index with the ``angular``
metric, whose distance sqrt(2 - 2 cos) is exactly the training distance between unit embeddings
(DESIGN.md, Distances). ``index/gallery.json`` maps each item id to its image path (relative to its
gallery root) and label, and records the metric, the dimension, the build parameters and the
fingerprint of the model that made the embeddings. ``add_to_index`` appends a folder: Annoy cannot
add items to a built index, so the index is rebuilt from the stored embeddings, and only the new
images are embedded.

Builds are safe to interrupt: everything is written into ``index/.build-<id>/`` and then moved into
place file by file, embeddings first and ``gallery.json`` last. ``gallery.json`` records the build
id and a check (size and a SHA-256 of the first and last MiB) of the two data files, and loading
verifies them, so ``gallery.json`` is never trusted with a ``gallery.ann`` from another build: an
interrupted or failed build leaves the previous index in use, and the only inconsistent state (a
crash between two renames) is reported as such instead of giving wrong neighbours.

``GalleryIndex.load(run_dir)`` opens an index (Annoy memory-maps the file) with its model and
transform, and ``.search(image_or_embedding, k)`` returns :class:`Neighbour` records, by Annoy or,
with ``exact=True``, by brute force over the stored embeddings (the reference).
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import logging
import math
import os
import shutil
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from retrieval.errors import RetrievalError
from retrieval.models import embed_paths  # noqa: F401  (re-exported: the index embeds galleries with it)

if TYPE_CHECKING:  # torch is imported where it is used: building an index from vectors needs none
    import torch

__all__ = [
    "DEFAULT_N_TREES",
    "DEFAULT_SEARCH_K",
    "GalleryIndex",
    "Neighbour",
    "add_to_index",
    "build_annoy",
    "build_index",
    "embed_paths",
    "exact_search",
    "index_exists",
    "read_index_metadata",
    "search_k_for",
]

logger = logging.getLogger("retrieval")

INDEX_DIR = "index"
ANN_NAME = "gallery.ann"
METADATA_NAME = "gallery.json"
EMBEDDINGS_NAME = "embeddings.npy"
METRIC = "angular"
FORMAT_VERSION = 1

DEFAULT_N_TREES = 50
"""Trees per index (``--n-trees``; DESIGN.md). BENCHMARKS.md (index section): at 1M items of
dimension 128 the index is ~1.2 GiB and builds in ~2 min on 2 cores within 1.4 GB peak memory."""

DEFAULT_SEARCH_K = 5_000
"""Annoy ``search_k`` for k = 10 (scaled with k), chosen from BENCHMARKS.md (index section): the
smallest measured value with recall@10 >= 0.999 against exact search at 10k, 100k and 1M items
with 50 trees (p50 ~0.5 ms at 100k). Galleries with fewer than search_k / n_trees = 100 items are
searched exhaustively, so small galleries get exact results."""

# Progress callback: (stage, done, total); stages "embed", "copy", "add", "build".
ProgressCallback = Callable[[str, int, int], None]

_CHECK_BYTES = 1 << 20  # bytes hashed at each end of a data file for its check


@dataclass(frozen=True)
class Neighbour:
    """One search result: the gallery image, its label (None in a flat gallery), the distance
    d = ||q - x|| between unit embeddings (0 to 2) and the cosine similarity 1 - d^2 / 2."""

    path: str
    label: str | None
    distance: float
    similarity: float
    item: int

    def to_json(self) -> dict[str, Any]:
        """The ``retrieval search --json`` record: path, label, distance, similarity."""
        return {"path": self.path, "label": self.label, "distance": self.distance,
                "similarity": self.similarity}


# ----------------------------------------------------------------------------- build


def build_index(
    run_dir: str | Path,
    gallery_dir: str | Path,
    *,
    n_trees: int = DEFAULT_N_TREES,
    batch_size: int = 64,
    device: str | torch.device = "auto",
    num_workers: int | None = None,
    precision: str = "auto",
    seed: int = 0,
    n_jobs: int = -1,
    on_progress: ProgressCallback | None = None,
) -> dict[str, Any]:
    """Embed ``gallery_dir`` with the run's model and build ``RUN_DIR/index/`` (replacing any
    previous index only once the new one is complete). Returns the new ``gallery.json`` content."""
    return _build(run_dir, gallery_dir, add=False, n_trees=n_trees, batch_size=batch_size,
                  device=device, num_workers=num_workers, precision=precision, seed=seed,
                  n_jobs=n_jobs, on_progress=on_progress)


def add_to_index(
    run_dir: str | Path,
    gallery_dir: str | Path,
    *,
    n_trees: int | None = None,
    batch_size: int = 64,
    device: str | torch.device = "auto",
    num_workers: int | None = None,
    precision: str = "auto",
    seed: int | None = None,
    n_jobs: int = -1,
    on_progress: ProgressCallback | None = None,
) -> dict[str, Any]:
    """Add the images of ``gallery_dir`` to the run's existing index: embed only them, append them
    to the stored embeddings and rebuild the Annoy index (same n_trees and seed unless given).
    The result equals a full build over the old and new images in that order."""
    return _build(run_dir, gallery_dir, add=True, n_trees=n_trees, batch_size=batch_size,
                  device=device, num_workers=num_workers, precision=precision, seed=seed,
                  n_jobs=n_jobs, on_progress=on_progress)


def index_exists(run_dir: str | Path) -> bool:
    """Whether the run has a built index (``index/gallery.json``)."""
    return (Path(run_dir) / INDEX_DIR / METADATA_NAME).is_file()


def read_index_metadata(run_dir: str | Path) -> dict[str, Any]:
    """The run's ``index/gallery.json``; RetrievalError when there is no index yet."""
    run_dir = Path(run_dir)
    path = run_dir / INDEX_DIR / METADATA_NAME
    if not path.is_file():
        raise RetrievalError(
            f"{run_dir} has no gallery index yet; build one with `retrieval index {run_dir} GALLERY_DIR`"
        )
    try:
        metadata = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise RetrievalError(f"{path}: unreadable index metadata ({error}); rebuild with `retrieval index`") from error
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT_VERSION:
        raise RetrievalError(f"{path}: not an index of this version; rebuild with `retrieval index`")
    return metadata


def search_k_for(k: int, n_trees: int = DEFAULT_N_TREES) -> int:
    """The Annoy ``search_k`` used for ``k`` neighbours: DEFAULT_SEARCH_K at k = 10, scaled with k."""
    return max(n_trees * k, math.ceil(DEFAULT_SEARCH_K * max(k, 10) / 10))


def build_annoy(
    embeddings: np.ndarray | str | Path,
    ann_path: str | Path,
    *,
    n_trees: int = DEFAULT_N_TREES,
    seed: int = 0,
    n_jobs: int = -1,
    chunk_rows: int = 65_536,
    on_progress: ProgressCallback | None = None,
):
    """Build an angular Annoy index of the rows of ``embeddings`` (item i = row i), written
    straight to ``ann_path`` (Annoy's on-disk build: the nodes live in that file, not in the
    process's heap). ``embeddings`` is an (N, D) array or the path of a float32 ``.npy`` file,
    which is then read in chunks of ``chunk_rows`` with plain reads. Returns the built AnnoyIndex."""
    from annoy import AnnoyIndex

    n, dim = _npy_shape(embeddings) if isinstance(embeddings, (str, Path)) else embeddings.shape
    index = AnnoyIndex(int(dim), METRIC)
    index.set_seed(int(seed))
    index.on_disk_build(str(ann_path))
    for start, rows in _iter_rows(embeddings, chunk_rows):
        # Annoy takes Python lists; convert a few thousand rows at a time (as float objects,
        # 65536 rows of 128 would take ~270 MB).
        for block in range(0, len(rows), 2048):
            for offset, vector in enumerate(rows[block : block + 2048].tolist(), start + block):
                index.add_item(offset, vector)
        if on_progress is not None:
            on_progress("add", start + len(rows), n)
    if on_progress is not None:
        on_progress("build", 0, 1)
    index.build(int(n_trees), n_jobs=int(n_jobs))
    if on_progress is not None:
        on_progress("build", 1, 1)
    return index


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
    return best_ids, _row_distances(embeddings, best_ids, query)


def _row_distances(embeddings: np.ndarray, ids: np.ndarray, query: np.ndarray) -> np.ndarray:
    """float64 ||query - embeddings[i]|| for each i in ``ids`` (read in sorted order from a memory map)."""
    if len(ids) == 0:
        return np.empty(0)
    rows = np.asarray(embeddings[np.sort(ids)], dtype=np.float64)[np.argsort(np.argsort(ids))]
    return np.linalg.norm(rows - np.asarray(query, dtype=np.float64), axis=1)


# ----------------------------------------------------------------------------- load and search


class GalleryIndex:
    """A run's gallery index, opened once: the Annoy index (memory-mapped), the stored
    embeddings (memory-mapped), the item paths and labels, and the model with its eval transform.

    Use :meth:`load`; then :meth:`search` a PIL image, an image path or an embedding.
    """

    def __init__(self, run_dir: Path, metadata: dict[str, Any], annoy_index, embeddings: np.ndarray,
                 model: "torch.nn.Module | None", transform: Callable | None,
                 device: "torch.device", precision: str) -> None:
        self.run_dir = run_dir
        self.metadata = metadata
        self.embeddings = embeddings
        self._annoy = annoy_index
        self.model = model
        self.transform = transform
        self.device = device
        self.precision = precision
        items = metadata["items"]
        self.roots = [Path(root) for root in metadata["roots"]]
        self.relative_paths: list[str] = items["path"]
        self.labels: list[str | None] = items["label"]
        self._item_roots: list[int] = items["root"]

    @classmethod
    def load(cls, run_dir: str | Path, *, device: str | torch.device = "cpu",
             precision: str = "auto", load_model: bool = True) -> "GalleryIndex":
        """Open ``RUN_DIR/index/`` and, with ``load_model``, the run's model and eval transform.

        ``precision`` is the query's forward-pass precision (as ``retrieval.models.autocast``;
        ``auto`` picks what the build picked on the same kind of device).

        Raises RetrievalError when there is no index, when it was built by another model (its
        fingerprint or dimension differs from the run's), or when its files do not belong together.
        """
        from annoy import AnnoyIndex

        from retrieval.models import model_fingerprint, read_config, resolve_device

        run_dir = Path(run_dir)
        config = read_config(run_dir)
        metadata = read_index_metadata(run_dir)
        index_dir = run_dir / INDEX_DIR
        dim = int(metadata["embedding_dim"])
        if dim != int(config["embedding_dim"]):
            raise RetrievalError(
                f"{index_dir} was built by another model (embedding dimension {dim}, the run's model "
                f"has {config['embedding_dim']}); rebuild it with `retrieval index {run_dir} GALLERY_DIR`"
            )
        if metadata["model_fingerprint"] != model_fingerprint(run_dir):
            raise RetrievalError(
                f"{index_dir} was built by another model (fingerprint {metadata['model_fingerprint']}, "
                f"the run's model is {model_fingerprint(run_dir)}); rebuild it with "
                f"`retrieval index {run_dir} GALLERY_DIR`"
            )
        for name in (ANN_NAME, EMBEDDINGS_NAME):
            _verify_file(index_dir / name, metadata["files"][name], run_dir)
        embeddings = np.load(index_dir / EMBEDDINGS_NAME, mmap_mode="r")
        if embeddings.shape != (metadata["n_items"], dim):
            raise RetrievalError(f"{index_dir / EMBEDDINGS_NAME}: shape {embeddings.shape} does not "
                                 f"match {METADATA_NAME}; rebuild with `retrieval index`")
        annoy_index = AnnoyIndex(dim, METRIC)
        annoy_index.load(str(index_dir / ANN_NAME), prefault=False)
        if annoy_index.get_n_items() != metadata["n_items"]:
            raise RetrievalError(f"{index_dir / ANN_NAME}: {annoy_index.get_n_items()} items, "
                                 f"{METADATA_NAME} lists {metadata['n_items']}; rebuild with `retrieval index`")
        torch_device = resolve_device(device) if isinstance(device, str) else device
        model = transform = None
        if load_model:
            model, transform = _load_model_and_transform(run_dir, torch_device)
        return cls(run_dir, metadata, annoy_index, embeddings, model, transform, torch_device, precision)

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

    def path(self, item: int) -> Path:
        """Absolute path of one item's image."""
        return self.roots[self._item_roots[item]] / self.relative_paths[item]

    def embed(self, image) -> np.ndarray:
        """The unit embedding (D,) of a PIL image or an image file, with the run's eval transform."""
        import torch
        from PIL import Image

        from retrieval.data import load_image
        from retrieval.models import autocast

        if self.model is None:
            self.model, self.transform = _load_model_and_transform(self.run_dir, self.device)
        if not isinstance(image, Image.Image):
            image = load_image(Path(image))
        with torch.inference_mode(), autocast(self.device, self.precision):
            pixels = self.transform(image.convert("RGB")).unsqueeze(0).to(self.device)
            embedding = self.model(pixels)
        return embedding[0].float().cpu().numpy()

    def search(self, query, k: int = 10, *, exact: bool = False,
               search_k: int | None = None) -> list[Neighbour]:
        """The ``k`` nearest gallery items of ``query``: a PIL image, an image path, or an
        embedding (D,) (normalised here). Annoy with ``search_k`` (default :func:`search_k_for`),
        or brute force over the stored embeddings with ``exact=True``."""
        if k < 1:
            raise RetrievalError(f"k must be at least 1, got {k}")
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
            distances = _row_distances(self.embeddings, np.asarray(ids, dtype=np.int64), vector)
        return [self._neighbour(int(i), float(d)) for i, d in zip(ids, distances)]

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
        )


# ----------------------------------------------------------------------------- helpers


def _load_model_and_transform(run_dir: Path, device: torch.device):
    from retrieval.data import build_transforms
    from retrieval.models import load_model

    model, config = load_model(run_dir, device=device)
    return model, build_transforms(config["data_config"], train=False)


def _build(run_dir, gallery_dir, *, device, **options) -> dict[str, Any]:
    """Under ``torchrun`` every process embeds a share of the gallery and rank 0 writes the index
    (:meth:`retrieval.distributed.DistributedContext.embed_paths`); the other processes return
    ``{"rank", "world_size"}`` once their share is embedded."""
    from retrieval import distributed

    with distributed.process_group(device) as ctx:
        return _build_with(ctx, run_dir, gallery_dir, **options)


def _build_with(ctx, run_dir, gallery_dir, *, add: bool, n_trees, batch_size, num_workers, precision,
                seed, n_jobs, on_progress) -> dict[str, Any]:
    from retrieval.data import scan_folder
    from retrieval.models import model_fingerprint, read_config

    run_dir = Path(run_dir)
    config = read_config(run_dir)
    index_dir = run_dir / INDEX_DIR
    previous = None
    if add:
        previous = GalleryIndex.load(run_dir, load_model=False)
        n_trees = previous.n_trees if n_trees is None else n_trees
        seed = int(previous.metadata["seed"]) if seed is None else seed
    if int(n_trees) < 1:
        raise RetrievalError(f"--n-trees must be at least 1, got {n_trees}")

    gallery_dir = Path(gallery_dir)
    folder = scan_folder(gallery_dir)  # warns about unreadable images (skipped) in one line
    new_ids = list(range(len(folder.paths)))
    if previous is not None:
        new_ids = _not_yet_indexed(previous, folder, gallery_dir)
        if not new_ids:
            logger.warning("all %d images of %s are already in the index; nothing added",
                           len(folder.paths), gallery_dir)
            previous.close()
            return read_index_metadata(run_dir)
    torch_device = ctx.device  # the device asked for; cuda:LOCAL_RANK under torchrun
    model, transform = _load_model_and_transform(run_dir, torch_device)
    dim = int(config["embedding_dim"])
    if not ctx.is_main:  # a helper process of a torchrun launch: embed its batches for rank 0, write nothing
        ctx.embed_paths(model, [folder.paths[i] for i in new_ids], transform, batch_size=batch_size,
                        device=torch_device, num_workers=num_workers, precision=precision, collect=False)
        if previous is not None:
            previous.close()
        return {"rank": ctx.rank, "world_size": ctx.world_size}

    index_dir.mkdir(parents=True, exist_ok=True)
    with _build_lock(index_dir):
        _remove_stale_builds(index_dir)
        build_id = uuid.uuid4().hex
        tmp = index_dir / f".build-{build_id}"
        tmp.mkdir()
        try:
            n_old = len(previous) if previous is not None else 0
            embeddings_path = tmp / EMBEDDINGS_NAME
            with _RowWriter(embeddings_path, n_old + len(new_ids), dim) as writer:
                if previous is not None:
                    _copy_rows(index_dir / EMBEDDINGS_NAME, writer, n_old, on_progress)
                _, embedded = ctx.embed_paths(
                    model, [folder.paths[i] for i in new_ids], transform, out=writer.rows_from(n_old),
                    batch_size=batch_size, device=torch_device, num_workers=num_workers,
                    precision=precision,
                    on_progress=(lambda d, t: on_progress("embed", d, t)) if on_progress else None,
                )
            kept = [new_ids[j] for j in embedded]
            unread = [folder.paths[i] for i in sorted(set(new_ids) - set(kept))]
            if not kept:
                raise RetrievalError(f"{gallery_dir}: none of the gallery images could be read")
            if len(kept) < len(new_ids):
                _shrink_rows(embeddings_path, n_old + len(kept), dim)

            annoy_index = build_annoy(embeddings_path, tmp / ANN_NAME, n_trees=n_trees, seed=seed,
                                      n_jobs=n_jobs, on_progress=on_progress)
            annoy_index.unload()
            shutil.copymode(embeddings_path, tmp / ANN_NAME)  # Annoy creates it 0600; follow the umask

            metadata = _metadata(
                previous=previous, folder=folder, kept=kept, gallery_dir=gallery_dir, config=config,
                fingerprint=model_fingerprint(run_dir), build_id=build_id, n_trees=n_trees, seed=seed,
                skipped=[str(p) for p in [*folder.skipped, *unread]], tmp=tmp,
            )
            if previous is not None:
                previous.close()
            (tmp / METADATA_NAME).write_text(json.dumps(metadata, indent=1) + "\n")
            _commit(tmp, index_dir)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return metadata


def _metadata(*, previous, folder, kept, gallery_dir, config, fingerprint, build_id, n_trees, seed,
              skipped, tmp) -> dict[str, Any]:
    if previous is not None:
        roots = [str(root) for root in previous.roots]
        items = {key: list(values) for key, values in previous.metadata["items"].items()}
        old_skipped = previous.metadata.get("skipped", [])
    else:
        roots, items, old_skipped = [], {"path": [], "label": [], "root": []}, []
    root = str(gallery_dir.resolve())
    if root not in roots:
        roots.append(root)
    root_id = roots.index(root)
    for i in kept:
        items["path"].append(folder.relative_path(i))
        items["label"].append(folder.class_names[folder.labels[i]] if folder.labelled else None)
        items["root"].append(root_id)
    n_items = len(items["path"])
    return {
        "format": FORMAT_VERSION,
        "build_id": build_id,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "metric": METRIC,
        "distance": "euclidean between unit embeddings, sqrt(2 - 2 cos); similarity = 1 - d^2/2",
        "embedding_dim": int(config["embedding_dim"]),
        "n_items": n_items,
        "n_trees": int(n_trees),
        "seed": int(seed),
        "search_k_at_10": search_k_for(10, int(n_trees)),
        "model_fingerprint": fingerprint,
        "backbone": config.get("backbone"),
        "data_config": config.get("data_config"),
        "roots": roots,
        "labelled": all(label is not None for label in items["label"]),
        "items": items,
        "skipped": [*old_skipped, *skipped],
        "files": {name: _file_check(tmp / name) for name in (ANN_NAME, EMBEDDINGS_NAME)},
    }


def _not_yet_indexed(previous: GalleryIndex, folder, gallery_dir: Path) -> list[int]:
    """Indices of the folder's images that the index does not hold yet (same root and path)."""
    root = str(gallery_dir.resolve())
    indexed = {
        (str(previous.roots[r]), p) for r, p in zip(previous._item_roots, previous.relative_paths)
    }
    return [i for i in range(len(folder.paths)) if (root, folder.relative_path(i)) not in indexed]


def _commit(tmp: Path, index_dir: Path) -> None:
    """Move a finished build into place: data files first, gallery.json (the commit point) last."""
    for name in (EMBEDDINGS_NAME, ANN_NAME, METADATA_NAME):
        _fsync(tmp / name)
    for name in (EMBEDDINGS_NAME, ANN_NAME, METADATA_NAME):
        os.replace(tmp / name, index_dir / name)
    _fsync(index_dir)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _file_check(path: Path) -> dict[str, Any]:
    """Size and SHA-256 of the first and last MiB: cheap to verify, differs between builds."""
    size = path.stat().st_size
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        digest.update(handle.read(_CHECK_BYTES))
        if size > _CHECK_BYTES:
            handle.seek(max(_CHECK_BYTES, size - _CHECK_BYTES))
            digest.update(handle.read())
    return {"bytes": size, "sha256_head_tail": digest.hexdigest()}


def _verify_file(path: Path, expected: dict[str, Any], run_dir: Path) -> None:
    if not path.is_file():
        raise RetrievalError(f"{path} is missing; rebuild the index with `retrieval index {run_dir} GALLERY_DIR`")
    if _file_check(path) != expected:
        raise RetrievalError(
            f"{path} does not belong to {METADATA_NAME} (another build, or a build interrupted while "
            f"moving files into place); rebuild with `retrieval index {run_dir} GALLERY_DIR`"
        )


class _RowWriter:
    """Writes a float32 (N, D) ``.npy`` file block by block with plain file writes: the rows go
    to disk as they come and, unlike a writable memory map, never accumulate in this process's
    resident memory."""

    def __init__(self, path: Path, n_rows: int, dim: int) -> None:
        header = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n_rows, dim))
        del header  # the file now has its header and its (sparse) full size
        self.dim = dim
        self._file = open(path, "r+b")
        _read_npy_header(self._file)
        self._data_offset = self._file.tell()

    def write(self, first_row: int, rows: np.ndarray) -> None:
        rows = np.ascontiguousarray(rows, dtype=np.float32)
        if rows.ndim != 2 or rows.shape[1] != self.dim:
            raise ValueError(f"rows of shape {rows.shape} do not fit dimension {self.dim}")
        self._file.seek(self._data_offset + first_row * self.dim * 4)
        self._file.write(rows.tobytes())

    def rows_from(self, first_row: int) -> "_RowSlice":
        """An ``out`` for :func:`embed_paths`: ``out[a:b] = rows`` writes rows first_row + a ..."""
        return _RowSlice(self, first_row)

    def close(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()

    def __enter__(self) -> "_RowWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _RowSlice:
    def __init__(self, writer: _RowWriter, first_row: int) -> None:
        self.writer, self.first_row = writer, first_row

    def __setitem__(self, key: slice, rows: np.ndarray) -> None:
        self.writer.write(self.first_row + (key.start or 0), rows)

    def __getitem__(self, key: slice) -> None:  # embed_paths returns out[:n]; rows live on disk
        return None


def _read_npy_header(handle) -> tuple[tuple[int, ...], np.dtype]:
    """Read an .npy header, leaving ``handle`` at the first data byte; (shape, dtype)."""
    version = np.lib.format.read_magic(handle)
    if version == (1, 0):
        shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(handle)
    else:
        shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(handle)
    if fortran_order:
        raise RetrievalError(f"{handle.name}: Fortran-ordered arrays are not supported")
    return shape, dtype


def _npy_shape(path: str | Path) -> tuple[int, int]:
    with open(path, "rb") as handle:
        shape, dtype = _read_npy_header(handle)
    if dtype != np.float32 or len(shape) != 2:
        raise RetrievalError(f"{path}: expected a float32 (N, D) array, found {dtype} {shape}")
    return shape


def _iter_rows(source: np.ndarray | str | Path, chunk_rows: int, n_rows: int | None = None):
    """(first row, float32 rows) blocks of an array or of a ``.npy`` file read with plain reads."""
    if not isinstance(source, (str, Path)):
        n = len(source) if n_rows is None else n_rows
        for start in range(0, n, chunk_rows):
            yield start, np.asarray(source[start : min(n, start + chunk_rows)], dtype=np.float32)
        return
    shape = _npy_shape(source)
    n = shape[0] if n_rows is None else n_rows
    with open(source, "rb") as handle:
        _read_npy_header(handle)
        for start in range(0, n, chunk_rows):
            count = min(chunk_rows, n - start)
            rows = np.fromfile(handle, dtype=np.float32, count=count * shape[1])
            yield start, rows.reshape(count, shape[1])


def _copy_rows(source: Path, writer: _RowWriter, n_rows: int, on_progress,
               chunk_rows: int = 65_536) -> None:
    for start, rows in _iter_rows(source, chunk_rows, n_rows):
        writer.write(start, rows)
        if on_progress is not None:
            on_progress("copy", start + len(rows), n_rows)


def _shrink_rows(path: Path, n_rows: int, dim: int) -> None:
    """Keep the first ``n_rows`` rows of an .npy file (after unreadable images were left out)."""
    smaller = path.with_name(path.name + ".part")
    with _RowWriter(smaller, n_rows, dim) as writer:
        _copy_rows(path, writer, n_rows, None)
    os.replace(smaller, path)


@contextlib.contextmanager
def _build_lock(index_dir: Path):
    """One build at a time per run directory (an flock on index/.lock)."""
    import fcntl

    with open(index_dir / ".lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            raise RetrievalError(f"another `retrieval index` is building {index_dir}; wait for it to finish") from error
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _remove_stale_builds(index_dir: Path) -> None:
    """Temp folders of builds that were killed (we hold the lock, so none is running)."""
    for stale in index_dir.glob(".build-*"):
        shutil.rmtree(stale, ignore_errors=True)
