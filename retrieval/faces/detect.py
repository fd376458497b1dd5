"""Face detection: MTCNN as shipped in ``facenet-pytorch``, its settings, and choosing a face.

MTCNN (Zhang et al. 2016, "Joint Face Detection and Alignment using Multi-task Cascaded
Convolutional Networks") scans an image pyramid with a small proposal network (P-Net), refines the
candidates (R-Net) and scores them with boxes and five landmarks (O-Net). ``facenet-pytorch``
ships the three networks' weights inside its wheel, so nothing is downloaded. Its results here are
:class:`Detection` objects: the box (x0, y0, x1, y1) in image pixels, the O-Net score, and the
five landmarks (left eye, right eye, nose, left mouth corner, right mouth corner) as (5, 2).

:class:`DetectorSettings` is what config.json records (the device is not a setting: a run trained
on a GPU detects the same faces on a CPU); its :meth:`~DetectorSettings.key` names the detection
cache, so changing a setting detects again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from typing import Any, TypeVar

import numpy as np
from PIL import Image

from retrieval.errors import RetrievalError
from retrieval.faces.cascade import CASCADE_NAME, detect_faces, use_strided_max_pools

__all__ = ["DETECTOR_NAME", "HARDER", "LOOK_HARDER_WITHOUT_FACES", "Detection", "DetectorSettings",
           "MTCNNDetector", "by_confidence", "most_confident"]

DETECTOR_NAME = "mtcnn"
#: the smallest and largest ``min_face_size`` (pixels), and the largest ``max_side`` other than 0
MIN_FACE_SIZE_RANGE, MAX_SIDE_LIMIT = (12, 10_000), 100_000
_PACKAGE = "facenet-pytorch"
#: "Look harder" for one query's faces (:meth:`DetectorSettings.harder`): the smallest face (px), the
#: P-, R- and O-Net thresholds and the recheck. ``benchmarks/look_harder.py`` (BENCHMARKS.md, *Looking
#: harder*): on validation photos of the training people (1260 faces, 900 photos without one) it found
#: no face the defaults miss and boxed something in 27 of the 900 (the defaults: 4) and 26 times beside
#: the faces, at about 3 times the CPU time; on the test photos it finds the two faces the defaults
#: miss and all 12 faces of a group photo (the defaults: 8). Hence a switch for a photo a person looks at.
HARDER = {"min_face_size": 20, "thresholds": (0.3, 0.3, 0.9), "recheck_threshold": 0.9}
#: the one-line error for --look-harder on a run without a face pipeline
LOOK_HARDER_WITHOUT_FACES = "--look-harder looks for faces, and this run was trained on whole images (without --faces)"


def detector_version() -> str:
    """``facenet-pytorch`` and its version (part of the cache key: other weights, other boxes)."""
    try:
        return f"{_PACKAGE} {metadata.version(_PACKAGE)}, {CASCADE_NAME}"
    except metadata.PackageNotFoundError:
        return f"{_PACKAGE} (not installed), {CASCADE_NAME}"


@dataclass(frozen=True)
class DetectorSettings:
    """MTCNN's settings: the smallest face searched for (pixels), the score each stage needs
    (P-Net, R-Net, O-Net; a face is kept when its O-Net score exceeds the last), the ratio
    between the image pyramid's scales, how many times O-Net's landmarks are refined
    (``landmark_passes``, 0 to 4; :func:`~retrieval.faces.cascade.refine_landmarks`), and the
    longest side MTCNN searches (``max_side``): a photo with a longer side is searched as a copy
    area-averaged down to it, and the boxes and landmarks are mapped back to the photo's pixels
    (×W/w across, ×H/h down), so alignment still cuts the face from the full photo; 0 searches
    every photo as it is. Checked on creation (a one-line RetrievalError).

    The defaults differ from facenet-pytorch's (20 px; 0.6, 0.7, 0.7; 0.709). On the 130 photos of
    ``att_faces_scenes`` (160 faces pasted into grocery photos) those miss 10 faces (the coarse
    pyramid steps over them), find a second "face" in 11 of the 100 one-person photos and 8 in 132
    grocery photos, some scored 0.98. A finer pyramid (0.85), faces from 40 px and a strict O-Net
    score (0.97) miss 2 faces and find nothing else (``benchmarks/faces.py``). Both find the one
    face of each of the 100 ``att_faces/test`` crops.

    Those photos are the test set, so the defaults were checked on validation photos of the
    training people (``benchmarks/detector_settings.py``: 300 one-person and 60 two-person photos,
    300 crops, 279 photos without a face). There, without the recheck below, these defaults make 7
    errors (1 face missed, 6 found in apples and cartons); the fewest, 3, come with O-Net 0.99, and
    the setting chosen by that count (P-/R-Net 0.7, O-Net 0.99) misses 19 of the 260 faces of the
    test photos. With the recheck they make 1 error, tied with the fewest (the tie's pick, O-Net
    0.99, misses 14 test faces). The
    thresholds do not carry from one set of people to another, so the defaults stay. A second
    pass with lower P-/R-Net thresholds over the photos where nothing is found gains at most 1
    validation face and finds 2 or more false ones at every threshold tried; asking O-Net for
    0.995 or more in that pass, only P-/R-Net 0.2 finds that face and no false one, at about
    200 ms more for every photo without a face: one face is too little to choose on. On four
    fresh sets of validation photos (1680 faces) that pass found 1 of the 3 missed faces and 1
    (O-Net 0.998) or 3 (0.995) false ones, so there is no second pass. The one pass those sets
    left (P-/R-Net 0.3, O-Net 0.998), counted on ten more (4200 faces), found 0 of the 4 missed
    faces and 3 false ones. A second pass on the photo made grey (P-/R-Net or all three stages
    on it), counted on ten more sets (4200 faces), found 3 of the 5 missed faces and 31 or 22
    false ones (BENCHMARKS.md, *MTCNN's thresholds*).

    ``landmark_passes`` changes no face found, only where its eyes, nose and mouth are said to be.
    Two passes (the default) bring the landmarks of a face given as a tight crop and of the same face
    pasted into a photo from 0.096 to 0.024 of the eye distance apart (RMS); with them a face run
    scored higher on the validation people (BENCHMARKS.md, *Faces in photos*). Settings saved before
    it existed read back as 0 (no refinement: the landmarks those runs were trained on).

    ``recheck_threshold`` drops the faces that do not stay faces when framed by their own landmarks:
    each landmark pass shows O-Net the square its landmarks place, and a face is kept only when
    every pass scores it at least this (0: every face O-Net passed is kept; with ``landmark_passes``
    0 there is nothing to recheck). Designed on ``face_scenes.py`` seeds 25-29 (of 2097 faces found
    in place, 1 rechecks below 0.9 and none below 0.81; 36 of the 50 false ones below 0.9) and chosen by a rule written
    down before a count on seeds 30-39 (6600 photos, 4200 faces): faces missed + false faces 112
    without it, 66 at 0.5, 54 at 0.8, 46 at 0.9 (10 missed, 36 false; without it 9 and 103). Every
    ``att_faces/train`` crop rechecks at 0.93 or more. It costs nothing: the passes run anyway.
    Settings saved before it existed read back as 0 (BENCHMARKS.md, *MTCNN's thresholds*).

    ``max_side`` bounds the cost of large photos: MTCNN's work grows with the pixels (on 2 cores
    a 1155 × 866 photo takes about 0.2 s, 4000 × 3000 about 1.3 s), and a phone photo of 12 MP
    holds faces far above ``min_face_size``. At the default, 1600, a photo's faces are searched
    down to ``min_face_size`` · (longest side / 1600) pixels: 100 px in a 4000 × 3000 photo
    (1/40 of its width), 40 px in anything up to 1600 px. Every photo the face runs and the face
    counts use is smaller, so none of their figures changes. Settings saved before it existed read back as 0 (every
    photo as it is, as they were detected).
    """

    min_face_size: int = 40
    thresholds: tuple[float, float, float] = (0.6, 0.6, 0.97)
    scale_factor: float = 0.85
    landmark_passes: int = 2
    max_side: int = 1600
    recheck_threshold: float = 0.9

    def __post_init__(self) -> None:
        size = self.min_face_size
        low, high = MIN_FACE_SIZE_RANGE
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or not low <= size <= high:
            raise RetrievalError(f"faces: min_face_size must be a whole number of pixels from {low} to {high}, got {size!r}")
        object.__setattr__(self, "min_face_size", int(size))
        thresholds = self.thresholds
        if isinstance(thresholds, (str, bytes)) or not isinstance(thresholds, Sequence) or len(thresholds) != 3 \
                or not all(_is_number(t) and 0.0 < t < 1.0 for t in thresholds):
            raise RetrievalError(f"faces: thresholds must be three numbers between 0 and 1 (P-, R-, O-Net), got {thresholds!r}")
        object.__setattr__(self, "thresholds", tuple(float(t) for t in thresholds))
        factor = self.scale_factor
        if not (_is_number(factor) and 0.1 <= factor <= 0.95):
            raise RetrievalError(f"faces: scale_factor must be a number from 0.1 to 0.95, got {factor!r}")
        object.__setattr__(self, "scale_factor", float(factor))
        passes = self.landmark_passes
        if isinstance(passes, bool) or not isinstance(passes, (int, np.integer)) or not 0 <= passes <= 4:
            raise RetrievalError(f"faces: landmark_passes must be a whole number from 0 to 4, got {passes!r}")
        object.__setattr__(self, "landmark_passes", int(passes))
        side = self.max_side
        if isinstance(side, bool) or not isinstance(side, (int, np.integer)) \
                or not (side == 0 or self.min_face_size <= side <= MAX_SIDE_LIMIT):
            raise RetrievalError(f"faces: max_side must be 0 (no limit) or a whole number of pixels from min_face_size "
                                 f"({self.min_face_size}) to {MAX_SIDE_LIMIT}, got {side!r}")
        object.__setattr__(self, "max_side", int(side))
        recheck = self.recheck_threshold
        if not (_is_number(recheck) and 0.0 <= recheck < 1.0):
            raise RetrievalError(f"faces: recheck_threshold must be a number from 0 (no recheck) to below 1, got {recheck!r}")
        object.__setattr__(self, "recheck_threshold", float(recheck))

    def to_json(self) -> dict[str, Any]:
        """Plain JSON (config.json's ``faces.detector_settings``). ``landmark_passes``, ``max_side`` and
        ``recheck_threshold`` only when not 0: settings from before they existed write, and name their
        cache, exactly as they did."""
        value: dict[str, Any] = {"min_face_size": self.min_face_size, "thresholds": list(self.thresholds),
                                 "scale_factor": self.scale_factor}
        if self.landmark_passes:
            value["landmark_passes"] = self.landmark_passes
        if self.max_side:
            value["max_side"] = self.max_side
        if self.recheck_threshold:
            value["recheck_threshold"] = self.recheck_threshold
        return value

    @classmethod
    def from_json(cls, value: Any) -> DetectorSettings:
        """The settings :meth:`to_json` wrote; missing keys take the defaults, but a missing
        ``landmark_passes``, ``max_side`` or ``recheck_threshold`` is 0 (settings saved before they
        existed; see :meth:`to_json`). Unknown keys are an error."""
        if not isinstance(value, Mapping):
            raise RetrievalError(f"faces: detector settings must be a JSON object, got {type(value).__name__}")
        unknown = sorted(set(value) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise RetrievalError(f"faces: unknown detector setting(s) {', '.join(map(str, unknown))}")
        return cls(**{"landmark_passes": 0, "max_side": 0, "recheck_threshold": 0.0, **value})

    def shrinks(self, photo_size: tuple[int, int]) -> bool:
        """Whether a photo of ``photo_size`` (width, height) is searched as a copy shrunk to ``max_side``."""
        return bool(self.max_side) and max(photo_size) > self.max_side

    def smallest_face(self, photo_size: tuple[int, int]) -> int:
        """The smallest face, in the photo's pixels, looked for in a photo of ``photo_size`` (width,
        height): ``min_face_size``, times longest side / ``max_side`` when the photo is searched as a
        copy shrunk to ``max_side`` (rounded up)."""
        if not self.shrinks(photo_size):
            return self.min_face_size
        return math.ceil(self.min_face_size * max(photo_size) / self.max_side)

    def reach(self) -> str:
        """What the detector looks for, in a few words: "faces from 40 px, photos over 1600 px searched at
        1600, rechecked at 0.9"."""
        return (f"faces from {self.min_face_size} px" + (f", photos over {self.max_side} px searched at {self.max_side}" if self.max_side else "")
                + (f", rechecked at {self.recheck_threshold:g}" if self.recheck_threshold and self.landmark_passes else ""))

    def no_face_hint(self, photo_size: tuple[int, int], looked_harder: bool = False) -> str:
        """Why a photo may have no face found, for the one line that says so: the smallest face
        looked for in it, and the recheck when there is one, with the ``retrieval train`` flags that
        set them; with ``looked_harder`` (these are :meth:`harder`'s settings) what looking harder
        reached, since the run's flags no longer set those numbers (only ``--face-max-side`` still does)."""
        shrinks = self.shrinks(photo_size)
        if looked_harder:
            hint = (f"faces under about {self.smallest_face(photo_size)} px are not looked for in it even looking harder"
                    + (" (the run's --face-max-side)" if shrinks else ""))
        else:
            hint = (f"faces under about {self.smallest_face(photo_size)} px are not looked for in it (the run's "
                    + ("--face-min-size and --face-max-side" if shrinks else "--face-min-size") + ")")
        if self.recheck_threshold and self.landmark_passes:
            where = f"at {self.recheck_threshold:g}, looking harder" if looked_harder else f"--face-recheck {self.recheck_threshold:g}"
            hint += f", and a face that O-Net doubts once framed by its own landmarks is dropped ({where})"
        return hint

    def harder(self) -> DetectorSettings:
        """These settings looking harder for faces, for one query a person looks at (``retrieval
        search --look-harder``, ``verify --look-harder``, the app's *Look harder*), never for what
        a run trains on, indexes or evaluates: faces from min(min_face_size, 20) px, each stage's
        threshold min(this one's, :data:`HARDER`'s) (P-, R-Net 0.3, O-Net 0.9) and the recheck
        min(this one's, 0.9): never more than the run asks, so a run without a recheck gets none.
        Pyramid factor, landmark passes and longest side are kept, so a face found by both is
        aligned the same way."""
        return dataclasses.replace(
            self, min_face_size=min(self.min_face_size, HARDER["min_face_size"]),
            thresholds=tuple(min(mine, low) for mine, low in zip(self.thresholds, HARDER["thresholds"])),
            recheck_threshold=min(self.recheck_threshold, HARDER["recheck_threshold"]))

    def look_harder_hint(self, photo_size: tuple[int, int]) -> str:
        """The end of a "no face found" line for a query not looked at harder: the smallest face that
        :meth:`harder` looks for in a photo of ``photo_size`` (width, height), in the photo's pixels
        (a run already looking from that size is told only of the lower thresholds)."""
        smallest = self.harder().smallest_face(photo_size)
        if smallest < self.smallest_face(photo_size):
            return f"--look-harder looks for faces from {smallest} px at lower thresholds"
        return f"--look-harder looks at lower thresholds (for faces from {smallest} px, as the run does)"

    def key(self) -> str:
        """A stable 16-hex-digit hash of the detector, its version and these settings."""
        text = json.dumps({"detector": DETECTOR_NAME, "version": detector_version(), **self.to_json()}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.floating, np.integer)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True, eq=False)
