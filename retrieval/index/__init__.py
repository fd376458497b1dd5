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

Builds are safe to interrupt: the three files are one unit (:mod:`retrieval.run.versions`), written
into a new version folder ``index/.versions/<id>/`` that one rename makes current, so an interrupted
or failed build leaves the previous index in use and no crash pairs the files of two builds.
``gallery.json`` records the size and full SHA-256 of the two data files; loading verifies them and
checks the Annoy file node by node before Annoy maps it (a damaged or crafted file is a one-line
error, never a crash), and item paths become files only inside their gallery folder
(:func:`retrieval.run.resolve_logged_path`).

``GalleryIndex.load(run_dir)`` opens an index (Annoy memory-maps the file) with its model and
transform, and ``.search(image_or_embedding, k)`` returns :class:`Neighbour` records, by Annoy or,
with ``exact=True``, by brute force over the stored embeddings (the reference).

The modules, from the bottom up (each imports only those above it):

- :mod:`~retrieval.index.store`: the embeddings store, a float32 ``.npy`` file written and read
  row block by row block;
- :mod:`~retrieval.index.annoy_file`: the Annoy file built from the stored rows, ``search_k``
  and the measured defaults;
- :mod:`~retrieval.index.metadata`: ``gallery.json``, its items and the checks of the data files;
- :mod:`~retrieval.index.gallery`: :class:`GalleryIndex`, :class:`Neighbour`, :func:`exact_search`;
- :mod:`~retrieval.index.build`: :func:`build_index`, :func:`add_to_index`, the build transaction.

The file names come from :mod:`retrieval.run`, imported inside the functions that use them: it
loads torch and timm, which building an Annoy file from vectors (``benchmarks/index.py``) does not
need.
"""

from retrieval.index.annoy_file import DEFAULT_N_TREES, DEFAULT_SEARCH_K, build_annoy, search_k_for
from retrieval.index.build import add_to_index, build_index
from retrieval.index.gallery import GalleryIndex, Neighbour, exact_search
from retrieval.index.metadata import index_exists, read_index_metadata

__all__ = [
    "DEFAULT_N_TREES",
    "DEFAULT_SEARCH_K",
    "GalleryIndex",
    "Neighbour",
    "add_to_index",
    "build_annoy",
    "build_index",
    "exact_search",
    "index_exists",
    "read_index_metadata",
    "search_k_for",
]
