"""A run's faces: the one place that turns images into what a face run embeds.

A face run (``retrieval train --faces``) records its pipeline in config.json (``"faces"``); every
reader calls :func:`run_pipeline` (None for a run on whole images) and then one of:

- :func:`face_folder`: a scanned folder with each image replaced by the cached PNG of its most
  confident face (ties: the larger box); images without a face are left out with one warning line
  that counts them and names a few. Training (its training and validation classes) and the
  labelled folders of ``evaluate`` / ``calibrate`` use it: the crops are files, so the data set,
  its decode cache and the augmentation (after alignment) work on them unchanged, and a second
  epoch reads the cache instead of detecting again.
- :meth:`FacePipeline.faces_many` itself, most confident face first, for images given one at a
  time (``verify``, search queries, the app's uploads): they are not cached.
- :func:`record_training_photos` / :func:`training_photo_names`: which training photo each crop was
  cut from (``RUN_DIR/faces/training_photos.json``), so that the mining log, which names the crops
  training read, can be shown by the photos' names (``retrieval mining``, the app).
- :func:`gallery_faces`: every face of every gallery photo, each an item of the index with its box
  and the photo's SHA-256 (``retrieval index``); :func:`crop_file` finds an item's cached crop.

The cache lives in ``RUN_DIR/faces/`` (:func:`retrieval.run.files.faces_dir`) for training and the
index alike: face crops are personal data and stay inside the run.
"""

from __future__ import annotations

import contextlib
import logging
import re
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple


from retrieval import data
from retrieval.errors import RetrievalError
from retrieval.faces.detect import DetectorSettings
from retrieval.faces.pipeline import AlignedFace, FacePipeline
from retrieval.run.config import read_config
from retrieval.run.files import FACES_DIR, faces_dir

__all__ = ["CROP_FILE", "TRAINING_PHOTOS", "GalleryFaces", "crop_file", "face_folder", "faces_or_errors", "find_share", "gallery_faces",
           "own_crop", "record_training_photos", "run_pipeline", "scratch_pipeline", "training_photo_names", "training_pipeline", "with_photo_names"]

log = logging.getLogger("retrieval")
#: in ``RUN_DIR/faces/``: each training crop's file name → the photo it was cut from, relative to the data folder
TRAINING_PHOTOS = "training_photos.json"
#: a cached face crop's file name (retrieval.faces.cache: <sha256>.<crop key>.<i>.png) and its settings folder's
CROP_FILE = re.compile(r"^[0-9a-f]{64}\.[A-Za-z0-9_-]+px\.\d+\.png$")
SETTINGS_FOLDER = re.compile(r"^[A-Za-z0-9_-]+$")


def run_pipeline(run_dir: str | Path, config: Any, *, device: str = "cpu") -> FacePipeline | None:
    """The face pipeline a run recorded (``config.faces``, a :class:`~retrieval.run.RunConfig`),
    caching in ``RUN_DIR/faces/``; None for a run on whole images."""
    settings = config.faces
    if settings is None:
        return None
    return FacePipeline.from_settings_json(settings, cache_dir=faces_dir(run_dir), device=device)


@contextlib.contextmanager
def scratch_pipeline(run_dir: str | Path, config: Any, *, device: str = "cpu") -> Iterator[FacePipeline | None]:
    """The run's face pipeline (:func:`run_pipeline`) caching in a temporary folder inside
    ``RUN_DIR/faces/``, deleted on exit (an error or Ctrl-C too): for the commands that read a folder
    of photos that is neither training's nor the gallery's (``evaluate``, ``calibrate``,
    ``confusions``). Their crops are needed only while the command embeds them; kept, they would be
    personal data that ``index --remove`` / ``--remove-label`` cannot reach (they are no index's
    items). A photo the run's own cache already holds (training's, the gallery's) is copied from it;
    the others are detected afresh each time. None for a run on whole images."""
    if config.faces is None:
        yield None
        return
    folder = faces_dir(run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".scratch-", dir=folder) as scratch:
        yield FacePipeline.from_settings_json(config.faces, cache_dir=scratch, cache_read_from=folder, device=device)


