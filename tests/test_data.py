"""Tests of retrieval.data: scanning, image loading, class split, P x K sampler, transforms, loader, CSVs.

Images are tiny and generated in tmp_path with PIL; the only real data used is grocery's
classes.csv (skipped, with the reason, when ../shared/datasets is absent).
"""

from __future__ import annotations

import io
import logging
import os
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from retrieval import data
from retrieval.errors import RetrievalError
from retrieval.data import (
    IMAGE_EXTENSIONS,
    ImageDataset,
    PKSampler,
    build_transforms,
    collate_images,
    load_image,
    load_image_bytes,
    make_loader,
    read_class_groups,
    read_class_pairs,
    require_trainable,
    scan_folder,
    split_classes,
)

DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
DATA_CONFIG = {
    "input_size": (3, 32, 32),
    "mean": (0.485, 0.456, 0.406),
    "std": (0.229, 0.224, 0.225),
    "interpolation": "bicubic",
    "crop_pct": 0.875,
}


def _image(path: Path, size=(16, 16), colour=(200, 30, 30), mode="RGB", **save_options) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, colour).save(path, **save_options)
    return path


def _labelled_folder(root: Path, counts: dict[str, int], size=(16, 16)) -> Path:
    for c, (name, n) in enumerate(counts.items()):
        for i in range(n):
            _image(root / name / f"img_{i:02d}.png", size=size, colour=(10 * c, 5 * i, 100))
    return root


def _png_header(path: Path, width: int, height: int) -> Path:
    """A tiny PNG file whose header claims width x height pixels (a decompression bomb's shape)."""

    def chunk(tag: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + tag + payload + struct.pack(">I", zlib.crc32(tag + payload))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))
    return path


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "retrieval" and r.levelno == logging.WARNING]


# ------------------------------------------------------------------------------------------
# Scanning
# ------------------------------------------------------------------------------------------


def test_scan_lists_images_sorted_by_class_then_name_with_class_labels(tmp_path):
    root = _labelled_folder(tmp_path / "d", {"b_cls": 2, "a_cls": 3})
    _image(root / "a_cls" / "nested" / "deep.jpg")
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
        _image(tmp_path / "d" / "cls" / name, mode=mode, colour=90 if mode == "L" else (90, 90, 90), format=fmt)
    folder = scan_folder(tmp_path / "d")
    assert len(folder) == len(formats) and folder.skipped == []
    assert all(load_image(p).mode == "RGB" for p in folder.paths)


def test_scan_skips_corrupt_and_empty_images_with_one_warning_line(tmp_path, caplog):
    root = _labelled_folder(tmp_path / "d", {"a": 2, "b": 2})
    (root / "a" / "empty.jpg").write_bytes(b"")
    (root / "b" / "garbage.png").write_bytes(b"this is not a png")
    _png_header(root / "b" / "bad_crc.png", 16, 16).write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    with caplog.at_level(logging.WARNING, logger="retrieval"):
        folder = scan_folder(root)
    assert len(folder) == 4
    assert sorted(p.name for p in folder.skipped) == ["bad_crc.png", "empty.jpg", "garbage.png"]
    lines = [m for m in _warnings(caplog) if "unreadable" in m]
    assert len(lines) == 1 and "3 unreadable" in lines[0] and "empty file" in lines[0]


def test_scan_counts_and_reports_non_image_files_without_failing(tmp_path, caplog):
    root = _labelled_folder(tmp_path / "d", {"a": 2, "b": 2})
    (root / "a" / "notes.txt").write_text("hello")
    (root / "b" / "labels.csv").write_text("x,y")
    with caplog.at_level(logging.WARNING, logger="retrieval"):
        folder = scan_folder(root)
    assert len(folder) == 4
    assert sorted(p.name for p in folder.non_images) == ["labels.csv", "notes.txt"]
    assert any("2 non-image files" in m for m in _warnings(caplog))


def test_scan_ignores_hidden_files_hidden_folders_and_top_level_files(tmp_path):
    root = _labelled_folder(tmp_path / "d", {"a": 2, "b": 2})
    _image(root / "a" / ".hidden.png")
    _image(root / ".cache" / "x.png")
    _image(root / "a" / ".thumbs" / "y.png")
    _image(root / "top_level.png")
    (root / "README.md").write_text("about")
    folder = scan_folder(root)
    assert folder.class_names == ["a", "b"]
    assert len(folder) == 4 and folder.non_images == [] and folder.skipped == []


