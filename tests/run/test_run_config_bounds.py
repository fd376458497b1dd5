"""config.json from elsewhere is data: every value that sizes work (image size, resize, normalisation,
embedding size, margin) is bounded, and a value out of bounds is a one-line error naming its key,
through RunConfig and through the real command line."""

import json
import sys

import pytest

from retrieval.errors import RetrievalError
from retrieval.run import RunConfig

DATA_CONFIG = {"input_size": [3, 32, 32], "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
               "interpolation": "bicubic", "crop_pct": 0.875}
VALID = {"backbone": "resnet10t", "embedding_dim": 16, "image_size": 32, "data_config": DATA_CONFIG, "margin": 0.2}


def with_data(**change):
    return {**VALID, "data_config": {**DATA_CONFIG, **change}}


@pytest.mark.parametrize("values, key", [
    (with_data(crop_pct=1e-4), "data_config.crop_pct"),        # a resize to 320000 px
    (with_data(crop_pct=float("nan")), "data_config.crop_pct"),
    (with_data(crop_pct="0.9"), "data_config.crop_pct"),
    (with_data(input_size=[3, 32]), "data_config.input_size"),
    (with_data(input_size=[3, 100000, 100000]), "data_config.input_size"),
    (with_data(input_size=[1, 32, 32]), "data_config.input_size"),
    (with_data(input_size="32"), "data_config.input_size"),
    (with_data(mean=[0.5, 0.5]), "data_config.mean"),
    (with_data(mean=[0.5, "x", 0.5]), "data_config.mean"),
    (with_data(std=[0.2, 0.0, 0.2]), "data_config.std"),
    (with_data(std=[0.2, 1e300, 0.2]), "data_config.std"),
    (with_data(interpolation="sinc-of-doom"), "data_config.interpolation"),
    (with_data(interpolation=3), "data_config.interpolation"),
    (with_data(greyscale="yes"), "data_config.greyscale"),
    ({**VALID, "flip_average": 1}, "flip_average"),
    ({**VALID, "image_size": 10**6}, "image_size"),
    ({**VALID, "image_size": 4}, "image_size"),
    ({**VALID, "embedding_dim": 10**7}, "embedding_dim"),
    ({**VALID, "margin": -0.1}, "margin"),
    ({**VALID, "margin": 1e9}, "margin"),
    ({**VALID, "temperature": 0}, "temperature"),
    ({**VALID, "class_names": "apple"}, "class_names"),
    ({**VALID, "class_names": ["apple", 3]}, "class_names"),
])
def test_out_of_bounds_values_are_a_one_line_error_naming_the_key(values, key):
    with pytest.raises(RetrievalError) as error:
        RunConfig(values, source="x/config.json")
    message = str(error.value)
    assert message.startswith(f"x/config.json: {key} ") and "\n" not in message


def test_values_timm_and_training_write_are_accepted():
    RunConfig(VALID)
    RunConfig(with_data(crop_pct=1.15, interpolation="bilinear", mean=[0, 0, 0], std=[1, 1, 1]))  # timm has crop_pct 1.15
    RunConfig({**VALID, "data_config": {"input_size": [3, 32, 32], "mean": [0.5] * 3, "std": [0.5] * 3}})  # optional keys
    RunConfig({**VALID, "temperature": 0.1, "class_names": ["a", "b"], "image_size": 2048, "embedding_dim": 4096})


def test_a_command_on_a_run_with_an_unbounded_crop_refuses_in_one_line(tmp_path, capsys, monkeypatch):
    """Through the real command line, before any image is resized to 320000 px."""
    from retrieval.cli import main

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text(json.dumps(with_data(crop_pct=1e-4)))
    from PIL import Image

    Image.new("RGB", (8, 8)).save(tmp_path / "q.png")
    monkeypatch.setattr(sys, "argv", ["retrieval", "mining", str(tmp_path / "run")])
    with pytest.raises(SystemExit) as exit:
        main()
    err = capsys.readouterr().err
    assert exit.value.code == 2 and err.count("\n") == 1 and "data_config.crop_pct" in err


def test_the_interpolations_allowed_are_those_the_eval_transform_knows():
    from retrieval.data import transforms
    from retrieval.run.config import INTERPOLATIONS

    assert set(INTERPOLATIONS) == set(transforms._CV2_INTERPOLATION)
