"""``TrainConfig``: every setting of ``retrieval train``, what the user gave, and one step that
fills the rest.

A setting is ``None`` until given: the command line passes only what was typed, and a
``TrainConfig(...)`` built in Python only what its caller named. :meth:`TrainConfig.resolve` is
the one place that fills the others, from :data:`DEFAULTS` (the figures measured in
BENCHMARKS.md) and from the settings they depend on:

- ``loss``: ``triplet``; ``infonce`` with ``--unlabelled`` (SimCLR's NT-Xent objective) and from
  pretrained weights (measured best there);
- ``miner``: the loss's natural miner (:data:`~retrieval.training.objective.NATURAL_MINER`:
  ``semihard`` for the triplet loss, ``none`` for the others);
- starting from pretrained weights (``--pretrained`` / ``--weights``): the fine-tuning defaults
  (:func:`fine_tuning_defaults`, measured in BENCHMARKS.md, "Fine-tuning from pretrained weights":
  InfoNCE into 512 dimensions at the backbone's own image size (:func:`pretrained_image_size`), a head warm-up with the
  backbone frozen, then its last two stages at a tenth of ``--lr``, BatchNorm statistics kept; the
  schedule itself is :mod:`~retrieval.training.finetune`). :func:`describe_defaults` says in one
  line which of the two sets a run took;
- ``flip_average``: on for face runs (``--faces``), off otherwise: the model then embeds each image
  with its mirror image and averages (:class:`~retrieval.model.EmbeddingModel`; measured on
  held-out training people in BENCHMARKS.md, *Faces in photos*);
- ``face_jitter``: the similarity jitter of a face run's training crops
  (:data:`~retrieval.data.transforms.FACE_JITTER`, chosen the same way); a face run recorded
  before it existed resumes with the jitter it trained with (none at ``--augment`` 1);
- ``face_min_size``, ``face_max_side`` and ``face_recheck``: the face detector's smallest face, the
  longest side it searches and the score a face must keep when O-Net sees it framed by its own
  landmarks (:class:`~retrieval.faces.detect.DetectorSettings`, 40 px, 1600 px and 0.9) with
  ``--faces``, None otherwise; config.json's ``faces`` records them for every later reader of the run;
- ``groups_per_batch``: :data:`GROUPS_PER_BATCH` (2) with ``--class-groups``, None otherwise; the
  labelled source then fits it to the groups of the training classes (one group: 1) and refuses a
  typed one larger than those groups or than P
  (:class:`~retrieval.training.sources.labelled.LabelledSource`), and config.json records the
  value the batches were drawn with. A run recorded with ``null`` (before it was resolved) resumes
  with the 2 its sampler used.

The resolved config records which settings were given (``given``), so that ``--resume`` can tell
a flag typed on its command line from a default. :meth:`TrainConfig.validate` then turns flag
values that cannot work into one-line errors, once per run.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from retrieval import distributed
from retrieval.data.sampler import GROUPS_PER_BATCH  # the P x K sampler's own default (fewer when there are fewer groups)
from retrieval.data.transforms import FACE_JITTER
from retrieval.errors import RetrievalError
from retrieval.faces.detect import MAX_SIDE_LIMIT, MIN_FACE_SIZE_RANGE, DetectorSettings
from retrieval.losses import LOSS_SETTING
from retrieval.model import check_backbone_name
from retrieval.negatives import NEGATIVE_MODES
from retrieval.run.config import MAX_EMBEDDING_DIM, MAX_IMAGE_SIZE
from retrieval.training.finetune import BN_MODES
from retrieval.training.objective import LOSSES, MINERS, NATURAL_MINER, margin_unused, nothing_learnt
from retrieval.training.sources.pairs import PAIR_NEGATIVES

__all__ = ["DEFAULTS", "TrainConfig", "describe_defaults", "fine_tuning_defaults", "settings_before_they_existed"]

#: the strongest --augment: its colour jitter (0.3 s) would darken an image to black above s = 3.3
MAX_AUGMENT = 3.0
#: the largest --margin: every loss and miner measures ε in Euclidean distance between unit embeddings (0 to 2)
MAX_MARGIN = 2.0
#: the largest --seed (numpy's and torch's generators take any whole number from 0; this one fits 32 bits)
MAX_SEED = 2**32 - 1
#: the value of every setting that is not given (settings missing here have no default: None)
DEFAULTS: dict[str, Any] = {
    "backbone": "resnet18",
    "pretrained": False,
    "embedding_dim": 128,
    "image_size": 128,
    "loss": "triplet",  # infonce with --unlabelled: see TrainConfig.resolve
    "margin": 0.2,
    "temperature": 0.1,
    "epochs": 10,
    "classes_per_batch": 16,
    "images_per_class": 4,
    "lr": 1e-3,
    "weight_decay": 1e-4,
    "val_fraction": 0.2,
    "seed": 0,
    "device": "auto",
    "precision": "auto",
    "cache_mb": 1024.0,  # decoded training images kept in memory, split between loader workers
    "augment": 1.0,
    "negatives": "all",
    "groups_per_batch": None,  # GROUPS_PER_BATCH with --class-groups (TrainConfig.resolve); the source fits it to the groups
    "hardest_per_epoch": 50,
    "resume": False,
    "force": False,  # write into an --out folder that holds other files (or a run)
    "channels_last": False,  # faster model step on CPU, but the whole step was not (BENCHMARKS.md)
    "command": "",
    "sync_bn": False,
    "dist_timeout": distributed.DEFAULT_TIMEOUT_S,
    "unlabelled": False,
    "pair_negatives": "random",
    "target_far": 0.01,  # the FAR at which the threshold τ is chosen on the validation classes
    # issue 18, fine-tuning (retrieval.training.finetune); from pretrained weights see fine_tuning_defaults()
    "freeze_backbone_epochs": 0.0,
    "backbone_lr_scale": 1.0,
    "bn_mode": "train",
    "backbone_stages": 0,  # 0: the whole backbone learns
    "faces": False,  # issue 15: train on each image's aligned face (retrieval.faces.run_faces)
    "flip_average": False,  # True with --faces (TrainConfig.resolve): validation and inference average x and its mirror
    "face_jitter": 0.0,  # FACE_JITTER with --faces (TrainConfig.resolve): the aligned crops' similarity jitter at --augment 1
    "face_min_size": None,  # FACE_MIN_SIZE with --faces: the smallest face the detector looks for (pixels)
    "face_max_side": None,  # FACE_MAX_SIDE with --faces: a longer photo is searched as a copy this long (0: whole)
    "face_recheck": None,  # FACE_RECHECK with --faces: a face's O-Net score framed by its landmarks must be this or more (0: no recheck)
}
#: the detector's defaults with --faces: DetectorSettings' own (its bounds, MIN_FACE_SIZE_RANGE and MAX_SIDE_LIMIT, check the flags)
FACE_MIN_SIZE, FACE_MAX_SIDE, FACE_RECHECK = DetectorSettings.min_face_size, DetectorSettings.max_side, DetectorSettings.recheck_threshold
#: the largest --face-jitter: scale ± 10 %, shift ± 5 %, rotation ± 10° at --augment 1
MAX_FACE_JITTER = 1.0
#: the loss of ``--unlabelled`` runs when ``--loss`` is not given
UNLABELLED_LOSS = "infonce"
#: the share of ``--lr`` that a backbone starting from pretrained weights learns at
PRETRAINED_BACKBONE_LR_SCALE = 0.1
#: see :func:`fine_tuning_defaults`
FINE_TUNING_DEFAULTS: dict[str, Any] = {
    "loss": "infonce",  # with its natural miner (none) and the temperature 0.1 of DEFAULTS
    "embedding_dim": 512,  # keeps more of the pretrained features than 128 (grocery catalogue R@1 0.342 -> 0.353, 3 seeds)
    "freeze_backbone_epochs": 1.0,
    "backbone_lr_scale": PRETRAINED_BACKBONE_LR_SCALE,
    "bn_mode": "eval",
    "backbone_stages": 2,
}
#: not user settings: what produced the run, and the record of what was given
_NOT_SETTINGS = ("command", "given")


def fine_tuning_defaults() -> dict[str, Any]:
    """Defaults for a run that starts from pretrained weights (``--pretrained`` / ``--weights``),
    taking precedence over :data:`DEFAULTS` and losing to what the user gave (chosen by the
    comparisons in BENCHMARKS.md, "Fine-tuning from pretrained weights"). The image size is
    the backbone's own (:func:`pretrained_image_size`), filled in by :meth:`TrainConfig.resolve`."""
    return dict(FINE_TUNING_DEFAULTS)


