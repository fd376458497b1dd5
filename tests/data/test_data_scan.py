"""Tests of retrieval.data.scan: labelled and flat folders, what is skipped and warned about, subsets."""

from __future__ import annotations

import logging

import pytest

from data_helpers import warning_messages, write_image, write_labelled_folder, write_png_header
from retrieval import data
from retrieval.data import IMAGE_EXTENSIONS, brief_list, load_image, require_trainable, scan_folder
from retrieval.errors import RetrievalError


def test_scan_lists_images_sorted_by_class_then_name_with_class_labels(tmp_path):
    root = write_labelled_folder(tmp_path / "d", {"b_cls": 2, "a_cls": 3})
    write_image(root / "a_cls" / "nested" / "deep.jpg")
    folder = scan_folder(root)
    assert folder.labelled and folder.class_names == ["a_cls", "b_cls"]
    assert [folder.relative_path(i) for i in range(len(folder))] == [
        "a_cls/img_00.png", "a_cls/img_01.png", "a_cls/img_02.png", "a_cls/nested/deep.jpg",
        "b_cls/img_00.png", "b_cls/img_01.png",
    ]
    assert folder.labels == [0, 0, 0, 0, 1, 1]
    assert folder.class_counts() == {"a_cls": 4, "b_cls": 2}
    assert folder.skipped == [] and folder.non_images == []


def test_scan_accepts_every_supported_extension_in_any_case(tmp_path):
    formats = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".bmp": "BMP", ".gif": "GIF", ".webp": "WEBP",
               ".tif": "TIFF", ".tiff": "TIFF", ".pgm": "PPM", ".ppm": "PPM"}
    assert set(formats) == IMAGE_EXTENSIONS
    for i, (suffix, fmt) in enumerate(formats.items()):
        name = f"i{i}{suffix.upper() if i % 2 else suffix}"
        mode = "L" if suffix == ".pgm" else "RGB"
        write_image(tmp_path / "d" / "cls" / name, mode=mode, colour=90 if mode == "L" else (90, 90, 90), format=fmt)
    folder = scan_folder(tmp_path / "d")
    assert len(folder) == len(formats) and folder.skipped == []
    assert all(load_image(p).mode == "RGB" for p in folder.paths)


def test_scan_skips_corrupt_and_empty_images_with_one_warning_line(tmp_path, caplog):
    root = write_labelled_folder(tmp_path / "d", {"a": 2, "b": 2})
    (root / "a" / "empty.jpg").write_bytes(b"")
    (root / "b" / "garbage.png").write_bytes(b"this is not a png")
    write_png_header(root / "b" / "bad_crc.png", 16, 16).write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    with caplog.at_level(logging.WARNING, logger="retrieval"):
        folder = scan_folder(root)
    assert len(folder) == 4
    assert sorted(p.name for p in folder.skipped) == ["bad_crc.png", "empty.jpg", "garbage.png"]
    lines = [m for m in warning_messages(caplog) if "unreadable" in m]
    assert len(lines) == 1 and "3 unreadable" in lines[0] and "empty file" in lines[0]


def test_scan_counts_and_reports_non_image_files_without_failing(tmp_path, caplog):
    root = write_labelled_folder(tmp_path / "d", {"a": 2, "b": 2})
    (root / "a" / "notes.txt").write_text("hello")
    (root / "b" / "labels.csv").write_text("x,y")
    with caplog.at_level(logging.WARNING, logger="retrieval"):
        folder = scan_folder(root)
    assert len(folder) == 4
    assert sorted(p.name for p in folder.non_images) == ["labels.csv", "notes.txt"]
    assert any("2 non-image files" in m for m in warning_messages(caplog))


def test_scan_ignores_hidden_files_hidden_folders_and_top_level_files(tmp_path):
    root = write_labelled_folder(tmp_path / "d", {"a": 2, "b": 2})
    write_image(root / "a" / ".hidden.png")
    write_image(root / ".cache" / "x.png")
    write_image(root / "a" / ".thumbs" / "y.png")
    write_image(root / "top_level.png")
    (root / "README.md").write_text("about")
    folder = scan_folder(root)
    assert folder.class_names == ["a", "b"]
    assert len(folder) == 4 and folder.non_images == [] and folder.skipped == []


def test_flat_folder_scans_as_unlabelled_gallery_with_labels_minus_one(tmp_path):
    for i in range(3):
        write_image(tmp_path / "g" / f"{i}.jpg")
    folder = scan_folder(tmp_path / "g")
    assert not folder.labelled and folder.class_names == [] and folder.labels == [-1, -1, -1]
    assert folder.class_counts() == {}
    every = scan_folder(write_labelled_folder(tmp_path / "d", {"a": 2}), labelled=False)
    assert every.labels == [-1, -1] and every.relative_path(0) == "a/img_00.png"