def test_flat_folder_scans_as_unlabelled_gallery_with_labels_minus_one(tmp_path):
    for i in range(3):
        _image(tmp_path / "g" / f"{i}.jpg")
    folder = scan_folder(tmp_path / "g")
    assert not folder.labelled and folder.class_names == [] and folder.labels == [-1, -1, -1]
    assert folder.class_counts() == {}
    every = scan_folder(_labelled_folder(tmp_path / "d", {"a": 2}), labelled=False)
    assert every.labels == [-1, -1] and every.relative_path(0) == "a/img_00.png"


def test_scan_raises_one_line_errors_for_missing_empty_or_classless_folders(tmp_path):
    with pytest.raises(RetrievalError, match="folder not found"):
        scan_folder(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RetrievalError, match="no usable images"):
        scan_folder(tmp_path / "empty")
    _image(tmp_path / "flat" / "x.png")
    with pytest.raises(RetrievalError, match="no class sub-folders"):
        scan_folder(tmp_path / "flat", labelled=True)
    (tmp_path / "bad" / "a").mkdir(parents=True)
    (tmp_path / "bad" / "a" / "x.jpg").write_bytes(b"junk")
    with pytest.raises(RetrievalError, match="1 unreadable") as error:
        scan_folder(tmp_path / "bad")
    assert "\n" not in str(error.value)


def test_one_image_class_stays_in_gallery_but_is_warned_as_never_an_anchor(tmp_path, caplog):
    folder = scan_folder(_labelled_folder(tmp_path / "d", {"a": 3, "b": 2, "single": 1}))
    assert folder.class_counts()["single"] == 1
    with caplog.at_level(logging.WARNING, logger="retrieval"):
        require_trainable(folder)
    assert any("single image" in m and "single" in m for m in _warnings(caplog))


def test_scan_warns_when_pointed_at_a_folder_of_splits_and_names_the_split_to_use(tmp_path, caplog):
    _labelled_folder(tmp_path / "splits" / "train", {"a": 2, "b": 2})
    _labelled_folder(tmp_path / "splits" / "test", {"c": 2})
    with caplog.at_level(logging.WARNING, logger="retrieval"):
        folder = data.scan_folder(tmp_path / "splits")
    assert folder.class_names == ["test", "train"]  # still scanned as asked
    lines = [m for m in _warnings(caplog) if "data splits" in m]
    assert len(lines) == 1 and "test, train" in lines[0] and str(tmp_path / "splits" / "train") in lines[0]


def test_scan_does_not_warn_about_splits_for_a_class_named_like_one_with_its_own_images(tmp_path, caplog):
    root = _labelled_folder(tmp_path / "data", {"test": 2, "b": 2})
    _labelled_folder(tmp_path / "data" / "b", {"session1": 2})  # nested images in a class that is not split-named
    with caplog.at_level(logging.WARNING, logger="retrieval"):
        data.scan_folder(root)
    assert not [m for m in _warnings(caplog) if "data splits" in m]


def test_require_trainable_raises_when_no_class_has_two_images(tmp_path):
    folder = scan_folder(_labelled_folder(tmp_path / "d", {"a": 1, "b": 1}))
    with pytest.raises(RetrievalError, match="no class has two or more images"):
        require_trainable(folder)
    _image(tmp_path / "flat" / "x.png")
    with pytest.raises(RetrievalError, match="not a labelled folder"):
        require_trainable(scan_folder(tmp_path / "flat"))


def test_subset_keeps_requested_class_order_and_reindexes_labels(tmp_path):
    folder = scan_folder(_labelled_folder(tmp_path / "d", {"a": 2, "b": 3, "c": 1}))
    part = folder.subset(["c", "a"])
    assert part.class_names == ["c", "a"] and part.labels == [0, 1, 1]
    assert [p.parent.name for p in part.paths] == ["c", "a", "a"]
    with pytest.raises(RetrievalError, match="zzz"):
        folder.subset(["zzz"])


# ------------------------------------------------------------------------------------------
# Loading images
# ------------------------------------------------------------------------------------------