class Detection:
    """One face found in an image: ``box`` (x0, y0, x1, y1) in image pixels, inside the image;
    ``score`` (O-Net's face probability); ``landmarks`` (5, 2): left eye, right eye, nose,
    left mouth corner, right mouth corner, (x, y) each, in image pixels (not clipped)."""

    box: tuple[float, float, float, float]
    score: float
    landmarks: np.ndarray

    @property
    def area(self) -> float:
        """The box's area in square pixels."""
        x0, y0, x1, y1 = self.box
        return max(0.0, x1 - x0) * max(0.0, y1 - y0)

    def to_json(self) -> dict[str, Any]:
        """``{"box": [x0, y0, x1, y1], "score": s, "landmarks": [[x, y] × 5]}``, plain JSON."""
        return {"box": [float(v) for v in self.box], "score": float(self.score),
                "landmarks": [[float(x), float(y)] for x, y in self.landmarks]}

    @classmethod
    def from_json(cls, value: Any) -> Detection:
        """The detection :meth:`to_json` wrote; ValueError when the value does not have that shape."""
        if not isinstance(value, Mapping):
            raise ValueError("a detection must be a JSON object")
        box = np.asarray(value["box"], dtype=np.float64)
        landmarks = np.asarray(value["landmarks"], dtype=np.float64)
        score = float(value["score"])
        if box.shape != (4,) or landmarks.shape != (5, 2) or not (np.isfinite(box).all() and np.isfinite(landmarks).all()):
            raise ValueError("a detection needs a box of 4 numbers and 5 (x, y) landmarks")
        return cls(tuple(float(v) for v in box), score, landmarks)


