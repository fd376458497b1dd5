"""``index/gallery.json``: what an index holds, read, written and checked.

It maps each item id to its image path (relative to its gallery root), its root and its label, and
records the metric, the dimension, the build parameters, the fingerprint of the model that made the
embeddings, and a check of each data file (:func:`file_check`: its size and full SHA-256) that
loading verifies (:func:`verify_file`), so ``gallery.json`` is never trusted with files of another
build, nor with a damaged one. Indexes built before the full hash recorded ``sha256_head_tail`` (a
SHA-256 of the first and last MiB); they still load, checked that way, and the Annoy file's full
structural check (:func:`~retrieval.index.annoy_file.check_annoy_file`) runs for them too, so a
damaged old index is refused or harmless, never a crash; rebuilding one records the full hash.

Reading checks the file's shape before anything uses it (:func:`read_index_metadata`): the keys a
reader needs, one path, label and root per item, roots that are absolute folders, item paths
that are relative without ``..`` (:func:`retrieval.run.check_relative_paths`). A crafted
``gallery.json`` is a one-line error, not a traceback or a file served from elsewhere.

``retrieval.run`` (the file names) is imported where it is used, as by the other modules here.
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

_CHECK_BYTES = 1 << 20  # bytes hashed at each end of a data file by the check of older indexes
#: keys every reader of gallery.json relies on, and their types
_REQUIRED = {"embedding_dim": int, "n_items": int, "n_trees": int, "seed": int, "model_fingerprint": str,
             "roots": list, "items": dict, "files": dict}


def index_exists(run_dir: str | Path) -> bool:
    """Whether the run has a built index (``index/gallery.json``)."""
    from retrieval.run import METADATA_NAME, index_dir

    return (index_dir(run_dir) / METADATA_NAME).is_file()


def read_index_metadata(run_dir: str | Path, *, path: Path | None = None) -> dict[str, Any]:
    """The run's ``index/gallery.json``, its shape checked; RetrievalError when there is no index
    yet or the file is not one. ``path``: where to read it (a version folder's copy, see
    :mod:`retrieval.run.versions`); by default the index's current one."""
    from retrieval.run import INDEX_UNIT, METADATA_NAME, index_dir, unit_paths

    run_dir = Path(run_dir)
    shown = index_dir(run_dir) / METADATA_NAME
    if path is None:
        path = unit_paths(index_dir(run_dir), INDEX_UNIT)[METADATA_NAME]
    if path is None or not path.is_file():
        raise RetrievalError(
            f"{run_dir} has no gallery index yet; build one with `retrieval index {run_dir} GALLERY_DIR`"
        )
    try:
        metadata = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise RetrievalError(f"{shown}: unreadable index metadata ({error}); rebuild with `retrieval index`") from error
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT_VERSION:
        raise RetrievalError(f"{shown}: not an index of this version; rebuild with `retrieval index`")
    _check_shape(metadata, shown)
    return metadata


def metadata_for_build(*, previous, folder, kept: list[int], gallery_dir: Path, config, fingerprint: str,
                       build_id: str, n_trees: int, seed: int, skipped: list[str],
                       files: dict[str, dict[str, Any]], faces: list[dict[str, Any]] | None = None,
                       looked: list[int] = (), without_face: list[tuple[int, str]] = ()) -> dict[str, Any]:
    """The ``gallery.json`` content of a build: the ``previous`` index's items (a GalleryIndex,
    None for a full build; its roots as re-rooted when it was loaded) followed by the ``kept``
    images of ``folder`` (a scanned gallery), with the run's ``config`` (a RunConfig) and
    ``files``, each data file's :func:`file_check`. ``faces`` (a face run): each kept item's face
    record (box, score, face, sha256), stored as the items' ``face`` column (``kept`` then repeats a
    photo once per face); and the photos of the folder searched without a face found
    (``without_face``, (id, SHA-256) each, stored as {root, path, label, sha256}: the content, so that
    removing the photo also forgets its cached detection): the previous index's, but those searched
    again this time (``looked``), then this build's."""
    from retrieval.run import check_root

    roots, items, old_skipped = _previous_items(previous)
    root = str(check_root(gallery_dir.resolve(), source=gallery_dir))
    if root not in roots:
        roots.append(root)
    root_id = roots.index(root)

    def label(i: int) -> str | None:
        return folder.class_names[folder.labels[i]] if folder.labelled else None

    for i in kept:
        items["path"].append(folder.relative_path(i))
        items["label"].append(label(i))
        items["root"].append(root_id)
    extra = {}
    if faces is not None:
        items["face"] = [*items.get("face", []), *faces]
        again = {folder.relative_path(i) for i in looked}
        earlier = [] if previous is None else previous.metadata.get("without_face", [])
        extra["without_face"] = [*(entry for entry in earlier if not (entry["root"] == root_id and entry["path"] in again)),
                                 *({"root": root_id, "path": folder.relative_path(i), "label": label(i), "sha256": digest}
                                   for i, digest in without_face)]
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
        **extra,
        "files": files,
    }


