"""Tests of retrieval.data.transforms: pipeline shapes, normalisation (per image and per batch), seeding."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from data_helpers import DATA_CONFIG
from retrieval.data import build_transforms, cv2_interpolation


def test_eval_transform_gives_normalised_chw_float32_of_input_size():
    transform = build_transforms(DATA_CONFIG, train=False)
    mean_grey = tuple(int(round(m * 255)) for m in DATA_CONFIG["mean"])
    out = transform(Image.new("RGB", (50, 30), mean_grey))
    assert out.shape == (3, 32, 32) and out.dtype == torch.float32
    assert out.abs().max() < 0.02  # the mean colour normalises to ~0
    white = transform(Image.new("RGB", (30, 70), (255, 255, 255)))
    expected = (1 - np.asarray(DATA_CONFIG["mean"])) / np.asarray(DATA_CONFIG["std"])
    assert np.allclose(white.mean(dim=(1, 2)).numpy(), expected, atol=1e-4)


def test_a_greyscale_run_evaluates_colour_images_as_their_grey_levels():
    """data_config["greyscale"]: Y = 0.299 R + 0.587 G + 0.114 B in all three channels, before the resize."""
    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)
    grey = build_transforms({**DATA_CONFIG, "greyscale": True}, train=False)(Image.fromarray(pixels))
    luma = np.rint(pixels @ np.array([0.299, 0.587, 0.114])).clip(0, 255).astype(np.uint8)
    by_hand = build_transforms(DATA_CONFIG, train=False)(Image.fromarray(np.repeat(luma[:, :, None], 3, axis=2)))
    assert torch.allclose(grey, by_hand, atol=2.5 / 255 / min(DATA_CONFIG["std"]))  # within a grey level or two of rounding
    denormalised = grey * torch.tensor(DATA_CONFIG["std"])[:, None, None] + torch.tensor(DATA_CONFIG["mean"])[:, None, None]
    assert torch.allclose(denormalised[0], denormalised[1], atol=1e-5) and torch.allclose(denormalised[1], denormalised[2], atol=1e-5)
    colour = build_transforms({**DATA_CONFIG, "greyscale": False}, train=False)(Image.fromarray(pixels))
    assert not torch.allclose(colour, grey, atol=0.1)  # without the key (every run before it): colour as before
    assert torch.equal(colour, build_transforms(DATA_CONFIG, train=False)(Image.fromarray(pixels)))


def test_train_transform_shape_dtype_and_strength_zero_equals_eval():
    picture = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 56, 3), dtype=np.uint8))
    for strength in (0.5, 1.0, 2.0):
        out = build_transforms(DATA_CONFIG, train=True, strength=strength)(picture)
        assert out.shape == (3, 32, 32) and out.dtype == torch.float32
    plain = build_transforms(DATA_CONFIG, train=True, strength=0.0)(picture)
    assert torch.equal(plain, build_transforms(DATA_CONFIG, train=False)(picture))


def test_train_transform_is_repeatable_for_a_seed():
    picture = Image.fromarray(np.random.default_rng(1).integers(0, 255, (40, 40, 3), dtype=np.uint8))
    transform = build_transforms(DATA_CONFIG, train=True)
    transform.set_random_seed(5)
    first = [transform(picture) for _ in range(3)]
    transform.set_random_seed(5)
    assert all(torch.equal(a, transform(picture)) for a in first)
    assert not torch.equal(first[0], first[1])


def test_normalising_in_batch_gives_the_per_image_pipeline_pixels_from_a_quarter_of_the_bytes():
    import pickle

    pictures = [Image.fromarray(np.random.default_rng(i).integers(0, 256, (40, 56, 3), dtype=np.uint8)) for i in range(3)]
    for train in (False, True):
        torch.manual_seed(3)
        per_image = build_transforms(DATA_CONFIG, train=train, strength=1.5)
        torch.manual_seed(3)
        deferred = build_transforms(DATA_CONFIG, train=train, strength=1.5, normalise_in_batch=True)
        assert per_image.batch_normalise is None and deferred.batch_normalise is not None
        pixels = torch.stack([deferred(p) for p in pictures])  # same seed, same augmentation draws
        assert pixels.dtype == torch.uint8 and pixels.shape == (3, 3, 32, 32) and pixels.is_contiguous()
        expected = torch.stack([per_image(p) for p in pictures])
        assert torch.allclose(deferred.finish_batch(pixels), expected, atol=1e-5)
        assert torch.equal(per_image.finish_batch(expected), expected)  # already normalised: unchanged
    # the formula, by hand: (x - 255 mean) / (255 std) per channel
    normalise = deferred.batch_normalise
    x = torch.tensor([0, 128, 255], dtype=torch.uint8).view(1, 3, 1, 1).expand(2, 3, 2, 2).contiguous()
    want = [(v - 255 * m) / (255 * sd) for v, m, sd in zip((0, 128, 255), DATA_CONFIG["mean"], DATA_CONFIG["std"])]
    assert torch.allclose(normalise(x)[:, :, 0, 0], torch.tensor([want, want]), atol=1e-6)
    assert x.dtype == torch.uint8 and int(x[0, 1, 0, 0]) == 128  # the uint8 batch is left as it was
    assert torch.allclose(pickle.loads(pickle.dumps(normalise))(x), normalise(x))  # crosses into loader workers
    with pytest.raises(TypeError, match="uint8"):
        normalise(x.float())
    with pytest.raises(ValueError, match="channels"):
        normalise(x[:, :2])
    assert deferred.finish_batch(torch.empty(0)).numel() == 0  # a batch whose images were all unreadable


def test_train_transform_seeds_give_different_draws():
    picture = Image.fromarray(np.random.default_rng(1).integers(0, 255, (40, 40, 3), dtype=np.uint8))
    transform = build_transforms(DATA_CONFIG, train=True, strength=1.5)
    draws = []
    for seed in range(4):
        transform.set_random_seed(seed)
        draws.append(transform(picture))
    assert all(not torch.equal(draws[i], draws[j]) for i in range(4) for j in range(i + 1, 4))


def test_cv2_interpolation_reads_the_name_case_insensitively_and_defaults_to_bilinear():
    import cv2

    assert cv2_interpolation({"interpolation": "BICUBIC"}) == cv2.INTER_CUBIC
    assert cv2_interpolation({"interpolation": "nearest"}) == cv2.INTER_NEAREST
    assert cv2_interpolation({"interpolation": "lanczos"}) == cv2.INTER_LANCZOS4
    assert cv2_interpolation({}) == cv2_interpolation({"interpolation": "no such filter"}) == cv2.INTER_LINEAR


def test_face_training_flips_and_slightly_jitters_the_aligned_crop_and_keeps_its_colours_at_strength_one():
    """Aligned faces (``faces=True``): at the default strength each output is the crop or its mirror
    image moved by a small similarity (a bright dot stays within the jitter's reach, and the
    mean brightness stays: no colour step); above 1 the jitter grows and colour steps join; 0 is the
    eval pipeline (a face run records crop_pct 1: the crop is evaluated whole)."""
    from retrieval.data.transforms import FACE_JITTER

    FACE_CONFIG = {**DATA_CONFIG, "crop_pct": 1.0}
    size = 32
    crop = np.full((size, size, 3), 100, dtype=np.uint8)
    crop[10:12, 6:8] = 255  # a bright dot at (x, y) = (6.5, 10.5), off the centre (15.5, 15.5)
    dot, centre = np.array([6.5, 10.5]), np.array([15.5, 15.5])
    # farthest the dot can go: scale and rotation about the centre, plus the shift
    j = FACE_JITTER
    reach = np.linalg.norm(dot - centre) * (0.1 * j + math.radians(10 * j)) + math.hypot(0.05 * j * size, 0.05 * j * size) + 1.0
    eval_pixels = build_transforms(FACE_CONFIG, train=False)(crop)
    eval_mirror = build_transforms(FACE_CONFIG, train=False)(np.ascontiguousarray(crop[:, ::-1]))
    transform = build_transforms(FACE_CONFIG, train=True, faces=True)
    seen = {"as is": 0, "mirrored": 0}
    moved = 0
    for seed in range(16):
        transform.set_random_seed(seed)
        out = transform(crop)
        brightness = out.mean(dim=0).numpy()
        y, x = np.unravel_index(int(brightness.argmax()), brightness.shape)
        as_is = np.linalg.norm(np.array([x, y]) - dot)
        mirrored = np.linalg.norm(np.array([x, y]) - np.array([size - 1 - dot[0], dot[1]]))
        assert min(as_is, mirrored) <= reach, f"the dot went {min(as_is, mirrored):.1f} px, beyond the jitter's {reach:.1f}"
        seen["as is" if as_is < mirrored else "mirrored"] += 1
        moved += not (torch.allclose(out, eval_pixels, atol=1e-3) or torch.allclose(out, eval_mirror, atol=1e-3))
        assert abs(float(out.mean()) - float(eval_pixels.mean())) < 0.05, "no colour step at strength 1"
    assert seen["as is"] > 0 and seen["mirrored"] > 0
    assert moved == 16, "every crop is moved by the jitter, not only flipped"
    flip_only = build_transforms(FACE_CONFIG, train=True, faces=True, face_jitter=0.0)  # --face-jitter 0, and runs from before it
    for seed in range(8):
        flip_only.set_random_seed(seed)
        out = flip_only(crop)
        assert torch.allclose(out, eval_pixels, atol=1e-5) or torch.allclose(out, eval_mirror, atol=1e-5)
    noise = np.random.default_rng(2).integers(0, 256, (size, size, 3), dtype=np.uint8)
    stronger = build_transforms(FACE_CONFIG, train=True, faces=True, strength=4.0)
    colour_changed = 0
    for seed in range(6):
        stronger.set_random_seed(seed)
        out = stronger(noise)
        assert out.shape == (3, size, size)
        colour_changed += abs(float(out.mean()) - float(build_transforms(FACE_CONFIG, train=False)(noise).mean())) > 0.05
    assert colour_changed > 0, "above strength 1 the colour steps join"
    crop = noise
    eval_pixels = build_transforms(FACE_CONFIG, train=False)(crop)
    assert torch.equal(build_transforms(FACE_CONFIG, train=True, faces=True, strength=0.0)(crop), eval_pixels)
    read_only = crop.copy()
    read_only.flags.writeable = False  # as Pillow's pixels: a pipeline may pass them through to torch, which warns
    for transform in (build_transforms(FACE_CONFIG, train=False, normalise_in_batch=True),
                      build_transforms(FACE_CONFIG, train=True, faces=True, normalise_in_batch=True)):
        given, pipeline = [], transform.pipeline
        transform.pipeline = lambda image: (given.append(image.flags.writeable), pipeline(image=image))[1]
        transform(read_only)
        assert given == [True], "pixels of the output size reach the pipeline writable"
    larger = np.ascontiguousarray(np.repeat(crop, 2, axis=0))
    larger.flags.writeable = False
    transform = build_transforms(FACE_CONFIG, train=False)
    given, pipeline = [], transform.pipeline
    transform.pipeline = lambda image: (given.append(image.flags.writeable), pipeline(image=image))[1]
    transform(larger)
    assert given == [False], "other sizes are resampled into new memory: no copy"
