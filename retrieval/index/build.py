"""Building ``RUN_DIR/index/``: :func:`build_index`, :func:`add_to_index` and the build transaction.

A build embeds the gallery with the run's model (:func:`retrieval.embed.embedding_batches`, sharded
under ``torchrun``), streams the rows into the embeddings store, builds the Annoy file from them,
checks it node by node and hashes it (:func:`~retrieval.index.annoy_file.check_annoy_file`), and
writes ``gallery.json``, all inside a new version folder of the index's unit
(``index/.versions/<id>/``, :func:`retrieval.run.new_version`), under ``index/.lock`` (one build
per run at a time). Leaving that block makes the three files current in one atomic step; an
interrupted or failed build leaves the previous index current, and its folder is removed by the
next build. Images reached through symbolic links that leave the gallery folder are not indexed
(the index serves files inside its gallery folder only, :func:`retrieval.run.resolve_logged_path`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from retrieval.errors import RetrievalError
from retrieval.index.annoy_file import DEFAULT_N_TREES, build_annoy, check_annoy_file
from retrieval.index.gallery import GalleryIndex
from retrieval.index.metadata import file_check, metadata_for_build, read_index_metadata
from retrieval.index.store import ProgressCallback, RowWriter, copy_rows, shrink_rows

if TYPE_CHECKING:  # torch is imported where it is used: building an index from vectors needs none
    import torch

__all__ = ["add_to_index", "build_index", "index_writer"]

logger = logging.getLogger("retrieval")


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
    gallery_roots: list[str | Path] | None = None,
) -> dict[str, Any]:
    """Add the images of ``gallery_dir`` to the run's existing index: embed only them, append them
    to the stored embeddings and rebuild the Annoy index (same n_trees and seed unless given).
    The result equals a full build over the old and new images in that order. An image the index
    holds already (the same file, symbolic links followed, whatever folder it is reached from: a
    sub-folder or a parent of an indexed folder) is not added again; a folder that holds the
    images of an indexed folder that is no longer where the index says (moved) is refused in one
    line pointing at ``gallery_roots``. ``gallery_roots`` re-roots the index's existing folders
    first (one for each, in order; a run moved from another machine), and the new index records
    them, even when nothing is added. Returns the ``gallery.json`` content now current, with
    ``added`` (whether images were added), ``already_indexed`` (the folder's images left out as
    already in the index) and ``roots_recorded`` (whether ``gallery_roots`` changed the recorded
    roots) added, which the file does not hold."""
    return _build(run_dir, gallery_dir, add=True, n_trees=n_trees, batch_size=batch_size,
                  device=device, num_workers=num_workers, precision=precision, seed=seed,
                  n_jobs=n_jobs, on_progress=on_progress, gallery_roots=gallery_roots)


def _build(run_dir, gallery_dir, *, device, **options) -> dict[str, Any]:
    """Under ``torchrun`` every process embeds a share of the gallery and rank 0 writes the index
    (:func:`retrieval.embed.embedding_batches`); the other processes return
    ``{"rank", "world_size"}`` once their share is embedded."""
    from retrieval import distributed
    from retrieval.run import read_config

    run_dir = Path(run_dir)
    config = read_config(run_dir)  # a folder that is no run: its one-line error, before anything is created
    with distributed.process_group(device) as ctx, index_writer(run_dir, held=ctx.is_main):
        pipeline = None
        if config.faces is not None:  # a face run's pipeline, caching in RUN_DIR/faces/ (runs on whole images import none of it)
            from retrieval.faces.run_faces import run_pipeline

            pipeline = run_pipeline(run_dir, config)
        with _forgetting_on_failure(run_dir, pipeline):
            return _build_with(ctx, run_dir, gallery_dir, config=config, pipeline=pipeline, **options)


@contextlib.contextmanager
def index_writer(run_dir: str | Path, *, held: bool = True) -> Iterator[None]:
    """Hold ``RUN_DIR/index/.lock`` for a whole command that changes the index (a build, an
    ``--add``, a ``--remove``), from before it reads the current index to its commit, so that a
    second such command stops at once with a one-line error naming this one, rather than both
    running and the later commit dropping what the earlier one added. ``held`` False (a helper
    process of a torchrun launch, which writes nothing) takes no lock. An ``index/`` folder that
    holding the lock created is removed again if the command left it empty (it failed before
    writing anything)."""
    from retrieval.run import hold_lock, index_dir

    if not held or not Path(run_dir).is_dir():  # no run there: the command fails on its own, nothing is created
        yield
        return
    target = index_dir(run_dir)
    existed = target.exists()
    try:
        with hold_lock(target, "`retrieval index` on a run"):
            yield
    finally:
        if not existed:
            with contextlib.suppress(OSError):
                target.rmdir()  # only when empty


def _build_with(ctx, run_dir: Path, gallery_dir, *, config, pipeline, add: bool, n_trees, batch_size, num_workers,
                precision, seed, n_jobs, on_progress, gallery_roots=None) -> dict[str, Any]:
    """Choose the images to embed (with ``add``: those the index does not hold yet), start
    embedding them, and on rank 0 write the index (:func:`_write_index`). ``pipeline``: a face
    run's face pipeline, None for a run on whole images."""
    from retrieval.embed import embedding_batches

    previous = None
    if add:
        previous = GalleryIndex.load(run_dir, load_model=False, gallery_roots=gallery_roots)
        n_trees = previous.n_trees if n_trees is None else n_trees
        seed = int(previous.metadata["seed"]) if seed is None else seed
    if int(n_trees) < 1:
        raise RetrievalError(f"--n-trees must be at least 1, got {n_trees}")

    gallery_dir = Path(gallery_dir)
    folder, new_ids, already = _images_to_index(gallery_dir, previous)
    if previous is not None and not new_ids:  # the CLI says so in its own line ("nothing added: …"); a caller reads "added": false
        logger.info("all %d images of %s are already in the index (or listed as without a face); nothing added",
                    len(folder.paths), gallery_dir)
        return _nothing_added(run_dir, previous, already, len(folder.skipped), record=ctx.is_main)
    torch_device = ctx.device  # the device asked for; cuda:LOCAL_RANK under torchrun
    model, transform, fingerprint = _load_model(run_dir, torch_device)
    paths = [folder.paths[i] for i in new_ids]
    faces, looked, without_face = None, [], []
    if pipeline is not None:  # a face run: every face of every photo is an item (retrieval.faces.run_faces)
        from retrieval.faces.run_faces import find_share, gallery_faces

        find_share(pipeline, paths, ctx)  # torchrun: each process detects a share first, then the shared cache answers
        searched = (lambda d, t: on_progress("detect", d, t)) if on_progress and ctx.is_main else None
        n_photos, looked, id_of = len(paths), list(new_ids), dict(zip(paths, new_ids))
        found = gallery_faces(pipeline, paths, new_ids, on_progress=searched, adding=previous is not None)
        new_ids, paths, faces = found.owners, found.crops, found.records
        if folder.labelled:
            _warn_group_photos(folder, new_ids)
        without_face = [(id_of[path], digest) for path, digest in zip(found.without_face, found.without_face_sha256)]
        folder = dataclasses.replace(folder, skipped=[*folder.skipped, *found.unreadable])  # counted with the scan's
        if not paths:  # adding photos in which no face is found (warned by name above): the index stays as it is
            logger.debug("no face found in the %d image(s) of %s not yet in the index; nothing added", n_photos, gallery_dir)
            return _nothing_added(run_dir, previous, already, len(folder.skipped), record=ctx.is_main)
    batches = embedding_batches(model, paths, transform, batch_size=batch_size, device=torch_device,
                                num_workers=num_workers, precision=precision, ctx=ctx,
                                on_progress=(lambda d, t: on_progress("embed", d, t)) if on_progress and ctx.is_main else None)
    if not ctx.is_main:  # a helper process of a torchrun launch: embed its batches for rank 0, write nothing
        for _ in batches:
            pass
        if previous is not None:
            previous.close()
        return {"rank": ctx.rank, "world_size": ctx.world_size}
    replaced = _face_digests(run_dir) if previous is None and faces is not None else set()  # before it is replaced
    metadata = _write_index(run_dir, config, batches, previous=previous, folder=folder, gallery_dir=gallery_dir,
                            new_ids=new_ids, n_trees=n_trees, seed=seed, n_jobs=n_jobs, on_progress=on_progress,
                            fingerprint=fingerprint, faces=faces, looked=looked, without_face=without_face)
    if replaced:
        metadata = {**metadata, "faces_forgotten": _forget_replaced_faces(run_dir, pipeline, replaced, metadata)}
    if previous is not None:
        metadata = {**metadata, "added": True, "already_indexed": already,
                    "roots_recorded": [str(root) for root in previous.roots] != previous.metadata["roots"]}
    return metadata


