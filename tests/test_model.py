"""EmbeddingModel (timm backbone + head, local weights), device and precision choice."""

from pathlib import Path

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


def test_flip_averaging_is_the_normalised_sum_of_the_image_and_mirror_embeddings(model):
    """f(x) = u / ||u||, u = f1(x) + f1(m(x)), checked image by image against the plain model."""
    torch.manual_seed(1)
    images = torch.randn(3, 3, 32, 32)
    flipping = EmbeddingModel(BACKBONE, 16, flip_average=True).eval()
    flipping.load_state_dict(model.state_dict())
    with torch.no_grad():
        out = flipping(images)
        for i, image in enumerate(images):
            one = model(image[None])[0] + model(image.flip(-1)[None])[0]  # W [c, h, w]: flip(-1) mirrors left-right
            assert torch.allclose(out[i], one / one.norm(), atol=1e-5)
        assert torch.allclose(out, flipping(images.flip(-1)), atol=1e-5)  # a face and its mirror image embed alike
        assert not torch.allclose(model(images), model(images.flip(-1)), atol=1e-3)  # which the plain model does not
        # training's loss sees one embedding an image, the plain one
        assert torch.equal(flipping.forward_unnormalised(images), model.forward_unnormalised(images))
    assert out.norm(dim=1).sub(1).abs().max() < 1e-5 and out.dtype == torch.float32


def test_data_config_comes_from_timm_pretrained_config(model):
    config = model.data_config(48)
    assert config["input_size"] == [3, 48, 48]
    assert len(config["mean"]) == 3 and len(config["std"]) == 3
    assert 0 < config["crop_pct"] <= 1


def test_unknown_backbone_is_a_clear_error():
    with pytest.raises(RetrievalError, match="unknown backbone 'resnet_does_not_exist'"):
        EmbeddingModel("resnet_does_not_exist", 8)
    with pytest.raises(RetrievalError) as error:  # suggestions by spelling, not by a shared substring
        EmbeddingModel("resnet9000", 8)
    assert "(similar: resnet200" in str(error.value) and "cspresnet" not in str(error.value)
    with pytest.raises(RetrievalError, match=r"similar: efficientnet_b0\b"):
        EmbeddingModel("efficientnet-b0", 8)


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


def test_weights_that_do_not_fit_name_the_missing_and_the_unexpected_keys_in_one_line(tmp_path):
    from safetensors.torch import save_file

    import timm

    state = timm.create_model(BACKBONE, pretrained=False, num_classes=0).state_dict()
    state = {k: v.contiguous() for k, v in state.items()}
    missing = sorted(state)[0]
    del state[missing]
    state["extra.weight"] = torch.zeros(3)
    wrong = "conv1.0.weight"
    state[wrong] = torch.zeros(1, 1, 1, 1)
    save_file(state, str(tmp_path / "w.safetensors"))
    with pytest.raises(RetrievalError) as error:
        EmbeddingModel(BACKBONE, 8, weights=tmp_path / "w.safetensors")
    message = str(error.value)
    assert "\n" not in message
    assert f"1 missing (e.g. {missing!r})" in message and "1 unexpected (e.g. 'extra.weight')" in message
    assert f"1 wrong-shaped (e.g. {wrong!r}: [1, 1, 1, 1] in the file" in message


def test_a_weights_file_without_batchnorm_step_counters_loads_as_torch_loads_it(tmp_path):
    """torchvision's files (and others) leave out BatchNorm's ``num_batches_tracked``; torch's strict
    load accepts that, and so does --weights (it refused: "N missing")."""
    from safetensors.torch import save_file

    import timm

    source = timm.create_model(BACKBONE, pretrained=False, num_classes=0)
    state = {k: v.contiguous() for k, v in source.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert len(state) < len(source.state_dict())
    save_file(state, str(tmp_path / "w.safetensors"))
    model = EmbeddingModel(BACKBONE, 8, weights=tmp_path / "w.safetensors")
    for name, tensor in state.items():
        assert torch.equal(model.backbone.state_dict()[name], tensor), name


def test_a_runs_own_model_given_as_weights_is_told_apart_from_a_wrong_backbone(tmp_path):
    from safetensors.torch import save_file

    run_model = EmbeddingModel(BACKBONE, 8)
    save_file({k: v.contiguous() for k, v in run_model.state_dict().items()}, str(tmp_path / "model.safetensors"))
    with pytest.raises(RetrievalError) as error:
        EmbeddingModel(BACKBONE, 8, weights=tmp_path / "model.safetensors")
    assert "a `retrieval train` run's model" in str(error.value) and "--resume" in str(error.value)


def test_the_classifier_in_a_weights_file_is_dropped_and_the_data_config_is_the_weights_model(tmp_path):
    from safetensors.torch import save_file

    import timm
    import timm.data

    name = "tf_efficientnet_lite0"  # its own normalisation (mean = std = 0.5) and bicubic resizing, not ImageNet's defaults
    source = timm.create_model(name, pretrained=False)  # with its 1000-class classifier
    assert any(k.startswith("classifier.") for k in source.state_dict())
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(tmp_path / "w.safetensors"))
    model = EmbeddingModel(name, 8, weights=tmp_path / "w.safetensors")
    assert torch.equal(model.backbone.conv_stem.weight, source.conv_stem.weight)
    config = model.data_config(64)
    expected = timm.data.resolve_model_data_config(source)
    assert config["mean"] == pytest.approx(list(expected["mean"])) and config["std"] == pytest.approx(list(expected["std"]))
    assert config["mean"] == pytest.approx([0.5, 0.5, 0.5]) and config["interpolation"] == "bicubic"
    assert config["input_size"] == [3, 64, 64]


SHARED_WEIGHTS = Path(__file__).resolve().parents[2] / "shared" / "weights" / "tf_efficientnet_lite0.imagenet.safetensors"


@pytest.mark.skipif(not SHARED_WEIGHTS.is_file(), reason="the shared ImageNet weights are not beside this checkout")
def test_the_real_imagenet_weights_load_into_their_backbone():
    model = EmbeddingModel("tf_efficientnet_lite0", 8, weights=SHARED_WEIGHTS)
    assert model.backbone.num_features == 1280
    assert float(model.backbone.bn1.running_var.mean()) != 1.0  # trained statistics, not a fresh layer's


@pytest.mark.parametrize("name, words", [("notes.csv", ["takes a .safetensors file, not a .csv file"]),
                                         ("model.pth", ["pickled checkpoints are not loaded"]),
                                         ("folder", ["is a folder: --weights takes a .safetensors file"]),
                                         ("missing.safetensors", ["weights file not found"])])
def test_a_weights_argument_that_is_no_safetensors_file_says_what_it_is(tmp_path, name, words):
    path = tmp_path / name
    if name == "folder":
        path.mkdir()
    elif name != "missing.safetensors":
        path.write_text("a,b\n")
    with pytest.raises(RetrievalError) as raised:
        EmbeddingModel("resnet10t", 8, weights=path)
    assert all(word in str(raised.value) for word in words), str(raised.value)
    if name == "notes.csv":
        assert "pickled" not in str(raised.value)
