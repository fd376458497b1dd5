"""Training when negatives are not labelled: the data side of ``retrieval train --unlabelled`` and
``retrieval train --pairs FILE``.

Often only positives are observed — two photos show the same product, a user kept these items
together — and everything else is *missing*, not negative: an unobserved pair may well match.
So the negatives must be chosen by a strategy rather than read from labels, and more positives
can be made by transforming the input. Both modes give the labelled training loop
(:mod:`retrieval.train`) *pseudo-labels* and leave the loop itself unchanged:

- ``--unlabelled`` (:mod:`retrieval.unlabelled`): every image is its own class, seen as two
  augmented views; the other images of the batch are its negatives (SimCLR's recipe).
- ``--pairs FILE`` (:mod:`retrieval.pairs`): images linked by the pair file (connected
  components, union-find) are one class; the negatives of an anchor are the images of the other
  components in its batch, and ``--pair-negatives`` chooses how the batch's components are
  drawn: ``random`` or ``hard`` (the nearest not-linked components under the current model).

The P×K sampler, the losses and miners, the mining log (its ``*_label`` fields then hold the
pseudo-labels), checkpoints and ``--resume`` all work as for labelled training. When
``DATA_DIR`` has class sub-folders anyway, the labels are hidden from training: they only hold
out the validation classes (``--val-fraction``) on which Recall@1 and MAP@R are measured each
epoch. A flat folder has no validation (the metrics rows then hold null metrics).

The run's ``config.json`` says what was used (:func:`config_entries`): ``"mode"``
(``"labelled"`` | ``"unlabelled"`` | ``"pairs"``), ``"labelled"`` (whether training saw class
labels), ``"has_validation"`` and the mode's own numbers.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from retrieval import data
from retrieval.errors import RetrievalError
from retrieval.negatives import NegativeRules

__all__ = ["MODES", "ImplicitData", "is_implicit", "mode_of", "check_config", "prepare", "hidden_label_split"]

log = logging.getLogger("retrieval")

MODES = ("labelled", "unlabelled", "pairs")


@dataclass
class ImplicitData:
    """What the training loop needs from an implicit-feedback mode, in place of a labelled folder.

    ``train_folder`` is what the training dataset indexes: its ``paths`` may repeat an image (its
    two views) and its ``labels`` are pseudo-labels (an image, a linked component), named by
    ``class_names``. ``make_train_transform(data_config, normalise_in_batch=...)`` gives the
    training augmentation (an :class:`~retrieval.data.ImageTransform`) and
    ``make_sampler(model=..., transform=..., device=..., precision=..., embed_images=...)`` the
    batch sampler (a :class:`~retrieval.data.PKSampler` or one with the same interface);
    ``embed_images`` is how a sampler that looks at the model embeds images (under torchrun the
    processes share the work and all receive the same rows, so they draw the same batches).
    """

    mode: str
    folder: data.ImageFolder
    train_folder: data.ImageFolder
    val_folder: data.ImageFolder
    rules: NegativeRules | None
    make_train_transform: Callable[..., data.ImageTransform]
    make_sampler: Callable[..., Any]
    entries: dict[str, Any] = field(default_factory=dict)

    def config_entries(self) -> dict[str, Any]:
        """Keys added to the run's ``config.json`` (see the module docstring)."""
        return {
            "mode": self.mode,
            "labelled": False,
            "has_validation": bool(self.val_folder.paths),
            **self.entries,
        }


def mode_of(config) -> str:
    """``"unlabelled"``, ``"pairs"`` or ``"labelled"`` for a :class:`~retrieval.train.TrainConfig`."""
    if getattr(config, "unlabelled", False):
        return "unlabelled"
    if getattr(config, "pairs", None) is not None:
        return "pairs"
    return "labelled"


def is_implicit(config) -> bool:
    """True when the config trains without class labels (``--unlabelled`` or ``--pairs``)."""
    return mode_of(config) != "labelled"


def labelled_entries() -> dict[str, Any]:
    """The ``config.json`` keys of a labelled run, for readers that branch on ``"mode"``."""
    return {"mode": "labelled", "labelled": True}


def check_config(config) -> None:
    """One-line :class:`RetrievalError` for flag combinations that cannot work (called by
    ``TrainConfig.validate``)."""
    from retrieval.pairs import PAIR_NEGATIVES

    unlabelled = bool(getattr(config, "unlabelled", False))
    pairs = getattr(config, "pairs", None)
    batch_size = getattr(config, "batch_size", None)
    pair_negatives = getattr(config, "pair_negatives", "random")
    pair_groups = getattr(config, "pair_groups", None)
    if unlabelled and pairs is not None:
        raise RetrievalError("give --unlabelled or --pairs FILE, not both")
    if batch_size is not None and not unlabelled:
        raise RetrievalError("--batch-size is for --unlabelled (labelled and pair training fill a batch with -P classes x -K images)")
    if batch_size is not None and batch_size < 2:
        raise RetrievalError(f"--batch-size must be at least 2 images (the other images are the negatives), got {batch_size}")
    if pair_negatives not in PAIR_NEGATIVES:
        raise RetrievalError(f"--pair-negatives must be one of {', '.join(PAIR_NEGATIVES)}, got {pair_negatives!r}")
    if pairs is None and pair_negatives != "random":
        raise RetrievalError("--pair-negatives needs --pairs FILE")
    if pairs is None and pair_groups is not None:
        raise RetrievalError("--pair-groups needs --pairs FILE")
    if not (unlabelled or pairs is not None):
        return
    flag = "--unlabelled" if unlabelled else "--pairs"
    instead = "" if unlabelled else "; to keep images apart from each other's negatives use --pair-groups FILE"
    if getattr(config, "class_groups", None) is not None or getattr(config, "groups_per_batch", None) is not None:
        raise RetrievalError(f"--class-groups / --groups-per-batch need class labels, which {flag} training does not use{instead}")
    if getattr(config, "never_negative", None) is not None:
        raise RetrievalError(f"--never-negative names pairs of classes, which {flag} training does not use{instead}")
    if getattr(config, "negatives", "all") != "all":
        raise RetrievalError(f"--negatives {config.negatives} needs class groups, which {flag} training does not use")
    if unlabelled and not getattr(config, "augment", 1.0) > 0:
        raise RetrievalError("--unlabelled needs --augment above 0: the two views of an image are its augmentations")


def prepare(config) -> ImplicitData:
    """Scan ``config.data_dir`` and build the mode's pseudo-labelled training data."""
    if mode_of(config) == "unlabelled":
        from retrieval.unlabelled import prepare as prepare_unlabelled

        return prepare_unlabelled(config)
    if mode_of(config) == "pairs":
        from retrieval.pairs import prepare as prepare_pairs

        return prepare_pairs(config)
    raise ValueError("prepare() is for --unlabelled or --pairs training")


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
