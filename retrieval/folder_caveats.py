"""What a folder given to ``evaluate`` or ``calibrate`` can make a figure say that the model does
not earn, each as one warning line: classes the run trained on (:func:`warn_when_trained_on`: the
model remembers them), a single class (:func:`warn_when_one_class`: every neighbour is right), and
query images that are also gallery images (:func:`shared_images`: each finds itself at d = 0)."""

from __future__ import annotations

import logging
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from retrieval.errors import RetrievalError

__all__ = ["MEMORISED_FIGURES", "OPTIMISTIC_TAU", "shared_images", "warn_when_one_class", "warn_when_trained_on"]

logger = logging.getLogger("retrieval")

OPTIMISTIC_TAU = ("τ chosen on them is optimistic for people or products the model has not seen; "
                  "calibrate on held-out classes")


def warn_when_trained_on(run_dir: Path | str, data_dir: Path | str, consequence: str = OPTIMISTIC_TAU, *,
                         gallery_dir: Path | str | None = None) -> None:
    """One warning line when the folder's classes (its subfolders that hold files; hidden ones are
    not classes) include classes the run trained on (``config.json``'s ``train_classes``): the
    model has seen those people or products, so what is measured or chosen on them
    (``consequence``; default: τ) flatters it. With ``gallery_dir`` (``data_dir`` then the
    queries), only the query classes the gallery holds too count: a trained class that only the
    gallery holds is a distractor for unseen queries, which flatters nothing."""
    from retrieval.run import read_config

    try:
        config = read_config(run_dir)
        folder_classes = _classes(data_dir)
        if gallery_dir is not None:
            folder_classes &= _classes(gallery_dir)
    except (RetrievalError, OSError):
        return  # the command itself says what is wrong
    trained = {unicodedata.normalize("NFC", str(name)) for name in config.get("train_classes") or []}
    seen = sorted(folder_classes & trained)
    if seen:
        shown = ", ".join(seen[:3]) + (f" (and {len(seen) - 3} more)" if len(seen) > 3 else "")
        counted = "classes" if gallery_dir is None else "classes that the gallery holds too"
        logger.warning("%s: %d of its %d %s are classes the run trained on (%s): %s", data_dir, len(seen),
                       len(folder_classes), counted, shown, consequence)


def _classes(folder: Path | str) -> set[str]:
    """The class folders of a labelled folder: its subfolders that hold anything, hidden ones left out,
    by name in Unicode's composed form (NFC, as ``evaluate`` matches classes)."""
    return {unicodedata.normalize("NFC", p.name) for p in Path(folder).iterdir()
            if p.is_dir() and not p.name.startswith(".") and any(p.iterdir())}


def shared_images(queries: Sequence[Path], gallery: Sequence[Path]) -> list[Path]:
    """The query files whose exact content is also a gallery file (compared by size, then SHA-256)."""
    from retrieval.run import sha256_file

    by_size: dict[int, list[Path]] = {}
    for path in gallery:
        by_size.setdefault(path.stat().st_size, []).append(path)
    sized = [(path, size) for path in queries if (size := path.stat().st_size) in by_size]
    digests = {sha256_file(path) for size in {size for _, size in sized} for path in by_size[size]}
    return [path for path, _ in sized if sha256_file(path) in digests]


MEMORISED_FIGURES = ("Recall@1 and MAP@R on them measure what the model remembers, not how it does on people or "
                     "products it has not seen; evaluate on held-out classes")


def warn_when_one_class(gallery_labels: Any, folder: Path | str | None) -> None:
    """One warning line when the gallery holds one class: every neighbour of every query is then of
    the query's class, so Recall@K and MAP@R are 1 whatever the model."""
    if len(set(np.asarray(gallery_labels).tolist())) == 1:
        logger.warning("%s: one class only: every neighbour is of the query's class, so Recall@1 and MAP@R are 1 "
                       "whatever the model; evaluate on a folder of two or more classes", folder)
