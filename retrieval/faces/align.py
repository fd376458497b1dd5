"""Face alignment: the similarity transform onto the ArcFace five-point template, and the warp.

A detected face comes with five landmarks (left eye, right eye, nose, left and right mouth corner,
in image pixels, x then y). Alignment finds the similarity transform T (rotation, uniform scale,
translation; no shear, no reflection) that carries those five points as close as possible (least
squares) onto the standard 112 × 112 five-point template of ArcFace-style models
(:data:`TEMPLATE`), warps the image with it to 112 × 112, then resizes the result to the run's
image size. Every aligned face thus has its eyes, nose and mouth at the same place, whatever the
face's position, size and roll in the photo.

:func:`mask_outside_face` then greys out what lies outside the face: an ellipse in template
coordinates (:data:`FACE_OVAL`, centre and semi-axes in the 112 × 112 frame) that holds the
forehead, cheeks and chin, with a soft edge. Outside it an aligned crop shows whatever surrounded
the face (a studio's grey wall, the black beyond a tight crop, a shelf of fruit in a photo), which
says nothing about who it is; a model trained on crops of one kind of surrounding otherwise learns
it and fails on the other (BENCHMARKS.md, *Faces in photos*).

Coordinates follow the pixel-index convention of the detector and of the template (the centre of
pixel (i, j) is the point x = i, y = j). Pure numpy and Pillow.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

__all__ = [
    "FACE_OVAL", "MASK_NAME", "TEMPLATE", "TEMPLATE_NAME", "TEMPLATE_SIZE", "align_face", "apply_transform",
    "invert_transform", "mask_outside_face", "similarity_transform", "warp_to_template",
]

#: The standard five-point template of ArcFace-style models (insightface's ``arcface_dst``) in a
#: 112 × 112 crop: left eye, right eye, nose tip, left mouth corner, right mouth corner (x, y).
TEMPLATE = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float64,
)
TEMPLATE_NAME = "arcface-5pt-112"
TEMPLATE_SIZE = 112

#: The face region kept by :func:`mask_outside_face`, in the 112 × 112 template frame: the centre
#: (x, y) and the semi-axes (a, b) of an ellipse, and the width of its soft edge (pixels). The
#: template's eyes are at y ≈ 52 and its mouth at y ≈ 92, 35 px apart horizontally: the ellipse
#: reaches from the hairline (y = 10) to below the chin (y = 110) and over both cheeks (x = 18 to 94).
FACE_OVAL = {"centre": (56.0, 60.0), "semi_axes": (38.0, 50.0), "edge": 6.0}
MASK_NAME = "oval-38x50"
#: what replaces the pixels outside the face (mid-grey: the mean of a normalised image, near 0)
MASK_FILL = (128, 128, 128)

# Below this scale (image pixels per template pixel < 1 / 0.5), the image is first shrunk by an
# integer box filter, so a large face is averaged down rather than point-sampled (no aliasing).
_MIN_DIRECT_SCALE = 0.5


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 2 × 3 matrix M = [s·R | t] of the similarity transform that maps ``src`` onto ``dst``
    with the least squared error (Umeyama 1991, "Least-squares estimation of transformation
    parameters between two point patterns").

    With points x_i (``src``) and y_i (``dst``), i = 1..n, it minimises
    Σ_i ||y_i − (s·R·x_i + t)||² over the scale s > 0, the rotation R (det R = +1) and t:

    - centre both sets: μ_x = mean x_i, μ_y = mean y_i, x'_i = x_i − μ_x, y'_i = y_i − μ_y;
    - σ_x² = (1/n) Σ_i ||x'_i||² (the variance of ``src``); Σ = (1/n) Σ_i y'_i x'_iᵀ (the 2 × 2 covariance);
    - SVD: Σ = U·D·Vᵀ; S = diag(1, 1), or diag(1, −1) when det(U)·det(V) < 0 (the reflection fix:
      the best orthogonal matrix would be a reflection, and the nearest rotation is taken instead);
    - R = U·S·Vᵀ, s = trace(D·S) / σ_x², t = μ_y − s·R·μ_x.

    A point x (a column) maps to M[:, :2]·x + M[:, 2]. Equals insightface's alignment
    (skimage's ``SimilarityTransform.estimate``, which is Umeyama with the scale estimated) and,
    up to its float32 rounding, OpenCV's ``estimateAffinePartial2D`` when every point is an inlier.

    Raises ValueError when the shapes differ or ``src`` has no spread (all points equal).
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.ndim != 2 or src.shape[1] != 2 or src.shape != dst.shape or len(src) < 2:
        raise ValueError(f"need two (n, 2) point sets of the same shape, n >= 2; got {src.shape} and {dst.shape}")
    mean_src, mean_dst = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - mean_src, dst - mean_dst
    var_src = float((src_c ** 2).sum(axis=1).mean())
    if not var_src > 1e-12:
        raise ValueError("the source points coincide: no transform is defined")
    covariance = dst_c.T @ src_c / len(src)
    u, d, vt = np.linalg.svd(covariance)
    signs = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        signs[-1] = -1.0
    rotation = u @ np.diag(signs) @ vt
    scale = float((d * signs).sum()) / var_src
    translation = mean_dst - scale * rotation @ mean_src
    return np.hstack([scale * rotation, translation[:, None]])


def apply_transform(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """``points`` (n, 2) mapped by the 2 × 3 affine ``matrix``."""
    points = np.asarray(points, dtype=np.float64)
    return points @ matrix[:, :2].T + matrix[:, 2]


def invert_transform(matrix: np.ndarray) -> np.ndarray:
    """The 2 × 3 matrix of the inverse of the affine transform ``matrix``."""
    linear = np.linalg.inv(matrix[:, :2])
    return np.hstack([linear, -(linear @ matrix[:, 2])[:, None]])


def warp_to_template(image: Image.Image, landmarks: np.ndarray) -> Image.Image:
    """The 112 × 112 aligned face: ``image`` (RGB) warped by the similarity transform that maps
    ``landmarks`` (5, 2) onto :data:`TEMPLATE`. Bilinear sampling; outside the photo is black.

    A face much larger than the template (scale below 0.5) is first cut out and shrunk by an
    integer factor k with a k × k box filter (``Image.reduce``), so the warp does not alias.
    """
    matrix = similarity_transform(landmarks, TEMPLATE)
    scale = math.hypot(matrix[0, 0], matrix[1, 0])
    if scale < _MIN_DIRECT_SCALE:
        image, matrix = _shrink_around_face(image, matrix, int(1.0 / scale))
    inverse = invert_transform(matrix)
    # Pillow samples input point A·(x + ½, y + ½) for output pixel (x, y), with input pixel centres
    # at +½ too; shift by ½ on both sides to keep the pixel-index convention of the landmarks.
    a, b, c = inverse[0]
    d, e, f = inverse[1]
    coefficients = (a, b, c + 0.5 - 0.5 * (a + b), d, e, f + 0.5 - 0.5 * (d + e))
    return image.transform(
        (TEMPLATE_SIZE, TEMPLATE_SIZE), Image.Transform.AFFINE, coefficients,
        resample=Image.Resampling.BILINEAR, fillcolor=(0, 0, 0),
    )


def align_face(image: Image.Image, landmarks: np.ndarray, output_size: int = TEMPLATE_SIZE) -> Image.Image:
    """The aligned face as an RGB image of ``output_size`` × ``output_size``: the 112 × 112 warp of
    :func:`warp_to_template`, resized (bicubic, antialiased) when ``output_size`` is not 112."""
    if image.mode != "RGB":
        image = image.convert("RGB")
    face = warp_to_template(image, np.asarray(landmarks, dtype=np.float64))
    if output_size != TEMPLATE_SIZE:
        face = face.resize((output_size, output_size), Image.Resampling.BICUBIC)
    return face


def _shrink_around_face(image: Image.Image, matrix: np.ndarray, factor: int) -> tuple[Image.Image, np.ndarray]:
    """The part of ``image`` that the 112 × 112 output sees, shrunk ``factor`` times with a box
    filter, and the transform from the shrunk part's pixels to the template.

    Pixel q of the shrunk part averages the original pixels whose centres lie around
    p = origin + factor·q + (factor − 1)/2, so M' = M ∘ (q ↦ p)."""
    corners = np.array([[0, 0], [TEMPLATE_SIZE, 0], [0, TEMPLATE_SIZE], [TEMPLATE_SIZE, TEMPLATE_SIZE]], float)
    seen = apply_transform(invert_transform(matrix), corners)
    x0 = max(0, int(math.floor(seen[:, 0].min())) - factor)
    y0 = max(0, int(math.floor(seen[:, 1].min())) - factor)
    x1 = min(image.width, int(math.ceil(seen[:, 0].max())) + factor + 1)
    y1 = min(image.height, int(math.ceil(seen[:, 1].max())) + factor + 1)
    if x1 - x0 < factor or y1 - y0 < factor:  # the face lies outside the photo: nothing to shrink
        return image, matrix
    part = image.crop((x0, y0, x1, y1)).reduce(factor)
    linear = matrix[:, :2]
    offset = linear @ np.array([x0 + (factor - 1) / 2.0, y0 + (factor - 1) / 2.0]) + matrix[:, 2]
    return part, np.hstack([linear * factor, offset[:, None]])


