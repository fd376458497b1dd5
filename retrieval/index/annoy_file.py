"""The Annoy file: ``index/gallery.ann``, an Annoy index of the stored embeddings (item i = row i).

Its metric is ``angular``, whose distance sqrt(2 - 2 cos) is exactly the training distance between
unit embeddings (DESIGN.md, Distances). The index is built from the rows of the embeddings store with
Annoy's on-disk build (:func:`build_annoy`), opened as a memory map (:func:`open_annoy`) and searched
with ``search_k`` from :func:`search_k_for`. The defaults were measured in BENCHMARKS.md.

Annoy trusts its file: a damaged or crafted one makes a search abort (``std::length_error``) or
read outside the memory map (a segfault), which in the app is the server, for every user. So before
Annoy maps a file, :func:`check_annoy_file` reads it once, hashing it and checking every node
against the layout of ``annoylib.h`` (Annoy 1.17; ``Angular::Node``): a file is N nodes of
:func:`node_size` = 12 + 4 D bytes, each ``n_descendants`` (int32), a union of two child ids
(int32) and the item's squared norm (float32), then the vector (D float32). Nodes 0 .. n_items - 1
are the items (n_descendants = 1). Every later node is a *bucket* (1 <= n_descendants <= K = D + 2:
its first n_descendants int32 after the count are item ids) or a *split* (n_descendants > K: two
children and the normal of its hyperplane); the trees' roots (n_descendants = n_items) are copied
to the end of the file, where Annoy's ``load`` finds them. Not a plain items x node-size rule: the
split and bucket nodes of every tree follow the items.
"""

from __future__ import annotations

import hashlib
import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from retrieval.errors import RetrievalError
from retrieval.index.store import ProgressCallback, iter_rows, npy_shape

__all__ = ["DEFAULT_N_TREES", "DEFAULT_SEARCH_K", "METRIC", "build_annoy", "check_annoy_file", "node_size", "open_annoy",
           "search_k_for"]

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


def node_size(dim: int) -> int:
    """Bytes per node of an angular Annoy index of dimension ``dim``: ``offsetof(Node, v) + 4 dim``,
    with ``n_descendants`` (4 bytes) and the union of two child ids / the squared norm (8 bytes)
    before the vector."""
    return 12 + 4 * int(dim)


def check_annoy_file(path: str | Path, dim: int, n_items: int, *, chunk_bytes: int = 16 << 20,
                     shown: str | Path | None = None) -> str:
    """Check every node of the angular Annoy file ``path`` (see the module docstring) and return
    its SHA-256, computed in the same single pass. RetrievalError naming the first fault (and the
    file as ``shown``, its documented name, by default ``path``).

    The checks: the size is a whole number of nodes, more than the items; items have
    n_descendants = 1 and finite values; a bucket's ids are items; a split's two children are
    earlier nodes whose counts add up to its own, its normal finite; no count exceeds n_items; the
    last node is a root (n_descendants = n_items). Children before parents and counts that add up
    make every search end, after at most about n_trees x 2 n_items steps, inside the file.
    """
    path, dim, n_items = Path(path), int(dim), int(n_items)
    name = Path(shown) if shown is not None else path
    size, width = path.stat().st_size, node_size(dim)
    if size == 0 or size % width:
        _fault(name, f"{size} bytes is not a whole number of {width}-byte nodes of dimension {dim}")
    n_nodes = size // width
    if n_nodes <= n_items or n_nodes >= 2**31:
        _fault(name, f"{n_nodes} nodes for {n_items} items (no tree)")
    counts = np.empty(n_nodes, dtype=np.int64)  # n_descendants of every node, filled chunk by chunk
    digest = hashlib.sha256()
    per_chunk = max(1, chunk_bytes // width)
    # hashing a block (hashlib lets go of the GIL) overlaps checking it (numpy does too): two cores, one pass
    with open(path, "rb") as handle, ThreadPoolExecutor(max_workers=1) as hasher:
        hashed = None
        for start in range(0, n_nodes, per_chunk):
            block = handle.read(min(per_chunk, n_nodes - start) * width)
            if len(block) % width or not block:
                _fault(name, "the file changed while it was read")
            if hashed is not None:
                hashed.result()  # at most two blocks in memory
            hashed = hasher.submit(digest.update, block)
            nodes = np.frombuffer(block, dtype=np.int32).reshape(-1, 3 + dim)
            _check_nodes(name, nodes, start, n_items, dim, counts)
        hashed.result()
    if counts[-1] != n_items:
        _fault(name, f"the last node counts {counts[-1]} items, not {n_items}: it is not a root")
    return digest.hexdigest()


def _check_nodes(path: Path, nodes: np.ndarray, start: int, n_items: int, dim: int, counts: np.ndarray) -> None:
    """The checks of :func:`check_annoy_file` on the nodes ``start .. start + len(nodes) - 1``;
    ``counts`` holds the n_descendants of every earlier node and gets these nodes'."""
    counts[start : start + len(nodes)] = nodes[:, 0]
    m = min(max(n_items - start, 0), len(nodes))  # the items come first: rows [0, m) of this block
    items, inner = nodes[:m], nodes[m:]
    if m:
        _require(path, start, items[:, 0] != 1, "an item node does not count 1 item")
        _require(path, start, ~np.isfinite(items[:, 1:].view(np.float32)).all(axis=1), "an item's vector is not finite")
    if not len(inner):
        return
    ids = np.arange(start + m, start + len(nodes), dtype=np.int64)
    count, k = inner[:, 0], dim + 2
    _require(path, ids, (count < 1) | (count > n_items), f"a node counts no item or more than {n_items}")
    bucket = count <= k
    if bucket.any():
        members = inner[bucket, 1 : 1 + k]
        used = np.arange(k, dtype=np.int32) < count[bucket, None]
        bad = (used & ((members < 0) | (members >= n_items))).any(axis=1)
        _require(path, ids[bucket], bad, "a bucket node lists an id that is not an item")
    split = ~bucket
    if split.any():
        rows, own = inner[split], ids[split]
        left, right = rows[:, 1].astype(np.int64), rows[:, 2].astype(np.int64)
        bad = (left < 0) | (left >= own) | (right < 0) | (right >= own)
        _require(path, own, bad, "a split node's child is not an earlier node")
        _require(path, own, counts[left] + counts[right] != rows[:, 0], "a split node's count is not its children's sum")
        _require(path, own, ~np.isfinite(rows[:, 3:].view(np.float32)).all(axis=1), "a split node's hyperplane is not finite")


def _require(path: Path, ids: np.ndarray | int, bad: np.ndarray, what: str) -> None:
    """``ids``: the node id of each row of ``bad``, or the first id of consecutive rows."""
    if bad.any():
        first = int(np.argmax(bad))
        _fault(path, f"{what} (node {ids + first if isinstance(ids, int) else int(ids[first])})")


def _fault(path: Path, reason: str):
    raise RetrievalError(f"{path}: not a sound Annoy index ({reason}); rebuild it with `retrieval index`")
