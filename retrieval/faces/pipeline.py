"""The face pipeline: image in, aligned faces out (detect → align → crop, cached by file content).

:class:`FacePipeline` is the one object training, indexing, search and the app call. It is made
from its settings (``FacePipeline(settings, output_size, cache_dir)``) or from what a run's
config.json recorded (:meth:`FacePipeline.from_settings_json`), so every reader of a face run
applies exactly the pipeline training used.

Inputs are paths, raw file bytes or a binary file object (an upload), or PIL images; every one is decoded by
:mod:`retrieval.data.images` (RGB, upright; greyscale converted). Only files are cached: an
upload or an image in memory is detected each time and never written, so a query's face does not
stay behind in the run.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import numpy as np
from PIL import Image

from retrieval.data.images import load_image, load_image_bytes, to_rgb
from retrieval.errors import RetrievalError
from retrieval.faces.align import MASK_NAME, TEMPLATE, TEMPLATE_NAME, TEMPLATE_SIZE, align_face, mask_outside_face
from retrieval.faces.cache import FaceCache
from retrieval.faces.detect import DETECTOR_NAME, Detection, DetectorSettings, MTCNNDetector, by_confidence, \
    detector_version, most_confident
from retrieval.run.store import sha256_file

__all__ = ["AlignedFace", "FacePipeline", "ImageInput"]

ImageInput = Union[str, Path, bytes, Image.Image]
"""What the pipeline accepts: a file path, a file's bytes (an upload; a binary file object too), or a decoded PIL image."""

_MIN_OUTPUT, _MAX_OUTPUT = 16, 1024
_DECODED_AT_ONCE = 32  # images decoded and detected together by faces_many

log = logging.getLogger("retrieval")


@dataclass(frozen=True, eq=False)
class AlignedFace(Detection):
    """A detected face with its aligned crop: ``box``, ``score``, ``landmarks`` as in
    :class:`~retrieval.faces.detect.Detection`, ``crop``, an RGB image of output size, and
    ``sha256``, the cache key of the file it was found in (None for an image given in memory or a
    pipeline without a cache), so that callers find its cached crop without hashing the file again."""

    crop: Image.Image = field(repr=False)
    sha256: str | None = field(default=None, repr=False)

    def detection(self) -> Detection:
        """The face without its crop (what gallery.json and search JSON record)."""
        return Detection(self.box, self.score, self.landmarks)


