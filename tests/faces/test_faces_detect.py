"""Tests of retrieval.faces.detect: the settings, choosing a face, and MTCNN on real photos.

Real data: att_faces/test/s31 (tight greyscale crops), att_faces_scenes/single and pairs (faces
pasted into 480 × 360 grocery photos; pairs.csv says where), a grocery photo (no face). Each test
that needs them is skipped, with the path, when ../shared/datasets is not beside the checkout.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from faces_helpers import ATT_CROPS, DATASETS, SCENES, centre, dataset, inside, pairs_rows, rectangle, shared_detector
from retrieval.errors import RetrievalError
from retrieval.faces import Detection, DetectorSettings, by_confidence, most_confident


# -- settings --------------------------------------------------------------------------------

def test_settings_round_trip_through_plain_json_and_keep_their_key():
    settings = DetectorSettings(min_face_size=24, thresholds=(0.5, 0.6, 0.9), scale_factor=0.8)
    text = json.dumps(settings.to_json())
    again = DetectorSettings.from_json(json.loads(text))
    assert again == settings and again.key() == settings.key()
    assert DetectorSettings.from_json({}) == DetectorSettings()  # missing keys: the defaults


def test_settings_key_changes_with_every_setting():
    keys = {DetectorSettings().key(), DetectorSettings(min_face_size=41).key(),
            DetectorSettings(thresholds=(0.6, 0.6, 0.96)).key(), DetectorSettings(scale_factor=0.8).key()}
    assert len(keys) == 4 and all(len(k) == 16 for k in keys)


@pytest.mark.parametrize("value", [
    {"min_face_size": 5}, {"min_face_size": 40.5}, {"min_face_size": True},
    {"thresholds": [0.6, 0.7]}, {"thresholds": [0.6, 0.7, 1.0]}, {"thresholds": "0.6"},
    {"thresholds": [0.6, None, 0.7]}, {"scale_factor": 1.0}, {"scale_factor": float("nan")},
    {"device": "cuda"}, ["min_face_size", 20],
])
def test_bad_settings_are_a_one_line_retrieval_error(value):
    with pytest.raises(RetrievalError) as error:
        DetectorSettings.from_json(value)
    assert "\n" not in str(error.value) and str(error.value).startswith("faces:")


# -- choosing a face -------------------------------------------------------------------------

def face(score: float, side: float) -> Detection:
    return Detection((0.0, 0.0, side, side), score, np.zeros((5, 2)))


def test_most_confident_takes_the_highest_score_and_on_a_tie_the_larger_box():
    small_sure, large_sure, large_unsure = face(0.99, 40), face(0.99, 80), face(0.9, 200)
    assert most_confident([small_sure, large_unsure, large_sure]) is large_sure
    assert by_confidence([small_sure, large_unsure, large_sure]) == [large_sure, small_sure, large_unsure]
    assert most_confident([]) is None


def test_detection_json_round_trip_and_shape_check():
    detection = Detection((1.0, 2.0, 30.0, 40.0), 0.98, np.arange(10.0).reshape(5, 2))
    again = Detection.from_json(json.loads(json.dumps(detection.to_json())))
    assert again.box == detection.box and again.score == detection.score
    np.testing.assert_array_equal(again.landmarks, detection.landmarks)
    with pytest.raises(ValueError):
        Detection.from_json({"box": [1, 2, 3], "score": 1.0, "landmarks": [[0, 0]] * 5})


# -- MTCNN on real images --------------------------------------------------------------------

def check_face(found: Detection, size: tuple[int, int]) -> None:
    x0, y0, x1, y1 = found.box
    assert 0 <= x0 < x1 <= size[0] and 0 <= y0 < y1 <= size[1]
    assert found.landmarks.shape == (5, 2) and 0.0 < found.score <= 1.0
    (lx, ly), (rx, ry), (nx, ny) = found.landmarks[:3]
    assert lx < nx < rx and max(ly, ry) < ny  # eyes left and right of the nose, above it


def test_every_tight_greyscale_crop_of_att_faces_has_exactly_one_face():
    paths = sorted(dataset(ATT_CROPS).glob("*.png"))
    assert len(paths) == 10
    images = [Image.open(p) for p in paths]
    assert {im.mode for im in images} == {"L"} and {im.size for im in images} == {(92, 112)}
    for image, faces in zip(images, shared_detector().detect_many([im.convert("RGB") for im in images])):
        assert len(faces) == 1
        check_face(faces[0], image.size)


@pytest.mark.parametrize("name", ["s31/1.jpg", "s35/6.jpg", "s38/3.jpg", "s40/9.jpg"])
def test_a_face_pasted_into_a_photo_is_found_inside_the_photo(name):
    image = Image.open(dataset(SCENES / "single" / name)).convert("RGB")
    assert image.size == (480, 360)
    faces = shared_detector().detect(image)
    assert len(faces) == 1
    check_face(faces[0], image.size)


@pytest.mark.parametrize("row", [0, 1, 2, 3, 4])
def test_both_people_of_a_pairs_photo_are_found_in_their_place_and_nothing_else(row):
    record = pairs_rows()[row]
    image = Image.open(dataset(SCENES / record["file"])).convert("RGB")
    faces = shared_detector().detect(image)
    rects = [rectangle(record["left_box"]), rectangle(record["right_box"])]
    assert len(faces) == 2
    for rect in rects:  # each pasted person holds exactly one found face's centre
        assert sum(inside(centre(f.box), rect) for f in faces) == 1
    for found in faces:
        check_face(found, image.size)


def test_photos_without_a_face_give_an_empty_list():
    grocery = sorted(dataset(DATASETS / "grocery" / "test").glob("*/*.jpg"))[:3]
    flat = Image.new("RGB", (480, 360), (180, 120, 60))
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8))
    images = [flat, noise] + [Image.open(p).convert("RGB") for p in grocery]
    assert shared_detector().detect_many(images) == [[]] * len(images)


def test_an_image_smaller_than_the_smallest_face_gives_an_empty_list():
    assert shared_detector().detect(Image.new("RGB", (30, 200), (90, 90, 90))) == []


def test_a_batch_finds_what_single_images_find():
    paths = [SCENES / "single" / "s31" / "1.jpg", SCENES / "pairs" / "000.jpg", ATT_CROPS / "1.png",
             SCENES / "pairs" / "001.jpg"]
    images = [Image.open(dataset(p)).convert("RGB") for p in paths]  # two sizes: two batches
    detector = shared_detector()
    for batch, single in zip(detector.detect_many(images), [detector.detect(im) for im in images]):
        assert len(batch) == len(single)
        for a, b in zip(batch, single):
            np.testing.assert_allclose(a.box, b.box, atol=1e-3)
            np.testing.assert_allclose(a.landmarks, b.landmarks, atol=1e-3)
