"""A class folder without an image is no class, and the scan says so in one line (retrieval.data.scan):
train, index and evaluate once dropped such a folder without a word while a stray file got a warning."""

from __future__ import annotations

import logging

from data_helpers import warning_messages, write_labelled_folder
from retrieval.data import scan_folder

NO_IMAGE = "hold no image and are not classes"


def test_class_folders_without_an_image_are_named_in_one_warning_line(tmp_path, caplog):
    root = write_labelled_folder(tmp_path / "d", {"a": 2, "b": 2})
    (root / "Empty Class").mkdir()
    (root / "Other").mkdir()
    (root / "Other" / ".DS_Store").write_bytes(b"\0")  # hidden files only
    (root / "Other" / ".thumbs").mkdir()
    with caplog.at_level(logging.WARNING, logger="retrieval"):
        folder = scan_folder(root)
    assert folder.class_names == ["a", "b"]
    lines = [m for m in warning_messages(caplog) if NO_IMAGE in m]
    assert lines == [f"2 class folder(s) of {root} hold no image and are not classes: Empty Class, Other"]
    assert len(warning_messages(caplog)) == 1


def test_a_folder_of_only_other_files_counts_too_and_many_are_named_briefly(tmp_path, caplog):
    root = write_labelled_folder(tmp_path / "d", {"a": 2, "b": 2})
    (root / "docs").mkdir()
    (root / "docs" / "Thumbs.db").write_bytes(b"\0")
    for name in ("e1", "e2", "e3", "e4"):
        (root / name / "nested").mkdir(parents=True)  # a nested folder without images is no image either
    with caplog.at_level(logging.WARNING, logger="retrieval"):
        scan_folder(root)
    (line,) = [m for m in warning_messages(caplog) if NO_IMAGE in m]
    assert line.startswith("5 class folder(s) of ") and line.endswith(": docs, e1, e2 (and 2 more)")
    assert any("1 non-image files" in m and "docs/Thumbs.db" in m for m in warning_messages(caplog))


def test_no_such_warning_for_classes_with_images_unreadable_ones_or_a_flat_folder(tmp_path, caplog):
    root = write_labelled_folder(tmp_path / "d", {"a": 2, "b": 2})
    (root / "broken").mkdir()
    (root / "broken" / "x.jpg").write_bytes(b"junk")  # an image file that cannot be read: its own warning
    with caplog.at_level(logging.WARNING, logger="retrieval"):
        scan_folder(root)
        scan_folder(root / "a")  # flat: a gallery of images, no class folders
    assert not [m for m in warning_messages(caplog) if NO_IMAGE in m]
    assert any("dropped 1 class folders" in m and "broken" in m for m in warning_messages(caplog))
