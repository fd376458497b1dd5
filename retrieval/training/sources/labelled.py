"""Labelled training (the default): ``DATA_DIR/<class>/<image>``, one sub-folder per identity or product.

Whole classes are held out for validation (``--val-fraction``, the unseen-class protocol); the
others train on P×K batches (:class:`~retrieval.data.PKSampler`; the default P fitted to a folder
with fewer training classes, :func:`~retrieval.data.sampler.fit_classes_per_batch`), augmented by
:func:`~retrieval.data.build_transforms` at ``--augment``. Domain knowledge about negatives is
read from the optional CSV files: ``--class-groups`` (a group per class; ``--groups-per-batch``
fills a batch from that many groups, 2 unless given, fitted to the groups there are: see
:func:`_fit_groups_per_batch`; ``--negatives`` restricts negatives to the anchor's group)
and ``--never-negative`` (pairs of classes that are never each other's negatives), which every
loss and miner then obeys (:class:`~retrieval.negatives.NegativeRules`).

With ``--faces`` every image is first replaced by its most confident aligned face, a PNG cached in
``RUN_DIR/faces/`` (:func:`retrieval.faces.run_faces.face_folder`; images without a face are
skipped with one warning line), so the split, the data set, the augmentation (after alignment: a
horizontal flip and a small similarity jitter, see :func:`~retrieval.data.build_transforms`) and
the validation all see face crops, and later epochs read the cache instead of detecting again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from retrieval import data
from retrieval.data.sampler import fit_classes_per_batch
from retrieval.errors import RetrievalError
from retrieval.negatives import NegativeRules
from retrieval.training.objective import positives_still_pull
from retrieval.training.sources.base import check_negatives

__all__ = ["LabelledSource"]


@dataclass
class LabelledSource:
    """The labelled folder's classes, split into training and held-out validation classes."""

    folder: data.ImageFolder
    train_folder: data.ImageFolder
    val_folder: data.ImageFolder
    rules: NegativeRules | None
    class_groups: list[int] | None  # a group id per training class (--class-groups)
    groups_per_batch: int | None  # fitted to the training classes' groups (_fit_groups_per_batch); None without groups
    classes_per_batch: int
    images_per_class: int
    augment: float
    seed: int
    faces: dict[str, Any] | None = None  # config.json's "faces": the face pipeline's settings (--faces)
    greyscale: bool = False  # every photo trained on is stored grey (the photos, not the colour-mode face crops; a face run: those with a face)
    face_jitter: float = 0.0  # --face-jitter: the aligned crops' similarity jitter at augment 1 (face runs)
    mode: ClassVar[str] = "labelled"

    @classmethod
    def from_config(cls, config, *, on_progress: Callable[[int, int], None] | None = None, ctx=None) -> "LabelledSource":
        """Scan ``config.data_dir``, hold out the validation classes and read the domain-knowledge
        files; a face run (``--faces``) first finds each image's face (``on_progress(done, total)``;
        under torchrun, ``ctx``, each process a share first: :func:`~retrieval.faces.run_faces.find_share`)."""
        folder = data.scan_folder(config.data_dir, labelled=True, refuse_splits=True)
        trained_photos = folder.paths  # a face run: the photos with a face found (the others are left out)
        faces = None
        if config.faces:
            from retrieval.faces.detect import DetectorSettings
            from retrieval.faces.run_faces import face_folder, find_share, record_training_photos, training_pipeline

            settings = DetectorSettings(min_face_size=config.face_min_size, max_side=config.face_max_side,
                                        recheck_threshold=config.face_recheck)
            pipeline = training_pipeline(config.out, config.image_size, settings, resume=bool(config.resume))
            find_share(pipeline, folder.paths, ctx)  # torchrun: each process a share, then the shared cache answers
            faced, missing = face_folder(folder, pipeline, on_progress=on_progress)
            left_out = {*missing, *faced.skipped}  # face_folder keeps the readable photos with a face, in order
            trained_photos = [p for p in folder.paths if p not in left_out]
            record_training_photos(config.out, faced.paths, trained_photos, folder.root)
            folder = faced
            faces = pipeline.settings_json()
        greyscale = data.all_greyscale(trained_photos)  # a colour photo left out (no face) does not count
        data.require_trainable(folder, items="photos with a face found" if faces is not None else "images")
        train_folder, val_folder = data.split_classes(folder, config.val_fraction, config.seed)
        trainable = sum(count >= 2 for count in train_folder.class_counts().values())
        if trainable < 2:
            held_out = len(val_folder.class_names)
            advice = "lower --val-fraction or add classes" if held_out else "add classes: DATA_DIR/<class>/<image>"
            raise RetrievalError(
                f"{config.data_dir}: {trainable} class(es) with two or more images left for training after holding out "
                f"{held_out} for validation; negatives need at least 2 ({advice})"
            )
        classes_per_batch = fit_classes_per_batch(config.classes_per_batch, trainable, typed="classes_per_batch" in config.given,
                                                  what="training classes have two or more images")
        groups, never_negative = _domain_knowledge(config, train_folder, val_folder.class_names)
        groups_per_batch = None
        if groups is not None:
            groups_per_batch = _fit_groups_per_batch(config, groups, train_folder, classes_per_batch)
        rules = None
        if groups is not None or never_negative:
            rules = NegativeRules(never_negative=never_negative, class_groups=groups, negatives=config.negatives)
            why = ("alone in their --class-groups group, or never-negative with its other classes"
                   if config.negatives == "same-group" else "never-negative with every other class")
            check_negatives(rules, train_folder.class_names, "training classes", why, loss=config.loss, miner=config.miner)
        return cls(folder, train_folder, val_folder, rules, groups, groups_per_batch, classes_per_batch,
                   config.images_per_class, config.augment, config.seed, faces, greyscale, config.face_jitter)

    def make_train_transform(self, data_config: dict[str, Any], *, normalise_in_batch: bool = False) -> data.ImageTransform:
        return data.build_transforms(data_config, train=True, strength=self.augment, normalise_in_batch=normalise_in_batch,
                                     faces=self.faces is not None, face_jitter=self.face_jitter)

    def make_sampler(self, **_: Any) -> data.PKSampler:
        return data.PKSampler(
            self.train_folder.labels, self.classes_per_batch, self.images_per_class, seed=self.seed,
            class_groups=self.class_groups, groups_per_batch=self.groups_per_batch,
        )

    def config_entries(self) -> dict[str, Any]:
        """``config.json``'s ``mode`` and ``labelled`` (the readers that branch on the mode)."""
        return {"mode": "labelled", "labelled": True}


