"""Pictures in, model inputs out: the train and eval pipelines for a backbone.

:func:`build_transforms` gives the albumentations pipeline of labelled training (random resized
crop, flip, colour jitter, ...) or of evaluation (resize, centre crop), sized and normalised by
the backbone's pretrained ``data_config`` (timm's). :func:`finish_pipeline` appends the
normalisation to any list of steps (the unlabelled recipe builds its own). The result is an
:class:`ImageTransform`: per image it gives a normalised float32 tensor, or, for training, uint8
pixels that :class:`BatchNormalise` normalises a whole batch at a time on the model's device.
:func:`cv2_interpolation` reads the resize filter from ``data_config``.
"""

from __future__ import annotations

import math
import os
import random
from typing import Any, Sequence

import numpy as np
import torch

# albumentations asks PyPI for a newer version at import time; offline machines would wait and warn.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
from PIL import Image

from retrieval.data.images import to_rgb

__all__ = ["build_transforms", "finish_pipeline", "cv2_interpolation", "ImageTransform", "BatchNormalise"]

#: The similarity jitter of a face run's training crops at ``--augment`` 1, as a fraction of
#: scale ± 10 %, shift ± 5 %, rotation ± 10° (:func:`build_transforms`); chosen on held-out
#: training people among 0, 1/16, 1/8, 1/4, 1/2, 3/4 and 1 (BENCHMARKS.md, *Faces in photos*).
FACE_JITTER = 0.25

_CV2_INTERPOLATION = {"nearest": 0, "bilinear": 1, "linear": 1, "bicubic": 2, "cubic": 2, "area": 3, "lanczos": 4}


def build_transforms(
    data_config: dict[str, Any], *, train: bool, strength: float = 1.0, normalise_in_batch: bool = False, faces: bool = False,
    face_jitter: float = FACE_JITTER,
) -> ImageTransform:
    """The train or eval image pipeline for a backbone's ``data_config``.

    ``data_config`` has ``input_size`` (3, H, W), ``mean``, ``std`` (on 0-1 pixels),
    ``interpolation`` ("bilinear", "bicubic", ...) and ``crop_pct`` (timm's pretrained config,
    see ``EmbeddingModel.data_config``).

    - eval: resize the shorter side to ``max(H, W) / crop_pct``, centre-crop H x W; first, when
      ``data_config["greyscale"]`` is true (a run whose training images were all greyscale), the
      image becomes grey, Y = 0.299 R + 0.587 G + 0.114 B in all three channels: such a model has
      never seen colour (BENCHMARKS.md, *Faces in photos*: scene queries against crops).
    - train: random resized crop to H x W (area scale in [1 - 0.75 s, 1], at least 0.08;
      aspect ratio within [1 - 0.25 s, 1 / (1 - 0.25 s)]), horizontal flip (p 0.5), colour
      jitter (brightness / contrast / saturation 0.3 s, hue 0.05 s, p 0.8), greyscale
      (p 0.05 s), Gaussian blur (p 0.1 s), with s = ``strength`` (1 is the usual recipe,
      more is stronger; ``strength=0`` gives the eval pipeline).
    - train, ``faces`` (aligned face crops, already H x W): a horizontal flip (p 0.5) and a small
      similarity jitter, j = ``face_jitter`` · s (default :data:`FACE_JITTER`; 0 leaves the flip
      alone): scale 1 ± 0.1 j, shift ± 5 % j of the side, rotation ± 10° j, the edge repeated (at
      s = 1 and the default: ± 2.5 %, ± 1.25 %, ± 2.5°, about the detector's landmark noise). The
      alignment has removed position, scale and rotation, and a random resized crop would undo it
      (at s = 1 down to a quarter of the face), as face recognition trains (ArcFace, insightface).
      Above s = 1 colour jitter, greyscale and blur join at strength s - 1. Measured on held-out training people (BENCHMARKS.md, *Faces in
      photos*): the flip alone found the right person for 0.88 of crop queries against 0.77 with
      the whole-image recipe (MAP@R 0.55 against 0.44); the jitter at ``FACE_JITTER`` raised MAP@R
      further (see that section), while 4 times its size lost to the flip alone.

    Both then normalise with ``mean`` / ``std`` and return a CHW float32 tensor, or with
    ``normalise_in_batch`` CHW uint8 pixels that the transform's ``finish_batch`` normalises a
    batch at a time (:func:`finish_pipeline`; training uses this). The augmentations are seeded
    from torch's generator when built, so ``torch.manual_seed`` makes them repeatable.
    """
    import albumentations as A
    import cv2

    _, height, width = (int(v) for v in data_config["input_size"])
    interpolation = cv2_interpolation(data_config)
    crop_pct = float(data_config.get("crop_pct") or 0.875)
    s = max(0.0, float(strength))
    if train and s > 0 and faces:
        j = max(0.0, float(face_jitter)) * s
        steps = [A.Resize(height=height, width=width, interpolation=interpolation), A.HorizontalFlip(p=0.5)]
        if j > 0:
            steps.append(A.Affine(scale=(1.0 - 0.1 * j, 1.0 + 0.1 * j), translate_percent=(-0.05 * j, 0.05 * j),
                                  rotate=(-10.0 * j, 10.0 * j), interpolation=interpolation, border_mode=cv2.BORDER_REPLICATE, p=1.0))
        if s > 1:
            steps += _photometric(s - 1.0)
    elif train and s > 0:
        squeeze = max(0.5, 1.0 - 0.25 * s)
        steps = [
            A.RandomResizedCrop(
                size=(height, width), scale=(max(0.08, 1.0 - 0.75 * s), 1.0), ratio=(squeeze, 1.0 / squeeze),
                interpolation=interpolation,
            ),
            A.HorizontalFlip(p=0.5),
            *_photometric(s),
        ]
    else:
        steps = [
            *([A.ToGray(num_output_channels=3, method="weighted_average", p=1.0)] if data_config.get("greyscale") else []),
            A.SmallestMaxSize(max_size=int(math.floor(max(height, width) / crop_pct)), interpolation=interpolation),
            A.CenterCrop(height=height, width=width, pad_if_needed=True),
        ]
    return finish_pipeline(steps, data_config, train=train, normalise_in_batch=normalise_in_batch)


