"""`retrieval train` with its default flags on a folder with fewer classes than the default P (16):
P is clamped to the training classes (or pair-file groups) available, said in one line, and recorded;
a P the user typed that is too large stays a one-line error (asked for, so not changed silently)."""

import json

import pytest

import fake_runs
from cli_runner import cli  # noqa: F401

CLASSES = tuple(f"person{i}" for i in range(6))  # 6 classes: 4 train, 2 held out at the default --val-fraction 0.2
FAST = ["--backbone", "resnet10t", "--image-size", "32", "--embedding-dim", "8", "--epochs", "1", "--workers", "0",
        "--precision", "fp32", "--quiet", "--device", "cpu"]


@pytest.fixture(scope="module")
def small_folder(tmp_path_factory):
    return fake_runs.make_gallery(tmp_path_factory.mktemp("small") / "people", classes=CLASSES, images_per_class=3)


def test_default_p_is_clamped_to_the_training_classes_with_one_line(small_folder, tmp_path, cli):
    result = cli("train", small_folder, "--out", tmp_path / "run", *FAST)
    assert result.code == 0, result.err
    (line,) = [line for line in result.lines if "classes per batch" in line]
    assert "4" in line and "16" in line
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["train_settings"]["classes_per_batch"] == 4  # what took effect: a resume keeps it


def test_a_typed_p_larger_than_the_classes_stays_a_one_line_error(small_folder, tmp_path, cli):
    result = cli("train", small_folder, "--out", tmp_path / "run", *FAST, "-P", "8")
    assert result.code == 2 and len(result.lines) == 1 and "-P 8" in result.err and "only 4" in result.err


def test_pair_training_clamps_the_default_p_to_the_linked_groups(small_folder, tmp_path, cli):
    rows = [f"{name}/{name}_0.png,{name}/{name}_1.png" for name in CLASSES[:4]]  # 4 linked groups
    (tmp_path / "pairs.csv").write_text("\n".join(rows) + "\n")
    result = cli("train", small_folder, "--out", tmp_path / "run", *FAST, "--pairs", tmp_path / "pairs.csv", "--val-fraction", "0")
    assert result.code == 0, result.err
    assert any("classes per batch" in line and "4" in line for line in result.lines), result.err
    assert json.loads((tmp_path / "run" / "config.json").read_text())["train_settings"]["classes_per_batch"] == 4



def test_a_truncated_jpeg_in_a_held_out_class_is_left_out_of_validation_not_the_end_of_training(small_folder, tmp_path, cli):
    """A truncated JPEG passes the folder scan (its header is whole) and fails to decode. Training
    warned and went on; validation stopped the run with "cannot read image", depending only on
    which classes the seed held out. One such file in every class: the run ends, each named once."""
    import io
    import shutil

    import numpy as np
    from PIL import Image

    folder = tmp_path / "people"
    shutil.copytree(small_folder, folder)
    noise = np.random.default_rng(0).integers(0, 255, (48, 48, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, "JPEG")
    for name in CLASSES:
        (folder / name / "cut.jpg").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    done = cli("train", folder, "--out", tmp_path / "run", *FAST)
    assert done.code == 0, done.err
    warned = [line for line in done.lines if "skipped at load time" in line]
    held_out = json.loads((tmp_path / "run" / "config.json").read_text())["val_classes"]
    assert held_out and all(any(f"{name}/cut.jpg" in line for line in warned) for name in held_out), warned
    epochs = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert epochs[-1]["epoch"] == 1 and epochs[-1]["recall_at_1"] is not None
