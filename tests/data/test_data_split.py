"""Tests of retrieval.data.split: validation classes never seen in training."""

from __future__ import annotations

import logging

import pytest

from data_helpers import warning_messages, write_labelled_folder
from retrieval.data import scan_folder, split_classes
from retrieval.errors import RetrievalError


def _split_folder(tmp_path):
    counts = {f"c{i:02d}": 2 + i % 3 for i in range(10)} | {"single_a": 1, "single_b": 1}
    return scan_folder(write_labelled_folder(tmp_path / "d", counts, size=(4, 4)), verify=False)


def test_split_classes_is_disjoint_and_deterministic_per_seed(tmp_path):
    folder = _split_folder(tmp_path)
    train, val = split_classes(folder, 0.3, seed=0)
    assert not set(train.class_names) & set(val.class_names)
    assert sorted(train.class_names + val.class_names) == folder.class_names
    assert len(val.class_names) == round(0.3 * 12) and len(train) + len(val) == len(folder)
    assert set(train.paths).isdisjoint(val.paths)
    assert train.labels == sorted(train.labels) and max(val.labels) == len(val.class_names) - 1
    again_train, again_val = split_classes(folder, 0.3, seed=0)
    assert again_val.class_names == val.class_names and again_train.paths == train.paths
    assert split_classes(folder, 0.3, seed=1)[1].class_names != val.class_names


def test_split_sends_only_classes_with_two_images_to_validation_and_at_least_two(tmp_path):
    folder = _split_folder(tmp_path)
    for seed in range(10):
        _, val = split_classes(folder, 0.3, seed=seed)
        assert all(count >= 2 for count in val.class_counts().values())
    _, val = split_classes(folder, 0.01, seed=0)
    assert len(val.class_names) == 2
    train, val = split_classes(folder, 0.0, seed=0)
    assert train is folder and len(val) == 0
    with pytest.raises(RetrievalError, match="val_fraction"):
        split_classes(folder, 1.0, seed=0)


def test_split_with_too_few_classes_trains_without_validation_and_warns(tmp_path, caplog):
    folder = scan_folder(write_labelled_folder(tmp_path / "d", {"a": 2, "b": 2, "c": 2, "d": 1}, size=(4, 4)))
    with caplog.at_level(logging.WARNING, logger="retrieval"):
        train, val = split_classes(folder, 0.5, seed=0)
    assert len(val.class_names) == 0 and train.class_names == folder.class_names
    assert any("without validation" in m for m in warning_messages(caplog))
