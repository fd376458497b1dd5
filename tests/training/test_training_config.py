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
    assert len(shown) == 33  # issue 15 added --faces, --flip-average, --face-jitter, --face-min-size, --face-max-side, --face-recheck; then --groups-per-batch
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
        elif name == "groups_per_batch":
            assert text == f"{config_module.GROUPS_PER_BATCH} with --class-groups" and DEFAULTS[name] is None
            assert _config(class_groups=Path("groups.csv")).resolve().groups_per_batch == 2 and _config().resolve().groups_per_batch is None
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


@pytest.mark.parametrize("values, named", [
    (dict(loss="triplet", miner="semihard", margin=0.0), "--miner semihard keeps only triplets with 0 < d_an − d_ap < ε, none at --margin 0"),
    (dict(margin=0.0), "--miner semihard (the default of --loss triplet) keeps only triplets"),
    (dict(loss="lifted", miner="semihard", margin=0.0), "--miner semihard keeps only triplets"),  # nothing mined: every loss is 0
    (dict(loss="triplet", miner="easy"), "--miner easy keeps only triplets whose triplet loss is 0 (d_an − d_ap ≥ ε)"),
    (dict(loss="triplet", miner="easy", margin=0.0), "--miner easy keeps only triplets whose triplet loss is 0"),
    (dict(loss="infonce", miner="pair-active", margin=0.0), "the infonce loss needs a negative in every tuple"),
])
def test_an_objective_whose_loss_is_0_whatever_the_embeddings_is_refused(values, named):
    with pytest.raises(RetrievalError, match=re.escape(named)):
        _config(**values).resolve().validate()


@pytest.mark.parametrize("values", [
    dict(loss="contrastive", miner="pair-active", margin=0.0),  # its positive pairs still pull
    dict(loss="contrastive", margin=0.0),
    dict(loss="lifted", miner="easy"),  # easy triplets still have a lifted loss
    dict(loss="infonce", miner="easy"),
    dict(loss="triplet", miner="hard", margin=0.0),
    dict(loss="triplet", miner="batch-semihard", margin=0.0),
])
def test_an_objective_that_can_learn_is_accepted(values):
    _config(**values).resolve().validate()


def test_the_refused_objectives_are_those_whose_loss_and_gradient_are_0_on_any_batch():
    """Every loss x miner at margins 0, 0.2 and 2 on random and clustered batches: each objective that
    nothing_learnt refuses has loss and gradient exactly 0 on every batch (the converse is not claimed: easy at
    ε = 2 is 0 on these batches too, but not on every batch, so it is not refused)."""
    import torch

    from retrieval import losses, mining
    from retrieval.training.objective import MINERS, nothing_learnt

    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(6).repeat_interleave(4)
    batches = [torch.randn(24, 8, generator=generator) for _ in range(4)]
    batches += [torch.randn(6, 8, generator=generator).repeat_interleave(4, 0) + 0.3 * torch.randn(24, 8, generator=generator)
                for _ in range(4)]
    for loss_name in LOSSES:
        for miner_name in MINERS:
            for margin in (0.0, 0.2, 2.0):
                if nothing_learnt(loss_name, miner_name, margin) is None:
                    continue
                loss = losses.build_loss(loss_name, margin=margin, temperature=0.1)
                miner = mining.build_miner(miner_name, margin)
                for batch in batches:
                    x = batch.clone().requires_grad_()
                    value = loss(x, labels, miner(x, labels, torch.arange(len(x))))
                    value.backward()
                    assert value.item() == 0 and not x.grad.any(), (loss_name, miner_name, margin)


def test_a_margin_typed_for_an_objective_that_never_uses_it_is_warned_of():
    (line,) = _config(loss="infonce", margin=0.3).resolve().warnings()
    assert line.startswith("--margin 0.3 has no effect on training: the infonce loss has no margin, and without a --miner") and "\n" not in line
    assert "--miner batch-hard compares with it" in _config(loss="npair", miner="batch-hard", margin=0.3).resolve().warnings()[0]
    for used in (dict(loss="nce", miner="semihard", margin=0.3), dict(loss="contrastive", margin=0.3), dict(loss="infonce")):
        assert _config(**used).resolve().warnings() == [], used


def test_a_temperature_typed_for_a_loss_without_one_is_warned_of():
    (line,) = _config(loss="triplet", temperature=0.05).resolve().warnings()
    assert line == "--temperature 0.05 has no effect on training: only the nce and infonce losses have one, not the triplet loss"
    for used in (dict(loss="nce", temperature=0.05), dict(loss="infonce", temperature=0.2), dict(loss="triplet")):
        assert _config(**used).resolve().warnings() == [], used


def test_a_run_recorded_with_a_null_groups_per_batch_resumes_with_the_2_it_drew_its_batches_from(tmp_path):
    """Runs before groups_per_batch was resolved recorded null with --class-groups (their sampler used 2); --resume
    takes them as 2, and accepts --groups-per-batch 2 typed again."""
    groups = tmp_path / "groups.csv"
    groups.write_text("class,group\n")
    settings = _config(class_groups=groups, epochs=2).resolve().train_settings()
    assert settings["groups_per_batch"] == 2
    _write_run_config(tmp_path, {**settings, "groups_per_batch": None})
    assert config_for_resume(_config(resume=True).resolve(), tmp_path).groups_per_batch == 2
    assert config_for_resume(_config(resume=True, groups_per_batch=2, class_groups=groups).resolve(), tmp_path).groups_per_batch == 2

