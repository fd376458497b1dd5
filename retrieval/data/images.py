"""One image file in, one RGB picture out: the only place that decodes images.

:func:`load_image` (a file) and :func:`load_image_bytes` (an upload in memory) give an RGB
``PIL.Image``, upright (EXIF orientation applied), with greyscale / palette / CMYK converted,
transparency composited on white, and 16-bit (or 32-bit, float) grey levels scaled to 8 bits
rather than clipped, in integer arithmetic: v8 = floor((min(max(v, 0), S) * 255 + floor(S / 2)) / S)
with S the full scale the mode implies (a lookup table for 16-bit, row blocks otherwise, so no
float copy of a large image is ever made).

Only the formats of :data:`FORMAT_OF_SUFFIX` are opened (Pillow's format ids, passed as
``formats=`` to ``Image.open``): Pillow otherwise picks its reader by the content, and a file named
"image.png" holding PostScript would go to its EPS reader, which runs Ghostscript. A file's size is
checked from its header, before decoding: training and gallery files up to
:data:`MAX_IMAGE_PIXELS`, uploads and queries up to the lower :data:`MAX_QUERY_PIXELS` (decompression
bombs are refused either way). :func:`unreadable_reason` is the cheap check (header and Pillow's
``verify()``, no full decode) that a folder scan runs on every file. Every failure meant for a user
is one :class:`~retrieval.errors.RetrievalError` line naming the file.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from retrieval.errors import ImageSizeError, RetrievalError

__all__ = [
    "FORMAT_OF_SUFFIX", "IMAGE_EXTENSIONS", "IMAGE_FORMATS", "MAX_ASPECT_RATIO", "MAX_IMAGE_PIXELS", "MAX_QUERY_PIXELS", "MIN_IMAGE_SIDE",
    "all_greyscale", "load_image", "load_image_bytes", "unreadable_reason", "to_rgb",
]

FORMAT_OF_SUFFIX: dict[str, str] = {
    ".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".bmp": "BMP", ".gif": "GIF", ".webp": "WEBP",
    ".tif": "TIFF", ".tiff": "TIFF", ".pgm": "PPM", ".ppm": "PPM",
}
"""The image file suffixes read (compared lower-case) and the Pillow format that reads each."""

IMAGE_EXTENSIONS: frozenset[str] = frozenset(FORMAT_OF_SUFFIX)
"""File suffixes (compared lower-case) that are read as images; anything else is a non-image file."""

IMAGE_FORMATS: tuple[str, ...] = tuple(sorted(set(FORMAT_OF_SUFFIX.values())))
"""The only Pillow formats ever opened, whatever a file's name or content says (no EPS, PDF, ...)."""

MAX_IMAGE_PIXELS: int = 100_000_000
"""Largest training or gallery image, in pixels (width x height): 100 megapixels. Larger files (or
a header that claims more, the classic decompression bomb) are refused before decoding."""

MAX_QUERY_PIXELS: int = 40_000_000
"""Largest upload or query image: 40 megapixels (7300 x 5479), above what phones and most cameras
write by default (12-24 MP; 36-40 MP full-frame), yet bounding what one anonymous upload to the
app can cost: about 0.3 GB and a second or two of decoding (BENCHMARKS.md "decode"), for a model
that looks at the image at a few hundred pixels."""

MIN_IMAGE_SIDE: int = 2
"""Smallest width and height read, in pixels: an image one pixel wide or high is refused like an
unreadable one (a run's grey conversion cannot take it; there is nothing to embed in it)."""

MAX_ASPECT_RATIO: int = 100
"""Longest side over shortest side read: 100:1, beyond any photo (a 360° panorama is about 8:1).
The model's resize brings the shorter side to the image size, so a tiny 400000 × 2 file (0.8
megapixels, 2 KB) would become 73 × 14.6 million pixels: gigabytes, for a picture whose centre
crop is all the model sees. Such a file is refused from its header like one too large."""

_ROW_BLOCK_PIXELS = 1 << 20  # pixels scaled per block for 32-bit and float grey levels

# Pillow warns from 89 MP and refuses above 179 MP; we enforce MAX_IMAGE_PIXELS ourselves, so its
# warning is only noise for images we accept. (Turned into an error by -W error, it is caught.)
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


