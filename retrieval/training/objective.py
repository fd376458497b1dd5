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

__all__ = ["LOSSES", "MINERS", "NATURAL_MINER", "MARGIN_LOSSES", "MARGIN_MINERS", "Objective", "build_objective",
           "nothing_learnt", "margin_unused", "positives_still_pull", "without_negatives"]

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
#: the losses whose formula has the margin ε (npair, nce and infonce have none)
MARGIN_LOSSES = ("triplet", "contrastive", "lifted")
#: the miners whose rule compares with ε (the others keep the same tuples whatever the margin)
MARGIN_MINERS = ("semihard", "easy", "pair-active")


def nothing_learnt(loss: str, miner: str | None, margin: float, *, miner_typed: bool = True) -> str | None:
    """Why every step of an objective would have a loss of 0 whatever the embeddings (its gradient
    is 0 too: nothing would be learnt), or None when it can learn (``miner_typed``: whether the
    user named the miner, else the message says it is the loss's default). Only what is certain:

    - ``semihard`` at ε = 0 keeps the triplets with 0 < d_an − d_ap < 0: none, and every loss of
      nothing mined is 0;
    - ``easy`` keeps the triplets with d_an − d_ap ≥ ε, whose triplet hinge max(0, d_ap − d_an + ε)
      is 0 (other losses still learn from them);
    - ``pair-active`` at ε = 0 keeps the negative pairs with d < 0: none; the contrastive loss still
      pulls its positive pairs together, every other loss needs a negative in each tuple.
    """
    named = f"--miner {miner}" if miner_typed else f"--miner {miner} (the default of --loss {loss})"
    if miner == "semihard" and margin == 0:
        return (f"{named} keeps only triplets with 0 < d_an − d_ap < ε, none at --margin 0: every loss would be 0 "
                "and nothing would be learnt; give a --margin above 0 (default 0.2) or another --miner")
    if miner == "easy" and loss == "triplet":
        return (f"{named} keeps only triplets whose triplet loss is 0 (d_an − d_ap ≥ ε): nothing would be learnt; "
                "use another --miner (semihard, hard, batch-hard, ...) or another --loss")
    if miner == "pair-active" and margin == 0 and loss != "contrastive":
        return (f"{named} keeps only negative pairs with d < ε, none at --margin 0, and the {loss} loss needs a "
                "negative in every tuple: nothing would be learnt; give a --margin above 0 or another --miner")
    return None


def margin_unused(loss: str, miner: str | None) -> bool:
    """Whether the margin ε changes nothing the objective trains on: a loss without one
    (:data:`MARGIN_LOSSES`) and no miner that compares with it (:data:`MARGIN_MINERS`). The
    mining record still measures the batch against ε (``active``, ``violating``)."""
    return loss not in MARGIN_LOSSES and miner not in MARGIN_MINERS


def positives_still_pull(loss: str, miner: str | None) -> bool:
    """Whether the positive pairs of a class that can have no negative (the negative rules allow
    none) still train: only the contrastive loss has a term without a negative, and only when its
    miner keeps positive pairs whatever the negatives (none, ``pair-all``, ``pair-active``,
    ``pair-batch-hard``; a triplet miner keeps no triplet of theirs, ``pair-hard`` no positive pair
    farther than a nearest negative they do not have)."""
    return loss == "contrastive" and miner in (None, "none", "pair-all", "pair-active", "pair-batch-hard")


def without_negatives(loss: str, miner: str | None) -> str:
    """What training does with the images of a class that can have no negative: the contrastive
    loss pulls them together (:func:`positives_still_pull`); every other loss and miner needs a
    negative in each tuple, so they get no gradient."""
    if positives_still_pull(loss, miner):
        return "training only pulls their images together (the contrastive loss's positive pairs)"
    if loss == "contrastive":
        return f"--miner {miner} keeps none of their pairs, so their images get no gradient"
    return f"their images get no gradient (every tuple of the {loss} loss needs a negative)"


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