def _fit_groups_per_batch(config, groups: list[int], folder: data.ImageFolder, classes_per_batch: int) -> int:
    """G, the groups each batch draws its P classes from, for the groups of the training classes
    that batches hold (two or more images: the sampler's anchor classes).

    The default (2, :data:`~retrieval.data.sampler.GROUPS_PER_BATCH`) is fitted to fewer groups
    without a word, as the sampler always did. A G the user typed that does not fit is a one-line
    error, as an over-large ``-P`` is (they asked for it, so it is not changed behind their back):
    more groups than the classes form, or than the P classes a batch holds (each group drawn gives
    at least one). A resumed run keeps what its sampler did: G fitted to the groups (a run recorded
    before G was checked may hold a larger one). With ``--negatives same-group`` a G of P or more
    puts every class of a batch alone in its group: no batch has a negative, every loss is 0 (the
    contrastive loss only pulls, as when no class can have a negative), and the run is refused."""
    counts = np.bincount(np.asarray(folder.labels, dtype=np.int64), minlength=len(folder.class_names))
    n_groups = len({groups[c] for c in np.flatnonzero(counts >= 2)})
    asked = int(config.groups_per_batch)
    typed = "groups_per_batch" in config.given and not config.resume
    if typed and asked > n_groups:
        raise RetrievalError(
            f"--groups-per-batch {asked} but the training classes of two or more images fall in only {n_groups} "
            f"group(s) of {config.class_groups}: lower --groups-per-batch to at most {n_groups}, or leave it out"
        )
    if typed and asked > classes_per_batch:
        raise RetrievalError(
            f"--groups-per-batch {asked} but a batch holds only {classes_per_batch} classes (-P), at least one from each group "
            f"drawn: lower --groups-per-batch to at most {classes_per_batch}, or raise -P"
        )
    fitted = min(asked, n_groups)
    if config.negatives == "same-group" and classes_per_batch <= fitted and not config.resume:
        given = "" if "groups_per_batch" in config.given else ", the default with --class-groups"
        outcome = ("training would only pull each class's images together and push nothing apart"
                   if positives_still_pull(config.loss, config.miner) else "every loss would be 0")
        raise RetrievalError(
            f"--negatives same-group with batches of {classes_per_batch} classes (-P) drawn from {fitted} groups "
            f"(--groups-per-batch {fitted}{given}): every class of a batch is alone in its group, so no batch has a "
            f"negative and {outcome}; raise -P above {fitted} or lower --groups-per-batch below {classes_per_batch}"
        )
    return fitted


def _domain_knowledge(config, folder: data.ImageFolder, held_out=()):
    """Group id per training class and never-negative label pairs, from the CSV files given (their
    validation classes, ``held_out``, are not in a batch and need no warning)."""
    groups = None
    if config.class_groups is not None:
        groups = data.class_group_ids(folder.class_names, data.read_class_groups(config.class_groups, folder.class_names, held_out))
    never = []
    if config.never_negative is not None:
        index = {c: i for i, c in enumerate(folder.class_names)}
        never = [(index[a], index[b]) for a, b in data.read_class_pairs(config.never_negative, folder.class_names, held_out)
                 if a in index and b in index]
    return groups, never
