"""Images in, batches out: the only module (with the model) that knows about image files.

A labelled folder ``DATA_DIR/<class>/<image>`` (torchvision's ``ImageFolder`` layout) is scanned
once into an :class:`ImageFolder` (paths, class labels, and what was skipped and why); a flat
folder of images scans as an unlabelled gallery (labels -1). Classes are split into training and
validation classes (:func:`split_classes`: validation classes never appear in training, the
unseen-class protocol of metric learning). :class:`PKSampler` fills every batch with P classes
times K images, so every anchor has positives and negatives in its batch, optionally drawing the
P classes from a few class groups so that the negatives are the hard, informative ones.
:func:`build_transforms` gives the albumentations train / eval pipelines, normalised with the
backbone's pretrained config (per image, or per batch by :class:`BatchNormalise` when the loader
hands over uint8 pixels); :class:`ImageDataset` and :func:`make_loader` feed them to the model.
:func:`load_image` is the one way an image file becomes an RGB picture: EXIF orientation applied,
greyscale / palette / alpha / 16-bit converted properly, decompression bombs refused.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
import random
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import torch

# albumentations asks PyPI for a newer version at import time; offline machines would wait and warn.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
from PIL import Image, ImageOps
from torch.utils.data import DataLoader, Dataset, Sampler

from retrieval.errors import RetrievalError

__all__ = [
    "IMAGE_EXTENSIONS",
    "MAX_IMAGE_PIXELS",
    "ImageFolder",
    "scan_folder",
    "require_trainable",
    "load_image",
    "load_image_bytes",
    "split_classes",
    "read_class_groups",
    "read_class_pairs",
    "class_group_ids",
    "PKSampler",
    "build_transforms",
    "finish_pipeline",
    "ImageTransform",
    "BatchNormalise",
    "ImageDataset",
    "collate_images",
    "make_loader",
]

logger = logging.getLogger("retrieval")

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".pgm", ".ppm"}
)
"""File suffixes (compared lower-case) that are read as images; anything else is a non-image file."""

MAX_IMAGE_PIXELS: int = 100_000_000
"""Largest image accepted, in pixels (width x height): 100 megapixels. Larger files (or a
header that claims more, the classic decompression bomb) are refused before decoding."""

# Pillow warns from 89 MP and refuses above 179 MP; we enforce MAX_IMAGE_PIXELS ourselves, so its
# warning is only noise for images we accept. (Turned into an error by -W error, it is caught.)
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)

_SHOWN_PATHS = 3  # how many example paths a warning line names


# --------------------------------------------------------------------------------------------
# Scanning a folder
# --------------------------------------------------------------------------------------------


@dataclass
class ImageFolder:
    """The usable images of a folder, with their class labels and what was left out.

    ``paths`` are sorted by class, then by their path within the class folder; ``labels[i]`` is
    the index of ``paths[i]``'s class in ``class_names`` (sorted), or -1 for every image of a
    flat, unlabelled folder (then ``class_names`` is empty). ``skipped`` are image files that
    could not be read (corrupt, empty, truncated header, too large); ``non_images`` are files
    without an image suffix. Hidden files and folders are in neither.
    """

    root: Path
    paths: list[Path]
    labels: list[int]
    class_names: list[str]
    skipped: list[Path] = field(default_factory=list)
    non_images: list[Path] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def labelled(self) -> bool:
        """True for a class-per-folder data set, False for a flat gallery (labels -1)."""
        return bool(self.class_names)

    def relative_path(self, i: int) -> str:
        """Image ``i``'s path relative to ``root``, with forward slashes (``"class/img.jpg"``)."""
        return self.paths[i].relative_to(self.root).as_posix()

    def class_counts(self) -> dict[str, int]:
        """Number of usable images per class, in ``class_names`` order ({} for a flat folder)."""
        if not self.labelled:
            return {}
        counts = np.bincount(np.asarray(self.labels, dtype=np.int64), minlength=len(self.class_names))
        return {name: int(count) for name, count in zip(self.class_names, counts)}

    def subset(self, class_names: Sequence[str]) -> ImageFolder:
        """The images of ``class_names`` only, labels re-indexed to that order (0, 1, ...).

        Raises :class:`RetrievalError` for a class this folder does not have.
        """
        if not self.labelled:
            raise ValueError("subset() needs a labelled folder")
        index = {name: i for i, name in enumerate(self.class_names)}
        unknown = [name for name in class_names if name not in index]
        if unknown:
            raise RetrievalError(f"{self.root}: no class folder named {_examples(unknown)}")
        if len(set(class_names)) != len(class_names):
            raise ValueError("subset(): class names repeated")
        new_label = np.full(len(self.class_names), -1, dtype=np.int64)
        new_label[[index[name] for name in class_names]] = np.arange(len(class_names))
        relabelled = new_label[np.asarray(self.labels, dtype=np.int64)] if self.paths else np.empty(0, np.int64)
        keep = np.flatnonzero(relabelled >= 0)
        keep = keep[np.argsort(relabelled[keep], kind="stable")]
        kept_classes = set(class_names)
        return ImageFolder(
            root=self.root,
            paths=[self.paths[i] for i in keep],
            labels=relabelled[keep].tolist(),
            class_names=list(class_names),
            skipped=[p for p in self.skipped if _class_of(self.root, p) in kept_classes],
            non_images=[p for p in self.non_images if _class_of(self.root, p) in kept_classes],
        )