def _photometric(s: float) -> list[Any]:
    """Colour jitter (0.3 s; hue 0.05 s; p 0.8 s), greyscale (p 0.05 s), Gaussian blur (p 0.1 s)."""
    import albumentations as A

    return [
        A.ColorJitter(brightness=0.3 * s, contrast=0.3 * s, saturation=0.3 * s, hue=min(0.5, 0.05 * s), p=min(1.0, 0.8 * s)),
        A.ToGray(p=min(1.0, 0.05 * s)),
        A.GaussianBlur(sigma_limit=(0.1, 1.0 + s), p=min(1.0, 0.1 * s)),
    ]


def finish_pipeline(steps: Sequence[Any], data_config: dict[str, Any], *, train: bool, normalise_in_batch: bool = False) -> ImageTransform:
    """``steps`` (albumentations transforms on HWC uint8), then normalisation and HWC -> CHW.

    Normalisation is (x - 255 * mean) / (255 * std) with ``data_config``'s ``mean`` / ``std``:
    per image inside the pipeline (CHW float32 out), or with ``normalise_in_batch`` left to the
    transform's :class:`BatchNormalise` (CHW uint8 out; see :meth:`ImageTransform.finish_batch`).
    The pipeline is seeded from torch's generator, so ``torch.manual_seed`` makes it repeatable.
    """
    import albumentations as A
    from albumentations.pytorch import ToTensorV2

    mean, std = tuple(data_config["mean"]), tuple(data_config["std"])
    normalise = [] if normalise_in_batch else [A.Normalize(mean=mean, std=std, max_pixel_value=255.0)]
    seed = int(torch.randint(0, 2**31 - 1, (1,)).item())
    pipeline = A.Compose([*steps, *normalise, ToTensorV2()], seed=seed)
    _, height, width = (int(v) for v in data_config["input_size"])
    return ImageTransform(pipeline, train=train, batch_normalise=BatchNormalise(mean, std) if normalise_in_batch else None,
                          output_size=(height, width))


