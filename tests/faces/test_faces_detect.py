"""Tests of retrieval.faces.detect: the settings, choosing a face, and MTCNN on real photos.

Real data: att_faces/test/s31 (tight greyscale crops), att_faces_scenes/single and pairs (faces
pasted into 480 × 360 grocery photos; pairs.csv says where), a grocery photo (no face). Each test
that needs them is skipped, with the path, when ../shared/datasets is not beside the checkout.
"""

from __future__ import annotations

import functools
import hashlib
import json

import numpy as np
import pytest
import torch
from PIL import Image

from faces_helpers import ATT_CROPS, DATASETS, SCENES, centre, dataset, inside, pairs_rows, rectangle, shared_detector
from retrieval.errors import RetrievalError
from retrieval.faces import Detection, DetectorSettings, by_confidence, most_confident
from retrieval.faces.cascade import refine_landmarks
from retrieval.faces.detect import MTCNNDetector, detector_version


# -- settings --------------------------------------------------------------------------------

def test_settings_round_trip_through_plain_json_and_keep_their_key():
    settings = DetectorSettings(min_face_size=24, thresholds=(0.5, 0.6, 0.9), scale_factor=0.8)
    text = json.dumps(settings.to_json())
    again = DetectorSettings.from_json(json.loads(text))
    assert again == settings and again.key() == settings.key()
    # missing keys: the defaults, but landmark_passes, max_side and recheck_threshold 0 (settings written before they existed)
    assert DetectorSettings.from_json({}) == DetectorSettings(landmark_passes=0, max_side=0, recheck_threshold=0)


def test_settings_key_changes_with_every_setting():
    keys = {DetectorSettings().key(), DetectorSettings(min_face_size=41).key(),
            DetectorSettings(thresholds=(0.6, 0.6, 0.96)).key(), DetectorSettings(scale_factor=0.8).key(),
            DetectorSettings(landmark_passes=1).key(), DetectorSettings(landmark_passes=0).key(),
            DetectorSettings(max_side=1200).key(), DetectorSettings(max_side=0).key(),
            DetectorSettings(recheck_threshold=0.5).key(), DetectorSettings(recheck_threshold=0).key()}
    assert len(keys) == 10 and all(len(k) == 16 for k in keys)


def test_settings_saved_before_landmark_refinement_read_back_without_it_and_keep_their_json_and_key():
    """A run's config.json from before ``landmark_passes`` existed has no such key: it detected
    without refinement, so it reads back as 0, writes the same JSON, and names the same cache."""
    old_json = {"min_face_size": 40, "thresholds": [0.6, 0.6, 0.97], "scale_factor": 0.85}
    old = DetectorSettings.from_json(old_json)
    assert old.landmark_passes == 0 and old.max_side == 0 and old.recheck_threshold == 0 and old.to_json() == old_json
    text = json.dumps({"detector": "mtcnn", "version": detector_version(), **old_json}, sort_keys=True)
    assert old.key() == hashlib.sha256(text.encode()).hexdigest()[:16]  # the key those runs' caches carry
    new = DetectorSettings()
    assert new.landmark_passes == 2 and new.to_json()["landmark_passes"] == 2
    assert new.max_side == 1600 and new.to_json()["max_side"] == 1600
    assert new.recheck_threshold == 0.9 and new.to_json()["recheck_threshold"] == 0.9
    assert DetectorSettings.from_json(new.to_json()) == new


def test_settings_saved_with_refinement_but_before_max_side_read_back_searching_photos_whole():
    saved = {"min_face_size": 40, "thresholds": [0.6, 0.6, 0.97], "scale_factor": 0.85, "landmark_passes": 2}
    settings = DetectorSettings.from_json(saved)
    assert settings.max_side == 0 and settings.landmark_passes == 2 and settings.to_json() == saved


