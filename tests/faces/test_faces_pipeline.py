"""Tests of retrieval.faces.pipeline: what config.json records, the inputs it takes, the faces it returns."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from faces_helpers import ATT_CROPS, SCENES, CountingDetector, dataset, shared_detector
from retrieval.errors import RetrievalError
from retrieval.faces import TEMPLATE, AlignedFace, DetectorSettings, FacePipeline


def test_settings_json_is_plain_json_and_rebuilds_the_same_pipeline(tmp_path):
    settings = DetectorSettings(min_face_size=32, thresholds=(0.6, 0.7, 0.95), scale_factor=0.8)
    recorded = json.loads(json.dumps(FacePipeline(settings, output_size=64).settings_json()))
    assert recorded["detector"] == "mtcnn" and recorded["output_size"] == 64
    assert recorded["detector_settings"] == {"min_face_size": 32, "thresholds": [0.6, 0.7, 0.95], "scale_factor": 0.8,
                                             "landmark_passes": 2, "max_side": 1600, "recheck_threshold": 0.9}
    assert recorded["alignment"]["template"] == "arcface-5pt-112" and recorded["alignment"]["template_size"] == 112
    np.testing.assert_array_equal(recorded["alignment"]["points"], TEMPLATE)
    assert recorded["detector_version"].startswith("facenet-pytorch 2.5.3")

    rebuilt = FacePipeline.from_settings_json(recorded, cache_dir=tmp_path)
    assert rebuilt.settings == settings and rebuilt.output_size == 64
    assert rebuilt.cache.entries_dir == tmp_path / settings.key()


def test_new_pipelines_mask_outside_the_face_and_runs_saved_before_the_mask_keep_the_whole_crop(tmp_path):
    from retrieval.faces.align import MASK_NAME, align_face, mask_outside_face

    path = dataset(SCENES / "single" / "s31" / "1.jpg")
    masked = FacePipeline(output_size=64, cache_dir=tmp_path / "a", detector=shared_detector())
    assert masked.settings_json()["mask"] == MASK_NAME
    recorded = masked.settings_json()
    del recorded["mask"]  # config.json of a run saved before the mask existed
    old = FacePipeline.from_settings_json(recorded, cache_dir=tmp_path / "a")
    old.detector = shared_detector()
    assert not old.mask and old.settings_json()["mask"] is None
    assert FacePipeline.from_settings_json(masked.settings_json()).mask
    assert masked.crop_key != old.crop_key, "masked and whole crops are cached apart"
    face, whole = masked.faces(path)[0], old.faces(path)[0]
    picture = Image.open(path).convert("RGB")
    expected_whole = align_face(picture, whole.landmarks, 64)
    np.testing.assert_array_equal(np.asarray(whole.crop), np.asarray(expected_whole))
    np.testing.assert_array_equal(np.asarray(face.crop), np.asarray(mask_outside_face(expected_whole)))
    # a second pipeline reads each kind back from the cache, unchanged
    again = FacePipeline(output_size=64, cache_dir=tmp_path / "a", detector=CountingDetector())
    np.testing.assert_array_equal(np.asarray(again.faces(path)[0].crop), np.asarray(face.crop))
    assert again.detector.images == 0, "read back from the cache, not detected again"


def test_the_cached_crop_file_name_is_one_the_app_serves(tmp_path):
    from retrieval.faces.run_faces import CROP_FILE  # what the app's logged_image and own_crop accept

    for mask in (True, False):
        pipeline = FacePipeline(output_size=64, cache_dir=tmp_path, mask=mask, detector=CountingDetector())
        assert CROP_FILE.match(pipeline.cache.crop_path("0" * 64, pipeline.crop_key, 0).name)


@pytest.mark.parametrize("change", [
    {"mask": "square"},
    {"detector": "retinaface"},
    {"alignment": {"template": "arcface-5pt-112", "points": [[0, 0]] * 5}},
    {"alignment": None},
    {"detector_settings": {"min_face_size": 3}},
    {"output_size": 0},
    {"output_size": "64"},
])
def test_a_recorded_pipeline_this_version_cannot_apply_is_a_one_line_error(change):
    recorded = {**FacePipeline().settings_json(), **change}
    with pytest.raises(RetrievalError) as error:
        FacePipeline.from_settings_json(recorded)
    assert "\n" not in str(error.value)


def test_paths_bytes_file_objects_and_greyscale_images_give_the_same_faces():
    path = dataset(ATT_CROPS / "3.png")
    run = FacePipeline(output_size=48, detector=shared_detector())
    grey = Image.open(path)
    assert grey.mode == "L"
    results = [run.faces(path), run.faces(str(path)), run.faces(path.read_bytes()),
               run.faces(io.BytesIO(path.read_bytes())), run.faces(grey)]
    for faces in results:
        assert len(faces) == 1 and isinstance(faces[0], AlignedFace)
        assert faces[0].box == results[0][0].box
        assert faces[0].crop.size == (48, 48) and faces[0].crop.mode == "RGB"


def test_faces_come_most_confident_first_and_best_face_is_the_first():
    path = dataset(SCENES / "pairs" / "002.jpg")
    run = FacePipeline(detector=shared_detector())
    faces = run.faces(path)
    assert len(faces) == 2 and faces[0].score >= faces[1].score
    best = run.best_face(path)
    assert best.box == faces[0].box and best.crop.size == (112, 112)
    assert best.detection().to_json() == faces[0].detection().to_json()


def test_a_photo_without_a_face_gives_no_faces_and_no_best_face():
    flat = Image.new("RGB", (480, 360), (40, 160, 90))
    run = FacePipeline(detector=CountingDetector())
    assert run.faces(flat) == [] and run.best_face(flat) is None


def test_a_missing_or_unreadable_file_is_a_one_line_error(tmp_path):
    run = FacePipeline(cache_dir=tmp_path / "faces", detector=CountingDetector())
    with pytest.raises(RetrievalError, match="not found"):
        run.faces(tmp_path / "missing.jpg")
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    with pytest.raises(RetrievalError, match="broken.jpg"):
        run.faces(broken)


@pytest.mark.parametrize("size", [0, 8, 4096, 64.0, True])
def test_a_bad_output_size_is_refused(size):
    with pytest.raises(RetrievalError, match="output size"):
        FacePipeline(output_size=size, detector=CountingDetector())