def training_pipeline(out: str | Path, image_size: int, settings: DetectorSettings | None = None, *,
                      resume: bool = False) -> FacePipeline:
    """The face pipeline training uses, cached in ``OUT/faces/``: for a new run the one with these
    detector ``settings`` (default :class:`DetectorSettings`; crops at the run's image size); on
    ``--resume`` the one the run recorded, so that a run saved before a pipeline setting existed
    (the face mask, landmark refinement, the longest side searched, the recheck) goes on training on the crops it
    started with."""
    recorded = run_pipeline(out, read_config(out)) if resume else None
    return recorded if recorded is not None else FacePipeline(settings, output_size=image_size, cache_dir=faces_dir(out))


def faces_or_errors(pipeline: FacePipeline, paths: Sequence[Path], *,
                    on_progress: Callable[[int, int], None] | None = None) -> list[list[AlignedFace] | None]:
    """Every face of each file (most confident first); None for a file that cannot be read
    (warned about by name). Detected in one batch; one file at a time only when the batch fails.
    ``on_progress(done, total)``: as :meth:`FacePipeline.faces_many` reports it."""
    try:
        return list(pipeline.faces_many(list(paths), on_progress=on_progress))
    except RetrievalError:
        results: list[list[AlignedFace] | None] = []
        for path in paths:
            try:
                results.append(pipeline.faces(path))
            except RetrievalError as error:
                log.warning("faces: %s skipped: %s", path, error)
                results.append(None)
            if on_progress is not None:
                on_progress(len(results), len(paths))
        return results


def find_share(pipeline: FacePipeline, paths: Sequence[Path], ctx: Any = None) -> None:
    """Under torchrun (``ctx``, a :class:`~retrieval.distributed.DistributedContext` of more than one
    process), before the pass over every photo: this process's share of ``paths`` (every
    ``world_size``-th, from its rank) searched for faces into the cache, then a barrier. The cache
    then answers the full pass for the others' shares where the processes share a file system (one
    machine), so each photo is detected once; on separate disks each process finds the rest itself,
    as it did before. A file that cannot be read ends the share early: the full pass names it.
    Nothing for one process (``ctx`` None or of world size 1)."""
    if ctx is None or ctx.world_size <= 1:
        return
    try:
        pipeline.faces_many(list(paths)[ctx.rank::ctx.world_size])
    except RetrievalError:
        pass
    ctx.barrier()


def face_folder(folder: data.ImageFolder, pipeline: FacePipeline, what: str = "training", *,
                on_progress: Callable[[int, int], None] | None = None) -> tuple[data.ImageFolder, list[Path]]:
    """``folder`` with each image replaced by its most confident face's crop file (the cache's PNG);
    images without a face left out, with one warning line, and images that cannot be read (each
    warned of by name) added to its ``skipped``. Images holding several faces are counted in one
    warning line too: the most confident face takes the class folder's label, and it may be someone
    else's. Returns the new folder (same root and classes) and the photos without a face.
    ``on_progress(done, total)``: images searched."""
    if pipeline.cache is None:
        raise ValueError("face_folder needs a pipeline with a cache (its crops are the files it returns)")
    found = faces_or_errors(pipeline, folder.paths, on_progress=on_progress)
    paths: list[Path] = []
    labels: list[int] = []
    missing: list[Path] = []
    unreadable: list[Path] = []  # warned by name (faces_or_errors); skipped as a scan skips them, not a face missed
    groups: list[Path] = []  # photos of several faces: the most confident one is taken as the folder's person
    for path, label, faces in zip(folder.paths, folder.labels, found):
        if faces is None:
            unreadable.append(path)
            continue
        if not faces:
            missing.append(path)
            continue
        if len(faces) > 1:
            groups.append(path)
        paths.append(pipeline.cache.crop_path(faces[0].sha256, pipeline.crop_key, 0))  # faces come most confident first
        labels.append(label)
    if missing:
        names = [_shown(path, folder.root) for path in missing]
        outcome = "count as misses" if what in ("query", "evaluation") else "are left out"  # evaluate scores a missed query 0; calibration leaves it out
        log.warning("faces: %d of %d %s image(s) have no face found and %s: %s (the run looks for %s)", len(missing),
                    len(folder.paths), what, outcome, data.brief_list(names), pipeline.settings.reach())
    if groups:
        log.warning("faces: %d of %d %s image(s) hold more than one face: %s; each is taken as its most confident face, "
                    "labelled with the image's class folder, which may be another person's (crop group photos to the "
                    "person, or leave them out)", len(groups), len(folder.paths), what,
                    data.brief_list([_shown(path, folder.root) for path in groups]))
    return data.ImageFolder(root=folder.root, paths=paths, labels=labels, class_names=list(folder.class_names),
                            skipped=[*folder.skipped, *unreadable], non_images=list(folder.non_images)), missing


