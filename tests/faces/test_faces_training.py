"""``retrieval train --faces``: training on each image's aligned face, recorded in config.json, cached in RUN_DIR/faces."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from PIL import Image

from cli_runner import cli  # noqa: F401  (fixture)
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
    assert warnings[0].endswith("(the run looks for faces from 40 px, photos over 1600 px searched at 1600, rechecked at 0.9)")
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
    assert config.data_config["greyscale"] is True  # blank0.png is in colour, but it has no face: never trained on
    pipeline = run_pipeline(out, config)
    assert pipeline is not None and pipeline.output_size == FACE_TINY["image_size"]
    assert pipeline.cache.folder == faces_dir(out) and any(faces_dir(out).rglob("*.png"))


def test_the_mining_log_of_a_face_run_names_the_photos_its_crops_were_cut_from(tmp_path, cli):
    from retrieval.diagnostics import hardest_report, read_mining_logs
    from retrieval.faces.run_faces import TRAINING_PHOTOS, training_photo_names

    root = make_face_folder(tmp_path / "data", n_classes=4, per_class=3, no_face=1)
    out = tmp_path / "run"
    train(TrainConfig(data_dir=root, out=out, epochs=1, faces=True, **FACE_TINY), progress=False)
    names = training_photo_names(out)
    assert len(names) == 12 and "blank0.png" not in " ".join(names.values()), "every photo with a face, and only those"
    assert all((root / photo).is_file() and crop.endswith(".png") for crop, photo in names.items())
    rows = hardest_report(out, top=10)["triplets"]
    assert rows and all(Path(row[f"{role}_path"]).name in names for row in rows for role in ("anchor", "positive", "negative"))
    for row in rows:  # each logged crop is named by its photo, which lies in the folder of the crop's class
        assert all(row[f"{role}_photo"].split("/")[0] == str(row[f"{role}_label"]) for role in ("anchor", "negative"))
        assert row["positive_photo"].split("/")[0] == str(row["anchor_label"])
    assert all("anchor_photo" in row for rows in read_mining_logs(out).values() for row in rows), "the app's reader too"
    shown = cli("mining", out, "--top", "3")
    assert shown.code == 0, shown.err
    first = rows[0]
    assert Path(first["anchor_photo"]).name in shown.out and Path(first["anchor_path"]).name[:12] not in shown.out
    (faces_dir(out) / TRAINING_PHOTOS).write_text('{"broken')
    damaged = cli("mining", out, "--top", "3", "--json")
    assert damaged.code == 0 and not any("anchor_photo" in row for row in json.loads(damaged.out)["triplets"])
    assert len(damaged.lines) == 1 and TRAINING_PHOTOS in damaged.lines[0] \
        and damaged.lines[0].endswith("; its crops are named by their cache files"), damaged.err
    (faces_dir(out) / TRAINING_PHOTOS).unlink()  # a face run trained before the file existed: the crops' own names, no warning
    before = cli("mining", out, "--top", "3", "--json")
    assert before.code == 0 and not before.lines and not any("anchor_photo" in row for row in json.loads(before.out)["triplets"])


def test_a_face_run_shows_a_progress_bar_while_it_finds_its_faces_and_a_run_on_whole_images_none(tmp_path, capsys, monkeypatch):
    root = make_face_folder(tmp_path / "data", n_classes=4, per_class=3, no_face=1)
    train(TrainConfig(data_dir=root, out=tmp_path / "logged", epochs=1, faces=True, **FACE_TINY), progress=True)
    logged = capsys.readouterr().out
    assert "finding faces" not in logged and "epoch 1/1" not in logged, "no bar into a log or a pipe"
    monkeypatch.setenv("TTY_COMPATIBLE", "1")  # rich: the console is a terminal
    train(TrainConfig(data_dir=root, out=tmp_path / "faces", epochs=1, faces=True, **FACE_TINY), progress=True)
    shown = capsys.readouterr().out
    assert "finding faces" in shown and "13/13" in shown and "epoch 1/1" in shown, shown  # 12 faces and the blank image
    train(TrainConfig(data_dir=root, out=tmp_path / "whole", epochs=1, **FACE_TINY), progress=True)
    assert "finding faces" not in capsys.readouterr().out


def test_under_torchrun_each_training_process_searches_its_share_before_the_barrier(tmp_path, monkeypatch):
    import retrieval.faces.run_faces as run_faces
    from retrieval.training.sources import build_source

    calls = []

    class TwoProcesses:  # rank 1 of 2; the barrier is recorded, not waited on
        rank, world_size = 1, 2

        def barrier(self):
            calls.append("barrier")

    monkeypatch.setattr(run_faces, "find_share", lambda pipeline, paths, ctx: (calls.append((len(paths), ctx.rank, ctx.world_size)),
                                                                               ctx.barrier()))
    root = make_face_folder(tmp_path / "data", n_classes=4, per_class=3, no_face=1)
    source = build_source(TrainConfig(data_dir=root, out=tmp_path / "run", epochs=1, faces=True, **FACE_TINY), ctx=TwoProcesses())
    assert calls == [(13, 1, 2), "barrier"] and len(source.folder.paths) == 12


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


def _photo_with_a_small_face(width: int = 22) -> Image.Image:
    """A 480 × 360 noisy grey photo holding one att_faces face scaled to ``width`` px (MTCNN finds it
    from 20 px faces, not from the default 40)."""
    import numpy as np

    from faces_helpers import ATT_TRAIN, dataset

    rng = np.random.default_rng(0)
    photo = Image.fromarray((np.full((360, 480, 3), 150) + rng.integers(-10, 10, (360, 480, 3))).astype(np.uint8))
    face = Image.open(dataset(ATT_TRAIN) / "s2" / "1.png").convert("RGB")
    photo.paste(face.resize((width, round(width * 112 / 92)), Image.Resampling.LANCZOS), (200, 150))
    return photo


def test_face_min_size_and_max_side_are_recorded_and_reach_every_reader_of_the_run(tmp_path):
    root = make_face_folder(tmp_path / "data", n_classes=4, per_class=3, no_face=0)
    small, default = tmp_path / "small", tmp_path / "default"
    train(TrainConfig(data_dir=root, out=small, epochs=0, faces=True, face_min_size=20, face_max_side=0, **FACE_TINY), progress=False)
    train(TrainConfig(data_dir=root, out=default, epochs=0, faces=True, **FACE_TINY), progress=False)
    config = read_config(small)
    assert config["train_settings"]["face_min_size"] == 20 and config["train_settings"]["face_max_side"] == 0
    assert config.faces["detector_settings"]["min_face_size"] == 20 and "max_side" not in config.faces["detector_settings"]
    assert run_pipeline(small, config).settings == DetectorSettings(min_face_size=20, max_side=0)
    assert read_config(default)["train_settings"]["face_min_size"] == DetectorSettings().min_face_size == 40
    assert read_config(default)["train_settings"]["face_max_side"] == DetectorSettings().max_side == 1600
    assert run_pipeline(default, read_config(default)).settings == DetectorSettings()
    photo = _photo_with_a_small_face()
    assert len(run_pipeline(small, config).faces(photo)) == 1  # index, search, evaluate and the app read this pipeline
    assert run_pipeline(default, read_config(default)).faces(photo) == []


def test_face_recheck_is_recorded_and_reaches_every_reader_of_the_run(tmp_path):
    """--face-recheck 0 keeps every face the cascade finds: the pears photo's "face" (see
    test_faces_detect) is then found by the run's pipeline, which the default run does not find."""
    from faces_helpers import DATASETS, dataset

    root = make_face_folder(tmp_path / "data", n_classes=4, per_class=3, no_face=0)
    unchecked, default = tmp_path / "unchecked", tmp_path / "default"
    train(TrainConfig(data_dir=root, out=unchecked, epochs=0, faces=True, face_recheck=0.0, **FACE_TINY), progress=False)
    train(TrainConfig(data_dir=root, out=default, epochs=0, faces=True, **FACE_TINY), progress=False)
    config = read_config(unchecked)
    assert config["train_settings"]["face_recheck"] == 0 and "recheck_threshold" not in config.faces["detector_settings"]
    assert read_config(default)["train_settings"]["face_recheck"] == 0.9
    assert read_config(default).faces["detector_settings"]["recheck_threshold"] == 0.9
    pears = Image.open(dataset(DATASETS / "grocery" / "train" / "Anjou" / "test_Anjou_029.jpg")).convert("RGB")
    pears = pears.crop((0, 0, 160, 120)).resize((480, 360), Image.Resampling.BICUBIC)
    assert len(run_pipeline(unchecked, config).faces(pears)) == 1
    assert run_pipeline(default, read_config(default)).faces(pears) == []
    with pytest.raises(RetrievalError, match=r"--face-recheck 0.5 \(the run has 0"):
        train(TrainConfig(data_dir=root, out=unchecked, epochs=1, resume=True, face_recheck=0.5), progress=False)


