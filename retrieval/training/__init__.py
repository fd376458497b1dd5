"""Training: a folder in, a run directory out (DESIGN.md, "The run directory").

``train(TrainConfig(...))`` resolves the settings (:mod:`~retrieval.training.config`: one step
fills every default), builds the training source (:mod:`~retrieval.training.sources`: a labelled
folder, ``--unlabelled`` images or ``--pairs``), holds out whole classes for validation, and
trains an :class:`~retrieval.model.EmbeddingModel` on P×K batches with a contrastive objective
and an online miner (:mod:`~retrieval.training.objective`). AdamW with a cosine learning-rate
schedule (linear warm-up over the first 5 % of steps). After every epoch it writes, atomically:

- ``metrics.jsonl``: one row per epoch (epoch 0 is the untrained model): loss, Recall@1 and
  MAP@R on the held-out classes, fraction of mined triplets with loss > 0, mean d_ap / d_an,
  learning rate, images/s, seconds;
- ``mining/epoch_NNN.jsonl``: the epoch's hardest mined triplets (smallest d_an − d_ap),
  deduplicated by (anchor, negative) image pair, with paths relative to ``data_dir``;
- ``model.safetensors`` (best epoch by validation MAP@R; the last epoch when there are no
  validation classes), ``model_last.safetensors`` and ``checkpoint.pt`` (model, optimiser,
  schedule, sampler position, RNG state, history) for ``--resume``;
- ``val_distances.json``: positive- and negative-pair distances on the held-out classes.

Augmentation is seeded per item from (seed, epoch, position in the epoch)
(:mod:`~retrieval.training.seeded_items`), so a run resumed after epoch E continues exactly as an
uninterrupted one, whatever the number of loader workers.

The modules, top-down: ``config`` (settings) → ``sources`` (data) → ``objective`` (loss and
miners) → ``finetune`` (from pretrained weights: what learns at which step, BatchNorm's mode,
the weights' provenance) → ``setup`` (model, loader, optimiser, resume) → ``loop`` (``train``, ``train_one_epoch``)
with ``validation``, ``totals`` (an epoch's numbers), ``outputs`` (the run directory's files),
``resume`` (the checkpoint) and ``progress`` (the bar, Ctrl-C).
"""

from retrieval.training.config import DEFAULTS, TrainConfig
from retrieval.training.loop import TrainResult, train, train_one_epoch
from retrieval.training.objective import LOSSES, MINERS, NATURAL_MINER, build_objective
from retrieval.training.sources import SOURCES, TrainingSource, build_source

__all__ = [
    "DEFAULTS", "LOSSES", "MINERS", "NATURAL_MINER", "SOURCES", "TrainConfig", "TrainResult", "TrainingSource",
    "build_objective", "build_source", "train", "train_one_epoch",
]
