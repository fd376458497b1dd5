"""Tests of retrieval.data.loading: dataset items, the decoded-image cache, collate, loader options."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
import torch

from data_helpers import DATA_CONFIG, warning_messages, write_labelled_folder
from retrieval.data import ImageDataset, PKSampler, build_transforms, collate_images, loading, make_loader, scan_folder
from retrieval.errors import RetrievalError


def test_dataset_returns_none_for_image_corrupted_after_scan_and_collate_drops_it(tmp_path, caplog):
    folder = scan_folder(write_labelled_folder(tmp_path / "d", {"a": 2, "b": 2}))
    folder.paths[1].write_bytes(b"corrupted later")
    dataset = ImageDataset(folder.paths, folder.labels, build_transforms(DATA_CONFIG, train=False))
    with caplog.at_level(logging.WARNING, logger="retrieval"):
        items = [dataset[i] for i in range(len(dataset))] + [dataset[1]]
    assert items[1] is None and items[4] is None
    assert len([m for m in warning_messages(caplog) if "img_01.png" in m]) == 1  # once per file
    images, labels, indices = collate_images(items[:4])
    assert images.shape == (3, 3, 32, 32) and labels.tolist() == [0, 1, 1] and indices.tolist() == [0, 2, 3]
    empty_images, empty_labels, _ = collate_images([None, None])
    assert empty_images.numel() == 0 and empty_labels.numel() == 0


def test_an_unreadable_file_is_warned_of_once_by_all_the_loader_workers_together(tmp_path, capfd):
    """Each loader worker holds its own copy of the dataset, and each warned of the same file: two
    workers, two lines. The workers agree through marker files; the warning goes to stderr, as the CLI logs."""
    handler = logging.StreamHandler()  # stderr, in every process: a worker's record does not reach pytest's caplog
    handler.setFormatter(logging.Formatter("this test: %(message)s"))  # apart from a CLI handler an earlier test left
    logging.getLogger("retrieval").addHandler(handler)
    try:
        folder = scan_folder(write_labelled_folder(tmp_path / "d", {"a": 2, "b": 2}))
        folder.paths[1].write_bytes(b"corrupted later")
        dataset = ImageDataset(folder.paths, folder.labels, build_transforms(DATA_CONFIG, train=False))
        loader = make_loader(dataset, batch_sampler=[[0, 1], [1, 2], [1, 3], [1]], num_workers=2, device="cpu")
        batches = [indices.tolist() for _images, _labels, indices in loader]
        assert batches == [[0], [2], [3], []]
        del loader
    finally:
        logging.getLogger("retrieval").removeHandler(handler)
    warned = [line for line in capfd.readouterr().err.splitlines() if line.startswith("this test: skipped at load time")]
    assert len(warned) == 1 and "img_01.png" in warned[0], warned
    root = dataset._warned_by_any.root
    assert root.is_dir()
    del dataset
    import gc

    gc.collect()
    assert not root.exists(), "the process that made the markers removes them with the dataset"


def test_dataset_cache_keeps_decoded_images_within_its_budget(tmp_path, monkeypatch):
    folder = scan_folder(write_labelled_folder(tmp_path / "d", {"a": 2, "b": 2}, size=(16, 16)))  # 768 bytes decoded each
    reads = []
    real_load = loading.load_image
    monkeypatch.setattr(loading, "load_image", lambda path: reads.append(Path(path).name) or real_load(path))
    transform = build_transforms(DATA_CONFIG, train=False)
    cached = ImageDataset(folder.paths, folder.labels, transform, cache_bytes=2 * 768)  # room for two images
    first = [cached[i][0] for i in range(4)]
    second = [cached[i][0] for i in range(4)]
    assert reads == [p.name for p in folder.paths] + [p.name for p in folder.paths[2:]]  # 0 and 1 came from memory
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    folder.paths[0].unlink()  # a cached image no longer needs its file; an uncached one does
    folder.paths[2].unlink()
    assert torch.equal(cached[0][0], first[0]) and cached[2] is None
    twice = ImageDataset([folder.paths[1]] * 2, [0, 0], transform, cache_bytes=768)  # one image, two items (two views)
    reads.clear()
    twice[0], twice[1]
    assert reads == [folder.paths[1].name] and twice._cached_bytes == 768  # read once, held once
    plain = ImageDataset(folder.paths, folder.labels, transform)  # cache_bytes=0: no cache
    reads.clear()
    plain[1], plain[1]
    assert reads == [folder.paths[1].name] * 2

def test_loader_with_workers_follows_the_pk_sampler_across_epochs(tmp_path):
    folder = scan_folder(write_labelled_folder(tmp_path / "d", {f"c{i}": 3 for i in range(4)}, size=(8, 8)), verify=False)
    sampler = PKSampler(folder.labels, 2, 2, seed=1)
    dataset = ImageDataset(folder.paths, folder.labels, build_transforms(DATA_CONFIG, train=True))
    loader = make_loader(dataset, batch_sampler=sampler, num_workers=2, device="cpu")
    assert loader.persistent_workers and not loader.pin_memory and len(loader) == len(sampler)
    for epoch in (0, 1):
        sampler.set_epoch(epoch)
        got = [indices.tolist() for _, _, indices in loader]
        assert got == sampler.epoch_batches(epoch).tolist()
    images, labels, _ = next(iter(loader))
    assert images.shape == (4, 3, 32, 32) and labels.dtype == torch.long

def test_make_loader_needs_exactly_one_of_batch_sampler_or_batch_size(tmp_path):
    dataset = ImageDataset([], None, None)
    with pytest.raises(ValueError):
        make_loader(dataset, device="cpu")
    with pytest.raises(ValueError):
        make_loader(dataset, batch_sampler=[[0]], batch_size=2, device="cpu")
    loader = make_loader(dataset, batch_size=4, num_workers=0, device="cpu")
    assert loader.num_workers == 0 and loader.collate_fn is collate_images
    with pytest.raises(RetrievalError, match="--workers .* 0 or more, got -1"):  # retrieval index --workers -1
        make_loader(dataset, batch_size=4, num_workers=-1, device="cpu")
    cpus = len(os.sched_getaffinity(0))
    assert make_loader(dataset, batch_size=4, device="cpu").num_workers == (0 if cpus < 2 else min(2, cpus))