def record_training_photos(out: str | Path, crops: Sequence[Path], photos: Sequence[Path], root: Path) -> None:
    """Write ``OUT/faces/training_photos.json``: ``{crop file name: photo}`` for the crops training
    reads (``crops[i]`` cut from ``photos[i]``; the photo relative to ``root``, the data folder).
    Identical photos share a crop, which keeps the first photo's name. Written atomically."""
    from retrieval.run.store import write_json

    names: dict[str, str] = {}
    for crop, photo in zip(crops, photos, strict=True):
        names.setdefault(Path(crop).name, _shown(photo, root))
    write_json(faces_dir(out) / TRAINING_PHOTOS, names, indent=1, sort_keys=True)


def training_photo_names(run_dir: str | Path) -> dict[str, str]:
    """:func:`record_training_photos`' map of a run: ``{crop file name: photo}``; empty for a run on
    whole images, a face run trained before the file existed, or a file that cannot be read (one
    warning line naming it). The crops are then shown by their own names."""
    import json

    path = faces_dir(run_dir) / TRAINING_PHOTOS
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as error:
        value = error
    if not isinstance(value, dict):
        reason = value if isinstance(value, Exception) else "not a JSON object"
        log.warning("faces: %s cannot be read (%s); its crops are named by their cache files", path, reason)
        return {}
    return {crop: photo for crop, photo in value.items() if isinstance(photo, str)}


def with_photo_names(rows: Sequence[Mapping[str, Any]], names: Mapping[str, str],
                     run_dir: str | Path | None = None) -> list[dict[str, Any]]:
    """A face run's logged triplets name the aligned crops training read; each row gains
    ``anchor_photo``, ``positive_photo`` and ``negative_photo``: the training photo each crop was cut
    from (``names``: :func:`training_photo_names`, by the crop's file name), where known, and with
    ``run_dir`` each crop path becomes the run's own crop file (:func:`own_crop`: a moved run's log
    names the old place). Rows are returned as they are when ``names`` is empty (whole images)."""
    if not names:
        return [dict(row) for row in rows]
    named = []
    for row in rows:
        row = dict(row)
        for role in ("anchor", "positive", "negative"):
            logged = str(row.get(f"{role}_path", ""))
            photo = names.get(Path(logged).name)
            if photo is not None:
                row[f"{role}_photo"] = photo
            if run_dir is not None and (own := own_crop(run_dir, logged)) is not None:
                row[f"{role}_path"] = str(own)
        named.append(row)
    return named