class FacePipeline:
    """Detect every face of an image with MTCNN, align each onto the ArcFace template, resize.

    ``settings``: the detector's (default :class:`DetectorSettings`); ``output_size``: the side of
    the aligned crops (the run's image size); ``cache_dir``: where detections and crops of files
    are cached (``RUN_DIR/faces`` or the index folder; None: no cache); ``cache_read_from``: another
    cache folder whose entries the cache copies on a miss and never writes (a command's scratch cache
    reading the run's); ``mask``: grey out what
    lies outside the face oval (:func:`~retrieval.faces.align.mask_outside_face`; runs saved
    before the mask existed read back with ``mask=False``); ``device``: where MTCNN
    runs (CPU by default; not a setting: it does not change what is found). ``detector``: an
    object with ``detect_many(images) -> list[list[Detection]]`` and ``settings`` in place of
    MTCNN (tests; its settings are the pipeline's when ``settings`` is not given).
    """

    def __init__(self, settings: DetectorSettings | None = None, output_size: int = TEMPLATE_SIZE,
                 cache_dir: str | Path | None = None, *, cache_read_from: str | Path | None = None,
                 mask: bool = True, device: str = "cpu", detector: Any = None) -> None:
        if settings is None:
            settings = getattr(detector, "settings", None) or DetectorSettings()
        self.settings = settings
        if isinstance(output_size, bool) or not isinstance(output_size, (int, np.integer)) \
                or not _MIN_OUTPUT <= output_size <= _MAX_OUTPUT:
            raise RetrievalError(f"faces: output size must be a whole number of pixels from {_MIN_OUTPUT} to {_MAX_OUTPUT}, got {output_size!r}")
        self.output_size = int(output_size)
        self.detector = detector if detector is not None else MTCNNDetector(self.settings, device=device)
        self.cache = None if cache_dir is None else FaceCache(cache_dir, self.settings.key(), read_from=cache_read_from)
        self.mask = bool(mask)  # grey outside the face oval (align.mask_outside_face); runs saved before it: False
        self.crop_key = f"{TEMPLATE_NAME}-{MASK_NAME + '-' if self.mask else ''}{self.output_size}px"

    # -- what config.json records -------------------------------------------------------------

    def settings_json(self) -> dict[str, Any]:
        """config.json's ``faces``: the detector, its settings and version, the alignment template
        (name and points in its 112 × 112 frame) and the output size. Plain JSON."""
        return {
            "detector": DETECTOR_NAME,
            "detector_version": detector_version(),
            "detector_settings": self.settings.to_json(),
            "alignment": {"template": TEMPLATE_NAME, "template_size": TEMPLATE_SIZE, "points": TEMPLATE.tolist()},
            "output_size": self.output_size,
            "mask": MASK_NAME if self.mask else None,
        }

    @classmethod
    def from_settings_json(cls, value: Any, cache_dir: str | Path | None = None, *,
                           cache_read_from: str | Path | None = None, device: str = "cpu") -> FacePipeline:
        """The pipeline that :meth:`settings_json` describes (config.json's ``faces``); a one-line
        RetrievalError when it names another detector or template, or a bad value."""
        if not isinstance(value, Mapping):
            raise RetrievalError(f"faces: the face pipeline's settings must be a JSON object, got {type(value).__name__}")
        if value.get("detector") != DETECTOR_NAME:
            raise RetrievalError(f"faces: unknown face detector {value.get('detector')!r} (this version has {DETECTOR_NAME!r})")
        alignment = value.get("alignment")
        if not isinstance(alignment, Mapping) or alignment.get("template") != TEMPLATE_NAME \
                or not _same_points(alignment.get("points"), TEMPLATE):
            raise RetrievalError(f"faces: unknown alignment template (this version has {TEMPLATE_NAME!r} and its points)")
        settings = DetectorSettings.from_json(value.get("detector_settings", {}))
        recorded = value.get("detector_version")
        if recorded and recorded != detector_version():
            log.warning("faces: this run detected faces with %s, this install has %s: boxes may differ slightly",
                        recorded, detector_version())
        mask = value.get("mask")  # absent in runs saved before the mask: they keep the whole crop
        if mask not in (None, MASK_NAME):
            raise RetrievalError(f"faces: unknown face mask {mask!r} (this version has {MASK_NAME!r})")
        return cls(settings, value.get("output_size", TEMPLATE_SIZE), cache_dir, cache_read_from=cache_read_from,
                   mask=mask is not None, device=device)

    def harder(self) -> FacePipeline:
        """This pipeline looking harder for a query's faces (:meth:`DetectorSettings.harder`: smaller
        faces, lower thresholds), aligned and cropped the same way, without a cache: what it finds
        is looked at by a person and never stays in the run. Itself when its settings are already as low."""
        settings = self.settings.harder()
        if settings == self.settings:
            return self
        return FacePipeline(settings, self.output_size, None, mask=self.mask, device=getattr(self.detector, "device", "cpu"))

    # -- faces -------------------------------------------------------------------------------

    def faces(self, image: ImageInput) -> list[AlignedFace]:
        """Every face of ``image``, most confident first (equal scores: the larger box); [] when none."""
        return self.faces_many([image])[0]

    def best_face(self, image: ImageInput) -> AlignedFace | None:
        """The one face training and ``verify`` use: the most confident (ties: the larger box)."""
        return most_confident(self.faces(image))

    def faces_many(self, images: Sequence[ImageInput], *,
                   on_progress: Callable[[int, int], None] | None = None) -> list[list[AlignedFace]]:
        """:meth:`faces` of each image, in order; the images not in the cache are detected in
        batches (same-sized images share a batch). ``on_progress(done, total)``: called once the
        cache has answered what it holds, then after each group of images detected."""
        digests = [self._digest(image) for image in images]
        results: list[list[AlignedFace] | None] = [None] * len(images)
        to_detect: list[int] = []
        for i, digest in enumerate(digests):
            cached = self.cache.load(digest) if digest is not None and self.cache is not None else None
            if cached is None:
                to_detect.append(i)
            else:
                results[i] = self._cached_faces(images[i], digest, cached)
        done = len(images) - len(to_detect)
        if on_progress is not None:
            on_progress(done, len(images))
        for start in range(0, len(to_detect), _DECODED_AT_ONCE):  # bounded memory for a long list
            chunk = to_detect[start:start + _DECODED_AT_ONCE]
            decoded = [_decode(images[i]) for i in chunk]
            for i, picture, found in zip(chunk, decoded, self.detector.detect_many(decoded)):
                results[i] = self._align_and_store(picture, by_confidence(found), digests[i])
            done += len(chunk)
            if on_progress is not None:
                on_progress(done, len(images))
        return results  # type: ignore[return-value]

    # -- personal data -------------------------------------------------------------------------

    def forget(self, files: Iterable[str | Path]) -> int:
        """Delete the cached faces of these files (a person removed from a gallery) under every
        detector setting; the number of cache files deleted. Files already gone from disk cannot
        be hashed: remove those with :meth:`forget_digests` and the digests the index kept."""
        return self.forget_digests(sha256_file(Path(f)) for f in files if Path(f).is_file())

    def forget_digests(self, digests: Iterable[str]) -> int:
        """Delete the cached faces of these SHA-256 contents; the number of cache files deleted."""
        return self.cache.remove(digests) if self.cache is not None else 0

    @staticmethod
    def digest(path: str | Path) -> str:
        """The cache key of a file: the SHA-256 of its bytes, as hex (store it beside a gallery item
        to forget the file's faces after the file itself is gone)."""
        path = Path(path)
        if not path.is_file():
            raise RetrievalError(f"image not found: {path}")
        return sha256_file(path)

    # -- helpers -------------------------------------------------------------------------------

    def _digest(self, image: ImageInput) -> str | None:
        if self.cache is None or not isinstance(image, (str, Path)):
            return None
        return self.digest(image)

    def _align(self, picture: Image.Image, landmarks: np.ndarray) -> Image.Image:
        """The aligned crop of one face, greyed outside the face oval when the pipeline masks."""
        crop = align_face(picture, landmarks, self.output_size)
        return mask_outside_face(crop) if self.mask else crop

    def _align_and_store(self, picture: Image.Image, found: list[Detection], digest: str | None) -> list[AlignedFace]:
        crops = [self._align(picture, face.landmarks) for face in found]
        if digest is not None and self.cache is not None:
            for k, crop in enumerate(crops):
                self.cache.store_crop(digest, self.crop_key, k, crop)
            self.cache.store(digest, picture.size, found)  # last: a present entry is a whole one
        return [_with_crop(face, crop, digest) for face, crop in zip(found, crops)]

    def _cached_faces(self, image: ImageInput, digest: str, found: list[Detection]) -> list[AlignedFace]:
        crops = [self.cache.load_crop(digest, self.crop_key, k) for k in range(len(found))]
        if any(crop is None for crop in crops):  # crops of another size, or lost: align again, no detection
            picture = _decode(image)
            for k, face in enumerate(found):
                if crops[k] is None:
                    crops[k] = self._align(picture, face.landmarks)
                    self.cache.store_crop(digest, self.crop_key, k, crops[k])
        return [_with_crop(face, crop, digest) for face, crop in zip(found, crops)]


def _decode(image: ImageInput) -> Image.Image:
    if isinstance(image, Image.Image):
        return to_rgb(image)
    if isinstance(image, (bytes, bytearray, memoryview)):
        return load_image_bytes(bytes(image), "uploaded image")
    if isinstance(image, (str, Path)):
        return load_image(image)
    if isinstance(image, io.IOBase):
        return load_image_bytes(image.read(), getattr(image, "name", "uploaded image"))
    raise TypeError(f"a face pipeline takes a path, bytes or a PIL image, not {type(image).__name__}")


def _with_crop(face: Detection, crop: Image.Image, digest: str | None) -> AlignedFace:
    return AlignedFace(face.box, face.score, face.landmarks, crop, digest)


def _same_points(points: Any, template: np.ndarray) -> bool:
    try:
        return np.allclose(np.asarray(points, dtype=np.float64), template, atol=1e-6)
    except (TypeError, ValueError):
        return False
