"""Fine-tuning from pretrained weights: the head warm-up (frozen, then unfrozen backbone), BatchNorm
modes, the backbone's learning-rate schedule, the defaults a run takes, resume inside the warm-up,
and the record of where the starting weights came from."""

import hashlib
import json
import math
import signal
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from conftest import TINY
from retrieval.cli import app
from retrieval.model import EmbeddingModel
from retrieval.run import read_metrics
from retrieval.training import DEFAULTS, TrainConfig, train
from retrieval.training.config import FINE_TUNING_DEFAULTS, describe_defaults
from retrieval.training.finetune import FineTuning, backbone_lr_factor, freeze_steps, state_dict_sha256, weights_source
from retrieval.training.resume import config_for_resume
from retrieval.training.setup import cosine_with_warmup


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    """A timm-keyed safetensors file of a randomly initialised resnet10t, classifier included."""
    import timm

    torch.manual_seed(1)
    source = timm.create_model(TINY["backbone"], pretrained=False, num_classes=7)
    path = tmp_path_factory.mktemp("weights") / "resnet10t.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    return path


def _batch_norms(model):
    return [m for m in model.backbone.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]


def _bn_parameter_ids(model):
    return {id(p) for m in _batch_norms(model) for p in m.parameters(recurse=False)}


# -- the schedule ------------------------------------------------------------------------------


def test_the_backbone_is_frozen_in_eval_mode_during_the_head_warm_up_and_learns_after_it():
    model = EmbeddingModel(TINY["backbone"], 8).train()
    schedule = FineTuning(warmup_steps=3, bn_mode="train")
    for step in (0, 2):
        schedule.apply(model, step)
        assert not any(p.requires_grad for p in model.backbone.parameters())
        assert all(p.requires_grad for p in model.head.parameters())
        assert not any(m.training for m in model.backbone.modules())
    schedule.apply(model, 3)
    assert all(p.requires_grad for p in model.parameters())
    assert all(m.training for m in model.backbone.modules())


def test_bn_eval_keeps_running_statistics_and_bn_frozen_also_keeps_gamma_and_beta():
    model = EmbeddingModel(TINY["backbone"], 8).train()
    norms = _bn_parameter_ids(model)
    FineTuning(0, "eval").apply(model, 0)
    assert all(p.requires_grad for p in model.parameters())
    assert not any(m.training for m in _batch_norms(model)) and model.backbone.training
    before = [m.running_mean.clone() for m in _batch_norms(model)]
    model(torch.randn(4, 3, 32, 32))
    assert all(torch.equal(a, m.running_mean) for a, m in zip(before, _batch_norms(model)))

    model.train()
    FineTuning(0, "frozen").apply(model, 0)
    for p in model.backbone.parameters():
        assert p.requires_grad == (id(p) not in norms)
    assert norms and not any(m.training for m in _batch_norms(model))

    model.train()
    FineTuning(0, "train").apply(model, 0)
    assert all(p.requires_grad for p in model.parameters()) and all(m.training for m in _batch_norms(model))


def test_only_the_last_stages_learn_after_the_warm_up_and_the_earlier_ones_keep_their_statistics(caplog):
    model = EmbeddingModel(TINY["backbone"], 8).train()  # resnet10t's stages: stem, layer1, layer2, layer3, layer4
    FineTuning(0, "train", backbone_stages=2).apply(model, 0)
    for name, parameter in model.backbone.named_parameters():
        assert parameter.requires_grad == name.startswith(("layer3.", "layer4.")), name
    for name, module in model.backbone.named_modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            assert module.training == name.startswith(("layer3.", "layer4.")), name
    model.train()
    assert not caplog.records
    FineTuning(0, "train", backbone_stages=9).apply(model, 0)  # more stages than there are: all, said once
    FineTuning(0, "train", backbone_stages=9).apply(model, 1)
    assert all(p.requires_grad for p in model.parameters())
    (warned,) = [r.getMessage() for r in caplog.records if "--backbone-stages" in r.getMessage()]
    assert "--backbone-stages 9" in warned and "has 5 stages" in warned and "the whole backbone learns" in warned


