"""The training objective: a loss (:mod:`retrieval.losses`), the miner that feeds it
(:mod:`retrieval.mining`), and the record miner that speaks for an objective without a miner.

Every step computes ``loss(embeddings, labels, miner(embeddings, labels, indices))`` (no miner:
``mined=None``, the loss uses every pair or tuple of the batch). Whatever the objective, the run
logs the same things about the batch, all from one
:class:`~retrieval.mining_record.MiningRecord`: the miner's own record, or, when the objective has
no miner, that of a ``TripletMiner("all")`` (every valid triplet counts as used: the contrastive,
lifted, NCE and InfoNCE losses see the whole batch) or, for the N-pair loss, of
:class:`~retrieval.mining.NPairTriplets` (the triplets of the one pair a class that it trains on).
It holds the epoch's totals (active fraction, mean d_ap and d_an), the violating fraction (of
every valid triplet, the share with d_an < d_ap + ε), the hardest triplets of the batch with
whether the miner kept them (``mining/epoch_NNN.jsonl``) and the per-anchor view whose
nearest-negative classes become ``mining/confusions.jsonl``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from retrieval import losses, mining
from retrieval.negatives import NegativeRules

__all__ = ["LOSSES", "MINERS", "NATURAL_MINER", "Objective", "build_objective"]

LOSSES = tuple(losses.LOSSES)
MINERS = mining.TRIPLET_STRATEGIES + tuple(f"pair-{s}" for s in mining.PAIR_STRATEGIES) + ("none",)
#: the miner each objective uses when ``--miner`` is not given
NATURAL_MINER = {
    "triplet": "semihard",
    "contrastive": "none",
    "lifted": "none",
    "npair": "none",
    "nce": "none",
    "infonce": "none",
}


def build_objective(config, rules: NegativeRules | None):
    """(loss, miner-or-None, record-miner) for a :class:`~retrieval.training.TrainConfig`.

    The record miner is the miner itself, or, for an objective without one, a
    ``TripletMiner("all")`` (N-pair: :class:`~retrieval.mining.NPairTriplets`): every run logs
    which negatives were hardest and which of them the loss used.
    """
    config = config.resolve()
    loss = losses.build_loss(config.loss, margin=config.margin, temperature=config.temperature, negative_rules=rules)
    hardest_k = max(config.hardest_per_epoch, 1)
    miner = mining.build_miner(config.miner, config.margin, negative_rules=rules, hardest_k=hardest_k)
    if miner is not None:
        record_miner = miner
    elif config.loss == "npair":  # N-pair sees one pair a class: its record marks those triplets
        record_miner = mining.NPairTriplets(config.margin, negative_rules=rules, hardest_k=hardest_k)
    else:
        record_miner = mining.TripletMiner("all", config.margin, negative_rules=rules, hardest_k=hardest_k)
    return loss, miner, record_miner


@dataclass
class Objective:
    """The loss, its miner and the record miner of a run (see the module docstring)."""

    loss: Callable
    miner: Callable | None
    record_miner: Callable

    @classmethod
    def for_config(cls, config, rules: NegativeRules | None,
                   replacement: tuple[Callable, Callable | None] | None = None) -> "Objective":
        """The config's objective; ``replacement`` (loss, miner) swaps the loss and miner for
        another library's with the same call conventions, and keeps the config's record miner
        (whose record then stands in for the replacement's mining)."""
        loss, miner, record_miner = build_objective(config, rules)
        if replacement is not None:
            loss, miner = replacement
        return cls(loss, miner, record_miner)

    def mine(self, embeddings: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor):
        """The miner's tuples for the loss (None without a miner)."""
        return self.miner(embeddings, labels, indices) if self.miner is not None else None

    def record(self, mined, embeddings: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor) -> mining.MiningRecord:
        """The step's record: the miner's own, else the record miner's on the detached ``embeddings``."""
        record = getattr(mined, "record", None)
        if isinstance(record, mining.MiningRecord):
            return record
        return self.record_miner(embeddings, labels, indices).record