@pytest.mark.parametrize("settings, message", [
    ({"face_min_size": 20}, "--face-min-size sets the face detector: it needs --faces"),
    ({"face_max_side": 0}, "--face-max-side sets the face detector: it needs --faces"),
    ({"face_recheck": 0.5}, "--face-recheck sets the face detector: it needs --faces"),
    ({"faces": True, "face_recheck": 1.0}, r"--face-recheck must be a number from 0 \(no recheck\) to below 1, got 1.0"),
    ({"faces": True, "face_recheck": -0.1}, "--face-recheck must be a number from 0"),
    ({"faces": True, "face_recheck": float("nan")}, "--face-recheck must be a number from 0"),
    ({"faces": True, "face_min_size": 8}, "--face-min-size must be a whole number of pixels from 12 to 10000, got 8"),
    ({"faces": True, "face_min_size": 20.5}, "--face-min-size must be a whole number"),
    ({"faces": True, "face_max_side": 30}, r"--face-max-side must be 0 \(every photo searched whole\) or a whole number of pixels "
                                           r"from --face-min-size \(40\) to 100000, got 30"),
    ({"faces": True, "face_max_side": -1}, "--face-max-side must be 0"),
    ({"faces": True, "face_min_size": 5000}, r"--face-min-size 5000 is above the longest side a photo is searched at "
                                             r"\(--face-max-side, default 1600\): give --face-max-side 0"),  # not typed: not blamed
])
def test_bad_face_detector_flags_are_one_line_errors(tmp_path, settings, message):
    config = TrainConfig(data_dir=tmp_path, out=tmp_path / "run", **settings).resolve()
    with pytest.raises(RetrievalError, match=message):
        config.validate()


