"""Tests of retrieval.faces.align: the Umeyama similarity transform and the warp onto the template."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from retrieval.faces.align import TEMPLATE, TEMPLATE_SIZE, align_face, apply_transform, invert_transform, \
    similarity_transform, warp_to_template


def similarity(scale: float, degrees: float, shift: tuple[float, float]) -> np.ndarray:
    """The 2 × 3 matrix of x ↦ scale · R(degrees) · x + shift."""
    a = math.radians(degrees)
    rotation = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    return np.hstack([scale * rotation, np.array(shift, float)[:, None]])


def least_squares_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The same fit by hand, another way: x' = a·x − b·y + tx, y' = b·x + a·y + ty is linear in
    (a, b, tx, ty), so ordinary linear least squares solves it (and a² + b² > 0: no reflection)."""
    rows, rhs = [], []
    for (x, y), (u, v) in zip(src, dst):
        rows += [[x, -y, 1, 0], [y, x, 0, 1]]
        rhs += [u, v]
    a, b, tx, ty = np.linalg.lstsq(np.array(rows), np.array(rhs), rcond=None)[0]
    return np.array([[a, -b, tx], [b, a, ty]])


def test_template_maps_onto_itself_with_the_identity():
    matrix = similarity_transform(TEMPLATE, TEMPLATE)
    np.testing.assert_allclose(matrix, [[1, 0, 0], [0, 1, 0]], atol=1e-9)


@pytest.mark.parametrize("scale, degrees, shift", [
    (2.5, 30.0, (140.0, -20.0)),
    (0.4, -75.0, (3.0, 9.5)),
    (1.0, 180.0, (300.0, 200.0)),
    (7.3, 12.0, (-50.0, 410.0)),
])
def test_rotated_scaled_shifted_template_comes_back_to_the_template(scale, degrees, shift):
    moved = similarity(scale, degrees, shift)
    landmarks = apply_transform(moved, TEMPLATE)
    matrix = similarity_transform(landmarks, TEMPLATE)
    np.testing.assert_allclose(matrix, invert_transform(moved), atol=1e-6)
    np.testing.assert_allclose(apply_transform(matrix, landmarks), TEMPLATE, atol=1e-6)


def test_noisy_landmarks_get_the_least_squares_fit():
    rng = np.random.default_rng(0)
    landmarks = apply_transform(similarity(1.7, 20.0, (60.0, 35.0)), TEMPLATE) + rng.normal(0.0, 2.0, (5, 2))
    np.testing.assert_allclose(similarity_transform(landmarks, TEMPLATE),
                               least_squares_similarity(landmarks, TEMPLATE), atol=1e-8)


def test_mirrored_landmarks_give_a_rotation_never_a_reflection():
    mirrored = TEMPLATE * np.array([-1.0, 1.0]) + np.array([200.0, 0.0])  # left and right swapped
    matrix = similarity_transform(mirrored, TEMPLATE)
    assert np.linalg.det(matrix[:, :2]) > 0
    linear = matrix[:, :2] / math.sqrt(np.linalg.det(matrix[:, :2]))
    np.testing.assert_allclose(linear @ linear.T, np.eye(2), atol=1e-9)  # a scaled rotation
    # A reflection would fit exactly; the best rotation cannot, and the fit is still the least-squares one.
    assert np.abs(apply_transform(matrix, mirrored) - TEMPLATE).max() > 1.0
    np.testing.assert_allclose(matrix, least_squares_similarity(mirrored, TEMPLATE), atol=1e-8)


def test_coincident_or_mismatched_points_are_refused():
    with pytest.raises(ValueError, match="coincide"):
        similarity_transform(np.ones((5, 2)), TEMPLATE)
    with pytest.raises(ValueError, match="same shape"):
        similarity_transform(TEMPLATE[:4], TEMPLATE)


def blobs_image(points: np.ndarray, size: tuple[int, int], sigma: float) -> Image.Image:
    """A black RGB image with a bright Gaussian blob at each point (pixel centres at integers)."""
    ys, xs = np.mgrid[0:size[1], 0:size[0]]
    canvas = np.zeros((size[1], size[0]))
    for x, y in points:
        canvas += np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * sigma ** 2))
    pixels = np.clip(canvas * 255, 0, 255).astype(np.uint8)
    return Image.fromarray(np.stack([pixels] * 3, axis=-1))


