"""Tests of retrieval.data.sampler: P x K batches, epoch coverage, class groups, determinism, speed."""

from __future__ import annotations

import time

import numpy as np
import pytest

from retrieval.data import PKSampler
from retrieval.errors import RetrievalError


SIZES = [1, 2, 3, 4, 7, 10, 12, 17, 23]
LABELS = np.repeat(np.arange(len(SIZES)), SIZES)
P, K = 4, 4


def test_pk_batches_hold_p_distinct_classes_k_images_each_with_valid_indices():
    sampler = PKSampler(LABELS, P, K, seed=3)
    batches = list(sampler)
    assert len(batches) == len(sampler) > 0
    for batch in batches:
        assert len(batch) == P * K and all(isinstance(i, int) and 0 <= i < len(LABELS) for i in batch)
        runs = LABELS[batch].reshape(P, K)
        assert (runs == runs[:, :1]).all() and len(set(runs[:, 0])) == P
        for run_indices, size in zip(np.reshape(batch, (P, K)), np.asarray(SIZES)[runs[:, 0]]):
            assert len(set(run_indices)) == min(size, K)  # distinct unless the class has < K images


def test_pk_epoch_length_follows_its_definition_and_shows_every_anchor_image():
    sampler = PKSampler(LABELS, P, K)
    visits_needed = -(-np.asarray(SIZES[1:]) // K)
    assert len(sampler) == max(-(-visits_needed.sum() // P), visits_needed.max())
    for epoch in range(5):
        shown = set(sampler.epoch_batches(epoch).ravel().tolist())
        assert shown == set(np.flatnonzero(np.asarray(SIZES)[LABELS] >= 2).tolist())


def test_pk_sampler_never_picks_one_image_classes():
    sampler = PKSampler(LABELS, P, K)
    single = int(np.flatnonzero(LABELS == 0)[0])
    assert all(single not in sampler.epoch_batches(e) for e in range(10))


def test_pk_sampler_is_deterministic_per_seed_and_epoch_and_varies_across_them():
    a, b = PKSampler(LABELS, P, K, seed=7), PKSampler(LABELS, P, K, seed=7)
    a.set_epoch(2)
    b.set_epoch(2)
    assert list(a) == list(b)
    b.set_epoch(3)
    assert list(a) != list(b)
    c = PKSampler(LABELS, P, K, seed=8)
    c.set_epoch(2)
    assert list(a) != list(c)

def test_pk_class_groups_limit_each_batch_to_groups_per_batch_groups():
    labels = np.repeat(np.arange(16), 5)
    groups = np.arange(16) // 4  # 4 groups of 4 classes
    one = PKSampler(labels, 4, 2, seed=0, class_groups=groups, groups_per_batch=1)
    for batch in one:
        assert len(set(groups[labels[batch]])) == 1
    two = PKSampler(labels, 4, 2, seed=0, class_groups=groups, groups_per_batch=2)
    for batch in two:
        group_ids, classes = groups[labels[batch]], labels[batch]
        assert len(set(group_ids)) == 2 and len(set(classes)) == 4
        assert sorted(np.bincount(group_ids[::2]).tolist())[-2:] == [2, 2]  # round-robin: 2 classes each
    assert list(two) == list(PKSampler(labels, 4, 2, seed=0, class_groups=groups, groups_per_batch=2))
    covered = set(np.concatenate([two.epoch_batches(0).ravel()]).tolist())
    assert len(covered) >= 0.9 * len(labels)


def test_pk_groups_too_small_for_p_take_more_groups_and_skip_one_image_classes():
    labels = np.repeat(np.arange(8), [3, 3, 3, 3, 3, 3, 1, 1])
    groups = [0, 0, 1, 1, 2, 2, 3, 3]  # group 3 has only one-image classes
    sampler = PKSampler(labels, 4, 2, class_groups=groups, groups_per_batch=1)
    for batch in sampler:
        assert len(set(labels[batch])) == 4 and not set(labels[batch]) & {6, 7}


def test_pk_sampler_rejects_impossible_settings_with_one_line_errors():
    with pytest.raises(RetrievalError, match="only 8 classes .*: lower --classes-per-batch"):
        PKSampler(LABELS, 9, K)
    with pytest.raises(RetrievalError, match="--classes-per-batch"):
        PKSampler(LABELS, 1, K)
    with pytest.raises(RetrievalError, match="--images-per-class"):
        PKSampler(LABELS, P, 1)
    with pytest.raises(RetrievalError, match="labelled"):
        PKSampler([-1, -1, -1], 2, 2)
    with pytest.raises(RetrievalError, match="two classes"):
        PKSampler([0, 0, 1], 2, 2)


def test_pk_sampler_builds_an_epoch_of_70k_images_quickly():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(11000), rng.integers(2, 12, 11000))
    sampler = PKSampler(labels, 16, 4)
    start = time.perf_counter()
    batches = sampler.epoch_batches(0)
    assert time.perf_counter() - start < 3.0
    assert len(np.unique(batches)) == len(labels)
