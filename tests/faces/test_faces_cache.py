"""Tests of the detection cache (retrieval.faces.cache) through FacePipeline, with a detector that
counts the images it is asked about: a second pass detects nothing, a changed setting detects
again, forgetting a file deletes its entries and crops, a corrupt entry is detected again."""

from __future__ import annotations

import logging
import shutil

import numpy as np
import pytest

from faces_helpers import ATT_CROPS, SCENES, CountingDetector, dataset
from retrieval.faces import DetectorSettings, FacePipeline, MTCNNDetector


@pytest.fixture
def photos(tmp_path):
    """Three photos copied into a gallery folder: two crops of s31 and a pairs scene (two faces)."""
    gallery = tmp_path / "gallery"
    gallery.mkdir()
    sources = [dataset(ATT_CROPS / "1.png"), dataset(ATT_CROPS / "2.png"), dataset(SCENES / "pairs" / "000.jpg")]
    return [shutil.copy(src, gallery / src.name) for src in sources]


def pipeline(cache_dir, detector=None, output_size=64):
    detector = detector if detector is not None else CountingDetector()
    return FacePipeline(output_size=output_size, cache_dir=cache_dir, detector=detector), detector


def cache_files(cache_dir):
    return sorted(p.relative_to(cache_dir).as_posix() for p in cache_dir.rglob("*") if p.is_file())


def test_second_pass_over_the_same_files_detects_nothing_and_gives_the_same_faces(tmp_path, photos):
    cache_dir = tmp_path / "faces"
    first, detector = pipeline(cache_dir)
    before = first.faces_many(photos)
    assert detector.images == 3 and [len(f) for f in before] == [1, 1, 2]
    files = cache_files(cache_dir)
    assert len([f for f in files if f.endswith(".json")]) == 3 and len([f for f in files if f.endswith(".png")]) == 4
    assert not [f for f in files if f.endswith(".tmp")]

    again, detector = pipeline(cache_dir)  # a new process: a fresh pipeline on the same folder
    after = again.faces_many(photos) + [again.faces(photos[2])]
    assert detector.images == 0
    for old, new in zip(before + [before[2]], after):
        assert [f.box for f in old] == [f.box for f in new] and [f.score for f in old] == [f.score for f in new]
        for a, b in zip(old, new):
            np.testing.assert_allclose(a.landmarks, b.landmarks)
            assert np.array_equal(np.asarray(a.crop), np.asarray(b.crop))  # PNG is lossless


def test_a_renamed_copy_is_the_same_entry(tmp_path, photos):
    cache_dir = tmp_path / "faces"
    run, detector = pipeline(cache_dir)
    run.faces(photos[0])
    copy = shutil.copy(photos[0], tmp_path / "renamed.png")
    assert len(run.faces(copy)) == 1 and detector.images == 1


def test_a_changed_detector_setting_detects_again(tmp_path, photos):
    cache_dir = tmp_path / "faces"
    pipeline(cache_dir)[0].faces_many(photos)
    other = CountingDetector(MTCNNDetector(DetectorSettings(min_face_size=30)))
    pipeline(cache_dir, other)[0].faces_many(photos)
    assert other.images == 3
    assert len([p for p in cache_dir.iterdir() if p.is_dir()]) == 2  # one folder per settings key


def test_another_output_size_aligns_again_without_detecting(tmp_path, photos):
    cache_dir = tmp_path / "faces"
    pipeline(cache_dir, output_size=64)[0].faces_many(photos)
    bigger, detector = pipeline(cache_dir, output_size=96)
    faces = bigger.faces_many(photos)
    assert detector.images == 0 and {f.crop.size for image in faces for f in image} == {(96, 96)}


def test_forgetting_files_deletes_their_entries_and_crops_only(tmp_path, photos):
    cache_dir = tmp_path / "faces"
    run, _ = pipeline(cache_dir)
    run.faces_many(photos)
    pipeline(cache_dir, CountingDetector(MTCNNDetector(DetectorSettings(min_face_size=30))))[0].faces(photos[2])
    digest = FacePipeline.digest(photos[2])
    assert len([f for f in cache_files(cache_dir) if digest in f]) == 6  # 2 settings × (entry + 2 crops)

    assert run.forget([photos[2]]) == 6
    left = cache_files(cache_dir)
    assert not [f for f in left if digest in f] and len([f for f in left if f.endswith(".json")]) == 2
    assert run.forget_digests([FacePipeline.digest(photos[0])]) == 2
    again, detector = pipeline(cache_dir)
    again.faces_many(photos)
    assert detector.images == 2  # the forgotten two are detected afresh, the third is still cached


@pytest.mark.parametrize("damage", ["not json {", '{"format": 1, "faces": "none"}', ""])
def test_a_corrupt_entry_is_detected_again_with_a_warning(tmp_path, photos, caplog, damage):
    cache_dir = tmp_path / "faces"
    run, detector = pipeline(cache_dir)
    expected = run.faces(photos[2])
    entry = run.cache.entry_path(FacePipeline.digest(photos[2]))
    entry.write_text(damage)
    with caplog.at_level(logging.WARNING, logger="retrieval"):
        again = run.faces(photos[2])
    assert detector.images == 2 and [f.box for f in again] == [f.box for f in expected]
    assert any("detecting again" in r.getMessage() for r in caplog.records)
    assert pipeline(cache_dir)[0].faces(photos[2]) and pipeline(cache_dir)[1].images == 0  # rewritten whole