def blob_centres(image: Image.Image, near: np.ndarray, radius: int = 7) -> np.ndarray:
    """The intensity-weighted centre of the blob around each point of ``near``."""
    pixels = np.asarray(image.convert("L"), dtype=np.float64)
    ys, xs = np.mgrid[0:pixels.shape[0], 0:pixels.shape[1]]
    centres = []
    for x, y in near:
        window = (np.abs(xs - x) <= radius) & (np.abs(ys - y) <= radius)
        weights = np.where(window, pixels, 0.0)
        centres.append([(weights * xs).sum() / weights.sum(), (weights * ys).sum() / weights.sum()])
    return np.array(centres)


@pytest.mark.parametrize("scale, degrees, shift, size", [
    (2.2, 25.0, (150.0, 20.0), (480, 360)),    # a face larger than the template
    (0.8, -10.0, (40.0, 30.0), (160, 140)),    # smaller: enlarged by the warp
    (4.5, 40.0, (500.0, 60.0), (1100, 900)),   # much larger: shrunk by a box filter first
])
def test_warp_moves_features_of_a_transformed_face_back_onto_the_template(scale, degrees, shift, size):
    moved = similarity(scale, degrees, shift)
    landmarks = apply_transform(moved, TEMPLATE)
    image = blobs_image(landmarks, size, sigma=2.0 * scale)  # a 2-template-pixel blob wherever it lands
    aligned = warp_to_template(image, landmarks)
    assert aligned.size == (TEMPLATE_SIZE, TEMPLATE_SIZE) and aligned.mode == "RGB"
    np.testing.assert_allclose(blob_centres(aligned, TEMPLATE), TEMPLATE, atol=0.05)  # a half-pixel slip would show


def test_align_face_gives_an_rgb_crop_of_the_output_size_from_a_greyscale_image():
    landmarks = apply_transform(similarity(1.5, 5.0, (20.0, 10.0)), TEMPLATE)
    grey = blobs_image(landmarks, (240, 220), sigma=3.0).convert("L")
    crop = align_face(grey, landmarks, output_size=64)
    assert crop.size == (64, 64) and crop.mode == "RGB"
    np.testing.assert_allclose(blob_centres(crop, TEMPLATE * 64 / 112, radius=4),
                               (TEMPLATE + 0.5) * 64 / 112 - 0.5, atol=0.05)


def test_outside_the_photo_is_black():
    landmarks = apply_transform(similarity(1.0, 0.0, (-60.0, 0.0)), TEMPLATE)  # the face's left half is off the photo
    aligned = np.asarray(warp_to_template(Image.new("RGB", (200, 150), (255, 255, 255)), landmarks))
    assert aligned[:, :50].max() == 0 and aligned[:, 70:].min() == 255


@pytest.mark.parametrize("size", [112, 64, 40])
def test_the_mask_keeps_the_face_oval_and_greys_the_corners(size):
    from retrieval.faces.align import FACE_OVAL, MASK_FILL, mask_outside_face

    rng = np.random.default_rng(size)
    face = Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8), "RGB")
    masked = np.asarray(mask_outside_face(face)).astype(int)
    original = np.asarray(face).astype(int)
    for corner in ((0, 0), (0, size - 1), (size - 1, 0), (size - 1, size - 1)):
        assert tuple(masked[corner]) == MASK_FILL
    scale = size / 112
    (cx, cy), (a, b), edge = FACE_OVAL["centre"], FACE_OVAL["semi_axes"], FACE_OVAL["edge"]
    centre = (int(cy * scale), int(cx * scale))
    np.testing.assert_array_equal(masked[centre], original[centre])  # inside: untouched
    eyes = (int(52 * scale), int(38 * scale))
    np.testing.assert_array_equal(masked[eyes], original[eyes])
    outside = (int(cy * scale), min(size - 1, int((cx + a + edge) * scale) + 1))  # beyond the cheek: grey
    assert tuple(masked[outside]) == MASK_FILL
    # between: a blend of the two, never outside their range
    low, high = np.minimum(original, 128), np.maximum(original, 128)
    assert ((masked >= low - 1) & (masked <= high + 1)).all()
