"""A folder of images in, an :class:`ImageFolder` out: paths, class labels, and what was left out.

A labelled folder ``DATA_DIR/<class>/<image>`` (torchvision's ``ImageFolder`` layout) is scanned
once by :func:`scan_folder`: each sub-folder is a class, images are checked cheaply
(:func:`~retrieval.data.images.unreadable_reason`), and files that are not images or cannot be
read are listed and reported in one warning line each rather than failing the scan. Folders are
followed through symlinks (a class folder may live elsewhere) but never into a folder already
scanned, so a link back up (``DATA_DIR/loop -> DATA_DIR``) or a second link to one class is skipped
with a warning instead of becoming a class of every image; a class folder without an image file
(empty, or only hidden or other files) is no class, named in one warning line. A flat folder of
images scans as an unlabelled gallery (labels -1). :func:`require_trainable` checks that a
folder can train a metric (some class with two or more images). :func:`brief_list` is how every
warning of the package names its examples in one line.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from retrieval.data.images import IMAGE_EXTENSIONS, unreadable_reason
from retrieval.errors import RetrievalError

__all__ = ["IMAGE_EXTENSIONS", "SPLIT_FOLDER_NAMES", "ImageFolder", "scan_folder", "require_trainable", "brief_list"]

logger = logging.getLogger("retrieval")

SPLIT_FOLDER_NAMES = frozenset({"train", "training", "val", "valid", "validation", "test", "query", "gallery", "catalog", "catalogue"})
"""Sub-folder names (compared lower-case) that suggest ``root`` is a folder of data splits."""

_SHOWN_PATHS = 3  # how many example paths a warning line names


@dataclass
class ImageFolder:
    """The usable images of a folder, with their class labels and what was left out.

    ``paths`` are sorted by class, then by their path within the class folder; ``labels[i]`` is
    the index of ``paths[i]``'s class in ``class_names`` (sorted), or -1 for every image of a
    flat, unlabelled folder (then ``class_names`` is empty). ``skipped`` are image files that
    could not be read (corrupt, empty, truncated header, too large, a broken link); ``non_images``
    are files without an image suffix. Hidden files and folders are in neither. ``outside``: the
    image files reached through symbolic links that leave ``root``, set aside unopened by a scan
    with ``within_root`` (empty otherwise).
    """

    root: Path
    paths: list[Path]
    labels: list[int]
    class_names: list[str]
    skipped: list[Path] = field(default_factory=list)
    non_images: list[Path] = field(default_factory=list)
    outside: list[Path] = field(default_factory=list)

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
            raise RetrievalError(f"{self.root}: no class folder named {brief_list(unknown)}")
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
            outside=[p for p in self.outside if _class_of(self.root, p) in kept_classes],
        )


def scan_folder(root: str | Path, *, labelled: bool | None = None, verify: bool = True,
                refuse_splits: bool = False, within_root: bool = False) -> ImageFolder:
    """Scan ``root`` for images: ``root/<class>/<image>`` (labelled) or ``root/<image>`` (flat).

    ``labelled=None`` decides by the layout: labelled when some sub-folder of ``root`` holds
    images, flat otherwise. In a labelled folder each sub-folder is a class (images in nested
    folders belong to it) and files at the top level are ignored (top-level images with a
    warning); ``labelled=False`` takes every image below ``root``, recursively, with label -1.
    Suffixes are matched case-insensitively against :data:`IMAGE_EXTENSIONS`; hidden files and
    folders (``.name``) are ignored; other files are listed in ``non_images`` and reported in
    one warning line. With ``verify`` each image is opened and checked cheaply (header and
    Pillow's ``verify()``, not a full decode); unreadable ones go to ``skipped`` with one
    warning line. A class whose images are all unreadable is dropped (warned). With
    ``within_root`` (a gallery: an index serves only files inside its folder) files whose real
    path, symbolic links followed, leaves ``root`` are neither opened nor listed as skipped or
    non-images: the images among them go to ``outside`` (the caller says what it does with them),
    and a folder whose images all lie outside is returned without usable images instead of raising.

    Raises :class:`RetrievalError` when ``root`` is missing or has no usable image, or when
    ``labelled=True`` and it has no class sub-folders; with ``refuse_splits`` (training) also when
    every sub-folder is a data split holding class folders (the parent of the splits), which is
    otherwise a warning.
    """
    root = Path(root).expanduser()
    if not root.exists():
        raise RetrievalError(f"folder not found: {root}")
    if not root.is_dir():
        raise RetrievalError(f"not a folder: {root}")
    top_files, sub_dirs = _list_dir(root)
    class_files = _files_by_sub_folder(root, sub_dirs)
    labelled = _resolve_layout(root, class_files, labelled)
    if labelled:
        _warn_if_split_root(root, class_files, refuse=refuse_splits)
        _warn_if_top_level_images(root, top_files)
        _warn_if_imageless_folders(root, class_files)
        files = [(name, path) for name, paths in class_files.items() for path in paths]
    else:
        files = [("", path) for path in sorted(top_files) + [p for paths in class_files.values() for p in paths]]
    outside: list[Path] = []
    if within_root:  # never open (nor name in a warning) what lies outside the folder
        real_root, inside_folders = Path(os.path.realpath(root)), {}
        leaves = {path for _, path in files if _leaves(path, real_root, inside_folders)}
        outside = [path for _, path in files if path in leaves and _is_image(path)]
        files = [(name, path) for name, path in files if path not in leaves]
    candidates = [(name, path) for name, path in files if _is_image(path)]  # (class name or "", image path)
    non_images = [path for _, path in files if not _is_image(path)]
    usable, skipped, reasons = _check_readable(root, candidates, verify)
    _warn_left_out(root, non_images, skipped, reasons)
    if not usable and outside:
        return ImageFolder(root=root, paths=[], labels=[], class_names=[], skipped=skipped,
                           non_images=non_images, outside=outside)
    if not usable:
        suffixes = ", ".join(sorted(IMAGE_EXTENSIONS))
        detail = f" ({len(skipped)} unreadable)" if skipped else f" (looked for {suffixes})"
        raise RetrievalError(f"no usable images in {root}{detail}")
    if labelled:
        class_names = _usable_class_names(root, usable, class_files, set(outside))
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
        outside=outside,
    )


def require_trainable(folder: ImageFolder, *, items: str = "images") -> None:
    """Check that ``folder`` can train a metric: labelled, with a class of two or more images.

    Classes with a single image cannot give an (anchor, positive) pair: they stay in the data
    (as gallery items and negatives for evaluation) but never serve as anchors; a warning names
    them. Raises :class:`RetrievalError` (one line) when no class has two or more images.
    ``items`` names what is counted: a face run's folder holds its photos with a face found
    ("photos with a face found"), so a class may be left with one or none.
    """
    if not folder.labelled:
        raise RetrievalError(f"{folder.root} is not a labelled folder: training needs {folder.root}/<class>/<image>")
    counts = folder.class_counts()
    singles = [name for name, count in counts.items() if count < 2]
    if len(singles) == len(counts):
        raise RetrievalError(
            f"{folder.root}: no class has two or more {items}, so there is no positive pair to train on"
        )
    if singles:
        single = "a single image: kept in the gallery" if items == "images" else f"fewer than two {items}"
        logger.warning(
            "%d classes of %s have %s, never used as anchors: %s",
            len(singles), folder.root, single, brief_list(singles),
        )


def brief_list(items: Sequence[str], shown: int = _SHOWN_PATHS) -> str:
    """``"a, b, c (and 4 more)"``: the first few of a list, for a one-line message."""
    text = ", ".join(str(item) for item in items[:shown])
    return text + (f" (and {len(items) - shown} more)" if len(items) > shown else "")


# --------------------------------------------------------------------------------------------
# The steps of a scan
# --------------------------------------------------------------------------------------------


def _files_by_sub_folder(root: Path, sub_dirs: list[str]) -> dict[str, list[Path]]:
    """The files below each sub-folder of ``root`` (sorted by name), each folder scanned once: a
    symlinked folder already scanned (a loop, a second link) is skipped, with one warning line."""
    visited = {_folder_id(root)}
    repeated: list[str] = []
    class_files = {}
    for name in sorted(sub_dirs):
        if _visit(root / name, visited):
            class_files[name] = _walk_files(root / name, visited, repeated, root)
        else:
            repeated.append(name)
    if repeated:
        logger.warning("skipped %d symlinked folders of %s already scanned (a loop or a second link): %s",
                       len(repeated), root, brief_list(repeated))
    return class_files


def _resolve_layout(root: Path, class_files: dict[str, list[Path]], labelled: bool | None) -> bool:
    """``labelled`` as asked, or (None) whether some sub-folder holds images; raises when asked
    for a labelled scan of a folder without class sub-folders."""
    has_classes = any(_has_images(files) for files in class_files.values())
    if labelled is None:
        return has_classes
    if labelled and not has_classes:
        raise RetrievalError(f"{root} has no class sub-folders with images (expected {root}/<class>/<image>)")
    return labelled


def _warn_if_split_root(root: Path, class_files: dict[str, list[Path]], *, refuse: bool = False) -> None:
    """Warn when ``root`` looks like the parent of data splits (``root/train/<class>/<image>``):
    a sub-folder named like a split whose images all sit in its own sub-folders would otherwise
    silently become one class. With ``refuse``, a RetrievalError instead when every sub-folder
    with images is such a split (its "classes" would be train, test, …)."""
    splits = [
        name for name, files in class_files.items()
        if name.lower() in SPLIT_FOLDER_NAMES
        and _has_images(files)
        and all(p.parent != root / name for p in files if _is_image(p))
    ]
    if refuse and splits and len(splits) == sum(_has_images(files) for files in class_files.values()):
        raise RetrievalError(f"{root} holds the data splits {', '.join(splits)}, each with class folders inside: train on "
                             f"one split, e.g. {root / ('train' if 'train' in splits else splits[0])}")
    if splits:
        logger.warning(
            "%s looks like a folder of data splits (%s hold class folders), but each of its sub-folders is "
            "taken as one class: point at one split instead, e.g. %s",
            root, ", ".join(splits), root / ("train" if "train" in splits else splits[0]),
        )


def _warn_if_top_level_images(root: Path, top_files: list[Path]) -> None:
    """Warn about images directly in a labelled ``root``: they belong to no class and are ignored."""
    stray = [p for p in top_files if _is_image(p)]
    if stray:
        logger.warning(
            "ignored %d image(s) at the top level of %s (not in a class folder): %s",
            len(stray), root, brief_list([p.name for p in stray]),
        )


def _warn_if_imageless_folders(root: Path, class_files: dict[str, list[Path]]) -> None:
    """Warn about sub-folders of a labelled ``root`` without an image file (empty, or holding only
    hidden or non-image files): they are no class, and a class the user expected to train on,
    index or evaluate would otherwise vanish without a word, while a stray file is warned of."""
    imageless = [name for name, files in class_files.items() if not _has_images(files)]
    if imageless:
        logger.warning("%d class folder(s) of %s hold no image and are not classes: %s",
                       len(imageless), root, brief_list(imageless))


def _check_readable(
    root: Path, candidates: list[tuple[str, Path]], verify: bool,
) -> tuple[list[tuple[str, Path]], list[Path], list[str]]:
    """``(usable, skipped, reasons)``: the candidates that pass the cheap check (all of them
    without ``verify``), the paths that fail it, and a ``"path (reason)"`` line for each of those."""
    skipped: list[Path] = []
    reasons: list[str] = []
    usable: list[tuple[str, Path]] = []
    for name, path in candidates:
        reason = unreadable_reason(path) if verify else None
        if reason is None:
            usable.append((name, path))
        else:
            skipped.append(path)
            reasons.append(f"{path.relative_to(root).as_posix()} ({reason})")
    return usable, skipped, reasons


def _warn_left_out(root: Path, non_images: list[Path], skipped: list[Path], reasons: list[str]) -> None:
    """One warning line for the non-image files and one for the unreadable images, if any."""
    if non_images:
        logger.warning(
            "ignored %d non-image files in %s: %s",
            len(non_images), root, brief_list([p.relative_to(root).as_posix() for p in non_images]),
        )
    if skipped:
        logger.warning("skipped %d unreadable image(s) in %s: %s", len(skipped), root, brief_list(reasons))


def _usable_class_names(root: Path, usable: list[tuple[str, Path]], class_files: dict[str, list[Path]],
                        outside: set[Path] = frozenset()) -> list[str]:
    """The sorted classes with a usable image; warns about class folders whose images all failed
    (not those whose images all lie ``outside`` the root: the caller reports those)."""
    class_names = sorted({name for name, _ in usable})
    empty = [name for name, files in class_files.items()
             if _has_images([f for f in files if f not in outside]) and name not in class_names]
    if empty:
        logger.warning("dropped %d class folders of %s with no readable image: %s", len(empty), root, brief_list(empty))
    return class_names


def _list_dir(folder: Path) -> tuple[list[Path], list[str]]:
    """Non-hidden files (paths; broken links too, reported as unreadable images, as
    :func:`_walk_files` keeps them) and sub-folder names directly in ``folder``."""
    files, dirs = [], []
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if _is_dir(entry):
                dirs.append(entry.name)
            elif entry.is_file() or (entry.is_symlink() and not os.path.exists(entry.path)):
                files.append(Path(entry.path))
    return files, dirs


def _walk_files(folder: Path, visited: set[tuple[int, int]], repeated: list[str], root: Path) -> list[Path]:
    """Every non-hidden file below ``folder`` (hidden folders pruned), following symlinked folders
    except into one in ``visited`` (its ``root``-relative name is added to ``repeated``)."""
    found = []
    stack = [folder]
    while stack:
        current = stack.pop()
        try:
            entries = sorted(os.scandir(current), key=lambda entry: entry.name)
        except OSError:
            continue  # unreadable folder: nothing in it can be read either
        for entry in entries:
            if entry.name.startswith("."):
                continue
            path = Path(entry.path)
            if not _is_dir(entry):
                found.append(path)  # files, and broken links (reported as unreadable images)
            elif _visit(path, visited):
                stack.append(path)
            else:
                repeated.append(path.relative_to(root).as_posix())
    return sorted(found)


def _leaves(path: Path, real_root: Path, inside_folders: dict[Path, bool]) -> bool:
    """Whether ``path``, symbolic links followed, lies outside ``real_root`` (a resolved folder): its
    folder does, or it exists and its target does. A broken link lying in the folder stays (it is
    reported as unreadable, as in a scan of any folder: nothing outside is opened).
    ``inside_folders`` caches the answer for each folder."""
    if path.parent not in inside_folders:
        inside_folders[path.parent] = Path(os.path.realpath(path.parent)).is_relative_to(real_root)
    if not inside_folders[path.parent]:
        return True
    return os.path.exists(path) and not Path(os.path.realpath(path)).is_relative_to(real_root)


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()  # follows symlinks
    except OSError:
        return False


def _folder_id(folder: Path) -> tuple[int, int]:
    status = folder.stat()
    return status.st_dev, status.st_ino


def _visit(folder: Path, visited: set[tuple[int, int]]) -> bool:
    """Mark ``folder`` (its target, through symlinks) visited; False when it already was."""
    try:
        key = _folder_id(folder)
    except OSError:
        return False
    if key in visited:
        return False
    visited.add(key)
    return True


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def _has_images(files: list[Path]) -> bool:
    return any(_is_image(p) for p in files)


def _class_of(root: Path, path: Path) -> str:
    return path.relative_to(root).parts[0]
