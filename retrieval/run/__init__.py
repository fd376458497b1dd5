"""The run directory: the contract between training, indexing, the CLI and the app (DESIGN.md).

One folder per trained model. Training writes it, ``retrieval index`` adds ``index/``, and every
reader goes through this package:

- :mod:`~retrieval.run.files`: every file name the folder holds;
- :mod:`~retrieval.run.store`: atomic writes (temporary file, fsync, rename) and careful reads;
- :mod:`~retrieval.run.config`: :class:`RunConfig`, ``config.json`` typed;
- :mod:`~retrieval.run.weights`: ``model.safetensors`` / ``model_last.safetensors``, load and save;
- :mod:`~retrieval.run.logs`: ``metrics.jsonl``, ``mining/epoch_NNN.jsonl``, ``val_distances.json``;
- :mod:`~retrieval.run.checkpoint`: ``checkpoint.pt`` for ``--resume``.
"""

from retrieval.run.checkpoint import has_checkpoint, read_checkpoint, write_checkpoint
from retrieval.run.config import DEFAULT_MARGIN, MODES, RunConfig, read_config
from retrieval.run.files import (
    ANN_NAME,
    CHECKPOINT_NAME,
    CONFIG_NAME,
    EMBEDDINGS_NAME,
    INDEX_DIR,
    LAST_WEIGHTS_NAME,
    METADATA_NAME,
    METRICS_NAME,
    MINING_DIR,
    VAL_DISTANCES_NAME,
    WEIGHTS_NAME,
    index_dir,
    mining_log_path,
)
from retrieval.run.logs import (
    list_runs,
    mining_epochs,
    read_metrics,
    read_mining_log,
    read_val_distances,
    resolve_logged_path,
    write_metrics,
    write_mining_log,
    write_val_distances,
)
from retrieval.run.store import read_json, sha256_file, write_atomic, write_json, write_jsonl
from retrieval.run.weights import load_model, model_fingerprint, save_model

__all__ = [
    "ANN_NAME", "CHECKPOINT_NAME", "CONFIG_NAME", "DEFAULT_MARGIN", "EMBEDDINGS_NAME", "INDEX_DIR",
    "LAST_WEIGHTS_NAME", "METADATA_NAME", "METRICS_NAME", "MINING_DIR", "MODES", "VAL_DISTANCES_NAME",
    "WEIGHTS_NAME", "RunConfig", "has_checkpoint", "index_dir", "list_runs", "load_model", "mining_epochs",
    "mining_log_path", "model_fingerprint", "read_checkpoint", "read_config", "read_json", "read_metrics",
    "read_mining_log", "read_val_distances", "resolve_logged_path", "save_model", "sha256_file",
    "write_atomic", "write_checkpoint", "write_json", "write_jsonl", "write_metrics", "write_mining_log",
    "write_val_distances",
]
