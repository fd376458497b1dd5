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
from retrieval.run.files import CONFIG_NAME, MODEL_UNIT, WEIGHTS_NAME
from retrieval.run.store import json_bytes, read_json
from retrieval.run.versions import new_version, unit_paths
from retrieval.verification import Threshold

__all__ = ["DEFAULT_MARGIN", "MODES", "RunConfig", "read_config"]

#: how a run was trained: class labels, each image its own class (``--unlabelled``), linked pairs (``--pairs``)
MODES = ("labelled", "unlabelled", "pairs")
#: the margin ε of runs whose config predates the "margin" key (the ``retrieval train`` default)
DEFAULT_MARGIN = 0.2
#: the keys without which a model cannot be rebuilt
REQUIRED = ("backbone", "embedding_dim", "image_size", "data_config")
#: bounds on the values of a config.json received from elsewhere, each of which sizes work: a side of the
#: model's input (training's --image-size), the embedding size D, timm's eval crop (the resize is
#: side / crop_pct: 1e-4 asked for a 320000-px image; timm's own range is 0.875 to 1.15), the normalisation's
#: std (a divisor) and the margin ε (distances between unit embeddings are 0 to 2, squared 0 to 4)
MAX_IMAGE_SIZE = 2048
MAX_EMBEDDING_DIM = 8192
CROP_PCT_RANGE = (0.25, 2.0)
STD_RANGE = (1e-3, 10.0)
MARGIN_RANGE = (0.0, 4.0)
#: the resize filters the eval transform knows (retrieval.data.transforms.cv2_interpolation), compared lower-case
INTERPOLATIONS = ("nearest", "bilinear", "linear", "bicubic", "cubic", "area", "lanczos")


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
    def read(cls, run_dir: str | Path, *, path: Path | None = None) -> "RunConfig":
        """The config of ``run_dir``; a one-line error when the folder is not a run directory.
        ``path``: where the file is read from, when the caller resolved the model's unit itself
        (:func:`retrieval.run.versions.unit_paths`; by default it is resolved here)."""
        run_dir = Path(run_dir)
        if run_dir.exists() and not run_dir.is_dir():
            raise RetrievalError(f"not a run directory: {run_dir} is a file (give the folder `retrieval train --out` wrote)")
        if not run_dir.is_dir():
            raise RetrievalError(f"run directory not found: {run_dir}")
        if path is None:
            path = unit_paths(run_dir, MODEL_UNIT)[CONFIG_NAME]
        if path is None or not path.is_file():
            raise RetrievalError(f"{run_dir} is not a run directory (no {CONFIG_NAME}); create one with `retrieval train`")
        try:
            values = read_json(path)
        except RetrievalError as error:  # name the documented file, not the version folder
            raise RetrievalError(str(error).replace(str(path), str(run_dir / CONFIG_NAME), 1)) from error
        except OSError as error:  # unreadable (permissions, I/O): one line, in the CLI and the app alike
            raise RetrievalError(f"{run_dir / CONFIG_NAME} cannot be read ({error.strerror or type(error).__name__})") from None
        return cls(values, source=run_dir / CONFIG_NAME)

    def write(self, run_dir: str | Path) -> None:
        """Write ``RUN_DIR/config.json`` (sorted keys, indented) as a new commit of the model's
        unit, with the same weights (:mod:`retrieval.run.versions`)."""
        with new_version(run_dir, MODEL_UNIT, keep=(WEIGHTS_NAME,)) as version:
            (version / CONFIG_NAME).write_bytes(json_bytes(self._values, indent=2, sort_keys=True))

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
        """The backbone's input config at the run's image size: input_size, mean, std, interpolation,
        crop_pct, and ``greyscale`` (true when every training image was grey: inputs are made grey)."""
        return dict(self._values["data_config"])

    @property
    def flip_average(self) -> bool:
        """Whether the model averages each image's embedding with its mirror image's
        (:class:`retrieval.model.EmbeddingModel`; face runs; false for runs from before the key)."""
        return bool(self._values.get("flip_average", False))

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

    @property
    def faces(self) -> dict[str, Any] | None:
        """The face pipeline's settings (``retrieval train --faces``: detector, its settings, the
        alignment template, output size; :meth:`retrieval.faces.FacePipeline.from_settings_json`),
        or None for a run on whole images (and every run from before the key)."""
        value = self._values.get("faces")
        if value is None:
            return None
        if not isinstance(value, Mapping):
            raise RetrievalError(f"{self.source}: \"faces\" must be null or a JSON object, got {type(value).__name__}")
        return dict(value)

    # -- verification ------------------------------------------------------------------------

    @property
    def threshold(self) -> Threshold | None:
        """The decision threshold τ (same when d ≤ τ) with the target FAR it was chosen for and
        what it gave on its pairs; None until training on validation classes or
        ``retrieval calibrate`` chose one."""
        value = self._checked_verification()
        if not value:
            return None
        return Threshold(float(value["threshold"]), float(value["target_far"]), float(value["far"]), float(value["tar"]),
                         int(value["n_positive_pairs"]), int(value["n_negative_pairs"]))

    @property
    def verification(self) -> dict[str, Any] | None:
        """config.json's ``"verification"`` as written: τ and its numbers, the EER, on which pairs."""
        value = self._checked_verification()
        return dict(value) if value else None

    def _checked_verification(self) -> Mapping[str, Any] | None:
        """``"verification"``, checked key by key when it is read (not when the run is): a damaged
        block stops only what needs τ, and ``retrieval calibrate``, which writes a new one, still runs."""
        value = self._values.get("verification")
        if value is None:
            return None
        hint = " (`retrieval calibrate RUN_DIR DATA_DIR` writes a new one)"
        self._require([("verification", isinstance(value, Mapping), "must be null or a JSON object" + hint)], self._values)
        counts = "must be a whole number from 0" + hint
        self._require([
            ("threshold", _is_number_in(value.get("threshold"), 0.0, 2.0), "must be a number from 0 to 2" + hint),
            ("target_far", _is_number(value.get("target_far")) and 0 < value["target_far"] < 1,
             "must be a number between 0 and 1" + hint),
            ("far", _is_number_in(value.get("far"), 0.0, 1.0), "must be a number from 0 to 1" + hint),
            ("tar", _is_number_in(value.get("tar"), 0.0, 1.0), "must be a number from 0 to 1" + hint),
            ("n_positive_pairs", _is_int(value.get("n_positive_pairs")) and value["n_positive_pairs"] >= 0, counts),
            ("n_negative_pairs", _is_int(value.get("n_negative_pairs")) and value["n_negative_pairs"] >= 0, counts),
        ], value, prefix="verification.")
        return value

    def _check_types(self) -> None:
        """Types and bounds of every key a reader relies on; a one-line error naming the key otherwise."""
        v = self._values
        temperature, class_names = v.get("temperature"), v.get("class_names")
        self._require([
            ("backbone", isinstance(v["backbone"], str), "must be a timm model name"),
            ("embedding_dim", _is_int_in(v["embedding_dim"], 1, MAX_EMBEDDING_DIM), f"must be an integer from 1 to {MAX_EMBEDDING_DIM}"),
            ("image_size", _is_int_in(v["image_size"], 16, MAX_IMAGE_SIZE), f"must be an integer from 16 to {MAX_IMAGE_SIZE}"),
            ("data_config", isinstance(v["data_config"], Mapping), "must be an object"),
            ("flip_average", isinstance(v.get("flip_average", False), bool), "must be true or false"),
            ("margin", _is_number_in(v.get("margin", DEFAULT_MARGIN), *MARGIN_RANGE), "must be a number from 0 to 4"),
            ("temperature", temperature is None or (_is_number(temperature) and temperature > 0), "must be a positive number"),
            ("class_names", class_names is None or (isinstance(class_names, list) and all(isinstance(c, str) for c in class_names)),
             "must be a list of names"),
        ], v)
        data = v["data_config"]
        size, mean, std = data.get("input_size"), data.get("mean"), data.get("std")
        interpolation, crop_pct = data.get("interpolation"), data.get("crop_pct")
        self._require([
            ("input_size", _is_triple(size, _is_int) and size[0] == 3 and all(16 <= side <= MAX_IMAGE_SIZE for side in size[1:]),
             f"must be [3, height, width] with sides from 16 to {MAX_IMAGE_SIZE}"),
            ("mean", _is_triple(mean, lambda m: _is_number_in(m, 0.0, 1.0)), "must be 3 numbers from 0 to 1"),
            ("std", _is_triple(std, lambda s: _is_number_in(s, *STD_RANGE)), f"must be 3 numbers from {STD_RANGE[0]:g} to {STD_RANGE[1]:g}"),
            ("interpolation", interpolation is None or (isinstance(interpolation, str) and interpolation.lower() in INTERPOLATIONS),
             f"must be one of {', '.join(INTERPOLATIONS)}"),
            ("crop_pct", crop_pct is None or _is_number_in(crop_pct, *CROP_PCT_RANGE),
             f"must be a number from {CROP_PCT_RANGE[0]:g} to {CROP_PCT_RANGE[1]:g}"),
            ("greyscale", isinstance(data.get("greyscale", False), bool), "must be true or false"),
        ], data, prefix="data_config.")

    def _require(self, checks: list[tuple[str, bool, str]], values: Mapping[str, Any], prefix: str = "") -> None:
        for key, ok, requirement in checks:
            if not ok:
                shown = repr(values.get(key))
                shown = shown if len(shown) <= 40 else shown[:37] + "..."
                raise RetrievalError(f"{self.source}: {prefix}{key} {requirement}, got {shown}")


def read_config(run_dir: str | Path) -> RunConfig:
    """``RunConfig.read(run_dir)``."""
    return RunConfig.read(run_dir)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_int_in(value: Any, low: int, high: int) -> bool:
    return _is_int(value) and low <= value <= high


def _is_number_in(value: Any, low: float, high: float) -> bool:
    return _is_number(value) and low <= value <= high


def _is_triple(value: Any, element_ok) -> bool:
    return isinstance(value, (list, tuple)) and len(value) == 3 and all(element_ok(x) for x in value)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
