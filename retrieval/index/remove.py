"""Removing items from an index: ``retrieval index RUN --remove-label NAME`` / ``--remove PATH``.

A person (or product) leaves a gallery without re-embedding anything: the index is rebuilt from its
stored embeddings without the chosen items — those of a label, or those of a photo (given as a path;
the photo may already be gone from disk) — as a new version of the index's unit, committed in one
atomic step as a build is (:mod:`~retrieval.index.build`). In a face run the removed items' cached
faces (detections and aligned crops, ``RUN_DIR/faces/``) are deleted too, by the photos' SHA-256
that ``gallery.json`` keeps, unless an item that stays has the same content: face crops and
embeddings are personal data, kept only inside the run and gone with what was removed.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from retrieval.errors import RetrievalError, did_you_mean
from retrieval.index.annoy_file import build_annoy, check_annoy_file
from retrieval.index.build import index_writer
from retrieval.index.gallery import GalleryIndex
from retrieval.index.metadata import file_check
from retrieval.index.store import RowWriter

__all__ = ["remove_from_index"]


def remove_from_index(run_dir: str | Path, *, labels: Iterable[str] = (), paths: Iterable[str | Path] = (),
                      n_jobs: int = -1, gallery_roots: list[str | Path] | None = None) -> dict[str, Any]:
    """Rebuild the run's index without the items of ``labels`` and of the photos ``paths``, and
    without the face run's record of such photos where no face was found; returns ``{"removed": n
    items, "n_items": n left, "faces_forgotten": cache files deleted, "without_face_forgotten":
    photos without a face no longer listed}``. A one-line error, and nothing removed, when a label
    or a path given matches nothing (a typo: it names them, with the labels they may have meant),
    or when nothing would be left. ``gallery_roots`` re-roots the index's folders first (a gallery moved since
    it was indexed: one for each, in order, as for ``--add``); the new index records them."""
    with index_writer(run_dir):
        return _remove(Path(run_dir), {_composed(label) for label in labels}, [Path(p) for p in paths], n_jobs=n_jobs,
                       gallery_roots=gallery_roots)


def _composed(label: Any) -> Any:
    """A label in Unicode's composed form (NFC): "Café" typed and "Cafe" + U+0301 from a folder a Mac
    named are one label, as ``evaluate`` matches folder names."""
    import unicodedata

    return unicodedata.normalize("NFC", label) if isinstance(label, str) else label


def _remove(run_dir: Path, labels: set[str], paths: list[Path], *, n_jobs: int,
            gallery_roots: list[str | Path] | None) -> dict[str, Any]:
    """:func:`remove_from_index` under the index's lock."""
    previous = GalleryIndex.load(run_dir, load_model=False, gallery_roots=gallery_roots)
    try:
        held_keys = _held_keys(previous)
        wanted = _wanted_keys(previous, paths, held_keys)
        without_face = previous.metadata.get("without_face", [])
        held_labels = {*previous.labels, *(entry["label"] for entry in without_face)}
        unknown_labels = sorted(label for label in labels if label not in {_composed(held) for held in held_labels})
        unknown_paths = [str(path) for path, key in wanted.items() if key not in held_keys]
        if unknown_labels or unknown_paths:  # a typo among the names: remove nothing rather than part of what was meant
            unknown = [*unknown_labels, *unknown_paths]
            given = ", ".join(unknown[:3]) + (" …" if len(unknown) > 3 else "")
            known = (label for label in held_labels if label is not None)
            raise RetrievalError(f"nothing in {run_dir}'s index has the label(s) or path(s) given ({given}); nothing removed"
                                 + did_you_mean(unknown_labels, known))
        wanted = set(wanted.values())
        removed = [i for i in range(len(previous)) if _composed(previous.labels[i]) in labels or _item_key(previous, i) in wanted]
        faceless_kept = [entry for entry in without_face
                         if _composed(entry["label"]) not in labels and _key(Path(previous.roots[entry["root"]]) / entry["path"]) not in wanted]
        gone = set(removed)
        kept = [i for i in range(len(previous)) if i not in gone]
        if not kept:
            how = (f", which also deletes these photos' cached faces (deleting {run_dir}/index would leave them in {run_dir}/faces/)"
                   if previous.has_faces else f", or delete {run_dir}/index")
            raise RetrievalError(f"that would remove all {len(previous)} items of {run_dir}'s index; build a new index "
                                 f"on another gallery{how}")
        _write_without(run_dir, previous, kept, faceless_kept, n_jobs=n_jobs)
        faceless_gone = [entry for entry in without_face if entry not in faceless_kept]
        forgotten = _forget_faces(run_dir, previous, removed, kept, faceless_gone, faceless_kept)
    finally:
        previous.close()
    return {"removed": len(removed), "n_items": len(kept), "faces_forgotten": forgotten,
            "without_face_forgotten": len(without_face) - len(faceless_kept)}