def test_settings_saved_before_the_recheck_read_back_keeping_every_face_and_their_key():
    """A run saved with refinement and max_side but before ``recheck_threshold`` kept every face
    O-Net passed: it reads back as 0, writes the same JSON and names the same cache."""
    saved = {"min_face_size": 40, "thresholds": [0.6, 0.6, 0.97], "scale_factor": 0.85, "landmark_passes": 2, "max_side": 1600}
    settings = DetectorSettings.from_json(saved)
    assert settings.recheck_threshold == 0 and settings.to_json() == saved
    text = json.dumps({"detector": "mtcnn", "version": detector_version(), **saved}, sort_keys=True)
    assert settings.key() == hashlib.sha256(text.encode()).hexdigest()[:16]


def test_the_smallest_face_looked_for_grows_with_a_photo_searched_as_a_shrunk_copy():
    settings = DetectorSettings(min_face_size=40, max_side=1600)
    assert settings.smallest_face((1600, 1200)) == 40 and settings.smallest_face((480, 360)) == 40
    assert settings.smallest_face((4000, 3000)) == 100 and settings.smallest_face((3000, 4000)) == 100
    assert settings.smallest_face((1601, 100)) == 41  # 40.025, rounded up
    assert DetectorSettings(min_face_size=20, max_side=0).smallest_face((4000, 3000)) == 20
    assert settings.reach() == "faces from 40 px, photos over 1600 px searched at 1600, rechecked at 0.9"
    assert DetectorSettings(min_face_size=20, max_side=0).reach() == "faces from 20 px, rechecked at 0.9"
    assert DetectorSettings(min_face_size=20, max_side=0, recheck_threshold=0).reach() == "faces from 20 px"
    recheck = ", and a face that O-Net doubts once framed by its own landmarks is dropped (--face-recheck 0.9)"
    assert settings.no_face_hint((480, 360)) == "faces under about 40 px are not looked for in it (the run's --face-min-size)" + recheck
    assert settings.no_face_hint((4000, 3000)) == \
        "faces under about 100 px are not looked for in it (the run's --face-min-size and --face-max-side)" + recheck
    assert DetectorSettings(recheck_threshold=0).no_face_hint((480, 360)) == \
        "faces under about 40 px are not looked for in it (the run's --face-min-size)"


