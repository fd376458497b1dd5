"""Every file name a run directory holds (DESIGN.md, "The run directory"), in one place.

Training writes the model, its config, the metrics, the hardest-negative log and the checkpoint;
``retrieval index`` writes ``index/``; the app and the CLI read them all. Nothing else in the
package spells these names.
"""

from __future__ import annotations

from pathlib import Path

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
LAST_WEIGHTS_NAME = "model_last.safetensors"
METRICS_NAME = "metrics.jsonl"
VAL_DISTANCES_NAME = "val_distances.json"
CHECKPOINT_NAME = "checkpoint.pt"
MINING_DIR = "mining"
INDEX_DIR = "index"
ANN_NAME = "gallery.ann"
METADATA_NAME = "gallery.json"
EMBEDDINGS_NAME = "embeddings.npy"


def mining_log_path(run_dir: str | Path, epoch: int) -> Path:
    """``RUN_DIR/mining/epoch_NNN.jsonl``: the hardest negatives of one epoch."""
    return Path(run_dir) / MINING_DIR / f"epoch_{epoch:03d}.jsonl"


def index_dir(run_dir: str | Path) -> Path:
    """``RUN_DIR/index/``: the gallery index (``retrieval index``)."""
    return Path(run_dir) / INDEX_DIR
