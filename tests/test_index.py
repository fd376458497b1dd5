"""Tests for retrieval.index and the `retrieval index` / `retrieval search` commands.

A tiny random-init resnet10t run (embedding dimension 8, 32 px) and galleries of small
generated PNGs keep the whole file fast; the behaviour under test does not depend on the
model being trained.
"""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from retrieval import index as index_module
from retrieval.cli import app
from retrieval.errors import RetrievalError
from retrieval.index import (
    DEFAULT_N_TREES,
    GalleryIndex,
    add_to_index,
    build_index,
    exact_search,
    read_index_metadata,
)
from retrieval.models import EmbeddingModel, save_model

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


def index_files(run):
    return {p.name: p.read_bytes() for p in (run / "index").iterdir() if p.is_file() and p.name != ".lock"}


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


# --------------------------------------------------------------------------- metadata


def test_metadata_round_trip_keeps_paths_labels_and_build_parameters(indexed_run, gallery_dir):
    metadata = read_index_metadata(indexed_run)
    assert metadata["metric"] == "angular"
    assert metadata["embedding_dim"] == DIM
    assert metadata["n_items"] == 18
    assert metadata["n_trees"] == 10
    assert metadata["roots"] == [str(gallery_dir.resolve())]
    assert metadata["items"]["path"][:2] == ["apple/0_0.png", "apple/0_1.png"]
    assert metadata["items"]["label"][6] == "pear"
    assert len(metadata["model_fingerprint"]) == 16 and metadata["build_id"]

    gallery = GalleryIndex.load(indexed_run, precision="fp32")
    assert len(gallery) == 18
    assert gallery.labels == ["apple"] * 6 + ["pear"] * 6 + ["plum"] * 6
    assert all(path.is_file() for path in gallery.paths)
    assert gallery.embeddings.shape == (18, DIM)
    # Stored row i is the embedding of item i's image: the rows are aligned with the paths.
    for item in (0, 7, 17):
        assert gallery.embed(gallery.path(item)) == pytest.approx(np.asarray(gallery.embeddings[item]), abs=1e-4)


def test_flat_gallery_has_no_labels_and_json_gives_null(tmp_path, run_dir):
    run = save_tiny_run(tmp_path / "run")
    flat = write_images(tmp_path / "flat", None, 5)
    build_index(run, flat, n_trees=3, **FAST)
    gallery = GalleryIndex.load(run)
    assert gallery.labels == [None] * 5
    neighbour = gallery.search(flat / "0_2.png", k=1)[0]
    assert neighbour.to_json()["label"] is None
    assert neighbour.path == str((flat / "0_2.png").resolve())


def test_unreadable_gallery_images_are_skipped_reported_and_rows_stay_aligned(tmp_path, caplog):
    run = save_tiny_run(tmp_path / "run")
    gallery_dir = write_images(tmp_path / "gallery", ["a", "b"], 3)
    (gallery_dir / "a" / "broken.png").write_bytes(b"not an image")
    # A truncated JPEG passes the scan's cheap check but fails when decoded, inside the loader.
    jpeg = gallery_dir / "b" / "0_9.jpg"
    Image.fromarray(np.full((40, 40, 3), 90, np.uint8)).save(jpeg, quality=90)
    jpeg.write_bytes(jpeg.read_bytes()[:300])
    with caplog.at_level(logging.WARNING, logger="retrieval"):
        metadata = build_index(run, gallery_dir, n_trees=3, **FAST)
    assert metadata["n_items"] == 6
    assert sorted(metadata["skipped"]) == sorted([str(gallery_dir / "a" / "broken.png"), str(jpeg)])
    assert "broken.png" in caplog.text and "0_9.jpg" in caplog.text
    gallery = GalleryIndex.load(run, precision="fp32")
    assert "b/0_9.jpg" not in gallery.relative_paths
    for item in range(len(gallery)):
        assert gallery.embed(gallery.path(item)) == pytest.approx(np.asarray(gallery.embeddings[item]), abs=1e-4)


# --------------------------------------------------------------------------- --add


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
    import retrieval.models as models_module

    original = models_module.embed_paths

    def counting(model, paths, *args, **kwargs):
        embedded.extend(paths)
        return original(model, paths, *args, **kwargs)

    monkeypatch.setattr(models_module, "embed_paths", counting)
    metadata = add_to_index(run, write_images(tmp_path / "new", ["b"], 3, seed=5), **FAST)
    assert len(embedded) == 3 and metadata["n_items"] == 7


def test_adding_a_folder_already_indexed_adds_nothing(tmp_path, run_dir, caplog):
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    folder = write_images(tmp_path / "g", ["a"], 4)
    build_index(run, folder, n_trees=3, **FAST)
    before = index_files(run)
    with caplog.at_level(logging.WARNING, logger="retrieval"):
        assert add_to_index(run, folder, **FAST)["n_items"] == 4
    assert "already in the index" in caplog.text
    assert index_files(run) == before


# --------------------------------------------------------------------------- errors and safety


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


