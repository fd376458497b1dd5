"""Shared set-up of the tests of retrieval.index: a tiny run, galleries of generated PNGs, and the
module-scoped fixtures built from them.

A tiny random-init resnet10t run (embedding dimension 8, 32 px) and galleries of small generated
PNGs keep the tests fast; the behaviour under test does not depend on the model being trained.
Test modules of this folder import it (``from index_helpers import ...``; the fixtures too):
pytest's prepend import mode puts this folder on ``sys.path``.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from retrieval.index import build_index
from retrieval.model import EmbeddingModel
from retrieval.run import save_model

DIM = 8
FAST = {"num_workers": 0, "device": "cpu", "batch_size": 8, "precision": "fp32"}


def save_tiny_run(run_dir, seed=0, dim=DIM):
    torch.manual_seed(seed)
    model = EmbeddingModel("resnet10t", dim).eval()
    save_model(run_dir, model, {"image_size": 32, "data_config": model.data_config(32)})
    return run_dir


def write_images(folder, classes, per_class, seed=0, size=36):
    """PNG images, a colour per class plus noise, in folder/<class>/<i>.png (flat when classes is None)."""
    rng = np.random.default_rng(seed)
    names = classes if classes is not None else [None]
    for c, name in enumerate(names):
        target = folder / name if name is not None else folder
        target.mkdir(parents=True, exist_ok=True)
        base = rng.integers(0, 256, size=3)
        for i in range(per_class):
            pixels = np.clip(base + rng.normal(0, 60, size=(size, size, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(target / f"{c}_{i}.png")
    return folder


def index_files(run):
    return {p.name: p.read_bytes() for p in (run / "index").iterdir() if p.is_file() and p.name != ".lock"}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return save_tiny_run(tmp_path_factory.mktemp("run"))


@pytest.fixture(scope="module")
def gallery_dir(tmp_path_factory):
    return write_images(tmp_path_factory.mktemp("gallery"), ["apple", "pear", "plum"], 6)


@pytest.fixture(scope="module")
def indexed_run(tmp_path_factory, run_dir, gallery_dir):
    """A copy of the run with an index of the 18-image gallery (10 trees)."""
    target = tmp_path_factory.mktemp("indexed") / "run"
    shutil.copytree(run_dir, target)
    build_index(target, gallery_dir, n_trees=10, **FAST)
    return target


def large_index(run_dir, gallery_dir, n_items, *, n_trees=50, seed=0):
    """An index of ``n_items`` random unit embeddings whose items cycle over the gallery's images,
    written by the real build transaction, fast: nothing is embedded. Returns its gallery.json."""
    from retrieval.data import scan_folder
    from retrieval.index import build as build_module
    from retrieval.run import model_fingerprint, read_config

    folder, config = scan_folder(gallery_dir), read_config(run_dir)
    rows = np.random.default_rng(seed).normal(size=(n_items, config.embedding_dim)).astype(np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    batches = [(rows[s : s + 4096], list(range(s, min(n_items, s + 4096)))) for s in range(0, n_items, 4096)]
    return build_module._write_index(
        run_dir, config, batches, previous=None, folder=folder, gallery_dir=gallery_dir,
        new_ids=[i % len(folder.paths) for i in range(n_items)], n_trees=n_trees, seed=seed, n_jobs=1,
        on_progress=None, fingerprint=model_fingerprint(run_dir))