def scan_folder(root: str | Path, *, labelled: bool | None = None, verify: bool = True) -> ImageFolder:
    """Scan ``root`` for images: ``root/<class>/<image>`` (labelled) or ``root/<image>`` (flat).

    ``labelled=None`` decides by the layout: labelled when some sub-folder of ``root`` holds
    images, flat otherwise. In a labelled folder each sub-folder is a class (images in nested
    folders belong to it) and files at the top level are ignored (top-level images with a
    warning); ``labelled=False`` takes every image below ``root``, recursively, with label -1.
    Suffixes are matched case-insensitively against :data:`IMAGE_EXTENSIONS`; hidden files and
    folders (``.name``) are ignored; other files are listed in ``non_images`` and reported in
    one warning line. With ``verify`` each image is opened and checked cheaply (header and
    Pillow's ``verify()``, not a full decode); unreadable ones go to ``skipped`` with one
    warning line. A class whose images are all unreadable is dropped (warned).

    Raises :class:`RetrievalError` when ``root`` is missing or has no usable image, or when
    ``labelled=True`` and it has no class sub-folders.
    """
    root = Path(root).expanduser()
    if not root.exists():
        raise RetrievalError(f"folder not found: {root}")
    if not root.is_dir():
        raise RetrievalError(f"not a folder: {root}")
    top_files, sub_dirs = _list_dir(root)
    class_files = {name: _walk_files(root / name) for name in sorted(sub_dirs)}
    has_classes = any(any(_is_image(p) for p in files) for files in class_files.values())
    if labelled is None:
        labelled = has_classes
    elif labelled and not has_classes:
        raise RetrievalError(f"{root} has no class sub-folders with images (expected {root}/<class>/<image>)")

    non_images: list[Path] = []
    candidates: list[tuple[str, Path]] = []  # (class name or "", image path)
    if labelled:
        _warn_if_split_root(root, class_files)
        stray = [p for p in top_files if _is_image(p)]
        if stray:
            logger.warning(
                "ignored %d images at the top level of %s (not in a class folder): %s",
                len(stray), root, _examples([p.name for p in stray]),
            )
        for name, files in class_files.items():
            for path in files:
                (candidates.append((name, path)) if _is_image(path) else non_images.append(path))
    else:
        files = sorted(top_files) + [p for name in sorted(sub_dirs) for p in class_files[name]]
        for path in files:
            (candidates.append(("", path)) if _is_image(path) else non_images.append(path))

    skipped: list[Path] = []
    reasons: list[str] = []
    usable: list[tuple[str, Path]] = []
    for name, path in candidates:
        reason = _unreadable_reason(path) if verify else None
        if reason is None:
            usable.append((name, path))
        else:
            skipped.append(path)
            reasons.append(f"{path.relative_to(root).as_posix()} ({reason})")
    if non_images:
        logger.warning(
            "ignored %d non-image files in %s: %s",
            len(non_images), root, _examples([p.relative_to(root).as_posix() for p in non_images]),
        )
    if skipped:
        logger.warning("skipped %d unreadable images in %s: %s", len(skipped), root, _examples(reasons))
    if not usable:
        suffixes = ", ".join(sorted(IMAGE_EXTENSIONS))
        detail = f" ({len(skipped)} unreadable)" if skipped else f" (looked for {suffixes})"
        raise RetrievalError(f"no usable images in {root}{detail}")

    if labelled:
        class_names = sorted({name for name, _ in usable})
        empty = [name for name, files in class_files.items() if any(_is_image(p) for p in files) and name not in class_names]
        if empty:
            logger.warning("dropped %d class folders of %s with no readable image: %s", len(empty), root, _examples(empty))
        label_of = {name: i for i, name in enumerate(class_names)}
        usable.sort(key=lambda item: (label_of[item[0]], item[1].relative_to(root).as_posix()))
        labels = [label_of[name] for name, _ in usable]
    else:
        class_names = []
        usable.sort(key=lambda item: item[1].relative_to(root).as_posix())
        labels = [-1] * len(usable)
    return ImageFolder(
        root=root,
        paths=[path for _, path in usable],
        labels=labels,
        class_names=class_names,
        skipped=skipped,
        non_images=non_images,
    )


SPLIT_FOLDER_NAMES = frozenset({"train", "training", "val", "valid", "validation", "test", "query", "gallery", "catalog", "catalogue"})


def _warn_if_split_root(root: Path, class_files: dict[str, list[Path]]) -> None:
    """Warn when ``root`` looks like the parent of data splits (``root/train/<class>/<image>``):
    a sub-folder named like a split whose images all sit in its own sub-folders would otherwise
    silently become one class."""
    splits = [
        name for name, files in class_files.items()
        if name.lower() in SPLIT_FOLDER_NAMES
        and any(_is_image(p) for p in files)
        and all(p.parent != root / name for p in files if _is_image(p))
    ]
    if splits:
        logger.warning(
            "%s looks like a folder of data splits (%s hold class folders), but each of its sub-folders is "
            "taken as one class: point at one split instead, e.g. %s",
            root, ", ".join(splits), root / ("train" if "train" in splits else splits[0]),
        )


def require_trainable(folder: ImageFolder) -> None:
    """Check that ``folder`` can train a metric: labelled, with a class of two or more images.

    Classes with a single image cannot give an (anchor, positive) pair: they stay in the data
    (as gallery items and negatives for evaluation) but never serve as anchors; a warning names
    them. Raises :class:`RetrievalError` (one line) when no class has two or more images.
    """
    if not folder.labelled:
        raise RetrievalError(f"{folder.root} is not a labelled folder: training needs {folder.root}/<class>/<image>")
    counts = folder.class_counts()
    singles = [name for name, count in counts.items() if count < 2]
    if len(singles) == len(counts):
        raise RetrievalError(
            f"{folder.root}: no class has two or more images, so there is no positive pair to train on"
        )
    if singles:
        logger.warning(
            "%d classes of %s have a single image: kept in the gallery, never used as anchors: %s",
            len(singles), folder.root, _examples(singles),
        )


