"""Positive-only pairs (``retrieval train --pairs FILE``): pair-file parsing and its errors, union-find
components, negatives that are never linked images, and a run that indexes and searches."""

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from conftest import TINY
from retrieval.cli import app
from retrieval.data import scan_folder
from retrieval.errors import RetrievalError
from retrieval.negatives import NegativeRules
from retrieval.training.sources.pairs import (
    HardNegativeBatches,
    component_distances,
    connected_components,
    hard_negative_groups,
    linked_folder,
    never_negative_components,
    read_image_groups,
    read_pairs,
)
from retrieval.run import read_metrics, read_mining_log
from retrieval.training import TrainConfig, train

TINY = {**TINY, "classes_per_batch": 3, "images_per_class": 2}


@pytest.fixture(scope="module")
def folder(sample):
    return scan_folder(sample / "train")


def _chain_pairs(folder, per_class=None, classes=None):
    """Consecutive images of each class linked in a chain: a~b, b~c, ... (every class one component)."""
    rows = []
    for c in range(len(folder.class_names))[:classes]:
        names = [folder.relative_path(i) for i, label in enumerate(folder.labels) if label == c][:per_class]
        rows += list(zip(names, names[1:]))
    return rows


def _write(path, text):
    path.write_text(text)
    return path


# ----------------------------------------------------------------------------- parsing


def test_pair_file_with_header_comments_and_path_spellings_is_read(folder, tmp_path):
    a, b, c = folder.relative_path(0), folder.relative_path(1), folder.relative_path(2)
    text = f"image_a,image_b\n# a comment\n\n{a},{b}\n./{b},{c.replace('/', chr(92))}\n{b},{a}\n{folder.paths[3]},{c}\n"
    pairs = read_pairs(_write(tmp_path / "pairs.csv", text), folder)
    assert pairs == [(0, 1), (1, 2), (2, 3)]  # (b, a) repeats (a, b); absolute paths inside the folder work


def test_missing_pair_file_is_a_one_line_error(folder, tmp_path):
    with pytest.raises(RetrievalError, match="pair file not found"):
        read_pairs(tmp_path / "nope.csv", folder)


@pytest.mark.parametrize(
    "row, message",
    [
        ("{a}", r"pairs.csv:3: expected two image paths"),
        ("{a},{b},{a}", r"pairs.csv:3: expected two image paths \(image_a,image_b\), got 3 field\(s\)"),
        ("{a},", r"pairs.csv:3: empty image path"),
        ("{a},nowhere/ghost.png", r"pairs.csv:3: unknown image 'nowhere/ghost.png'"),
        ('{a},"{b}\n{a},{b}\n{a},{b}', r"pairs.csv:3: unknown image '.*'… \(a value running over 3 lines: is a quote "
                                         r"\(\"\) on line 3 left open\?\)"),
    ],
)
def test_a_bad_row_names_the_file_and_line(folder, tmp_path, row, message):
    a, b = folder.relative_path(0), folder.relative_path(1)
    path = _write(tmp_path / "pairs.csv", f"image_a,image_b\n{a},{b}\n" + row.format(a=a, b=b) + "\n")
    with pytest.raises(RetrievalError, match=message) as error:
        read_pairs(path, folder)
    assert "\n" not in str(error.value)


def test_pairs_with_an_unreadable_image_are_dropped_with_a_warning(sample, tmp_path, caplog):
    broken = tmp_path / "data"
    (broken / "x").mkdir(parents=True)
    images = sorted((sample / "train").rglob("*.png"))[:3]
    for i, path in enumerate(images):
        (broken / "x" / f"{i}.png").write_bytes(path.read_bytes())
    (broken / "x" / "bad.png").write_bytes(b"not a png")
    folder = scan_folder(broken)
    path = _write(tmp_path / "pairs.csv", "x/0.png,x/1.png\nx/1.png,x/bad.png\nx/2.png,x/2.png\n")
    with caplog.at_level("WARNING", logger="retrieval"):
        assert read_pairs(path, folder) == [(0, 1)]
    assert "unreadable image (lines 2)" in caplog.text and "1 pair(s) of an image with itself" in caplog.text