def test_failed_rebuild_leaves_the_previous_index_intact(tmp_path, indexed_run, monkeypatch):
    run = tmp_path / "run"
    shutil.copytree(indexed_run, run)
    before = index_files(run)
    results = [n.item for n in GalleryIndex.load(run).search(np.ones(DIM, np.float32), k=5)]

    def crash_mid_build(*args, **kwargs):
        raise KeyboardInterrupt  # e.g. Ctrl-C while the trees are built

    monkeypatch.setattr(index_module, "build_annoy", crash_mid_build)
    with pytest.raises(KeyboardInterrupt):
        build_index(run, write_images(tmp_path / "other", ["x", "y"], 3), n_trees=4, **FAST)
    assert index_files(run) == before
    assert not list((run / "index").glob(".build-*"))
    assert [n.item for n in GalleryIndex.load(run).search(np.ones(DIM, np.float32), k=5)] == results


def test_failed_move_into_place_never_pairs_metadata_with_another_builds_index(tmp_path, indexed_run, gallery_dir, monkeypatch):
    run = tmp_path / "run"
    shutil.copytree(indexed_run, run)
    real_replace = index_module.os.replace

    def crash_before_metadata(source, target):
        if str(target).endswith("gallery.json"):
            raise OSError("disk full")  # data files already moved: the old gallery.json remains
        real_replace(source, target)

    monkeypatch.setattr(index_module.os, "replace", crash_before_metadata)
    with pytest.raises(OSError):
        build_index(run, gallery_dir, n_trees=7, **FAST)
    monkeypatch.setattr(index_module.os, "replace", real_replace)
    with pytest.raises(RetrievalError, match="does not belong"):
        GalleryIndex.load(run)
    build_index(run, gallery_dir, n_trees=7, **FAST)  # a rebuild repairs it
    assert GalleryIndex.load(run).n_trees == 7


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


# --------------------------------------------------------------------------- command line


def test_cli_index_then_search_prints_json_neighbours_and_a_table(tmp_path, run_dir, gallery_dir):
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    runner = CliRunner()
    built = runner.invoke(app, ["index", str(run), str(gallery_dir), "--n-trees", "4", "--device", "cpu", "--json", "--quiet"])
    assert built.exit_code == 0, built.output
    summary = json.loads(built.stdout)
    assert summary["n_items"] == 18 and summary["n_trees"] == 4

    query = gallery_dir / "plum" / "2_0.png"
    found = runner.invoke(app, ["search", str(run), str(query), "-k", "4", "--json"])
    assert found.exit_code == 0, found.output
    payload = json.loads(found.stdout)
    assert list(payload) == ["neighbours"] and len(payload["neighbours"]) == 4
    first = payload["neighbours"][0]
    assert set(first) == {"path", "label", "distance", "similarity"}
    assert first["path"] == str(query.resolve()) and first["label"] == "plum"

    exact = json.loads(runner.invoke(app, ["search", str(run), str(query), "-k", "4", "--json", "--exact"]).stdout)
    assert [n["path"] for n in exact["neighbours"]] == [n["path"] for n in payload["neighbours"]]

    table = runner.invoke(app, ["search", str(run), str(query), "-k", "2"])
    assert table.exit_code == 0 and "plum" in table.stdout and "distance" in table.stdout


def test_cli_add_appends_a_folder(tmp_path, run_dir, gallery_dir):
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    runner = CliRunner()
    fast = ["--device", "cpu", "--workers", "0", "--quiet"]
    assert runner.invoke(app, ["index", str(run), str(gallery_dir), "--n-trees", "3", *fast]).exit_code == 0
    extra = write_images(tmp_path / "extra", ["fig"], 2, seed=9)
    added = runner.invoke(app, ["index", str(run), "--add", str(extra), "--json", *fast])
    assert added.exit_code == 0, added.output
    assert json.loads(added.stdout)["n_items"] == 20 and json.loads(added.stdout)["n_trees"] == 3


def test_cli_errors_are_retrieval_errors_with_one_line(tmp_path, run_dir, gallery_dir):
    runner = CliRunner()
    missing = runner.invoke(app, ["search", str(run_dir), str(gallery_dir / "apple" / "0_0.png")])
    assert isinstance(missing.exception, RetrievalError)
    assert "retrieval index" in str(missing.exception) and "\n" not in str(missing.exception)
    both = runner.invoke(app, ["index", str(run_dir), str(gallery_dir), "--add", str(gallery_dir)])
    assert isinstance(both.exception, RetrievalError)
    not_image = tmp_path / "query.png"
    not_image.write_bytes(b"\x00" * 10)
    bad = runner.invoke(app, ["search", str(run_dir), str(not_image)])
    assert isinstance(bad.exception, RetrievalError) and "query.png" in str(bad.exception)


def test_cli_help_states_the_default_number_of_trees():
    result = CliRunner().invoke(app, ["index", "--help"])
    assert f"default {DEFAULT_N_TREES}" in result.stdout