def _list_dir(folder: Path) -> tuple[list[Path], list[str]]:
    """Non-hidden files (paths) and sub-folder names directly in ``folder``."""
    files, dirs = [], []
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if entry.is_dir():
                dirs.append(entry.name)
            elif entry.is_file():
                files.append(Path(entry.path))
    return files, dirs


def _walk_files(folder: Path) -> list[Path]:
    """Every non-hidden file below ``folder`` (hidden folders pruned; symlinked folders not followed)."""
    found = []
    for current, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found.extend(Path(current, name) for name in files if not name.startswith("."))
    return sorted(found)


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def _class_of(root: Path, path: Path) -> str:
    return path.relative_to(root).parts[0]


def _examples(items: Sequence[str], shown: int = _SHOWN_PATHS) -> str:
    """``"a, b, c (and 4 more)"``: the first few of a list, for a one-line message."""
    text = ", ".join(str(item) for item in items[:shown])
    return text + (f" (and {len(items) - shown} more)" if len(items) > shown else "")


def _unreadable_reason(path: Path) -> str | None:
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


def _short_reason(error: BaseException) -> str:
    text = str(error).split("\n")[0].strip()
    if isinstance(error, Image.UnidentifiedImageError) or text.startswith("cannot identify image file"):
        return "not a readable image"
    return text or type(error).__name__


# --------------------------------------------------------------------------------------------
# Loading one image
# --------------------------------------------------------------------------------------------


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
            return _to_rgb(upright if upright is not None else image)
    except RetrievalError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise RetrievalError(f"image too large: {name} ({_short_reason(error)})") from None
    except Exception as error:  # Pillow raises many types (OSError, SyntaxError, ValueError, ...) on bad files
        raise RetrievalError(f"cannot read image {name}: {_short_reason(error)}") from None


def _to_rgb(image: Image.Image) -> Image.Image:
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


# --------------------------------------------------------------------------------------------
# Class split
# --------------------------------------------------------------------------------------------


def split_classes(folder: ImageFolder, val_fraction: float, seed: int) -> tuple[ImageFolder, ImageFolder]:
    """Split ``folder`` by class into (train, val): no validation class appears in training.

    About ``round(val_fraction * number of classes)`` classes go to validation, chosen at random
    (seeded) among the classes with two or more images (a one-image class cannot be a query with
    a positive); at least two when ``val_fraction > 0``, and never so many that training keeps
    fewer than two such classes. When that is impossible (fewer than four classes with two or
    more images) validation is empty and a warning says so. Both parts keep the sorted class
    order, labels re-indexed. ``val_fraction`` must be in [0, 1).
    """
    if not 0.0 <= val_fraction < 1.0:
        raise RetrievalError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if not folder.labelled:
        raise RetrievalError(f"{folder.root} is not a labelled folder: cannot split classes")
    counts = folder.class_counts()
    if val_fraction == 0.0:
        return folder, folder.subset([])
    eligible = [name for name in folder.class_names if counts[name] >= 2]
    most = len(eligible) - 2
    if most < 2:
        logger.warning(
            "%s: only %d classes have two or more images, too few to hold out validation classes "
            "(needs 4): training without validation",
            folder.root, len(eligible),
        )
        return folder, folder.subset([])
    n_val = min(max(2, round(val_fraction * len(folder.class_names))), most)
    rng = np.random.default_rng(seed)
    chosen = set(np.asarray(eligible)[rng.permutation(len(eligible))[:n_val]].tolist())
    val_names = [name for name in folder.class_names if name in chosen]
    train_names = [name for name in folder.class_names if name not in chosen]
    return folder.subset(train_names), folder.subset(val_names)


# --------------------------------------------------------------------------------------------
# Domain knowledge: class groups and never-negative pairs
# --------------------------------------------------------------------------------------------

_CLASS_COLUMNS = ("class", "class_name", "fine_class", "fine_class_name", "fine", "name", "label", "identity")
_GROUP_COLUMNS = (
    "group", "group_name", "coarse_class_name", "coarse_class", "coarse", "coarse_name",
    "superclass", "super_class", "superclass_name", "super_class_name", "family", "category",
)
_PAIR_HEADERS = {"class_a", "class_b", "a", "b", "class1", "class2", "class_1", "class_2", "first", "second"}


def read_class_groups(csv_path: str | Path, class_names: Sequence[str]) -> dict[str, str]:
    """Read which group each class belongs to (e.g. the apple varieties form the group "Apple").

    The CSV has a header row; the class column is the first of ``class``, ``class_name``,
    ``fine_class``, ... present and the group column the first of ``group``, ``group_name``,
    ``coarse_class_name``, ``coarse_class``, ``coarse``, ``superclass``, ``family``,
    ``category`` (names compared case-insensitively, ``-`` and spaces read as ``_``); other
    columns are ignored, so the grocery data set's ``classes.csv`` works as it is. A file of two
    columns without a header (``class,group``) is accepted too. Blank lines and lines starting
    with ``#`` are skipped. Returns {class: group} for the classes in ``class_names``; classes of
    the file not in ``class_names`` are ignored, and classes without a group are named, each in
    one warning line. Raises :class:`RetrievalError` with the file name and line number for a
    malformed row (wrong number of fields, an empty value, a class given two groups).
    """
    path = Path(csv_path)
    rows = read_csv_rows(path)
    if not rows:
        raise RetrievalError(f"{path}: empty file, expected a header such as class,group")
    known = set(class_names)
    line, header = rows[0]
    columns = [normalise_column(value) for value in header]
    class_col = next((columns.index(c) for c in _CLASS_COLUMNS if c in columns), None)
    group_col = next((columns.index(c) for c in _GROUP_COLUMNS if c in columns), None)
    if class_col is None or group_col is None:
        if len(header) == 2 and header[0].strip() in known:
            class_col, group_col, n_fields, data = 0, 1, 2, rows
        else:
            raise RetrievalError(
                f"{path}:{line}: header must name a class column ({', '.join(_CLASS_COLUMNS[:3])}, ...) "
                f"and a group column ({', '.join(_GROUP_COLUMNS[:4])}, ...); got {','.join(header)}"
            )
    else:
        n_fields, data = len(header), rows[1:]

    groups: dict[str, str] = {}
    seen: dict[str, tuple[str, int]] = {}  # class -> (group, line), for every class of the file
    unknown: list[str] = []
    for line, row in data:
        if len(row) != n_fields:
            raise RetrievalError(f"{path}:{line}: expected {n_fields} fields, got {len(row)}: {','.join(row)}")
        name, group = row[class_col].strip(), row[group_col].strip()
        if not name or not group:
            raise RetrievalError(f"{path}:{line}: empty class or group")
        if name in seen:
            if seen[name][0] != group:
                raise RetrievalError(
                    f"{path}:{line}: class {name} is in group {group} here but in {seen[name][0]} on line {seen[name][1]}"
                )
            continue
        seen[name] = (group, line)
        if name in known:
            groups[name] = group
        else:
            unknown.append(name)
    return _finish_groups(path, class_names, groups, unknown)


