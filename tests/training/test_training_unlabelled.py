"""Augmentation positives (``retrieval train --unlabelled``): two views of one image, labels hidden,
a flat folder without validation, and a run that indexes and searches."""

import json
import shutil

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from conftest import TINY
from retrieval.cli import app
from retrieval.data import ImageDataset
from retrieval.errors import RetrievalError
from retrieval.model import EmbeddingModel
from retrieval.run import read_confusions, read_metrics, read_mining_log
from retrieval.training import TrainConfig, build_source, train
from retrieval.training.seeded_items import KeyedBatches, SeededItems
from retrieval.training.sources.unlabelled import VIEWS, batch_images, build_view_transform


@pytest.fixture(scope="module")
def flat(sample, tmp_path_factory):
    """A folder of images without class sub-folders (12 of the sample's training images)."""
    folder = tmp_path_factory.mktemp("flat")
    for path in sorted((sample / "train").rglob("*.png"))[::4][:12]:
        shutil.copy(path, folder / f"{path.parent.name}-{path.name}")
    return folder


@pytest.fixture(scope="module")
def hidden_label_run(sample, tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "unlabelled"
    result = train(TrainConfig(data_dir=sample / "train", out=run, epochs=1, unlabelled=True, loss="infonce", **TINY), progress=False)
    return run, result


def test_two_views_of_a_batch_image_differ_but_come_from_one_file(sample):
    config = TrainConfig(data_dir=sample / "train", out=sample / "unused", unlabelled=True, loss="infonce", **TINY)
    source = build_source(config)
    data_config = EmbeddingModel("resnet10t", 16).data_config(32)
    dataset = SeededItems(ImageDataset(source.train_folder.paths, source.train_folder.labels, source.make_train_transform(data_config)))
    batches = KeyedBatches(source.make_sampler(), seed=0)
    batches.set_epoch(1)
    keys = next(iter(batches))
    assert len(keys) == 2 * batch_images(len(source.folder.paths) - len(source.val_folder.paths), 4, 3, None) == 12
    items = [dataset[key] for key in keys]
    labels = [label for _, label, _ in items]
    assert all(labels.count(label) == VIEWS for label in labels)  # B distinct images, two views each
    for label in set(labels):
        (first, _, i), (second, _, j) = [item for item in items if item[1] == label]
        assert source.train_folder.paths[i] == source.train_folder.paths[j]  # one file
        assert first.shape == second.shape == (3, 32, 32)
        assert not torch.allclose(first, second)  # two different augmentations
    # The same keys give the same pixels (seeded per item), so a resumed run repeats its views.
    again = dataset[keys[0]][0]
    assert torch.equal(again, items[0][0])


def test_view_transform_refuses_zero_strength_and_makes_varied_views():
    data_config = EmbeddingModel("resnet10t", 16).data_config(32)
    transform = build_view_transform(data_config, 1.0)
    image = (np.random.default_rng(0).random((40, 48, 3)) * 255).astype(np.uint8)
    views = []
    for seed in range(4):
        transform.set_random_seed(seed)
        views.append(transform(image))
    assert all(v.shape == (3, 32, 32) for v in views)
    assert len({round(float(v.sum()), 3) for v in views}) == 4
    deferred = build_view_transform(data_config, 1.0, normalise_in_batch=True)  # how training builds it
    deferred.set_random_seed(3)
    pixels = deferred(image)
    assert pixels.dtype == torch.uint8 and torch.allclose(deferred.finish_batch(pixels[None])[0], views[3], atol=1e-5)
    with pytest.raises(RetrievalError, match="augmentation"):
        build_view_transform(data_config, 0.0)


def test_labels_are_hidden_from_training_but_hold_out_validation_classes(hidden_label_run, sample):
    run, result = hidden_label_run
    config = json.loads((run / "config.json").read_text())
    assert config["mode"] == "unlabelled" and config["labelled"] is False and config["has_validation"] is True
    assert config["loss"] == "infonce" and config["views"] == 2
    assert len(config["val_classes"]) == 2 and set(config["train_classes"]).isdisjoint(config["val_classes"])
    assert config["n_train_images"] == 6 * 6 and config["batch_images"] == 6
    rows = read_metrics(run)
    assert [r["epoch"] for r in rows] == [0, 1]
    assert all(isinstance(r["recall_at_1"], float) and isinstance(r["map_at_r"], float) for r in rows)
    mined = read_mining_log(run, 1)
    assert mined and read_confusions(run) is None  # pseudo-labels are no classes to confuse
    for row in mined:  # anchor and positive are two views of one file; the label is that file
        assert row["anchor_path"] == row["positive_path"] == row["anchor_label"] == row["positive_label"]
        assert row["negative_path"] != row["anchor_path"]
        assert row["anchor_path"].split("/")[0] in config["train_classes"]


def test_flat_folder_trains_without_validation_and_its_run_indexes_and_searches(flat, tmp_path):
    runner = CliRunner()
    run = tmp_path / "flat-run"
    out = runner.invoke(app, ["train", str(flat), "--out", str(run), "--unlabelled", "--epochs", "1", "--batch-size", "4",
                              "--backbone", "resnet10t", "--image-size", "32", "--embedding-dim", "16", "--quiet", "--workers", "0"])
    assert out.exit_code == 0, out.output
    config = json.loads((run / "config.json").read_text())
    assert config["mode"] == "unlabelled" and config["loss"] == "infonce" and config["has_validation"] is False
    assert config["class_names"] == [] and config["batch_images"] == 4
    rows = read_metrics(run)
    assert [r["epoch"] for r in rows] == [0, 1] and all(r["recall_at_1"] is None and r["map_at_r"] is None for r in rows)
    assert not (run / "val_distances.json").exists()
    out = runner.invoke(app, ["index", str(run), str(flat), "--n-trees", "3", "--quiet", "--workers", "0", "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)["n_items"] == 12
    query = sorted(flat.iterdir())[0]
    out = runner.invoke(app, ["search", str(run), str(query), "-k", "3", "--json"])
    assert out.exit_code == 0, out.output
    neighbours = json.loads(out.stdout)["neighbours"]
    assert len(neighbours) == 3 and neighbours[0]["distance"] < 1e-3  # the query itself is in the gallery


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(pairs="pairs.csv"), "not both"),
        (dict(class_groups="groups.csv"), "--class-groups"),
        (dict(never_negative="pairs.csv"), "--never-negative"),
        (dict(augment=0.0), "--augment"),
        (dict(unlabelled=False, batch_size=8), "--batch-size is for --unlabelled"),
        (dict(batch_size=1), "at least 2"),
    ],
)
def test_flags_that_make_no_sense_without_labels_are_one_line_errors(sample, tmp_path, overrides, message):
    values = dict(data_dir=sample / "train", out=tmp_path / "run", unlabelled=True, loss="infonce", **TINY)
    values.update(overrides)
    with pytest.raises(RetrievalError, match=message) as error:
        train(TrainConfig(**values), progress=False)
    assert "\n" not in str(error.value)


def test_an_explicit_batch_larger_than_the_folder_is_refused(flat, tmp_path):
    with pytest.raises(RetrievalError, match="--batch-size 20 but only 12"):
        train(TrainConfig(data_dir=flat, out=tmp_path / "run", unlabelled=True, loss="infonce", batch_size=20, **TINY), progress=False)
    assert batch_images(12, 16, 4, None) == 12  # a default B is lowered to the images there are