def test_the_face_detector_flags_accept_what_the_detector_accepts():
    from retrieval.faces.detect import MAX_SIDE_LIMIT as MAX_FACE_MAX_SIDE
    from retrieval.faces.detect import MIN_FACE_SIZE_RANGE

    low, high = MIN_FACE_SIZE_RANGE
    for size in (low, high):
        TrainConfig(data_dir=".", out="run", faces=True, face_min_size=size, face_max_side=0).resolve().validate()
        DetectorSettings(min_face_size=size, max_side=0)
    TrainConfig(data_dir=".", out="run", faces=True, face_max_side=MAX_FACE_MAX_SIDE).resolve().validate()
    DetectorSettings(max_side=MAX_FACE_MAX_SIDE)
    for bad in ({"min_face_size": low - 1}, {"min_face_size": high + 1}, {"max_side": MAX_FACE_MAX_SIDE + 1}):
        with pytest.raises(RetrievalError):
            DetectorSettings(**bad)


def test_resuming_a_face_run_from_before_the_detector_flags_reads_them_from_its_pipeline(tmp_path):
    """A face run saved before --face-min-size / --face-max-side (train_settings lack them, and its
    detector settings lack max_side) resumes with the detector it recorded; a typed value that
    differs from it is refused with one line."""
    root = make_face_folder(tmp_path / "data", n_classes=4, per_class=3, no_face=0)
    out = tmp_path / "run"
    train(TrainConfig(data_dir=root, out=out, epochs=1, faces=True, **FACE_TINY), progress=False)
    config_path = out / "config.json"
    stored = json.loads(config_path.read_text())
    del stored["train_settings"]["face_min_size"], stored["train_settings"]["face_max_side"], stored["train_settings"]["face_recheck"]
    del stored["faces"]["detector_settings"]["max_side"]  # as a run from before max_side recorded it
    del stored["faces"]["detector_settings"]["recheck_threshold"]  # and from before the recheck
    config_path.write_text(json.dumps(stored))
    with pytest.raises(RetrievalError, match=r"--face-max-side 1600 \(the run has 0\)"):
        train(TrainConfig(data_dir=root, out=out, epochs=2, resume=True, face_max_side=1600), progress=False)
    train(TrainConfig(data_dir=root, out=out, epochs=2, resume=True, face_min_size=40), progress=False)
    resumed = read_config(out)
    assert resumed["train_settings"]["face_min_size"] == 40 and resumed["train_settings"]["face_max_side"] == 0
    assert resumed["train_settings"]["face_recheck"] == 0
    assert run_pipeline(out, resumed).settings == DetectorSettings(max_side=0, recheck_threshold=0)


def test_a_colour_photo_without_a_face_does_not_turn_off_a_grey_face_runs_greyscale(tmp_path):
    """The photos left out (no face found) are never trained on: whether the run is grey is decided on
    the photos it trains on, so one colour photo without a face leaves a grey data set grey."""
    root = make_face_folder(tmp_path / "data", n_classes=4, per_class=3, no_face=1)  # the faceless image is in colour
    blank = next(root.rglob("blank0.png"))
    assert not data.all_greyscale([blank]), "the image without a face is a colour one"
    train(TrainConfig(data_dir=root, out=tmp_path / "run", epochs=0, faces=True, **FACE_TINY), progress=False)
    assert read_config(tmp_path / "run").data_config["greyscale"] is True


