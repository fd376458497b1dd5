"""The protocol every training source follows, and what the sources without labels share.

A source is what the training loop needs from the data, whatever kind of data it is: the scanned
folder, the part it trains on (``train_folder``: paths, possibly repeated, with labels or
pseudo-labels named by ``class_names``), the held-out validation classes (``val_folder``, empty
when there are none), the negative rules that every loss and miner obey, the training
augmentation, the batch sampler and the keys it adds to ``config.json``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Callable, Protocol

from retrieval import data
from retrieval.errors import RetrievalError
from retrieval.negatives import NegativeRules
from retrieval.training.objective import positives_still_pull, without_negatives

__all__ = ["TrainingSource", "check_negatives", "hidden_label_split", "empty_folder", "without_labels_entries", "relative_posix"]

log = logging.getLogger("retrieval")


class TrainingSource(Protocol):
    """What the training loop needs from the data (:mod:`retrieval.training.sources`)."""

    mode: str  # "labelled" | "unlabelled" | "pairs" (retrieval.run.MODES)
    folder: data.ImageFolder  # the whole scanned DATA_DIR
    train_folder: data.ImageFolder  # what the training dataset indexes
    val_folder: data.ImageFolder  # held-out classes (no images: no validation)
    rules: NegativeRules | None  # never-negative pairs and class groups, for every loss and miner
    greyscale: bool  # every image of DATA_DIR is stored grey (data.all_greyscale): evaluation then makes images grey

    def make_train_transform(self, data_config: dict[str, Any], *, normalise_in_batch: bool = False) -> data.ImageTransform:
        """The training augmentation (an :class:`~retrieval.data.ImageTransform`) for a backbone's data config."""

    def make_sampler(self, *, model=None, transform=None, device="cpu", precision="fp32",
                     embed_readable: Callable[..., Any] | None = None) -> Any:
        """The batch sampler: a :class:`~retrieval.data.PKSampler` or one with its interface
        (``set_epoch``, ``__len__``, ``classes_per_batch``, ``images_per_class``). A sampler that
        looks at the model embeds with ``embed_readable`` (:func:`retrieval.embed.embed_readable`;
        under torchrun the processes share the work and all receive the same rows, so they draw
        the same batches)."""

    def config_entries(self) -> dict[str, Any]:
        """Keys added to the run's ``config.json``: ``"mode"``, ``"labelled"`` and the source's own numbers."""


def hidden_label_split(data_dir: str | Path, val_fraction: float, seed: int) -> tuple[data.ImageFolder, data.ImageFolder, data.ImageFolder]:
    """(folder, training images, validation folder) for training without labels.

    A folder with class sub-folders is split by class as in labelled training (the validation
    classes never reach training), and the training part's labels are then not used; a flat
    folder (or ``val_fraction`` 0) keeps every image for training and has no validation.
    """
    folder = data.scan_folder(data_dir)
    if folder.labelled and val_fraction > 0:
        train_part, val_folder = data.split_classes(folder, val_fraction, seed)
    else:
        train_part, val_folder = folder, empty_folder(folder.root)
    return folder, train_part, val_folder


def empty_folder(root: Path) -> data.ImageFolder:
    """An ImageFolder without images: no validation."""
    return data.ImageFolder(root=Path(root), paths=[], labels=[], class_names=[])


def without_labels_entries(mode: str, val_folder: data.ImageFolder) -> dict[str, Any]:
    """The ``config.json`` keys every source without labels writes: its mode, that training saw no
    class labels, and whether there are validation classes."""
    return {"mode": mode, "labelled": False, "has_validation": bool(val_folder.paths)}


def relative_posix(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` with forward slashes (as given when it is not under it)."""
    try:
        return Path(path).relative_to(root).as_posix()
    except ValueError:
        return Path(path).as_posix()


def check_negatives(rules: NegativeRules, names: Sequence[str], what: str, why: str, *, loss: str, miner: str | None) -> None:
    """The training labels (``names``: classes, or linked groups of a pair file) that no other label
    may be a negative of under ``rules`` (:meth:`~retrieval.negatives.NegativeRules.classes_without_negatives`;
    ``why``: the rule that makes it so): a warning line naming them and saying what training does
    with their images under the run's ``loss`` and ``miner``
    (:func:`~retrieval.training.objective.without_negatives`: the contrastive loss still pulls them
    together, every other loss gives them no gradient); a RetrievalError when that is every one
    (nothing is ever pushed apart: every loss but the contrastive one is 0, which only pulls)."""
    lonely = rules.classes_without_negatives(len(names))
    if lonely and len(lonely) == len(names):
        outcome = ("training would only pull each one's images together and push nothing apart" if positives_still_pull(loss, miner)
                   else "training would learn nothing")
        raise RetrievalError(f"none of the {len(names)} {what} can have a negative ({why}): {outcome}")
    if lonely:
        log.warning("%d of %d %s can have no negative (%s): %s; %s", len(lonely), len(names), what, why,
                    data.brief_list([names[c] for c in lonely]), without_negatives(loss, miner))