def test_group_file_errors_name_the_line(folder, tmp_path):
    a = folder.relative_path(0)
    assert read_image_groups(_write(tmp_path / "g.csv", f"image,group\n{a},shelf-1\n"), folder) == {0: "shelf-1"}
    with pytest.raises(RetrievalError, match=r"g2.csv:2: .* is in group b here but in a on line 1"):
        read_image_groups(_write(tmp_path / "g2.csv", f"{a},a\n{a},b\n"), folder)


# ----------------------------------------------------------------------------- components and negatives


def test_linked_images_form_components_transitively():
    labels = connected_components(7, [(5, 6), (0, 1), (1, 3), (6, 4)])
    assert labels.tolist() == [0, 0, 1, 0, 2, 2, 2]  # 0~1~3 and 4~6~5; numbered by smallest member
    assert labels.tolist() == connected_components(7, [(6, 4), (1, 3), (0, 1), (5, 6)]).tolist()  # order-free


def test_linked_folder_keeps_only_images_in_a_pair(folder):
    components = connected_components(len(folder.paths), [(0, 1), (1, 2), (10, 11)])
    linked = linked_folder(folder, components)
    assert linked.paths == [folder.paths[i] for i in (0, 1, 2, 10, 11)]
    assert linked.labels == [0, 0, 0, 1, 1] and linked.class_names == ["component-0000", "component-0001"]


def test_hard_grouping_takes_the_nearest_not_linked_components():
    # Components 0..5 at known places on a circle arc; 0 and 1 may never be negatives.
    angles = np.array([0.0, 0.1, 1.0, 1.05, 2.0, 2.2])
    x = np.stack([np.cos(angles), np.sin(angles)], 1).repeat(2, axis=0)  # two images per component
    labels = np.arange(6).repeat(2)
    d = component_distances(x, labels)
    assert torch.isinf(d.diagonal()).all() and d[2, 3] < d[2, 4] < d[2, 5]
    groups = hard_negative_groups(d, 2, np.random.default_rng(0), never_negative=[(0, 1)])
    assert groups[2] == groups[3] and groups[4] == groups[5]
    assert groups[0] != groups[1]  # the nearest, but never a negative: not paired as a hard negative


@pytest.mark.parametrize("strategy", ["random", "hard"])
def test_the_negative_sampler_never_returns_a_linked_image(strategy):
    rng = np.random.default_rng(3)
    n = 60
    pairs = [(int(a), int(b)) for a, b in rng.integers(0, n, size=(45, 2)) if a != b]
    components = connected_components(n, pairs)
    linked = np.flatnonzero(np.bincount(components)[components] >= 2)
    _, labels = np.unique(components[linked], return_inverse=True)
    image_groups = {int(i): f"g{rng.integers(0, 4)}" for i in rng.choice(len(labels), size=12, replace=False)}
    never = never_negative_components(labels, image_groups)
    rules = NegativeRules(never_negative=never) if never else None
    if strategy == "hard":
        embeddings = rng.normal(size=(len(labels), 8)).astype(np.float32)
        embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
        sampler = HardNegativeBatches(labels, 4, 3, seed=0, embed=lambda: embeddings, never_negative=never)
    else:
        from retrieval.data import PKSampler

        sampler = PKSampler(labels, 4, 3, seed=0)
    group_of = {i: g for i, g in image_groups.items()}
    for epoch in (1, 2):
        sampler.set_epoch(epoch)
        for batch in sampler:
            y = torch.as_tensor(labels[batch])
            negatives = rules.negative_mask(y) if rules else y[:, None] != y[None, :]
            for a, n_ in torch.nonzero(negatives).tolist():
                i, j = batch[a], batch[n_]
                assert labels[i] != labels[j]  # never linked, not even transitively
                assert components[linked[i]] != components[linked[j]]
                # never two components that share a never-negative group
                shared = {group_of[k] for k in np.flatnonzero(labels == labels[i]) if k in group_of} & \
                         {group_of[k] for k in np.flatnonzero(labels == labels[j]) if k in group_of}
                assert not shared


