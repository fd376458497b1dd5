"""Tests of retrieval.data.images: orientation, colour modes, 16-bit, size limits, unreadable files."""

from __future__ import annotations

import io
import logging

import numpy as np
import pytest
from PIL import Image

from data_helpers import warning_messages, write_image, write_labelled_folder, write_png_header
from retrieval.data import all_greyscale, images, load_image, load_image_bytes, scan_folder
from retrieval.errors import RetrievalError


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
    grey = load_image(write_image(tmp_path / "grey.png", mode="L", colour=77))
    assert grey.mode == "RGB" and grey.getpixel((3, 3)) == (77, 77, 77)
    palette = Image.new("P", (8, 8), 1)
    palette.putpalette([0, 0, 0, 10, 120, 230] + [0] * 762)
    palette.save(tmp_path / "palette.gif")
    assert load_image(tmp_path / "palette.gif").getpixel((0, 0)) == (10, 120, 230)
    bilevel = load_image(write_image(tmp_path / "bw.bmp", mode="1", colour=1))
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
    values = np.array([[0, 257 * 128, 65535, 257 * 64]] * 2, dtype=np.uint16)  # two rows: MIN_IMAGE_SIDE
    Image.fromarray(values).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    rgb = np.asarray(load_image(tmp_path / "deep.png"))
    assert rgb[0, :, 0].tolist() == [0, 128, 255, 64] and (rgb[..., 0] == rgb[..., 2]).all()
    Image.fromarray(values.astype(np.int32)).save(tmp_path / "deep32.tif")  # mode "I"
    assert np.asarray(load_image(tmp_path / "deep32.tif"))[0, :, 1].tolist() == [0, 128, 255, 64]


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_decompression_bomb_is_refused_with_a_clear_message_not_a_crash(tmp_path, caplog):
    bomb = write_png_header(tmp_path / "bomb.png", 20000, 20000)  # 400 MP: Pillow's own bomb error
    with pytest.raises(RetrievalError, match="too large") as error:
        load_image(bomb)
    assert "bomb.png" in str(error.value) and error.value.too == "large"  # ImageSizeError: what a page advises from
    assert "(MAX_IMAGE_PIXELS)" in str(error.value) and "decompression" in str(error.value), "our limit, as below it"
    big = write_png_header(tmp_path / "big.png", 11000, 10000)  # 110 MP: above our MAX_IMAGE_PIXELS
    with pytest.raises(RetrievalError, match="11000x10000 pixels") as error:
        load_image(big)
    assert error.value.too == "large"
    with pytest.raises(RetrievalError, match="too large") as error:
        load_image_bytes(bomb.read_bytes(), "upload.png")
    assert "more than the limit of 40,000,000 for queries and uploads" in str(error.value)
    write_labelled_folder(tmp_path / "d", {"a": 2, "b": 2}, size=(4, 4))
    (tmp_path / "d" / "a" / "bomb.png").write_bytes(bomb.read_bytes())
    (tmp_path / "d" / "b" / "big.png").write_bytes(big.read_bytes())
    with caplog.at_level(logging.WARNING, logger="retrieval"):
        folder = scan_folder(tmp_path / "d")
    assert sorted(p.name for p in folder.skipped) == ["big.png", "bomb.png"] and len(folder) == 4
    assert any("too large" in m for m in warning_messages(caplog))


def test_scan_skips_images_above_max_image_pixels(tmp_path, monkeypatch):
    root = write_labelled_folder(tmp_path / "d", {"a": 2, "b": 2}, size=(8, 8))
    write_image(root / "a" / "large.png", size=(40, 40))
    monkeypatch.setattr(images, "MAX_IMAGE_PIXELS", 1000)
    folder = scan_folder(root)
    assert [p.name for p in folder.skipped] == ["large.png"] and len(folder) == 4
    with pytest.raises(RetrievalError, match="MAX_IMAGE_PIXELS"):
        load_image(root / "a" / "large.png")


def test_load_image_bytes_matches_load_image_and_names_the_upload_in_errors(tmp_path):
    path = write_image(tmp_path / "x.png", size=(9, 5), colour=(1, 2, 3))
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
    write_labelled_folder(tmp_path / "d", {"a": 2, "b": 2})
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    assert path in scan_folder(tmp_path / "d").paths
    with pytest.raises(RetrievalError, match="cut.jpg"):
        load_image(path)
    with pytest.raises(RetrievalError, match="image not found"):
        load_image(tmp_path / "missing.jpg")


# ----------------------------------------------------------------------------- formats and limits (issue 19)

