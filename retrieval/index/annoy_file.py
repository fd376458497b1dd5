"""The Annoy file: ``index/gallery.ann``, an Annoy index of the stored embeddings (item i = row i).

Its metric is ``angular``, whose distance sqrt(2 - 2 cos) is exactly the training distance between
unit embeddings (DESIGN.md, Distances). The index is built from the rows of the embeddings store with
Annoy's on-disk build (:func:`build_annoy`), opened as a memory map (:func:`open_annoy`) and searched
with ``search_k`` from :func:`search_k_for`. The defaults were measured in BENCHMARKS.md.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from retrieval.index.store import ProgressCallback, iter_rows, npy_shape

__all__ = ["DEFAULT_N_TREES", "DEFAULT_SEARCH_K", "METRIC", "build_annoy", "open_annoy", "search_k_for"]

METRIC = "angular"

DEFAULT_N_TREES = 50
"""Trees per index (``--n-trees``; DESIGN.md). BENCHMARKS.md (index section): at 1M items of
dimension 128 the index is ~1.2 GiB and builds in ~2 min on 2 cores within 1.4 GB peak memory."""

DEFAULT_SEARCH_K = 5_000
"""Annoy ``search_k`` for k = 10 (scaled with k), chosen from BENCHMARKS.md (index section): the
smallest measured value with recall@10 >= 0.999 against exact search at 10k, 100k and 1M items
with 50 trees (p50 ~0.5 ms at 100k). Galleries with fewer than search_k / n_trees = 100 items are
searched exhaustively, so small galleries get exact results."""


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

    n, dim = npy_shape(embeddings) if isinstance(embeddings, (str, Path)) else embeddings.shape
    index = AnnoyIndex(int(dim), METRIC)
    index.set_seed(int(seed))
    index.on_disk_build(str(ann_path))
    for start, rows in iter_rows(embeddings, chunk_rows):
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


def open_annoy(ann_path: str | Path, dim: int):
    """Open a built index of dimension ``dim`` (memory-mapped, pages read on demand); the AnnoyIndex."""
    from annoy import AnnoyIndex

    index = AnnoyIndex(int(dim), METRIC)
    index.load(str(ann_path), prefault=False)
    return index