def test_hard_batches_depend_only_on_seed_epoch_and_embeddings():
    labels = np.arange(12).repeat(3)
    x = np.random.default_rng(0).normal(size=(36, 4)).astype(np.float32)
    make = lambda: HardNegativeBatches(labels, 4, 2, seed=5, embed=lambda: x)
    first, second = make(), make()
    first.set_epoch(3)
    second.set_epoch(3)
    assert list(first) == list(second) and len(first) == len(list(first))
    for batch in first:
        assert len(set(labels[batch].tolist())) == 4  # P components, K images each


def test_a_pair_file_linking_part_of_the_folder_says_how_much_it_leaves_out(sample, folder, tmp_path, caplog):
    from retrieval.training import build_source

    pairs = _write(tmp_path / "pairs.csv", "".join(f"{a},{b}\n" for a, b in _chain_pairs(folder, per_class=3)))
    with caplog.at_level("WARNING", logger="retrieval"):
        source = build_source(TrainConfig(data_dir=sample / "train", out=tmp_path / "r", pairs=pairs, **{**TINY, "val_fraction": 0.0}))
    entries = source.config_entries()
    n_classes = len(folder.class_names)
    assert (entries["n_linked_images"], entries["n_components"]) == (3 * n_classes, n_classes)
    assert entries["n_unlinked_images"] == len(folder.paths) - 3 * n_classes > 0
    assert (f"links {3 * n_classes} of the {len(folder.paths)} training images in {n_classes} groups; the other "
            f"{entries['n_unlinked_images']} are in no pair and are not trained on, not even as negatives") in caplog.text


def test_hard_sampler_embeds_through_the_function_training_gives_it(sample, folder, tmp_path):
    """Under torchrun training passes retrieval.embed.embed_readable with its DistributedContext, so every process groups the
    components from the same rows; the sampler must use it rather than embed on its own."""
    from retrieval.model import EmbeddingModel
    from retrieval.training import build_source

    pairs = _write(tmp_path / "pairs.csv", "".join(f"{a},{b}\n" for a, b in _chain_pairs(folder)))
    source = build_source(TrainConfig(data_dir=sample / "train", out=tmp_path / "r", pairs=pairs, pair_negatives="hard", **{**TINY, "val_fraction": 0.0}))
    calls = []
    rows = np.random.default_rng(0).normal(size=(len(source.train_folder.paths), 4)).astype(np.float32)

    def shared_embed(model, paths, transform, **options):
        calls.append(list(paths))
        return rows, list(range(len(paths)))

    model = EmbeddingModel("resnet10t", 8).train()
    sampler = source.make_sampler(model=model, transform=None, device="cpu", precision="fp32", embed_readable=shared_embed)
    sampler.set_epoch(1)
    assert calls == [list(source.train_folder.paths)] and model.training  # back in training mode
    reference = HardNegativeBatches(source.train_folder.labels, TINY["classes_per_batch"], TINY["images_per_class"], seed=TINY.get("seed", 0), embed=lambda: rows)
    reference.set_epoch(1)
    assert list(sampler) == list(reference)

    def one_unreadable(model, paths, transform, **options):  # a truncated JPEG: left out by the loader
        return np.delete(rows, 3, axis=0), [i for i in range(len(paths)) if i != 3]

    with_zero = rows.copy()
    with_zero[3] = 0.0
    sampler = source.make_sampler(model=model, transform=None, device="cpu", precision="fp32", embed_readable=one_unreadable)
    sampler.set_epoch(1)
    reference = HardNegativeBatches(source.train_folder.labels, TINY["classes_per_batch"], TINY["images_per_class"], seed=TINY.get("seed", 0), embed=lambda: with_zero)
    reference.set_epoch(1)
    assert list(sampler) == list(reference), "an unreadable image's row is zeros, and the batches are drawn"


