"""Fine-tuning from pretrained weights: which parameters learn at which step, how BatchNorm behaves,
and where the starting weights came from.

A run's schedule (:class:`FineTuning`, from the settings ``freeze_backbone_epochs``,
``backbone_stages``, ``backbone_lr_scale`` and ``bn_mode``) is a pure function of the global step
t = (epoch − 1) · steps_per_epoch + step, so a run resumed from a checkpoint written after any
epoch sets exactly the state an uninterrupted run had at that step:

- head warm-up, t < W with W = round(freeze_backbone_epochs · steps_per_epoch) (at least one step
  when the setting is above 0): the backbone is frozen. Its parameters take no gradient
  (``requires_grad`` off, so the backward pass stops at the head, which also makes a step about
  three times cheaper) and it runs in eval mode (BatchNorm normalises with, and keeps, its running
  statistics; dropout is off): only the new head learns, on the features the weights already give.
- after the warm-up the backbone learns too, at ``backbone_lr_scale`` · lr, with its own linear
  warm-up and cosine decay over the steps left (:func:`backbone_lr_factor`); the head keeps the
  run's schedule (:func:`~retrieval.training.setup.cosine_with_warmup` over every step).
- ``backbone_stages`` N (after the warm-up): only the backbone's last N stages learn (timm's coarse
  parameter groups, :func:`fixed_stage_parameters`); the earlier ones stay as the weights gave
  them, in eval mode, and the backward pass stops before them (cheaper, and less to forget on a
  small set). 0: the whole backbone learns.
- ``bn_mode`` (after the warm-up): ``train``: BatchNorm normalises each batch with its own
  statistics and updates the running ones (the usual recipe, and the from-scratch default);
  ``eval``: the running statistics (the pretrained ones) are used and kept, the affine γ, β still
  learn; ``frozen``: as ``eval`` and γ, β do not learn either. Small P×K batches of few classes
  give noisy batch statistics that drift from the ones the weights were trained with; ``eval``
  keeps them.

:func:`weights_source` is the provenance that ``config.json`` records (``"weights_source"``):
``{"kind": "file" | "hub" | "random", "name", "sha256"}``, the SHA-256 of the file given with
``--weights``, or of the hub weights as loaded (the backbone's state dict in safetensors form).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from torch import nn

from retrieval.errors import RetrievalError

__all__ = ["BN_MODES", "FineTuning", "backbone_lr_factor", "fixed_stage_parameters", "freeze_steps", "state_dict_sha256",
           "weights_source"]

log = logging.getLogger("retrieval")

#: how BatchNorm layers of the backbone behave once it learns (see the module docstring)
BN_MODES = ("train", "eval", "frozen")


@dataclass(frozen=True)
class FineTuning:
    """The schedule of one run: the head warm-up's length in steps, the BatchNorm mode, and how many
    of the backbone's last stages learn after the warm-up (0: all)."""

    warmup_steps: int
    bn_mode: str = "train"
    backbone_stages: int = 0

    @classmethod
    def for_config(cls, config, steps_per_epoch: int) -> "FineTuning":
        """The schedule of a resolved config whose epochs have ``steps_per_epoch`` steps."""
        return cls(freeze_steps(config.freeze_backbone_epochs, steps_per_epoch), config.bn_mode, config.backbone_stages)

    def backbone_frozen(self, global_step: int) -> bool:
        """Whether the backbone is frozen at global step t (counted from 0): t < W."""
        return global_step < self.warmup_steps

    def apply(self, model: nn.Module, global_step: int) -> None:
        """Set a training ``model`` (an :class:`~retrieval.model.EmbeddingModel`) to the state of global
        step t: which backbone parameters take gradients, which of its modules are in eval mode."""
        frozen = self.backbone_frozen(global_step)
        fixed = fixed_stage_parameters(model.backbone, self.backbone_stages)
        norms = {id(p) for module in _batch_norms(model.backbone) for p in module.parameters(recurse=False)}
        for parameter in model.backbone.parameters():
            learns = not (frozen or id(parameter) in fixed or (self.bn_mode == "frozen" and id(parameter) in norms))
            parameter.requires_grad_(learns)
        model.backbone.train(not frozen)
        if frozen:
            return
        for module in _batch_norms(model.backbone):
            in_fixed_stage = any(id(p) in fixed for p in module.parameters(recurse=False))
            if self.bn_mode in ("eval", "frozen") or in_fixed_stage:
                module.eval()

    def trainable_signature(self, global_step: int) -> tuple[bool, bool]:
        """What decides the set of parameters with gradients at step t (a DDP wrapper is rebuilt when it changes)."""
        return self.backbone_frozen(global_step), self.bn_mode == "frozen"


