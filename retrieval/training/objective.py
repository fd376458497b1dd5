"""The training objective: a loss (:mod:`retrieval.losses`), the miner that feeds it
(:mod:`retrieval.mining`), and the triplet miners that keep the mining record.

Every step computes ``loss(embeddings, labels, miner(embeddings, labels, indices))`` (no miner:
``mined=None``, the loss uses every pair or tuple of the batch). Whatever the objective, the run
logs the same things about the batch's triplets:

- the *record* of the epoch's totals (active fraction, mean d_ap and d_an): the miner's own record,
  or, when the objective has no miner, that of a ``TripletMiner("all")``;
- the *hardest* triplets for ``mining/epoch_NNN.jsonl``: always from a triplet miner (a pair miner's
  record names triplets only for negatives inside the margin);
- the *violating* fraction: of every valid triplet, the share with d_an < d_ap + ε, from a
  ``TripletMiner("all")`` whatever the miner kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

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

    The record miner computes the mining record (hardest triplets, active fraction) when the
    objective uses no miner of its own: every run logs which negatives were hardest.
    """
    config = config.resolve()
    loss = losses.build_loss(config.loss, margin=config.margin, temperature=config.temperature, negative_rules=rules)
    hardest_k = max(config.hardest_per_epoch, 1)
    miner = mining.build_miner(config.miner, config.margin, negative_rules=rules, hardest_k=hardest_k)
    if isinstance(miner, mining.TripletMiner):
        record_miner = miner
    else:
        record_miner = mining.TripletMiner("all", config.margin, negative_rules=rules, hardest_k=hardest_k)
    return loss, miner, record_miner


@dataclass
class StepRecords:
    """What one step logs: the record of the epoch's totals, the hardest triplets, and the record
    of every valid triplet of the batch (for the violating fraction)."""

    record: Any
    hardest: list[dict]
    every: Any


@dataclass
class Objective:
    """The loss, its miner and the record miners of a run (see the module docstring)."""

    loss: Callable
    miner: Callable | None
    record_miner: mining.TripletMiner
    violation_miner: mining.TripletMiner

    @classmethod
    def for_config(cls, config, rules: NegativeRules | None,
                   replacement: tuple[Callable, Callable | None] | None = None) -> "Objective":
        """The config's objective; ``replacement`` (loss, miner) swaps the loss and miner for
        another library's with the same call conventions, and keeps the record miners."""
        loss, miner, record_miner = build_objective(config, rules)
        # every valid triplet of a batch, whatever the miner kept (how many still violate the margin);
        # the record miner already mines them all when the objective has no triplet miner of its own
        if record_miner.strategy == "all":
            violation_miner = record_miner
        else:
            violation_miner = mining.TripletMiner("all", config.margin, negative_rules=rules, hardest_k=0)
        if replacement is not None:
            loss, miner = replacement
        return cls(loss, miner, record_miner, violation_miner)

    def mine(self, embeddings: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor):
        """The miner's tuples for the loss (None without a miner)."""
        return self.miner(embeddings, labels, indices) if self.miner is not None else None

    def records(self, mined, embeddings: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor) -> StepRecords:
        """The step's records from its detached ``embeddings``; each miner runs at most once."""
        records = {} if mined is None else {self.miner: mined.record}

        def record_of(miner):
            if miner not in records:
                records[miner] = miner(embeddings, labels, indices).record
            return records[miner]

        record = mined.record if mined is not None else record_of(self.record_miner)
        # the hardest-negative log names triplets; a pair miner's record has them only for
        # negatives inside the margin, so the triplet record miner supplies them
        hardest = record_of(self.record_miner).hardest
        return StepRecords(record, hardest, record_of(self.violation_miner))
