"""evaluate, calibrate and verify on a face run: each image's most confident face, misses counted."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cli_runner import cli  # noqa: F401  (fixture)
from faces_helpers import SCENES, dataset, make_face_folder, make_face_run
from retrieval.data import load_image
from retrieval.errors import RetrievalError
from retrieval.evaluate import calibrate_run, evaluate_run, retrieval_metrics, verify_images, with_misses
from retrieval.faces.run_faces import run_pipeline
from retrieval.run import read_config


@pytest.fixture(scope="module")
def face_run(tmp_path_factory):
    return make_face_run(tmp_path_factory.mktemp("facerun"))


def test_with_misses_equals_the_mean_over_all_queries_with_a_miss_scoring_zero():
    rng = np.random.default_rng(1)
    embeddings, labels = rng.normal(size=(12, 4)), np.repeat(np.arange(4), 3)
    metrics = retrieval_metrics(embeddings, labels)
    rows = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    per_query = []  # brute force: hit@1 of each query, then two misses
    for i in range(len(rows)):
        d = np.linalg.norm(rows - rows[i], axis=1)
        d[i] = np.inf
        per_query.append(float(labels[np.argmin(d)] == labels[i]))
    per_query += [0.0, 0.0]
    result = with_misses(metrics, 2)
    assert result["recall_at_1"] == pytest.approx(np.mean(per_query))
    assert result["map_at_r"] == pytest.approx(metrics["map_at_r"] * 12 / 14)
    assert result["n_queries"] == 14 and result["n_no_face"] == 2


def test_evaluate_on_a_face_run_counts_a_faceless_query_as_a_miss(face_run, tmp_path, caplog):
    folder = make_face_folder(tmp_path / "eval", n_classes=3, per_class=2, no_face=1)
    metrics = evaluate_run(face_run, folder, device="cpu")
    assert metrics["n_queries"] == 7 and metrics["n_no_face"] == 1
    assert metrics["recall_at_10"] <= 6 / 7 + 1e-9, "the faceless query cannot be a hit"
    warned = [r.getMessage() for r in caplog.records if "no face found" in r.getMessage()]
    assert len(warned) == 1 and "count as misses" in warned[0] and "skipped" not in warned[0], warned


def test_a_group_photo_in_a_class_folder_is_warned_of_in_evaluate_and_calibrate(face_run, tmp_path, caplog):
    """evaluate and calibrate take each image's most confident face under its folder's label, which in
    a photo of two people may be the other one: counted in one warning line, as `index` warns."""
    import logging
    import shutil

    folder = make_face_folder(tmp_path / "eval", n_classes=3, per_class=2, no_face=0)
    person = sorted(p for p in folder.iterdir() if p.is_dir())[0]
    shutil.copy(dataset(SCENES / "pairs" / "000.jpg"), person / "party.jpg")
    with caplog.at_level(logging.WARNING, logger="retrieval"):
        evaluate_run(face_run, folder, device="cpu")
        calibrate_run(face_run, folder, device="cpu")
    warned = [r.getMessage() for r in caplog.records if "hold more than one face" in r.getMessage()]
    assert len(warned) == 2 and all("1 of 7" in w and "party.jpg" in w and "most confident face" in w for w in warned), warned


def test_cross_set_evaluate_on_a_face_run_counts_query_misses_only(face_run, tmp_path):
    queries = make_face_folder(tmp_path / "q", n_classes=3, per_class=2, no_face=2)
    gallery = make_face_folder(tmp_path / "g", n_classes=3, per_class=2, no_face=1)
    metrics = evaluate_run(face_run, query_dir=queries, gallery_dir=gallery, device="cpu")
    assert metrics["n_queries"] == 8 and metrics["n_no_face"] == 2


def test_calibrate_on_a_face_run_chooses_a_threshold_on_the_faces(face_run, tmp_path):
    folder = make_face_folder(tmp_path / "cal", n_classes=3, per_class=2, no_face=1)
    stored = calibrate_run(face_run, folder, device="cpu")
    assert stored["n_positive_pairs"] == 3 and stored["n_negative_pairs"] == 12


def faceless_folder(root, classes=("a", "b"), per_class=2):
    """A labelled folder of grey images in which no face is found."""
    from PIL import Image

    rng = np.random.default_rng(3)
    for name in classes:
        (root / name).mkdir(parents=True)
        for k in range(per_class):
            Image.fromarray((120 + rng.integers(0, 8, (112, 92, 3))).astype(np.uint8)).save(root / name / f"{k}.png")
    return root


def test_a_set_without_any_face_is_a_one_line_error_naming_it_in_evaluate_and_calibrate(face_run, tmp_path, cli):
    blank = faceless_folder(tmp_path / "blank")
    faces = make_face_folder(tmp_path / "faces", n_classes=2, per_class=2, no_face=0)
    for call, what in [(lambda: evaluate_run(face_run, blank, device="cpu"), "evaluation"),
                       (lambda: evaluate_run(face_run, query_dir=blank, gallery_dir=faces, device="cpu"), "query"),
                       (lambda: evaluate_run(face_run, query_dir=faces, gallery_dir=blank, device="cpu"), "gallery"),
                       (lambda: calibrate_run(face_run, blank, device="cpu"), "calibration")]:
        with pytest.raises(RetrievalError, match=rf"^no face found in any of the 4 {what} image\(s\) of .*blank: a face run compares faces"):
            call()
    result = cli("evaluate", face_run, blank)
    lines = result.err.strip().splitlines()
    assert result.code == 2 and "Traceback" not in result.err and len(lines) == 2, result.err  # the no-face warning, the error
    assert lines[-1].startswith("error: no face found in any of the 4 evaluation image(s)")


def test_calibrate_says_when_images_without_a_face_leave_too_few_classes(face_run, tmp_path, caplog):
    folder = make_face_folder(tmp_path / "half", n_classes=1, per_class=2, no_face=0)
    faceless_folder(folder, classes=("z",))
    with pytest.raises(RetrievalError, match=r"calibration needs two or more classes, one with two or more images, once the "
                                             r"2 image\(s\) without a face found are left out"):
        calibrate_run(face_run, folder, device="cpu")
    warned = [r.getMessage() for r in caplog.records if "no face found" in r.getMessage()]
    assert warned and "calibration image(s)" in warned[0] and "are left out" in warned[0], warned


def test_verify_on_a_face_run_compares_faces_and_a_faceless_image_is_a_one_line_error(face_run, tmp_path):
    folder = make_face_folder(tmp_path / "v", n_classes=1, per_class=2, no_face=1)
    person = sorted(p for p in folder.iterdir())[0]
    result = verify_images(face_run, person / "1.png", person / "2.png")
    assert 0 <= result["distance"] <= 2
    with pytest.raises(RetrievalError, match=r"blank0.png: no face found \(this run compares faces; faces under about 40 px are not "
                                             r"looked for in it \(the run's --face-min-size\), and a face that O-Net doubts once "
                                             r"framed by its own landmarks is dropped \(--face-recheck 0.9\); --look-harder looks for "
                                             r"faces from 20 px at lower thresholds\)"):
        verify_images(face_run, person / "1.png", person / "blank0.png")


def test_verify_on_a_group_photo_compares_its_most_confident_face_and_says_which(face_run, cli):
    photo = dataset(SCENES / "pairs" / "000.jpg")
    found = run_pipeline(face_run, read_config(face_run)).faces(load_image(photo))
    assert len(found) == 2
    best = max(found, key=lambda face: face.score)
    result = verify_images(face_run, photo, photo)
    assert result["distance"] < 1e-5 and [face["n_faces"] for face in result["faces"]] == [2, 2]
    assert result["faces"][0]["box"] == pytest.approx(list(best.box), abs=0.01)
    assert result["faces"][0]["score"] == pytest.approx(best.score, abs=1e-5)
    text = cli("verify", face_run, photo, photo)
    assert text.code == 0, text.err
    lines = text.out.splitlines()
    assert len(lines) == 3 and lines[0].replace("--face-a", "--face-b") == lines[1]
    assert lines[0].startswith(f"{photo}: 2 faces found; compared the most confident (box ") \
        and lines[0].endswith("; --face-a N picks another, as `retrieval search` numbers them)"), lines[0]
    assert "d = 0.0000" in lines[2], "the verdict line comes last"


def test_verify_compares_the_face_picked_with_face_a_and_face_b(face_run, cli, tmp_path):
    """The two people of one photo: --face-b 2 compares the first with the second (not itself), and
    says which; a face number the photo has not, or on a run of whole images, is one line."""
    photo = dataset(SCENES / "pairs" / "000.jpg")
    found = run_pipeline(face_run, read_config(face_run)).faces(load_image(photo))
    other = verify_images(face_run, photo, photo, faces=(None, 1))
    assert other["distance"] > 1e-3 and [face["face"] for face in other["faces"]] == [0, 1]
    assert other["faces"][1]["box"] == pytest.approx(list(found[1].box), abs=0.01)
    text = cli("verify", face_run, photo, photo, "--face-b", "2")
    assert text.code == 0, text.err
    shown = text.out.splitlines()
    assert shown[1].startswith(f"{photo}: 2 faces found; compared face 2 (box ") and "--face-b N" in shown[1], shown
    same = cli("verify", face_run, photo, photo, "--face-a", "2", "--face-b", "2", "--json")
    assert json.loads(same.out)["distance"] < 1e-5
    missing = cli("verify", face_run, photo, photo, "--face-a", "3")
    assert missing.code == 2 and len(missing.lines) == 1 and "--face-a 3" in missing.lines[0] and "has 2 face(s) found" in missing.lines[0]
    assert cli("verify", face_run, photo, photo, "--face-b", "0").code == 2, "faces are numbered from 1"


def test_evaluate_reports_finding_faces_then_embedding_both_sets_counted_together(face_run, tmp_path):
    queries = make_face_folder(tmp_path / "q", n_classes=3, per_class=2, no_face=1)
    gallery = make_face_folder(tmp_path / "g", n_classes=3, per_class=2, no_face=0)
    reports: list[tuple[str, int, int]] = []
    evaluate_run(face_run, query_dir=queries, gallery_dir=gallery, device="cpu",
                 on_progress=lambda stage, done, total: reports.append((stage, done, total)))
    detect = [r for r in reports if r[0] == "detect"]
    embed = [r for r in reports if r[0] == "embed"]
    assert detect[-1] == ("detect", 13, 13) and all(total == 13 for _, _, total in detect), "7 query and 6 gallery images"
    assert embed[-1] == ("embed", 12, 12), "the 12 faces found"
    assert reports.index(embed[0]) > reports.index(detect[-1]), "faces are found before anything is embedded"


def test_the_commands_progress_bars_show_on_a_terminal_only(face_run, tmp_path, cli, monkeypatch):
    folder = make_face_folder(tmp_path / "e", n_classes=3, per_class=2, no_face=0)
    trained_on = lambda err: [line for line in err.splitlines() if "classes the run trained on" not in line]  # noqa: E731  (its people)
    piped = cli("evaluate", face_run, folder, "--json", "--device", "cpu")
    assert piped.code == 0 and trained_on(piped.err) == [], "a pipe or a log gets no bars"
    monkeypatch.setenv("TTY_COMPATIBLE", "1")  # rich: stderr is a terminal
    shown = cli("evaluate", face_run, folder, "--json", "--device", "cpu")
    assert shown.code == 0 and "finding faces" in shown.err and "embedding images" in shown.err and "6/6" in shown.err, shown.err
    quiet = cli("evaluate", face_run, folder, "--json", "--device", "cpu", "--quiet")
    assert quiet.code == 0 and trained_on(quiet.err) == []


def _scene_folder(root):
    """A labelled folder of two test people's photos (scenes: content no training or index read)."""
    import shutil

    for person in ("s31", "s32"):
        (root / person).mkdir(parents=True)
        for k in (1, 2, 3):
            shutil.copy(dataset(SCENES / "single" / person / f"{k}.jpg"), root / person / f"{k}.jpg")
    return root