def fixed_stage_parameters(backbone: nn.Module, stages: int) -> set[int]:
    """ids of the parameters outside the backbone's last ``stages`` stages (timm's coarse parameter
    groups, ``group_matcher(coarse=True)``: e.g. stem, blocks 0-5 and blocks 6 + head for an
    EfficientNet, stem and layer1-4 for a ResNet); none when ``stages`` is 0 (the whole backbone learns)."""
    if stages <= 0:
        return set()
    cached = getattr(backbone, "_retrieval_fixed_stages", None)
    if cached is not None and cached[0] == stages:
        return cached[1]
    from timm.models import group_parameters

    try:
        groups = group_parameters(backbone, backbone.group_matcher(coarse=True))
    except (AttributeError, NotImplementedError) as error:
        raise RetrievalError(f"backbone {type(backbone).__name__} does not name its stages (timm's group_matcher): "
                             "use --backbone-stages 0 (the whole backbone learns)") from error
    if stages >= len(groups):  # said once: the result is cached on the backbone
        log.warning("--backbone-stages %d: %s has %d stages (with its stem), so the whole backbone learns, as with "
                    "--backbone-stages 0", stages, type(backbone).__name__, len(groups))
    learning = {name for key in sorted(groups)[-stages:] for name in groups[key]}
    fixed = {id(p) for name, p in backbone.named_parameters() if name not in learning}
    object.__setattr__(backbone, "_retrieval_fixed_stages", (stages, fixed))
    return fixed


def freeze_steps(freeze_backbone_epochs: float, steps_per_epoch: int) -> int:
    """W = round(epochs · steps_per_epoch), at least 1 when ``freeze_backbone_epochs`` > 0."""
    if freeze_backbone_epochs <= 0:
        return 0
    return max(1, round(freeze_backbone_epochs * steps_per_epoch))


def backbone_lr_factor(total_steps: int, warmup_steps: int,
                       schedule: Callable[[int, int], Callable[[int], float]]) -> Callable[[int], float]:
    """The backbone's lr factor at step t: 0 during the head warm-up (t < W), then ``schedule``
    (e.g. linear warm-up + cosine) over the T − W steps left, started at t = W."""
    remaining = max(1, total_steps - warmup_steps)
    after = schedule(remaining, max(1, remaining // 20))

    def factor(step: int) -> float:
        return 0.0 if step < warmup_steps else after(step - warmup_steps)

    return factor


def weights_source(*, pretrained: bool, weights: str | Path | None, backbone: nn.Module) -> dict[str, Any]:
    """Where the backbone's starting weights came from (see the module docstring)."""
    from retrieval.run import sha256_file

    if weights is not None:
        path = Path(weights)
        return {"kind": "file", "name": str(path.resolve()), "sha256": sha256_file(path)}
    if pretrained:
        config = getattr(backbone, "pretrained_cfg", {}) or {}
        name = config.get("hf_hub_id") or config.get("url") or config.get("architecture")
        tag = config.get("tag")
        if tag and config.get("architecture") and not config.get("hf_hub_id"):
            name = f"{config['architecture']}.{tag}"
        return {"kind": "hub", "name": name, "sha256": state_dict_sha256(backbone)}
    return {"kind": "random", "name": None, "sha256": None}


def state_dict_sha256(module: nn.Module) -> str:
    """SHA-256 of the module's state dict as safetensors bytes (same tensors, same digest)."""
    from hashlib import sha256

    from safetensors.torch import save

    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    return sha256(save(state)).hexdigest()


def _batch_norms(module: nn.Module):
    return [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