def _finish_groups(path: Path, class_names: Sequence[str], groups: dict[str, str], unknown: list[str]) -> dict[str, str]:
    if unknown:
        logger.warning("%s: %d classes not in the data are ignored: %s", path, len(unknown), _examples(unknown))
    missing = [name for name in class_names if name not in groups]
    if missing:
        logger.warning("%s: %d classes have no group (each is its own group): %s", path, len(missing), _examples(missing))
    return {name: groups[name] for name in class_names if name in groups}


def read_class_pairs(csv_path: str | Path, class_names: Sequence[str]) -> list[tuple[str, str]]:
    """Read pairs of classes that must never be used as each other's negatives.

    One ``class_a,class_b`` pair a row (e.g. two folders that hold the same person, or an
    "unknown" identity); an optional header row (``class_a,class_b``), blank lines and ``#``
    lines are skipped. Returns the pairs in file order, each unordered pair once. Pairs naming a
    class not in ``class_names`` are dropped with one warning line. Raises
    :class:`RetrievalError` with the file name and line number for a row that is not two
    non-empty, different class names.
    """
    path = Path(csv_path)
    rows = read_csv_rows(path)
    if rows and {normalise_column(value) for value in rows[0][1]} <= _PAIR_HEADERS and len(rows[0][1]) == 2:
        rows = rows[1:]
    known = set(class_names)
    pairs: list[tuple[str, str]] = []
    seen: set[frozenset[str]] = set()
    unknown: list[str] = []
    for line, row in rows:
        if len(row) != 2:
            raise RetrievalError(f"{path}:{line}: expected class_a,class_b, got {len(row)} fields: {','.join(row)}")
        a, b = row[0].strip(), row[1].strip()
        if not a or not b:
            raise RetrievalError(f"{path}:{line}: empty class name")
        if a == b:
            raise RetrievalError(f"{path}:{line}: a class cannot be its own never-negative pair ({a})")
        missing = [name for name in (a, b) if name not in known]
        if missing:
            unknown.extend(name for name in missing if name not in unknown)
            continue
        if frozenset((a, b)) not in seen:
            seen.add(frozenset((a, b)))
            pairs.append((a, b))
    if unknown:
        logger.warning("%s: pairs with %d classes not in the data are ignored: %s", path, len(unknown), _examples(unknown))
    return pairs


def class_group_ids(class_names: Sequence[str], class_groups: dict[str, str]) -> list[int]:
    """Group id per class index, for :class:`PKSampler` and ``NegativeRules``.

    Classes sharing a group name share an id (ids numbered by sorted group name); a class
    without a group gets an id of its own.
    """
    names = sorted(set(class_groups.values()))
    ids = {name: i for i, name in enumerate(names)}
    out, next_id = [], len(names)
    for name in class_names:
        if name in class_groups:
            out.append(ids[class_groups[name]])
        else:
            out.append(next_id)
            next_id += 1
    return out


def read_csv_rows(path: Path, *, what: str = "CSV file") -> list[tuple[int, list[str]]]:
    """(line number, fields) of each non-blank, non-comment (``#``) row of a UTF-8 CSV file.

    Line numbers are the file's own (1-based, counting blank and comment lines and the lines of
    quoted fields that span several), so callers can report ``path:line`` in their errors.
    Raises :class:`RetrievalError` for a missing file (``"<what> not found: <path>"``), a file
    that is not UTF-8 text, and malformed CSV (``"<path>:<line>: ..."``).
    """
    if not path.is_file():
        raise RetrievalError(f"{what} not found: {path}")
    rows: list[tuple[int, list[str]]] = []
    line = 1
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            for row in reader:
                if row and any(value.strip() for value in row) and not row[0].lstrip().startswith("#"):
                    rows.append((line, row))
                line = reader.line_num + 1
    except UnicodeDecodeError as error:
        raise RetrievalError(f"{path}: not a UTF-8 text file ({error.reason})") from None
    except csv.Error as error:
        raise RetrievalError(f"{path}:{line}: {error}") from None
    return rows


def normalise_column(name: str) -> str:
    """A CSV header cell as a column key: stripped, lower case, ``-`` and spaces as ``_``."""
    return name.strip().lower().replace("-", "_").replace(" ", "_")


# --------------------------------------------------------------------------------------------
# P x K batch sampler
# --------------------------------------------------------------------------------------------