def test_a_corrupt_crop_is_aligned_again_without_detecting(tmp_path, photos, caplog):
    cache_dir = tmp_path / "faces"
    run, detector = pipeline(cache_dir)
    expected = run.faces(photos[0])[0].crop
    crop_path = run.cache.crop_path(FacePipeline.digest(photos[0]), run.crop_key, 0)
    crop_path.write_bytes(b"\x89PNG broken")
    with caplog.at_level(logging.WARNING, logger="retrieval"):
        crop = run.faces(photos[0])[0].crop
    assert detector.images == 1 and np.array_equal(np.asarray(crop), np.asarray(expected))
    assert any("aligning again" in r.getMessage() for r in caplog.records)


def test_uploads_and_images_in_memory_are_never_written(tmp_path, photos):
    from PIL import Image

    cache_dir = tmp_path / "faces"
    run, detector = pipeline(cache_dir)
    assert len(run.faces(photos[2].read_bytes())) == 2
    assert len(run.faces(Image.open(photos[2]))) == 2
    assert detector.images == 2 and not cache_dir.exists()


def test_faces_many_reports_its_progress_from_what_the_cache_holds_to_the_last_image(tmp_path, photos, monkeypatch):
    import retrieval.faces.pipeline as pipeline_module

    monkeypatch.setattr(pipeline_module, "_DECODED_AT_ONCE", 2)  # three photos: two groups
    faces, _ = pipeline(tmp_path / "cache")
    first: list[tuple[int, int]] = []
    faces.faces_many(photos[:1])  # one photo already cached
    faces.faces_many(photos, on_progress=lambda done, total: first.append((done, total)))
    assert first == [(1, 3), (3, 3)], "the cache's answer, then each group of images detected"
    second: list[tuple[int, int]] = []
    faces.faces_many(photos, on_progress=lambda done, total: second.append((done, total)))
    assert second == [(3, 3)], "all cached: one report"


def test_a_torchrun_process_finds_its_share_and_the_cache_answers_for_the_others(tmp_path, photos):
    from retrieval.faces.run_faces import find_share

    class Process:  # one of two processes; the barrier is counted, not waited on
        world_size, barriers = 2, 0

        def __init__(self, rank):
            self.rank = rank

        def barrier(self):
            self.barriers += 1

    cache = tmp_path / "cache"
    second, second_counter = pipeline(cache)
    find_share(second, photos, Process(1))  # process 1 of 2: the photos at 1, 3, ...
    assert second_counter.images == 1
    first, first_counter = pipeline(cache)
    process = Process(0)
    find_share(first, photos, process)  # process 0: photos 0 and 2
    assert first_counter.images == 2 and process.barriers == 1, "its share, then the barrier"
    full, full_counter = pipeline(cache)
    assert [len(f) for f in full.faces_many(photos)] == [1, 1, 2] and full_counter.images == 0, "after the barrier: the cache"
    alone, alone_counter = pipeline(tmp_path / "other")
    find_share(alone, photos, None)
    assert alone_counter.images == 0, "one process: no separate share"


def test_each_photo_is_hashed_once_and_its_faces_carry_the_digest(tmp_path, photos, monkeypatch):
    """gallery_faces and face_folder take the cache key from the faces (hashing a large gallery
    twice was a second read of every photo); in-memory images and cacheless pipelines have none."""
    from PIL import Image

    import retrieval.faces.pipeline as pipeline_module
    from retrieval import data
    from retrieval.faces.run_faces import face_folder, gallery_faces
    from retrieval.run.store import sha256_file

    hashed = []
    monkeypatch.setattr(pipeline_module, "sha256_file", lambda path: hashed.append(path) or sha256_file(path))
    run, _ = pipeline(tmp_path / "faces")
    owners, crops, records, without_face, *_ = gallery_faces(run, photos, [0, 1, 2])
    assert len(hashed) == 3 and owners == [0, 1, 2, 2] and without_face == []
    assert [r["sha256"] for r in records] == [sha256_file(photos[0]), sha256_file(photos[1])] + [sha256_file(photos[2])] * 2
    assert crops == [run.cache.crop_path(r["sha256"], run.crop_key, r["face"]) for r in records] and all(c.is_file() for c in crops)

    hashed.clear()
    folder = data.ImageFolder(root=photos[0].parent, paths=list(photos), labels=[0, 0, 1], class_names=["a", "b"])
    kept, missing = face_folder(folder, run)
    assert len(hashed) == 3 and not missing and kept.paths == [crops[0], crops[1], crops[2]]

    assert run.faces(Image.open(photos[0]))[0].sha256 is None
    assert pipeline(None)[0].faces(photos[0])[0].sha256 is None
