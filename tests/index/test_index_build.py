"""Tests for retrieval.index.build: what a build records in gallery.json, the gallery images it
skips, and the build transaction (a failed build never damages the index in place)."""

from __future__ import annotations

import logging
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from index_helpers import (  # noqa: F401 (fixtures)
    DIM,
    FAST,
    gallery_dir,
    index_files,
    indexed_run,
    run_dir,
    save_tiny_run,
    write_images,
)
from retrieval.index import GalleryIndex, build_index, read_index_metadata
from retrieval.index import build as build_module

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
    assert sorted(metadata["skipped"]) == ["a/broken.png", "b/0_9.jpg"]  # relative to the gallery folder, as items are
    assert "broken.png" in caplog.text and "0_9.jpg" in caplog.text
    gallery = GalleryIndex.load(run, precision="fp32")
    assert "b/0_9.jpg" not in gallery.relative_paths
    for item in range(len(gallery)):
        assert gallery.embed(gallery.path(item)) == pytest.approx(np.asarray(gallery.embeddings[item]), abs=1e-4)


# --------------------------------------------------------------------------- the build transaction


def test_failed_rebuild_leaves_the_previous_index_intact(tmp_path, indexed_run, monkeypatch):
    run = tmp_path / "run"
    shutil.copytree(indexed_run, run, symlinks=True)
    before = index_files(run)
    results = [n.item for n in GalleryIndex.load(run).search(np.ones(DIM, np.float32), k=5)]

    def crash_mid_build(*args, **kwargs):
        raise KeyboardInterrupt  # e.g. Ctrl-C while the trees are built

    monkeypatch.setattr(build_module, "build_annoy", crash_mid_build)
    with pytest.raises(KeyboardInterrupt):
        build_index(run, write_images(tmp_path / "other", ["x", "y"], 3), n_trees=4, **FAST)
    assert index_files(run) == before
    assert not list((run / "index").glob(".build-*"))
    versions = run / "index" / ".versions"
    assert {p.name for p in versions.iterdir()} <= {"current", os.readlink(versions / "current")}  # the failed build's folder is gone
    assert [n.item for n in GalleryIndex.load(run).search(np.ones(DIM, np.float32), k=5)] == results


@pytest.mark.parametrize("mask", [0o022, 0o077], ids=["umask022", "umask077"])
def test_index_files_follow_the_umask(tmp_path, run_dir, mask):
    import stat

    run = tmp_path / "run"
    shutil.copytree(run_dir, run, symlinks=True)
    before = os.umask(mask)
    try:
        build_index(run, write_images(tmp_path / "gallery", ["a"], 3), n_trees=2, **FAST)
    finally:
        os.umask(before)
    entries = [p for p in (run / "index").rglob("*") if not p.is_symlink()]
    assert {"gallery.ann", "gallery.json", "embeddings.npy"} <= {p.name for p in entries}
    for path in entries:
        expected = (0o666 if path.is_file() else 0o777) & ~mask
        assert stat.S_IMODE(path.stat().st_mode) == expected, f"{path.name}: {oct(path.stat().st_mode)}"


def test_a_broken_link_in_a_flat_gallery_is_warned_of_and_counted_as_in_a_labelled_one(tmp_path, run_dir, caplog):
    flat = write_images(tmp_path / "flat", None, 3)
    (flat / "gone.png").symlink_to(tmp_path / "nowhere.png")
    with caplog.at_level(logging.WARNING, logger="retrieval"):
        metadata = build_index(shutil.copytree(run_dir, tmp_path / "run"), flat, n_trees=2, **FAST)
    assert metadata["n_items"] == 3 and metadata["skipped"] == ["gone.png"]
    assert any("unreadable" in r.getMessage() and "gone.png" in r.getMessage() for r in caplog.records), caplog.text


def test_skipped_paths_are_relative_to_the_gallery_and_files_outside_it_are_never_opened(tmp_path, run_dir, monkeypatch, caplog):
    """Built from a relative GALLERY_DIR with a link out of the gallery (b/loop -> ../..): gallery.json
    lists the gallery's own unreadable file relative to it, and nothing outside it was opened or listed."""
    from retrieval.data import scan as scan_module

    gallery = write_images(tmp_path / "photos" / "gallery", ["a"], 3)
    (gallery / "a" / "empty.png").write_bytes(b"")
    (gallery / "b").mkdir()
    (gallery / "b" / "loop").symlink_to("../..")
    (tmp_path / "photos" / "private").mkdir()
    (tmp_path / "photos" / "private" / "empty.png").write_bytes(b"")  # unreadable, outside the gallery
    write_images(tmp_path / "photos" / "private", ["c"], 1, seed=4)  # readable, outside the gallery
    opened = []
    check = scan_module.unreadable_reason
    monkeypatch.setattr(scan_module, "unreadable_reason", lambda path: opened.append(path.resolve()) or check(path))
    monkeypatch.chdir(tmp_path)
    with caplog.at_level(logging.WARNING, logger="retrieval"):
        metadata = build_index(shutil.copytree(run_dir, tmp_path / "run"), "photos/gallery", n_trees=2, **FAST)
    assert metadata["skipped"] == ["a/empty.png"]
    assert sorted(metadata["items"]["path"]) == ["a/0_0.png", "a/0_1.png", "a/0_2.png"]
    assert opened and all(path.is_relative_to(gallery.resolve()) for path in opened), opened
    left_out = [r.getMessage() for r in caplog.records if "unreadable" in r.getMessage() or "non-image" in r.getMessage()]
    assert left_out and not any("private" in message for message in left_out), left_out  # named neither skipped nor ignored
    assert "reached through symbolic links that leave the folder are not indexed" in caplog.text  # the links are reported