class PKSampler(Sampler[list[int]]):
    """Batches of P classes x K images (``classes_per_batch`` x ``images_per_class``).

    Every batch holds P distinct classes, K images of each, as P runs of K consecutive dataset
    indices (``len(batch) == P * K``), so every anchor has K - 1 positives and (P - 1) * K
    negatives in its batch. Only *anchor classes* (two or more images) are drawn: a one-image
    class is never one of the P. Within a class the K images are distinct when the class has
    at least K images; a smaller class fills its K places with all of its images, repeated
    (sampling with replacement).

    **Epoch.** With n_c images in anchor class c and m_c = ceil(n_c / K) the visits c needs to
    show all of its images, one epoch is

        ``len(sampler) = max(ceil(sum_c m_c / P), max_c m_c)``

    batches: the fewest in which every image could appear (about ceil(N / (P * K)) for N
    anchor-class images). Without class groups it is guaranteed: **every image of an anchor
    class appears at least once per epoch**; the remaining places go to extra visits spread
    over the classes not already in every batch (favouring the small ones, which balances the
    classes), where each class keeps cycling through a fresh shuffle of its images. With class
    groups coverage is favoured, not guaranteed: batches prefer the classes with images still
    unseen (on grocery-like data about 90-100 % of the images appear in an epoch).

    **Class groups.** ``class_groups[c]`` is the group id of class ``c`` (e.g. the coarse class
    "Apple" for the apple varieties, from :func:`read_class_groups` and :func:`class_group_ids`).
    Then each batch draws its P classes from ``groups_per_batch`` groups (default 2), round-robin
    across them (so each contributes), taking more groups only when those hold fewer than P
    anchor classes together: the negatives in a batch are mostly look-alikes.

    **Determinism.** The batches of an epoch depend only on (``seed``, epoch). As with
    ``DistributedSampler``, call :meth:`set_epoch` before each epoch; :meth:`state_dict` /
    :meth:`load_state_dict` carry (seed, epoch) through a checkpoint so a resumed run sees the
    same batches. The sampler runs in the main process, so this holds with loader workers too.
    """

    def __init__(
        self,
        labels: Sequence[int] | np.ndarray,
        classes_per_batch: int,
        images_per_class: int,
        *,
        seed: int = 0,
        class_groups: Sequence[int] | None = None,
        groups_per_batch: int | None = None,
    ) -> None:
        labels = np.asarray(labels, dtype=np.int64)
        if labels.ndim != 1:
            raise ValueError("labels must be one label per dataset index")
        if labels.size and labels.min() < 0:
            raise RetrievalError("the P x K sampler needs labelled images (found label -1: a flat folder?)")
        if classes_per_batch < 2:
            raise RetrievalError(f"--classes-per-batch (P) must be at least 2 (negatives come from other classes), got {classes_per_batch}")
        if images_per_class < 2:
            raise RetrievalError(f"--images-per-class (K) must be at least 2 (positives come from the same class), got {images_per_class}")
        counts = np.bincount(labels) if labels.size else np.zeros(0, np.int64)
        anchor_classes = np.flatnonzero(counts >= 2)
        if len(anchor_classes) < 2:
            raise RetrievalError(f"the P x K sampler needs two classes with two or more images, found {len(anchor_classes)}")
        if classes_per_batch > len(anchor_classes):
            raise RetrievalError(
                f"{classes_per_batch} classes per batch (P) but only {len(anchor_classes)} classes have two or more "
                f"images: lower --classes-per-batch"
            )
        self.classes_per_batch = int(classes_per_batch)
        self.images_per_class = int(images_per_class)
        self.seed = int(seed)
        self.epoch = 0
        self.anchor_classes = anchor_classes
        order = np.argsort(labels, kind="stable")
        starts = np.concatenate([[0], np.cumsum(counts)])
        self._class_indices = [order[starts[c] : starts[c + 1]] for c in anchor_classes]
        self._visits_needed = -(-counts[anchor_classes] // self.images_per_class)  # m_c = ceil(n_c / K)
        self._n_batches = int(max(-(-self._visits_needed.sum() // self.classes_per_batch), self._visits_needed.max()))

        self._group_of = None
        if class_groups is not None:
            groups = np.asarray(class_groups)
            if groups.ndim != 1 or len(groups) < len(counts):
                raise ValueError(f"class_groups needs one group id per class ({len(counts)}), got {len(groups)}")
            _, self._group_of = np.unique(groups[anchor_classes], return_inverse=True)
            self._group_of = self._group_of.reshape(-1)
            n_groups = int(self._group_of.max()) + 1
            self.groups_per_batch = min(int(groups_per_batch or 2), n_groups)
            if self.groups_per_batch < 1:
                raise RetrievalError(f"groups_per_batch must be at least 1, got {groups_per_batch}")
        elif groups_per_batch is not None:
            raise ValueError("groups_per_batch needs class_groups")
        else:
            self.groups_per_batch = None

    def __len__(self) -> int:
        """Batches per epoch (see the class docstring for the definition)."""
        return self._n_batches

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.epoch_batches(self.epoch):
            yield batch.tolist()

    def set_epoch(self, epoch: int) -> None:
        """Choose which epoch's batches the next iteration yields."""
        self.epoch = int(epoch)

    def state_dict(self) -> dict[str, int]:
        """``{"seed", "epoch"}``: all that is needed to reproduce the coming batches."""
        return {"seed": self.seed, "epoch": self.epoch}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Restore the seed and epoch saved by :meth:`state_dict`."""
        self.seed = int(state["seed"])
        self.epoch = int(state["epoch"])

    def epoch_batches(self, epoch: int) -> np.ndarray:
        """The batches of ``epoch`` as an int64 array (batches per epoch, P * K) of dataset indices."""
        rng = np.random.default_rng([self.seed, int(epoch)])
        if self._group_of is None:
            grid = self._class_grid(rng)
        else:
            grid = self._grouped_class_grid(rng)
        return self._fill_images(grid, rng).reshape(self._n_batches, -1)

    def _class_grid(self, rng: np.random.Generator) -> np.ndarray:
        """(B, P) anchor-class positions: class c in v_c >= m_c distinct batches, P distinct per batch.

        Extra visits (P * B - sum m_c of them) are drawn without replacement from each class's
        spare batches (B - m_c), i.e. multivariate hypergeometric. The visits of the classes, in
        a random class order, are laid out column by column in a (P, B) grid: a class's visits
        are consecutive and at most B, so they land in distinct batches.
        """
        n_batches, per_batch = self._n_batches, self.classes_per_batch
        needed = self._visits_needed
        spare = n_batches - needed
        extra = per_batch * n_batches - int(needed.sum())
        visits = needed + rng.multivariate_hypergeometric(spare, extra, method="marginals")
        class_order = rng.permutation(len(needed))
        sequence = np.repeat(class_order, visits[class_order])
        grid = sequence.reshape(per_batch, n_batches).T
        return grid[rng.permutation(n_batches)]

    def _grouped_class_grid(self, rng: np.random.Generator) -> np.ndarray:
        """(B, P) anchor-class positions, each batch from ``groups_per_batch`` groups (more if needed).

        Groups are drawn with weight = images still unseen in them (plus a little, so that every
        group stays possible), by weighted sampling without replacement (Efraimidis-Spirakis
        keys); within a group, classes with more unseen visits come first.
        """
        group_of = self._group_of
        n_groups = int(group_of.max()) + 1
        group_sizes = np.bincount(group_of, minlength=n_groups)
        remaining = self._visits_needed.astype(np.float64)
        grid = np.empty((self._n_batches, self.classes_per_batch), dtype=np.int64)
        for b in range(self._n_batches):
            weight = np.bincount(group_of, weights=remaining, minlength=n_groups) + 0.05 * group_sizes
            keys = np.log(rng.random(n_groups)) / weight
            group_order = np.argsort(-keys)
            enough = int(np.searchsorted(np.cumsum(group_sizes[group_order]), self.classes_per_batch)) + 1
            chosen = group_order[: max(self.groups_per_batch, enough)]
            group_rank = np.full(n_groups, -1)
            group_rank[chosen] = np.arange(len(chosen))
            candidates = np.flatnonzero(group_rank[group_of] >= 0)
            # Within each chosen group: most-needed classes first, ties at random.
            by_need = candidates[np.lexsort((rng.random(len(candidates)), -remaining[candidates], group_rank[group_of[candidates]]))]
            ranks_of_group = group_rank[group_of[by_need]]
            first = np.searchsorted(ranks_of_group, ranks_of_group)
            rank_in_group = np.arange(len(by_need)) - first
            picked = by_need[np.lexsort((ranks_of_group, rank_in_group))[: self.classes_per_batch]]
            grid[b] = picked
            remaining[picked] = np.maximum(remaining[picked] - 1, 0)
        return grid

    def _fill_images(self, grid: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """(B, P, K) dataset indices: the j-th visit of class c gets c's j-th chunk of K images.

        A class's chunks are consecutive windows of K over a shuffle of its images (wrapping
        around), first one covering shuffle, then a fresh shuffle for the extra visits; windows
        of K consecutive places are distinct images whenever the class has K or more.
        """
        k = self.images_per_class
        flat = grid.ravel()
        visits = np.bincount(flat, minlength=len(self._class_indices))
        chunks = []
        for c, indices in enumerate(self._class_indices):
            v = int(visits[c])
            if v == 0:
                continue
            n = len(indices)
            first = min(v, int(self._visits_needed[c])) * k
            stream = rng.permutation(indices)[np.arange(first) % n]
            if v * k > first:
                stream = np.concatenate([stream, rng.permutation(indices)[np.arange(v * k - first) % n]])
            chunks.append(stream.reshape(v, k))
        all_chunks = np.concatenate(chunks)
        starts = np.concatenate([[0], np.cumsum(visits)[:-1]])
        by_class = np.argsort(flat, kind="stable")
        occurrence = np.empty_like(flat)
        occurrence[by_class] = np.arange(flat.size) - np.repeat(starts, visits)
        return all_chunks[starts[flat] + occurrence].reshape(grid.shape[0], grid.shape[1], k)


# --------------------------------------------------------------------------------------------
# Transforms
# --------------------------------------------------------------------------------------------

_CV2_INTERPOLATION = {"nearest": 0, "bilinear": 1, "linear": 1, "bicubic": 2, "cubic": 2, "area": 3, "lanczos": 4}


class ImageTransform:
    """A picklable callable: RGB ``PIL.Image`` (or HWC uint8 array) -> CHW tensor.

    The tensor is float32, normalised, when ``batch_normalise`` is None; otherwise it is the uint8
    pixels and ``batch_normalise`` (a :class:`BatchNormalise`) finishes a whole batch of them on
    the model's device (see :func:`finish_pipeline`).

    Wraps an albumentations ``Compose``, which keeps its own random generator: loader workers
    would all start from the same copy of it, so :func:`make_loader` re-seeds each worker's copy
    through :meth:`set_random_seed`.
    """

    def __init__(self, pipeline: Any, *, train: bool, batch_normalise: BatchNormalise | None = None) -> None:
        self.pipeline = pipeline
        self.train = train
        self.batch_normalise = batch_normalise

    def finish_batch(self, images: torch.Tensor) -> torch.Tensor:
        """The model's input from a collated batch of this transform's outputs (already on its device)."""
        if self.batch_normalise is None or images.numel() == 0:  # nothing to normalise (every image of the batch unreadable)
            return images
        return self.batch_normalise(images)

    def __call__(self, image: Image.Image | np.ndarray) -> torch.Tensor:
        if isinstance(image, Image.Image):
            image = np.asarray(image if image.mode == "RGB" else _to_rgb(image))
        return self.pipeline(image=image)["image"].contiguous()

    def set_random_seed(self, seed: int) -> None:
        """Re-seed the augmentation's random generators (numpy and Python).

        One numpy and one Python generator, shared by every step of the pipeline (albumentations'
        ``set_random_state``): seeding each step separately costs 8 generator constructions, about
        0.1 ms an image, which a 2-core machine pays out of the training step.
        """
        seed = int(seed) % 2**32
        share = getattr(self.pipeline, "set_random_state", None)
        if share is None:  # albumentations < 2
            self.pipeline.set_random_seed(seed)
        else:
            share(np.random.default_rng(seed), random.Random(seed))

    def __repr__(self) -> str:
        return f"ImageTransform(train={self.train}, batch_normalise={self.batch_normalise!r}, {self.pipeline!r})"


class BatchNormalise:
    """uint8 pixels (B, C, H, W) -> float32 (x - 255 * mean) / (255 * std), per channel, on their device.

    The same arithmetic as albumentations' ``Normalize(max_pixel_value=255)`` per image, done once
    per batch where the model runs: loader workers then hand over a quarter of the bytes (uint8,
    not float32) through shared memory, and on CUDA the host-to-device copy shrinks fourfold and
    the arithmetic runs on the GPU (as timm's prefetching loader does).
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype != torch.uint8:
            raise TypeError(f"BatchNormalise takes uint8 pixels, got {images.dtype}")
        if images.shape[1] != len(self.mean):
            raise ValueError(f"BatchNormalise: {len(self.mean)} channels expected, batch has shape {tuple(images.shape)}")
        shape = (1, len(self.mean), 1, 1)
        mean = torch.tensor(self.mean, dtype=torch.float32, device=images.device).view(shape) * 255.0
        std = torch.tensor(self.std, dtype=torch.float32, device=images.device).view(shape) * 255.0
        return images.float().sub_(mean).div_(std)

    def __repr__(self) -> str:
        return f"BatchNormalise(mean={self.mean}, std={self.std})"


def build_transforms(
    data_config: dict[str, Any], *, train: bool, strength: float = 1.0, normalise_in_batch: bool = False,
) -> ImageTransform:
    """The train or eval image pipeline for a backbone's ``data_config``.

    ``data_config`` has ``input_size`` (3, H, W), ``mean``, ``std`` (on 0-1 pixels),
    ``interpolation`` ("bilinear", "bicubic", ...) and ``crop_pct`` (timm's pretrained config,
    see ``EmbeddingModel.data_config``).

    - eval: resize the shorter side to ``max(H, W) / crop_pct``, centre-crop H x W.
    - train: random resized crop to H x W (area scale in [1 - 0.75 s, 1], at least 0.08;
      aspect ratio within [1 - 0.25 s, 1 / (1 - 0.25 s)]), horizontal flip (p 0.5), colour
      jitter (brightness / contrast / saturation 0.3 s, hue 0.05 s, p 0.8), greyscale
      (p 0.05 s), Gaussian blur (p 0.1 s), with s = ``strength`` (1 is the usual recipe,
      more is stronger; ``strength=0`` gives the eval pipeline).

    Both then normalise with ``mean`` / ``std`` and return a CHW float32 tensor, or with
    ``normalise_in_batch`` CHW uint8 pixels that the transform's ``finish_batch`` normalises a
    batch at a time (:func:`finish_pipeline`; training uses this). The augmentations are seeded
    from torch's generator when built, so ``torch.manual_seed`` makes them repeatable.
    """
    import albumentations as A

    _, height, width = (int(v) for v in data_config["input_size"])
    interpolation = _CV2_INTERPOLATION.get(str(data_config.get("interpolation", "bilinear")).lower(), 1)
    crop_pct = float(data_config.get("crop_pct") or 0.875)
    s = max(0.0, float(strength))
    if train and s > 0:
        squeeze = max(0.5, 1.0 - 0.25 * s)
        steps = [
            A.RandomResizedCrop(
                size=(height, width), scale=(max(0.08, 1.0 - 0.75 * s), 1.0), ratio=(squeeze, 1.0 / squeeze),
                interpolation=interpolation,
            ),
            A.HorizontalFlip(p=0.5),
            A.ColorJitter(
                brightness=0.3 * s, contrast=0.3 * s, saturation=0.3 * s, hue=min(0.5, 0.05 * s), p=min(1.0, 0.8 * s),
            ),
            A.ToGray(p=min(1.0, 0.05 * s)),
            A.GaussianBlur(sigma_limit=(0.1, 1.0 + s), p=min(1.0, 0.1 * s)),
        ]
    else:
        steps = [
            A.SmallestMaxSize(max_size=int(math.floor(max(height, width) / crop_pct)), interpolation=interpolation),
            A.CenterCrop(height=height, width=width, pad_if_needed=True),
        ]
    return finish_pipeline(steps, data_config, train=train, normalise_in_batch=normalise_in_batch)


def finish_pipeline(steps: Sequence[Any], data_config: dict[str, Any], *, train: bool, normalise_in_batch: bool = False) -> ImageTransform:
    """``steps`` (albumentations transforms on HWC uint8), then normalisation and HWC -> CHW.

    Normalisation is (x - 255 * mean) / (255 * std) with ``data_config``'s ``mean`` / ``std``:
    per image inside the pipeline (CHW float32 out), or with ``normalise_in_batch`` left to the
    transform's :class:`BatchNormalise` (CHW uint8 out; see :meth:`ImageTransform.finish_batch`).
    The pipeline is seeded from torch's generator, so ``torch.manual_seed`` makes it repeatable.
    """
    import albumentations as A
    from albumentations.pytorch import ToTensorV2

    mean, std = tuple(data_config["mean"]), tuple(data_config["std"])
    normalise = [] if normalise_in_batch else [A.Normalize(mean=mean, std=std, max_pixel_value=255.0)]
    seed = int(torch.randint(0, 2**31 - 1, (1,)).item())
    pipeline = A.Compose([*steps, *normalise, ToTensorV2()], seed=seed)
    return ImageTransform(pipeline, train=train, batch_normalise=BatchNormalise(mean, std) if normalise_in_batch else None)


# --------------------------------------------------------------------------------------------
# Dataset and loader
# --------------------------------------------------------------------------------------------


class ImageDataset(Dataset):
    """Images by index: item ``i`` is ``(transform(image), label, i)``.

    An image that cannot be read at load time (corrupted or removed after the scan) gives
    ``None`` instead, with one warning per file, so training goes on; :func:`collate_images`
    drops it from the batch. ``labels=None`` labels every image -1; ``transform=None`` returns
    the RGB ``PIL.Image`` itself.

    ``cache_bytes`` > 0 keeps decoded images in memory (width x height x 3 bytes each) until that
    budget is used, so later epochs skip reading and decoding them; each loader worker holds its
    own cache. Images that no longer fit are decoded every time.
    """

    def __init__(
        self,
        paths: Sequence[str | Path],
        labels: Sequence[int] | None,
        transform: Callable[[Image.Image], Any] | None,
        *,
        cache_bytes: int = 0,
    ) -> None:
        self.paths = [Path(p) for p in paths]
        self.labels = [int(v) for v in labels] if labels is not None else [-1] * len(self.paths)
        if len(self.labels) != len(self.paths):
            raise ValueError(f"{len(self.paths)} paths but {len(self.labels)} labels")
        self.transform = transform
        self.cache_bytes = max(0, int(cache_bytes))
        self._cache: dict[Path, Image.Image] = {}
        self._cached_bytes = 0
        self._warned: set[Path] = set()

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[Any, int, int] | None:
        index = int(index)
        path = self.paths[index]
        image = self._cache.get(path)  # by path: a repeated image (unlabelled mode's two views) is held once
        if image is None:
            try:
                image = load_image(path)
            except RetrievalError as error:
                if path not in self._warned:
                    self._warned.add(path)
                    logger.warning("skipped at load time: %s", error)
                return None
            size = image.width * image.height * 3
            if self._cached_bytes + size <= self.cache_bytes:
                self._cache[path] = image
                self._cached_bytes += size
        pixels = self.transform(image) if self.transform is not None else image
        return pixels, self.labels[index], index


def collate_images(batch: Sequence[tuple[Any, int, int] | None]) -> tuple[Any, torch.Tensor, torch.Tensor]:
    """``(images (B, C, H, W), labels (B,), indices (B,))`` from dataset items, dropping the ``None``s.

    B may be smaller than the sampler's batch (or 0: then images is an empty tensor); the
    dataset indices say which images remain. Untransformed PIL images stay a list.
    """
    items = [item for item in batch if item is not None]
    if not items:
        return torch.empty(0), torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long)
    images, labels, indices = zip(*items)
    stacked = torch.stack(images) if isinstance(images[0], torch.Tensor) else list(images)
    return stacked, torch.tensor(labels, dtype=torch.long), torch.tensor(indices, dtype=torch.long)


def make_loader(
    dataset: Dataset,
    *,
    batch_sampler: Sampler[list[int]] | None = None,
    batch_size: int | None = None,
    shuffle: bool = False,
    num_workers: int | None = None,
    device: str | torch.device,
) -> DataLoader:
    """A ``DataLoader`` over ``dataset`` with :func:`collate_images`: give ``batch_sampler`` or ``batch_size``.

    ``num_workers=None`` picks a default from the usable CPUs: none with one CPU, else
    min(2, CPUs) for a CPU ``device`` (the model's own threads need the same cores) and
    min(8, CPUs) for CUDA (decoding has to keep the GPU fed). With workers they are
    persistent (started once, kept across epochs; the batch sampler still runs in the main
    process, so :meth:`PKSampler.set_epoch` between epochs takes effect) and each worker
    re-seeds its copy of the augmentation (see :class:`ImageTransform`). Memory is pinned when
    ``device`` is CUDA. ``shuffle`` applies to ``batch_size`` loading only.
    """
    device = torch.device(device)
    if (batch_sampler is None) == (batch_size is None):
        raise ValueError("make_loader needs exactly one of batch_sampler or batch_size")
    if batch_sampler is not None and shuffle:
        raise ValueError("shuffle is for batch_size loading; a batch_sampler decides the order itself")
    if num_workers is None:
        num_workers = default_num_workers(device)
    if num_workers < 0:
        raise RetrievalError(f"--workers (loader worker processes) must be 0 or more, got {num_workers}")
    options: dict[str, Any] = {
        "num_workers": num_workers,
        "collate_fn": collate_images,
        "pin_memory": device.type == "cuda",
    }
    if num_workers > 0:
        options.update(persistent_workers=True, worker_init_fn=_seed_worker_transform)
    if batch_sampler is not None:
        return DataLoader(dataset, batch_sampler=batch_sampler, **options)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, **options)


def default_num_workers(device: str | torch.device) -> int:
    """Loader workers when none are asked for (see :func:`make_loader`)."""
    device = torch.device(device)
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    if cpus < 2:
        return 0
    return min(8 if device.type == "cuda" else 2, cpus)


def _seed_worker_transform(worker_id: int) -> None:
    """Give each loader worker its own augmentation stream (torch seeds it base_seed + worker_id)."""
    info = torch.utils.data.get_worker_info()
    transform = getattr(info.dataset, "transform", None) if info is not None else None
    if hasattr(transform, "set_random_seed"):
        transform.set_random_seed(info.seed)
