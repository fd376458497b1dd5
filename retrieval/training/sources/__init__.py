"""Training sources: what the training loop trains on, behind one protocol
(:class:`~retrieval.training.sources.base.TrainingSource`), chosen from :data:`SOURCES` by the
config's mode.

- ``labelled`` (:mod:`~retrieval.training.sources.labelled`, the default): ``DATA_DIR/<class>/<image>``;
  whole classes are held out for validation, the others train.

Often only positives are observed — two photos show the same product, a user kept these items
together — and everything else is *missing*, not negative: an unobserved pair may well match.
So the negatives must be chosen by a strategy rather than read from labels, and more positives
can be made by transforming the input. Two sources give the loop *pseudo-labels* for that case and
leave the loop itself unchanged:

- ``unlabelled`` (``--unlabelled``, :mod:`~retrieval.training.sources.unlabelled`): every image is
  its own class, seen as two augmented views; the other images of the batch are its negatives
  (SimCLR's recipe).
- ``pairs`` (``--pairs FILE``, :mod:`~retrieval.training.sources.pairs`): images linked by the
  pair file (connected components, union-find) are one class; the negatives of an anchor are the
  images of the other components in its batch, and ``--pair-negatives`` chooses how the batch's
  components are drawn: ``random`` or ``hard`` (the nearest not-linked components under the
  current model).

The P×K sampler, the losses and miners, the mining log (its ``*_label`` fields then hold the
pseudo-labels), checkpoints and ``--resume`` all work as for labelled training. When
``DATA_DIR`` has class sub-folders anyway, the labels are hidden from training: they only hold
out the validation classes (``--val-fraction``) on which Recall@1 and MAP@R are measured each
epoch. A flat folder has no validation (the metrics rows then hold null metrics).

The run's ``config.json`` says what was used (``config_entries()``): ``"mode"``
(``"labelled"`` | ``"unlabelled"`` | ``"pairs"``), ``"labelled"`` (whether training saw class
labels), for the sources without labels ``"has_validation"``, and the source's own numbers.
"""

from __future__ import annotations

from typing import Callable

from retrieval.training.sources.base import TrainingSource
from retrieval.training.sources.labelled import LabelledSource
from retrieval.training.sources.pairs import PairsSource
from retrieval.training.sources.unlabelled import UnlabelledSource

__all__ = ["SOURCES", "TrainingSource", "LabelledSource", "UnlabelledSource", "PairsSource", "build_source"]

#: mode (``TrainConfig.mode``, ``config.json``'s ``"mode"``) -> the source's constructor from a resolved config
SOURCES: dict[str, Callable[..., TrainingSource]] = {
    "labelled": LabelledSource.from_config,
    "unlabelled": UnlabelledSource.from_config,
    "pairs": PairsSource.from_config,
}


def build_source(config, *, on_progress: Callable[[int, int], None] | None = None, ctx=None) -> TrainingSource:
    """Scan ``config.data_dir`` and build the training source of the config's mode.
    ``on_progress(done, total)``: the images searched for faces, in a face run (``--faces``, labelled
    training only); ``ctx``: the :class:`~retrieval.distributed.DistributedContext`, under which a
    face run's processes share that search. The other sources do nothing that long before training."""
    config = config.resolve()
    if config.mode == "labelled":
        return LabelledSource.from_config(config, on_progress=on_progress, ctx=ctx)
    return SOURCES[config.mode](config)
