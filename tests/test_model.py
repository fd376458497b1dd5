"""EmbeddingModel (timm backbone + head, local weights), device and precision choice."""

import numpy as np
import pytest
import torch

from retrieval import model as models
from retrieval.errors import RetrievalError
from retrieval.model import EmbeddingModel

BACKBONE = "resnet10t"


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
