"""Building ``RUN_DIR/index/``: :func:`build_index`, :func:`add_to_index` and the build transaction.

A build embeds the gallery with the run's model (:func:`retrieval.embed.embedding_batches`, sharded
under ``torchrun``), streams the rows into the embeddings store, builds the Annoy file from them and
writes ``gallery.json``, all inside ``index/.build-<id>/``, under a lock (one build per run at a
time). :func:`_commit` then moves the files into place, embeddings first and ``gallery.json`` (the
commit point) last; an interrupted build leaves only its temporary folder, removed by the next one.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from retrieval.errors import RetrievalError
from retrieval.index.annoy_file import DEFAULT_N_TREES, build_annoy
from retrieval.index.gallery import GalleryIndex, load_model_and_transform
from retrieval.index.metadata import file_check, metadata_for_build, read_index_metadata
from retrieval.index.store import ProgressCallback, RowWriter, copy_rows, shrink_rows

if TYPE_CHECKING:  # torch is imported where it is used: building an index from vectors needs none
    import torch

__all__ = ["add_to_index", "build_index"]

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
) -> dict[str, Any]:
    """Add the images of ``gallery_dir`` to the run's existing index: embed only them, append them
    to the stored embeddings and rebuild the Annoy index (same n_trees and seed unless given).
    The result equals a full build over the old and new images in that order."""
    return _build(run_dir, gallery_dir, add=True, n_trees=n_trees, batch_size=batch_size,
                  device=device, num_workers=num_workers, precision=precision, seed=seed,
                  n_jobs=n_jobs, on_progress=on_progress)


def _build(run_dir, gallery_dir, *, device, **options) -> dict[str, Any]:
    """Under ``torchrun`` every process embeds a share of the gallery and rank 0 writes the index
    (:func:`retrieval.embed.embedding_batches`); the other processes return
    ``{"rank", "world_size"}`` once their share is embedded."""
    from retrieval import distributed

    with distributed.process_group(device) as ctx:
        return _build_with(ctx, run_dir, gallery_dir, **options)


def _build_with(ctx, run_dir, gallery_dir, *, add: bool, n_trees, batch_size, num_workers, precision,
                seed, n_jobs, on_progress) -> dict[str, Any]:
    """Choose the images to embed (with ``add``: those the index does not hold yet), start
    embedding them, and on rank 0 write the index (:func:`_write_index`)."""
    from retrieval.data import scan_folder
    from retrieval.embed import embedding_batches
    from retrieval.run import read_config

    run_dir = Path(run_dir)
    config = read_config(run_dir)
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
    model, transform = load_model_and_transform(run_dir, torch_device)
    paths = [folder.paths[i] for i in new_ids]
    batches = embedding_batches(model, paths, transform, batch_size=batch_size, device=torch_device,
                                num_workers=num_workers, precision=precision, ctx=ctx,
                                on_progress=(lambda d, t: on_progress("embed", d, t)) if on_progress and ctx.is_main else None)
    if not ctx.is_main:  # a helper process of a torchrun launch: embed its batches for rank 0, write nothing
        for _ in batches:
            pass
        if previous is not None:
            previous.close()
        return {"rank": ctx.rank, "world_size": ctx.world_size}
    return _write_index(run_dir, config, batches, previous=previous, folder=folder, gallery_dir=gallery_dir,
                        new_ids=new_ids, n_trees=n_trees, seed=seed, n_jobs=n_jobs, on_progress=on_progress)


def _write_index(run_dir: Path, config, batches: Iterable[tuple[np.ndarray, list[int]]], *,
                 previous: GalleryIndex | None, folder, gallery_dir: Path, new_ids: list[int], n_trees: int,
                 seed: int, n_jobs: int, on_progress: ProgressCallback | None) -> dict[str, Any]:
    """The build transaction: under the lock, write the embeddings (the previous index's rows, then
    ``batches``), the Annoy file and ``gallery.json`` into ``index/.build-<id>/``, then commit them.
    Returns the new ``gallery.json`` content."""
    from retrieval.run import ANN_NAME, EMBEDDINGS_NAME, METADATA_NAME, index_dir, model_fingerprint

    target = index_dir(run_dir)
    target.mkdir(parents=True, exist_ok=True)
    with _build_lock(target):
        _remove_stale_builds(target)
        build_id = uuid.uuid4().hex
        tmp = target / f".build-{build_id}"
        tmp.mkdir()
        try:
            n_old = len(previous) if previous is not None else 0
            embeddings_path = tmp / EMBEDDINGS_NAME
            with RowWriter(embeddings_path, n_old + len(new_ids), config.embedding_dim) as writer:
                if previous is not None:
                    copy_rows(target / EMBEDDINGS_NAME, writer, n_old, on_progress)
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

            annoy_index = build_annoy(embeddings_path, tmp / ANN_NAME, n_trees=n_trees, seed=seed,
                                      n_jobs=n_jobs, on_progress=on_progress)
            annoy_index.unload()
            shutil.copymode(embeddings_path, tmp / ANN_NAME)  # Annoy creates it 0600; follow the umask

            metadata = metadata_for_build(
                previous=previous, folder=folder, kept=kept, gallery_dir=gallery_dir, config=config,
                fingerprint=model_fingerprint(run_dir), build_id=build_id, n_trees=n_trees, seed=seed,
                skipped=[str(p) for p in [*folder.skipped, *unread]],
                files={name: file_check(tmp / name) for name in (ANN_NAME, EMBEDDINGS_NAME)},
            )
            if previous is not None:
                previous.close()
            (tmp / METADATA_NAME).write_text(json.dumps(metadata, indent=1) + "\n")
            _commit(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return metadata


def _not_yet_indexed(previous: GalleryIndex, folder, gallery_dir: Path) -> list[int]:
    """Indices of the folder's images that the index does not hold yet (same root and path)."""
    root = str(gallery_dir.resolve())
    item_roots = previous.metadata["items"]["root"]
    indexed = {(str(previous.roots[r]), p) for r, p in zip(item_roots, previous.relative_paths)}
    return [i for i in range(len(folder.paths)) if (root, folder.relative_path(i)) not in indexed]


def _commit(tmp: Path, index_dir: Path) -> None:
    """Move a finished build into place: data files first, gallery.json (the commit point) last."""
    from retrieval.run import ANN_NAME, EMBEDDINGS_NAME, METADATA_NAME

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
