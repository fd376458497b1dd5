"""The run's model on disk: save / load through safetensors, atomic writes, the weights check."""

import json
import os

import pytest
import torch

from retrieval import run
from retrieval.errors import RetrievalError
from retrieval.model import EmbeddingModel
from retrieval.run import load_model, save_model

BACKBONE = "resnet10t"


def _config(model, image_size=32):
    return {"image_size": image_size, "data_config": model.data_config(image_size)}


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return EmbeddingModel(BACKBONE, 16).eval()


def test_save_then_load_gives_identical_embeddings(model, tmp_path):
    save_model(tmp_path, model, _config(model))
    loaded, config = load_model(tmp_path)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    assert config["backbone"] == BACKBONE and config["embedding_dim"] == 16
    assert json.loads((tmp_path / "config.json").read_text())["weights_sha256"]
    assert len(run.model_fingerprint(tmp_path)) == 16


def test_flip_averaging_is_saved_with_the_model_and_a_run_from_before_the_key_loads_without_it(model, tmp_path):
    flipping = EmbeddingModel(BACKBONE, 16, flip_average=True).eval()
    flipping.load_state_dict(model.state_dict())
    save_model(tmp_path / "faces", flipping, _config(flipping))
    loaded, config = load_model(tmp_path / "faces")
    assert loaded.flip_average and config.flip_average
    assert json.loads((tmp_path / "faces" / "config.json").read_text())["flip_average"] is True
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), flipping(x))
    save_model(tmp_path / "old", model, _config(model))
    path = tmp_path / "old" / "config.json"
    values = json.loads(path.read_text())
    del values["flip_average"]  # as every run saved before the key was written
    path.write_bytes(json.dumps(values).encode())  # config.json is a link into the model's unit: write through it
    loaded, config = load_model(tmp_path / "old")
    assert not loaded.flip_average and not config.flip_average
    values["flip_average"] = "yes"
    path.write_bytes(json.dumps(values).encode())
    with pytest.raises(RetrievalError, match="flip_average.*true or false"):
        load_model(tmp_path / "old")


def _snapshot(folder):
    """Every entry under ``folder``: a link's target, a file's bytes (temporaries and all)."""
    return {str(p.relative_to(folder)): os.readlink(p) if p.is_symlink() else p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_symlink() or p.is_file()}


def test_failed_save_leaves_previous_files_intact(model, tmp_path, monkeypatch):
    save_model(tmp_path, model, _config(model))
    before = _snapshot(tmp_path)
    other = EmbeddingModel(BACKBONE, 16)

    def broken_fsync(fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError):
        save_model(tmp_path, other, _config(other))
    monkeypatch.undo()
    assert _snapshot(tmp_path) == before  # no temp files left, nothing half-written
    load_model(tmp_path)


def test_load_reports_missing_run_dir_config_and_weights(model, tmp_path):
    with pytest.raises(RetrievalError, match="not found"):
        load_model(tmp_path / "nope")
    with pytest.raises(RetrievalError, match="not a run directory"):
        load_model(tmp_path)
    save_model(tmp_path, model, _config(model))
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(RetrievalError, match="no model.safetensors"):
        load_model(tmp_path)


def test_load_reports_corrupt_and_mismatched_files(model, tmp_path):
    save_model(tmp_path, model, _config(model))
    (tmp_path / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(RetrievalError, match="corrupt weights"):
        load_model(tmp_path)

    save_model(tmp_path, model, _config(model))
    config = json.loads((tmp_path / "config.json").read_text())
    config["embedding_dim"] = 32
    config.pop("weights_sha256")
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(RetrievalError, match="do not fit"):
        load_model(tmp_path)

    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(RetrievalError, match="corrupt JSON"):
        load_model(tmp_path)


def test_weights_from_another_save_are_detected(model, tmp_path):
    save_model(tmp_path / "a", model, _config(model))
    save_model(tmp_path / "b", EmbeddingModel(BACKBONE, 16), _config(model))
    (tmp_path / "a" / "model.safetensors").write_bytes((tmp_path / "b" / "model.safetensors").read_bytes())
    with pytest.raises(RetrievalError, match="do not match"):
        load_model(tmp_path / "a")


def test_the_same_weights_always_give_the_same_file_and_hash(model, tmp_path):
    # safetensors orders a metadata map by hash, differently between processes: one key keeps it stable
    import subprocess
    import sys

    save_model(tmp_path / "a", model, _config(model))
    torch.save(model.state_dict(), tmp_path / "state.pt")
    code = ("import sys, torch; from retrieval.model import EmbeddingModel; from retrieval.run import save_model; "
            "m = EmbeddingModel('resnet10t', 16); m.load_state_dict(torch.load(sys.argv[1])); "
            "save_model(sys.argv[2], m, {'image_size': 32, 'data_config': m.data_config(32)})")
    for i in range(3):
        subprocess.run([sys.executable, "-c", code, str(tmp_path / "state.pt"), str(tmp_path / f"b{i}")], check=True)
        assert (tmp_path / f"b{i}" / "model.safetensors").read_bytes() == (tmp_path / "a" / "model.safetensors").read_bytes()
    assert json.loads((tmp_path / "b0" / "config.json").read_text())["weights_sha256"] == run.read_config(tmp_path / "a").weights_sha256
