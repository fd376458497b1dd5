"""Augmentation positives: self-supervised training on a folder without labels (``--unlabelled``).

Each training image is its own class. A batch holds B distinct images, each twice, as two
independently augmented views (random crop, flip, colour jitter, greyscale, blur, a small
rotation, noise: :func:`build_view_transform`); the two views of an image are a positive pair
and every other image of the batch is a negative. With the InfoNCE loss (the default of the
mode) this is SimCLR's NT-Xent objective (Chen et al. 2020); the other objectives are defined on
the same pairs (N-pair with one pair per image, the triplet loss over (view, other view, other
image), ...).

This is done with the labelled loop as it is: :func:`view_pairs` lists every image twice with
its index as the pseudo-label, and a P×K sampler with P = B images and K = 2 views draws the
batches, so mining, the mining log (anchor and positive are the two views of one file, the
``*_label`` fields the image's own path), checkpoints and ``--resume`` work unchanged. Each view
is augmented from its own seed (:mod:`retrieval.training.seeded_items`), so the two views differ
and a resumed run repeats them exactly.

B is ``--batch-size`` when given, else P*K/2 (the same number of samples per step as labelled
training with the same -P and -K). Augmentation strength is ``--augment`` (1 is the usual
recipe; the views need some, so 0 is refused).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, ClassVar

from retrieval import data
from retrieval.errors import RetrievalError
from retrieval.negatives import NegativeRules
from retrieval.training.sources.base import hidden_label_split, relative_posix, without_labels_entries

__all__ = ["VIEWS", "UnlabelledSource", "build_view_transform", "view_pairs", "batch_images"]

log = logging.getLogger("retrieval")

VIEWS = 2
"""Views per image in a batch: a positive pair."""


@dataclass
class UnlabelledSource:
    """Every training image is its own class, seen as :data:`VIEWS` augmented views."""

    folder: data.ImageFolder
    train_folder: data.ImageFolder  # every image twice (view_pairs)
    val_folder: data.ImageFolder
    train_classes: list[str]  # the training part's class folders (labels hidden), [] for a flat folder
    batch_images: int  # B, distinct images per batch
    strength: float  # --augment
    seed: int
    rules: NegativeRules | None = None
    greyscale: bool = False  # every image of DATA_DIR is stored grey
    mode: ClassVar[str] = "unlabelled"

    @classmethod
    def from_config(cls, config) -> "UnlabelledSource":
        """The ``--unlabelled`` training data for a :class:`~retrieval.training.TrainConfig`."""
        folder, train_part, val_folder = hidden_label_split(config.data_dir, config.val_fraction, config.seed)
        batch = batch_images(len(train_part.paths), config.classes_per_batch, config.images_per_class, config.batch_size)
        if folder.labelled:
            log.info("--unlabelled: %s has class folders; their labels are not used for training, only to hold out %d validation classes",
                     folder.root, len(val_folder.class_names))
        return cls(folder, view_pairs(train_part), val_folder, list(train_part.class_names), batch, config.augment, config.seed,
                   greyscale=data.all_greyscale(folder.paths))

    def make_train_transform(self, data_config: dict[str, Any], *, normalise_in_batch: bool = False) -> data.ImageTransform:
        return build_view_transform(data_config, self.strength, normalise_in_batch=normalise_in_batch)

    def make_sampler(self, **_: Any) -> data.PKSampler:
        return data.PKSampler(self.train_folder.labels, self.batch_images, VIEWS, seed=self.seed)

    def config_entries(self) -> dict[str, Any]:
        return {
            **without_labels_entries(self.mode, self.val_folder),
            "train_classes": self.train_classes,
            "n_train_images": len(self.train_folder.paths) // VIEWS,
            "batch_images": self.batch_images,
            "views": VIEWS,
            "pseudo_labels": "image",
            "view_transform": {"strength": self.strength, "steps": "random resized crop, flip, rotation, colour jitter, greyscale, blur, noise"},
        }


def build_view_transform(data_config: dict[str, Any], strength: float = 1.0, *, normalise_in_batch: bool = False) -> data.ImageTransform:
    """The augmentation that makes one view of an image, for a backbone's ``data_config``.

    With s = ``strength`` (1 the usual recipe, more is stronger): random resized crop to the
    input size (area scale in [max(0.08, 1 − 0.8 s), 1], aspect ratio within [3/4, 4/3]),
    horizontal flip (p 0.5), rotation by up to 10·s degrees (p 0.5, border reflected), colour
    jitter (brightness / contrast / saturation 0.4 s, hue 0.1 s, p 0.8), greyscale (p 0.2 s),
    Gaussian blur (σ up to 1 + s, p 0.3 s) and Gaussian noise (σ 2-8 % of full scale, p 0.2 s);
    then the backbone's normalisation (per batch with ``normalise_in_batch``, see
    :func:`retrieval.data.finish_pipeline`). Stronger than the labelled recipe
    (:func:`retrieval.data.build_transforms`): here the augmentation is the only source of
    invariance. ``strength`` must be positive.
    """
    import albumentations as A
    import cv2

    s = float(strength)
    if not s > 0:
        raise RetrievalError("the views need augmentation: strength must be above 0")
    _, height, width = (int(v) for v in data_config["input_size"])
    interpolation = data.cv2_interpolation(data_config)
    steps = [
        A.RandomResizedCrop(size=(height, width), scale=(max(0.08, 1.0 - 0.8 * s), 1.0), ratio=(3 / 4, 4 / 3), interpolation=interpolation),
        A.HorizontalFlip(p=0.5),
        A.Rotate(limit=min(45.0, 10.0 * s), border_mode=cv2.BORDER_REFLECT_101, interpolation=interpolation, p=0.5),
        A.ColorJitter(brightness=0.4 * s, contrast=0.4 * s, saturation=0.4 * s, hue=min(0.5, 0.1 * s), p=min(1.0, 0.8 * s)),
        A.ToGray(p=min(1.0, 0.2 * s)),
        A.GaussianBlur(sigma_limit=(0.1, 1.0 + s), p=min(1.0, 0.3 * s)),
        A.GaussNoise(std_range=(0.02, min(0.5, 0.08 * s)), p=min(1.0, 0.2 * s)),
    ]
    return data.finish_pipeline(steps, data_config, train=True, normalise_in_batch=normalise_in_batch)


def view_pairs(folder: data.ImageFolder) -> data.ImageFolder:
    """Every image of ``folder`` twice (items 2i and 2i + 1 are image i), labelled i and named by
    its path relative to the folder's root: the pseudo-labelled folder the sampler draws from."""
    paths = [path for path in folder.paths for _ in range(VIEWS)]
    labels = [i for i in range(len(folder.paths)) for _ in range(VIEWS)]
    names = [relative_posix(path, folder.root) for path in folder.paths]
    return data.ImageFolder(root=folder.root, paths=paths, labels=labels, class_names=names)


def batch_images(n_images: int, classes_per_batch: int, images_per_class: int, batch_size: int | None) -> int:
    """B, the distinct images of a batch: ``batch_size``, else P*K/2, at most the images there are.

    Raises :class:`RetrievalError` when fewer than two images are left to train on, or when an
    explicit ``batch_size`` exceeds them (a default B is lowered with a warning instead).
    """
    if n_images < 2:
        raise RetrievalError(f"--unlabelled needs at least 2 training images (the other images are the negatives), found {n_images}")
    if batch_size is not None:
        if batch_size > n_images:
            raise RetrievalError(f"--batch-size {batch_size} but only {n_images} training images: lower --batch-size")
        return int(batch_size)
    wanted = max(2, (classes_per_batch * images_per_class) // VIEWS)
    if wanted > n_images:
        log.warning("--unlabelled: a batch of %d images (P*K/2) but only %d training images: using batches of %d", wanted, n_images, n_images)
        return n_images
    return wanted
