"""One image file in, one RGB picture out: the only place that decodes images.

:func:`load_image` (a file) and :func:`load_image_bytes` (an upload in memory) give an RGB
``PIL.Image``, upright (EXIF orientation applied), with greyscale / palette / CMYK converted,
transparency composited on white, and 16-bit (or 32-bit, float) grey levels scaled to 8 bits
rather than clipped. Images above :data:`MAX_IMAGE_PIXELS` (and decompression bombs) are refused
before decoding. :func:`unreadable_reason` is the cheap check (header and Pillow's ``verify()``,
no full decode) that a folder scan runs on every file. Every failure meant for a user is one
:class:`~retrieval.errors.RetrievalError` line naming the file.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from retrieval.errors import RetrievalError

__all__ = ["MAX_IMAGE_PIXELS", "load_image", "load_image_bytes", "unreadable_reason", "to_rgb"]

MAX_IMAGE_PIXELS: int = 100_000_000
"""Largest image accepted, in pixels (width x height): 100 megapixels. Larger files (or a
header that claims more, the classic decompression bomb) are refused before decoding."""

# Pillow warns from 89 MP and refuses above 179 MP; we enforce MAX_IMAGE_PIXELS ourselves, so its
# warning is only noise for images we accept. (Turned into an error by -W error, it is caught.)
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


def load_image(path: str | Path) -> Image.Image:
    """Read an image file as an RGB ``PIL.Image``, upright (EXIF orientation applied).

    Greyscale, palette and CMYK become RGB; transparent images (RGBA, LA, palette with
    transparency) are composited on white; 16-bit greyscale (modes ``I;16``, ``I``) is scaled
    to 8 bits (65535 -> 255), not clipped. The first frame of an animated GIF / WebP is used.
    Raises :class:`RetrievalError` naming the file when it is missing, unreadable, truncated, or
    larger than :data:`MAX_IMAGE_PIXELS`.
    """
    path = Path(path)
    if not path.is_file():
        raise RetrievalError(f"image not found: {path}")
    return _decode(path, str(path))


def load_image_bytes(data: bytes, name: str) -> Image.Image:
    """:func:`load_image` for an image in memory (an upload); ``name`` is used in error messages."""
    if not data:
        raise RetrievalError(f"cannot read image {name}: empty file")
    return _decode(io.BytesIO(data), name)


def unreadable_reason(path: Path) -> str | None:
    """Why ``path`` cannot be used as an image (cheap check: header + ``verify``), or None."""
    try:
        if path.stat().st_size == 0:
            return "empty file"
        with Image.open(path) as image:
            width, height = image.size
            if width * height > MAX_IMAGE_PIXELS:
                return f"too large: {width}x{height} pixels"
            image.verify()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        return "too large (decompression bomb)"
    except Exception as error:  # Pillow raises many types (OSError, SyntaxError, struct.error, ...) on bad files
        return _short_reason(error)
    return None


def to_rgb(image: Image.Image) -> Image.Image:
    """An RGB copy of ``image``: alpha composited on white, 16/32-bit and float scaled to 8 bits."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode.startswith("I") or mode == "F":
        return Image.fromarray(_scale_to_uint8(np.asarray(image), mode)).convert("RGB")
    if mode in ("RGBA", "RGBa", "LA", "La", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


def _decode(source: Path | io.BytesIO, name: str) -> Image.Image:
    try:
        with Image.open(source) as image:
            width, height = image.size
            if width * height > MAX_IMAGE_PIXELS:
                raise RetrievalError(
                    f"image too large: {name} is {width}x{height} pixels, "
                    f"more than the limit of {MAX_IMAGE_PIXELS:,} (MAX_IMAGE_PIXELS)"
                )
            image.load()
            try:
                upright = ImageOps.exif_transpose(image)
            except Exception:  # a malformed EXIF block: keep the pixels as stored rather than fail
                upright = image.copy()
            return to_rgb(upright if upright is not None else image)
    except RetrievalError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise RetrievalError(f"image too large: {name} ({_short_reason(error)})") from None
    except Exception as error:  # Pillow raises many types (OSError, SyntaxError, ValueError, ...) on bad files
        raise RetrievalError(f"cannot read image {name}: {_short_reason(error)}") from None


def _short_reason(error: BaseException) -> str:
    text = str(error).split("\n")[0].strip()
    if isinstance(error, Image.UnidentifiedImageError) or text.startswith("cannot identify image file"):
        return "not a readable image"
    return text or type(error).__name__


def _scale_to_uint8(pixels: np.ndarray, mode: str) -> np.ndarray:
    """Map integer or float grey levels to 0-255 by the range their mode implies.

    ``I;16*``: 0-65535. ``I`` (32-bit, e.g. older Pillow's 16-bit PNGs): 0-255 when the values fit
    in 8 bits, else 0-65535 when they fit in 16 bits, else 0-max. ``F``: 0-1 when the values fit,
    else as ``I``. Negative values become 0.
    """
    values = pixels.astype(np.float64)
    top = float(values.max()) if values.size else 0.0
    if mode.startswith("I;16"):
        full_scale = 65535.0
    elif mode == "F" and top <= 1.0:
        full_scale = 1.0
    elif top <= 255.0:
        full_scale = 255.0
    elif top <= 65535.0:
        full_scale = 65535.0
    else:
        full_scale = top
    return np.clip(np.rint(values * (255.0 / full_scale)), 0, 255).astype(np.uint8)
