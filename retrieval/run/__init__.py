"""The run directory: the contract between training, indexing, the CLI and the app (DESIGN.md).

One folder per trained model. Training writes it, ``retrieval index`` adds ``index/``, and every
reader goes through this package:

- :mod:`~retrieval.run.files`: every file name the folder holds;
- :mod:`~retrieval.run.store`: atomic writes (temporary file, fsync, rename) and careful reads;
- :mod:`~retrieval.run.versions`: files that belong together (weights and config; the index's
  three files) committed in one atomic step, and read from one commit;
- :mod:`~retrieval.run.lock`: one writer at a time (``retrieval train`` locks the run directory);
- :mod:`~retrieval.run.config`: :class:`RunConfig`, ``config.json`` typed;
- :mod:`~retrieval.run.weights`: ``model.safetensors`` / ``model_last.safetensors``, load and save;
- :mod:`~retrieval.run.logs`: ``metrics.jsonl``, ``mining/epoch_NNN.jsonl``, ``mining/confusions.jsonl``,
  ``val_distances.json``,  and :func:`resolve_logged_path`, the one way a path recorded in a run file becomes a file;
- :mod:`~retrieval.run.checkpoint`: ``checkpoint.pt`` for ``--resume``.
"""

from retrieval.run.checkpoint import has_checkpoint, read_checkpoint, write_checkpoint
from retrieval.run.config import DEFAULT_MARGIN, MODES, RunConfig, read_config
from retrieval.run.files import (
    ANN_NAME,
    CHECKPOINT_NAME,
    CONFIG_NAME,
    CONFUSIONS_NAME,
    EMBEDDINGS_NAME,
    INDEX_DIR,
    INDEX_UNIT,
    LAST_WEIGHTS_NAME,
    METADATA_NAME,
    METRICS_NAME,
    MINING_DIR,
    MODEL_UNIT,
    VAL_DISTANCES_NAME,
    WEIGHTS_NAME,
    confusions_path,
    index_dir,
    mining_log_path,
)
from retrieval.run.lock import hold_lock
from retrieval.run.logs import (
    check_relative,
    check_relative_paths,
    check_root,
    given_root,
    list_runs,
    mining_epochs,
    read_confusions,
    read_metrics,
    read_mining_log,
    read_val_distances,
    resolve_logged_path,
    write_confusions,
    write_metrics,
    write_mining_log,
    write_val_distances,
)
from retrieval.run.store import (
    fsync_dir,
    read_json,
    remove_stale_temporaries,
    sha256_file,
    write_atomic,
    write_json,
    write_jsonl,
)
from retrieval.run.versions import new_version, read_unit, unit_paths
from retrieval.run.weights import load_model, model_fingerprint, save_model

__all__ = [
    "ANN_NAME", "CHECKPOINT_NAME", "CONFIG_NAME", "DEFAULT_MARGIN", "EMBEDDINGS_NAME", "INDEX_DIR", "INDEX_UNIT",
    "LAST_WEIGHTS_NAME", "METADATA_NAME", "METRICS_NAME", "MINING_DIR", "MODEL_UNIT", "MODES", "VAL_DISTANCES_NAME",
    "WEIGHTS_NAME", "RunConfig", "check_relative", "check_relative_paths", "check_root", "fsync_dir", "given_root", "has_checkpoint", "hold_lock", "index_dir", "list_runs",
    "load_model", "mining_epochs", "mining_log_path", "model_fingerprint", "new_version", "read_checkpoint",
    "read_config", "read_json", "read_metrics", "read_mining_log", "read_unit", "read_val_distances",
    "remove_stale_temporaries", "resolve_logged_path", "save_model", "sha256_file", "unit_paths", "write_atomic",
    "write_checkpoint", "write_json", "write_jsonl", "write_metrics", "write_mining_log", "write_val_distances",
    "CONFUSIONS_NAME", "confusions_path", "read_confusions", "write_confusions",
]
