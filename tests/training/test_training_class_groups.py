"""--class-groups and --groups-per-batch in labelled training: the groups a batch draws its classes from
are resolved once (2 unless given, fitted to the groups there are), recorded in config.json, a typed value
that cannot be met is a one-line error, and batches whose classes are each alone in their group under
--negatives same-group (every loss 0) are refused. Runs recorded before resume as they trained."""

import json
import re

import numpy as np
import pytest

from conftest import TINY
from retrieval.data import PKSampler
from retrieval.errors import RetrievalError
from retrieval.training import TrainConfig, build_source, train


def _groups_file(sample, path, group_of=lambda name: name.split("-")[0]):
    """class,group for the sample's training classes: by shape (bottle 2, box 4, can 2) unless told."""
    classes = sorted(p.name for p in (sample / "train").iterdir() if p.is_dir())
    path.write_text("class,group\n" + "".join(f"{name},{group_of(name)}\n" for name in classes))
    return path


def _config(sample, tmp_path, **values):
    return TrainConfig(data_dir=sample / "train", **{"out": tmp_path / "run", **TINY, "val_fraction": 0.0, **values})


def test_the_default_groups_per_batch_is_recorded_as_the_batches_used_it(sample, tmp_path):
    groups = _groups_file(sample, tmp_path / "groups.csv")
    train(_config(sample, tmp_path, class_groups=groups, epochs=0), progress=False)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["train_settings"]["groups_per_batch"] == 2
    one = _groups_file(sample, tmp_path / "one-group.csv", group_of=lambda _: "all")
    train(_config(sample, tmp_path, class_groups=one, epochs=0, out=tmp_path / "one-group"), progress=False)
    assert json.loads((tmp_path / "one-group" / "config.json").read_text())["train_settings"]["groups_per_batch"] == 1


@pytest.mark.parametrize("values, named", [
    (dict(groups_per_batch=9), "--groups-per-batch 9 but the training classes of two or more images fall in only 3 group(s)"),
    (dict(groups_per_batch=3, classes_per_batch=2), "--groups-per-batch 3 but a batch holds only 2 classes (-P)"),
])
def test_a_typed_groups_per_batch_that_cannot_be_met_is_refused_as_a_typed_p_is(sample, tmp_path, values, named):
    groups = _groups_file(sample, tmp_path / "groups.csv")
    with pytest.raises(RetrievalError, match=re.escape(named)):
        build_source(_config(sample, tmp_path, class_groups=groups, **values))


@pytest.mark.parametrize("values", [dict(classes_per_batch=2), dict(classes_per_batch=3, groups_per_batch=3)])
def test_same_group_negatives_with_every_class_of_a_batch_alone_in_its_group_are_refused(sample, tmp_path, values):
    """P <= G: the sampler draws one class from each of P groups, so no class has a same-group negative in any
    batch and every loss is 0 for the whole run."""
    groups = _groups_file(sample, tmp_path / "groups.csv")
    config = _config(sample, tmp_path, class_groups=groups, negatives="same-group", **values)
    with pytest.raises(RetrievalError, match="every class of a batch is alone in its group, so no batch has a negative and every loss would be 0"):
        build_source(config)
    with pytest.raises(RetrievalError, match="and training would only pull each class's images together and push nothing apart"):
        build_source(_config(sample, tmp_path, class_groups=groups, negatives="same-group", loss="contrastive", **values))
    source = build_source(_config(sample, tmp_path, class_groups=groups, negatives="prefer-same-group", **values))
    assert source.groups_per_batch == values.get("groups_per_batch", 2)  # other negatives: accepted
    assert build_source(_config(sample, tmp_path, class_groups=groups, negatives="same-group", classes_per_batch=3))


@pytest.mark.parametrize("recorded, sampler_had", [(None, None), (9, 9)])
def test_a_resumed_run_recorded_before_groups_per_batch_was_resolved_draws_the_same_batches(sample, tmp_path, recorded, sampler_had):
    """Older runs recorded null (the sampler's default 2) or a typed value above the groups (clamped by the sampler):
    a resume takes them without an error and draws the batches the run drew."""
    groups = _groups_file(sample, tmp_path / "groups.csv")
    config = _config(sample, tmp_path, class_groups=groups, groups_per_batch=recorded, resume=True)
    source = build_source(config)
    assert source.groups_per_batch == min(recorded or 2, 3)
    before = PKSampler(source.train_folder.labels, TINY["classes_per_batch"], TINY["images_per_class"], seed=TINY.get("seed", 0),
                       class_groups=source.class_groups, groups_per_batch=sampler_had)
    for epoch in range(3):
        assert np.array_equal(source.make_sampler().epoch_batches(epoch), before.epoch_batches(epoch))