def test_scan_raises_one_line_errors_for_missing_empty_or_classless_folders(tmp_path):
    with pytest.raises(RetrievalError, match="folder not found"):
        scan_folder(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RetrievalError, match="no usable images"):
        scan_folder(tmp_path / "empty")
    write_image(tmp_path / "flat" / "x.png")
    with pytest.raises(RetrievalError, match="no class sub-folders"):
        scan_folder(tmp_path / "flat", labelled=True)
    (tmp_path / "bad" / "a").mkdir(parents=True)
    (tmp_path / "bad" / "a" / "x.jpg").write_bytes(b"junk")
    with pytest.raises(RetrievalError, match="1 unreadable") as error:
        scan_folder(tmp_path / "bad")
    assert "\n" not in str(error.value)


def test_one_image_class_stays_in_gallery_but_is_warned_as_never_an_anchor(tmp_path, caplog):
    folder = scan_folder(write_labelled_folder(tmp_path / "d", {"a": 3, "b": 2, "single": 1}))
    assert folder.class_counts()["single"] == 1
    with caplog.at_level(logging.WARNING, logger="retrieval"):
        require_trainable(folder)
    assert any("single image" in m and "single" in m for m in warning_messages(caplog))


def test_scan_warns_when_pointed_at_a_folder_of_splits_and_names_the_split_to_use(tmp_path, caplog):
    write_labelled_folder(tmp_path / "splits" / "train", {"a": 2, "b": 2})
    write_labelled_folder(tmp_path / "splits" / "test", {"c": 2})
    with caplog.at_level(logging.WARNING, logger="retrieval"):
        folder = data.scan_folder(tmp_path / "splits")
    assert folder.class_names == ["test", "train"]  # still scanned as asked
    lines = [m for m in warning_messages(caplog) if "data splits" in m]
    assert len(lines) == 1 and "test, train" in lines[0] and str(tmp_path / "splits" / "train") in lines[0]


def test_scan_does_not_warn_about_splits_for_a_class_named_like_one_with_its_own_images(tmp_path, caplog):
    root = write_labelled_folder(tmp_path / "data", {"test": 2, "b": 2})
    write_labelled_folder(tmp_path / "data" / "b", {"session1": 2})  # nested images in a class that is not split-named
    with caplog.at_level(logging.WARNING, logger="retrieval"):
        data.scan_folder(root)
    assert not [m for m in warning_messages(caplog) if "data splits" in m]


def test_require_trainable_raises_when_no_class_has_two_images(tmp_path):
    folder = scan_folder(write_labelled_folder(tmp_path / "d", {"a": 1, "b": 1}))
    with pytest.raises(RetrievalError, match="no class has two or more images"):
        require_trainable(folder)
    write_image(tmp_path / "flat" / "x.png")
    with pytest.raises(RetrievalError, match="not a labelled folder"):
        require_trainable(scan_folder(tmp_path / "flat"))


def test_subset_keeps_requested_class_order_and_reindexes_labels(tmp_path):
    folder = scan_folder(write_labelled_folder(tmp_path / "d", {"a": 2, "b": 3, "c": 1}))
    part = folder.subset(["c", "a"])
    assert part.class_names == ["c", "a"] and part.labels == [0, 1, 1]
    assert [p.parent.name for p in part.paths] == ["c", "a", "a"]
    with pytest.raises(RetrievalError, match="zzz"):
        folder.subset(["zzz"])


def test_brief_list_names_the_first_three_and_counts_the_rest():
    assert brief_list(["a", "b"]) == "a, b"
    assert brief_list(["a", "b", "c"]) == "a, b, c"
    assert brief_list(["a", "b", "c", "d", "e"]) == "a, b, c (and 2 more)"
    assert brief_list([]) == ""


def test_a_symlink_loop_is_not_followed_into_a_class_holding_every_image(tmp_path, caplog):
    """``d/loop -> d`` once made a class "loop" of every image; folders are followed through symlinks
    (a class folder may live elsewhere), but never into a folder already scanned."""
    root = write_labelled_folder(tmp_path / "d", {"a": 2, "b": 3})
    (root / "loop").symlink_to(root, target_is_directory=True)
    (root / "a" / "back").symlink_to(root / "a", target_is_directory=True)  # a loop inside a class
    (root / "b2").symlink_to(root / "b", target_is_directory=True)  # the same class twice
    elsewhere = write_labelled_folder(tmp_path / "elsewhere", {"c": 2})
    (root / "c").symlink_to(elsewhere / "c", target_is_directory=True)  # a class folder kept elsewhere: followed
    with caplog.at_level(logging.WARNING, logger="retrieval"):
        folder = scan_folder(root)
    assert folder.class_names == ["a", "b", "c"]
    assert folder.class_counts() == {"a": 2, "b": 3, "c": 2}
    (line,) = [m for m in warning_messages(caplog) if "already" in m]
    assert "loop" in line and "b2" in line and "a/back" in line


def test_a_flat_scan_follows_a_symlink_loop_only_once(tmp_path):
    root = tmp_path / "flat"
    for i in range(3):
        write_image(root / f"{i}.png")
    write_image(root / "sub" / "x.png")
    (root / "sub" / "up").symlink_to(root, target_is_directory=True)
    folder = scan_folder(root, labelled=False)
    assert sorted(folder.relative_path(i) for i in range(len(folder))) == ["0.png", "1.png", "2.png", "sub/x.png"]
