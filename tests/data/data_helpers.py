"""Shared set-up of the tests of retrieval.data: tiny images written with PIL, and the warnings logged.

Test modules of this folder import it (``from data_helpers import ...``): pytest's prepend
import mode puts this folder on ``sys.path``.
"""

from __future__ import annotations

import logging
import struct
import zlib
from pathlib import Path

from PIL import Image

DATA_CONFIG = {
    "input_size": (3, 32, 32),
    "mean": (0.485, 0.456, 0.406),
    "std": (0.229, 0.224, 0.225),
    "interpolation": "bicubic",
    "crop_pct": 0.875,
}
"""A backbone's pretrained data config (timm's keys), at 32 px."""


def write_image(path: Path, size=(16, 16), colour=(200, 30, 30), mode="RGB", **save_options) -> Path:
    """A one-colour image file at ``path`` (folders created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, colour).save(path, **save_options)
    return path


def write_labelled_folder(root: Path, counts: dict[str, int], size=(16, 16)) -> Path:
    """``root/<class>/img_NN.png``: ``counts[class]`` images per class, each a colour of its own."""
    for c, (name, n) in enumerate(counts.items()):
        for i in range(n):
            write_image(root / name / f"img_{i:02d}.png", size=size, colour=(10 * c, 5 * i, 100))
    return root


def write_png_header(path: Path, width: int, height: int) -> Path:
    """A tiny PNG file whose header claims width x height pixels (a decompression bomb's shape)."""

    def chunk(tag: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + tag + payload + struct.pack(">I", zlib.crc32(tag + payload))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))
    return path


def warning_messages(caplog) -> list[str]:
    """The messages of the warnings logged to the "retrieval" logger."""
    return [r.getMessage() for r in caplog.records if r.name == "retrieval" and r.levelno == logging.WARNING]