def test_load_image_applies_exif_orientation(tmp_path):
    pixels = np.zeros((20, 40, 3), np.uint8)  # 40 wide, 20 high: left half red, right half blue
    pixels[:, :20] = (255, 0, 0)
    pixels[:, 20:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    path = tmp_path / "rotated.jpg"
    Image.fromarray(pixels).save(path, exif=exif, quality=95)
    image = load_image(path)
    assert image.size == (20, 40)  # now 20 wide, 40 high
    upright = np.asarray(image).astype(int)
    assert upright[5, 10, 0] > 200 and upright[5, 10, 2] < 60  # the left (red) half is now on top
    assert upright[35, 10, 2] > 200 and upright[35, 10, 0] < 60


def test_load_image_converts_greyscale_and_palette_to_rgb(tmp_path):
    grey = load_image(_image(tmp_path / "grey.png", mode="L", colour=77))
    assert grey.mode == "RGB" and grey.getpixel((3, 3)) == (77, 77, 77)
    palette = Image.new("P", (8, 8), 1)
    palette.putpalette([0, 0, 0, 10, 120, 230] + [0] * 762)
    palette.save(tmp_path / "palette.gif")
    assert load_image(tmp_path / "palette.gif").getpixel((0, 0)) == (10, 120, 230)
    bilevel = load_image(_image(tmp_path / "bw.bmp", mode="1", colour=1))
    assert bilevel.getpixel((0, 0)) == (255, 255, 255)


def test_load_image_composites_transparency_on_white(tmp_path):
    rgba = np.zeros((4, 3, 4), np.uint8)
    rgba[0] = (255, 0, 0, 0)  # fully transparent
    rgba[1] = (0, 0, 255, 255)  # opaque blue
    rgba[2] = (255, 0, 0, 128)  # half-transparent red
    rgba[3] = (0, 255, 0, 255)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "alpha.png")
    rgb = np.asarray(load_image(tmp_path / "alpha.png")).astype(int)
    assert tuple(rgb[0, 0]) == (255, 255, 255)
    assert tuple(rgb[1, 0]) == (0, 0, 255)
    assert np.abs(rgb[2, 0] - (255, 127, 127)).max() <= 1
    palette = Image.new("P", (4, 4), 0)
    palette.putpalette([9, 9, 9, 200, 0, 0] + [0] * 762)
    palette.putpixel((0, 0), 1)
    palette.save(tmp_path / "trns.png", transparency=0)
    image = load_image(tmp_path / "trns.png")
    assert image.getpixel((1, 1)) == (255, 255, 255) and image.getpixel((0, 0)) == (200, 0, 0)


