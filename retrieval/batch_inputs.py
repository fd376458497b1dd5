"""What a loss or a miner accepts: the checks on a batch's embeddings, labels and settings that
:mod:`retrieval.losses` and :mod:`retrieval.mining` share (and the missing-label check of
:mod:`retrieval.evaluate` and :mod:`retrieval.verification`), so that a mistake is a clear error
rather than a torch message from deep inside, or worse a silent change of meaning.

- :func:`batch_embeddings`: a (B, D) torch tensor (numpy is named, not met with "no attribute dim").
- :func:`batch_labels`: one class id per row, as a LongTensor on the embeddings' device. Integer
  ids are taken as they are and integer-valued floats as those integers; class names (strings)
  are numbered in sorted order (two names are one class exactly when they are equal), or, with
  negative rules, by the rules' class names (``NegativeRules.from_names``); a float
  such as 0.5, which ``.long()`` would quietly merge with 0, and a missing label (None) are errors.
- :func:`embedding_rows`: an (N, D) set of embeddings to evaluate or compare, as float32 numpy,
  every value finite (a diverged model's NaN rows made every figure a plausible-looking number).
- :func:`require_labels`: every item has a label (an unlabelled gallery's ``None`` would otherwise
  read as one class "None", and every figure as perfect).
- :func:`number_setting`: a margin, temperature or weight is a finite number, at least 0 (or above
  0 where ``positive``), given as a number and not a string.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

__all__ = ["batch_embeddings", "batch_labels", "embedding_rows", "number_setting", "require_labels"]


def batch_embeddings(embeddings: Any) -> torch.Tensor:
    """``embeddings`` if it is a (B, D) tensor, else a TypeError / ValueError that says what it is."""
    if not isinstance(embeddings, torch.Tensor):
        raise TypeError(f"embeddings must be a torch.Tensor (batch, dim), got {type(embeddings).__module__}."
                        f"{type(embeddings).__name__}: torch.as_tensor(...) first")
    if embeddings.dim() != 2:
        raise ValueError(f"embeddings must be a (batch, dim) matrix, got shape {tuple(embeddings.shape)}")
    return embeddings


_INTEGER_DTYPES = (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8, torch.bool,
                   *(getattr(torch, name) for name in ("uint16", "uint32", "uint64") if hasattr(torch, name)))


def batch_labels(labels: torch.Tensor | Sequence[Any] | np.ndarray, n: int, device: torch.device, *,
                 rules: Any = None) -> torch.Tensor:
    """The class id of each of the ``n`` rows (see the module docstring), a LongTensor on ``device``.
    ``rules``: the loss's or miner's NegativeRules, which name classes by index. Class names are then
    numbered by the rules' own ``class_names`` (``NegativeRules.from_names``), so that a group or a
    never-negative pair applies to the class it names; rules built from indices take indices only
    (numbering the batch's names in sorted order would apply them to other classes), a ValueError."""
    if isinstance(labels, torch.Tensor):
        tensor = labels
    else:
        values = np.asarray(labels, dtype=object if _has_text_or_none(labels) else None)
        if values.dtype == object:
            if any(value is None for value in values.ravel()):
                raise ValueError("labels must name a class for every row, got None (an image without a label)")
            if not all(isinstance(value, (str, np.str_)) for value in values.ravel()):
                raise ValueError("labels must be all class ids (integers) or all class names (strings), not a mix")
            values = _name_ids(values.astype(str), rules)
        elif values.dtype.kind in "US":
            values = _name_ids(values.astype(str), rules)
        tensor = torch.as_tensor(values)
    if tensor.shape != (n,):
        raise ValueError(f"labels must have shape ({n},) to match the embeddings, got {tuple(tensor.shape)}")
    if tensor.is_floating_point():
        fractional = tensor[tensor != torch.round(tensor)]
        if len(fractional):
            raise ValueError(f"labels must be integer class ids, got {float(fractional[0]):g}, which .long() would merge "
                             "with its integer part")
    elif tensor.dtype not in _INTEGER_DTYPES:
        raise ValueError(f"labels must be integer class ids, got dtype {tensor.dtype}")
    return tensor.to(device=device).long()


def _name_ids(names: np.ndarray, rules: Any) -> np.ndarray:
    """Class ids of class ``names``: their place in the rules' class names when there are rules
    that change anything, else the names numbered in sorted order."""
    if rules is None or rules.is_default:
        return np.unique(names, return_inverse=True)[1].reshape(names.shape)
    if rules.class_names is None:
        raise ValueError("labels are class names, but these NegativeRules name classes by index: build them with "
                         "NegativeRules.from_names(class_names, ...) or give the labels as class indices")
    index = {name: i for i, name in enumerate(rules.class_names)}
    unknown = sorted(set(names.ravel().tolist()) - set(index))
    if unknown:
        raise ValueError(f"labels name {len(unknown)} class(es) that the NegativeRules' class names do not hold: "
                         + ", ".join(map(repr, unknown[:3])) + (", …" if len(unknown) > 3 else ""))
    return np.array([index[name] for name in names.ravel().tolist()], dtype=np.int64).reshape(names.shape)


def embedding_rows(embeddings: Any, which: str = "embeddings") -> np.ndarray:
    """``embeddings`` (a numpy array, a tensor, one that requires grad included, or nested lists) as
    a float32 (N, D) numpy array with N ≥ 1, else a ValueError; a ValueError counting the rows that
    hold NaN or ±inf, which would otherwise rank anywhere and give metrics that look plausible."""
    if isinstance(embeddings, torch.Tensor):
        embeddings = embeddings.detach().to(device="cpu", dtype=torch.float32).numpy()
    array = np.asarray(embeddings, dtype=np.float32)
    if array.ndim != 2 or len(array) == 0:
        raise ValueError(f"{which} must be a non-empty (N, D) array, got shape {array.shape}")
    bad = ~np.isfinite(array).all(axis=1)
    if bad.any():
        raise ValueError(f"{which}: {int(bad.sum())} of {len(array)} rows hold NaN or inf (first: row {int(np.argmax(bad))}; "
                         "a model whose training diverged?)")
    return array


def require_labels(labels: Any, which: str = "labels") -> np.ndarray:
    """``labels`` as a numpy array when none of them is None, else a ValueError counting the missing."""
    array = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels, dtype=object
                                                                                             if _has_text_or_none(labels) else None)
    if array.dtype == object:
        missing = sum(value is None for value in array.ravel())
        if missing:
            raise ValueError(f"{which}: {missing} of {array.size} items have no label (None; a gallery indexed from a flat "
                             "folder): class-based figures need a label for every item")
    return array


def number_setting(name: str, value: Any, *, positive: bool = False) -> float:
    """``value`` as a float when it is a finite number ≥ 0 (> 0 with ``positive``), else a ValueError
    naming ``name`` (a string such as "0.2" is refused, not converted)."""
    if isinstance(value, (str, bytes)) or not isinstance(value, (int, float, np.number, torch.Tensor)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number) or number < 0 or (positive and number == 0):
        raise ValueError(f"{name} must be a finite number {'> 0' if positive else '>= 0'}, got {number:g}")
    return number


def _has_text_or_none(labels: Any) -> bool:
    """Whether a list of labels holds a string or None (numpy would turn [1, "a"] into text)."""
    return isinstance(labels, (list, tuple)) and any(value is None or isinstance(value, str) for value in labels)
