"""What training writes about the hardest negatives besides the mining log: mining/confusions.jsonl
(labelled runs only, one epoch's rows replaced on resume) and the per-anchor fractions in metrics.jsonl."""

import json

import pytest

from conftest import TINY
from retrieval.run import confusions_path, read_confusions, read_metrics, read_mining_log, write_confusions
from retrieval.training import TrainConfig, train


@pytest.fixture(scope="module")
def trained(sample, tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "run"
    train(TrainConfig(data_dir=sample / "train", out=run, epochs=2, **TINY), progress=False)
    return run


def test_training_writes_each_epochs_class_confusions(trained):
    config = json.loads((trained / "config.json").read_text())
    rows = read_confusions(trained)
    assert {r["epoch"] for r in rows} == {1, 2}
    for row in rows:
        assert {row["anchor_label"], row["negative_label"]} <= set(config["train_classes"])
        assert row["anchor_label"] != row["negative_label"]
        assert 0 < row["nearest"] <= row["met"] and row["batches"] >= 1 and row["nearest"] <= row["anchors"]
    for epoch in (1, 2):  # each anchor has one nearest negative: a class's counts add up to its anchors
        mine = [r for r in rows if r["epoch"] == epoch]
        for label in {r["anchor_label"] for r in mine}:
            of_class = [r for r in mine if r["anchor_label"] == label]
            assert sum(r["nearest"] for r in of_class) == of_class[0]["anchors"]
    assert read_confusions(trained, 2) == [r for r in rows if r["epoch"] == 2]


def test_the_mining_log_marks_each_triplet_and_metrics_hold_the_per_anchor_fractions(trained):
    for row in read_mining_log(trained, 2):
        assert isinstance(row["mined"], bool)
        if row["mined"]:  # the default semihard miner keeps only 0 < d_an − d_ap < ε
            assert 0 < row["d_an_minus_d_ap"] < 0.2 + 1e-6
    for row in read_metrics(trained)[1:]:
        assert 0 <= row["inverted_anchor_fraction"] <= row["violating_anchor_fraction"] <= 1


def test_writing_an_epochs_confusions_replaces_that_epoch_and_later_ones(tmp_path):
    row = {"anchor_label": "a", "negative_label": "b", "nearest": 1, "met": 2, "batches": 1, "anchors": 3}
    for epoch in (1, 2, 3):  # a run interrupted after epoch 3's rows, resumed from epoch 1's checkpoint
        write_confusions(tmp_path, epoch, [{**row, "epoch": epoch}])
    write_confusions(tmp_path, 2, [{**row, "epoch": 2, "nearest": 2}])
    assert [(r["epoch"], r["nearest"]) for r in read_confusions(tmp_path)] == [(1, 1), (2, 2)]
    assert not list(confusions_path(tmp_path).parent.glob("*.tmp*"))