def pretrained_image_size(backbone: str) -> int | None:
    """The side of the images ``backbone``'s pretrained weights were trained on (timm's
    ``pretrained_cfg.input_size``: 224 for tf_efficientnet_lite0 and resnet18, 384 for
    vit_base_patch16_384), or None when timm has no pretrained config for the name."""
    try:
        from timm.models import get_pretrained_cfg

        cfg = get_pretrained_cfg(backbone)
    except Exception:  # noqa: BLE001  (an unknown name: validate() names it)
        return None
    size = getattr(cfg, "input_size", None) if cfg is not None else None
    return int(max(size[-2:])) if size else None


def settings_before_they_existed(saved: dict[str, Any], detector: Any = None) -> dict[str, Any]:
    """The settings that a run recorded before they existed trained with (its ``train_settings``
    lack them): no head warm-up, BatchNorm in train mode, the backbone at a tenth of the lr when it
    started from pretrained weights, no flip averaging and, for a face run, the jitter of its
    training crops that its ``augment`` s gave then: none up to s = 1, above it the full jitter at
    s - 1, which ``face_jitter`` (s - 1) / s reproduces (j = face_jitter · s), and the smallest face
    and longest side its detector used, read from ``detector`` (config.json's
    ``faces.detector_settings``; a missing ``max_side`` is 0, every photo searched whole).
    ``--resume`` fills them in from here."""
    pretrained = bool(saved.get("pretrained")) or saved.get("weights") is not None
    face_jitter = 0.0
    face_settings: dict[str, Any] = {}
    if saved.get("faces"):
        strength = saved.get("augment")
        strength = float(strength) if isinstance(strength, (int, float)) else DEFAULTS["augment"]
        face_jitter = (strength - 1.0) / strength if strength > 1 else 0.0
        detector = detector if isinstance(detector, dict) else {}
        face_settings = {"face_min_size": detector.get("min_face_size", FACE_MIN_SIZE), "face_max_side": detector.get("max_side", 0),
                         "face_recheck": detector.get("recheck_threshold", 0.0)}
    return {"freeze_backbone_epochs": 0.0, "backbone_lr_scale": PRETRAINED_BACKBONE_LR_SCALE if pretrained else 1.0, "bn_mode": "train",
            "backbone_stages": 0, "flip_average": False, "face_jitter": face_jitter, **face_settings}


