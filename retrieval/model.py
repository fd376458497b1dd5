"""The embedding model: a timm backbone, a linear projection and L2 normalisation.

``EmbeddingModel`` maps an image batch (B, 3, H, W) to unit vectors (B, D):
f(x) = W · g(x) / ||W · g(x)||, with g the pooled features of
``timm.create_model(backbone, num_classes=0)`` and W a linear projection to ``embedding_dim``.
With ``flip_average`` (face runs) an image and its mirror image m(x) are embedded together:
f(x) = u / ||u|| with u = f₁(x) + f₁(m(x)), f₁ the unit embedding above.
Distances between such vectors lie in [0, 2] (DESIGN.md, Distances).

Also here: the device (``resolve_device``) and the numeric precision of forward passes
(``resolve_precision``, ``autocast``). Saving and loading a model in a run directory is the run
directory's business (:mod:`retrieval.run`); turning images into embeddings is :mod:`retrieval.embed`.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from retrieval.errors import RetrievalError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")

__all__ = [
    "PRECISIONS",
    "EmbeddingModel",
    "autocast",
    "cpu_supports_bf16",
    "resolve_device",
    "resolve_precision",
]


class EmbeddingModel(nn.Module):
    """A timm backbone with a linear embedding head; ``forward`` returns L2-normalised embeddings.

    Args:
        backbone: a timm model name (``timm.list_models()``), e.g. ``"resnet18"``.
        embedding_dim: size D of the embedding.
        pretrained: load the backbone's pretrained weights from the hub (needs network access).
        weights: a local ``.safetensors`` file of backbone weights (timm's state-dict names), for
            machines without network access; the classifier, if present, is dropped.
        flip_average: ``forward`` averages the unit embeddings of each image and its horizontal
            mirror (test-time flip averaging, as face recognition evaluates an aligned face; the
            loss still sees one embedding an image through ``forward_unnormalised``).
    """

    def __init__(
        self,
        backbone: str,
        embedding_dim: int = 128,
        *,
        pretrained: bool = False,
        weights: str | Path | None = None,
        flip_average: bool = False,
    ) -> None:
        super().__init__()
        self.backbone_name = backbone
        self.embedding_dim = int(embedding_dim)
        self.flip_average = bool(flip_average)
        if self.embedding_dim < 1:
            raise RetrievalError(f"embedding dimension must be positive, got {embedding_dim}")
        self.backbone = _create_backbone(backbone, pretrained=pretrained, weights=weights)
        self.head = nn.Linear(self.backbone.num_features, self.embedding_dim)

    def forward_unnormalised(self, images: torch.Tensor) -> torch.Tensor:
        """Raw embeddings W · g(x), shape (B, D): what N-pair's ``l2_reg`` acts on."""
        return self.head(self.backbone(images))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Unit embeddings f(x) = W · g(x) / ||W · g(x)||, shape (B, D), in float32; with
        ``flip_average``, f(x) = u / ||u||, u = f₁(x) + f₁(m(x)) for the mirror image m(x), both in
        one batch of 2B."""
        if not self.flip_average:
            return F.normalize(self.forward_unnormalised(images).float(), dim=1)
        both = F.normalize(self.forward_unnormalised(torch.cat([images, images.flip(-1)])).float(), dim=1)
        return F.normalize(both[: len(images)] + both[len(images):], dim=1)

    def data_config(self, image_size: int) -> dict[str, Any]:
        """The backbone's pretrained input config (mean, std, interpolation, crop_pct) at ``image_size``."""
        import timm.data

        config = timm.data.resolve_model_data_config(self.backbone)
        return {
            "input_size": [3, int(image_size), int(image_size)],
            "mean": [float(v) for v in config["mean"]],
            "std": [float(v) for v in config["std"]],
            "interpolation": str(config.get("interpolation", "bilinear")),
            "crop_pct": float(config.get("crop_pct", 0.875)),
        }


def check_backbone_name(name: str) -> None:
    """A one-line error naming close timm models when ``name`` is not a timm model name."""
    import timm

    if not timm.is_model(name):
        import difflib

        close = (difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.6)  # by spelling: resnet9000 → resnet200
                 or timm.list_models(f"*{name.split('_')[0][:6]}*")[:5])
        hint = f" (similar: {', '.join(close)})" if close else ""
        raise RetrievalError(f"unknown backbone {name!r}: not a timm model name{hint}")