@pytest.mark.parametrize("value", [
    {"min_face_size": 5}, {"min_face_size": 40.5}, {"min_face_size": True},
    {"thresholds": [0.6, 0.7]}, {"thresholds": [0.6, 0.7, 1.0]}, {"thresholds": "0.6"},
    {"thresholds": [0.6, None, 0.7]}, {"scale_factor": 1.0}, {"scale_factor": float("nan")},
    {"device": "cuda"}, ["min_face_size", 20],
    {"landmark_passes": -1}, {"landmark_passes": 5}, {"landmark_passes": 1.5}, {"landmark_passes": True},
    {"max_side": -1}, {"max_side": 39}, {"max_side": 1600.0}, {"max_side": True}, {"max_side": 100_001},
    {"min_face_size": 60, "max_side": 50},
    {"recheck_threshold": 1.0}, {"recheck_threshold": -0.1}, {"recheck_threshold": "0.8"}, {"recheck_threshold": True},
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


def test_the_recheck_drops_a_face_that_o_net_passes_in_a_photo_of_pears():
    """The top 160 × 120 of a grocery photo of pears, upscaled to 480 × 360: O-Net passes
    a "face" in it at 0.99, and framed by its own landmarks O-Net scores it near 0, so the default
    detector (recheck 0.9) finds nothing there; without the recheck it is found. Real faces stay:
    the tests above (crops, pasted faces, both people of every pairs photo) run the default too."""
    photo = Image.open(dataset(DATASETS / "grocery" / "train" / "Anjou" / "test_Anjou_029.jpg")).convert("RGB")
    photo = photo.crop((0, 0, 160, 120)).resize((480, 360), Image.Resampling.BICUBIC)
    assert shared_detector().settings.recheck_threshold == 0.9 and shared_detector().detect(photo) == []
    (unchecked,) = MTCNNDetector(DetectorSettings(recheck_threshold=0)).detect(photo)
    assert unchecked.score > 0.97


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


# -- large photos: searched as a copy no longer than max_side ---------------------------------

@functools.lru_cache(maxsize=1)
def whole_photo_detector() -> MTCNNDetector:
    return MTCNNDetector(DetectorSettings(max_side=0))


def test_a_photo_within_max_side_is_searched_as_it_is():
    image = Image.open(dataset(SCENES / "pairs" / "001.jpg")).convert("RGB")
    assert max(image.size) <= DetectorSettings().max_side
    capped, whole = shared_detector().detect(image), whole_photo_detector().detect(image)
    assert [f.to_json() for f in capped] == [f.to_json() for f in whole]


def test_a_large_photo_is_searched_as_a_smaller_copy_and_its_faces_given_in_its_own_pixels():
    """A two-person photo upscaled to 4000 × 3000: both people found in their (scaled) places,
    and exactly the faces of the 1600 × 1200 copy, times 2.5 across and down."""
    record = pairs_rows()[1]
    photo = Image.open(dataset(SCENES / record["file"])).convert("RGB")
    big = photo.resize((4000, 3000), Image.Resampling.BICUBIC)
    faces = shared_detector().detect(big)
    assert len(faces) == 2
    factor = 4000 / photo.width
    for rect in (rectangle(record["left_box"]), rectangle(record["right_box"])):
        scaled = tuple(v * factor for v in rect)
        assert sum(inside(centre(f.box), scaled) for f in faces) == 1
    for found in faces:
        check_face(found, big.size)
    copy = big.resize((1600, 1200), Image.Resampling.BOX)
    in_copy = whole_photo_detector().detect(copy)
    assert len(in_copy) == 2
    for a, b in zip(faces, in_copy):
        np.testing.assert_allclose(a.box, np.asarray(b.box) * 2.5, rtol=1e-6)
        np.testing.assert_allclose(a.landmarks, b.landmarks * 2.5, rtol=1e-6)
        assert a.score == b.score


def test_a_tall_large_photo_maps_across_and_down_by_their_own_ratios():
    """2000 × 3001 to a copy of 1066 × 1600: the two ratios differ (1.8762 and 1.8756),
    and each coordinate takes its own."""
    face = Image.open(dataset(ATT_CROPS / "1.png")).convert("RGB")
    photo = Image.new("RGB", (2000, 3001), (120, 120, 120))
    photo.paste(face.resize((460, 560), Image.Resampling.BICUBIC), (700, 1200))
    faces = shared_detector().detect(photo)
    assert len(faces) == 1
    copy = photo.resize((1066, 1600), Image.Resampling.BOX)
    (b,) = whole_photo_detector().detect(copy)
    sx, sy = 2000 / 1066, 3001 / 1600
    np.testing.assert_allclose(faces[0].box, [b.box[0] * sx, b.box[1] * sy, b.box[2] * sx, b.box[3] * sy], rtol=1e-6)
    np.testing.assert_allclose(faces[0].landmarks, b.landmarks * [sx, sy], rtol=1e-6)
    assert inside(centre(faces[0].box), (700, 1200, 1160, 1760))


def test_a_batch_with_a_large_photo_finds_what_single_images_find():
    small = Image.open(dataset(SCENES / "single" / "s31" / "1.jpg")).convert("RGB")
    big = small.resize((3200, 2400), Image.Resampling.BICUBIC)
    batch = shared_detector().detect_many([small, big, small])
    assert [len(faces) for faces in batch] == [1, 1, 1]
    for found, alone in zip(batch, [shared_detector().detect(im) for im in (small, big, small)]):
        np.testing.assert_allclose(found[0].box, alone[0].box, atol=1e-3)  # a batch of two rounds differently from one
        np.testing.assert_allclose(found[0].landmarks, alone[0].landmarks, atol=1e-3)
    assert max(batch[1][0].box) > 1000  # the large photo's face in the large photo's pixels


# -- the cascade against facenet-pytorch's own -----------------------------------------------

def _facenet_reference(detector, image):
    """facenet-pytorch's MTCNN.detect with the same networks and settings: (boxes, scores, landmarks)."""
    boxes, scores, points = detector._load().detect(image, landmarks=True)
    if boxes is None:
        return np.zeros((0, 4)), np.zeros(0), np.zeros((0, 5, 2))
    return np.asarray(boxes, dtype=float), np.asarray(scores, dtype=float), np.asarray(points, dtype=float)


@pytest.mark.parametrize("path, size", [
    (SCENES / "single" / "s31" / "1.jpg", None), (SCENES / "pairs" / "000.jpg", None), (ATT_CROPS / "1.png", None),
    (SCENES / "single" / "s34" / "2.jpg", (1155, 866)),  # a 1-megapixel photo: 19 pyramid levels
    (DATASETS / "grocery" / "test" / "Alpro-Fresh-Soy-Milk" / "test_Alpro-Fresh-Soy-Milk_001.jpg", None),
])
def test_cascade_finds_the_faces_facenet_pytorch_finds(path, size):
    """Same faces, same place: our pyramid (levels resampled from level 0) against facenet-pytorch's
    (every level from the full image). Boxes and landmarks within 3 px, scores within 0.02; the
    landmarks as O-Net first gives them (no refinement pass: facenet-pytorch has none), and the
    refinement moves no box and no score."""
    image = Image.open(dataset(path)).convert("RGB")
    if size is not None:
        image = image.resize(size, Image.Resampling.BICUBIC)
    detector = _unrefined_detector()
    ours = detector.detect(image)
    refined = shared_detector().detect(image)
    assert [f.box for f in refined] == [f.box for f in ours] and [f.score for f in refined] == [f.score for f in ours]
    boxes, scores, points = _facenet_reference(detector, image)
    keep = scores > detector.settings.thresholds[2]  # facenet-pytorch keeps what passes, as ours
    assert len(ours) == int(keep.sum())
    for face in ours:  # each of ours is one of theirs, nearest by box centre
        nearest = int(np.argmin([np.hypot(*np.subtract(centre(face.box), centre(box))) for box in boxes]))
        np.testing.assert_allclose(face.box, boxes[nearest], atol=3.0)
        np.testing.assert_allclose(face.landmarks, points[nearest], atol=3.0)
        assert abs(face.score - scores[nearest]) < 0.02


@functools.lru_cache(maxsize=1)
def _unrefined_detector() -> MTCNNDetector:
    """MTCNN with the default settings but O-Net's first landmarks (``landmark_passes`` 0)."""
    return MTCNNDetector(DetectorSettings(landmark_passes=0))


# -- landmark refinement ---------------------------------------------------------------------

def _as_batch(image: Image.Image) -> torch.Tensor:
    return torch.as_tensor(np.asarray(image, dtype=np.float32)).permute(2, 0, 1)[None]


def test_a_refinement_pass_follows_a_shift_of_the_photo_exactly():
    """The box of a pass is made from the landmarks, so the same photo moved by (dx, dy) whole
    pixels (on a larger black canvas) gives the same landmarks moved by (dx, dy)."""
    photo = Image.open(dataset(SCENES / "single" / "s31" / "1.jpg")).convert("RGB")
    (found,) = _unrefined_detector().detect(photo)
    points = torch.as_tensor(found.landmarks, dtype=torch.float32)[None]
    canvas = Image.new("RGB", (photo.width + 60, photo.height + 50))
    canvas.paste(photo, (37, 21))
    onet = shared_detector()._load().onet
    inds = torch.zeros(1, dtype=torch.long)
    here, here_score = refine_landmarks(_as_batch(photo), inds, points, onet)
    moved, moved_score = refine_landmarks(_as_batch(canvas), inds, points + torch.tensor([37.0, 21.0]), onet)
    np.testing.assert_allclose(moved.numpy(), here.numpy() + [37.0, 21.0], atol=1e-3)
    np.testing.assert_allclose(moved_score.numpy(), here_score.numpy(), atol=1e-5)
    assert 0.8 < float(here_score[0]) <= 1.0  # a real face, framed by its own landmarks, is still a face to O-Net
    assert float((here - points).abs().max()) > 0.1  # the pass did move them: the test compares something


def test_a_face_whose_landmarks_coincide_keeps_them_and_the_others_are_refined():
    photo = Image.open(dataset(SCENES / "single" / "s31" / "1.jpg")).convert("RGB")
    (found,) = _unrefined_detector().detect(photo)
    good = torch.as_tensor(found.landmarks, dtype=torch.float32)
    degenerate = torch.full((5, 2), 100.0)
    onet = shared_detector()._load().onet
    both, both_scores = refine_landmarks(_as_batch(photo), torch.zeros(2, dtype=torch.long), torch.stack([degenerate, good]), onet)
    alone, alone_scores = refine_landmarks(_as_batch(photo), torch.zeros(1, dtype=torch.long), good[None], onet)
    assert torch.equal(both[0], degenerate) and float(both_scores[0]) == 1.0  # not rechecked
    np.testing.assert_allclose(both[1].numpy(), alone[0].numpy(), atol=1e-4)
    np.testing.assert_allclose(both_scores[1].numpy(), alone_scores[0].numpy(), atol=1e-5)


def _pasted(crop: Image.Image, background: Image.Image, scale: float, at: tuple[int, int]) -> Image.Image:
    photo = background.resize((480, 360), Image.Resampling.BICUBIC)
    photo.paste(crop.resize((round(crop.width * scale), round(crop.height * scale)), Image.Resampling.BICUBIC), at)
    return photo


def test_refined_landmarks_agree_between_a_crop_and_the_same_face_pasted_larger_into_a_photo():
    """The reason for the passes: the same face, as a tight crop and pasted 1.6 times larger into a
    grocery photo, gets landmarks much closer together (mapped back into the crop, in eye distances)
    with two passes than with O-Net's first answer, and within 0.05 of the eye distance (RMS)."""
    background = Image.open(dataset(DATASETS / "grocery" / "test" / "Alpro-Fresh-Soy-Milk" /
                                    "test_Alpro-Fresh-Soy-Milk_001.jpg")).convert("RGB")
    crops = [Image.open(path).convert("RGB") for path in sorted(dataset(ATT_CROPS).glob("*.png"))]
    scale, at = 1.6, (150, 90)
    photos = [_pasted(crop, background, scale, at) for crop in crops]
    rms = {}
    for passes, detector in ((0, _unrefined_detector()), (2, shared_detector())):
        errors = []
        for crop_faces, photo_faces in zip(detector.detect_many(crops), detector.detect_many(photos)):
            a, b = most_confident(crop_faces), most_confident(photo_faces)
            back = (b.landmarks - at + 0.5) / scale - 0.5  # photo pixels -> crop pixels
            errors.append((back - a.landmarks) / np.hypot(*(a.landmarks[1] - a.landmarks[0])))
        rms[passes] = float(np.sqrt((np.square(errors).sum(axis=2)).mean()))
    assert rms[2] < 0.05 and rms[2] < 0.7 * rms[0], rms


def test_pyramid_scales_follow_facenet_pytorchs_rule():
    from retrieval.faces.cascade import pyramid_scales

    scales = pyramid_scales(866, 1155, 40, 0.85)
    assert len(scales) == 19 and scales[0] == pytest.approx(0.3)
    assert all(b == pytest.approx(a * 0.85) for a, b in zip(scales, scales[1:]))
    assert 866 * scales[-1] >= 12 > 866 * scales[-1] * 0.85
    assert pyramid_scales(30, 200, 40, 0.85) == []  # no face of 40 px fits


def test_pyramid_levels_have_facenet_pytorchs_sizes_and_stay_close_to_full_image_area_resampling():
    import torch
    from torch.nn.functional import interpolate

    from retrieval.faces.cascade import SOURCE_RATIO, pyramid_levels, pyramid_scales

    photo = Image.open(dataset(SCENES / "single" / "s31" / "1.jpg")).convert("RGB").resize((1155, 866))
    images = torch.as_tensor(np.asarray(photo).copy()).permute(2, 0, 1)[None].float()
    scales = pyramid_scales(866, 1155, 40, 0.85)
    levels = list(pyramid_levels(images, scales))
    assert len(levels) == len(scales)
    for scale, level in zip(scales, levels):
        size = (int(866 * scale + 1), int(1155 * scale + 1))
        reference = interpolate(images, size=size, mode="area")  # facenet-pytorch's level
        assert level.shape == reference.shape
        difference = (level - reference).abs()
        if 866 < 2 * SOURCE_RATIO * size[0]:  # the top of the pyramid: from the full image, exactly
            assert difference.max() < 1e-3
        else:  # from an octave: resampling noise only
            assert difference.mean() < 5.0 and difference.max() < 60  # measured: 0.9-4.2, 15-34
    assert any(866 >= 2 * SOURCE_RATIO * int(866 * s + 1) for s in scales)  # octaves were used


# -- max pooling from strided views ------------------------------------------------------------

@pytest.mark.parametrize("kernel, stride", [(2, 2), (3, 2), (3, 3), (3, 1), (1, 1)])
@pytest.mark.parametrize("height, width", [(12, 12), (13, 12), (22, 23), (9, 10), (3, 4)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_strided_max_pool_gives_torchs_numbers_and_layout(kernel, stride, height, width, channels_last):
    from retrieval.faces.cascade import StridedMaxPool

    x = torch.randn(3, 5, height, width, generator=torch.Generator().manual_seed(height * 31 + width))
    x[0, 0, 0, 0] = x[1, 2, -1, -1] = 50.0  # a maximum in the short last window and in the first
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    reference = torch.nn.MaxPool2d(kernel, stride, ceil_mode=True)(x)
    pooled = StridedMaxPool(kernel, stride)(x)
    assert pooled.shape == reference.shape and torch.equal(pooled, reference)
    assert pooled.stride() == reference.stride()  # the same memory format: the next layer rounds alike


def test_strided_max_pool_refuses_what_it_does_not_compute():
    from retrieval.faces.cascade import StridedMaxPool

    with pytest.raises(ValueError, match="stride"):
        StridedMaxPool(2, 3)
    with pytest.raises(ValueError, match="smaller than the kernel"):
        StridedMaxPool(3, 2)(torch.zeros(1, 1, 2, 5))


def test_the_cascade_with_strided_max_pools_finds_exactly_what_it_finds_with_torchs():
    """All six pooling layers are swapped, and the boxes, scores and landmarks of a 1-megapixel
    photo (19 pyramid levels, a few hundred candidates) and of a two-face scene are the same numbers."""
    from facenet_pytorch import MTCNN

    from retrieval.faces.cascade import StridedMaxPool, detect_faces

    s = DetectorSettings()
    swapped = shared_detector()._load()
    plain = MTCNN(min_face_size=s.min_face_size, thresholds=list(s.thresholds), factor=s.scale_factor,
                  select_largest=False, keep_all=True).eval()
    assert sum(isinstance(m, StridedMaxPool) for net in (swapped.pnet, swapped.rnet, swapped.onet) for m in net.modules()) == 6
    assert not any(isinstance(m, torch.nn.MaxPool2d) for net in (swapped.pnet, swapped.rnet, swapped.onet) for m in net.modules())
    one_mp = Image.open(dataset(SCENES / "single" / "s31" / "1.jpg")).convert("RGB").resize((1155, 866), Image.Resampling.BICUBIC)
    pair = Image.open(dataset(SCENES / "pairs" / "000.jpg")).convert("RGB")
    for photo, faces in ((one_mp, 1), (pair, 2)):
        image = np.array(photo)[None]
        ours = detect_faces(image, swapped, s.min_face_size, s.thresholds, s.scale_factor, s.landmark_passes, s.recheck_threshold)
        theirs = detect_faces(image, plain, s.min_face_size, s.thresholds, s.scale_factor, s.landmark_passes, s.recheck_threshold)
        assert len(ours[0][0]) == faces
        assert np.array_equal(ours[0][0], theirs[0][0]) and np.array_equal(ours[1][0], theirs[1][0])


def test_a_photo_is_searched_shrunk_only_when_its_longest_side_exceeds_max_side():
    settings = DetectorSettings(max_side=1600)
    assert not settings.shrinks((1600, 1200)) and not settings.shrinks((1200, 1600))
    assert settings.shrinks((1601, 10)) and settings.shrinks((10, 1601))
    assert not DetectorSettings(max_side=0).shrinks((100_000, 100_000))