POSTSCRIPT = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 16 16\n%%EndComments\nnewpath 0 0 moveto 16 16 lineto stroke\nshowpage\n%%EOF\n"


def test_postscript_named_like_a_png_is_refused_and_ghostscript_never_runs(tmp_path, monkeypatch):
    """Pillow identifies files by content: an "image.png" holding PostScript would go to its EPS
    reader, which runs Ghostscript. Only the formats of IMAGE_EXTENSIONS are opened."""
    from PIL import EpsImagePlugin

    calls = []
    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", lambda *a, **k: calls.append(a) or (_ for _ in ()).throw(AssertionError("gs")))
    monkeypatch.setattr(EpsImagePlugin, "has_ghostscript", lambda: True)
    root = write_labelled_folder(tmp_path / "d", {"a": 2, "b": 2})
    (root / "a" / "image.png").write_bytes(POSTSCRIPT)
    folder = scan_folder(root)
    assert [p.name for p in folder.skipped] == ["image.png"] and len(folder) == 4
    for load in (lambda: load_image(root / "a" / "image.png"), lambda: load_image_bytes(POSTSCRIPT, "upload.png")):
        with pytest.raises(RetrievalError, match="not a readable image"):
            load()
    assert calls == []


def test_every_supported_extension_maps_to_a_pillow_format_that_opens_it(tmp_path):
    assert set(images.IMAGE_FORMATS) == set(images.FORMAT_OF_SUFFIX.values())
    Image.init()
    for suffix, pillow_format in images.FORMAT_OF_SUFFIX.items():
        assert Image.EXTENSION[suffix] == pillow_format
        mode = "L" if suffix == ".pgm" else "RGB"
        path = write_image(tmp_path / f"x{suffix}", mode=mode, colour=90 if mode == "L" else (90, 90, 90))
        assert np.abs(np.asarray(load_image(path)).astype(int) - 90).max() <= 2, suffix  # JPEG / WebP: lossy


def test_an_upload_above_the_query_pixel_limit_is_refused_from_its_header(tmp_path):
    """Uploads and queries get a lower limit than training files (MAX_QUERY_PIXELS < MAX_IMAGE_PIXELS),
    checked on the header's size: this file's pixel data is a stub, so any decoding would fail otherwise."""
    assert images.MAX_QUERY_PIXELS < images.MAX_IMAGE_PIXELS
    width = 8000
    height = images.MAX_QUERY_PIXELS // width + 1
    stub = write_png_header(tmp_path / "huge.png", width, height)
    with pytest.raises(RetrievalError, match=f"huge.png is {width}x{height} pixels.*{images.MAX_QUERY_PIXELS:,}.*queries"):
        load_image_bytes(stub.read_bytes(), "huge.png")
    with pytest.raises(RetrievalError, match="queries"):
        load_image(stub, max_pixels=images.MAX_QUERY_PIXELS)
    with pytest.raises(RetrievalError) as as_a_training_file:  # under the training limit: decoded, and the stub fails
        load_image(stub)
    assert "too large" not in str(as_a_training_file.value)


def _round_half_up(value, full_scale) -> int:
    from fractions import Fraction

    x = Fraction(min(max(int(value), 0), full_scale) * 255, full_scale)
    return int(x + Fraction(1, 2)) if x >= 0 else 0


@pytest.mark.parametrize("mode, values, full_scale", [
    ("I;16", [0, 1, 128, 129, 257, 32767, 32768, 65534, 65535], 65535),
    ("I", [0, 3, 100, 255, -5], 255),                  # 32-bit holding 8-bit values
    ("I", [0, 300, 40000, 65535, 65534], 65535),       # 32-bit holding 16-bit values (older Pillow's PNGs)
    ("I", [0, 70000, 123457, 1_000_003, 99], 1_000_003),  # beyond 16 bits: 0 .. max
])
def test_deep_grey_levels_scale_to_8_bits_as_rounded_integer_arithmetic(mode, values, full_scale):
    rng = np.random.default_rng(0)
    extra = rng.integers(0, full_scale + 1, 200)
    pixels = np.array(values + extra.tolist(), dtype=np.uint16 if mode == "I;16" else np.int32).reshape(1, -1)
    image = Image.fromarray(pixels)
    assert image.mode == mode
    scaled = np.asarray(images.to_rgb(image))[0, :, 0]
    assert scaled.tolist() == [_round_half_up(v, full_scale) for v in pixels[0]]