def _write_without(run_dir: Path, previous: GalleryIndex, kept: list[int], without_face: list[dict[str, Any]], *,
                   n_jobs: int) -> None:
    """A new version of the index holding only the ``kept`` items, their stored rows reused."""
    from retrieval.run import ANN_NAME, EMBEDDINGS_NAME, INDEX_UNIT, METADATA_NAME, index_dir, new_version

    dim = previous.embedding_dim
    with new_version(index_dir(run_dir), INDEX_UNIT) as version:
        embeddings_path = version / EMBEDDINGS_NAME
        rows = np.asarray(kept, dtype=np.int64)
        with RowWriter(embeddings_path, len(kept), dim) as writer:
            for start in range(0, len(rows), 65536):
                writer.write(start, np.asarray(previous.embeddings[rows[start:start + 65536]], dtype=np.float32))
        metadata = previous.metadata
        annoy_index = build_annoy(embeddings_path, version / ANN_NAME, n_trees=int(metadata["n_trees"]),
                                  seed=int(metadata["seed"]), n_jobs=n_jobs)
        annoy_index.unload()
        shutil.copymode(embeddings_path, version / ANN_NAME)
        ann_sha256 = check_annoy_file(version / ANN_NAME, dim, len(kept))
        items = {key: [values[i] for i in kept] for key, values in metadata["items"].items()}
        faceless = {"without_face": without_face} if "without_face" in metadata else {}
        new = {**metadata, "build_id": version.name, "n_items": len(kept), "items": items, **faceless,
               "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               "roots": [str(root) for root in previous.roots],
               "files": {ANN_NAME: file_check(version / ANN_NAME, sha256=ann_sha256), EMBEDDINGS_NAME: file_check(embeddings_path)}}
        (version / METADATA_NAME).write_text(json.dumps(new, indent=1) + "\n")


def _forget_faces(run_dir: Path, previous: GalleryIndex, removed: list[int], kept: list[int],
                  faceless_gone: list[dict[str, Any]], faceless_kept: list[dict[str, Any]]) -> int:
    """Delete the cached faces of the removed photos (by content) that no kept item shares: those of
    the removed items, and the cached detection (no face) of the removed photos without a face
    (their ``sha256``; an index built before it was kept: the file's, when it is still there)."""
    if not previous.has_faces:
        return 0
    from retrieval.faces.run_faces import run_pipeline
    from retrieval.run import read_config

    kept_digests = {previous.face(i)["sha256"] for i in kept} | {_faceless_digest(previous, e) for e in faceless_kept}
    digests = ({previous.face(i)["sha256"] for i in removed} | {_faceless_digest(previous, e) for e in faceless_gone}) \
        - kept_digests - {None}
    pipeline = run_pipeline(run_dir, read_config(run_dir))
    return 0 if pipeline is None else pipeline.forget_digests(digests)


def _faceless_digest(index: GalleryIndex, entry: dict[str, Any]) -> str | None:
    """The content (SHA-256) of a photo the index lists as without a face: recorded, or, for an index
    built before it was, the file's when it is still there; else None."""
    if entry.get("sha256"):
        return entry["sha256"]
    from retrieval.faces.pipeline import FacePipeline

    path = Path(index.roots[entry["root"]]) / entry["path"]
    return FacePipeline.digest(path) if path.is_file() else None


def _held_keys(index: GalleryIndex) -> set[str]:
    """The :func:`_key` of every photo the index holds: its items' and those it lists without a face."""
    return ({_item_key(index, i) for i in range(len(index))}
            | {_key(Path(index.roots[entry["root"]]) / entry["path"]) for entry in index.metadata.get("without_face", [])})


def _wanted_keys(index: GalleryIndex, paths: list[Path], items: set[str]) -> dict[Path, str]:
    """The photo each of ``paths`` names, as a :func:`_key` string (``items``: the index's photos,
    :func:`_held_keys`): each as given (from the current folder), or, when
    it is relative and names nothing so, as a path inside the index's gallery folder or the folder that
    ``search`` shows paths relative to (``s31/photo.jpg``; ``test/s31/photo.jpg`` for an index of
    several folders: ``GalleryIndex.shown_path``). A relative path found inside two gallery folders is
    a one-line error naming them."""
    bases = [*index.roots, *([index.shown_root] if index.shown_root is not None else [])]
    wanted = {}
    for path in paths:
        key = _key(path)
        inside = [] if key in items or path.is_absolute() else \
            [k for k in dict.fromkeys(_key(Path(base) / path) for base in bases) if k in items]
        if len(inside) > 1:
            raise RetrievalError(f"{path} names a photo in more than one gallery folder of the index ({', '.join(inside)}); "
                                 "give the one to remove by its full path")
        wanted[path] = inside[0] if inside else key
    return wanted


def _key(path: Path) -> str:
    """A photo path compared as the absolute, normalised path (the file may be gone: no link resolved)."""
    return os.path.normpath(os.path.abspath(path))


def _item_key(index: GalleryIndex, item: int) -> str:
    return _key(Path(index.roots[index.metadata["items"]["root"][item]]) / index.relative_paths[item])
