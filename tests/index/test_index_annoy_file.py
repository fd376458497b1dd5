"""Tests for retrieval.index.annoy_file: the Annoy file built from stored rows, and search_k."""

from __future__ import annotations

import numpy as np

from retrieval.index import DEFAULT_N_TREES, DEFAULT_SEARCH_K, build_annoy, search_k_for
from retrieval.index.annoy_file import open_annoy


def unit_rows(n, dim=8, seed=0):
    x = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_an_index_built_from_the_npy_file_equals_one_built_from_the_array(tmp_path):
    embeddings = unit_rows(300)
    np.save(tmp_path / "e.npy", embeddings)
    stages = []
    from_file = build_annoy(tmp_path / "e.npy", tmp_path / "file.ann", n_trees=5, seed=3, n_jobs=1,
                            chunk_rows=128, on_progress=lambda *p: stages.append(p))
    from_array = build_annoy(embeddings, tmp_path / "array.ann", n_trees=5, seed=3, n_jobs=1)
    assert stages == [("add", 128, 300), ("add", 256, 300), ("add", 300, 300), ("build", 0, 1), ("build", 1, 1)]
    for query in embeddings[:20]:
        assert from_file.get_nns_by_vector(query.tolist(), 10) == from_array.get_nns_by_vector(query.tolist(), 10)
    from_file.unload()
    from_array.unload()


def test_angular_distance_of_the_opened_file_is_the_distance_between_unit_rows(tmp_path):
    embeddings = unit_rows(50)
    build_annoy(embeddings, tmp_path / "g.ann", n_trees=3, n_jobs=1).unload()
    index = open_annoy(tmp_path / "g.ann", 8)
    assert index.get_n_items() == 50
    ids, distances = index.get_nns_by_vector(embeddings[0].tolist(), 5, include_distances=True)
    np.testing.assert_allclose(distances, np.linalg.norm(embeddings[ids] - embeddings[0], axis=1), atol=1e-3)
    index.unload()


def test_search_k_is_the_default_at_ten_neighbours_and_grows_with_k():
    assert search_k_for(10) == DEFAULT_SEARCH_K
    assert search_k_for(1) == DEFAULT_SEARCH_K
    assert search_k_for(20) == 2 * DEFAULT_SEARCH_K
    assert search_k_for(200) == 20 * DEFAULT_SEARCH_K
    # At least n_trees * k, Annoy's own default, however many trees.
    assert search_k_for(10, n_trees=50 * DEFAULT_N_TREES) == 500 * DEFAULT_N_TREES
