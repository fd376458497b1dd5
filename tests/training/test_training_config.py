"""TrainConfig's resolve step: one place for every default, defaults that depend on other flags, the
record of what the user gave, the settings config.json keeps, and what --resume takes from a call."""

import dataclasses
import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from retrieval.cli import app
from retrieval.errors import RetrievalError
from retrieval.training import DEFAULTS, LOSSES, NATURAL_MINER, TrainConfig, TrainResult
from retrieval.training import config as config_module
from retrieval.training.resume import PER_CALL, config_for_resume

#: the keys of config.json's train_settings, as runs have always written them
TRAIN_SETTINGS_KEYS = {
    "augment", "backbone", "batch_size", "cache_mb", "channels_last", "class_groups", "classes_per_batch", "command",
    "data_dir", "device", "dist_timeout", "embedding_dim", "epochs", "groups_per_batch", "hardest_per_epoch",
    "image_size", "images_per_class", "loss", "lr", "margin", "miner", "negatives", "never_negative", "num_workers",
    "out", "pair_groups", "pair_negatives", "pairs", "precision", "pretrained", "seed", "sync_bn", "temperature",
    "target_far", "unlabelled", "val_fraction", "weight_decay", "weights",
    "freeze_backbone_epochs", "backbone_lr_scale", "bn_mode", "backbone_stages",  # issue 18: new keys; runs without them still resume
    "faces",  # issue 15: runs without it resume as runs on whole images (the default False)
    "flip_average",  # issue 15: runs without it resume without flip averaging (settings_before_they_existed)
    "face_jitter",  # issue 15: face runs without it resume with a flip only (settings_before_they_existed)
    "face_min_size", "face_max_side", "face_recheck",  # issue 15: face runs without them resume with the detector they recorded
}


def _config(**values):
    return TrainConfig(data_dir=Path("data"), out=Path("run"), **values)


def _write_run_config(run_dir: Path, train_settings: dict) -> None:
    """A minimal config.json of a run in ``run_dir`` with these ``train_settings`` (for --resume)."""
    (run_dir / "config.json").write_text(json.dumps({
        "backbone": "resnet10t", "embedding_dim": 16, "image_size": 32,
        "data_config": {"input_size": [3, 32, 32], "mean": [0.5] * 3, "std": [0.5] * 3},
        "train_settings": train_settings,
    }))


def test_a_setting_not_given_takes_its_default_and_a_typed_one_wins():
    config = _config(margin=0.3, epochs=DEFAULTS["epochs"]).resolve()
    assert config.margin == 0.3 and config.temperature == DEFAULTS["temperature"] and config.lr == DEFAULTS["lr"]
    # a flag typed with the default's value is still a typed flag
    assert {"margin", "epochs"} <= config.given and not {"temperature", "lr"} & config.given
    assert config.num_workers is None  # no default: chosen for the machine when loading


def test_every_setting_is_none_until_resolved_and_resolving_twice_changes_nothing():
    raw = _config()
    assert raw.margin is None and raw.loss is None and not raw.is_resolved
    resolved = raw.resolve()
    assert resolved.is_resolved and resolved.resolve() is resolved
    assert resolved.given == frozenset({"data_dir", "out"})
    with pytest.raises(ValueError, match="resolve"):
        raw.validate()


def test_the_loss_defaults_to_infonce_under_unlabelled_and_to_triplet_otherwise():
    assert _config().resolve().loss == "triplet"
    assert _config(unlabelled=True).resolve().loss == "infonce"
    assert _config(unlabelled=True, loss="triplet").resolve().loss == "triplet"


@pytest.mark.parametrize("loss", LOSSES)
def test_the_miner_defaults_to_the_natural_miner_of_the_loss(loss):
    config = _config(loss=loss).resolve()
    assert config.miner == NATURAL_MINER[loss] and "miner" not in config.given
    assert config.train_settings()["miner"] is None  # config.json: null = the loss's natural miner, as before
    typed = _config(loss=loss, miner="all").resolve()
    assert typed.miner == "all" and typed.train_settings()["miner"] == "all"


def test_fine_tuning_defaults_apply_only_from_pretrained_weights_and_lose_to_typed_flags(monkeypatch):
    monkeypatch.setattr(config_module, "fine_tuning_defaults", lambda: {"lr": 1e-4})
    assert _config(weights=Path("backbone.safetensors")).resolve().lr == 1e-4
    assert _config(pretrained=True).resolve().lr == 1e-4
    assert _config(pretrained=True, lr=0.01).resolve().lr == 0.01
    assert _config().resolve().lr == DEFAULTS["lr"]