def _images_to_index(gallery_dir: Path, previous: GalleryIndex | None) -> tuple[Any, list[int], int]:
    """(the scanned folder, the indices of its images to embed, how many it holds that ``previous``
    indexes already): every image inside the folder for a new index (:func:`_inside`), those not
    indexed yet for an ``--add`` (:func:`_not_yet_indexed`, after :func:`_refuse_a_moved_folder`).
    A one-line RetrievalError when no image lies inside the folder; ``previous`` is closed on any
    error."""
    from retrieval.data import scan_folder

    try:
        folder = scan_folder(gallery_dir, within_root=True)  # warns about unreadable images (skipped) in one line
        new_ids = _inside(folder, gallery_dir)
        if not new_ids:
            raise RetrievalError(f"{gallery_dir}: every image is reached through a symbolic link that leaves the folder, and "
                                 "an index serves only files inside its gallery folder; index the folder the links point "
                                 "into, or copy the images")
        if previous is None:
            return folder, new_ids, 0
        _refuse_a_moved_folder(previous, gallery_dir)
        not_yet = _not_yet_indexed(previous, folder, gallery_dir, new_ids)
        if not_yet and previous.metadata.get("labelled") and not folder.labelled:
            logger.warning("%s is a flat folder: its images have no label, so the index will no longer count as labelled "
                           "(`retrieval confusions` and the app's class checks need every item labelled); put them in "
                           "class folders (DIR/<class>/<image>) to keep it labelled", gallery_dir)
        return folder, not_yet, len(new_ids) - len(not_yet)
    except BaseException:
        if previous is not None:
            previous.close()
        raise