def test_a_face_run_trained_with_a_relative_out_logs_its_crops_by_absolute_path(tmp_path, monkeypatch):
    """The mining log names a face run's crops (in RUN_DIR/faces/, outside the data folder) by their
    absolute paths, not relative to the folder training ran in, where the app and `retrieval mining`
    could not find them from anywhere else."""
    from retrieval.diagnostics import read_mining_logs

    root = make_face_folder(tmp_path / "data", n_classes=4, per_class=3, no_face=0)
    monkeypatch.chdir(tmp_path)
    train(TrainConfig(data_dir=Path("data"), out=Path("run"), epochs=1, faces=True, **FACE_TINY), progress=False)
    rows = [row for rows in read_mining_logs(tmp_path / "run").values() for row in rows]
    paths = [row[f"{role}_path"] for row in rows for role in ("anchor", "positive", "negative")]
    assert paths and all(Path(p).is_absolute() and Path(p).is_file() for p in paths), paths[:3]
    assert all(Path(p).is_relative_to(faces_dir(tmp_path / "run").resolve()) for p in paths)
    assert root.is_dir()


def test_a_photo_that_cannot_be_read_is_skipped_as_unreadable_not_counted_as_a_face_missed(tmp_path, caplog):
    """A truncated JPEG passes the cheap scan and fails to decode: it is named once as unreadable and
    joins the folder's skipped images, and the no-face warning neither counts nor names it."""
    root = make_face_folder(tmp_path / "data", n_classes=2, per_class=2, no_face=1)
    photo = Image.open(next(root.rglob("1.png"))).convert("RGB")
    photo.save(tmp_path / "whole.jpg", quality=90)
    (root / "s1" / "broken.jpg").write_bytes((tmp_path / "whole.jpg").read_bytes()[: (tmp_path / "whole.jpg").stat().st_size // 2])
    folder = data.scan_folder(root, labelled=True)
    assert any(p.name == "broken.jpg" for p in folder.paths), "the cheap scan lets it through"
    pipeline = FacePipeline(output_size=32, cache_dir=tmp_path / "faces")
    with caplog.at_level(logging.WARNING, logger="retrieval"):
        crops, missing = face_folder(folder, pipeline)
    assert [p.name for p in missing] == ["blank0.png"]
    assert [p.name for p in crops.skipped] == ["broken.jpg"] and len(crops.paths) == 4
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    (no_face,) = [m for m in messages if "no face found" in m]
    assert "1 of 6" in no_face and "broken.jpg" not in no_face
    assert sum("broken.jpg" in m for m in messages) == 1


def test_a_class_left_with_one_face_is_told_as_such_not_as_a_class_of_a_single_image(tmp_path, caplog):
    """Each class folder holds two photos; one of s1's has no face: the warning counts photos with a face found."""
    root = make_face_folder(tmp_path / "data", n_classes=4, per_class=2, no_face=0)
    first = sorted(p for p in root.iterdir())[0]
    Image.new("L", (92, 112), 128).save(first / "1.png")  # no face any more
    with caplog.at_level(logging.WARNING, logger="retrieval"):
        train(TrainConfig(data_dir=root, out=tmp_path / "run", epochs=0, faces=True, **FACE_TINY), progress=False)
    messages = [r.getMessage() for r in caplog.records]
    assert any(f"fewer than two photos with a face found, never used as anchors: {first.name}" in m for m in messages), messages
    assert not any("a single image" in m for m in messages)


def test_mining_json_of_a_moved_face_run_names_the_crops_where_the_run_is_now(tmp_path, cli):
    import shutil

    root = make_face_folder(tmp_path / "data", n_classes=4, per_class=3, no_face=0)
    train(TrainConfig(data_dir=root, out=tmp_path / "run", epochs=1, faces=True, **FACE_TINY), progress=False)
    shutil.move(tmp_path / "run", tmp_path / "moved")
    shown = cli("mining", tmp_path / "moved", "--top", "3", "--json")
    assert shown.code == 0, shown.err
    rows = json.loads(shown.out)["triplets"]
    paths = [Path(row[f"{role}_path"]) for row in rows for role in ("anchor", "positive", "negative")]
    assert paths and all(p.is_file() and p.is_relative_to(tmp_path / "moved" / "faces") for p in paths), paths[:2]