def test_a_pretrained_backbone_learns_at_a_tenth_of_the_lr():
    assert _config(pretrained=True).resolve().backbone_lr_scale == 0.1
    assert _config().resolve().backbone_lr_scale == 1.0


def test_flip_averaging_defaults_to_on_for_face_runs_only_and_a_typed_flag_wins():
    assert _config(faces=True).resolve().flip_average is True
    assert _config().resolve().flip_average is False
    assert _config(faces=True, flip_average=False).resolve().flip_average is False
    assert _config(flip_average=True).resolve().flip_average is True
    assert "flip_average" not in _config(faces=True).resolve().given


def test_a_face_run_saved_before_flip_averaging_resumes_without_it(tmp_path):
    saved = _config(faces=True, epochs=2).resolve().train_settings()
    del saved["flip_average"]
    _write_run_config(tmp_path, saved)
    resumed = config_for_resume(_config(epochs=3, resume=True).resolve(), tmp_path)
    assert resumed.faces is True and resumed.flip_average is False


def test_resume_refuses_another_face_jitter_by_the_run_s_value_not_for_a_missing_faces_flag(tmp_path):
    saved = _config(faces=True, epochs=2).resolve().train_settings()
    _write_run_config(tmp_path, saved)
    call = _config(epochs=3, resume=True, face_jitter=0.5).resolve()
    call.validate()  # the call names no source: the run's --faces decides, not this call's missing flag
    with pytest.raises(RetrievalError, match=r"--face-jitter 0.5 \(the run has 0.25\)"):
        config_for_resume(call, tmp_path)
    same = config_for_resume(_config(epochs=3, resume=True, face_jitter=0.25).resolve(), tmp_path)
    same.validate()
    assert same.faces is True and same.face_jitter == 0.25
    whole = _config(epochs=2).resolve().train_settings()
    _write_run_config(tmp_path, whole)
    resumed = config_for_resume(_config(epochs=3, resume=True).resolve(), tmp_path)
    with pytest.raises(RetrievalError, match="needs --faces"):  # the resumed config is checked in full
        dataclasses.replace(resumed, face_jitter=0.5).validate()


def test_a_face_run_saved_before_the_jitter_resumes_with_a_flip_only_and_the_flag_needs_faces(tmp_path):
    saved = _config(faces=True, epochs=2).resolve().train_settings()
    from retrieval.data.transforms import FACE_JITTER

    assert saved["face_jitter"] == FACE_JITTER > 0 and _config().resolve().face_jitter == DEFAULTS["face_jitter"] == 0.0
    del saved["face_jitter"]
    _write_run_config(tmp_path, saved)
    resumed = config_for_resume(_config(epochs=3, resume=True).resolve(), tmp_path)
    assert resumed.faces is True and resumed.face_jitter == 0.0
    resumed.validate()
    stronger = _config(faces=True, epochs=2, augment=2.5).resolve().train_settings()
    del stronger["face_jitter"]  # then: the full jitter at strength 2.5 - 1 = 1.5, now j = face_jitter · 2.5
    _write_run_config(tmp_path, stronger)
    resumed = config_for_resume(_config(epochs=3, resume=True).resolve(), tmp_path)
    assert resumed.face_jitter * resumed.augment == pytest.approx(1.5)
    resumed.validate()
    whole = _config(epochs=2).resolve().train_settings()
    del whole["face_jitter"]  # a run on whole images from before the key resumes and validates as it was
    _write_run_config(tmp_path, whole)
    resumed = config_for_resume(_config(epochs=3, resume=True).resolve(), tmp_path)
    resumed.validate()
    with pytest.raises(RetrievalError, match="--face-jitter .* needs --faces"):
        _config(face_jitter=0.5).resolve().validate()
    with pytest.raises(RetrievalError, match="--face-jitter .* needs --faces"):  # even at the face runs' default value
        _config(face_jitter=FACE_JITTER).resolve().validate()
    with pytest.raises(RetrievalError, match="--face-jitter must be from 0 to 1, got 1.5"):
        _config(faces=True, face_jitter=1.5).resolve().validate()
    _config(faces=True, face_jitter=0.0).resolve().validate()


