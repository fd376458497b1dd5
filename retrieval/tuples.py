"""Mined tuples: what a miner returns and a loss takes.

A miner (:mod:`retrieval.mining`) chooses which tuples of a batch to train on; a loss
(:mod:`retrieval.losses`) computes its objective on them. This module is the plain data between the
two, so that the losses never import the miners:

- :class:`MinedTriplets`: triplets (a, p, n), y_a = y_p, a ≠ p, y_n ≠ y_a, as index tensors into the
  batch, held either as the three index lists or in a dense (anchor, positive, negative) mask.
- :class:`MinedPairs`: positive pairs (a, p) and negative pairs (a, n), as index lists or masks.
- :func:`checked_tuples`: what a loss is given as ``mined``, checked against its batch (a miner's
  output for another batch, or hand-written indices that are negative, fractional or of unequal
  lengths, are a ValueError rather than a wrapped index or a torch error from deep inside).
- :func:`pairs_to_masks`: index pairs as (B, B) bool masks, the form every pair loss reads.
- :func:`padded_positives`: each anchor's positives as a (B, K) index matrix, K the largest number
  of positives an anchor has (K − 1 for P×K batches). A rule over (anchor, positive, candidate
  negative) is then a (B, K, B) tensor — K/B of the B×B×B triplet cube, which is never built.
- :func:`first_pair_of_each_class`: each class's first two samples, the N-pair loss's pairs.
- :func:`anchor_chunks`: slices of anchors that keep each (c, K, B) chunk of such a tensor under
  :data:`CHUNK_ELEMENTS` elements, so memory stays bounded for large batches.

Each tuple set also carries its miner's record (a :class:`~retrieval.mining.MiningRecord`: counts,
mean distances, the hardest triplets), which training writes to the mining log.
"""

from __future__ import annotations

from typing import Protocol

import torch

__all__ = [
    "MinedTriplets",
    "MinedPairs",
    "checked_tuples",
    "pairs_to_masks",
    "padded_positives",
    "anchor_chunks",
    "first_pair_of_each_class",
    "CHUNK_ELEMENTS",
]

# Elements of one (anchors × positives × batch) chunk: 4 Mi, 4 MiB as bool, 16 MiB as float32.
CHUNK_ELEMENTS = 1 << 22


class _Record(Protocol):
    """What a tuple set reads of its record (a :class:`retrieval.mining.MiningRecord`)."""

    @property
    def n_mined(self) -> int: ...