def test_load_image_scales_16_bit_greyscale_instead_of_clipping(tmp_path):
    values = np.array([[0, 257 * 128, 65535, 257 * 64]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    rgb = np.asarray(load_image(tmp_path / "deep.png"))
    assert rgb[0, :, 0].tolist() == [0, 128, 255, 64] and (rgb[..., 0] == rgb[..., 2]).all()
    Image.fromarray(values.astype(np.int32)).save(tmp_path / "deep32.tif")  # mode "I"
    assert np.asarray(load_image(tmp_path / "deep32.tif"))[0, :, 1].tolist() == [0, 128, 255, 64]


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_decompression_bomb_is_refused_with_a_clear_message_not_a_crash(tmp_path, caplog):
    bomb = _png_header(tmp_path / "bomb.png", 20000, 20000)  # 400 MP: Pillow's own bomb error
    with pytest.raises(RetrievalError, match="too large") as error:
        load_image(bomb)
    assert "bomb.png" in str(error.value)
    big = _png_header(tmp_path / "big.png", 11000, 10000)  # 110 MP: above our MAX_IMAGE_PIXELS
    with pytest.raises(RetrievalError, match="11000x10000 pixels"):
        load_image(big)
    with pytest.raises(RetrievalError, match="too large"):
        load_image_bytes(bomb.read_bytes(), "upload.png")
    _labelled_folder(tmp_path / "d", {"a": 2, "b": 2}, size=(4, 4))
    (tmp_path / "d" / "a" / "bomb.png").write_bytes(bomb.read_bytes())
    (tmp_path / "d" / "b" / "big.png").write_bytes(big.read_bytes())
    with caplog.at_level(logging.WARNING, logger="retrieval"):
        folder = scan_folder(tmp_path / "d")
    assert sorted(p.name for p in folder.skipped) == ["big.png", "bomb.png"] and len(folder) == 4
    assert any("too large" in m for m in _warnings(caplog))


def test_scan_skips_images_above_max_image_pixels(tmp_path, monkeypatch):
    root = _labelled_folder(tmp_path / "d", {"a": 2, "b": 2}, size=(8, 8))
    _image(root / "a" / "large.png", size=(40, 40))
    monkeypatch.setattr(data, "MAX_IMAGE_PIXELS", 1000)
    folder = scan_folder(root)
    assert [p.name for p in folder.skipped] == ["large.png"] and len(folder) == 4
    with pytest.raises(RetrievalError, match="MAX_IMAGE_PIXELS"):
        load_image(root / "a" / "large.png")


def test_load_image_bytes_matches_load_image_and_names_the_upload_in_errors(tmp_path):
    path = _image(tmp_path / "x.png", size=(9, 5), colour=(1, 2, 3))
    from_bytes = load_image_bytes(path.read_bytes(), "x.png")
    assert from_bytes.mode == "RGB" and from_bytes.tobytes() == load_image(path).tobytes()
    with pytest.raises(RetrievalError, match="upload.jpg"):
        load_image_bytes(b"not an image", "upload.jpg")
    with pytest.raises(RetrievalError, match="empty"):
        load_image_bytes(b"", "upload.jpg")


def test_truncated_jpeg_passes_the_cheap_scan_but_load_raises_naming_the_file(tmp_path):
    noise = np.random.default_rng(0).integers(0, 255, (48, 48, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, "JPEG")
    path = tmp_path / "d" / "a" / "cut.jpg"
    _labelled_folder(tmp_path / "d", {"a": 2, "b": 2})
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    assert path in scan_folder(tmp_path / "d").paths
    with pytest.raises(RetrievalError, match="cut.jpg"):
        load_image(path)
    with pytest.raises(RetrievalError, match="image not found"):
        load_image(tmp_path / "missing.jpg")


# ------------------------------------------------------------------------------------------
# Class split
# ------------------------------------------------------------------------------------------


def _split_folder(tmp_path):
    counts = {f"c{i:02d}": 2 + i % 3 for i in range(10)} | {"single_a": 1, "single_b": 1}
    return scan_folder(_labelled_folder(tmp_path / "d", counts, size=(4, 4)), verify=False)


def test_split_classes_is_disjoint_and_deterministic_per_seed(tmp_path):
    folder = _split_folder(tmp_path)
    train, val = split_classes(folder, 0.3, seed=0)
    assert not set(train.class_names) & set(val.class_names)
    assert sorted(train.class_names + val.class_names) == folder.class_names
    assert len(val.class_names) == round(0.3 * 12) and len(train) + len(val) == len(folder)
    assert set(train.paths).isdisjoint(val.paths)
    assert train.labels == sorted(train.labels) and max(val.labels) == len(val.class_names) - 1
    again_train, again_val = split_classes(folder, 0.3, seed=0)
    assert again_val.class_names == val.class_names and again_train.paths == train.paths
    assert split_classes(folder, 0.3, seed=1)[1].class_names != val.class_names


def test_split_sends_only_classes_with_two_images_to_validation_and_at_least_two(tmp_path):
    folder = _split_folder(tmp_path)
    for seed in range(10):
        _, val = split_classes(folder, 0.3, seed=seed)
        assert all(count >= 2 for count in val.class_counts().values())
    _, val = split_classes(folder, 0.01, seed=0)
    assert len(val.class_names) == 2
    train, val = split_classes(folder, 0.0, seed=0)
    assert train is folder and len(val) == 0
    with pytest.raises(RetrievalError, match="val_fraction"):
        split_classes(folder, 1.0, seed=0)


def test_split_with_too_few_classes_trains_without_validation_and_warns(tmp_path, caplog):
    folder = scan_folder(_labelled_folder(tmp_path / "d", {"a": 2, "b": 2, "c": 2, "d": 1}, size=(4, 4)))
    with caplog.at_level(logging.WARNING, logger="retrieval"):
        train, val = split_classes(folder, 0.5, seed=0)
    assert len(val.class_names) == 0 and train.class_names == folder.class_names
    assert any("without validation" in m for m in _warnings(caplog))


# ------------------------------------------------------------------------------------------
# P x K sampler
# ------------------------------------------------------------------------------------------

# 9 classes: sizes 1 (never an anchor), 2 and 3 (< K: with replacement), 4 .. 23.
SIZES = [1, 2, 3, 4, 7, 10, 12, 17, 23]
LABELS = np.repeat(np.arange(len(SIZES)), SIZES)
P, K = 4, 4


def test_pk_batches_hold_p_distinct_classes_k_images_each_with_valid_indices():
    sampler = PKSampler(LABELS, P, K, seed=3)
    batches = list(sampler)
    assert len(batches) == len(sampler) > 0
    for batch in batches:
        assert len(batch) == P * K and all(isinstance(i, int) and 0 <= i < len(LABELS) for i in batch)
        runs = LABELS[batch].reshape(P, K)
        assert (runs == runs[:, :1]).all() and len(set(runs[:, 0])) == P
        for run_indices, size in zip(np.reshape(batch, (P, K)), np.asarray(SIZES)[runs[:, 0]]):
            assert len(set(run_indices)) == min(size, K)  # distinct unless the class has < K images


def test_pk_epoch_length_follows_its_definition_and_shows_every_anchor_image():
    sampler = PKSampler(LABELS, P, K)
    visits_needed = -(-np.asarray(SIZES[1:]) // K)
    assert len(sampler) == max(-(-visits_needed.sum() // P), visits_needed.max())
    for epoch in range(5):
        shown = set(sampler.epoch_batches(epoch).ravel().tolist())
        assert shown == set(np.flatnonzero(np.asarray(SIZES)[LABELS] >= 2).tolist())


def test_pk_sampler_never_picks_one_image_classes():
    sampler = PKSampler(LABELS, P, K)
    single = int(np.flatnonzero(LABELS == 0)[0])
    assert all(single not in sampler.epoch_batches(e) for e in range(10))


def test_pk_sampler_is_deterministic_per_seed_and_epoch_and_varies_across_them():
    a, b = PKSampler(LABELS, P, K, seed=7), PKSampler(LABELS, P, K, seed=7)
    a.set_epoch(2)
    b.set_epoch(2)
    assert list(a) == list(b)
    b.set_epoch(3)
    assert list(a) != list(b)
    c = PKSampler(LABELS, P, K, seed=8)
    c.set_epoch(2)
    assert list(a) != list(c)


def test_pk_state_dict_round_trip_resumes_the_same_batches():
    sampler = PKSampler(LABELS, P, K, seed=11)
    sampler.set_epoch(5)
    state = sampler.state_dict()
    assert state == {"seed": 11, "epoch": 5}
    resumed = PKSampler(LABELS, P, K)
    resumed.load_state_dict(state)
    assert list(resumed) == list(sampler)


def test_pk_class_groups_limit_each_batch_to_groups_per_batch_groups():
    labels = np.repeat(np.arange(16), 5)
    groups = np.arange(16) // 4  # 4 groups of 4 classes
    one = PKSampler(labels, 4, 2, seed=0, class_groups=groups, groups_per_batch=1)
    for batch in one:
        assert len(set(groups[labels[batch]])) == 1
    two = PKSampler(labels, 4, 2, seed=0, class_groups=groups, groups_per_batch=2)
    for batch in two:
        group_ids, classes = groups[labels[batch]], labels[batch]
        assert len(set(group_ids)) == 2 and len(set(classes)) == 4
        assert sorted(np.bincount(group_ids[::2]).tolist())[-2:] == [2, 2]  # round-robin: 2 classes each
    assert list(two) == list(PKSampler(labels, 4, 2, seed=0, class_groups=groups, groups_per_batch=2))
    covered = set(np.concatenate([two.epoch_batches(0).ravel()]).tolist())
    assert len(covered) >= 0.9 * len(labels)


def test_pk_groups_too_small_for_p_take_more_groups_and_skip_one_image_classes():
    labels = np.repeat(np.arange(8), [3, 3, 3, 3, 3, 3, 1, 1])
    groups = [0, 0, 1, 1, 2, 2, 3, 3]  # group 3 has only one-image classes
    sampler = PKSampler(labels, 4, 2, class_groups=groups, groups_per_batch=1)
    for batch in sampler:
        assert len(set(labels[batch])) == 4 and not set(labels[batch]) & {6, 7}


def test_pk_sampler_rejects_impossible_settings_with_one_line_errors():
    with pytest.raises(RetrievalError, match="only 8 classes .*: lower --classes-per-batch"):
        PKSampler(LABELS, 9, K)
    with pytest.raises(RetrievalError, match="--classes-per-batch"):
        PKSampler(LABELS, 1, K)
    with pytest.raises(RetrievalError, match="--images-per-class"):
        PKSampler(LABELS, P, 1)
    with pytest.raises(RetrievalError, match="labelled"):
        PKSampler([-1, -1, -1], 2, 2)
    with pytest.raises(RetrievalError, match="two classes"):
        PKSampler([0, 0, 1], 2, 2)


def test_pk_sampler_builds_an_epoch_of_70k_images_quickly():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(11000), rng.integers(2, 12, 11000))
    sampler = PKSampler(labels, 16, 4)
    start = time.perf_counter()
    batches = sampler.epoch_batches(0)
    assert time.perf_counter() - start < 3.0
    assert len(np.unique(batches)) == len(labels)


# ------------------------------------------------------------------------------------------
# Transforms
# ------------------------------------------------------------------------------------------


def test_eval_transform_gives_normalised_chw_float32_of_input_size():
    transform = build_transforms(DATA_CONFIG, train=False)
    mean_grey = tuple(int(round(m * 255)) for m in DATA_CONFIG["mean"])
    out = transform(Image.new("RGB", (50, 30), mean_grey))
    assert out.shape == (3, 32, 32) and out.dtype == torch.float32
    assert out.abs().max() < 0.02  # the mean colour normalises to ~0
    white = transform(Image.new("RGB", (30, 70), (255, 255, 255)))
    expected = (1 - np.asarray(DATA_CONFIG["mean"])) / np.asarray(DATA_CONFIG["std"])
    assert np.allclose(white.mean(dim=(1, 2)).numpy(), expected, atol=1e-4)


def test_train_transform_shape_dtype_and_strength_zero_equals_eval():
    picture = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 56, 3), dtype=np.uint8))
    for strength in (0.5, 1.0, 2.0):
        out = build_transforms(DATA_CONFIG, train=True, strength=strength)(picture)
        assert out.shape == (3, 32, 32) and out.dtype == torch.float32
    plain = build_transforms(DATA_CONFIG, train=True, strength=0.0)(picture)
    assert torch.equal(plain, build_transforms(DATA_CONFIG, train=False)(picture))


def test_train_transform_is_repeatable_for_a_seed():
    picture = Image.fromarray(np.random.default_rng(1).integers(0, 255, (40, 40, 3), dtype=np.uint8))
    transform = build_transforms(DATA_CONFIG, train=True)
    transform.set_random_seed(5)
    first = [transform(picture) for _ in range(3)]
    transform.set_random_seed(5)
    assert all(torch.equal(a, transform(picture)) for a in first)
    assert not torch.equal(first[0], first[1])


def test_normalising_in_batch_gives_the_per_image_pipeline_pixels_from_a_quarter_of_the_bytes():
    import pickle

    pictures = [Image.fromarray(np.random.default_rng(i).integers(0, 256, (40, 56, 3), dtype=np.uint8)) for i in range(3)]
    for train in (False, True):
        torch.manual_seed(3)
        per_image = build_transforms(DATA_CONFIG, train=train, strength=1.5)
        torch.manual_seed(3)
        deferred = build_transforms(DATA_CONFIG, train=train, strength=1.5, normalise_in_batch=True)
        assert per_image.batch_normalise is None and deferred.batch_normalise is not None
        pixels = torch.stack([deferred(p) for p in pictures])  # same seed, same augmentation draws
        assert pixels.dtype == torch.uint8 and pixels.shape == (3, 3, 32, 32) and pixels.is_contiguous()
        expected = torch.stack([per_image(p) for p in pictures])
        assert torch.allclose(deferred.finish_batch(pixels), expected, atol=1e-5)
        assert torch.equal(per_image.finish_batch(expected), expected)  # already normalised: unchanged
    # the formula, by hand: (x - 255 mean) / (255 std) per channel
    normalise = deferred.batch_normalise
    x = torch.tensor([0, 128, 255], dtype=torch.uint8).view(1, 3, 1, 1).expand(2, 3, 2, 2).contiguous()
    want = [(v - 255 * m) / (255 * sd) for v, m, sd in zip((0, 128, 255), DATA_CONFIG["mean"], DATA_CONFIG["std"])]
    assert torch.allclose(normalise(x)[:, :, 0, 0], torch.tensor([want, want]), atol=1e-6)
    assert x.dtype == torch.uint8 and int(x[0, 1, 0, 0]) == 128  # the uint8 batch is left as it was
    assert torch.allclose(pickle.loads(pickle.dumps(normalise))(x), normalise(x))  # crosses into loader workers
    with pytest.raises(TypeError, match="uint8"):
        normalise(x.float())
    with pytest.raises(ValueError, match="channels"):
        normalise(x[:, :2])
    assert deferred.finish_batch(torch.empty(0)).numel() == 0  # a batch whose images were all unreadable


# ------------------------------------------------------------------------------------------
# Dataset, collate, loader
# ------------------------------------------------------------------------------------------


def test_dataset_returns_none_for_image_corrupted_after_scan_and_collate_drops_it(tmp_path, caplog):
    folder = scan_folder(_labelled_folder(tmp_path / "d", {"a": 2, "b": 2}))
    folder.paths[1].write_bytes(b"corrupted later")
    dataset = ImageDataset(folder.paths, folder.labels, build_transforms(DATA_CONFIG, train=False))
    with caplog.at_level(logging.WARNING, logger="retrieval"):
        items = [dataset[i] for i in range(len(dataset))] + [dataset[1]]
    assert items[1] is None and items[4] is None
    assert len([m for m in _warnings(caplog) if "img_01.png" in m]) == 1  # once per file
    images, labels, indices = collate_images(items[:4])
    assert images.shape == (3, 3, 32, 32) and labels.tolist() == [0, 1, 1] and indices.tolist() == [0, 2, 3]
    empty_images, empty_labels, _ = collate_images([None, None])
    assert empty_images.numel() == 0 and empty_labels.numel() == 0


def test_dataset_cache_keeps_decoded_images_within_its_budget(tmp_path, monkeypatch):
    folder = scan_folder(_labelled_folder(tmp_path / "d", {"a": 2, "b": 2}, size=(16, 16)))  # 768 bytes decoded each
    reads = []
    real_load = data.load_image
    monkeypatch.setattr(data, "load_image", lambda path: reads.append(Path(path).name) or real_load(path))
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


def test_train_transform_seeds_give_different_draws():
    picture = Image.fromarray(np.random.default_rng(1).integers(0, 255, (40, 40, 3), dtype=np.uint8))
    transform = build_transforms(DATA_CONFIG, train=True, strength=1.5)
    draws = []
    for seed in range(4):
        transform.set_random_seed(seed)
        draws.append(transform(picture))
    assert all(not torch.equal(draws[i], draws[j]) for i in range(4) for j in range(i + 1, 4))


def test_loader_with_workers_follows_the_pk_sampler_across_epochs(tmp_path):
    folder = scan_folder(_labelled_folder(tmp_path / "d", {f"c{i}": 3 for i in range(4)}, size=(8, 8)), verify=False)
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


def test_loader_workers_draw_different_augmentations(tmp_path):
    path = _image(tmp_path / "one.png", size=(40, 40))
    Image.fromarray(np.random.default_rng(2).integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(path)
    dataset = ImageDataset([path, path], [0, 0], build_transforms(DATA_CONFIG, train=True, strength=1.5))
    loader = make_loader(dataset, batch_size=1, num_workers=2, device="cpu")
    first, second = (images[0] for images, _, _ in loader)  # one item from each worker, each its first draw
    assert not torch.equal(first, second)


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


# ------------------------------------------------------------------------------------------
# Class groups and never-negative pairs
# ------------------------------------------------------------------------------------------


def test_read_class_groups_reads_the_grocery_classes_csv_fine_to_coarse(caplog):
    csv_path = DATASETS / "grocery" / "classes.csv"
    if not csv_path.is_file():
        pytest.skip(f"real data set not present: {csv_path} (../shared/datasets beside the checkout)")
    train_classes = sorted(p.name for p in (DATASETS / "grocery" / "train").iterdir() if p.is_dir())
    with caplog.at_level(logging.WARNING, logger="retrieval"):
        groups = read_class_groups(csv_path, train_classes)
    assert set(groups) == set(train_classes)
    assert groups["Golden-Delicious"] == groups["Pink-Lady"] == groups["Royal-Gala"] == "Apple"
    assert [m for m in _warnings(caplog) if "not in the data" in m]  # the test split's classes
    ids = data.class_group_ids(train_classes, groups)
    apple = {ids[train_classes.index(name)] for name in ("Golden-Delicious", "Pink-Lady", "Royal-Gala")}
    assert len(apple) == 1 and len(set(ids)) == len(set(groups.values()))


def test_read_class_groups_accepts_class_group_header_and_headerless_pairs(tmp_path, caplog):
    path = tmp_path / "groups.csv"
    path.write_text("# fine to coarse\nClass,Group\n\napple_red,apple\napple_green,apple\npear,pear\nplum,stone\n")
    with caplog.at_level(logging.WARNING, logger="retrieval"):
        groups = read_class_groups(path, ["apple_green", "apple_red", "pear", "kiwi"])
    assert groups == {"apple_green": "apple", "apple_red": "apple", "pear": "pear"}
    messages = _warnings(caplog)
    assert any("plum" in m and "not in the data" in m for m in messages)
    assert any("kiwi" in m and "no group" in m for m in messages)
    path.write_text("apple_red,apple\npear,pear\n")
    assert read_class_groups(path, ["apple_red", "pear"]) == {"apple_red": "apple", "pear": "pear"}
    assert data.class_group_ids(["apple_red", "pear", "kiwi"], {"apple_red": "apple", "pear": "pear"}) == [0, 1, 2]


@pytest.mark.parametrize(
    "text, message",
    [
        ("class,group\na,x\nb,y,extra\n", "groups.csv:3: expected 2 fields"),
        ("class,group\na,x\n\nb,\n", "groups.csv:4: empty class or group"),
        ("class,group\na,x\nb,y\na,z\n", "groups.csv:4: class a is in group z here but in x on line 2"),
        ("fine,colour\na,x\n", "groups.csv:1: header must name"),
        ("", "groups.csv: empty file"),
    ],
)
def test_read_class_groups_names_file_and_line_of_malformed_rows(tmp_path, text, message):
    path = tmp_path / "groups.csv"
    path.write_text(text)
    with pytest.raises(RetrievalError) as error:
        read_class_groups(path, ["a", "b"])
    assert message in str(error.value) and "\n" not in str(error.value)


def test_read_class_pairs_reads_deduplicated_pairs_and_warns_about_unknown_classes(tmp_path, caplog):
    path = tmp_path / "pairs.csv"
    path.write_text("class_a,class_b\nalice,alice_2\nalice_2,alice\nbob,ghost\n# a comment\nbob,carol\n")
    with caplog.at_level(logging.WARNING, logger="retrieval"):
        pairs = read_class_pairs(path, ["alice", "alice_2", "bob", "carol"])
    assert pairs == [("alice", "alice_2"), ("bob", "carol")]
    assert any("ghost" in m for m in _warnings(caplog))
    path.write_text("alice,alice_2\n")
    assert read_class_pairs(path, ["alice", "alice_2"]) == [("alice", "alice_2")]


@pytest.mark.parametrize(
    "text, message",
    [
        ("class_a,class_b\nalice,bob,carol\n", "pairs.csv:2: expected class_a,class_b"),
        ("alice,bob\nbob,bob\n", "pairs.csv:2: a class cannot be its own"),
        ("alice,\n", "pairs.csv:1: empty class name"),
    ],
)
def test_read_class_pairs_names_file_and_line_of_malformed_rows(tmp_path, text, message):
    path = tmp_path / "pairs.csv"
    path.write_text(text)
    with pytest.raises(RetrievalError, match=message):
        read_class_pairs(path, ["alice", "bob", "carol"])
    with pytest.raises(RetrievalError, match="not found"):
        read_class_pairs(tmp_path / "missing.csv", [])
