"""A new run refused for its input leaves ``--out`` as it found it (retrieval.training.out_folder.undone_if_refused):
``retrieval train photos --out runs/a --faces`` on photos without a face once left ``runs/a/faces/`` behind (face
detections, personal data), and the retry with a good folder was then refused as "the start of a run that stopped"."""

import pytest

from cli_runner import cli  # noqa: F401 (fixture)
from retrieval.run import read_config
from retrieval.sample_data import generate_sample_data

TINY_FLAGS = ["--backbone", "resnet10t", "--image-size", "32", "--embedding-dim", "16", "-P", "2", "-K", "2",
              "--workers", "0", "--precision", "fp32", "--val-fraction", "0.25", "--quiet"]
NO_FACE = "no class has two or more photos with a face found"


@pytest.fixture(scope="module")
def no_faces(tmp_path_factory):
    """4 class folders of 3 generated 32 px pictures of objects: no face in any."""
    root = tmp_path_factory.mktemp("noface")
    generate_sample_data(root / "data", n_train_classes=4, n_test_classes=1, images_per_class=3, image_size=32)
    return root / "data" / "train"


def test_a_new_face_run_refused_for_photos_without_faces_leaves_no_out_and_the_retry_starts_there(tmp_path, no_faces, cli):
    runs = tmp_path / "runs"
    out = runs / "noface"
    refused = cli("train", no_faces, "--out", out, "--faces", "--epochs", "1", *TINY_FLAGS)
    assert refused.code == 2 and NO_FACE in refused.lines[-1], refused.err
    assert not out.exists(), "the face detection cache (personal data) and the folder are gone"
    assert not runs.exists(), "the parent folder the command created is gone too"

    again = cli("train", no_faces, "--out", out, "--faces", "--epochs", "1", *TINY_FLAGS)
    assert again.code == 2 and NO_FACE in again.lines[-1], again.err  # refused for its input again, not for the folder
    assert not any("holds the start of a run" in line for line in again.lines)

    good = cli("train", no_faces, "--out", out, "--epochs", "0", *TINY_FLAGS)  # the retry on a folder that trains
    assert good.code == 0, good.err
    assert read_config(out).backbone == "resnet10t"


def test_ctrl_c_while_a_new_face_run_finds_its_faces_leaves_no_out(tmp_path, no_faces, cli, monkeypatch):
    from retrieval.faces import run_faces

    real_record = run_faces.record_training_photos

    def record_then_stop(*args, **kwargs):  # Ctrl-C once the detection cache and its photo map are written
        real_record(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(run_faces, "record_training_photos", record_then_stop)
    out = tmp_path / "stopped"
    done = cli("train", no_faces, "--out", out, "--faces", "--epochs", "1", *TINY_FLAGS)
    assert done.code == 130, done.err
    assert not any("Traceback" in line for line in done.lines)
    assert not out.exists()


def test_an_empty_out_that_was_there_stays_there_empty(tmp_path, no_faces, cli):
    out = tmp_path / "made_by_hand"
    out.mkdir()
    done = cli("train", no_faces, "--out", out, "--faces", "--epochs", "1", *TINY_FLAGS)
    assert done.code == 2 and NO_FACE in done.lines[-1], done.err
    assert out.is_dir() and not any(out.iterdir())


def test_a_forced_out_that_held_files_keeps_them_when_the_new_run_is_refused(tmp_path, no_faces, cli):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    done = cli("train", no_faces, "--out", out, "--faces", "--epochs", "1", "--force", *TINY_FLAGS)
    assert done.code == 2 and NO_FACE in done.lines[-1], done.err
    assert (out / "notes.txt").read_text() == "keep me"
