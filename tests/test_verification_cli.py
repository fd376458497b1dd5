"""`retrieval evaluate` verification keys, `retrieval calibrate` and `retrieval verify` on a small run,
through the real command line."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from retrieval.model import EmbeddingModel
from retrieval.run import read_config, save_model

from cli_runner import cli  # noqa: F401  (the in-process CLI fixture)


@pytest.fixture(scope="module")
def run_and_data(tmp_path_factory):
    """A random-init tiny model and a labelled folder of three colour classes (distinct enough that
    even an untrained network separates most pairs)."""
    root = tmp_path_factory.mktemp("verify")
    torch.manual_seed(0)
    model = EmbeddingModel("resnet10t", 8).eval()
    save_model(root / "run", model, {"image_size": 32, "data_config": model.data_config(32)})
    rng = np.random.default_rng(0)
    for c, colour in enumerate([(250, 10, 10), (10, 250, 10), (10, 10, 250)]):
        folder = root / "data" / f"class{c}"
        folder.mkdir(parents=True)
        for i in range(6):
            pixels = np.clip(np.array(colour) + rng.normal(0, 20, (32, 32, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{i}.png")
    return root / "run", root / "data"


def test_calibrate_warns_when_the_folder_holds_classes_the_run_trained_on(run_and_data, tmp_path, cli):
    import shutil

    run, data = run_and_data
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    read_config(copy).updated(train_classes=["class0", "class1", "other"], val_classes=["class2"]).write(copy)
    result = cli("calibrate", copy, data, "--target-far", "0.1", "--json", "--device", "cpu", "--quiet")
    assert result.code == 0, result.err
    assert len(result.lines) == 1 and "2 of its 3 classes are classes the run trained on (class0, class1)" in result.lines[0]
    read_config(copy).updated(train_classes=["other"]).write(copy)
    quiet = cli("calibrate", copy, data, "--target-far", "0.1", "--json", "--device", "cpu", "--quiet")
    assert quiet.code == 0 and not quiet.lines, quiet.err


def test_calibrate_stores_a_threshold_that_evaluate_and_verify_use(run_and_data, cli):
    run, data = run_and_data
    before = cli("verify", run, data / "class0" / "0.png", data / "class0" / "1.png", "--json", "--device", "cpu")
    assert before.code == 0, before.err
    assert json.loads(before.out)["same"] is None  # no threshold yet: distance only

    calibrated = cli("calibrate", run, data, "--target-far", "0.1", "--json", "--device", "cpu")
    assert calibrated.code == 0, calibrated.err
    stored = json.loads(calibrated.out)
    assert stored["target_far"] == 0.1 and stored["far"] <= 0.1
    assert stored["n_positive_pairs"] == 3 * 15 and stored["n_negative_pairs"] == 18 * 17 // 2 - 45
    assert read_config(run).threshold.threshold == pytest.approx(stored["threshold"])

    metrics = json.loads(cli("evaluate", run, data, "--json", "--device", "cpu").out)
    table = cli("evaluate", run, data, "--device", "cpu", "--quiet")
    heading = f"{run}: {data} (leave-one-out)"
    assert table.code == 0 and table.out.splitlines()[0] == heading, "the heading is one line, however long the paths"
    assert any("recall_at_1" in line for line in table.out.splitlines()[1:])
    assert metrics["n_positive_pairs"] == 45 and metrics["n_negative_pairs"] == 108
    assert set(metrics["tar_at_far"]) == {"0.1", "0.01"} and metrics["tar_at_far"]["0.01"] is None  # 108 < 1000 pairs
    assert metrics["far_at_threshold"] == pytest.approx(stored["far"]) and 0 <= metrics["eer"] <= 1
    assert metrics["frr_at_threshold"] == pytest.approx(1 - stored["tar"])

    same = json.loads(cli("verify", run, data / "class1" / "2.png", data / "class1" / "2.png", "--json", "--device", "cpu").out)
    assert same["distance"] == pytest.approx(0, abs=1e-5) and same["same"] is True
    assert same["threshold"] == pytest.approx(stored["threshold"]) and same["far"] == pytest.approx(stored["far"])
    text = cli("verify", run, data / "class1" / "2.png", data / "class1" / "2.png", "--device", "cpu")
    assert text.out.startswith("same: d = 0.0000 <= threshold")


def test_bad_inputs_are_one_line_errors(run_and_data, tmp_path, cli):
    run, data = run_and_data
    (tmp_path / "one" / "class0").mkdir(parents=True)
    for image in (data / "class0").iterdir():
        (tmp_path / "one" / "class0" / image.name).write_bytes(image.read_bytes())
    for args, message in [
        (("calibrate", run, data, "--target-far", "2"), "--target-far must be between 0 and 1"),
        (("calibrate", run, tmp_path / "one"), "calibration needs two or more classes"),
        (("verify", run, data / "class0" / "0.png", tmp_path / "missing.png"), "missing.png"),
        (("verify", run, data / "class0" / "0.png", data / "class0" / "0.png", "--face-b", "2"), "this run compares whole images"),
    ]:
        result = cli(*args, "--device", "cpu")
        assert result.code == 2 and message in result.err, result.err
        assert "Traceback" not in result.err and len(result.err.strip().splitlines()) == 1


def test_a_bad_input_is_one_line_on_stderr_from_the_installed_command(run_and_data, tmp_path):
    run, data = run_and_data
    result = subprocess.run([sys.executable, "-m", "retrieval", "verify", str(run), str(data / "class0" / "0.png"),
                             str(tmp_path / "missing.png")], capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "missing.png" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and result.stdout == ""


def test_evaluate_refuses_one_folder_as_query_and_gallery_and_warns_of_shared_images(run_and_data, tmp_path, cli):
    import shutil

    run, data = run_and_data
    same = cli("evaluate", run, "--query", data, "--gallery", data, "--device", "cpu", "--quiet")
    assert same.code == 2 and len(same.lines) == 1 and "are the same folder" in same.lines[0] and "leave-one-out" in same.lines[0]
    gallery = tmp_path / "gallery"
    shutil.copytree(data, gallery)
    (gallery / "class0" / "0.png").rename(gallery / "class0" / "renamed.png")  # the same content under another name
    for extra in (gallery / "class1").iterdir():  # class1's gallery images differ from the queries
        Image.open(extra).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(extra)
    shared = cli("evaluate", run, "--query", data, "--gallery", gallery, "--device", "cpu", "--quiet", "--json")
    assert shared.code == 0, shared.err
    warned = [line for line in shared.lines if "also in the gallery" in line]
    assert len(warned) == 1 and warned[0].startswith("warning: 12 of the 18 query image(s) are also in the gallery"), shared.err


def test_calibrate_warns_when_the_folder_has_too_few_pairs_for_the_target_far(run_and_data, tmp_path, cli):
    import shutil

    run, data = run_and_data
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    rough = cli("calibrate", copy, data, "--target-far", "0.001", "--json", "--device", "cpu", "--quiet")
    assert rough.code == 0, rough.err
    warned = [line for line in rough.lines if "rests on fewer than" in line]
    assert len(warned) == 1 and "108 different-class pairs: τ at FAR 0.001 rests on fewer than the 10000" in warned[0], rough.err
    firm = cli("calibrate", copy, data, "--target-far", "0.1", "--json", "--device", "cpu", "--quiet")
    assert firm.code == 0 and not any("rests on fewer than" in line for line in firm.lines), firm.err


def test_calibrate_refuses_when_one_image_under_two_classes_leaves_no_threshold_and_keeps_the_stored_one(
        run_and_data, tmp_path, cli):
    import shutil

    run, data = run_and_data
    copy, folder = tmp_path / "run", tmp_path / "data"
    shutil.copytree(run, copy)
    shutil.copytree(data, folder)
    assert cli("calibrate", copy, folder, "--target-far", "0.1", "--device", "cpu", "--quiet").code == 0
    stored = (copy / "config.json").read_bytes()
    shutil.copy(folder / "class0" / "0.png", folder / "class1" / "copy-of-class0-0.png")  # a different-class pair at d = 0
    result = cli("calibrate", copy, folder, "--target-far", "0.001", "--device", "cpu", "--quiet")
    assert result.code == 2 and len(result.err.strip().splitlines()) == 1, result.err
    assert "lie at distance 0 (the same image under two classes?)" in result.err and "Traceback" not in result.err
    assert (copy / "config.json").read_bytes() == stored
    assert cli("verify", copy, folder / "class0" / "0.png", folder / "class0" / "1.png", "--device", "cpu").code == 0


def test_calibrate_on_a_run_it_cannot_write_says_so_before_embedding(run_and_data, cli, monkeypatch):
    import os

    from retrieval import evaluate

    run, data = run_and_data
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: False if str(path) == str(run) and mode == os.W_OK
                        else real_access(path, mode, **kw))
    monkeypatch.setattr(evaluate, "_embed_labelled_sets", lambda *a, **k: pytest.fail("embedded before the check"))
    result = cli("calibrate", run, data, "--device", "cpu", "--quiet")
    assert result.code == 2 and result.lines == [f"error: cannot write {run} (a read-only folder or file system): "
                                                 "calibrate stores τ in its config.json"], result.err


@pytest.mark.parametrize("key, value, requirement", [
    ("threshold", 5.0, "must be a number from 0 to 2"),
    ("target_far", 0, "must be a number between 0 and 1"),
    ("n_negative_pairs", -3, "must be a whole number from 0"),
])
def test_a_damaged_verification_block_names_its_key_and_calibrate_replaces_it(run_and_data, tmp_path, cli, key, value, requirement):
    import shutil

    run, data = run_and_data
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    assert cli("calibrate", copy, data, "--target-far", "0.1", "--device", "cpu", "--quiet").code == 0
    path = (copy / "config.json").resolve()
    config = json.loads(path.read_text())
    config["verification"][key] = value
    path.unlink()
    path.write_text(json.dumps(config))

    image = data / "class0" / "0.png"
    refused = cli("verify", copy, image, image, "--device", "cpu")
    assert refused.code == 2 and len(refused.lines) == 1, refused.err
    assert f"verification.{key} {requirement}" in refused.lines[0] and "retrieval calibrate" in refused.lines[0], refused.lines
    fixed = cli("calibrate", copy, data, "--target-far", "0.1", "--device", "cpu", "--quiet")
    assert fixed.code == 0, fixed.err
    assert cli("verify", copy, image, image, "--device", "cpu").out.startswith("same: d = 0.0000")


def test_evaluate_warns_on_a_single_class_and_on_classes_the_run_trained_on(run_and_data, tmp_path, cli):
    import shutil

    run, data = run_and_data
    one = tmp_path / "one"
    shutil.copytree(data / "class0", one / "class0")
    single = cli("evaluate", run, one, "--device", "cpu", "--quiet")
    assert single.code == 0, single.err
    assert len(single.lines) == 1 and "one class only" in single.lines[0] and "whatever the model" in single.lines[0], single.err
    lone = tmp_path / "lone"  # one image: nothing to evaluate, refused in one line with no warning ahead of it
    (lone / "class0").mkdir(parents=True)
    shutil.copy(data / "class0" / "0.png", lone / "class0" / "0.png")
    refused = cli("evaluate", run, lone, "--device", "cpu", "--quiet")
    assert refused.code == 2 and len(refused.lines) == 1 and refused.lines[0].startswith("error: "), refused.err

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    read_config(copy).updated(train_classes=["class1", "other"]).write(copy)
    seen = cli("evaluate", copy, data, "--device", "cpu", "--quiet")
    assert seen.code == 0, seen.err
    assert len(seen.lines) == 1 and "1 of its 3 classes are classes the run trained on (class1)" in seen.lines[0]
    assert "measure what the model remembers" in seen.lines[0]
    plain = cli("evaluate", run, data, "--device", "cpu", "--quiet")
    assert plain.code == 0 and not plain.lines, plain.err

    # queries of unseen classes against a gallery that also holds trained classes (a catalogue of every
    # product): those are distractors, and the figures are not the model's memory
    query, gallery = tmp_path / "query", tmp_path / "gallery"
    for name in ("class0", "class2"):
        shutil.copytree(data / name, query / name)
    shutil.copytree(data, gallery)
    (query / ".git").mkdir()  # hidden and empty folders are no classes
    (query / "empty").mkdir()
    read_config(copy).updated(train_classes=["class1"]).write(copy)
    distractors = cli("evaluate", copy, "--query", query, "--gallery", gallery, "--device", "cpu", "--quiet")
    assert distractors.code == 0 and not [line for line in distractors.lines if "trained on" in line], distractors.err
    read_config(copy).updated(train_classes=["class2"]).write(copy)
    memorised = cli("evaluate", copy, "--query", query, "--gallery", gallery, "--device", "cpu", "--quiet")
    (line,) = [line for line in memorised.lines if "trained on" in line]
    assert "1 of its 2 classes that the gallery holds too are classes the run trained on (class2)" in line, line
