"""Tests for retrieval.index.gallery: GalleryIndex search results (Annoy against exact search, the
distance and similarity they report) and the refusals of GalleryIndex.load and .search."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image

from index_helpers import DIM, gallery_dir, indexed_run, run_dir, save_tiny_run  # noqa: F401 (fixtures)
from retrieval.errors import RetrievalError
from retrieval.index import GalleryIndex, exact_search

# --------------------------------------------------------------------------- search results


def test_annoy_search_returns_the_exact_top_k_on_a_small_gallery(indexed_run):
    gallery = GalleryIndex.load(indexed_run)
    rng = np.random.default_rng(1)
    queries = [*gallery.embeddings[:5], *rng.normal(size=(10, DIM)).astype(np.float32)]
    for query in queries:
        approximate = gallery.search(query, k=7)
        exact = gallery.search(query, k=7, exact=True)
        assert [n.item for n in approximate] == [n.item for n in exact]
        assert [n.distance for n in approximate] == pytest.approx([n.distance for n in exact], abs=1e-6)


def test_distance_is_euclidean_between_unit_embeddings_and_similarity_their_dot_product(indexed_run):
    gallery = GalleryIndex.load(indexed_run)
    query = np.random.default_rng(2).normal(size=DIM).astype(np.float32)
    unit = query / np.linalg.norm(query)
    for neighbour in gallery.search(query, k=5):
        stored = gallery.embeddings[neighbour.item]
        assert neighbour.distance == pytest.approx(float(np.linalg.norm(unit - stored)), abs=1e-5)
        assert neighbour.similarity == pytest.approx(float(unit @ stored), abs=1e-5)
    distances = [n.distance for n in gallery.search(query, k=18)]
    assert distances == sorted(distances)


def test_an_image_finds_itself_first_with_distance_zero(indexed_run, gallery_dir):
    gallery = GalleryIndex.load(indexed_run)
    path = gallery_dir / "pear" / "1_3.png"
    first = gallery.search(path, k=3)[0]
    assert first.path == str(path.resolve())
    assert first.label == "pear"
    # The query is embedded alone, the gallery in batches of 8 and in another precision (auto):
    # the same image lands within a few 1e-3 of itself.
    assert first.distance == pytest.approx(0.0, abs=1e-2)
    by_pil = gallery.search(Image.open(path), k=3)
    by_embedding = gallery.search(gallery.embed(path), k=3)
    assert [n.item for n in by_pil] == [n.item for n in by_embedding] == [n.item for n in gallery.search(path, k=3)]


def test_exact_search_matches_a_full_sort_across_chunks():
    rng = np.random.default_rng(0)
    embeddings = rng.normal(size=(1000, 16)).astype(np.float32)
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    query = embeddings[3] + 0.1 * rng.normal(size=16).astype(np.float32)
    query /= np.linalg.norm(query)
    ids, distances = exact_search(embeddings, query, 25, chunk_rows=64)
    expected = np.argsort(np.linalg.norm(embeddings - query, axis=1))[:25]
    assert ids.tolist() == expected.tolist()
    assert distances == pytest.approx(np.linalg.norm(embeddings[expected] - query, axis=1), abs=1e-5)


# --------------------------------------------------------------------------- refusals


def test_search_without_an_index_says_which_command_builds_one(run_dir):
    with pytest.raises(RetrievalError, match="retrieval index"):
        GalleryIndex.load(run_dir)


def test_index_built_by_another_model_is_refused(tmp_path, indexed_run):
    run = tmp_path / "run"
    shutil.copytree(indexed_run, run)
    save_tiny_run(run, seed=1)  # retrained: same architecture, other weights
    with pytest.raises(RetrievalError, match="another model.*fingerprint"):
        GalleryIndex.load(run)
    save_tiny_run(run, seed=0, dim=DIM + 4)
    with pytest.raises(RetrievalError, match="another model.*dimension"):
        GalleryIndex.load(run)


def test_unreadable_or_non_image_query_is_a_one_line_error(tmp_path, indexed_run):
    gallery = GalleryIndex.load(indexed_run)
    text_file = tmp_path / "notes.txt"
    text_file.write_text("hello")
    with pytest.raises(RetrievalError, match="notes.txt"):
        gallery.search(text_file)
    with pytest.raises(RetrievalError, match="not found"):
        gallery.search(tmp_path / "missing.jpg")
    with pytest.raises(RetrievalError, match="dimension"):
        gallery.search(np.ones(DIM + 1, np.float32))