def test_16_bit_scaling_makes_no_float_copy_of_the_pixels():
    """Memory, not time: scaling 16-bit grey to 8 bits allocated float64 copies (8+ bytes a pixel, several
    at once: a 214 KiB 16-bit PNG of 100 MP took 13.8 s and +2862 MiB to decode, now 3.5 s and +670 MiB,
    and as an upload it is refused from its header in 0.01 s: BENCHMARKS.md "decode", benchmarks/decode.py);
    now a lookup table, a few bytes a pixel at most (tracemalloc counts numpy's buffers, not Pillow's)."""
    import tracemalloc

    image = Image.new("I;16", (1000, 1000), 1234)
    tracemalloc.start()
    try:
        rgb = images.to_rgb(image)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert rgb.getpixel((0, 0)) == (5, 5, 5)
    assert peak < 5 * 1_000_000


def test_all_greyscale_reads_modes_from_headers_and_stops_at_the_first_colour_image(tmp_path, monkeypatch):
    grey = [write_image(tmp_path / "a.png", mode="L", colour=90), write_image(tmp_path / "b.png", mode="I;16", colour=4000),
            write_image(tmp_path / "c.png", mode="LA", colour=(90, 255))]
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    colour = write_image(tmp_path / "d.png", mode="RGB", colour=(90, 90, 90))  # equal channels, but stored as colour
    assert all_greyscale(grey + [broken])  # an unreadable file decides nothing
    assert not all_greyscale(grey + [colour])
    assert not all_greyscale([]) and not all_greyscale([broken])
    opened = []
    real_open = Image.open
    monkeypatch.setattr(Image, "open", lambda path, *a, **k: opened.append(path) or real_open(path, *a, **k))
    assert not all_greyscale([colour, *grey])
    assert opened == [colour], "a colour data set is decided by its first image"


def assert_refused_by_size(tmp_path, image, too: str, caplog) -> None:
    """``image`` saved as a PNG is refused from its header as "image too <too>" (ImageSizeError),
    as a file, as an upload and by the folder scan, which skips it with a warning naming it."""
    path = tmp_path / f"{too}.png"
    image.save(path)
    width, height = image.size
    with pytest.raises(RetrievalError, match=rf"image too {too}: .*{too}.png is {width}x{height} pixels") as error:
        load_image(path)
    assert error.value.too == too
    with pytest.raises(RetrievalError, match=f"image too {too}") as error:
        load_image_bytes(path.read_bytes(), path.name)
    assert error.value.too == too
    assert images.unreadable_reason(path).startswith(f"too {too}")
    root = write_labelled_folder(tmp_path / "data", {"a": 2, "b": 2})
    (root / "a" / path.name).write_bytes(path.read_bytes())
    with caplog.at_level(logging.WARNING, logger="retrieval"):
        folder = scan_folder(root, labelled=True)
    assert all(p.name != path.name for p in folder.paths) and any(path.name in m for m in warning_messages(caplog))


@pytest.mark.parametrize("size", [(40_000, 2), (3, 400), (2_020, 20)])
def test_an_image_more_elongated_than_100_to_1_is_refused_from_its_header_and_skipped_in_a_folder(tmp_path, size, caplog):
    """A 400000 × 2 PNG is 2 KB and 0.8 MP, under every pixel limit, and the resize to the model's
    shorter side made it gigabytes (a cv2 allocation traceback). 100:1 exactly is read."""
    assert_refused_by_size(tmp_path, Image.new("RGB", size, (200, 30, 30)), "elongated", caplog)
    with pytest.raises(RetrievalError, match="more than 100:1"):
        load_image(tmp_path / "elongated.png")
    edge = write_image(tmp_path / "edge.png", (2_000, 20))
    assert load_image(edge).size == (2_000, 20) and images.unreadable_reason(edge) is None


@pytest.mark.parametrize("size", [(1, 1), (1, 5), (5, 1)])
def test_an_image_one_pixel_wide_or_high_is_refused_in_one_line_and_skipped_in_a_folder(tmp_path, size, caplog):
    """Such an image cannot be embedded by a grey run (its grey conversion drops a dimension: a
    traceback before): a query is a one-line error naming it, a folder skips it with the others."""
    from retrieval.data import build_transforms
    from retrieval.model import EmbeddingModel

    assert_refused_by_size(tmp_path, Image.new("L", size, 100), "small", caplog)
    grey = {**EmbeddingModel("resnet10t", 8).data_config(32), "greyscale": True}
    assert build_transforms(grey, train=False)(load_image(write_image(tmp_path / "two.png", (2, 2)))).shape == (3, 32, 32)