# ----------------------------------------------------------------------------- training


def test_training_from_pairs_ends_with_a_run_that_indexes_and_searches(sample, folder, tmp_path):
    pairs = _write(tmp_path / "pairs.csv", "image_a,image_b\n" + "".join(f"{a},{b}\n" for a, b in _chain_pairs(folder)))
    groups = _write(tmp_path / "groups.csv", f"{folder.relative_path(0)},shelf\n{folder.relative_path(40)},shelf\n")
    run = tmp_path / "pairs-run"
    runner = CliRunner()
    out = runner.invoke(app, ["train", str(sample / "train"), "--out", str(run), "--pairs", str(pairs), "--pair-negatives", "hard",
                              "--pair-groups", str(groups), "--epochs", "1", "--backbone", "resnet10t", "--image-size", "32",
                              "--embedding-dim", "16", "-P", "3", "-K", "2", "--val-fraction", "0.25", "--quiet", "--workers", "0"])
    assert out.exit_code == 0, out.output
    config = json.loads((run / "config.json").read_text())
    assert config["mode"] == "pairs" and config["labelled"] is False and config["pair_negatives"] == "hard"
    assert config["n_components"] == 6 and config["n_linked_images"] == 36 and config["n_unlinked_images"] == 0
    assert len(config["val_classes"]) == 2 and config["has_validation"] is True
    assert config["n_never_negative_component_pairs"] in (0, 1)
    rows = read_metrics(run)
    assert [r["epoch"] for r in rows] == [0, 1] and isinstance(rows[1]["recall_at_1"], float)
    for row in read_mining_log(run, 1):
        assert row["anchor_label"] == row["positive_label"] != row["negative_label"]
        assert row["anchor_label"].startswith("component-")
    out = runner.invoke(app, ["index", str(run), str(sample / "catalog"), "--n-trees", "3", "--quiet", "--workers", "0"])
    assert out.exit_code == 0, out.output
    query = sorted((sample / "test").rglob("*.png"))[0]
    out = runner.invoke(app, ["search", str(run), str(query), "-k", "2", "--json"])
    assert out.exit_code == 0, out.output
    assert len(json.loads(out.stdout)["neighbours"]) == 2


def test_too_few_linked_groups_or_batches_larger_than_them_are_refused(sample, folder, tmp_path):
    one = [(folder.relative_path(i), folder.relative_path(i + 1)) for i in range(3)]  # one class chain: 1 component
    path = _write(tmp_path / "one.csv", "".join(f"{a},{b}\n" for a, b in one))
    config = dict(data_dir=sample / "train", out=tmp_path / "run", pairs=path, epochs=1, **{**TINY, "val_fraction": 0.0})
    with pytest.raises(RetrievalError, match="at least 2 are needed"):
        train(TrainConfig(**config), progress=False)
    path = _write(tmp_path / "all.csv", "".join(f"{a},{b}\n" for a, b in _chain_pairs(folder)))
    with pytest.raises(RetrievalError, match="-P 9 .* only 8 groups of linked images"):  # typed: an error, not fitted
        train(TrainConfig(**{**config, "pairs": path, "classes_per_batch": 9}), progress=False)
    with pytest.raises(RetrievalError, match="--pair-negatives needs --pairs"):
        train(TrainConfig(**{**config, "pairs": None, "pair_negatives": "hard"}), progress=False)
    with pytest.raises(RetrievalError, match="--pair-groups FILE"):
        train(TrainConfig(**{**config, "never_negative": path}), progress=False)