def test_evaluate_calibrate_and_confusions_keep_no_face_of_their_folders_in_the_run(face_run, tmp_path, cli):
    """Their folders' crops are needed only while they are embedded: kept in RUN_DIR/faces/ they would be
    personal data that `index --remove` cannot reach (no index item). The same figures on a second run."""
    from retrieval.run.files import faces_dir

    folder = _scene_folder(tmp_path / "people")
    before = sorted(p.relative_to(face_run) for p in faces_dir(face_run).rglob("*"))
    first = evaluate_run(face_run, folder, device="cpu")
    calibrate_run(face_run, folder, device="cpu")
    shown = cli("confusions", face_run, folder, "--json")
    assert shown.code == 0, shown.err
    assert sorted(p.relative_to(face_run) for p in faces_dir(face_run).rglob("*")) == before
    second = evaluate_run(face_run, folder, device="cpu")
    assert first["n_queries"] == 6 and first["n_no_face"] == 0
    assert {k: first[k] for k in ("recall_at_1", "map_at_r")} == {k: second[k] for k in ("recall_at_1", "map_at_r")}


def test_the_scratch_cache_copies_what_the_run_already_found_and_detects_only_the_rest(face_run, tmp_path):
    """evaluate / calibrate / confusions read a photo the run's own cache holds (training's, the
    gallery's) from it, detect only the others, and write nothing into it."""
    from faces_helpers import CountingDetector

    from retrieval.faces.run_faces import scratch_pipeline, training_photo_names
    from retrieval.run.files import faces_dir

    config = read_config(face_run)
    trained = make_face_folder(tmp_path / "trained", n_classes=2, per_class=2, no_face=0)  # the run's training content
    assert training_photo_names(face_run), "the run's cache holds its training photos"
    scenes = _scene_folder(tmp_path / "scenes")
    before = sorted(p.relative_to(face_run) for p in faces_dir(face_run).rglob("*"))
    with scratch_pipeline(face_run, config) as pipeline:
        counting = CountingDetector()
        pipeline.detector = counting
        known = pipeline.faces_many(sorted(trained.rglob("*.png")))
        assert counting.images == 0 and all(len(faces) == 1 for faces in known), "copied from the run's cache"
        fresh = pipeline.faces_many(sorted(scenes.rglob("*.jpg")))
        assert counting.images == 6 and all(fresh)
        assert pipeline.cache.folder.parent == faces_dir(face_run)
    assert sorted(p.relative_to(face_run) for p in faces_dir(face_run).rglob("*")) == before