def _nothing_added(run_dir: Path, previous: GalleryIndex, already: int, skipped: int, *, record: bool) -> dict[str, Any]:
    """``--add`` with nothing to add: the index stays as it is but for the roots ``--gallery-root``
    gave, which are recorded (:func:`_record_roots`; with ``record``: rank 0 of a torchrun launch,
    or the only process). Returns the current ``gallery.json`` content with ``added`` (False),
    ``already_indexed``, ``roots_recorded`` and ``skipped_now`` (the unreadable images of the added
    folder, warned of by name: the index's ``skipped`` list is not rewritten, so it cannot count them)."""
    try:
        recorded = _record_roots(run_dir, previous) if record else False
    finally:
        previous.close()
    return {**read_index_metadata(run_dir), "added": False, "already_indexed": already, "roots_recorded": recorded,
            "skipped_now": skipped}


def _record_roots(run_dir: Path, previous: GalleryIndex) -> bool:
    """Record the roots ``previous`` was loaded with (``--gallery-root``) when they differ from those
    its ``gallery.json`` records: a new version of the index whose ``gallery.json`` names them, its
    data files carried over unchanged, committed in one step as a build is. False when there was
    nothing to record. The caller holds the index's lock (:func:`index_writer`)."""
    from retrieval.run import ANN_NAME, EMBEDDINGS_NAME, INDEX_UNIT, METADATA_NAME, index_dir, new_version

    roots = [str(root) for root in previous.roots]
    if roots == previous.metadata["roots"]:
        return False
    with new_version(index_dir(run_dir), INDEX_UNIT, keep=(ANN_NAME, EMBEDDINGS_NAME)) as version:
        metadata = {**previous.metadata, "build_id": version.name, "roots": roots}
        (version / METADATA_NAME).write_text(json.dumps(metadata, indent=1) + "\n")
    return True


def _warn_group_photos(folder, owners: list[int]) -> None:
    """One warning line when photos of a labelled gallery hold more than one face: each of their faces
    is indexed under the photo's class folder, so the other people in them get that label."""
    from collections import Counter

    groups = sorted(i for i, n in Counter(owners).items() if n > 1)
    if groups:
        logger.warning("%d photo(s) in class folders hold more than one face (e.g. %s): every face of a photo is indexed "
                       "under its folder's label, so the other people in it are labelled wrongly; index group photos from "
                       "a flat folder (--add), where faces have no label, or crop them", len(groups), folder.relative_path(groups[0]))


def _face_digests(run_dir: Path) -> set[str]:
    """The photo contents (SHA-256) of the run's current face index (a full build is about to
    replace it, or a failed command must keep them): its items' and those of its photos without a
    face; none when there is no readable one."""
    try:
        return _digests_of(read_index_metadata(run_dir))
    except (RetrievalError, OSError, KeyError, TypeError, AttributeError):
        return set()


def _digests_of(metadata: dict[str, Any]) -> set[str]:
    """The photo contents (SHA-256) a face index's ``gallery.json`` names: of its items, and of its
    photos without a face (recorded since they are kept)."""
    from retrieval.faces.cache import is_digest

    records = [*metadata["items"].get("face", []), *metadata.get("without_face", [])]
    return {r["sha256"] for r in records if isinstance(r, dict) and is_digest(r.get("sha256"))}