def test_train_settings_keep_the_keys_config_json_always_had():
    settings = _config(unlabelled=True).resolve().train_settings()
    assert set(settings) == TRAIN_SETTINGS_KEYS
    assert settings["loss"] == "infonce" and settings["data_dir"] == str(Path("data").resolve()) and settings["dist_timeout"] == 300.0


def test_the_command_line_passes_only_typed_flags(monkeypatch, tmp_path):
    import retrieval.training

    seen = []

    def fake_train(config, **_):
        seen.append(config)
        return TrainResult(Path(config.out), [{"epoch": 0}])

    monkeypatch.setattr(retrieval.training, "train", fake_train)
    out = CliRunner().invoke(app, ["train", str(tmp_path), "--out", str(tmp_path / "run"), "--margin", "0.2", "-P", "8",
                                   "--unlabelled", "--quiet"])
    assert out.exit_code == 0, out.output
    config = seen[0].resolve()
    assert config.given == {"data_dir", "out", "margin", "classes_per_batch", "unlabelled"}
    assert config.loss == "infonce" and config.miner == "none" and config.pretrained is False and config.epochs == 10


def test_help_shows_the_defaults_that_resolve_fills():
    import typer

    command = typer.main.get_command(app).commands["train"]
    names = {"hardest": "hardest_per_epoch", "workers": "num_workers"}
    shown = {}
    for param in command.params:
        found = re.search(r"\\\[default: ([^\]]+)\]", getattr(param, "help", None) or "")
        if found:
            shown[names.get(param.name, param.name)] = found.group(1)
    assert len(shown) == 32  # issue 15 added --faces, --flip-average, --face-jitter, --face-min-size, --face-max-side, --face-recheck
    for name, text in shown.items():
        if name == "loss":
            assert text == "triplet; infonce with --unlabelled or from --pretrained / --weights"
            assert config_module.FINE_TUNING_DEFAULTS["loss"] == "infonce"
        elif name == "image_size":
            assert text.startswith(f"{DEFAULTS['image_size']}; from --pretrained / --weights the size the backbone was pretrained at")
        elif name == "miner":
            assert text == "semihard for triplet, none otherwise"
        elif name == "face_jitter":
            assert text == "0.25 with --faces" and _config(faces=True).resolve().face_jitter == 0.25 and DEFAULTS[name] == 0.0
        elif name in ("face_min_size", "face_max_side", "face_recheck"):
            value = getattr(_config(faces=True).resolve(), name)
            assert text == f"{value} with --faces" and DEFAULTS[name] is None
        elif name == "flip_average":
            assert text == "on with --faces, else off"
            assert DEFAULTS[name] is False and _config(faces=True).resolve().flip_average is True
        elif name in config_module.FINE_TUNING_DEFAULTS:
            assert text == f"{DEFAULTS[name]}; {config_module.FINE_TUNING_DEFAULTS[name]} from --pretrained / --weights", name
        else:
            assert text == str(DEFAULTS[name]), name


def test_resume_takes_the_saved_settings_and_only_the_per_call_ones_from_this_call(tmp_path):
    saved = _config(lr=0.01, miner="all", epochs=2).resolve()
    _write_run_config(tmp_path, saved.train_settings())
    call = _config(lr=0.01, epochs=5, resume=True).resolve()  # the run's own --lr may be typed again
    resumed = config_for_resume(call, tmp_path)
    assert resumed.lr == 0.01 and resumed.epochs == 5 and resumed.resume is True
    assert resumed.miner == "all" and resumed.train_settings()["miner"] == "all"
    with pytest.raises(RetrievalError, match=r"--lr 0.5 \(the run has 0.01\)"):  # another one is refused, not ignored
        config_for_resume(_config(lr=0.5, epochs=5, resume=True).resolve(), tmp_path)
    assert set(PER_CALL) == {"epochs", "device", "num_workers", "cache_mb", "command", "dist_timeout"}


def test_resume_without_epochs_keeps_the_runs_own_number_of_epochs(tmp_path):
    """A bare --resume (the interrupted run's own advice) finishes the run as planned: its epochs and cosine
    schedule, not the default 10."""
    _write_run_config(tmp_path, _config(epochs=3).resolve().train_settings())
    resumed = config_for_resume(_config(resume=True).resolve(), tmp_path)
    assert resumed.epochs == 3 and resumed.train_settings()["epochs"] == 3
    assert config_for_resume(_config(epochs=12, resume=True).resolve(), tmp_path).epochs == 12
