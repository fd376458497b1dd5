"""Tests for retrieval.index.add_to_index (``retrieval index --add``): adding a folder equals a full
rebuild, embeds only the new images, and adds nothing twice."""

from __future__ import annotations

import logging
import shutil

import numpy as np

from index_helpers import FAST, index_files, run_dir, write_images  # noqa: F401 (fixtures)
from retrieval.index import GalleryIndex, add_to_index, build_index


def test_add_gives_the_same_index_as_a_full_rebuild(tmp_path, run_dir):
    first = write_images(tmp_path / "first", ["apple", "pear"], 5, seed=1)
    second = write_images(tmp_path / "second", ["plum"], 5, seed=2)
    both = tmp_path / "both"
    shutil.copytree(first, both)
    shutil.copytree(second / "plum", both / "plum")

    added = tmp_path / "added"
    shutil.copytree(run_dir, added)
    build_index(added, first, n_trees=5, n_jobs=1, **FAST)
    add_to_index(added, second, n_jobs=1, **FAST)

    full = tmp_path / "full"
    shutil.copytree(run_dir, full)
    build_index(full, both, n_trees=5, n_jobs=1, **FAST)

    a, b = GalleryIndex.load(added), GalleryIndex.load(full)
    assert a.relative_paths == b.relative_paths and a.labels == b.labels
    assert a.n_trees == b.n_trees == 5
    np.testing.assert_allclose(a.embeddings, b.embeddings, atol=1e-5)
    for query in b.embeddings:
        assert [n.item for n in a.search(query, k=6)] == [n.item for n in b.search(query, k=6)]
    assert [str(p) for p in a.paths[-5:]] == [str((second / "plum" / f"0_{i}.png").resolve()) for i in range(5)]


def test_add_embeds_only_the_new_images(tmp_path, run_dir, monkeypatch):
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    build_index(run, write_images(tmp_path / "old", ["a"], 4), n_trees=3, **FAST)
    embedded = []
    import retrieval.embed as embed_module

    original = embed_module.embedding_batches

    def counting(model, images, *args, **kwargs):
        embedded.extend(images)
        return original(model, images, *args, **kwargs)

    monkeypatch.setattr(embed_module, "embedding_batches", counting)
    metadata = add_to_index(run, write_images(tmp_path / "new", ["b"], 3, seed=5), **FAST)
    assert len(embedded) == 3 and metadata["n_items"] == 7


def test_adding_a_folder_already_indexed_adds_nothing(tmp_path, run_dir, caplog):
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    folder = write_images(tmp_path / "g", ["a"], 4)
    build_index(run, folder, n_trees=3, **FAST)
    before = index_files(run)
    with caplog.at_level(logging.INFO, logger="retrieval"):
        assert add_to_index(run, folder, **FAST)["n_items"] == 4
    assert "already in the index" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], "the CLI's own line says it: no warning too"
    assert index_files(run) == before


def test_adding_a_sub_folder_or_a_parent_of_an_indexed_folder_adds_only_the_files_not_indexed(tmp_path, run_dir):
    """The same file is not indexed twice, whatever folder it is reached from (``index RUN data/test``,
    then ``--add data/test/a``, then ``--add data``): each call says how many it found indexed already."""
    data = tmp_path / "data"
    write_images(data / "test", ["a", "b"], 3)
    write_images(data / "other", ["c"], 2, seed=3)
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    build_index(run, data / "test", n_trees=2, **FAST)
    before = index_files(run)
    sub = add_to_index(run, data / "test" / "a", **FAST)
    assert sub["n_items"] == 6 and index_files(run) == before
    assert (sub["added"], sub["already_indexed"]) == (False, 3)
    parent = add_to_index(run, data, **FAST)
    assert parent["n_items"] == 8
    assert (parent["added"], parent["already_indexed"]) == (True, 6)
    index = GalleryIndex.load(run, load_model=False)
    files = [path.resolve() for path in index.paths]
    assert len(set(files)) == len(files) == 8
    assert index.labels[-2:] == ["other", "other"]  # only the new files, under data's class folder "other"


def test_adding_a_link_to_an_indexed_folder_adds_nothing(tmp_path, run_dir):
    gallery = write_images(tmp_path / "gallery", ["a"], 3)
    (tmp_path / "alias").symlink_to(gallery)
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    build_index(run, gallery, n_trees=2, **FAST)
    again = add_to_index(run, tmp_path / "alias", **FAST)
    assert again["n_items"] == 3
    assert (again["added"], again["already_indexed"]) == (False, 3)