def file_check(path: Path, *, sha256: str | None = None) -> dict[str, Any]:
    """A data file's check: its size and the SHA-256 of all its bytes (``sha256`` when the
    caller computed it already)."""
    from retrieval.run import sha256_file

    return {"bytes": path.stat().st_size, "sha256": sha256 or sha256_file(path)}


def verify_file(path: Path, expected: dict[str, Any], run_dir: Path, *, sha256: str | None = None) -> None:
    """RetrievalError unless ``path`` exists and matches the check ``gallery.json`` recorded for
    it (``sha256``: the file's hash when the caller computed it while reading it). An index built
    before the full hash is checked by the hash of its first and last MiB."""
    from retrieval.run import METADATA_NAME

    if path is None or not path.is_file():
        raise RetrievalError(f"{path} is missing; rebuild the index with `retrieval index {run_dir} GALLERY_DIR`")
    size = path.stat().st_size
    if "sha256" in expected:
        matches = size == expected.get("bytes") and (sha256 or file_check(path)["sha256"]) == expected["sha256"]
    else:
        matches = _head_tail_check(path) == expected
    if not matches:
        raise RetrievalError(
            f"{path.name} of {run_dir}'s index does not match {METADATA_NAME} (damaged, or from another build); "
            f"rebuild with `retrieval index {run_dir} GALLERY_DIR`"
        )


def _head_tail_check(path: Path) -> dict[str, Any]:
    """The check of indexes built before the full hash: size and SHA-256 of the first and last MiB."""
    size = path.stat().st_size
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        digest.update(handle.read(_CHECK_BYTES))
        if size > _CHECK_BYTES:
            handle.seek(max(_CHECK_BYTES, size - _CHECK_BYTES))
            digest.update(handle.read())
    return {"bytes": size, "sha256_head_tail": digest.hexdigest()}


def _check_shape(metadata: dict[str, Any], shown: Path) -> None:
    """RetrievalError naming the first key of ``gallery.json`` that a reader could not use."""
    from retrieval.run import check_relative_paths

    def fail(what: str):
        raise RetrievalError(f"{shown}: {what}; rebuild the index with `retrieval index`")

    for key, kind in _REQUIRED.items():
        if not isinstance(metadata.get(key), kind) or isinstance(metadata.get(key), bool):
            fail(f"no {key!r} ({kind.__name__})" if key not in metadata else f"{key!r} is not a {kind.__name__}")
    items, n, roots = metadata["items"], metadata["n_items"], metadata["roots"]
    columns = [items.get(key) for key in ("path", "label", "root")]
    if not all(isinstance(column, list) and len(column) == n for column in columns):
        fail(f"its items need a path, a label and a root each ({n} items)")
    if not roots or not all(isinstance(root, str) for root in roots):
        fail("its roots are not folder paths")
    if any(label is not None and type(label) not in (str, int) for label in items["label"]):  # -1: no label, as older builds wrote
        fail("an item's label is neither text, a number nor null")
    if any(type(r) is not int or not 0 <= r < len(roots) for r in items["root"]):
        fail(f"an item's root is not one of its {len(roots)} roots")
    faces = items.get("face")
    if faces is not None and not (isinstance(faces, list) and len(faces) == n and all(_is_face_record(f) for f in faces)):
        fail(f"its items' faces need a box, a face number and a SHA-256 each ({n} items)")
    check_relative_paths(items["path"], source=shown)
    without_face = metadata.get("without_face", [])
    if not (isinstance(without_face, list) and all(_is_photo_entry(entry, len(roots)) for entry in without_face)):
        fail("its photos without a face need a root, a path and a label each")
    check_relative_paths([entry["path"] for entry in without_face], source=shown)
    for name, check in metadata["files"].items():
        if not isinstance(check, dict) or not isinstance(check.get("bytes"), int):
            fail(f"the check of {name} is not a size and a hash")


def _previous_items(previous) -> tuple[list[str], dict[str, list], list[str]]:
    """(roots, items, skipped) of the index that a build adds to, as fresh lists; empty for a full build."""
    if previous is None:
        return [], {"path": [], "label": [], "root": []}, []
    roots = [str(root) for root in previous.roots]
    items = {key: list(values) for key, values in previous.metadata["items"].items()}
    return roots, items, previous.metadata.get("skipped", [])


def _is_photo_entry(value: Any, n_roots: int) -> bool:
    """A gallery photo without a face: {root (one of the n_roots), path (text), label (text, a number or
    null), sha256 (hex; absent in indexes built before it was kept)}."""
    from retrieval.faces.cache import is_digest

    return (isinstance(value, dict) and type(value.get("root")) is int and 0 <= value["root"] < n_roots
            and isinstance(value.get("path"), str) and (value.get("label") is None or type(value["label"]) in (str, int))
            and ("sha256" not in value or is_digest(value["sha256"])))


def _is_face_record(value: Any) -> bool:
    """A face item's record: box [x0, y0, x1, y1] (numbers), face (its rank in the photo), sha256 (hex)."""
    from retrieval.faces.cache import is_digest

    box = value.get("box") if isinstance(value, dict) else None
    return (isinstance(box, list) and len(box) == 4 and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in box)
            and type(value.get("face")) is int and value["face"] >= 0 and is_digest(value.get("sha256")))
