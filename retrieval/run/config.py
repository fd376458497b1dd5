"""``config.json``: what a run is, typed (:class:`RunConfig`), for every reader of a run directory.

Training writes one ``config.json`` per run (with the best epoch's weights): the backbone,
embedding dimension, image size and the backbone's data config (enough to rebuild the model and
its eval transform), the objective (loss, miner, margin ε, temperature), the data folder and its
classes, the training mode and the mode's own numbers, versions and the weights' SHA-256.

:class:`RunConfig` reads it once and answers the questions the CLI, the index and the app ask
(which mode trained it, did training see labels, are there validation classes, which margin),
with one interpretation for files written before a key existed: a run without ``"mode"`` was
trained on labels, one without ``"has_validation"`` is taken to have held out classes, one
without ``"margin"`` used the default ε = 0.2. Unknown keys are kept, so a file read and written
again loses nothing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from retrieval.errors import RetrievalError
from retrieval.run.files import CONFIG_NAME
from retrieval.run.store import read_json, write_json
from retrieval.verification import Threshold

__all__ = ["DEFAULT_MARGIN", "MODES", "RunConfig", "read_config"]

#: how a run was trained: class labels, each image its own class (``--unlabelled``), linked pairs (``--pairs``)
MODES = ("labelled", "unlabelled", "pairs")
#: the margin ε of runs whose config predates the "margin" key (the ``retrieval train`` default)
DEFAULT_MARGIN = 0.2
#: the keys without which a model cannot be rebuilt
REQUIRED = ("backbone", "embedding_dim", "image_size", "data_config")


class RunConfig(Mapping):
    """A run's ``config.json``, checked on read, with typed answers to what its readers ask.

    It is also a read-only mapping of the file's keys (``config["loss"]``, ``config.get(...)``)
    for the mode-specific numbers that only a report shows.
    """

    def __init__(self, values: Mapping[str, Any], *, source: str | Path = CONFIG_NAME) -> None:
        if not isinstance(values, Mapping):
            raise RetrievalError(f"{source}: not a model config (a JSON object is expected)")
        missing = [key for key in REQUIRED if key not in values]
        if missing:
            raise RetrievalError(f"{source}: not a model config (missing {', '.join(missing)})")
        self._values = dict(values)
        self.source = str(source)
        self._check_types()

    # -- reading and writing -----------------------------------------------------------------

    @classmethod
    def read(cls, run_dir: str | Path) -> "RunConfig":
        """The config of ``run_dir``; a one-line error when the folder is not a run directory."""
        run_dir = Path(run_dir)
        path = run_dir / CONFIG_NAME
        if not run_dir.is_dir():
            raise RetrievalError(f"run directory not found: {run_dir}")
        if not path.is_file():
            raise RetrievalError(f"{run_dir} is not a run directory (no {CONFIG_NAME}); create one with `retrieval train`")
        return cls(read_json(path), source=path)

    def write(self, run_dir: str | Path) -> None:
        """Write ``RUN_DIR/config.json`` atomically (sorted keys, indented)."""
        write_json(Path(run_dir) / CONFIG_NAME, self._values, indent=2, sort_keys=True)

    def to_dict(self) -> dict[str, Any]:
        """A copy of every key, as written to ``config.json``."""
        return dict(self._values)

    def updated(self, **values: Any) -> "RunConfig":
        """A copy with some keys set."""
        return RunConfig({**self._values, **values}, source=self.source)

    # -- the mapping -------------------------------------------------------------------------

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __iter__(self):
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"RunConfig({self.backbone!r}, embedding_dim={self.embedding_dim}, mode={self.mode!r})"

    # -- the model ---------------------------------------------------------------------------

    @property
    def backbone(self) -> str:
        return str(self._values["backbone"])

    @property
    def embedding_dim(self) -> int:
        return int(self._values["embedding_dim"])

    @property
    def image_size(self) -> int:
        return int(self._values["image_size"])

    @property
    def data_config(self) -> dict[str, Any]:
        """The backbone's input config at the run's image size: input_size, mean, std, interpolation, crop_pct."""
        return dict(self._values["data_config"])

    @property
    def weights_sha256(self) -> str | None:
        """SHA-256 of ``model.safetensors`` as saved with this config (None in hand-made configs)."""
        return self._values.get("weights_sha256") or None

    # -- the objective -----------------------------------------------------------------------

    @property
    def margin(self) -> float:
        """The training margin ε (the units of every distance the app shows)."""
        return float(self._values.get("margin", DEFAULT_MARGIN))

    @property
    def loss(self) -> str | None:
        return self._values.get("loss")

    @property
    def miner(self) -> str | None:
        return self._values.get("miner")

    # -- the data ----------------------------------------------------------------------------

    @property
    def mode(self) -> str:
        """``"labelled"``, ``"unlabelled"`` or ``"pairs"`` (runs from before the modes: from ``"labelled"``)."""
        mode = self._values.get("mode")
        if mode in MODES:
            return mode
        return "labelled" if self._values.get("labelled", True) is not False else "unlabelled"

    @property
    def trained_with_labels(self) -> bool:
        """Whether training saw class labels (the mining log then names real classes)."""
        return self.mode == "labelled" and self._values.get("labelled", True) is not False

    @property
    def has_validation(self) -> bool:
        """Whether the run held out classes to measure Recall@1 / MAP@R on (older runs: assumed)."""
        return self._values.get("has_validation", True) is not False

    @property
    def data_dir(self) -> Path | None:
        """The training folder (absolute when training recorded it); logged image paths are relative to it."""
        value = self._values.get("data_dir")
        return None if value is None else Path(value)

    @property
    def class_names(self) -> list[str]:
        return list(self._values.get("class_names") or [])

    # -- verification ------------------------------------------------------------------------

    @property
    def threshold(self) -> Threshold | None:
        """The decision threshold τ (same when d ≤ τ) with the target FAR it was chosen for and
        what it gave on its pairs; None until training on validation classes or
        ``retrieval calibrate`` chose one."""
        value = self._values.get("verification")
        if not value:
            return None
        return Threshold(float(value["threshold"]), float(value["target_far"]), float(value["far"]), float(value["tar"]),
                         int(value["n_positive_pairs"]), int(value["n_negative_pairs"]))

    @property
    def verification(self) -> dict[str, Any] | None:
        """config.json's ``"verification"`` as written: τ and its numbers, the EER, on which pairs."""
        value = self._values.get("verification")
        return dict(value) if value else None

    def _check_types(self) -> None:
        checks = [
            (isinstance(self._values["backbone"], str), "backbone must be a timm model name"),
            (_is_int(self._values["embedding_dim"]) and self._values["embedding_dim"] >= 1, "embedding_dim must be a positive integer"),
            (_is_int(self._values["image_size"]) and self._values["image_size"] >= 1, "image_size must be a positive integer"),
            (isinstance(self._values["data_config"], Mapping), "data_config must be an object"),
            (_is_number(self._values.get("margin", DEFAULT_MARGIN)), "margin must be a finite number"),
            (_valid_verification(self._values.get("verification")), "verification must hold a finite threshold in [0, 2], "
             "target_far, far and tar in [0, 1] and pair counts"),
        ]
        for ok, message in checks:
            if not ok:
                raise RetrievalError(f"{self.source}: {message}")


def read_config(run_dir: str | Path) -> RunConfig:
    """``RunConfig.read(run_dir)``."""
    return RunConfig.read(run_dir)


def _valid_verification(value: Any) -> bool:
    if value is None:
        return True
    if not isinstance(value, Mapping):
        return False
    rates = [value.get(k) for k in ("target_far", "far", "tar")]
    counts = [value.get(k) for k in ("n_positive_pairs", "n_negative_pairs")]
    return (_is_number(value.get("threshold")) and 0 <= value["threshold"] <= 2
            and all(_is_number(r) and 0 <= r <= 1 for r in rates) and all(_is_int(c) and c >= 0 for c in counts))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