def _create_backbone(name: str, *, pretrained: bool, weights: str | Path | None) -> nn.Module:
    import timm

    check_backbone_name(name)
    if weights is not None:
        weights = Path(weights)
        if weights.is_dir():
            raise RetrievalError(f"{weights} is a folder: --weights takes a .safetensors file")
        if not weights.is_file():
            raise RetrievalError(f"weights file not found: {weights}")
        if weights.suffix != ".safetensors":
            pickled = weights.suffix.lower() in {".pt", ".pth", ".bin", ".ckpt", ".pkl", ".tar"}
            raise RetrievalError(f"{weights}: --weights takes a .safetensors file"
                                 + (" (pickled checkpoints are not loaded)" if pickled else f", not a {weights.suffix or 'suffix-less'} file"))
        return _load_local_weights(timm.create_model(name, pretrained=False, num_classes=0), weights)
    try:
        return timm.create_model(name, pretrained=pretrained, num_classes=0)
    except Exception as error:
        if pretrained:
            raise RetrievalError(
                f"cannot download pretrained weights for {name!r} ({type(error).__name__}); "
                "without network access pass --weights FILE.safetensors instead of --pretrained"
            ) from error
        raise


def _load_local_weights(backbone: nn.Module, weights: Path) -> nn.Module:
    """Load a safetensors state dict into ``backbone``, dropping the classifier the file may carry."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as error:
        raise RetrievalError(f"{weights}: cannot load weights ({error})") from error
    classifier = backbone.pretrained_cfg.get("classifier") or ()
    classifier = (classifier,) if isinstance(classifier, str) else tuple(classifier)
    state = {k: v for k, v in state.items() if not any(k.startswith(f"{c}.") for c in classifier)}
    expected = backbone.state_dict()
    # BatchNorm's step counter: many files leave it out (torchvision's), and BatchNorm's own loading
    # restores it, as torch's strict load_state_dict accepts
    missing = sorted(k for k in set(expected) - set(state) if not k.endswith(".num_batches_tracked"))
    unexpected = sorted(set(state) - set(expected))
    wrong = [k for k in set(state) & set(expected) if state[k].shape != expected[k].shape]

    def shape(name: str) -> str:
        return f": {list(state[name].shape)} in the file, {list(expected[name].shape)} in the model"

    if missing or unexpected or wrong:
        wrong = sorted(wrong)
        problems = [f"{len(names)} {kind}" + (f" (e.g. {names[0]!r}{shape(names[0]) if kind == 'wrong-shaped' else ''})" if names else "")
                    for kind, names in (("missing", missing), ("unexpected", unexpected), ("wrong-shaped", wrong))]
        own_run = unexpected and all(k.split(".")[0] in ("backbone", "head") for k in unexpected)
        hint = ("this is a `retrieval train` run's model (its keys start with backbone. and head.): --weights takes a "
                "timm backbone's weights, and a run continues with `retrieval train … --out RUN_DIR --resume`"
                if own_run else "the file needs timm's key names for this model")
        raise RetrievalError(
            f"{weights}: weights do not fit backbone {backbone.default_cfg.get('architecture', '?')!r}: "
            f"{', '.join(problems)} tensors ({hint})"
        )
    backbone.load_state_dict(state, strict=True)
    return backbone


# ----------------------------------------------------------------------------- device, precision


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` → CUDA when present, else CPU; ``cpu`` / ``cuda`` / ``cuda:N`` as given."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise RetrievalError(f"unknown device {name!r}: use auto, cpu or cuda") from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RetrievalError("--device cuda asked for, but no CUDA device is available")
    if device.type not in ("cpu", "cuda"):
        raise RetrievalError(f"unsupported device {name!r}: use auto, cpu or cuda")
    return device


def cpu_supports_bf16() -> bool:
    """Whether this CPU has native bfloat16 arithmetic (AVX512-BF16 or AMX), where bf16 autocast pays off."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()) and _cpu_has_native_bf16()
    except Exception:
        return False


def _cpu_has_native_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str, device: torch.device) -> str:
    """The precision a run uses: ``auto`` → bf16 on CUDA with bf16 support or on a bf16-capable CPU
    (measured faster there, see BENCHMARKS.md), fp16 on older CUDA, fp32 otherwise."""
    if precision not in PRECISIONS:
        raise RetrievalError(f"unknown precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if cpu_supports_bf16() else "fp32"


@contextlib.contextmanager
def autocast(device: torch.device, precision: str) -> Iterator[None]:
    """Mixed-precision context for forward passes: bf16 / fp16 autocast, or nothing for fp32."""
    precision = resolve_precision(precision, device)
    if precision == "fp32":
        yield
        return
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    with torch.autocast(device_type=device.type, dtype=dtype):
        yield