def describe_defaults(config: "TrainConfig") -> str:
    """One line: which defaults a resolved config took (fine-tuning or from scratch) and their values."""
    if config.resume:
        return ("resuming: the run's own settings (config.json's train_settings), its epochs too unless --epochs is typed; "
                "--epochs, --device, --workers, --cache-mb and --dist-timeout may differ from them")
    names = ("image_size", "embedding_dim", "loss", "margin", "temperature", "freeze_backbone_epochs", "backbone_stages", "backbone_lr_scale", "bn_mode", "lr", "epochs")
    shown = ", ".join(f"{name} {getattr(config, name)}{'' if name not in config.given else ' (typed)'}" for name in names)
    if config.starts_pretrained:
        source = "--pretrained" if config.pretrained else f"--weights {config.weights}"
        return f"fine-tuning defaults (starting from {source}): {shown}"
    return f"from-scratch defaults (random initial weights; --pretrained / --weights pick the fine-tuning ones): {shown}"


@dataclass
class TrainConfig:
    """Everything ``retrieval train`` takes. ``None`` means "not given"; :meth:`resolve` fills it."""

    data_dir: Path
    out: Path
    backbone: Optional[str] = None
    pretrained: Optional[bool] = None
    weights: Optional[Path] = None
    embedding_dim: Optional[int] = None
    image_size: Optional[int] = None
    loss: Optional[str] = None
    miner: Optional[str] = None
    margin: Optional[float] = None
    temperature: Optional[float] = None
    epochs: Optional[int] = None
    classes_per_batch: Optional[int] = None
    images_per_class: Optional[int] = None
    lr: Optional[float] = None
    weight_decay: Optional[float] = None
    val_fraction: Optional[float] = None
    seed: Optional[int] = None
    device: Optional[str] = None
    precision: Optional[str] = None
    num_workers: Optional[int] = None  # None after resolve too: chosen for the machine (data.default_num_workers)
    cache_mb: Optional[float] = None
    augment: Optional[float] = None
    class_groups: Optional[Path] = None
    groups_per_batch: Optional[int] = None
    never_negative: Optional[Path] = None
    negatives: Optional[str] = None
    hardest_per_epoch: Optional[int] = None
    resume: Optional[bool] = None
    force: Optional[bool] = None
    channels_last: Optional[bool] = None
    command: Optional[str] = None
    # issue 8, several processes under torchrun (retrieval.distributed)
    sync_bn: Optional[bool] = None
    dist_timeout: Optional[float] = None
    # issue 7, training without negative labels (retrieval.training.sources): augmentation positives / positive-only pairs
    unlabelled: Optional[bool] = None
    pairs: Optional[Path] = None
    pair_negatives: Optional[str] = None
    pair_groups: Optional[Path] = None
    batch_size: Optional[int] = None
    # issue 16, verification: the FAR at which τ is chosen on the validation classes' pairs
    target_far: Optional[float] = None
    # issue 18, fine-tuning from pretrained weights (retrieval.training.finetune)
    freeze_backbone_epochs: Optional[float] = None
    backbone_lr_scale: Optional[float] = None
    bn_mode: Optional[str] = None
    backbone_stages: Optional[int] = None
    # issue 15, faces: each image reduced to its most confident aligned face before the data set (retrieval.faces)
    faces: Optional[bool] = None
    flip_average: Optional[bool] = None
    face_jitter: Optional[float] = None
    face_min_size: Optional[int] = None
    face_max_side: Optional[int] = None
    face_recheck: Optional[float] = None
    #: the settings given before :meth:`resolve` (None: not resolved yet)
    given: Optional[frozenset[str]] = field(default=None, repr=False, compare=False)

    # -- resolving ---------------------------------------------------------------------------

    @property
    def is_resolved(self) -> bool:
        return self.given is not None

    def resolve(self) -> "TrainConfig":
        """A copy with every setting not given filled with its default (itself when resolved).

        Precedence: what was given, then the fine-tuning defaults when starting from pretrained
        weights, then :data:`DEFAULTS`; the loss and the miner default to values that depend on
        other settings (see the module docstring).
        """
        if self.is_resolved:
            return self
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "given"}
        given = frozenset(name for name, value in values.items() if value is not None and name not in _NOT_SETTINGS)
        defaults = dict(DEFAULTS)
        if values["pretrained"] or values["weights"] is not None:
            defaults.update(fine_tuning_defaults())
        if values["unlabelled"]:
            defaults["loss"] = UNLABELLED_LOSS
        if values["faces"]:
            defaults["flip_average"] = True
            defaults["face_jitter"] = FACE_JITTER
            defaults["face_min_size"], defaults["face_max_side"] = FACE_MIN_SIZE, FACE_MAX_SIDE
            defaults["face_recheck"] = FACE_RECHECK
        if values["class_groups"] is not None:
            defaults["groups_per_batch"] = GROUPS_PER_BATCH
        if (values["pretrained"] or values["weights"] is not None) and values["image_size"] is None:
            backbone = values["backbone"] if values["backbone"] is not None else DEFAULTS["backbone"]
            defaults["image_size"] = pretrained_image_size(backbone) or DEFAULTS["image_size"]
        for name, default in defaults.items():
            if values.get(name) is None:
                values[name] = default
        if values["miner"] is None:
            values["miner"] = NATURAL_MINER.get(values["loss"])  # None for an unknown loss, which validate() names
        return TrainConfig(**values, given=given)

    # -- what the run is ---------------------------------------------------------------------

    @property
    def mode(self) -> str:
        """``"unlabelled"``, ``"pairs"`` or ``"labelled"``: the training source (retrieval.training.sources)."""
        if self.unlabelled:
            return "unlabelled"
        if self.pairs is not None:
            return "pairs"
        return "labelled"

    @property
    def starts_pretrained(self) -> bool:
        """Whether the backbone starts from pretrained weights (``--pretrained`` or ``--weights``)."""
        return bool(self.pretrained) or self.weights is not None

    def train_settings(self) -> dict[str, Any]:
        """The resolved settings as ``config.json`` records them (``train_settings``; ``--resume``
        reads them back). ``miner`` is null when not given: the loss's natural miner. Paths are
        absolute (``--resume`` may run from another working directory)."""
        self._require_resolved()
        settings = {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self) if f.name not in ("resume", "force", "given")}
        settings["miner"] = self.miner if "miner" in self.given else None
        return settings

    # -- checking ----------------------------------------------------------------------------

    def validate(self) -> None:
        """One-line errors for flag values that cannot work (on the resolved config)."""
        self._require_resolved()
        checks = [
            (self.loss in LOSSES, f"unknown loss {self.loss!r}: use one of {', '.join(LOSSES)}"),
            (self.miner is None or self.miner in MINERS, f"unknown miner {self.miner!r}: use one of {', '.join(MINERS)}"),
            (not (self.resume and self.force), "give --resume (continue the run in --out) or --force (replace it), not both"),
            (self.epochs >= 0, f"--epochs must be 0 or more, got {self.epochs}"),
            (self.classes_per_batch >= 2, f"--classes-per-batch must be at least 2 (negatives come from other classes), got {self.classes_per_batch}"),
            (self.images_per_class >= 2, f"--images-per-class must be at least 2 (positives come from the same class), got {self.images_per_class}"),
            (1 <= self.embedding_dim <= MAX_EMBEDDING_DIM, f"--embedding-dim must be from 1 to {MAX_EMBEDDING_DIM}, got {self.embedding_dim}"),
            (16 <= self.image_size <= MAX_IMAGE_SIZE, f"--image-size must be from 16 to {MAX_IMAGE_SIZE}, got {self.image_size}"),
            (self.lr > 0 and math.isfinite(self.lr), f"--lr must be positive, got {self.lr}"),
            (0 <= self.margin <= MAX_MARGIN, f"--margin must be from 0 to {MAX_MARGIN:g} (distances between unit embeddings "
                                             f"are 0 to 2), got {self.margin}"),
            (0 <= self.seed <= MAX_SEED, f"--seed must be a whole number from 0 to {MAX_SEED}, got {self.seed}"),
            (self.groups_per_batch is None or self.groups_per_batch >= 1,
             f"--groups-per-batch must be at least 1, got {self.groups_per_batch}"),
            (self.groups_per_batch is None or self.class_groups is not None, "--groups-per-batch needs --class-groups FILE"),
            (self.temperature > 0, f"--temperature must be positive, got {self.temperature}"),
            (0 <= self.val_fraction < 1, f"--val-fraction must be in [0, 1), got {self.val_fraction}"),
            (self.negatives in NEGATIVE_MODES, f"--negatives must be one of {', '.join(NEGATIVE_MODES)}, got {self.negatives!r}"),
            (self.negatives == "all" or self.class_groups is not None, f"--negatives {self.negatives} needs --class-groups FILE"),
            (self.hardest_per_epoch >= 0, "--hardest must be 0 or more"),
            (0 <= self.augment <= MAX_AUGMENT, f"--augment must be from 0 to {MAX_AUGMENT:g}, got {self.augment}"),
            (self.cache_mb >= 0, f"--cache-mb must be 0 or more, got {self.cache_mb}"),
            (self.num_workers is None or self.num_workers >= 0, f"--workers must be 0 or more, got {self.num_workers}"),
            (self.dist_timeout > 0, f"--dist-timeout must be positive, got {self.dist_timeout}"),
            (0 < self.target_far < 1, f"--target-far must be between 0 and 1, got {self.target_far}"),
            (self.bn_mode in BN_MODES, f"--bn-mode must be one of {', '.join(BN_MODES)}, got {self.bn_mode!r}"),
            (0 <= self.freeze_backbone_epochs and math.isfinite(self.freeze_backbone_epochs),
             f"--freeze-backbone-epochs must be 0 or more, got {self.freeze_backbone_epochs}"),
            (self.backbone_stages >= 0, f"--backbone-stages must be 0 (all) or more, got {self.backbone_stages}"),
            (0 <= self.face_jitter <= MAX_FACE_JITTER, f"--face-jitter must be from 0 to {MAX_FACE_JITTER:g}, got {self.face_jitter}"),
            (self.face_min_size is None or _whole(self.face_min_size, *MIN_FACE_SIZE_RANGE),
             f"--face-min-size must be a whole number of pixels from {MIN_FACE_SIZE_RANGE[0]} to {MIN_FACE_SIZE_RANGE[1]}, got {self.face_min_size}"),
            (self.face_max_side is None or self.face_max_side == 0
             or _whole(self.face_max_side, self.face_min_size or MIN_FACE_SIZE_RANGE[0], MAX_SIDE_LIMIT),
             f"--face-max-side must be 0 (every photo searched whole) or a whole number of pixels from --face-min-size "
             f"({self.face_min_size}) to {MAX_SIDE_LIMIT}, got {self.face_max_side}" if "face_max_side" in self.given else
             f"--face-min-size {self.face_min_size} is above the longest side a photo is searched at (--face-max-side, "
             f"default {self.face_max_side}): give --face-max-side 0 (every photo searched whole) or at least {self.face_min_size}"),
            (self.face_recheck is None or 0 <= self.face_recheck < 1,
             f"--face-recheck must be a number from 0 (no recheck) to below 1, got {self.face_recheck}"),
            (0 <= self.backbone_lr_scale and math.isfinite(self.backbone_lr_scale),
             f"--backbone-lr-scale must be 0 or more, got {self.backbone_lr_scale}"),
        ]
        for ok, message in checks:
            if not ok:
                raise RetrievalError(message)
        zero = nothing_learnt(self.loss, self.miner, self.margin, miner_typed="miner" in self.given)
        if zero is not None:
            raise RetrievalError(zero)
        check_backbone_name(self.backbone)  # before the data is scanned: one line, no warnings ahead of it
        if self.pretrained and self.weights is not None:
            raise RetrievalError("give --pretrained or --weights FILE, not both")
        self._check_mode_flags()

    def warnings(self) -> list[str]:
        """One-line warnings for settings that are valid but do nothing the user may think they do
        (on the resolved config of a new run): a ``--margin`` typed for an objective that never
        uses it (:func:`~retrieval.training.objective.margin_unused`), a ``--temperature`` typed
        for a loss without one (:data:`~retrieval.losses.LOSS_SETTING`)."""
        self._require_resolved()
        lines = []
        if "margin" in self.given and margin_unused(self.loss, self.miner):
            chooser = "without a --miner nothing" if self.miner in (None, "none") else f"--miner {self.miner}"
            lines.append(f"--margin {self.margin:g} has no effect on training: the {self.loss} loss has no margin, and {chooser} "
                         "compares with it (the semihard, easy and pair-active miners do); it only sets the yardstick of the "
                         "logged active and violating fractions")
        if "temperature" in self.given and LOSS_SETTING[self.loss] != "temperature":
            lines.append(f"--temperature {self.temperature:g} has no effect on training: only the nce and infonce losses "
                         f"have one, not the {self.loss} loss")
        return lines

    def _check_mode_flags(self) -> None:
        """Flags that belong to another training source than the one chosen. Not for a ``--resume``
        call that names no source (``--faces``, ``--unlabelled``, ``--pairs``): the run's own
        settings say which source it trains, :func:`~retrieval.training.resume.config_for_resume`
        refuses a typed flag whose value differs from the run's, and one typed with the run's own
        value was checked when the run started (a resumed config counts the run's settings as
        given, so validating it checks them all). Checked on the call alone,
        ``--resume --face-jitter`` on a face run would be told it needs ``--faces``."""
        if self.resume and not (self.given or frozenset()) & {"faces", "unlabelled", "pairs"}:
            return
        unlabelled, pairs, batch_size = self.unlabelled, self.pairs, self.batch_size
        if unlabelled and pairs is not None:
            raise RetrievalError("give --unlabelled or --pairs FILE, not both")
        if batch_size is not None and not unlabelled:
            raise RetrievalError("--batch-size is for --unlabelled (labelled and pair training fill a batch with -P classes x -K images)")
        if batch_size is not None and batch_size < 2:
            raise RetrievalError(f"--batch-size must be at least 2 images (the other images are the negatives), got {batch_size}")
        if self.pair_negatives not in PAIR_NEGATIVES:
            raise RetrievalError(f"--pair-negatives must be one of {', '.join(PAIR_NEGATIVES)}, got {self.pair_negatives!r}")
        if pairs is None and self.pair_negatives != "random":
            raise RetrievalError("--pair-negatives needs --pairs FILE")
        if pairs is None and self.pair_groups is not None:
            raise RetrievalError("--pair-groups needs --pairs FILE")
        if not self.faces and self.face_jitter > 0:
            raise RetrievalError("--face-jitter moves aligned face crops: it needs --faces")
        detector_flags = [flag for flag, value in (("--face-min-size", self.face_min_size), ("--face-max-side", self.face_max_side),
                                                   ("--face-recheck", self.face_recheck)) if value is not None]
        if not self.faces and detector_flags:
            raise RetrievalError(f"{detector_flags[0]} sets the face detector: it needs --faces")
        if self.faces and self.mode != "labelled":
            raise RetrievalError(f"--faces trains on labelled folders only, not with {'--unlabelled' if unlabelled else '--pairs'}")
        if self.mode == "labelled":
            return
        flag = "--unlabelled" if unlabelled else "--pairs"
        instead = "" if unlabelled else "; to keep images apart from each other's negatives use --pair-groups FILE"
        if self.class_groups is not None or self.groups_per_batch is not None:
            raise RetrievalError(f"--class-groups / --groups-per-batch need class labels, which {flag} training does not use{instead}")
        if self.never_negative is not None:
            raise RetrievalError(f"--never-negative names pairs of classes, which {flag} training does not use{instead}")
        if self.negatives != "all":
            raise RetrievalError(f"--negatives {self.negatives} needs class groups, which {flag} training does not use")
        if unlabelled and not self.augment > 0:
            raise RetrievalError("--unlabelled needs --augment above 0: the two views of an image are its augmentations")

    def _require_resolved(self) -> None:
        if not self.is_resolved:
            raise ValueError("call TrainConfig.resolve() first: its settings not given are still None")


def _whole(value: Any, low: int, high: int) -> bool:
    """Whether ``value`` is a whole number (not a bool) from ``low`` to ``high``."""
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _plain(value: Any) -> Any:
    return str(value.resolve()) if isinstance(value, Path) else value