class MinedTriplets:
    """Triplets (anchors[i], positives[i], negatives[i]), LongTensors of batch indices, and the record.

    The threshold miners (all / hard / semihard / easy) keep their triplets in the dense form
    ``dense = (positives, mask)``: ``positives`` (B, K) holds each anchor's positives and ``mask``
    (B, K, B) is True at [a, k, n] when (a, positives[a, k], n) was mined. ``anchors``,
    ``positives`` and ``negatives`` are enumerated from it on first access (ordered by anchor,
    positive, negative); the losses read the dense form directly.
    """

    def __init__(
        self,
        anchors: torch.Tensor | None,
        positives: torch.Tensor | None,
        negatives: torch.Tensor | None,
        record: _Record,
        *,
        dense: tuple[torch.Tensor, torch.Tensor] | None = None,
        batch_size: int | None = None,
    ) -> None:
        if anchors is None and dense is None:
            raise ValueError("MinedTriplets needs the triplets or their dense form")
        self._triplets = None if anchors is None else (anchors, positives, negatives)
        self.record = record
        self.dense = dense
        self.batch_size = batch_size  # the rows of the batch mined, where the miner says (checked_tuples)

    def _enumerated(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self._triplets is None:
            positives, mask = self.dense
            a, k, n = torch.nonzero(mask, as_tuple=True)
            self._triplets = (a, positives[a, k], n)
        return self._triplets

    @property
    def anchors(self) -> torch.Tensor:
        return self._enumerated()[0]

    @property
    def positives(self) -> torch.Tensor:
        return self._enumerated()[1]

    @property
    def negatives(self) -> torch.Tensor:
        return self._enumerated()[2]

    def __len__(self) -> int:
        return self.record.n_mined if self._triplets is None else len(self._triplets[0])

    def __repr__(self) -> str:
        return f"MinedTriplets({len(self)} triplets, record={self.record!r})"

    def as_pairs(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The (anchor, positive) and (anchor, negative) pairs the triplets contain: (a, p, a, n)."""
        a, p, n = self._enumerated()
        return a, p, a, n

    def pair_masks(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, B) bool masks of the distinct (anchor, positive) and (anchor, negative) pairs."""
        if self.dense is not None:
            positives, mask = self.dense
            return _scatter_or(batch, positives, mask.any(dim=2)), mask.any(dim=1)
        return pairs_to_masks(batch, *self.as_pairs())


class MinedPairs:
    """Positive pairs (anchors[i], positives[i]) and negative pairs (negative_anchors[j],
    negatives[j]), LongTensors of batch indices, and the record. The pair miner keeps them as
    ``masks = (positives, positive_kept, negative_kept)``: each anchor's positives (B, K), which of
    them were mined (B, K), and the mined negative pairs (B, B); the indices are enumerated on
    first access."""

    def __init__(
        self,
        anchors: torch.Tensor | None,
        positives: torch.Tensor | None,
        negative_anchors: torch.Tensor | None,
        negatives: torch.Tensor | None,
        record: _Record,
        *,
        masks: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
    ) -> None:
        if anchors is None and masks is None:
            raise ValueError("MinedPairs needs the pairs or their masks")
        self._pairs = None if anchors is None else (anchors, positives, negative_anchors, negatives)
        self.record = record
        self.masks = masks

    def as_pairs(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        if self._pairs is None:
            positives, positive_kept, negative_kept = self.masks
            a, k = torch.nonzero(positive_kept, as_tuple=True)
            self._pairs = (a, positives[a, k], *torch.nonzero(negative_kept, as_tuple=True))
        return self._pairs

    @property
    def anchors(self) -> torch.Tensor:
        return self.as_pairs()[0]

    @property
    def positives(self) -> torch.Tensor:
        return self.as_pairs()[1]

    @property
    def negative_anchors(self) -> torch.Tensor:
        return self.as_pairs()[2]

    @property
    def negatives(self) -> torch.Tensor:
        return self.as_pairs()[3]

    def __len__(self) -> int:
        return self.record.n_mined if self._pairs is None else len(self._pairs[0]) + len(self._pairs[2])

    def __repr__(self) -> str:
        return f"MinedPairs({len(self)} pairs, record={self.record!r})"

    def pair_masks(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, B) bool masks of the mined positive and negative pairs."""
        if self.masks is not None:
            positives, positive_kept, negative_kept = self.masks
            return _scatter_or(batch, positives, positive_kept), negative_kept
        return pairs_to_masks(batch, *self._pairs)


def checked_tuples(mined, batch: int):
    """``mined`` as a loss takes it, checked against a batch of ``batch`` rows: a MinedTriplets or
    MinedPairs made for a batch of that size, as it is; an index tuple (a, p, n) or (a1, p, a2, n)
    of lists or tensors (PML's form) as LongTensors, each index an integer in [0, batch), a, p, n of
    one length (a1, p and a2, n of one length each); None as it is. Else a one-line ValueError."""
    if mined is None:
        return None
    if isinstance(mined, (MinedTriplets, MinedPairs)):
        dense = mined.dense if isinstance(mined, MinedTriplets) else mined.masks
        known = dense is not None or getattr(mined, "batch_size", None) is not None  # else: indices read (a GPU sync)
        rows = len(dense[0]) if dense is not None else getattr(mined, "batch_size", None) if known else \
            1 + max((int(i.max()) for i in _stored(mined) if len(i)), default=-1)
        if (rows != batch) if known else (rows > batch):
            raise ValueError(f"mined was mined on a batch of {'' if known else 'at least '}{rows} rows, the embeddings "
                             f"have {batch}: mine the batch the loss is given")
        return mined
    if not isinstance(mined, (tuple, list)) or len(mined) not in (3, 4):
        raise TypeError("mined must be MinedTriplets, MinedPairs, or an index tuple (a, p, n) / (a1, p, a2, n)")
    indices = []
    for values in mined:
        tensor = values if isinstance(values, torch.Tensor) else torch.as_tensor(values)
        if tensor.dim() != 1 or (len(tensor) and (tensor.is_floating_point() or tensor.is_complex() or tensor.dtype == torch.bool)):
            raise ValueError(f"mined index lists must be 1-D lists of integer batch indices, got shape {tuple(tensor.shape)} "
                             f"of {tensor.dtype}")
        tensor = tensor.long()
        if len(tensor) and (int(tensor.min()) < 0 or int(tensor.max()) >= batch):
            raise ValueError(f"mined indices must lie in [0, {batch}) (the embeddings' rows), got "
                             f"{int(tensor.min()) if int(tensor.min()) < 0 else int(tensor.max())}")
        indices.append(tensor)
    lengths = [len(i) for i in indices]
    if len(set(lengths)) > 1 if len(indices) == 3 else (lengths[0] != lengths[1] or lengths[2] != lengths[3]):
        names = "a, p, n" if len(indices) == 3 else "a1, p and a2, n"
        raise ValueError(f"mined index lists {names} must be of equal length, got {', '.join(map(str, lengths))}")
    return tuple(indices)


def _stored(mined) -> tuple[torch.Tensor, ...]:
    """The index tensors a tuple set holds (enumerated already: no dense form)."""
    return mined._triplets if isinstance(mined, MinedTriplets) else mined._pairs


def pairs_to_masks(batch, a1, p, a2, n) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, B) bool masks of the pairs (a1[i], p[i]) and (a2[j], n[j]), as ``pair_masks`` returns them."""
    pos = torch.zeros(batch, batch, dtype=torch.bool, device=a1.device)
    neg = torch.zeros_like(pos)
    pos[a1, p] = True
    neg[a2, n] = True
    return pos, neg


def padded_positives(pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each anchor's positives as a (B, K) index matrix in ascending order (K the most positives
    any anchor has; padding entries hold arbitrary indices) and the (B, K) mask of real entries."""
    batch = pos.shape[0]
    k_max = int(pos.sum(dim=1).max()) if batch else 0
    key = pos * torch.arange(batch, 0, -1, device=pos.device)  # larger for smaller indices, 0 off-mask
    values, positives = torch.topk(key, k_max, dim=1)
    return positives, values > 0


def first_pair_of_each_class(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For each class with two or more samples, its first and second sample in batch order: the
    (anchor, positive) pairs of the multi-class N-pair loss (Sohn 2016) without a miner."""
    order = torch.argsort(labels, stable=True)  # classes together, batch order within a class
    ordered = labels[order]
    starts_class = torch.ones_like(ordered, dtype=torch.bool)
    starts_class[1:] = ordered[1:] != ordered[:-1]
    has_second = torch.zeros_like(starts_class)
    has_second[:-1] = ordered[1:] == ordered[:-1]
    first = torch.nonzero(starts_class & has_second).squeeze(1)
    return order[first], order[first + 1]


def anchor_chunks(batch: int, elements_per_anchor: int) -> list[slice]:
    """Slices of anchors such that each chunk holds at most CHUNK_ELEMENTS elements."""
    step = max(1, CHUNK_ELEMENTS // max(1, elements_per_anchor))
    return [slice(start, min(start + step, batch)) for start in range(0, batch, step)]


def _scatter_or(batch: int, columns: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """(B, B) bool: [a, columns[a, k]] is True where values[a, k]. (Padding entries of a
    padded-positives matrix point at distinct non-positive columns and carry False.)"""
    return torch.zeros(batch, batch, dtype=torch.bool, device=columns.device).scatter_(1, columns, values)