def load_image(path: str | Path, *, max_pixels: int | None = None) -> Image.Image:
    """Read an image file as an RGB ``PIL.Image``, upright (EXIF orientation applied).

    Greyscale, palette and CMYK become RGB; transparent images (RGBA, LA, palette with
    transparency) are composited on white; 16-bit greyscale (modes ``I;16``, ``I``) is scaled
    to 8 bits (65535 -> 255), not clipped. The first frame of an animated GIF / WebP is used.
    Raises :class:`RetrievalError` naming the file when it is missing, unreadable, truncated, not
    of a supported format (:data:`IMAGE_FORMATS`), or larger than ``max_pixels`` (default
    :data:`MAX_IMAGE_PIXELS`; pass :data:`MAX_QUERY_PIXELS` for a query).
    """
    path = Path(path)
    if path.is_dir():
        raise RetrievalError(f"{path} is a folder, not an image")
    if not path.is_file():
        raise RetrievalError(f"image not found: {path}")
    if path.stat().st_size == 0:  # as a folder's scan and an upload say it
        raise RetrievalError(f"cannot read image {path}: empty file")
    return _decode(path, str(path), MAX_IMAGE_PIXELS if max_pixels is None else max_pixels)


def load_image_bytes(data: bytes, name: str, *, max_pixels: int | None = None) -> Image.Image:
    """:func:`load_image` for an image in memory (an upload); ``name`` is used in error messages.
    The size limit defaults to :data:`MAX_QUERY_PIXELS`, the uploads' limit."""
    if not data:
        raise RetrievalError(f"cannot read image {name}: empty file")
    return _decode(io.BytesIO(data), name, MAX_QUERY_PIXELS if max_pixels is None else max_pixels)


def unreadable_reason(path: Path) -> str | None:
    """Why ``path`` cannot be used as an image (cheap check: header + ``verify``), or None."""
    try:
        if path.stat().st_size == 0:
            return "empty file"
        with Image.open(path, formats=IMAGE_FORMATS) as image:
            width, height = image.size
            if width * height > MAX_IMAGE_PIXELS:
                return f"too large: {width}x{height} pixels"
            if min(width, height) < MIN_IMAGE_SIDE:
                return f"too small: {width}x{height} pixels (at least {MIN_IMAGE_SIDE} a side)"
            if max(width, height) > MAX_ASPECT_RATIO * min(width, height):
                return f"too elongated: {width}x{height} pixels (at most {MAX_ASPECT_RATIO}:1)"
            image.verify()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        return "too large (decompression bomb)"
    except Exception as error:  # Pillow raises many types (OSError, SyntaxError, struct.error, ...) on bad files
        return _short_reason(error)
    return None


#: Pillow modes that hold grey levels only (with or without alpha): 1-bit, 8-bit, 16/32-bit integer, float
GREY_MODES = ("1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")


def all_greyscale(paths) -> bool:
    """Whether every readable image of ``paths`` is stored in a grey mode (:data:`GREY_MODES`),
    read from the headers only and stopping at the first colour image (an RGB file whose three
    channels happen to be equal counts as colour). False when none is readable."""
    seen = False
    for path in paths:
        try:
            with Image.open(path, formats=IMAGE_FORMATS) as image:
                mode = image.mode
        except Exception:  # noqa: BLE001  (unreadable: the data set warns about it; it decides nothing here)
            continue
        if mode not in GREY_MODES:
            return False
        seen = True
    return seen


