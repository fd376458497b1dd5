"""EmbeddingModel, run-directory save / load, device and precision choice, embed_images."""

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from retrieval import models
from retrieval.errors import RetrievalError
from retrieval.models import EmbeddingModel, load_model, save_model

BACKBONE = "resnet10t"


def _config(model, image_size=32):
    return {"image_size": image_size, "data_config": model.data_config(image_size)}


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return EmbeddingModel(BACKBONE, 16).eval()


def test_forward_gives_unit_embeddings_of_requested_dim(model):
    out = model(torch.randn(3, 3, 32, 32))
    assert out.shape == (3, 16)
    assert out.dtype == torch.float32
    assert torch.allclose(out.norm(dim=1), torch.ones(3), atol=1e-5)
    raw = model.forward_unnormalised(torch.randn(3, 3, 32, 32))
    assert not torch.allclose(raw.norm(dim=1), torch.ones(3), atol=1e-2)


def test_data_config_comes_from_timm_pretrained_config(model):
    config = model.data_config(48)
    assert config["input_size"] == [3, 48, 48]
    assert len(config["mean"]) == 3 and len(config["std"]) == 3
    assert 0 < config["crop_pct"] <= 1


def test_save_then_load_gives_identical_embeddings(model, tmp_path):
    save_model(tmp_path, model, _config(model))
    loaded, config = load_model(tmp_path)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    assert config["backbone"] == BACKBONE and config["embedding_dim"] == 16
    assert json.loads((tmp_path / "config.json").read_text())["weights_sha256"]
    assert len(models.model_fingerprint(tmp_path)) == 16


def test_failed_save_leaves_previous_files_intact(model, tmp_path, monkeypatch):
    save_model(tmp_path, model, _config(model))
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    other = EmbeddingModel(BACKBONE, 16)

    def broken_fsync(fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError):
        save_model(tmp_path, other, _config(other))
    monkeypatch.undo()
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert after == before  # no temp files left, nothing half-written
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


def test_unknown_backbone_is_a_clear_error():
    with pytest.raises(RetrievalError, match="unknown backbone 'resnet_does_not_exist'"):
        EmbeddingModel("resnet_does_not_exist", 8)


def test_local_weights_file_loads_into_backbone(tmp_path):
    from safetensors.torch import save_file

    import timm

    source = timm.create_model(BACKBONE, pretrained=False, num_classes=10)
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(tmp_path / "w.safetensors"))
    model = EmbeddingModel(BACKBONE, 8, weights=tmp_path / "w.safetensors")
    for name, tensor in model.backbone.state_dict().items():
        assert torch.equal(tensor, source.state_dict()[name]), name

    with pytest.raises(RetrievalError, match="not found"):
        EmbeddingModel(BACKBONE, 8, weights=tmp_path / "missing.safetensors")
    (tmp_path / "w.pth").write_bytes(b"x")
    with pytest.raises(RetrievalError, match="safetensors"):
        EmbeddingModel(BACKBONE, 8, weights=tmp_path / "w.pth")
    save_file({"conv.weight": torch.zeros(2, 2)}, str(tmp_path / "bad.safetensors"))
    with pytest.raises(RetrievalError, match="do not fit|cannot load"):
        EmbeddingModel(BACKBONE, 8, weights=tmp_path / "bad.safetensors")


def test_device_and_precision_resolution():
    assert models.resolve_device("cpu").type == "cpu"
    assert models.resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(RetrievalError):
        models.resolve_device("tpu")
    cpu = torch.device("cpu")
    assert models.resolve_precision("fp32", cpu) == "fp32"
    assert models.resolve_precision("auto", cpu) in ("fp32", "bf16")
    with pytest.raises(RetrievalError):
        models.resolve_precision("int8", cpu)


def test_bf16_autocast_forward_still_gives_float32_unit_vectors(model):
    with models.autocast(torch.device("cpu"), "bf16"):
        out = model(torch.randn(2, 3, 32, 32))
    assert out.dtype == torch.float32
    assert torch.allclose(out.norm(dim=1), torch.ones(2), atol=1e-4)


def test_embed_images_matches_forward_on_pil_images(model):
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)) for _ in range(5)]

    def transform(image):
        return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1)

    out = models.embed_images(model, images, transform, batch_size=2)
    with torch.no_grad():
        expected = model(torch.stack([transform(i) for i in images])).numpy()
    assert out.shape == (5, 16) and out.dtype == np.float32
    np.testing.assert_allclose(out, expected, atol=1e-6)
