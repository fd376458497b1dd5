"""RunConfig: config.json typed, old files read with one interpretation, nothing lost on a round trip."""

import json

import pytest

from retrieval.errors import RetrievalError
from retrieval.run import DEFAULT_MARGIN, RunConfig, read_config

MINIMAL = {"backbone": "resnet10t", "embedding_dim": 16, "image_size": 32,
           "data_config": {"input_size": [3, 32, 32], "mean": [0.5] * 3, "std": [0.5] * 3}}


def _write(tmp_path, values):
    (tmp_path / "config.json").write_text(json.dumps(values))
    return tmp_path


def test_a_config_from_before_the_modes_reads_as_a_labelled_run_with_validation(tmp_path):
    config = read_config(_write(tmp_path, MINIMAL))
    assert config.mode == "labelled" and config.trained_with_labels and config.has_validation
    assert config.margin == DEFAULT_MARGIN and config.data_dir is None and config.class_names == []


def test_modes_labels_and_validation_answered_from_the_file(tmp_path):
    unlabelled = read_config(_write(tmp_path, {**MINIMAL, "mode": "unlabelled", "labelled": False, "has_validation": False, "margin": 0.5}))
    assert unlabelled.mode == "unlabelled" and not unlabelled.trained_with_labels and not unlabelled.has_validation
    assert unlabelled.margin == 0.5
    # a run saved before "mode" existed but with "labelled": false was an unlabelled run
    assert RunConfig({**MINIMAL, "labelled": False}).mode == "unlabelled"
    pairs = RunConfig({**MINIMAL, "mode": "pairs", "labelled": False})
    assert pairs.mode == "pairs" and not pairs.trained_with_labels


def test_unknown_keys_survive_a_read_and_write(tmp_path):
    values = {**MINIMAL, "n_components": 7, "train_settings": {"lr": 0.01}}
    config = read_config(_write(tmp_path, values))
    assert config["n_components"] == 7 and config.get("missing") is None
    out = tmp_path / "copy"
    out.mkdir()
    config.updated(best_epoch=3).write(out)
    assert json.loads((out / "config.json").read_text()) == {**values, "best_epoch": 3}


@pytest.mark.parametrize("change, message", [
    ({"embedding_dim": "16"}, "embedding_dim"),
    ({"embedding_dim": 0}, "embedding_dim"),
    ({"image_size": True}, "image_size"),
    ({"data_config": []}, "data_config"),
    ({"margin": "wide"}, "margin"),
    ({"backbone": 3}, "backbone"),
])
def test_values_of_the_wrong_type_are_a_one_line_error(tmp_path, change, message):
    with pytest.raises(RetrievalError, match=message):
        read_config(_write(tmp_path, {**MINIMAL, **change}))


def test_not_a_run_directory_missing_keys_and_corrupt_json_are_named(tmp_path):
    with pytest.raises(RetrievalError, match="not found"):
        read_config(tmp_path / "nowhere")
    with pytest.raises(RetrievalError, match="not a run directory"):
        read_config(tmp_path)
    with pytest.raises(RetrievalError, match="missing image_size"):
        read_config(_write(tmp_path, {k: v for k, v in MINIMAL.items() if k != "image_size"}))
    (tmp_path / "config.json").write_text("{")
    with pytest.raises(RetrievalError, match="corrupt JSON"):
        read_config(tmp_path)
    (tmp_path / "config.json").write_text("[1, 2]")
    with pytest.raises(RetrievalError, match="not a model config"):
        read_config(tmp_path)


def test_a_config_that_cannot_be_read_is_a_one_line_error_naming_it(tmp_path, monkeypatch):
    """Permissions or I/O (root reads any file, so the failure is simulated): the CLI and the app's
    page show one line instead of a traceback."""
    from retrieval.run import config as config_module

    run = _write(tmp_path, MINIMAL)

    def denied(path):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(config_module, "read_json", denied)
    with pytest.raises(RetrievalError, match=r"config.json cannot be read \(Permission denied\)"):
        read_config(run)