def _forget_replaced_faces(run_dir: Path, pipeline, replaced: set[str], metadata: dict[str, Any]) -> int:
    """A face index rebuilt on another gallery: delete the cached faces of the replaced index's
    photos that the new index does not hold and training did not read (its crops stay: the mining
    log shows them), as ``--remove`` does for the photos it takes out; the number of cache files
    deleted (``pipeline``: the build's own). Otherwise they would stay in ``RUN_DIR/faces/`` where no
    ``--remove`` reaches them."""
    gone = replaced - _digests_of(metadata) - _trained_digests(run_dir)
    return pipeline.forget_digests(gone) if gone else 0


def _trained_digests(run_dir: Path) -> set[str]:
    """The photo contents whose crops training read (the mining log shows them): never forgotten here."""
    from retrieval.faces.run_faces import training_photo_names

    return {name.split(".", 1)[0] for name in training_photo_names(run_dir)}


@contextlib.contextmanager
def _forgetting_on_failure(run_dir: Path, pipeline) -> Iterator[None]:
    """On an error or Ctrl-C, delete what ``pipeline`` (a face run's, or None) cached in this command
    that neither the index now current nor training refers to: the faces of a gallery whose build
    stopped half-way are in no index, so no ``--remove`` would ever reach them (personal data left
    in ``RUN_DIR/faces/``)."""
    try:
        yield
    except BaseException:
        if pipeline is not None and pipeline.cache is not None and pipeline.cache.written:
            stray = pipeline.cache.written - _face_digests(run_dir) - _trained_digests(run_dir)
            pipeline.forget_digests(stray)
            logger.debug("forgot the cached faces of %d photo(s) of the stopped command", len(stray))
        raise


def _write_index(run_dir: Path, config, batches: Iterable[tuple[np.ndarray, list[int]]], *,
                 previous: GalleryIndex | None, folder, gallery_dir: Path, new_ids: list[int], n_trees: int,
                 seed: int, n_jobs: int, on_progress: ProgressCallback | None, fingerprint: str,
                 faces: list[dict[str, Any]] | None = None, looked: list[int] = (),
                 without_face: list[tuple[int, str]] = ()) -> dict[str, Any]:
    """The build transaction (the caller holds the index's lock, :func:`index_writer`): write the embeddings (the previous index's rows, then
    ``batches``), the Annoy file and ``gallery.json`` into a new version of the index, which
    leaving the ``new_version`` block commits. Returns the new ``gallery.json`` content. ``faces``:
    a face run's record of each embedded item (``new_ids`` then repeats a photo once per face);
    ``looked``: the folder's photos it searched for faces, ``without_face``: those where it found none
    (id, SHA-256 of the photo)."""
    from retrieval.run import ANN_NAME, EMBEDDINGS_NAME, INDEX_UNIT, METADATA_NAME, index_dir, new_version

    target = index_dir(run_dir)
    with new_version(target, INDEX_UNIT) as version:
        _remove_stale_builds(target)
        n_old = len(previous) if previous is not None else 0
        embeddings_path = version / EMBEDDINGS_NAME
        with RowWriter(embeddings_path, n_old + len(new_ids), config.embedding_dim) as writer:
            if previous is not None:
                copy_rows(previous.files[EMBEDDINGS_NAME], writer, n_old, on_progress)
            embedded: list[int] = []
            for rows, ids in batches:
                writer.write(n_old + len(embedded), rows)
                embedded.extend(ids)
        kept = [new_ids[j] for j in embedded]
        unread = [folder.paths[i] for i in sorted(set(new_ids) - set(kept))]
        if not kept:
            raise RetrievalError(f"{gallery_dir}: none of the gallery images could be read")
        if len(kept) < len(new_ids):
            shrink_rows(embeddings_path, n_old + len(kept), config.embedding_dim)

        annoy_index = build_annoy(embeddings_path, version / ANN_NAME, n_trees=n_trees, seed=seed,
                                  n_jobs=n_jobs, on_progress=on_progress)
        annoy_index.unload()
        shutil.copymode(embeddings_path, version / ANN_NAME)  # Annoy creates it 0600; follow the umask
        ann_sha256 = check_annoy_file(version / ANN_NAME, config.embedding_dim, n_old + len(kept))

        metadata = metadata_for_build(
            previous=previous, folder=folder, kept=kept, gallery_dir=gallery_dir, config=config,
            fingerprint=fingerprint, build_id=version.name, n_trees=n_trees, seed=seed,
            faces=None if faces is None else [faces[j] for j in embedded], looked=looked, without_face=without_face,
            skipped=[Path(p).relative_to(folder.root).as_posix() for p in [*folder.skipped, *unread]],
            files={ANN_NAME: file_check(version / ANN_NAME, sha256=ann_sha256),
                   EMBEDDINGS_NAME: file_check(embeddings_path)},
        )
        if previous is not None:
            previous.close()
        (version / METADATA_NAME).write_text(json.dumps(metadata, indent=1) + "\n")
    return metadata