@pytest.mark.parametrize("epochs, steps_per_epoch, expected", [(0, 10, 0), (1, 10, 10), (1.5, 4, 6), (0.01, 10, 1), (0.24, 10, 2)])
def test_warm_up_steps_are_the_epochs_times_steps_rounded_and_at_least_one(epochs, steps_per_epoch, expected):
    assert freeze_steps(epochs, steps_per_epoch) == expected


def test_backbone_lr_is_zero_in_the_warm_up_then_warms_up_and_decays_over_the_steps_left():
    total, frozen = 40, 10
    factor = backbone_lr_factor(total, frozen, cosine_with_warmup)
    left = total - frozen
    warmup = max(1, left // 20)
    for step in range(total):
        if step < frozen:
            expected = 0.0
        elif step - frozen < warmup:
            expected = (step - frozen + 1) / warmup
        else:
            expected = 0.5 * (1 + math.cos(math.pi * (step - frozen - warmup) / (left - warmup)))
        assert factor(step) == pytest.approx(expected, abs=1e-12), step


# -- the defaults --------------------------------------------------------------------------------


def _config(**values):
    return TrainConfig(data_dir=Path("data"), out=Path("run"), **values)


def test_pretrained_runs_take_the_fine_tuning_defaults_and_runs_from_scratch_the_plain_ones():
    scratch = _config().resolve()
    for name in FINE_TUNING_DEFAULTS:
        assert getattr(scratch, name) == DEFAULTS[name], name
    for pretrained in (_config(pretrained=True), _config(weights=Path("w.safetensors"))):
        resolved = pretrained.resolve()
        for name, value in FINE_TUNING_DEFAULTS.items():
            assert getattr(resolved, name) == value, name
    assert scratch.freeze_backbone_epochs == 0 and scratch.backbone_lr_scale == 1.0 and scratch.bn_mode == "train"


def test_runs_from_pretrained_weights_train_at_the_backbones_own_image_size_unless_one_is_typed(tmp_path):
    from retrieval.training.config import pretrained_image_size

    weights = tmp_path / "w.safetensors"
    assert pretrained_image_size("tf_efficientnet_lite0") == 224 and pretrained_image_size("vit_base_patch16_384") == 384
    assert pretrained_image_size("no_such_backbone") is None
    for backbone, expected in (("tf_efficientnet_lite0", 224), ("resnet10t", pretrained_image_size("resnet10t")), (None, 224)):
        config = TrainConfig(data_dir=tmp_path, out=tmp_path / "run", backbone=backbone, weights=weights).resolve()
        assert config.image_size == expected and "image_size" not in config.given
        assert f"image_size {expected}," in describe_defaults(config)
    assert TrainConfig(data_dir=tmp_path, out=tmp_path / "run", pretrained=True, image_size=96).resolve().image_size == 96
    assert TrainConfig(data_dir=tmp_path, out=tmp_path / "run", backbone="tf_efficientnet_lite0").resolve().image_size == 128
    unknown = TrainConfig(data_dir=tmp_path, out=tmp_path / "run", backbone="no_such_backbone", weights=weights).resolve()
    assert unknown.image_size == 128  # validate() names the unknown backbone


def test_typed_flags_win_over_the_fine_tuning_defaults():
    typed = _config(pretrained=True, freeze_backbone_epochs=0.0, backbone_lr_scale=1.0, bn_mode="train").resolve()
    assert (typed.freeze_backbone_epochs, typed.backbone_lr_scale, typed.bn_mode) == (0.0, 1.0, "train")
    assert {"freeze_backbone_epochs", "backbone_lr_scale", "bn_mode"} <= typed.given
    assert _config(bn_mode="frozen").resolve().bn_mode == "frozen"  # from scratch too


def test_unlabelled_pretrained_runs_keep_the_unlabelled_loss():
    assert _config(pretrained=True, unlabelled=True).resolve().loss == "infonce"


def test_the_defaults_line_says_which_set_was_taken_and_marks_typed_flags():
    line = describe_defaults(_config(weights=Path("w.safetensors"), lr=0.01).resolve())
    assert line.startswith("fine-tuning defaults (starting from --weights w.safetensors)")
    assert "lr 0.01 (typed)" in line and f"bn_mode {FINE_TUNING_DEFAULTS['bn_mode']}," in line
    assert describe_defaults(_config().resolve()).startswith("from-scratch defaults")
    assert describe_defaults(_config(resume=True).resolve()).startswith("resuming")


@pytest.mark.parametrize("flag, value, message", [("--bn-mode", "sometimes", "--bn-mode must be one of train, eval, frozen"),
                                                  ("--freeze-backbone-epochs", "-1", "--freeze-backbone-epochs must be 0 or more"),
                                                  ("--backbone-lr-scale", "-0.5", "--backbone-lr-scale must be 0 or more")])
def test_bad_fine_tuning_flags_are_one_line_errors(sample, tmp_path, flag, value, message):
    out = CliRunner().invoke(app, ["train", str(sample / "train"), "--out", str(tmp_path / "run"), flag, value, "--quiet"])
    assert out.exit_code != 0 and message in str(out.exception)  # main() prints a RetrievalError as one line
    assert "defaults" not in out.output  # checked before the defaults line


def test_a_run_saved_before_the_fine_tuning_settings_resumes_as_it_was_trained(tmp_path):
    saved = _config(weights=Path("w.safetensors"), epochs=2).resolve().train_settings()
    for key in ("freeze_backbone_epochs", "backbone_lr_scale", "bn_mode", "backbone_stages"):
        del saved[key]
    data_config = {"input_size": [3, 32, 32], "mean": [0.5] * 3, "std": [0.5] * 3, "interpolation": "bilinear", "crop_pct": 0.875}
    config = {"backbone": "resnet10t", "embedding_dim": 16, "image_size": 32, "data_config": data_config, "train_settings": saved}
    (tmp_path / "config.json").write_text(json.dumps(config))
    resumed = config_for_resume(_config(epochs=3, resume=True).resolve(), tmp_path)
    assert (resumed.freeze_backbone_epochs, resumed.backbone_lr_scale, resumed.bn_mode, resumed.backbone_stages) == (0.0, 0.1, "train", 0)
    saved["weights"] = None
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert config_for_resume(_config(epochs=3, resume=True).resolve(), tmp_path).backbone_lr_scale == 1.0


# -- training runs ------------------------------------------------------------------------------


def _fine_tune(sample, out, weights_file, **values):
    settings = {**TINY, "epochs": 2, "freeze_backbone_epochs": 1.0, "bn_mode": "train", "backbone_stages": 0, **values}
    return TrainConfig(data_dir=sample / "train", out=out, weights=weights_file, **settings)


@pytest.mark.slow
def test_a_head_warm_up_epoch_leaves_the_pretrained_backbone_untouched_and_the_next_epoch_trains_it(sample, tmp_path, weights_file):
    start = load_file(str(weights_file))

    def backbone_of(run, name):
        return {k[len("backbone."):]: v for k, v in load_file(str(run / name)).items() if k.startswith("backbone.")}

    def check_after_epoch_1(row):
        if row["epoch"] == 1:
            after_1.update(backbone_of(tmp_path / "run", "model_last.safetensors"))

    after_1 = {}
    train(_fine_tune(sample, tmp_path / "run", weights_file), progress=False, on_epoch=check_after_epoch_1)
    for name, tensor in after_1.items():  # weights and BatchNorm's running statistics alike
        assert torch.equal(tensor, start[name]), name
    after_2 = backbone_of(tmp_path / "run", "model_last.safetensors")
    assert any(not torch.equal(after_2[k], start[k]) for k in after_2 if k.endswith(".weight"))
    rows = read_metrics(tmp_path / "run")
    assert rows[2]["loss"] is not None


@pytest.mark.slow
def test_resume_inside_the_head_warm_up_equals_an_uninterrupted_run(sample, tmp_path, weights_file):
    values = dict(epochs=2, freeze_backbone_epochs=1.5, bn_mode="eval")  # 3 steps an epoch: frozen until step 4 of 6
    train(_fine_tune(sample, tmp_path / "straight", weights_file, **values), progress=False)

    def press_ctrl_c_after_epoch_1(row):
        if row["epoch"] == 1:
            signal.raise_signal(signal.SIGINT)

    first = train(_fine_tune(sample, tmp_path / "resumed", weights_file, **values), progress=False, on_epoch=press_ctrl_c_after_epoch_1)
    assert first.interrupted and [r["epoch"] for r in read_metrics(tmp_path / "resumed")] == [0, 1]
    assert json.loads((tmp_path / "resumed" / "config.json").read_text())["steps_per_epoch"] == 3  # resumed at step 3 < 4
    moved = weights_file.with_name("moved.safetensors")  # the checkpoint holds the weights: the file is not needed to resume
    weights_file.rename(moved)
    try:
        train(TrainConfig(data_dir=sample / "train", out=tmp_path / "resumed", epochs=2, resume=True, num_workers=0), progress=False)
    finally:
        moved.rename(weights_file)
    a = load_file(str(tmp_path / "straight" / "model_last.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "model_last.safetensors"))
    for name in a:
        assert torch.allclose(a[name], b[name], atol=1e-6, rtol=0), name
    straight, resumed = read_metrics(tmp_path / "straight"), read_metrics(tmp_path / "resumed")
    assert [r["loss"] for r in resumed[1:]] == pytest.approx([r["loss"] for r in straight[1:]], abs=1e-6)
    assert [r["lr"] for r in resumed[1:]] == pytest.approx([r["lr"] for r in straight[1:]], abs=1e-12)
    source = json.loads((tmp_path / "resumed" / "config.json").read_text())["weights_source"]
    assert source["kind"] == "file" and source["sha256"] == hashlib.sha256(weights_file.read_bytes()).hexdigest()


def test_the_run_records_where_its_weights_came_from(sample, tmp_path, weights_file):
    train(_fine_tune(sample, tmp_path / "file", weights_file, epochs=0), progress=False)
    source = json.loads((tmp_path / "file" / "config.json").read_text())["weights_source"]
    assert source == {"kind": "file", "name": str(weights_file.resolve()),
                      "sha256": hashlib.sha256(weights_file.read_bytes()).hexdigest()}
    train(TrainConfig(data_dir=sample / "train", out=tmp_path / "scratch", epochs=0, **TINY), progress=False)
    config = json.loads((tmp_path / "scratch" / "config.json").read_text())
    assert config["weights_source"] == {"kind": "random", "name": None, "sha256": None}


def test_hub_weights_are_recorded_by_name_and_by_the_digest_of_their_tensors():
    model = EmbeddingModel(TINY["backbone"], 8)
    source = weights_source(pretrained=True, weights=None, backbone=model.backbone)
    assert source["kind"] == "hub" and TINY["backbone"] in source["name"]
    assert source["sha256"] == state_dict_sha256(model.backbone)
    with torch.no_grad():
        next(model.backbone.parameters()).add_(1.0)
    assert state_dict_sha256(model.backbone) != source["sha256"]


def test_train_says_first_which_defaults_it_took(sample, tmp_path, weights_file):
    out = CliRunner().invoke(app, ["train", str(sample / "train"), "--out", str(tmp_path / "run"), "--weights", str(weights_file),
                                   "--backbone", TINY["backbone"], "--epochs", "0", "--image-size", "32", "--embedding-dim", "16",
                                   "-P", "4", "-K", "3", "--workers", "0", "--quiet"])
    assert out.exit_code == 0, out.output
    assert out.output.splitlines()[0].startswith("fine-tuning defaults (starting from --weights")


def _ddp_worker(rank: int, values: dict) -> None:
    """One of two processes of a fine-tuning run (module level: spawned processes import it by name)."""
    train(TrainConfig(**{k: Path(v) if k in ("data_dir", "out", "weights") else v for k, v in values.items()}), progress=False)


@pytest.mark.slow
def test_two_processes_fine_tune_through_the_warm_up_like_one_process(sample, tmp_path, weights_file):
    # DDP takes the parameters that learn when it is built: the wrapper is rebuilt when the
    # backbone unfreezes. BatchNorm in eval mode makes the step independent of how the batch is split.
    from distributed_workers import run_processes

    values = dict(TINY, data_dir=str(sample / "train"), out=str(tmp_path / "ddp"), weights=str(weights_file), epochs=2,
                  freeze_backbone_epochs=0.5, bn_mode="eval", backbone_stages=0, loss="infonce", device="cpu")
    assert run_processes(_ddp_worker, values, timeout=240) == [0, 0]
    train(_fine_tune(sample, tmp_path / "one", weights_file, epochs=2, freeze_backbone_epochs=0.5, bn_mode="eval",
                     loss="infonce", device="cpu"), progress=False)
    a = load_file(str(tmp_path / "ddp" / "model_last.safetensors"))
    b = load_file(str(tmp_path / "one" / "model_last.safetensors"))
    for name in b:  # float32 sums in another order: see tests/test_distributed.py for the tolerance
        difference = (a[name].double() - b[name].double()).norm()
        assert difference <= 1e-4 * b[name].double().norm() + 1e-5, name
    assert not torch.equal(a["backbone.conv1.0.weight"], load_file(str(weights_file))["conv1.0.weight"])  # it learnt after the warm-up


@pytest.mark.slow
def test_the_untouched_pretrained_model_competes_for_the_best_epoch(sample, tmp_path, weights_file):
    """Epoch 0 from pretrained weights is a candidate: an lr that wrecks the model leaves it as model.safetensors
    (with its τ); a run from random weights never keeps its random start as the best."""
    wrecked = train(_fine_tune(sample, tmp_path / "wrecked", weights_file, lr=50.0, freeze_backbone_epochs=0.0, epochs=2),
                    progress=False)
    rows = read_metrics(tmp_path / "wrecked")
    assert all(r["map_at_r"] < rows[0]["map_at_r"] for r in rows[1:]), "the lr wrecks the model on validation"
    config = json.loads((tmp_path / "wrecked" / "config.json").read_text())
    assert wrecked.best_epoch == 0 and config["best_epoch"] == 0 and "verification" in config
    best = load_file(str(tmp_path / "wrecked" / "model.safetensors"))
    start = load_file(str(weights_file))
    for name, tensor in best.items():  # the backbone as loaded (the classifier dropped)
        if name.startswith("backbone."):
            assert torch.equal(tensor, start[name[len("backbone."):]]), name
    last = load_file(str(tmp_path / "wrecked" / "model_last.safetensors"))
    assert any(not torch.equal(last[k], best[k]) for k in best)

    scratch = train(TrainConfig(data_dir=sample / "train", out=tmp_path / "scratch", epochs=1, lr=50.0, **TINY),
                    progress=False)
    assert scratch.best_epoch == 1


def test_a_head_warm_up_as_long_as_the_run_is_warned_of(sample, tmp_path, weights_file, caplog):
    import logging

    def warnings_of(epochs, **changes):
        caplog.clear()
        config = _fine_tune(sample, tmp_path / f"run{epochs}{len(changes)}", weights_file, epochs=epochs, **changes)
        with caplog.at_level(logging.WARNING, logger="retrieval"):
            train(config, progress=False)
        return [r.getMessage() for r in caplog.records if "stays frozen" in r.getMessage()]

    warned = warnings_of(1)
    assert len(warned) == 1 and warned[0].startswith("--freeze-backbone-epochs 1 covers all 1 epoch(s)"), warned
    assert warnings_of(1, freeze_backbone_epochs=0.5) == []
