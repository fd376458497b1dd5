"""``retrieval train --faces``: training on each image's aligned face, recorded in config.json, cached in RUN_DIR/faces."""

from __future__ import annotations

import json
import logging

import pytest
from PIL import Image

from conftest import TINY
from faces_helpers import CountingDetector, make_face_folder
from retrieval import data
from retrieval.data.transforms import FACE_JITTER
from retrieval.errors import RetrievalError
from retrieval.faces import DetectorSettings, FacePipeline
from retrieval.faces.run_faces import face_folder, run_pipeline
from retrieval.run import load_model, read_config
from retrieval.run.files import faces_dir
from retrieval.training import TrainConfig, train

FACE_TINY = {**TINY, "classes_per_batch": 2, "images_per_class": 2, "val_fraction": 0.25}


def test_face_folder_replaces_images_by_crops_skips_the_faceless_with_one_warning_and_detects_once(tmp_path, caplog):
    folder = data.scan_folder(make_face_folder(tmp_path / "data", n_classes=2, per_class=2, no_face=2), labelled=True)
    counting = CountingDetector()
    pipeline = FacePipeline(output_size=40, cache_dir=tmp_path / "faces", detector=counting)
    with caplog.at_level(logging.WARNING, logger="retrieval"):
        crops, missing = face_folder(folder, pipeline)
    assert counting.images == 6
    assert sorted(p.name for p in missing) == ["blank0.png", "blank1.png"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "2 of 6" in warnings[0] and "blank0.png" in warnings[0]
    assert len(crops.paths) == 4 and crops.class_names == folder.class_names
    assert all(p.is_file() and p.parent.parent == tmp_path / "faces" for p in crops.paths)
    assert all(Image.open(p).size == (40, 40) for p in crops.paths)
    again, _ = face_folder(folder, FacePipeline(output_size=40, cache_dir=tmp_path / "faces", detector=counting))
    assert counting.images == 6, "a second pass read the cache instead of detecting again"
    assert again.paths == crops.paths and again.labels == crops.labels


def test_train_with_faces_records_the_pipeline_and_trains_on_cached_crops(tmp_path, caplog):
    root = make_face_folder(tmp_path / "data", n_classes=4, per_class=3, no_face=1)
    out = tmp_path / "run"
    with caplog.at_level(logging.WARNING, logger="retrieval"):
        train(TrainConfig(data_dir=root, out=out, epochs=1, faces=True, **FACE_TINY), progress=False)
    assert any("no face found" in r.getMessage() and "blank0.png" in r.getMessage() for r in caplog.records)
    config = read_config(out)
    assert config.faces is not None and config.faces["output_size"] == FACE_TINY["image_size"]
    assert sum(config["class_counts"].values()) == 12, "the faceless image is not counted"
    assert config["train_settings"]["faces"] is True
    # the aligned crop is the framing: evaluation takes it whole (no centre crop), training flips and slightly jitters it
    assert config.data_config["crop_pct"] == 1.0 and config["transforms"]["train"]["recipe"] == "aligned faces"
    assert config["train_settings"]["face_jitter"] == config["transforms"]["train"]["face_jitter"] == FACE_JITTER > 0
    # validation, index, search and the app embed a face with its mirror image (flip averaging)
    assert config.flip_average and config["train_settings"]["flip_average"] is True and load_model(out)[0].flip_average
    assert "greyscale" not in config.data_config  # blank0.png is stored in colour
    pipeline = run_pipeline(out, config)
    assert pipeline is not None and pipeline.output_size == FACE_TINY["image_size"]
    assert pipeline.cache.folder == faces_dir(out) and any(faces_dir(out).rglob("*.png"))


def test_a_run_without_faces_records_null_and_writes_no_face_cache(tmp_path):
    root = make_face_folder(tmp_path / "data", n_classes=4, per_class=3, no_face=0)
    out = tmp_path / "run"
    train(TrainConfig(data_dir=root, out=out, epochs=0, **FACE_TINY), progress=False)
    config = read_config(out)
    assert config.faces is None and run_pipeline(out, config) is None
    assert not faces_dir(out).exists()
    assert config.data_config["crop_pct"] != 1.0 and config["transforms"]["train"]["recipe"] == "images"
    assert not config.flip_average and not load_model(out)[0].flip_average
    assert config.data_config["greyscale"] is True  # att_faces crops are stored grey


def test_a_face_run_on_grey_photos_records_greyscale_though_its_crops_are_stored_in_colour(tmp_path):
    root = make_face_folder(tmp_path / "data", n_classes=4, per_class=3, no_face=0)
    train(TrainConfig(data_dir=root, out=tmp_path / "run", epochs=0, faces=True, **FACE_TINY), progress=False)
    assert read_config(tmp_path / "run").data_config["greyscale"] is True
    assert all(Image.open(p).mode == "RGB" for p in faces_dir(tmp_path / "run").rglob("*.png"))


def test_resuming_a_face_run_keeps_the_pipeline_it_recorded(tmp_path):
    """A face run saved before landmark refinement (its detector settings have no landmark_passes)
    resumes on the crops it started with: the recorded pipeline, not this version's default."""
    root = make_face_folder(tmp_path / "data", n_classes=4, per_class=3, no_face=0)
    out = tmp_path / "run"
    train(TrainConfig(data_dir=root, out=out, epochs=1, faces=True, **FACE_TINY), progress=False)
    config_path = out / "config.json"
    stored = json.loads(config_path.read_text())
    del stored["faces"]["detector_settings"]["landmark_passes"]  # as a run from before refinement recorded it
    config_path.write_text(json.dumps(stored))
    old = DetectorSettings.from_json(stored["faces"]["detector_settings"])
    assert old.landmark_passes == 0 and old.key() != DetectorSettings().key()
    train(TrainConfig(data_dir=root, out=out, epochs=2, resume=True), progress=False)
    resumed = read_config(out)
    assert resumed.faces["detector_settings"] == stored["faces"]["detector_settings"]
    assert (faces_dir(out) / old.key()).is_dir()  # its crops were detected without refinement
    assert run_pipeline(out, resumed).settings == old


@pytest.mark.parametrize("mode", [{"unlabelled": True}, {"pairs": "pairs.csv"}])
def test_faces_with_unlabelled_or_pairs_training_is_a_one_line_error(tmp_path, mode):
    config = TrainConfig(data_dir=tmp_path, out=tmp_path / "run", faces=True, **mode).resolve()
    with pytest.raises(RetrievalError, match="--faces trains on labelled folders only"):
        config.validate()


def test_the_labelled_source_jitters_face_crops_by_its_face_jitter_only_in_face_runs():
    from retrieval.training.sources.labelled import LabelledSource

    def steps(face_jitter, faces):
        source = LabelledSource(None, None, None, None, None, None, 4, 2, 1.0, 0, faces=faces, face_jitter=face_jitter)
        transform = source.make_train_transform({"input_size": (3, 32, 32), "mean": [0.5] * 3, "std": [0.5] * 3, "crop_pct": 1.0})
        return [type(step).__name__ for step in transform.pipeline.transforms]

    assert "Affine" in steps(0.25, {"detector": "mtcnn"}) and "RandomResizedCrop" not in steps(0.25, {"detector": "mtcnn"})
    assert "Affine" not in steps(0.0, {"detector": "mtcnn"}) and "HorizontalFlip" in steps(0.0, {"detector": "mtcnn"})
    assert "Affine" not in steps(0.25, None) and "RandomResizedCrop" in steps(0.25, None)
