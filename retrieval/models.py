"""The embedding model: a timm backbone, a linear projection and L2 normalisation.

``EmbeddingModel`` maps an image batch (B, 3, H, W) to unit vectors (B, D):
f(x) = W · g(x) / ||W · g(x)||, with g the pooled features of
``timm.create_model(backbone, num_classes=0)`` and W a linear projection to ``embedding_dim``.
Distances between such vectors lie in [0, 2] (DESIGN.md, Distances).

This module also owns the model half of the run directory: ``config.json`` (everything needed to
rebuild the model and its transforms) and ``model.safetensors`` (weights only, never pickle),
both written atomically, and the helpers that choose a device and a numeric precision.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from retrieval.errors import RetrievalError

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
PRECISIONS = ("auto", "fp32", "bf16", "fp16")

__all__ = [
    "CONFIG_NAME",
    "WEIGHTS_NAME",
    "EmbeddingModel",
    "autocast",
    "cpu_supports_bf16",
    "embed_images",
    "load_model",
    "model_fingerprint",
    "read_config",
    "resolve_device",
    "resolve_precision",
    "save_model",
    "write_atomic",
]


class EmbeddingModel(nn.Module):
    """A timm backbone with a linear embedding head; ``forward`` returns L2-normalised embeddings.

    Args:
        backbone: a timm model name (``timm.list_models()``), e.g. ``"resnet18"``.
        embedding_dim: size D of the embedding.
        pretrained: load the backbone's pretrained weights from the hub (needs network access).
        weights: a local ``.safetensors`` file of backbone weights (timm's state-dict names), for
            machines without network access; the classifier, if present, is dropped.
    """

    def __init__(
        self,
        backbone: str,
        embedding_dim: int = 128,
        *,
        pretrained: bool = False,
        weights: str | Path | None = None,
    ) -> None:
        super().__init__()
        self.backbone_name = backbone
        self.embedding_dim = int(embedding_dim)
        if self.embedding_dim < 1:
            raise RetrievalError(f"embedding dimension must be positive, got {embedding_dim}")
        self.backbone = _create_backbone(backbone, pretrained=pretrained, weights=weights)
        self.head = nn.Linear(self.backbone.num_features, self.embedding_dim)

    def forward_unnormalised(self, images: torch.Tensor) -> torch.Tensor:
        """Raw embeddings W · g(x), shape (B, D): what N-pair's ``l2_reg`` acts on."""
        return self.head(self.backbone(images))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Unit embeddings f(x) = W · g(x) / ||W · g(x)||, shape (B, D), in float32."""
        return F.normalize(self.forward_unnormalised(images).float(), dim=1)

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


def _create_backbone(name: str, *, pretrained: bool, weights: str | Path | None) -> nn.Module:
    import timm

    if not timm.is_model(name):
        close = timm.list_models(f"*{name.split('_')[0][:6]}*")[:5]
        hint = f" (similar: {', '.join(close)})" if close else ""
        raise RetrievalError(f"unknown backbone {name!r}: not a timm model name{hint}")
    if weights is not None:
        weights = Path(weights)
        if not weights.is_file():
            raise RetrievalError(f"weights file not found: {weights}")
        if weights.suffix != ".safetensors":
            raise RetrievalError(
                f"{weights}: --weights takes a .safetensors file (pickled checkpoints are not loaded)"
            )
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
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [k for k in set(state) & set(expected) if state[k].shape != expected[k].shape]
    if missing or unexpected or wrong:
        problems = [f"{len(missing)} missing", f"{len(unexpected)} unexpected", f"{len(wrong)} wrong-shaped"]
        example = (missing or unexpected or wrong)[0]
        raise RetrievalError(
            f"{weights}: weights do not fit backbone {backbone.default_cfg.get('architecture', '?')!r} "
            f"({', '.join(problems)} tensors, e.g. {example!r})"
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


# ----------------------------------------------------------------------------- run directory


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename,
    so a reader sees the old file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def save_model(run_dir: str | Path, model: EmbeddingModel, config: dict[str, Any], *, weights_name: str = WEIGHTS_NAME) -> dict[str, Any]:
    """Write ``config.json`` and the weights (``model.safetensors`` by default) into ``run_dir``.

    Both are written atomically. The weights' SHA-256 is stored in the config
    (``weights_sha256``) so that a config and weights from different saves are detected on load.
    Returns the config as written.
    """
    from safetensors.torch import save as save_safetensors

    run_dir = Path(run_dir)
    state = {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
    blob = save_safetensors(state, metadata={"backbone": model.backbone_name, "embedding_dim": str(model.embedding_dim)})
    config = dict(config)
    config.update(backbone=model.backbone_name, embedding_dim=model.embedding_dim)
    config.setdefault("distance", "euclidean")
    if weights_name == WEIGHTS_NAME:
        config["weights_sha256"] = hashlib.sha256(blob).hexdigest()
    write_atomic(run_dir / weights_name, blob)
    if weights_name == WEIGHTS_NAME:
        write_atomic(run_dir / CONFIG_NAME, (json.dumps(config, indent=2, sort_keys=True) + "\n").encode())
    return config


def read_config(run_dir: str | Path) -> dict[str, Any]:
    """The run's ``config.json`` as a dict; a clear error when the folder is not a run directory."""
    run_dir = Path(run_dir)
    path = run_dir / CONFIG_NAME
    if not run_dir.is_dir():
        raise RetrievalError(f"run directory not found: {run_dir}")
    if not path.is_file():
        raise RetrievalError(f"{run_dir} is not a run directory (no {CONFIG_NAME}); create one with `retrieval train`")
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise RetrievalError(f"{path}: corrupt JSON ({error})") from error
    missing = [key for key in ("backbone", "embedding_dim", "image_size", "data_config") if key not in config]
    if not isinstance(config, dict) or missing:
        raise RetrievalError(f"{path}: not a model config (missing {', '.join(missing) or 'fields'})")
    return config


def load_model(run_dir: str | Path, device: str | torch.device = "cpu", *, weights_name: str = WEIGHTS_NAME) -> tuple[EmbeddingModel, dict[str, Any]]:
    """Rebuild a run's model exactly as saved, in eval mode on ``device``; returns (model, config)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    run_dir = Path(run_dir)
    config = read_config(run_dir)
    weights_path = run_dir / weights_name
    if not weights_path.is_file():
        raise RetrievalError(f"{run_dir}: no {weights_name}; the run has no saved model (train it with `retrieval train`)")
    try:
        state = load_file(str(weights_path))
    except (SafetensorError, OSError, ValueError) as error:
        raise RetrievalError(f"{weights_path}: corrupt weights file ({error})") from error
    if weights_name == WEIGHTS_NAME and config.get("weights_sha256"):
        if _sha256(weights_path) != config["weights_sha256"]:
            raise RetrievalError(f"{weights_path}: weights do not match {CONFIG_NAME} (saved by another run or interrupted)")
    model = EmbeddingModel(config["backbone"], config["embedding_dim"], pretrained=False)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        first_line = str(error).strip().splitlines()[0]
        raise RetrievalError(f"{weights_path}: weights do not fit {config['backbone']} / {config['embedding_dim']}: {first_line}") from error
    model.to(torch.device(device) if not isinstance(device, torch.device) else device)
    model.eval()
    return model, config


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def model_fingerprint(run_dir: str | Path) -> str:
    """A short identifier of the run's saved weights (first 16 hex digits of their SHA-256)."""
    config = read_config(run_dir)
    digest = config.get("weights_sha256") or _sha256(Path(run_dir) / WEIGHTS_NAME)
    return digest[:16]


# ----------------------------------------------------------------------------- embedding


def embed_paths(
    model: torch.nn.Module,
    paths: Sequence[Path],
    transform: Callable,
    *,
    out: np.ndarray | None = None,
    batch_size: int = 64,
    device: str | torch.device | None = None,
    num_workers: int | None = None,
    precision: str = "auto",
    on_progress: Callable[[int, int], None] | None = None,
) -> tuple[np.ndarray, list[int]]:
    """Embed image files in batches through a DataLoader, skipping any that cannot be read.

    Rows are written in order, batch by batch, with ``out[a:b] = rows`` into ``out``: an array or
    memory map of shape (len(paths), D), or any object taking such slice assignments (the index
    build passes a writer that streams them to disk); a new array when None. Returns
    ``(out[:len(kept)], kept)``: ``kept`` lists the indices into ``paths`` that were embedded, in
    order (unreadable files are warned about by the dataset and left out).
    ``on_progress(done, total)`` follows the files. ``num_workers=None``: no loader processes on
    a CPU device with at most 4 cores, else :func:`retrieval.data.make_loader`'s default.
    """
    import torch

    from retrieval.data import ImageDataset, make_loader

    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.eval()
    dim = int(model.embedding_dim)
    if out is None:
        out = np.empty((len(paths), dim), dtype=np.float32)
    kept: list[int] = []
    if len(paths) == 0:
        return out[:0], kept
    if num_workers is None and device.type == "cpu" and _usable_cpus() <= 4:
        # On a few cores the model's threads already use every core: loader processes only
        # preempt them (measured slower and erratic, BENCHMARKS.md); decode between batches.
        num_workers = 0
    dataset = ImageDataset(list(paths), [-1] * len(paths), transform)
    loader = make_loader(dataset, batch_size=batch_size, num_workers=num_workers, device=device)
    done = 0
    batches = iter(loader)
    while True:
        # Decoding in this process (no workers): its many tiny tensor ops on a multi-thread pool
        # cost ~10x the CPU of one thread (BENCHMARKS.md); loader workers run one thread too.
        with _torch_threads(1 if loader.num_workers == 0 else None):
            batch = next(batches, None)
        if batch is None:
            break
        pixels, _labels, indices = batch
        if len(indices):
            with torch.inference_mode(), autocast(device, precision):
                embeddings = model(pixels.to(device, non_blocking=True))
            out[len(kept) : len(kept) + len(indices)] = embeddings.float().cpu().numpy()
            kept.extend(int(i) for i in indices)
            done = kept[-1] + 1
        else:
            done = min(len(paths), done + batch_size)
        if on_progress is not None:
            on_progress(done, len(paths))
    if on_progress is not None:
        on_progress(len(paths), len(paths))
    return out[: len(kept)], kept


@contextlib.contextmanager
def _torch_threads(n: int | None):
    """Run a block with ``n`` torch intra-op threads (None: unchanged), then restore the count."""
    import torch

    previous = torch.get_num_threads()
    if n is None or n == previous:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@torch.inference_mode()
def embed_images(
    model: EmbeddingModel,
    images: Sequence[str | Path | Any],
    transform,
    *,
    batch_size: int = 64,
    device: str | torch.device | None = None,
    num_workers: int = 0,
    precision: str = "fp32",
    progress=None,
) -> np.ndarray:
    """Unit embeddings (N, D) float32 of image paths or PIL images, in batches.

    Paths go through :func:`embed_paths` (a DataLoader; ``num_workers=0`` lets it choose); a path
    that cannot be read raises :class:`RetrievalError` naming it. ``progress`` is called with the
    number of images done.
    """
    from PIL import Image

    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.eval()
    out = np.empty((len(images), model.embedding_dim), dtype=np.float32)
    if len(images) == 0:
        return out
    if all(isinstance(image, Image.Image) for image in images):
        batches = (
            (torch.stack([transform(image) for image in images[i : i + batch_size]]), i)
            for i in range(0, len(images), batch_size)
        )
    else:
        paths = [Path(image) for image in images]
        rows, kept = embed_paths(model, paths, transform, batch_size=batch_size, device=device,
                                 num_workers=num_workers or None, precision=precision)
        if len(kept) != len(paths):
            missing = sorted(set(range(len(paths))) - set(kept))
            raise RetrievalError(f"cannot read image {paths[missing[0]]}")
        if progress is not None:
            progress(len(paths))
        return rows
    for pixels, start in batches:
        pixels = pixels.to(device, non_blocking=True)
        with autocast(device, precision):
            embeddings = model(pixels)
        out[start : start + len(pixels)] = embeddings.float().cpu().numpy()
        if progress is not None:
            progress(start + len(pixels))
    return out
