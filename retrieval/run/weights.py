"""The run's model on disk: ``model.safetensors`` (best epoch), ``model_last.safetensors`` and the
``config.json`` saved with the best weights.

Weights are safetensors only (never pickle: a run directory received from elsewhere is data, not
code). The best weights' SHA-256 is stored in the config (``weights_sha256``), so weights and a
config from different saves are detected on load, and its first 16 hex digits are the model's
fingerprint, which the gallery index records to refuse an index built by another model.

The best weights and their config are one unit (:mod:`retrieval.run.versions`): saving them is one
atomic commit, and loading reads both from the same commit, so no crash, full disk or concurrent
save ever pairs the weights of one save with the config of another.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from retrieval.errors import RetrievalError
from retrieval.run.config import RunConfig
from retrieval.run.files import CONFIG_NAME, MODEL_UNIT, WEIGHTS_NAME
from retrieval.run.store import json_bytes, sha256_file, write_atomic
from retrieval.run.versions import new_version, read_unit

if TYPE_CHECKING:  # torch and timm load where a model is saved or loaded: reading a run's files needs neither
    import torch

    from retrieval.model import EmbeddingModel

__all__ = ["load_model", "model_fingerprint", "save_model"]


def save_model(run_dir: str | Path, model: "EmbeddingModel", config: Mapping[str, Any], *,
               weights_name: str = WEIGHTS_NAME) -> RunConfig:
    """Write the weights (``model.safetensors`` by default) and, with the best weights, ``config.json``.

    Both are written atomically; the config gains ``backbone``, ``embedding_dim``,
    ``flip_average``, ``distance`` and, for ``model.safetensors``, ``weights_sha256``. Returns the
    config as written.
    """
    from hashlib import sha256

    from safetensors.torch import save as save_safetensors

    run_dir = Path(run_dir)
    state = {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
    # one metadata key: safetensors writes its metadata map in hash order, which varies between
    # processes, so two keys would make the same weights hash differently from one save to the next
    about = json.dumps({"backbone": model.backbone_name, "embedding_dim": model.embedding_dim}, sort_keys=True)
    blob = save_safetensors(state, metadata={"retrieval": about})
    values = dict(config)
    values.update(backbone=model.backbone_name, embedding_dim=model.embedding_dim, flip_average=model.flip_average)
    values.setdefault("distance", "euclidean")
    if weights_name == WEIGHTS_NAME:
        values["weights_sha256"] = sha256(blob).hexdigest()
    written = RunConfig(values, source=run_dir / CONFIG_NAME)
    if weights_name != WEIGHTS_NAME:
        write_atomic(run_dir / weights_name, blob)
        return written
    with new_version(run_dir, MODEL_UNIT) as version:
        (version / WEIGHTS_NAME).write_bytes(blob)
        (version / CONFIG_NAME).write_bytes(json_bytes(written.to_dict(), indent=2, sort_keys=True))
    return written


def load_model(run_dir: str | Path, device: "str | torch.device" = "cpu", *,
               weights_name: str = WEIGHTS_NAME) -> "tuple[EmbeddingModel, RunConfig]":
    """Rebuild a run's model exactly as saved, in eval mode on ``device``; returns (model, config)."""
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from retrieval.model import EmbeddingModel

    run_dir = Path(run_dir)

    def read(paths) -> tuple[RunConfig, dict[str, torch.Tensor]]:
        config = RunConfig.read(run_dir, path=paths[CONFIG_NAME])
        weights_path = paths[WEIGHTS_NAME] if weights_name == WEIGHTS_NAME else run_dir / weights_name
        if weights_path is None or not weights_path.is_file():
            raise RetrievalError(f"{run_dir}: no {weights_name}; the run has no saved model (train it with `retrieval train`)")
        try:
            state = load_file(str(weights_path))
        except (SafetensorError, OSError, ValueError) as error:
            raise RetrievalError(f"{run_dir / weights_name}: corrupt weights file ({error})") from error
        if weights_name == WEIGHTS_NAME and config.weights_sha256:
            if sha256_file(weights_path) != config.weights_sha256:
                raise RetrievalError(f"{run_dir / weights_name}: weights do not match {CONFIG_NAME} (saved by another run or interrupted)")
        return config, state

    config, state = read_unit(run_dir, MODEL_UNIT, read)
    weights_path = run_dir / weights_name
    model = EmbeddingModel(config.backbone, config.embedding_dim, pretrained=False, flip_average=config.flip_average)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        first_line = str(error).strip().splitlines()[0]
        raise RetrievalError(f"{weights_path}: weights do not fit {config.backbone} / {config.embedding_dim}: {first_line}") from error
    model.to(torch.device(device) if not isinstance(device, torch.device) else device)
    model.eval()
    return model, config


def model_fingerprint(run_dir: str | Path) -> str:
    """A short identifier of the run's saved weights (first 16 hex digits of their SHA-256)."""
    def read(paths) -> str:
        config = RunConfig.read(run_dir, path=paths[CONFIG_NAME])
        if config.weights_sha256:
            return config.weights_sha256
        if paths[WEIGHTS_NAME] is None:
            raise RetrievalError(f"{run_dir}: no {WEIGHTS_NAME}; the run has no saved model (train it with `retrieval train`)")
        return sha256_file(paths[WEIGHTS_NAME])

    return read_unit(run_dir, MODEL_UNIT, read)[:16]