def cv2_interpolation(data_config: dict[str, Any]) -> int:
    """OpenCV's flag for ``data_config``'s ``interpolation`` ("bilinear", "bicubic", ...; case
    ignored), as albumentations takes it; bilinear when the name is absent or unknown."""
    return _CV2_INTERPOLATION.get(str(data_config.get("interpolation", "bilinear")).lower(), 1)


class ImageTransform:
    """A picklable callable: RGB ``PIL.Image`` (or HWC uint8 array) -> CHW tensor.

    The tensor is float32, normalised, when ``batch_normalise`` is None; otherwise it is the uint8
    pixels and ``batch_normalise`` (a :class:`BatchNormalise`) finishes a whole batch of them on
    the model's device (see :func:`finish_pipeline`).

    Wraps an albumentations ``Compose``, which keeps its own random generator: loader workers
    would all start from the same copy of it, so whoever wants distinct draws re-seeds it through
    :meth:`set_random_seed` (the training loop seeds it for every item from (seed, epoch,
    position), so an epoch's pixels depend neither on the workers nor on history).

    ``output_size`` (H, W): an image already of that size may leave the pipeline as it came (an
    aligned face crop, not flipped), so when its pixels are read-only (Pillow's are) they are
    copied first; torch warns about tensors over read-only memory. Other sizes are resampled into
    new memory and are not copied.
    """

    def __init__(self, pipeline: Any, *, train: bool, batch_normalise: BatchNormalise | None = None,
                 output_size: tuple[int, int] | None = None) -> None:
        self.pipeline = pipeline
        self.train = train
        self.batch_normalise = batch_normalise
        self.output_size = output_size

    def finish_batch(self, images: torch.Tensor) -> torch.Tensor:
        """The model's input from a collated batch of this transform's outputs (already on its device)."""
        if self.batch_normalise is None or images.numel() == 0:  # nothing to normalise (every image of the batch unreadable)
            return images
        return self.batch_normalise(images)

    def __call__(self, image: Image.Image | np.ndarray) -> torch.Tensor:
        if isinstance(image, Image.Image):
            image = np.asarray(image if image.mode == "RGB" else to_rgb(image))
        if not image.flags.writeable and image.shape[:2] == self.output_size:
            image = image.copy()
        return self.pipeline(image=image)["image"].contiguous()

    def set_random_seed(self, seed: int) -> None:
        """Re-seed the augmentation's random generators (numpy and Python).

        One numpy and one Python generator, shared by every step of the pipeline (albumentations'
        ``set_random_state``): seeding each step separately costs 8 generator constructions, about
        0.1 ms an image, which a 2-core machine pays out of the training step.
        """
        seed = int(seed) % 2**32
        share = getattr(self.pipeline, "set_random_state", None)
        if share is None:  # albumentations < 2
            self.pipeline.set_random_seed(seed)
        else:
            share(np.random.default_rng(seed), random.Random(seed))

    def __repr__(self) -> str:
        return f"ImageTransform(train={self.train}, batch_normalise={self.batch_normalise!r}, {self.pipeline!r})"


class BatchNormalise:
    """uint8 pixels (B, C, H, W) -> float32 (x - 255 * mean) / (255 * std), per channel, on their device.

    The same arithmetic as albumentations' ``Normalize(max_pixel_value=255)`` per image, done once
    per batch where the model runs: loader workers then hand over a quarter of the bytes (uint8,
    not float32) through shared memory, and on CUDA the host-to-device copy shrinks fourfold and
    the arithmetic runs on the GPU (as timm's prefetching loader does).
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype != torch.uint8:
            raise TypeError(f"BatchNormalise takes uint8 pixels, got {images.dtype}")
        if images.shape[1] != len(self.mean):
            raise ValueError(f"BatchNormalise: {len(self.mean)} channels expected, batch has shape {tuple(images.shape)}")
        shape = (1, len(self.mean), 1, 1)
        mean = torch.tensor(self.mean, dtype=torch.float32, device=images.device).view(shape) * 255.0
        std = torch.tensor(self.std, dtype=torch.float32, device=images.device).view(shape) * 255.0
        return images.float().sub_(mean).div_(std)

    def __repr__(self) -> str:
        return f"BatchNormalise(mean={self.mean}, std={self.std})"
