"""Training's verification: EER / TAR at FAR each epoch on the validation classes, the best epoch's τ
in config.json, runs without validation classes, and which τ wins over `retrieval calibrate`."""

import json
import logging
import shutil
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import TINY
from retrieval.cli import app
from retrieval.data import build_transforms, scan_folder
from retrieval.embed import embed_images
from retrieval.errors import RetrievalError
from retrieval.evaluate import calibrate_run
from retrieval.run import load_model, read_config, read_metrics
from retrieval.training import TrainConfig, train
from retrieval.training.outputs import best_epoch_verification
from retrieval.training.validation import Validation
from retrieval.verification import PairDistances, equal_error_rate, summarise


@pytest.fixture(scope="module")
def trained(sample, tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "run"
    train(TrainConfig(data_dir=sample / "train", out=run, epochs=2, target_far=0.1, **TINY), progress=False)
    return run


def brute_pairs(run, data_dir, classes):
    """Every validation pair's distance with the run's saved (best) model, by a loop over pairs."""
    model, config = load_model(run)
    folder = scan_folder(data_dir, labelled=True)
    keep = [i for i, label in enumerate(folder.labels) if folder.class_names[label] in classes]
    x = embed_images(model, [folder.paths[i] for i in keep], build_transforms(config.data_config, train=False), precision="fp32")
    y = [folder.labels[i] for i in keep]
    positive, negative = [], []
    for i, j in combinations(range(len(y)), 2):
        (positive if y[i] == y[j] else negative).append(float(np.linalg.norm(x[i] - x[j])))
    return positive, negative


def test_each_epoch_reports_eer_and_tar_at_far_on_every_validation_pair(trained):
    rows = read_metrics(trained)
    config = read_config(trained)
    n = 6 * len(config["val_classes"])  # the sample has 6 images a class
    n_positive = len(config["val_classes"]) * 15
    for row in rows:
        assert row["n_positive_pairs"] == n_positive and row["n_negative_pairs"] == n * (n - 1) // 2 - n_positive
        assert 0 <= row["eer"] <= 1 and 0 <= row["threshold"] <= 2
        assert set(row["tar_at_far"]) == {"0.1", "0.01"}
        assert row["tar_at_far"]["0.01"] is None  # 36 different-class pairs cannot measure 1e-2 (nor 1e-1: < 100)
        assert row["tar_at_far"]["0.1"] is None


def test_config_stores_the_best_epochs_threshold_chosen_on_every_validation_pair(sample, trained):
    config = read_config(trained)
    stored = config.verification
    assert stored["pairs"] == f"validation classes, epoch {config['best_epoch']}" and stored["target_far"] == 0.1
    positive, negative = brute_pairs(trained, sample / "train", set(config["val_classes"]))
    assert (stored["n_positive_pairs"], stored["n_negative_pairs"]) == (len(positive), len(negative))
    tau = stored["threshold"]
    assert sum(d <= tau for d in negative) / len(negative) == pytest.approx(stored["far"]) and stored["far"] <= 0.1
    assert sum(d <= tau for d in positive) / len(positive) == pytest.approx(stored["tar"])
    # the largest τ within the target: the next different-class distance above τ would exceed it
    above = min(d for d in negative if d > tau)
    assert (sum(d <= above for d in negative)) / len(negative) > 0.1
    assert stored["eer"] == pytest.approx(equal_error_rate(positive, negative), abs=1e-3)
    best = next(r for r in read_metrics(trained) if r["epoch"] == config["best_epoch"])
    assert best["threshold"] == pytest.approx(tau) and best["eer"] == pytest.approx(stored["eer"])
    assert config.threshold.threshold == pytest.approx(tau)


def test_val_distances_name_the_epoch_they_come_from(trained):
    assert json.loads((trained / "val_distances.json").read_text())["epoch"] == read_config(trained)["best_epoch"]


def test_val_distances_are_the_served_weights_when_a_later_epoch_is_not_the_best(sample, tmp_path, monkeypatch):
    """The app marks the stored τ on these distances and tries other FARs on them: they must be the
    best epoch's (the weights Search and Verify use), not the last epoch's."""
    from retrieval.training.resume import RunState

    record = RunState.record

    def second_epoch_is_worse(self, epoch, row):
        if epoch == 2:
            self.history.append(row)
            return False
        return record(self, epoch, row)

    monkeypatch.setattr(RunState, "record", second_epoch_is_worse)
    run = tmp_path / "run"
    train(TrainConfig(data_dir=sample / "train", out=run, epochs=2, target_far=0.1, **TINY), progress=False)
    config = read_config(run)
    assert config["best_epoch"] == 1 and read_metrics(run)[-1]["epoch"] == 2
    stored = json.loads((run / "val_distances.json").read_text())
    assert stored["epoch"] == 1
    positive, negative = brute_pairs(run, sample / "train", set(config["val_classes"]))  # the served (best) model
    assert sorted(stored["positive"]) == pytest.approx(sorted(positive), abs=1e-4)
    assert sorted(stored["negative"]) == pytest.approx(sorted(negative), abs=1e-4)


def test_a_run_without_validation_classes_says_so_and_has_no_threshold_until_calibrated(sample, tmp_path, caplog):
    run = tmp_path / "flat"
    with caplog.at_level(logging.WARNING, logger="retrieval"):
        train(TrainConfig(data_dir=sample / "train", out=run, epochs=1, **{**TINY, "val_fraction": 0.0}), progress=False)
    said = [r.getMessage() for r in caplog.records if "no validation classes" in r.getMessage()]
    assert len(said) == 1 and "retrieval calibrate" in said[0]
    assert read_config(run).threshold is None and read_metrics(run)[-1]["eer"] is None
    stored = calibrate_run(run, sample / "test", target_far=0.1, device="cpu")
    assert read_config(run).threshold.threshold == pytest.approx(stored["threshold"])

    # without validation every epoch is the new best: it drops the calibration (chosen for other weights)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="retrieval"):
        train(TrainConfig(data_dir=sample / "train", out=run, epochs=2, resume=True, num_workers=0), progress=False)
    assert read_config(run).threshold is None
    assert any("retrieval calibrate` set for the earlier weights is dropped" in r.getMessage() for r in caplog.records)


def test_a_calibrated_threshold_survives_resumed_epochs_that_are_not_the_best(sample, trained, tmp_path, monkeypatch, caplog):
    from retrieval.training.resume import RunState

    run = Path(shutil.copytree(trained, tmp_path / "run"))  # trained for 2 epochs
    stored = calibrate_run(run, sample / "test", target_far=0.1, device="cpu")
    original = RunState.record

    def never_better(self, epoch, row):
        before = dict(self.best)
        original(self, epoch, row)
        self.best = {**before, "map_at_r": -1.0}  # so that the next epoch, unpatched, is the best
        return False

    monkeypatch.setattr(RunState, "record", never_better)
    train(TrainConfig(data_dir=sample / "train", out=run, epochs=3, resume=True, num_workers=0), progress=False)
    assert read_config(run).verification == stored

    monkeypatch.setattr(RunState, "record", original)  # the next epoch is the best: its validation τ wins
    with caplog.at_level(logging.WARNING, logger="retrieval"):
        train(TrainConfig(data_dir=sample / "train", out=run, epochs=4, resume=True, num_workers=0), progress=False)
    assert read_config(run).verification["pairs"] == "validation classes, epoch 4"
    assert any("replaced by this epoch's, from the validation classes" in r.getMessage() for r in caplog.records)


def test_best_epoch_config_takes_the_epochs_threshold_or_none_without_validation(tmp_path):
    summary = summarise(PairDistances(np.array([0.1, 0.2, 0.3]), np.array([0.25, 0.5, 0.9, 1.2])), target_far=0.25)
    with_val = Validation({}, None, summary)
    config = best_epoch_verification(tmp_path, {"backbone": "x", "verification": {"threshold": 9}}, with_val, 4)
    assert config["verification"] == {**summary.threshold.to_json(), "eer": summary.eer, "pairs": "validation classes, epoch 4"}
    assert config["verification"]["threshold"] == pytest.approx(0.4) and config["verification"]["tar"] == 1.0
    without = best_epoch_verification(tmp_path, {"backbone": "x", "verification": {"threshold": 9}}, Validation({}, None), 4)
    assert "verification" not in without and without["backbone"] == "x"


def test_the_command_line_reports_eer_and_the_stored_threshold(sample, tmp_path):
    run = tmp_path / "cli"
    args = ["train", str(sample / "train"), "--out", str(run), "--epochs", "1", "--backbone", "resnet10t", "--embedding-dim", "16",
            "--image-size", "32", "-P", "4", "-K", "3", "--workers", "0", "--precision", "fp32", "--val-fraction", "0.25",
            "--target-far", "0.2", "--quiet"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "EER " in result.output and "threshold τ = " in result.output and "(target 0.2)" in result.output
    assert read_config(run).threshold.target_far == 0.2 and read_config(run)["train_settings"]["target_far"] == 0.2


def test_target_far_outside_zero_to_one_is_a_one_line_error(sample, tmp_path):
    for bad in (0.0, 1.0, float("nan")):
        with pytest.raises(RetrievalError, match="--target-far must be between 0 and 1"):
            TrainConfig(data_dir=sample / "train", out=tmp_path / "run", target_far=bad).resolve().validate()
    result = CliRunner().invoke(app, ["train", str(sample / "train"), "--out", str(tmp_path / "run"), "--target-far", "2"])
    assert result.exit_code != 0 and "--target-far must be between 0 and 1" in str(result.exception)
