"""The index's files (gallery.json, gallery.ann, embeddings.npy) are one unit: a build whose commit
fails at any of its steps leaves the old index or the new one, never neither."""

import shutil

import numpy as np
import pytest
import torch

from commit_faults import Crash, failing_at
from index_helpers import DIM, FAST, write_images
from retrieval.index import GalleryIndex, build_index
from retrieval.model import EmbeddingModel
from retrieval.run import save_model


def test_an_index_build_failing_at_any_step_of_its_commit_leaves_the_old_or_the_new_index(tmp_path, monkeypatch):
    torch.manual_seed(0)
    model = EmbeddingModel("test_resnet", DIM)  # timm's small test network: the commit does not depend on the model
    start = tmp_path / "start"
    save_model(start, model, {"image_size": 32, "data_config": model.data_config(32)})
    old_gallery = write_images(tmp_path / "old", ["a", "b"], 3)
    new_gallery = write_images(tmp_path / "new", ["c", "d", "e"], 3, seed=1)
    query = np.ones(DIM, np.float32)

    def state(run_dir):
        index = GalleryIndex.load(run_dir, load_model=False)
        try:
            return {old_gallery.resolve(): "old", new_gallery.resolve(): "new"}[index.roots[0]], len(index)
        finally:
            index.close()

    build_index(start, old_gallery, n_trees=3, **FAST)
    shutil.copytree(start, tmp_path / "probe", symlinks=True)
    counter = failing_at(monkeypatch, step=10**6)
    build_index(tmp_path / "probe", new_gallery, n_trees=3, **FAST)
    steps = counter["n"]
    monkeypatch.undo()
    assert steps >= 7
    seen = set()
    for step in range(1, steps + 1):
        run_dir = tmp_path / f"step{step}"
        shutil.copytree(start, run_dir, symlinks=True)
        failing_at(monkeypatch, step)
        with pytest.raises(Crash):
            build_index(run_dir, new_gallery, n_trees=3, **FAST)
        monkeypatch.undo()
        name, size = state(run_dir)
        assert size == {"old": 6, "new": 9}[name], f"step {step}"
        seen.add(name)
        GalleryIndex.load(run_dir, load_model=False).search(query, k=3)
    assert seen == {"old", "new"}


def test_a_second_index_command_is_refused_before_it_reads_the_index_or_embeds(tmp_path, monkeypatch):
    """Two `retrieval index` commands on one run: the second stops at once, in one line naming the
    first, before it reads the current index. (When the lock was taken only for the commit, an
    ``--add`` that had read the index before another command committed then committed the index it
    had read plus its own images, dropping what the other had added.)"""
    from index_helpers import index_files, save_tiny_run
    from retrieval.errors import RetrievalError
    from retrieval.index import add_to_index, build
    from retrieval.index.remove import remove_from_index
    from retrieval.run import hold_lock, index_dir

    run = save_tiny_run(tmp_path / "run")
    gallery = write_images(tmp_path / "gallery", ["a", "b"], 3)
    more = write_images(tmp_path / "more", ["c"], 3, seed=1)
    build_index(run, gallery, n_trees=3, **FAST)
    before = index_files(run)

    def must_not_run(*args, **kwargs):
        raise AssertionError("read the index or the gallery without holding the index's lock")

    monkeypatch.setattr(GalleryIndex, "load", must_not_run)
    monkeypatch.setattr(build, "_images_to_index", must_not_run)
    with hold_lock(index_dir(run), "`retrieval index` on a run"):  # another open file: refused as another process is
        for command in (lambda: add_to_index(run, more, n_trees=3, **FAST), lambda: build_index(run, more, n_trees=3, **FAST),
                        lambda: remove_from_index(run, labels=["a"])):
            with pytest.raises(RetrievalError, match="is in use by .*only one `retrieval index` on a run at a time") as error:
                command()
            assert "\n" not in str(error.value)
    monkeypatch.undo()
    assert index_files(run) == before
    assert len(GalleryIndex.load(run, load_model=False)) == 6


def test_an_index_command_failing_before_it_writes_leaves_no_index_folder(tmp_path):
    from index_helpers import save_tiny_run
    from retrieval.errors import RetrievalError

    run = save_tiny_run(tmp_path / "run")
    with pytest.raises(RetrievalError):
        build_index(run, tmp_path / "no-such-gallery", **FAST)
    assert not (run / "index").exists()