Face = TypeVar("Face", bound=Detection)


def by_confidence(faces: Sequence[Face]) -> list[Face]:
    """``faces`` from the most confident down; equal scores: the larger box first."""
    return sorted(faces, key=lambda face: (face.score, face.area), reverse=True)


def most_confident(faces: Sequence[Face]) -> Face | None:
    """The face training uses: the highest score; ties: the larger box. None when there is none."""
    ordered = by_confidence(faces)
    return ordered[0] if ordered else None


class MTCNNDetector:
    """MTCNN with :class:`DetectorSettings` on ``device`` (CPU by default), loaded on first use.

    :meth:`detect` takes one RGB image; :meth:`detect_many` a list, run as batches of up to
    ``batch_size`` equal-sized images (MTCNN needs equal sizes in a batch; on a 2-core CPU batches
    of 8 cost 40 % less CPU time than one image at a time for 92 × 112 crops, about the same
    for 480 × 360 photos, and find the same faces). Results come most confident first."""

    name = DETECTOR_NAME

    def __init__(self, settings: DetectorSettings | None = None, device: str = "cpu", batch_size: int = 8) -> None:
        self.settings = settings if settings is not None else DetectorSettings()
        self.device = device
        self.batch_size = max(1, int(batch_size))
        self._mtcnn = None

    def detect(self, image: Image.Image) -> list[Detection]:
        """Every face in ``image`` (RGB), most confident first; [] when there is none."""
        return self.detect_many([image])[0]

    def detect_many(self, images: Sequence[Image.Image]) -> list[list[Detection]]:
        """Every face of each image, in the order of ``images`` (a photo longer than ``max_side``
        searched as a smaller copy, the faces given in the photo's own pixels)."""
        results: list[list[Detection]] = [[] for _ in images]
        searched = [self._searched_copy(image) for image in images]
        groups: dict[tuple[int, int], list[int]] = {}
        for i, copy in enumerate(searched):
            if min(copy.size) >= self.settings.min_face_size:  # smaller: no face fits (and MTCNN would fail)
                groups.setdefault(copy.size, []).append(i)
        for indices in groups.values():
            for start in range(0, len(indices), self.batch_size):
                chunk = indices[start:start + self.batch_size]
                for i, faces in zip(chunk, self._run([searched[i] for i in chunk], [images[i].size for i in chunk])):
                    results[i] = faces
        return results

    def _searched_copy(self, image: Image.Image) -> Image.Image:
        """``image`` in RGB, area-averaged down so that its longest side is at most ``max_side``."""
        image = _rgb(image)
        if not self.settings.shrinks(image.size):
            return image
        width, height = image.size
        scale = self.settings.max_side / max(width, height)
        return image.resize((max(1, round(width * scale)), max(1, round(height * scale))), Image.Resampling.BOX)

    def _run(self, copies: list[Image.Image], photo_sizes: list[tuple[int, int]]) -> list[list[Detection]]:
        """MTCNN over ``copies`` (one size), each face given in the pixels of its photo (W, H):
        x · W / w and y · H / h, the box clipped to the photo, the landmarks not (a copy the photo's
        own size: ratios of 1, the numbers as MTCNN gave them)."""
        s = self.settings
        boxes, points = detect_faces(np.stack([np.asarray(image, dtype=np.uint8) for image in copies]), self._load(),
                                     s.min_face_size, s.thresholds, s.scale_factor, s.landmark_passes, s.recheck_threshold)
        copy_width, copy_height = copies[0].size
        out = []
        for image_boxes, image_points, (width, height) in zip(boxes, points, photo_sizes):
            sx, sy = width / copy_width, height / copy_height
            faces = []
            for box, landmarks in zip(image_boxes, image_points):
                x0, y0, x1, y1, score = (float(v) for v in box)
                clipped = (min(max(x0 * sx, 0.0), width), min(max(y0 * sy, 0.0), height),
                           min(max(x1 * sx, 0.0), width), min(max(y1 * sy, 0.0), height))
                faces.append(Detection(clipped, score, np.asarray(landmarks, dtype=np.float64).reshape(5, 2) * [sx, sy]))
            out.append(by_confidence(faces))
        return out

    def _load(self):
        if self._mtcnn is None:
            try:
                from facenet_pytorch import MTCNN
            except ImportError as error:  # a dependency of the package; missing only in a broken install
                raise RetrievalError(f"faces: facenet-pytorch is not installed ({error}); pip install facenet-pytorch==2.5.3") from error
            s = self.settings
            self._mtcnn = MTCNN(min_face_size=s.min_face_size, thresholds=list(s.thresholds), factor=s.scale_factor,
                                select_largest=False, keep_all=True, device=self.device).eval()
            use_strided_max_pools(self._mtcnn)
        return self._mtcnn


def _rgb(image: Image.Image) -> Image.Image:
    return image if image.mode == "RGB" else image.convert("RGB")
