"""Every file name a run directory holds (DESIGN.md, "The run directory"), in one place.

Training writes the model, its config, the metrics, the hardest-negative log, the class
confusions and the checkpoint; ``retrieval index`` writes ``index/``; the app and the CLI read
them all. Nothing else in the package spells these names.
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
CONFUSIONS_NAME = "confusions.jsonl"
INDEX_DIR = "index"
ANN_NAME = "gallery.ann"
METADATA_NAME = "gallery.json"
EMBEDDINGS_NAME = "embeddings.npy"
FACES_DIR = "faces"  # face runs: the detection cache (boxes, landmarks, aligned crops); personal data

#: files committed together, in one atomic step (retrieval.run.versions): the best weights and the
#: config that records their hash; the index's metadata and the two data files it checks
MODEL_UNIT = (CONFIG_NAME, WEIGHTS_NAME)
INDEX_UNIT = (METADATA_NAME, ANN_NAME, EMBEDDINGS_NAME)


def mining_log_path(run_dir: str | Path, epoch: int) -> Path:
    """``RUN_DIR/mining/epoch_NNN.jsonl``: the hardest negatives of one epoch."""
    return Path(run_dir) / MINING_DIR / f"epoch_{epoch:03d}.jsonl"


def confusions_path(run_dir: str | Path) -> Path:
    """``RUN_DIR/mining/confusions.jsonl``: per epoch, which classes held each class's anchors' nearest negatives."""
    return Path(run_dir) / MINING_DIR / CONFUSIONS_NAME


def index_dir(run_dir: str | Path) -> Path:
    """``RUN_DIR/index/``: the gallery index (``retrieval index``)."""
    return Path(run_dir) / INDEX_DIR


def faces_dir(run_dir: str | Path) -> Path:
    """``RUN_DIR/faces/``: a face run's detection cache (retrieval.faces.FaceCache), for training and the index alike."""
    return Path(run_dir) / FACES_DIR