def to_rgb(image: Image.Image) -> Image.Image:
    """An RGB copy of ``image``: alpha composited on white, 16/32-bit and float scaled to 8 bits."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode.startswith("I") or mode == "F":
        return Image.fromarray(_scale_to_uint8(np.asarray(image), mode), "L").convert("RGB")
    if mode in ("RGBA", "RGBa", "LA", "La", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


def _decode(source: Path | io.BytesIO, name: str, max_pixels: int) -> Image.Image:
    try:
        with Image.open(source, formats=IMAGE_FORMATS) as image:
            width, height = image.size
            if width * height > max_pixels:  # from the header: nothing decoded yet
                raise ImageSizeError(f"image too large: {name} is {width}x{height} pixels, more than the limit of "
                                     f"{max_pixels:,}{_limit_name(max_pixels)}", too="large")
            if min(width, height) < MIN_IMAGE_SIDE:
                raise ImageSizeError(f"image too small: {name} is {width}x{height} pixels; an image needs at least "
                                     f"{MIN_IMAGE_SIDE} pixels a side (MIN_IMAGE_SIDE)", too="small")
            if max(width, height) > MAX_ASPECT_RATIO * min(width, height):
                raise ImageSizeError(f"image too elongated: {name} is {width}x{height} pixels, more than {MAX_ASPECT_RATIO}:1 "
                                     "(MAX_ASPECT_RATIO); crop it", too="elongated")
            image.load()
            try:
                ImageOps.exif_transpose(image, in_place=True)  # in place: no copy of a large image
            except Exception:  # a malformed EXIF block: keep the pixels as stored rather than fail
                pass
            return to_rgb(image)
    except RetrievalError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):  # Pillow's own check, before ours could read the size
        raise ImageSizeError(f"image too large: {name} is more than {2 * (Image.MAX_IMAGE_PIXELS or 0):,} pixels (Pillow's "
                             f"decompression-bomb limit), more than the limit of {max_pixels:,}{_limit_name(max_pixels)}",
                             too="large") from None
    except Exception as error:  # Pillow raises many types (OSError, SyntaxError, ValueError, ...) on bad files
        raise RetrievalError(f"cannot read image {name}: {_short_reason(error)}") from None


def _limit_name(max_pixels: int) -> str:
    """Which limit ``max_pixels`` is, for the error message (read at call time: the limits may be changed)."""
    if max_pixels == MAX_QUERY_PIXELS:
        return " for queries and uploads (MAX_QUERY_PIXELS)"
    if max_pixels == MAX_IMAGE_PIXELS:
        return " for training and gallery files (MAX_IMAGE_PIXELS)"
    return ""


def _short_reason(error: BaseException) -> str:
    text = str(error).split("\n")[0].strip()
    if isinstance(error, Image.UnidentifiedImageError) or text.startswith("cannot identify image file"):
        return f"not a readable image of a supported format ({', '.join(IMAGE_FORMATS)})"
    return text or type(error).__name__


def _scale_to_uint8(pixels: np.ndarray, mode: str) -> np.ndarray:
    """Map integer or float grey levels to 0-255 by the full scale S their mode implies, rounded.

    ``I;16*``: S = 65535. ``I`` (32-bit, e.g. older Pillow's 16-bit PNGs): 255 when the values fit
    in 8 bits, else 65535 when they fit in 16 bits, else their max. ``F``: 1 when the values fit,
    else as ``I``. Integers: v8 = floor((min(max(v, 0), S) * 255 + floor(S / 2)) / S) (round half
    up), through a 65536-entry table for 16-bit and in int64 row blocks for 32-bit; floats:
    rint(clip(v, 0, S) * 255 / S) in row blocks. Negative values become 0.
    """
    if mode.startswith("I;16"):
        return _SIXTEEN_BIT_TABLE[pixels]  # uint16 indices into a uint8 table: one uint8 output, no copies
    top = float(pixels.max()) if pixels.size else 0.0
    floats = mode == "F"
    if floats and top <= 1.0:
        full_scale = 1.0
    elif top <= 255:
        full_scale = 255
    elif top <= 65535:
        full_scale = 65535
    else:
        full_scale = top if floats else int(top)
    out = np.empty(pixels.shape, dtype=np.uint8)
    rows = max(1, _ROW_BLOCK_PIXELS // max(1, pixels.shape[-1] if pixels.ndim > 1 else pixels.size))
    for start in range(0, len(pixels), rows):
        block = pixels[start : start + rows]
        if floats:
            out[start : start + rows] = np.rint(np.clip(block, 0.0, full_scale) * (255.0 / full_scale))
        else:
            clipped = np.clip(block, 0, full_scale).astype(np.int64)
            out[start : start + rows] = (clipped * 255 + full_scale // 2) // full_scale
    return out


_SIXTEEN_BIT_TABLE = ((np.arange(65536, dtype=np.int64) * 255 + 65535 // 2) // 65535).astype(np.uint8)