def _load_model(run_dir: Path, device):
    """(model, eval transform, fingerprint) of the run's model, the fingerprint that of the very
    weights loaded (training may save a better epoch meanwhile: the index then reads as built by
    another model, and is rebuilt, rather than pairing old embeddings with new weights)."""
    from retrieval.data import build_transforms
    from retrieval.run import load_model, model_fingerprint

    model, loaded = load_model(run_dir, device=device)
    fingerprint = loaded.weights_sha256[:16] if loaded.weights_sha256 else model_fingerprint(run_dir)
    return model, build_transforms(loaded.data_config, train=False), fingerprint


def _inside(folder, gallery_dir: Path) -> list[int]:
    """Indices of the folder's images (a scan ``within_root``, which sets aside unopened those
    reached through symbolic links that leave ``gallery_dir``); a warning line counts the images
    set aside, which are not indexed (none when no image is inside: the caller refuses the folder
    in one line)."""
    if folder.paths and folder.outside:
        logger.warning("%s: %d image(s) reached through symbolic links that leave the folder are not indexed "
                       "(e.g. %s): an index serves only files inside its gallery folder",
                       gallery_dir, len(folder.outside), folder.outside[0].relative_to(folder.root).as_posix())
    return list(range(len(folder.paths)))


def _not_yet_indexed(previous: GalleryIndex, folder, gallery_dir: Path, candidates: list[int]) -> list[int]:
    """The ``candidates`` (indices of the folder's images) that are not the same file, symbolic
    links followed, as an item of the index, nor as a photo it lists without a face (a face run's
    ``without_face``: searched already, and warned of then), whatever folder each is reached from
    (``gallery_dir`` may be an indexed folder, a sub-folder or a parent of one). Only the items of
    the index's folders that overlap ``gallery_dir`` are looked at: an indexed file lies inside
    its folder, and a candidate inside ``gallery_dir``."""
    real = Path(os.path.realpath(gallery_dir))
    overlapping = set()
    for number, root in enumerate(previous.roots):
        real_root = Path(os.path.realpath(root))
        if real_root.is_relative_to(real) or real.is_relative_to(real_root):
            overlapping.add(number)
    entries = [*zip(previous.metadata["items"]["root"], previous.relative_paths),
               *((entry["root"], entry["path"]) for entry in previous.metadata.get("without_face", []))]
    held = {os.path.realpath(os.path.join(previous.roots[r], p)) for r, p in entries if r in overlapping}
    return [i for i in candidates if os.path.realpath(folder.paths[i]) not in held]


def _refuse_a_moved_folder(previous: GalleryIndex, gallery_dir: Path) -> None:
    """A one-line RetrievalError when ``gallery_dir`` holds the first images the index lists under
    one of its folders that is not where the index says (:meth:`GalleryIndex.unfound_roots`): that
    folder moved to ``gallery_dir``, and adding it would index every image a second time; its new
    place is given with ``--gallery-root``."""
    from retrieval.index.gallery import unfound_roots

    item_roots = previous.metadata["items"]["root"]
    for number in unfound_roots(previous.roots, item_roots, previous.relative_paths):
        first = [p for r, p in zip(item_roots, previous.relative_paths) if r == number][:20]
        if any((gallery_dir / path).is_file() for path in first):
            several = (f" (one for each of the index's {len(previous.roots)} gallery folders, in order)"
                       if len(previous.roots) > 1 else "")
            raise RetrievalError(f"{gallery_dir} holds the images the index lists under {previous.roots[number]}, which is "
                                 f"not there any more: if that folder moved here, give its new place with --gallery-root "
                                 f"{gallery_dir}{several}, which records it and adds only the images not indexed yet; "
                                 "nothing added")


def _remove_stale_builds(index_dir: Path) -> None:
    """Temporary folders of builds from before versioned indexes (``.build-*``) that were killed
    (we hold the lock, so none is running)."""
    for stale in index_dir.glob(".build-*"):
        shutil.rmtree(stale, ignore_errors=True)
