"""``index/gallery.json``: what an index holds, read, written and checked.

It maps each item id to its image path (relative to its gallery root), its root and its label, and
records the metric, the dimension, the build parameters, the fingerprint of the model that made the
embeddings, and a check of each data file (:func:`file_check`) that loading verifies
(:func:`verify_file`), so ``gallery.json`` is never trusted with files of another build.

``retrieval.run`` (the file names) is imported where it is used: it loads torch, which building an
Annoy file from vectors does not need.
"""

from __future__ import annotations

import datetime
import hashlib
import json
from pathlib import Path
from typing import Any

from retrieval.errors import RetrievalError
from retrieval.index.annoy_file import METRIC, search_k_for

__all__ = ["FORMAT_VERSION", "file_check", "index_exists", "metadata_for_build", "read_index_metadata", "verify_file"]

FORMAT_VERSION = 1

_CHECK_BYTES = 1 << 20  # bytes hashed at each end of a data file for its check


def index_exists(run_dir: str | Path) -> bool:
    """Whether the run has a built index (``index/gallery.json``)."""
    from retrieval.run import METADATA_NAME, index_dir

    return (index_dir(run_dir) / METADATA_NAME).is_file()


def read_index_metadata(run_dir: str | Path) -> dict[str, Any]:
    """The run's ``index/gallery.json``; RetrievalError when there is no index yet."""
    from retrieval.run import METADATA_NAME, index_dir

    run_dir = Path(run_dir)
    path = index_dir(run_dir) / METADATA_NAME
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


def metadata_for_build(*, previous, folder, kept: list[int], gallery_dir: Path, config, fingerprint: str,
                       build_id: str, n_trees: int, seed: int, skipped: list[str],
                       files: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The ``gallery.json`` content of a build: the ``previous`` index's items (a GalleryIndex,
    None for a full build) followed by the ``kept`` images of ``folder`` (a scanned gallery),
    with the run's ``config`` (a RunConfig) and ``files``, each data file's :func:`file_check`."""
    roots, items, old_skipped = _previous_items(previous)
    root = str(gallery_dir.resolve())
    if root not in roots:
        roots.append(root)
    root_id = roots.index(root)
    for i in kept:
        items["path"].append(folder.relative_path(i))
        items["label"].append(folder.class_names[folder.labels[i]] if folder.labelled else None)
        items["root"].append(root_id)
    return {
        "format": FORMAT_VERSION,
        "build_id": build_id,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "metric": METRIC,
        "distance": "euclidean between unit embeddings, sqrt(2 - 2 cos); similarity = 1 - d^2/2",
        "embedding_dim": config.embedding_dim,
        "n_items": len(items["path"]),
        "n_trees": int(n_trees),
        "seed": int(seed),
        "search_k_at_10": search_k_for(10, int(n_trees)),
        "model_fingerprint": fingerprint,
        "backbone": config.backbone,
        "data_config": config.data_config,
        "roots": roots,
        "labelled": all(label is not None for label in items["label"]),
        "items": items,
        "skipped": [*old_skipped, *skipped],
        "files": files,
    }


def file_check(path: Path) -> dict[str, Any]:
    """Size and SHA-256 of the first and last MiB: cheap to verify, differs between builds."""
    size = path.stat().st_size
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        digest.update(handle.read(_CHECK_BYTES))
        if size > _CHECK_BYTES:
            handle.seek(max(_CHECK_BYTES, size - _CHECK_BYTES))
            digest.update(handle.read())
    return {"bytes": size, "sha256_head_tail": digest.hexdigest()}


def verify_file(path: Path, expected: dict[str, Any], run_dir: Path) -> None:
    """RetrievalError unless ``path`` exists and matches the check ``gallery.json`` recorded for it."""
    from retrieval.run import METADATA_NAME

    if not path.is_file():
        raise RetrievalError(f"{path} is missing; rebuild the index with `retrieval index {run_dir} GALLERY_DIR`")
    if file_check(path) != expected:
        raise RetrievalError(
            f"{path} does not belong to {METADATA_NAME} (another build, or a build interrupted while "
            f"moving files into place); rebuild with `retrieval index {run_dir} GALLERY_DIR`"
        )


def _previous_items(previous) -> tuple[list[str], dict[str, list], list[str]]:
    """(roots, items, skipped) of the index that a build adds to, as fresh lists; empty for a full build."""
    if previous is None:
        return [], {"path": [], "label": [], "root": []}, []
    roots = [str(root) for root in previous.roots]
    items = {key: list(values) for key, values in previous.metadata["items"].items()}
    return roots, items, previous.metadata.get("skipped", [])