def mask_outside_face(face: Image.Image) -> Image.Image:
    """``face`` (an aligned crop, any size) with everything outside :data:`FACE_OVAL` replaced by
    mid-grey: weight w = clip((1 − r) · R / edge, 0, 1), where r = √((x − cx)² / a² + (y − cy)² / b²)
    is the pixel's elliptical radius (1 on the ellipse) and R = (a + b) / 2 turns it into pixels;
    the output is w · face + (1 − w) · grey. Coordinates scale with the crop's side / 112."""
    size = face.size[0]
    scale = size / TEMPLATE_SIZE
    (cx, cy), (a, b), edge = FACE_OVAL["centre"], FACE_OVAL["semi_axes"], FACE_OVAL["edge"]
    centres = (np.arange(size, dtype=np.float64) + 0.5) / scale - 0.5  # pixel centres in template pixels
    x, y = centres[None, :], centres[:, None]
    r = np.sqrt(((x - cx) / a) ** 2 + ((y - cy) / b) ** 2)
    weight = np.clip((1.0 - r) * (a + b) / 2.0 / edge, 0.0, 1.0)[:, :, None]
    pixels = np.asarray(face.convert("RGB"), dtype=np.float64)
    blended = weight * pixels + (1.0 - weight) * np.asarray(MASK_FILL, dtype=np.float64)
    return Image.fromarray(np.round(blended).astype(np.uint8), "RGB")
