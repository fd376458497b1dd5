"""Domain knowledge about negatives: which in-batch samples may serve as a negative for an anchor.

By default a negative of anchor a is any sample of another class. :class:`NegativeRules` narrows
that with what the user knows about the classes:

- ``never_negative``: pairs of classes that must never be pushed apart (two folders that may hold
  the same identity, an "unknown" class, near-duplicate products). Every miner and every loss
  ignores such pairs, in both directions.
- ``class_groups``: a group id per class (the people of one family, the varieties of one product).
  With ``negatives="same-group"`` a negative must come from the anchor's own group — the hard
  negatives that domain knowledge predicts — so an anchor whose group has no other class in the
  batch has no negative. ``negatives="prefer-same-group"`` uses same-group negatives for the
  anchors that have any in the batch and every negative for the others. A P×K sampler that fills
  a batch from a few groups (``retrieval.data.PKSampler(..., class_groups=...)``) makes
  same-group negatives plentiful.

Example, with the grocery data set's coarse classes (``classes.csv``: the apple varieties share
the coarse class "Apple")::

    groups = read_class_groups("grocery/classes.csv", class_names)   # class -> coarse class
    rules = NegativeRules.from_names(class_names, class_groups=groups, negatives="same-group")
    miner = TripletMiner("semihard", 0.2, negative_rules=rules)       # Granny-Smith vs Pink-Lady, not vs Banana

Labels are class indices (0 … C−1, the order of ``class_names``), or, with rules made by
``from_names``, the class names themselves; ``class_groups[c]`` is the group of class c. Positives are never affected: a positive of a is any other sample of a's class.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence

import torch

__all__ = ["NEGATIVE_MODES", "NegativeRules", "positive_mask", "negative_mask"]

NEGATIVE_MODES = ("all", "same-group", "prefer-same-group")

logger = logging.getLogger("retrieval")


class NegativeRules:
    """Which pairs of samples may be anchor and negative (see the module docstring).

    Args:
        never_negative: pairs (class_a, class_b) of class indices that are never negatives of
            each other (symmetric; a pair of one class with itself is meaningless and ignored).
        class_groups: group id of each class, indexed by class index; needed for the group modes.
        negatives: ``"all"`` (any other class, minus never-negative pairs), ``"same-group"``
            (only other classes of the anchor's group) or ``"prefer-same-group"`` (same-group
            negatives where the anchor has any in the batch, else any other class).
        class_names: the name of each class index (:meth:`from_names` sets them): a loss or miner
            with these rules then takes labels as class names too, numbered by this list; rules
            without them take class indices only (a ValueError for names).
    """

    def __init__(
        self,
        never_negative: Iterable[tuple[int, int]] = (),
        class_groups: Sequence[int] | None = None,
        negatives: str = "all",
        *,
        class_names: Sequence[str] | None = None,
    ) -> None:
        if negatives not in NEGATIVE_MODES:
            raise ValueError(f"negatives must be one of {', '.join(NEGATIVE_MODES)}; got {negatives!r}")
        if negatives != "all" and class_groups is None:
            raise ValueError(f'negatives="{negatives}" needs class_groups (a group id per class)')
        pairs = sorted({(int(a), int(b)) for a, b in never_negative if int(a) != int(b)})
        if any(a < 0 or b < 0 for a, b in pairs):
            raise ValueError("never_negative class indices must be >= 0")
        self.never_negative: list[tuple[int, int]] = pairs
        self.class_groups: list[int] | None = None if class_groups is None else [int(g) for g in class_groups]
        self.negatives = negatives
        self.class_names: list[str] | None = None if class_names is None else [str(name) for name in class_names]
        # Forbidden (anchor class, negative class) pairs as sorted codes a * stride + b, both ways.
        self._stride = 1 + max([max(p) for p in pairs], default=0)
        codes = [a * self._stride + b for a, b in pairs] + [b * self._stride + a for a, b in pairs]
        self._codes = torch.tensor(sorted(set(codes)), dtype=torch.long)
        self._groups = None if self.class_groups is None else torch.tensor(self.class_groups, dtype=torch.long)
        self._on_device: dict[torch.device, tuple[torch.Tensor, torch.Tensor | None]] = {}

    @classmethod
    def from_names(
        cls,
        class_names: Sequence[str],
        *,
        never_negative: Iterable[tuple[str, str]] = (),
        class_groups: Mapping[str, str] | None = None,
        negatives: str = "all",
    ) -> "NegativeRules":
        """Rules from class names: ``never_negative`` as pairs of names, ``class_groups`` as a
        mapping class name -> group name (``retrieval.data.read_class_groups`` gives one). A class
        missing from ``class_groups`` forms a group of its own; names of ``class_groups`` that are no
        class (a typo) are warned of in one line and ignored."""
        index = {name: i for i, name in enumerate(class_names)}
        unknown = sorted({n for pair in never_negative for n in pair} - set(index)) if never_negative else []
        if unknown:
            raise ValueError(f"never_negative names unknown classes: {', '.join(unknown)}")
        pairs = [(index[a], index[b]) for a, b in never_negative]
        groups = None
        if class_groups is not None:
            strays = sorted(set(class_groups) - set(index))
            if strays:
                logger.warning(
                    "class_groups names %d classes that are not among the class names, ignored: %s%s", len(strays),
                    ", ".join(map(str, strays[:5])), ", …" if len(strays) > 5 else "")
            group_ids: dict[str, int] = {}
            groups = []
            for name in class_names:
                key = class_groups.get(name, "\0" + name)
                groups.append(group_ids.setdefault(key, len(group_ids)))
        return cls(never_negative=pairs, class_groups=groups, negatives=negatives, class_names=class_names)

    @property
    def is_default(self) -> bool:
        """True when the rules change nothing: every other class is a negative."""
        return not self.never_negative and self.negatives == "all"

    def classes_without_negatives(self, n_classes: int) -> list[int]:
        """The classes c of 0 … n_classes − 1 for which no other class may hold a negative, even with
        every class in the batch: the row of c in ``negative_mask(0 … n_classes − 1)`` is all False."""
        return torch.nonzero(~self.negative_mask(torch.arange(n_classes)).any(dim=1)).flatten().tolist()

    def positive_mask(self, labels: torch.Tensor) -> torch.Tensor:
        """(B, B) bool: [a, p] is True when y_a = y_p and a ≠ p."""
        return positive_mask(labels)

    def negative_mask(self, labels: torch.Tensor) -> torch.Tensor:
        """(B, B) bool: [a, n] is True when n may be a negative of anchor a under these rules."""
        labels = _as_labels(labels)
        mask = labels[:, None] != labels[None, :]
        if self.is_default:
            return mask
        codes, groups = self._device_tables(labels.device)
        if len(codes):
            in_range = (labels >= 0) & (labels < self._stride)
            pair_codes = labels[:, None] * self._stride + labels[None, :]
            forbidden = torch.isin(pair_codes, codes) & in_range[:, None] & in_range[None, :]
            mask &= ~forbidden
        if self.negatives != "all":
            assert groups is not None
            if bool(((labels < 0) | (labels >= len(groups))).any()):
                raise ValueError(f"labels must be class indices in [0, {len(groups)}) to look up class_groups")
            group = groups[labels]
            same_group = mask & (group[:, None] == group[None, :])
            if self.negatives == "same-group":
                mask = same_group
            else:
                mask = torch.where(same_group.any(dim=1, keepdim=True), same_group, mask)
        return mask

    def _device_tables(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
        if device not in self._on_device:
            groups = None if self._groups is None else self._groups.to(device)
            self._on_device[device] = (self._codes.to(device), groups)
        return self._on_device[device]

    def __repr__(self) -> str:
        parts = [f"negatives={self.negatives!r}"]
        if self.never_negative:
            parts.append(f"never_negative={self.never_negative!r}")
        if self.class_groups is not None:
            parts.append(f"class_groups=<{len(set(self.class_groups))} groups of {len(self.class_groups)} classes>")
        return f"NegativeRules({', '.join(parts)})"


def positive_mask(labels: torch.Tensor) -> torch.Tensor:
    """(B, B) bool: [a, p] is True when y_a = y_p and a ≠ p."""
    labels = _as_labels(labels)
    mask = labels[:, None] == labels[None, :]
    mask.fill_diagonal_(False)
    return mask


def negative_mask(labels: torch.Tensor, rules: NegativeRules | None = None) -> torch.Tensor:
    """(B, B) bool: [a, n] is True when n may be a negative of a (y_a ≠ y_n, and the rules allow it)."""
    if rules is None:
        labels = _as_labels(labels)
        return labels[:, None] != labels[None, :]
    return rules.negative_mask(labels)


def _as_labels(labels: torch.Tensor) -> torch.Tensor:
    if not isinstance(labels, torch.Tensor):
        labels = torch.as_tensor(labels)
    if labels.dim() != 1:
        raise ValueError(f"labels must be a 1-D tensor, got shape {tuple(labels.shape)}")
    return labels.long()