def test_hard_negative_run_resumed_after_ctrl_c_equals_an_uninterrupted_one(sample, folder, tmp_path):
    import signal

    from safetensors.torch import load_file

    pairs = _write(tmp_path / "pairs.csv", "".join(f"{a},{b}\n" for a, b in _chain_pairs(folder, per_class=3, classes=4)))
    settings = dict(data_dir=sample / "train", pairs=pairs, pair_negatives="hard", epochs=2, **{**TINY, "val_fraction": 0.0})
    train(TrainConfig(out=tmp_path / "straight", **settings), progress=False)

    def press_ctrl_c_after_epoch_1(row):
        if row["epoch"] == 1:
            signal.raise_signal(signal.SIGINT)

    first = train(TrainConfig(out=tmp_path / "resumed", **settings), progress=False, on_epoch=press_ctrl_c_after_epoch_1)
    assert first.interrupted
    train(TrainConfig(out=tmp_path / "resumed", resume=True, **settings), progress=False)
    a = load_file(str(tmp_path / "straight" / "model_last.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "model_last.safetensors"))
    assert all(torch.allclose(a[name], b[name], atol=1e-6, rtol=0) for name in a)
    assert read_mining_log(tmp_path / "resumed", 2) == read_mining_log(tmp_path / "straight", 2)


def test_pair_groups_that_leave_no_group_a_negative_are_refused(sample, folder, tmp_path):
    """--pair-groups with one image of every linked group in one never-negative group: no group may be another's
    negative, every loss is 0 and training would learn nothing, so the run is refused in one line."""
    pairs = _write(tmp_path / "pairs.csv", "".join(f"{a},{b}\n" for a, b in _chain_pairs(folder)))
    everyone = _write(tmp_path / "groups.csv", "".join(f"{folder.relative_path(i)},shelf\n" for i in range(len(folder.paths))))
    config = dict(data_dir=sample / "train", out=tmp_path / "run", pairs=pairs, pair_groups=everyone, epochs=1,
                  **{**TINY, "val_fraction": 0.0})
    with pytest.raises(RetrievalError, match="none of the 8 groups of images linked by .* can have a negative"):
        train(TrainConfig(**config), progress=False)


def test_a_pair_file_without_pairs_says_so_and_a_resume_refuses_a_changed_pair_file(sample, folder, tmp_path):
    empty = _write(tmp_path / "empty.csv", "image_a,image_b\n")
    config = dict(data_dir=sample / "train", out=tmp_path / "run", pairs=empty, epochs=0, **{**TINY, "val_fraction": 0.25})
    with pytest.raises(RetrievalError, match="the file holds no pair of two readable images"):
        train(TrainConfig(**config), progress=False)
    chained = list(_chain_pairs(folder))
    pairs = _write(tmp_path / "pairs.csv", "".join(f"{a},{b}\n" for a, b in chained))
    train(TrainConfig(**{**config, "pairs": pairs}), progress=False)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["pairs_sha256"]
    _write(pairs, "".join(f"{a},{b}\n" for a, b in chained[: len(chained) // 2]))  # half the pairs: other components
    with pytest.raises(RetrievalError, match=r"\(--pairs\) has changed since .* started"):
        train(TrainConfig(data_dir=sample / "train", out=tmp_path / "run", pairs=pairs, epochs=1, resume=True, num_workers=0),
              progress=False)


def test_a_pair_file_with_several_bad_rows_names_them_all_in_one_line(folder, tmp_path):
    a, b = folder.relative_path(0), folder.relative_path(1)
    rows = [f"{a},{b}", f"{a},ghost1.png", f"{a}", f"{a},{b}", "ghost2.png,", f"{a},ghost3.png", f"{a},ghost4.png"]
    path = _write(tmp_path / "pairs.csv", "\n".join(rows) + "\n")
    with pytest.raises(RetrievalError) as error:
        read_pairs(path, folder)
    message = str(error.value)
    assert message.startswith(f"{path}: 5 bad rows: line 2: unknown image 'ghost1.png'") and "\n" not in message
    assert "; line 3: expected two image paths" in message and "; line 5: unknown image 'ghost2.png'" in message
    assert message.endswith("; and 2 more")  # one reason a row: line 5's empty second path is not counted again