def own_crop(run_dir: str | Path, logged: Any) -> Path | None:
    """The run's own cached crop file that a logged path names: a path of exactly the shape
    ``faces/<settings>/<crop file>`` (absolute or relative: where the run was trained, or a relative
    ``--out``) looked up by those names in ``run_dir``'s ``faces/``; None when ``logged`` has
    another shape or the run holds no such regular file."""
    if not isinstance(logged, str):
        return None
    path = Path(logged)
    if not (CROP_FILE.match(path.name) and path.parent.parent.name == FACES_DIR and SETTINGS_FOLDER.match(path.parent.name)):
        return None
    own = faces_dir(run_dir) / path.parent.name / path.name
    return own if own.is_file() and not own.is_symlink() else None


def _shown(path: Path, root: Path) -> str:
    try:
        return Path(path).relative_to(root).as_posix()
    except ValueError:
        return str(path)


class GalleryFaces(NamedTuple):
    """The items a face run's gallery photos give (:func:`gallery_faces`), one entry an item in the
    first three lists: its photo's id, the crop file to embed, its record for gallery.json; the
    photos read but without a face found (left out); the photos that could not be read."""

    owners: list[int]
    crops: list[Path]
    records: list[dict[str, Any]]
    without_face: list[Path]
    unreadable: list[Path] = []  # photos that could not be read (warned by name): the index's skipped
    without_face_sha256: list[str] = []  # the content of each photo of without_face: its cached detection is forgotten with it


def gallery_faces(pipeline: FacePipeline, paths: Sequence[Path], owners: Sequence[int], *,
                  on_progress: Callable[[int, int], None] | None = None, adding: bool = False) -> GalleryFaces:
    """Every face of every gallery photo as an item: (its photo's id in ``owners``, the crop file
    to embed, its record for gallery.json: ``box``, ``score``, ``face`` (its rank in the photo) and
    ``sha256`` (the photo's content: its cached crops can be forgotten after the photo is gone)).
    Photos without a face are left out with one warning line, and listed in ``without_face``; no
    face at all is a RetrievalError for a new index, and ``adding`` to one gives no item (nothing to add)."""
    if pipeline.cache is None:
        raise ValueError("gallery_faces needs a pipeline with a cache (its crops are the files it embeds)")
    ids: list[int] = []
    crops: list[Path] = []
    records: list[dict[str, Any]] = []
    missing: list[Path] = []
    unreadable: list[Path] = []
    for owner, path, faces in zip(owners, paths, faces_or_errors(pipeline, paths, on_progress=on_progress)):
        if faces is None:
            unreadable.append(path)  # warned by name; counted with the scan's unreadable images
            continue
        if not faces:
            missing.append(path)
        for k, face in enumerate(faces):
            ids.append(owner)
            crops.append(pipeline.cache.crop_path(face.sha256, pipeline.crop_key, k))
            records.append({"box": [round(float(v), 2) for v in face.box], "score": round(float(face.score), 5),
                            "face": k, "sha256": face.sha256})
    read = len(paths) - len(unreadable)  # the unreadable ones are warned of, and counted, as skipped
    if missing:
        log.warning("faces: %d of %d gallery image(s) have no face found and are not indexed: %s (the run looks for %s)",
                    len(missing), read, data.brief_list([str(p) for p in missing]), pipeline.settings.reach())
    if not records and not adding:
        raise RetrievalError(f"no face found in any of the {read} gallery image(s): a face run indexes faces")
    # the photos without a face hashed again (their results carry no digest): a few, where the faces are most
    return GalleryFaces(ids, crops, records, missing, unreadable, [pipeline.digest(path) for path in missing])


def crop_file(pipeline: FacePipeline, record: Mapping[str, Any]) -> Path | None:
    """The cached crop of a gallery item's face (its gallery.json record), None when it is gone."""
    if pipeline.cache is None or not record or not record.get("sha256"):
        return None
    path = pipeline.cache.crop_path(record["sha256"], pipeline.crop_key, int(record.get("face", 0)))
    return path if path.is_file() else None
